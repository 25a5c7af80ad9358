"""The ``IMAGE_OR_DIR...`` arguments of the image verbs: files and folders in, decoded RGB images out.

A folder stands for every file under it (recursively, in sorted order). Whether a file is an image is decided by
decoding it (Pillow), not by its extension: a file that does not decode (a text file, a truncated PNG) is skipped with
a warning on stderr that names it and says why, and the run goes on. A path that does not exist, or arguments with no
image at all, are user mistakes (``UserError``: one line, exit 2).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .errors import UserError

__all__ = ["expand_image_arguments", "read_images", "warn"]


def warn(message: str) -> None:
    print(f"zoo: warning: {message}", file=sys.stderr)


def expand_image_arguments(arguments: Sequence[str]) -> list[Path]:
    """Files named and files under the folders named, in argument order (each folder's files sorted)."""
    files: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file())
            if not found:
                warn(f"folder {path} holds no files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"no such image or folder: {path}")
    return files


def _decode_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def read_images(arguments: Sequence[str], min_side: int = 1,
                decode: Callable[[Path], np.ndarray] = _decode_rgb) -> Iterator[tuple[Path, np.ndarray]]:
    """(path, RGB uint8 array (H, W, 3)) for every readable image; warns about and skips the rest.

    Images with a side below ``min_side`` are skipped with a warning too (the model cannot read them). Raises
    ``UserError`` after the last file when not one image was read.
    """
    from PIL import UnidentifiedImageError

    files = expand_image_arguments(arguments)
    read = 0
    for path in files:
        try:
            image = decode(path)
        except UnidentifiedImageError:
            warn(f"skipping {path}: not an image (Pillow cannot identify the file)")
            continue
        except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt data inside a known format
            warn(f"skipping {path}: unreadable image ({error})")
            continue
        if min(image.shape[:2]) < min_side:
            warn(f"skipping {path}: {image.shape[1]}x{image.shape[0]} px is below the {min_side} px this model reads")
            continue
        read += 1
        yield path, image
    if read == 0:
        raise UserError(f"no readable image in {', '.join(arguments)} (looked at {len(files)} file(s))")
