"""The on-disk feature cache of ``zoo probe``: one folder per model, valid only for the key it was written with.

A cache entry is ``<cache>/<model slug>-<hash of the model, its arguments and the input size>/`` holding
``meta.json`` (the full key and the arrays' shapes) and ``{train,val}_{tokens,pooled,labels}.npy``. The key names
everything the features depend on: the model source and constructor arguments, the weights (the sha256 of the file,
the card's checkpoint digest, or the seed of random weights), the data transform (input size, crop, interpolation,
mean, std), the folder's contents (class names and every image's path, size and modification time) and the versions
of attnzoo, timm and torch and of this cache's layout. An entry whose key differs in anything (another model's or
version's features, a changed folder) is refused: it is rebuilt whole, never mixed with new features. Entries are
written into a temporary folder and renamed into place, so an interrupted run leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..classification.datasets import ImageFolderScan
from .features import Features

__all__ = ["CACHE_LAYOUT", "FeatureCache", "default_cache_dir", "folder_fingerprint"]

CACHE_LAYOUT = 1  # bump when the files of an entry change meaning
SPLITS = ("train", "val")
ARRAYS = ("tokens", "pooled", "labels")


def default_cache_dir() -> Path:
    """``$ZOO_PROBE_CACHE``, else ``$XDG_CACHE_HOME/attnzoo/probe`` (``~/.cache/attnzoo/probe``)."""
    if os.environ.get("ZOO_PROBE_CACHE"):
        return Path(os.environ["ZOO_PROBE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "attnzoo" / "probe"


def folder_fingerprint(scans: dict[str, ImageFolderScan]) -> str:
    """sha256 over each split's class names and every image's relative path, size and modification time (ns)."""
    digest = hashlib.sha256()
    for split in sorted(scans):
        scan = scans[split]
        digest.update(f"{split}\0{json.dumps(scan.classes)}\0".encode())
        for name in scan.classes:
            for path in scan.images[name]:
                stat = path.stat()
                digest.update(f"{path.relative_to(scan.root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.")[-60:] or "model"


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


class FeatureCache:
    """Feature cache entries under ``root`` (see the module docstring); ``warn`` gets one line per refused entry."""

    def __init__(self, root: str | os.PathLike, warn=None):
        self.root = Path(root)
        self.warn = warn or (lambda message: None)

    def entry(self, key: dict[str, Any]) -> Path:
        identity = json.dumps({k: key.get(k) for k in ("model", "model_kwargs", "input_size")}, sort_keys=True,
                              default=str)
        return self.root / f"{_slug(str(key.get('model')))}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"

    def load(self, key: dict[str, Any]) -> dict[str, Features] | None:
        """The cached features for ``key``, or None (nothing there, or an entry for another key: refused)."""
        folder = self.entry(key)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            stored_key = meta["key"]
        except (OSError, ValueError, KeyError, TypeError):
            self.warn(f"feature cache {folder} has no readable meta.json; rebuilding it")
            return None
        normal = json.loads(json.dumps(key, default=str))
        if stored_key != normal:
            self.warn(f"feature cache {folder} was written for another {', '.join(_differences(stored_key, normal))}; "
                      "refused, rebuilding it")
            return None
        splits = {}
        try:
            for split in SPLITS:
                arrays = {a: np.load(folder / f"{split}_{a}.npy", mmap_mode="r") for a in ARRAYS}
                shapes = {a: list(v.shape) for a, v in arrays.items()}
                if shapes != meta["shapes"][split]:
                    raise ValueError(f"{split} shapes {shapes} != {meta['shapes'][split]}")
                splits[split] = Features(arrays["tokens"], arrays["pooled"], arrays["labels"],
                                         float(meta["seconds"][split]))
        except (OSError, ValueError, KeyError) as err:
            self.warn(f"feature cache {folder} is incomplete ({err}); refused, rebuilding it")
            return None
        return splits

    def save(self, key: dict[str, Any], splits: dict[str, Features]) -> Path:
        """Write the entry for ``key`` whole (temporary folder, then renamed over any old entry)."""
        folder = self.entry(key)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=self.root))
        try:
            for split, features in splits.items():
                for a in ARRAYS:
                    np.save(tmp / f"{split}_{a}.npy", np.ascontiguousarray(getattr(features, a)))
            meta = {"key": json.loads(json.dumps(key, default=str)),
                    "shapes": {s: {a: list(getattr(f, a).shape) for a in ARRAYS} for s, f in splits.items()},
                    "seconds": {s: f.seconds for s, f in splits.items()}}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
            if folder.exists():
                old = folder.with_name(f".{folder.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                folder.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder
