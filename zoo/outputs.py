"""Where the verbs write: one rule for every output path, checked before the work and kept while writing.

The verbs and their paths: ``zoo train --out RUN`` (a folder), ``zoo convert SRC DST`` (a file), ``zoo export
--output FILE``, ``zoo bench --out DIR``, ``zoo xray detect --out DIR`` (a folder of per-input files), ``zoo demo --out
DIR`` (checked before the first step when the X-ray step will write there), ``zoo probe --out DIR --cache
DIR`` (both checked before any feature is extracted), ``attnzoo.save_pretrained`` (a folder);
the forgery tools: ``tools/forgery_train.py --out FORGERY_RUN`` (a folder; none of its files the ``--train`` file),
``tools/forgery_eval.py --run FORGERY_RUN`` (its ``metrics.json``, never the ``--test`` file),
``tools/make_forgery_set.py --out DIR``; a tool prints a refusal as ``<tool>: error: ...``, exit 2. ``zoo forgery
check``, ``zoo card`` and ``zoo configs`` write nothing.

1. **Checked before the work starts** (:func:`output_file`, :func:`output_folder`): every existing part of the path
   above the output is a folder, a file output is not a folder and a folder output not a file, no name in the path is
   longer than the file system takes, and the deepest folder that exists can be written to. A path that breaks one of
   these is an :class:`OutputError` (one ``zoo: error:`` line naming the flag, the path and what is wrong), before a
   model is built or an image read.
2. **Never over an input** (:func:`output_file`'s ``inputs``, :func:`per_input_names`): an output is never the same
   file as one of the verb's inputs (``zoo convert x.safetensors x.safetensors``), and per-input outputs get one name
   per input: the input's stem, or, when two inputs share a stem (``bag.png`` and ``bag.jpg``; case is ignored, as
   some file systems do) or the output would land on an input (``--out`` is the input folder), the stem with the
   input's suffix (``bag_png``, ``bag_jpg``), then ``_2``, ``_3`` ... until no two outputs and no output and input
   share a path.
3. **While writing** (:func:`writing`): what the file system says when a write fails (the disk is full, the file
   system is read-only, permission denied, a name too long, a folder where a file should be) is an
   :class:`OutputError` naming the path, not a traceback. Files are written atomically where the zoo writes weights
   (``attnzoo.weights.atomic_write``), so a failed write leaves the previous file as it was.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import ZooError

__all__ = ["OutputError", "output_file", "output_folder", "per_input_names", "writing"]

_WHY = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENAMETOOLONG: "a name in the path is too long for the file system",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "a file is in the way",
    errno.EFBIG: "the file is too large for the file system",
    errno.EIO: "the disk reported an input/output error",
}


class OutputError(ZooError):
    """An output path the verb cannot write (checked before the work, or reported by the file system while
    writing)."""


def _show(path: Path) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _fail(flag: str, path: Path, why: str) -> OutputError:
    where = f"{flag} {_show(path)}" if flag else _show(path)
    return OutputError(f"{where}: {why}; choose another path")


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _kind(path: Path) -> str | None:
    """"folder", "file" (anything else that exists) or None (nothing there, or nothing the system can look up)."""
    try:
        return "folder" if stat.S_ISDIR(os.stat(path).st_mode) else "file"
    except OSError:
        return None


def _check_names(path: Path, flag: str) -> None:
    limit = _name_max(Path(path.anchor or "."))
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise _fail(flag, path, f"the name {_show(Path(part[:40]))}... is longer than the {limit} bytes the file "
                                    "system takes")


def _check_path(path: Path, flag: str) -> Path:
    """The deepest existing folder at or above ``path``'s parent, after checking rule 1's common part."""
    path = Path(os.path.abspath(path))
    _check_names(path, flag)
    existing = path.parent
    while _kind(existing) is None and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: the folder cannot be made
            raise _fail(flag, path, f"{_show(existing)} is a broken link")
        existing = existing.parent
    if _kind(existing) != "folder":
        raise _fail(flag, path, f"{_show(existing)} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "the file system is read-only" if _read_only(existing) else f"{_show(existing)} is not writable"
        raise _fail(flag, path, why)
    return existing


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def output_file(path: str | os.PathLike, flag: str = "", *, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """``path`` checked as a file to write (rule 1; rule 2 against ``inputs``); returns it as a Path."""
    path = Path(os.fsdecode(path))
    _check_names(Path(os.path.abspath(path)), flag)
    if _kind(path) == "folder":
        raise _fail(flag, path, "it is a folder; name the file to write")
    _check_path(path, flag)  # the file itself is replaced (written beside it, renamed over it): its folder counts
    if _kind(path) is not None:
        for item in inputs:
            if _same_file(path, Path(os.fsdecode(item))):
                raise _fail(flag, path, "it is the input file itself; write to another file")
    return path


def output_folder(path: str | os.PathLike, flag: str = "", *, create: bool = True) -> Path:
    """``path`` checked as a folder to write into (rule 1), made when ``create``; returns it as a Path."""
    path = Path(os.fsdecode(path))
    _check_names(Path(os.path.abspath(path)), flag)
    if _kind(path) is not None or path.is_symlink():
        if _kind(path) != "folder":
            raise _fail(flag, path, "it is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            why = "the file system is read-only" if _read_only(path) else "the folder is not writable"
            raise _fail(flag, path, why)
        return path
    _check_path(path / "x", flag)
    if create:
        with writing(path, flag):
            path.mkdir(parents=True, exist_ok=True)
    return path


def per_input_names(inputs: Sequence[Path], out_dir: str | os.PathLike, suffixes: Sequence[str], *,
                    keep: Sequence[str | os.PathLike] = ()) -> list[str]:
    """One output name (without suffix) per input, by rule 2: ``out_dir/<name><suffix>`` for every suffix is never
    an input file (nor one of ``keep``: the verb's other inputs, e.g. a config or checkpoint) and never another
    input's output."""
    out_dir = Path(out_dir)
    inputs = [Path(os.fsdecode(p)) for p in inputs]
    protected = inputs + [Path(os.fsdecode(p)) for p in keep]
    stems = [p.stem.casefold() for p in inputs]
    shared = {stem for stem, count in collections.Counter(stems).items() if count > 1}

    def lands_on_input(name: str) -> bool:
        return any(_same_file(out_dir / f"{name}{suffix}", item) for suffix in suffixes for item in protected
                   if f"{name}{suffix}".casefold() == item.name.casefold())

    taken: set[str] = set()
    names = []
    for item, stem in zip(inputs, stems):
        name = item.stem
        if stem in shared or lands_on_input(name):
            name = f"{item.stem}_{item.suffix.lstrip('.')}" if item.suffix else item.stem
        base, count = name, 1
        while name.casefold() in taken or lands_on_input(name):
            count += 1
            name = f"{base}_{count}"
        taken.add(name.casefold())
        names.append(name)
    return names


@contextlib.contextmanager
def writing(path: str | os.PathLike, flag: str = "") -> Iterator[None]:
    """Rule 3: an ``OSError`` the file system raises inside (a full disk, read-only, permission, name too long, a
    folder in the way) becomes an :class:`OutputError` naming ``path``; other errors pass unchanged."""
    try:
        yield
    except OutputError:
        raise
    except OSError as err:
        why = _WHY.get(err.errno)
        if why is None:
            raise
        raise _fail(flag, Path(os.fsdecode(path)), f"cannot write ({why})") from err
