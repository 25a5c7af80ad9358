"""attnzoo's public face: create and list models, model cards, safe checkpoints, hub-style folders, the `zoo` CLI.

``import attnzoo`` registers every family with timm, so ``timm.create_model("biformer_tiny")`` works afterwards, and
installs the zoo's safe loader behind ``pretrained=True`` for the zoo's own families. The rooms of this package and
their rules are described in docs/ARCHITECTURE.md.
"""

if __name__ != "attnzoo":  # a clone's root on sys.path finds this folder as a top-level package: not ours to claim
    raise ImportError(f"'{__name__}' is a folder of an attnzoo clone, not a package of its own: import attnzoo")

import attnzoo.backbones  # noqa: F401  (registers every family with timm)
from attnzoo.backbones.pretrained import install_checkpoint_loader

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
