"""``timm.create_model(name, pretrained=True)`` for the zoo's own families, through ``zoo.load_checkpoint``.

timm downloads an official checkpoint into its cache under the file name the family's ``default_cfgs`` gives it
(``backbones.pretrained.official_weights``) and, because the cfg sets ``custom_load``, hands the path to
``model.load_pretrained``, which calls the loader installed here (``import zoo`` installs it; backbones never import
zoo). The loader is ``zoo.load_checkpoint``: weights-only unpickling, the card's sha256 for a downloaded official
file, the family's checkpoint filter, then timm's own adaptations (``in_chans``, another ``num_classes``), and a
strict load whose errors name every misfit.

A file given with ``pretrained_cfg_overlay=dict(file=...)`` (the way to use a copy fetched on another machine) is
loaded by timm itself, which resets ``custom_load`` for an overlaid source: weights-only ``torch.load``, the family's
checkpoint filter, timm's adaptations and a strict load. Adding ``custom_load=True`` to the overlay routes it through
this loader instead (safe and strict as well; the card's hash is for the downloaded file and is not applied).
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse

import timm
import torch
from timm.models import is_model

from backbones.pretrained import adapt_state_dict_to_model, install_checkpoint_loader

from .cards import get_card, has_card
from .checkpoint import load_checkpoint
from .registry import checkpoint_filter_fn_for

__all__ = ["cache_filename", "load_pretrained_file"]


def _card_sha256(name: str, url: str) -> str | None:
    if not has_card(name):
        return None
    return next((c.sha256 for c in get_card(name).checkpoints if c.url == url), None)


def load_pretrained_file(model: torch.nn.Module, path: str) -> None:
    """The loader behind ``pretrained=True``: ``zoo.load_checkpoint`` with the family filter and timm's adaptations."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("architecture") or type(model).__name__
    url = cfg.get("url")
    official_url = url[0] if isinstance(url, (tuple, list)) else url
    expected_sha256 = None if cfg.get("file") else _card_sha256(name, official_url)
    family_filter = checkpoint_filter_fn_for(model)

    def filter_fn(state_dict: dict, target: torch.nn.Module) -> dict:
        if family_filter is not None:
            state_dict = family_filter(state_dict, target)
        return adapt_state_dict_to_model(state_dict, target)

    load_checkpoint(model, path, filter_fn=filter_fn, expected_sha256=expected_sha256, strict=True)


def cache_filename(name: str, url: str) -> str:
    """The cache file name of ``url`` when it is model ``name``'s checkpoint: the one timm's cfg gives it (so the
    card path and ``pretrained=True`` share one file), else the URL's base name, else ``<name>_<url digest>.pth``
    (URLs such as ``.../f/<id>/?dl=1`` or ``.../root/content`` name nothing; a card may list several of them)."""
    if is_model(name):
        cfg_url = timm.get_pretrained_cfg(name).url
        if isinstance(cfg_url, (tuple, list)) and cfg_url[0] == url:
            return cfg_url[1]
    base = os.path.basename(urllib.parse.urlparse(url).path)
    if os.path.splitext(base)[1]:
        return base
    return f"{name}_{hashlib.sha1(url.encode()).hexdigest()[:10]}.pth"  # '_', not '-': timm reads '-<hex>.' as a hash


install_checkpoint_loader(load_pretrained_file)
