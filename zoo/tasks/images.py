"""The ``IMAGE_OR_DIR...`` arguments of the image verbs (``zoo xray detect``, ``zoo forgery check``): one rule for both.

A folder contributes its image files (not its subfolders), sorted; a file named twice counts once. A file that is not
an image (by suffix, or because it cannot be decoded: a text file, a truncated PNG) is skipped with a warning that
names it, and the run goes on. A path that does not exist is a user mistake (``UserError``: one line, exit 2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import UserError

__all__ = ["IMAGE_SUFFIXES", "collect_images", "read_rgb_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def collect_images(inputs: Sequence[str | Path], warn: Callable[[str], None]) -> list[Path]:
    """The image files named by ``inputs`` (files, or directories' image files, sorted), in order, without repeats.

    A file that is not an image (by suffix, or because it cannot be decoded) is skipped with a warning naming it; a
    missing input is an error.
    """
    import cv2

    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            candidates = sorted(p for p in item.iterdir() if p.is_file())
        elif item.is_file():
            candidates = [item]
        else:
            raise UserError(f"{item}: no such file or directory (pass image files or folders of images)")
        for path in candidates:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                warn(f"warning: skipping {path}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
            elif cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is None:
                warn(f"warning: skipping {path}: cannot be decoded as an image (corrupt or truncated?)")
            elif path.resolve() not in {p.resolve() for p in found}:
                found.append(path)
    return found


def read_rgb_images(inputs: Sequence[str | Path], warn: Callable[[str], None],
                    min_side: int = 1) -> Iterator[tuple[Path, np.ndarray]]:
    """(path, RGB uint8 array (H, W, 3)) for every image of ``inputs`` (:func:`collect_images`' rule), decoded as the
    forgery heads' own loaders do (Pillow, ``convert('RGB')``). Images with a side below ``min_side`` are skipped
    with a warning (the model cannot read them); no image at all is a ``UserError``."""
    from PIL import Image

    paths = collect_images(inputs, warn)
    read = 0
    for path in paths:
        try:
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as error:  # decodable by OpenCV but not by Pillow
            warn(f"warning: skipping {path}: cannot be decoded as an image ({error})")
            continue
        if min(array.shape[:2]) < min_side:
            warn(f"warning: skipping {path}: {array.shape[1]}x{array.shape[0]} px is below the {min_side} px this "
                 "model reads")
            continue
        read += 1
        yield path, array
    if read == 0:
        raise UserError(f"no readable image in {', '.join(map(str, inputs))} (looked for {', '.join(IMAGE_SUFFIXES)}"
                        f" files; {len(paths)} found)")
