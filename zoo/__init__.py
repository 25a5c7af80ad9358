"""attnzoo's public face: create and list models, model cards, safe checkpoints, hub-style folders, the `zoo` CLI.

``import zoo`` registers every family with timm, so ``timm.create_model("biformer_tiny")`` works afterwards.
"""

import backbones  # noqa: F401  (registers every family with timm)

from .cards import Card, CardError, UnknownModelError, get_card, list_cards, render_card
from .checkpoint import CheckpointError, LoadResult, convert_checkpoint, load_checkpoint, sha256_file
from .flops import count_gflops
from .hub import create_model, save_pretrained
from .pretrained import load_pretrained_file  # installs the loader behind timm's pretrained=True (custom_load)
from .registry import list_models

__all__ = [
    "Card",
    "CardError",
    "CheckpointError",
    "LoadResult",
    "UnknownModelError",
    "convert_checkpoint",
    "count_gflops",
    "create_model",
    "get_card",
    "list_cards",
    "list_models",
    "load_checkpoint",
    "load_pretrained_file",
    "render_card",
    "save_pretrained",
    "sha256_file",
]
