"""Folders and names: the one folder walk behind every verb that walks folders of images, and the one way a name
reaches the terminal.

- **Walks end on any link structure.** :func:`walk_files` follows links to folders (a dataset is often a folder of
  links), but walks each real folder (by device and inode) at most once: a link that loops back (``ln -s . l1``) or
  leads to a folder already walked is reported, never followed again, so the walk ends on any arrangement of links.
  A link to nothing and a folder that cannot be read are reported too; nothing is left out without a word.
- **Names on the terminal** (:func:`printable`): a file name or class name is shown with its bytes that are not UTF-8
  as ``\\xNN`` and its control characters (C0, DEL, C1: escape sequences, carriage returns, new lines) and the
  Unicode controls that reorder text on screen as ``\\xNN`` / ``\\uNNNN``, so a name can neither fake an output line
  nor colour the terminal. ``attnzoo.tasks.images.display_path`` and the ``zoo: error:`` line use it.

How an ImageFolder's sub-folders become classes is ``attnzoo.tasks.classification.datasets``' rule, on this walk.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

__all__ = ["FolderWalk", "printable", "walk_files"]

PathLike = Union[str, bytes, os.PathLike]

# Unicode's controls that reorder text on screen (bidirectional embeddings, overrides and isolates, the marks).
_REORDERING = frozenset([0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])


def _escape(code: int) -> str:
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, as os.fsdecode's surrogate escape keeps it
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(name: PathLike) -> str:
    """``name`` (a ``str``, ``bytes`` or path) safe to print: see the module's rule. Text without such characters is
    returned unchanged."""
    if isinstance(name, bytes):
        text = os.fsdecode(name)
    elif isinstance(name, str):
        text = name
    else:
        text = os.fspath(name)
        text = os.fsdecode(text) if isinstance(text, bytes) else text
    if text.isprintable() and text.isascii():
        return text
    out = []
    for char in text:
        code = ord(char)
        if code < 0x20 or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF or code in _REORDERING:
            out.append(_escape(code))
        else:
            out.append(char)
    return "".join(out)


@dataclass
class FolderWalk:
    """What :func:`walk_files` found under a folder: the files (in walk order; callers sort), the sub-folders walked,
    and what it did not walk or read, each with the reason (``problems``: loops, links to nothing, unreadable
    folders)."""

    files: list[Path] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)


def _folder_key(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None


def walk_files(folder: PathLike, suffixes: Collection[str], *, skip: Collection[tuple[int, int]] = ()) -> FolderWalk:
    """The files under ``folder`` whose suffix (lower-cased) is in ``suffixes``, in every sub-folder, following links
    to folders but walking each real folder once (the module's rule). ``skip``: (device, inode) keys of folders not to
    walk into (e.g. the folder that holds ``folder``: a link back to it is reported as a loop)."""
    root = Path(os.fsdecode(folder))
    walk = FolderWalk()
    seen = set(skip)
    key = _folder_key(root)
    if key is None:
        walk.problems.append((root, "not a folder"))
        return walk
    if key in seen:
        walk.problems.append((root, "a link back to a folder that holds it; not walked"))
        return walk
    seen.add(key)
    pending = [root]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as err:
            walk.problems.append((current, f"cannot be read ({err.strerror or err}); not walked"))
            continue
        below = []
        for entry in entries:
            path = current / entry.name
            try:
                is_dir = entry.is_dir()  # follows links
                is_file = not is_dir and entry.is_file()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                key = _folder_key(path)
                if key is None:
                    walk.problems.append((path, "cannot be read; not walked"))
                elif key in seen:
                    walk.problems.append((path, "a link to a folder already walked (a loop); not walked again"))
                else:
                    seen.add(key)
                    walk.folders.append(path)
                    below.append(path)
            elif is_file:
                if path.suffix.lower() in suffixes:
                    walk.files.append(path)
            elif entry.is_symlink() and path.suffix.lower() in suffixes:
                walk.problems.append((path, "a link to nothing"))
        pending.extend(reversed(below))  # depth first, in name order
    return walk
