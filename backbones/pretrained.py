"""Official checkpoints through timm's ``pretrained=True``: one cache file per checkpoint, one safe loader.

The official weights live at URLs whose last path part says nothing (OneDrive ``.../root/content``, Tsinghua cloud
``.../f/<id>/?dl=1``), so timm's default -- the URL's base name as the cache file name -- would store every BiFormer
under ``content`` and load the first one for every variant. Each family's ``default_cfgs`` therefore gives the URL
with a file name of its own (:func:`official_weights`: ``url=(url, filename)``, which timm's
``download_cached_file`` takes), and ``custom_load=True`` makes timm hand the downloaded file's path to
``model.load_pretrained(path)`` instead of unpickling it itself. (A ``pretrained_cfg_overlay=dict(file=...)`` resets
``custom_load`` in timm unless the overlay sets it; :func:`build_with_official_weights` sets it, so a file given that
way goes through the same loader.)

Why a loader that someone installs: the safe loading (weights-only unpickling, the card's sha256, the family's
checkpoint filter, strict keys, errors that name every misfit) is ``attnzoo.load_checkpoint``, and ``backbones`` never
imports ``zoo`` (the arrows point down: zoo -> backbones -> kernels). ``import attnzoo`` installs its loader here with
:func:`install_checkpoint_loader`, the same import that a user needs anyway to register the models by name
(``import attnzoo; timm.create_model(..., pretrained=True)``). Without it, ``load_pretrained`` says to ``import attnzoo``
rather than load the file some weaker way.

:func:`build_with_official_weights` wraps timm's ``build_model_with_cfg`` so that a download that cannot happen
(no network) ends in an error naming the URL, the cache file timm looks for, and the exact
``pretrained_cfg_overlay=dict(file=...)`` call that loads a copy fetched elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from timm.models import build_model_with_cfg, resolve_pretrained_cfg
from timm.models._hub import get_cache_dir
from torch import nn

__all__ = [
    "OfficialWeightsUnavailableError",
    "PretrainedFromLoader",
    "build_with_official_weights",
    "install_checkpoint_loader",
    "official_weights",
]

CheckpointLoader = Callable[[nn.Module, str], None]
_checkpoint_loader: CheckpointLoader | None = None


class OfficialWeightsUnavailableError(OSError):
    """The official checkpoint could not be downloaded; the message names the file and the offline alternative."""


def official_weights(url: str, filename: str) -> dict:
    """``default_cfgs`` entries for an official checkpoint cached as ``filename`` and loaded by the installed loader."""
    if os.path.basename(filename) != filename or not filename:
        raise ValueError(f"filename must be a bare file name, got {filename!r}")
    return dict(url=(url, filename), custom_load=True)


def install_checkpoint_loader(loader: CheckpointLoader | None) -> CheckpointLoader | None:
    """Sets the function ``loader(model, path)`` that ``load_pretrained`` calls; returns the previous one."""
    global _checkpoint_loader
    previous, _checkpoint_loader = _checkpoint_loader, loader
    return previous


class PretrainedFromLoader:
    """Mixin for the model classes: timm's ``custom_load`` calls ``model.load_pretrained(path)``."""

    def load_pretrained(self, checkpoint_path: str) -> None:
        if _checkpoint_loader is None:
            raise RuntimeError(
                f"{checkpoint_path}: official checkpoints load through the zoo's safe loader (weights-only, sha256, "
                f"strict keys); `import attnzoo` before timm.create_model(..., pretrained=True) installs it."
            )
        _checkpoint_loader(self, checkpoint_path)


def build_with_official_weights(model_cls: type, variant: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """timm's ``build_model_with_cfg``, with a download that cannot happen turned into an error that says what to do.

    A ``pretrained_cfg_overlay=dict(file=...)`` keeps ``custom_load`` (timm would reset it and read the file itself,
    preferring EMA weights): the file goes through the installed loader, like the downloaded one.
    """
    overlay = kwargs.get("pretrained_cfg_overlay")
    if overlay and overlay.get("file"):
        kwargs["pretrained_cfg_overlay"] = {"custom_load": True, **overlay}
    try:
        return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    except OSError as err:
        if not pretrained or isinstance(err, OfficialWeightsUnavailableError):
            raise
        cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get("pretrained_cfg"),
                                     pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay")).to_dict()
        url = cfg.get("url")
        if cfg.get("file") or cfg.get("state_dict") is not None or not isinstance(url, (tuple, list)):
            raise
        url, filename = url
        cache_dir = kwargs.get("cache_dir")
        cached = os.path.join(os.fspath(cache_dir) if cache_dir else get_cache_dir(), filename)
        if os.path.exists(cached):
            raise  # the file is there: the download was not the problem
        name = cfg.get("architecture") or variant
        raise OfficialWeightsUnavailableError(
            f"{name}: could not download the official weights ({type(err).__name__}: {err}). Download {url} on a "
            f"machine with network access, then either save it as {cached} (pretrained=True finds it there) or "
            f"save it as {filename} (here, or give its full path) and load it with "
            f"timm.create_model({name!r}, pretrained=True, pretrained_cfg_overlay=dict(file={filename!r}))."
        ) from err
