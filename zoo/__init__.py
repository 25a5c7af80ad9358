"""attnzoo's public face: create and list models, model cards, safe checkpoints, hub-style folders, the `zoo` CLI.

``import zoo`` registers every family with timm, so ``timm.create_model("biformer_tiny")`` works afterwards, and
installs the zoo's safe loader behind ``pretrained=True`` for the zoo's own families. The rooms of this package and
their rules are described in docs/ARCHITECTURE.md.
"""

import backbones  # noqa: F401  (registers every family with timm)
from backbones.pretrained import install_checkpoint_loader

from .cards import Card, CardError, UnknownModelError, get_card, list_cards, render_card
from .errors import UserError, ZooError
from .flops import count_gflops
from .models import build_model, convert_checkpoint, list_models, save_pretrained
from .weights import CheckpointError, LoadResult, load_checkpoint, load_pretrained_file, sha256_file

install_checkpoint_loader(load_pretrained_file)  # backbones never import zoo: the loader is handed down

create_model = build_model  # the public name, as timm's

__all__ = [
    "Card",
    "CardError",
    "CheckpointError",
    "LoadResult",
    "UnknownModelError",
    "UserError",
    "ZooError",
    "build_model",
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
