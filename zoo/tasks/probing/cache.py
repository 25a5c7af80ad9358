"""The on-disk feature cache of ``zoo probe``: one folder per model, valid only for the key it was written with.

A cache entry is ``<cache>/<model slug>-<hash of the model, its arguments and the input size>/`` holding
``meta.json`` (the full key and the arrays' shapes) and ``{train,val}_{tokens,pooled,labels}.npy``. The key names
everything the features depend on: the model source and constructor arguments, the weights (the sha256 of the file,
the card's checkpoint digest, or the seed of random weights), the data transform (input size, crop, interpolation,
mean, std), the folder's contents (class names and every image's path, size and modification time) and the versions
of attnzoo, timm and torch and of this cache's layout. An entry whose key differs in anything (another model's or
version's features, a changed folder) is refused: it is rebuilt whole, never mixed with new features. Entries are
written into a temporary folder and renamed into place, so an interrupted run leaves no half-written entry.

A run that is about to write an entry holds ``<cache>/.<entry>.lock`` (``flock``, so a run that dies lets go of it;
the file records who holds it) from before the extraction until the entry is in place; another run that would write
the same entry meanwhile is refused with one line naming the holder (:class:`CacheBusy`), never left to mix its
features in. Reading needs no lock: an entry is only ever replaced whole.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ...outputs import writing
from ..classification.datasets import ImageFolderScan
from .features import Features, ProbeError

__all__ = ["CACHE_LAYOUT", "CacheBusy", "CacheLock", "FeatureCache", "default_cache_dir", "folder_fingerprint"]

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


class CacheBusy(ProbeError):
    """Another run is writing the cache entry this run would write."""


class CacheLock:
    """``<cache>/.<entry>.lock``, held (``flock``) by the one run writing that entry; :meth:`acquire` takes it or
    raises :class:`CacheBusy` naming the holder; :meth:`release` removes it."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, entry: Path, command: str | None = None) -> CacheLock:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    holder = _read_record(fd)
                    os.close(fd)
                    who = (f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}: "
                           f"{holder.get('command')}") if holder else "a run that is starting"
                    raise CacheBusy(f"feature cache {entry} is being written by another zoo probe ({who}); wait for it "
                                    f"to finish (a run after it reads its features) or pass another --cache.") from None
                # a file system without flock: go on unlocked (the entry is still written whole and renamed)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file between our open and our lock: take the new one
        record = dict(pid=os.getpid(), host=socket.gethostname(),
                      started=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                      command=command or shlex.join(sys.argv))
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing lets go of the flock
        self._fd = None


def _read_record(fd: int) -> dict:
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


class FeatureCache:
    """Feature cache entries under ``root`` (see the module docstring); ``warn`` gets one line per refused entry."""

    def __init__(self, root: str | os.PathLike, warn=None):
        self.root = Path(root)
        self.warn = warn or (lambda message: None)

    def entry(self, key: dict[str, Any]) -> Path:
        identity = json.dumps({k: key.get(k) for k in ("model", "model_kwargs", "input_size")}, sort_keys=True,
                              default=str)
        return self.root / f"{_slug(str(key.get('model')))}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"

    def lock(self, key: dict[str, Any], command: str | None = None) -> CacheLock:
        """Hold the lock of ``key``'s entry (:class:`CacheBusy` when another run writes it); release it when done."""
        folder = self.entry(key)
        return CacheLock.acquire(folder.with_name(f".{folder.name}.lock"), folder, command)

    def load(self, key: dict[str, Any], quiet: bool = False) -> dict[str, Features] | None:
        """The cached features for ``key``, or None (nothing there, or an entry for another key: refused, with one
        warning unless ``quiet``)."""
        warn = (lambda message: None) if quiet else self.warn
        folder = self.entry(key)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            stored_key = meta["key"]
        except (OSError, ValueError, KeyError, TypeError):
            warn(f"feature cache {folder} has no readable meta.json; rebuilding it")
            return None
        normal = json.loads(json.dumps(key, default=str))
        if stored_key != normal:
            warn(f"feature cache {folder} was written for another {', '.join(_differences(stored_key, normal))}; "
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
            warn(f"feature cache {folder} is incomplete ({err}); refused, rebuilding it")
            return None
        return splits

    def save(self, key: dict[str, Any], splits: dict[str, Features], processes: int = 1) -> Path:
        """Write the entry for ``key`` whole (temporary folder, then renamed over any old entry); ``processes``: how
        many extracted the features (recorded, not part of the key)."""
        folder = self.entry(key)
        with writing(self.root, "--cache"):  # a full disk or a read-only folder: one line (attnzoo.outputs)
            self._save(folder, key, splits, processes)
        return folder

    def _save(self, folder: Path, key: dict[str, Any], splits: dict[str, Features], processes: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=self.root))
        try:
            for split, features in splits.items():
                for a in ARRAYS:
                    np.save(tmp / f"{split}_{a}.npy", np.ascontiguousarray(getattr(features, a)))
            meta = {"key": json.loads(json.dumps(key, default=str)),
                    "shapes": {s: {a: list(getattr(f, a).shape) for a in ARRAYS} for s, f in splits.items()},
                    "seconds": {s: f.seconds for s, f in splits.items()}, "processes": processes}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
            if folder.exists():
                old = folder.with_name(f".{folder.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                folder.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
