"""Where downloaded checkpoints live: the torch hub cache (``<hub dir>/checkpoints``), one file per checkpoint."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
from pathlib import Path

import torch

from .files import CheckpointError

__all__ = ["cache_filename", "cached_download"]


def cached_download(url: str, progress: bool = True, filename: str | None = None) -> Path:
    """The local copy of ``url`` in the torch hub cache, downloaded only if absent.

    Cached as ``filename``, or by default as the URL's base name (which must then name a file).
    """
    filename = filename or os.path.basename(urllib.parse.urlparse(url).path)
    if not os.path.splitext(filename)[1]:
        raise CheckpointError(
            f"{url}: the URL names no file ({filename!r}) to cache it as; pass filename=... (e.g. 'model.pth')."
        )
    destination = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if destination.is_file():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(destination), progress=progress)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise CheckpointError(
            f"could not download {url} ({err}). Without network access, put the file at {destination} "
            "(or pass its local path)."
        ) from err
    return destination


def cache_filename(name: str, url: str) -> str:
    """The cache file name of ``url`` when it is model ``name``'s checkpoint: the one timm's cfg gives it (so the
    card path and ``pretrained=True`` share one file), else the URL's base name, else ``<name>_<url digest>.pth``
    (URLs such as ``.../f/<id>/?dl=1`` or ``.../root/content`` name nothing; a card may list several of them)."""
    import timm
    from timm.models import is_model

    if is_model(name):
        cfg_url = timm.get_pretrained_cfg(name).url
        if isinstance(cfg_url, (tuple, list)) and cfg_url[0] == url:
            return cfg_url[1]
    base = os.path.basename(urllib.parse.urlparse(url).path)
    if os.path.splitext(base)[1]:
        return base
    return f"{name}_{hashlib.sha1(url.encode()).hexdigest()[:10]}.pth"  # '_', not '-': timm reads '-<hex>.' as a hash
