"""Images from users: the one reader behind every verb that takes images (``zoo predict``, the ImageFolders of ``zoo
validate`` / ``zoo train``, ``zoo xray detect``, ``zoo forgery check``).

- **Names.** A path is a ``str`` (with ``os.fsdecode``'s surrogate escapes for bytes that are not UTF-8) or ``bytes``;
  the file is opened by Python and handed to Pillow as a file object, never by name to OpenCV or mmcv (OpenCV's
  bindings crash the process on such a name). Messages show a name with its undecodable bytes as ``\\xNN``
  (:func:`display_path`).
- **Pixel limit.** The header's width x height is checked before a single pixel is decoded: an image with more than
  ``max_pixels`` pixels (default :data:`DEFAULT_MAX_PIXELS`, Pillow's own limit: 89,478,485 pixels, about 9459 x 9459)
  is skipped with a warning; ``--max-pixels N`` raises the limit (0: no limit). Pillow's own decompression-bomb check
  is replaced by this one for the zoo's reads, so a raised limit is honoured.
- **Decoding.** Pillow. A file that Pillow cannot identify or decode (not an image, truncated, corrupt) is an
  :class:`UnreadableImage` naming it; the verbs skip it with a warning and go on with the next image (a dataset leaves
  it out, see ``attnzoo.tasks.classification.datasets``), never replacing it with another.
- **Modes.** Every image becomes 8-bit RGB: grayscale, palette and CMYK through Pillow; alpha is dropped (as timm's,
  mmcv's and the forgery heads' own loaders drop it, so an image reads as in training); 16-bit grayscale (``I;16``)
  is scaled (65535 -> 255), not clipped; 32-bit integer (``I``) and float (``F``) images are scaled from the smallest
  of the ranges 0..1 (float only), 0..255, 0..65535 that holds their largest value, else from 0..their largest value
  (negative values and NaN become 0). 16-bit colour PNGs are read by Pillow as 8-bit colour.
- **Folders** (the ``IMAGE_OR_DIR...`` arguments of ``zoo xray detect`` and ``zoo forgery check``): a folder
  contributes its own image files (by suffix, sorted), not its subfolders (a sub-folder holding images is named in a
  warning, never walked, so no link structure can make it loop); a file named twice counts once; a file that is not
  an image (by suffix, or by its header) and a link to nothing are skipped with a warning that names them. A path
  that does not exist is a user mistake (``UserError``: one line, exit 2).
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Union

import numpy as np

from ..errors import UserError, ZooError
from .folders import printable

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "UnreadableImage", "batches", "check_image", "collect_images",
           "display_path", "parse_pixel_limit", "read_image", "read_rgb_images", "to_rgb"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own Image.MAX_IMAGE_PIXELS (1024 * 1024 * 1024 // 4 // 3)

PathLike = Union[str, bytes, os.PathLike]


def as_path(path: PathLike) -> Path:
    """``path`` as a ``Path`` (bytes through ``os.fsdecode``: undecodable bytes become surrogate escapes)."""
    return Path(os.fsdecode(path))


def display_path(path: PathLike) -> str:
    """``path`` for messages: the bytes that are not UTF-8 and the control characters shown as ``\\xNN`` (printable
    on any stream, never an escape sequence or a line of its own: ``attnzoo.tasks.folders.printable``)."""
    return printable(path)


class UnreadableImage(ZooError):
    """An image file that the zoo does not read (not an image, truncated, corrupt, over the pixel limit); ``str`` is
    ``<name>: <reason>``. The verbs catch it and skip the file with a warning."""

    def __init__(self, path: PathLike, reason: str):
        self.path = as_path(path)
        self.reason = reason
        super().__init__(f"{display_path(path)}: {reason}")


def parse_pixel_limit(text: str) -> int:
    """``--max-pixels``' value: a whole number of pixels (``200000000``, ``2e8``), 0 for no limit."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value.is_integer()):
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels (e.g. 200000000 or 2e8; 0: no limit), "
                                         f"got {text!r}")
    return int(value)


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} megapixels"


# -- Pillow's own limit, lifted while the zoo reads (the zoo checks its own limit from the header) -------------------

_lift_lock = threading.Lock()
_lift_depth = 0
_lift_saved = None


@contextmanager
def _pillow_limit_lifted():
    """Pillow's ``MAX_IMAGE_PIXELS`` set to None while inside (re-entrant, thread-safe: the last one out restores it),
    so that a ``max_pixels`` above Pillow's limit is honoured and Pillow does not warn about images the zoo accepted."""
    from PIL import Image

    global _lift_depth, _lift_saved
    with _lift_lock:
        if _lift_depth == 0:
            _lift_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _lift_depth += 1
    try:
        yield
    finally:
        with _lift_lock:
            _lift_depth -= 1
            if _lift_depth == 0:
                Image.MAX_IMAGE_PIXELS = _lift_saved


def _reason(error: BaseException) -> str:
    """Why Pillow failed, without the file object's repr that Pillow puts in some messages."""
    from PIL import UnidentifiedImageError

    if isinstance(error, UnidentifiedImageError):
        return "cannot be decoded as an image (not a format Pillow reads)"
    return f"cannot be decoded as an image ({type(error).__name__}: {error})"


@contextmanager
def _opened(path: Path, max_pixels: int | None):
    """The image's header read by Pillow from a file object, its size checked against ``max_pixels``; no pixel
    decoded yet."""
    from PIL import Image

    try:
        file = open(path, "rb")  # noqa: SIM115 (closed below; Pillow reads from it)
    except OSError as err:
        raise UnreadableImage(path, f"cannot be opened ({err.strerror or err})") from None
    with file, _pillow_limit_lifted():
        try:
            image = Image.open(file)
        except Exception as err:  # Pillow raises many types on bad headers (OSError, SyntaxError, struct.error, ...)
            raise UnreadableImage(path, _reason(err)) from None
        width, height = image.size
        if max_pixels and width * height > max_pixels:
            raise UnreadableImage(path, f"{width}x{height} = {_megapixels(width * height)}, over the limit of "
                                        f"{_megapixels(max_pixels)} (--max-pixels {width * height} reads it)")
        yield image, file


def _scale_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """A single-channel 16-bit / 32-bit / float image scaled to 0..255 (see the module's rule)."""
    values = array.astype(np.float32)
    if mode.startswith("I;16"):
        full = 65535.0
    else:
        top = float(np.nanmax(values)) if values.size else 0.0
        ranges = ((1.0,) if mode == "F" else ()) + (255.0, 65535.0)
        full = next((r for r in ranges if top <= r), top)  # beyond 16 bits: the image's own maximum
    values = np.nan_to_num(values * (255.0 / full), nan=0.0)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def to_rgb(image):
    """A loaded Pillow image as 8-bit RGB (the module's rule for modes)."""
    from PIL import Image

    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_scale_to_uint8(np.asarray(image), mode), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:  # Pillow warns unless palette transparency goes through RGBA
        image = image.convert("RGBA")
    return image.convert("RGB")


def read_image(path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """The image at ``path`` decoded as an 8-bit RGB Pillow image; :class:`UnreadableImage` when it is not an image,
    truncated, corrupt, or has more than ``max_pixels`` pixels (checked before decoding; None or 0: no limit)."""
    path = as_path(path)
    with _opened(path, max_pixels) as (image, _):
        try:
            image.load()
            return to_rgb(image)
        except Exception as err:  # truncated / corrupt data: OSError, SyntaxError, ValueError, struct.error, ...
            raise UnreadableImage(path, _reason(err)) from None


def check_image(path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS, complete: bool = False) -> None:
    """Raise :class:`UnreadableImage` unless ``path`` is an image Pillow identifies, within ``max_pixels``.

    With ``complete``, also check that the file holds the whole image, cheaper than decoding it: a JPEG must end with
    its end-of-image marker (else it is decoded at 1/8 scale, which reads every byte of it), a PNG's chunks and their
    checksums are verified and its image data inflated to the size the header promises (checksums can be made valid
    over data that stops short), other formats are decoded.
    """
    path = as_path(path)
    with _opened(path, max_pixels) as (image, file):
        if not complete:
            return
        try:
            if image.format in ("JPEG", "MPO"):
                file.seek(-2, os.SEEK_END)
                if file.read(2) == b"\xff\xd9":
                    return
                image.draft(image.mode, (1, 1))
                image.load()
            elif image.format == "PNG":
                image.verify()  # every chunk and its checksum
                file.seek(0)
                _check_png_image_data(file)  # valid checksums over image data that stops short
            else:
                image.load()
        except Exception as err:
            raise UnreadableImage(path, _reason(err)) from None


def _check_png_image_data(file) -> None:
    """Raise ``OSError`` unless the PNG's image data (its IDAT chunks' zlib stream) is complete: the stream ends and,
    for a non-interlaced image, inflates to exactly the rows the header promises. Inflated in pieces, never held whole;
    cheaper than decoding (no filtering, no image), and it catches a file whose chunks were cut and given new checksums.
    """
    import struct
    import zlib

    file.read(8)  # the signature (Pillow has read it)
    inflate = zlib.decompressobj()
    produced, expected, interlaced = 0, None, False
    while True:
        head = file.read(8)
        if len(head) < 8:
            raise OSError("the PNG ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", file.read(13))
            file.read(length - 13 + 4)
            channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 4)
            expected = height * (1 + (width * channels * depth + 7) // 8)
            interlaced = interlace != 0
            continue
        if kind == b"IDAT":
            remaining = length
            while remaining:
                piece = file.read(min(remaining, 1 << 16))
                if not piece:
                    raise OSError("the PNG ends inside its image data")
                remaining -= len(piece)
                data = piece
                while data:
                    produced += len(inflate.decompress(data, 1 << 20))
                    data = inflate.unconsumed_tail
            file.read(4)
            continue
        if kind == b"IEND":
            break
        file.seek(length + 4, os.SEEK_CUR)
    while not inflate.eof and inflate.unconsumed_tail:
        produced += len(inflate.decompress(inflate.unconsumed_tail, 1 << 20))
    produced += len(inflate.flush())
    if not inflate.eof:
        raise OSError("image file is truncated (its compressed image data stops short)")
    if expected is not None and not interlaced and produced != expected:
        raise OSError(f"image file is truncated ({produced} of {expected} bytes of image data)")


def _folder_files(folder: Path, warn: Callable[[str], None]) -> list[Path]:
    """A folder's own files, sorted; a sub-folder holding image files and a link to nothing are named in a warning
    (a folder contributes its own images only: nothing is left out without a word)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise UserError(f"{display_path(folder)}: cannot be read ({err.strerror or err})") from None
    files = []
    for entry in entries:
        if entry.is_file():
            files.append(entry)
        elif entry.is_dir():
            try:
                inside = sum(1 for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            except OSError:
                inside = 0
            if inside:
                warn(f"warning: skipping the {inside} image(s) in sub-folder {display_path(entry)}: a folder gives "
                     "its own images, not its sub-folders' (pass the sub-folder too)")
        elif entry.is_symlink() and entry.suffix.lower() in IMAGE_SUFFIXES:
            warn(f"warning: skipping {display_path(entry)}: a link to nothing")
    return files


def collect_images(inputs: Sequence[PathLike], warn: Callable[[str], None],
                   max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[Path]:
    """The image files named by ``inputs`` (files, or directories' own image files, sorted), in order, without
    repeats; each one's header read (not its pixels).

    A file that is not an image (by suffix, by its header, or over ``max_pixels``) is skipped with a warning naming
    it; a missing input is a ``UserError``.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for item in map(as_path, inputs):
        if item.is_dir():
            candidates = _folder_files(item, warn)
        elif item.is_file():
            candidates = [item]
        else:
            raise UserError(f"{display_path(item)}: no such file or directory (pass image files or folders of images)")
        for path in candidates:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                warn(f"warning: skipping {display_path(path)}: not an image file (expected one of "
                     f"{', '.join(IMAGE_SUFFIXES)})")
                continue
            key = path.resolve()
            if key in seen:
                continue
            try:
                check_image(path, max_pixels)
            except UnreadableImage as err:
                warn(f"warning: skipping {err}")
                continue
            seen.add(key)
            found.append(path)
    return found


def read_rgb_images(inputs: Sequence[PathLike], warn: Callable[[str], None], min_side: int = 1,
                    max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Iterator[tuple[Path, np.ndarray]]:
    """(path, RGB uint8 array (H, W, 3)) for every image of ``inputs`` (:func:`collect_images`' rule), decoded one
    at a time as the images are consumed; a file that does not decode is skipped with a warning naming it, and so is
    an image with a side below ``min_side`` (the model cannot read it). No image at all is a ``UserError``."""
    paths = collect_images(inputs, warn, max_pixels)
    read = 0
    for path in paths:
        try:
            array = np.asarray(read_image(path, max_pixels))
        except UnreadableImage as err:
            warn(f"warning: skipping {err}")
            continue
        if min(array.shape[:2]) < min_side:
            warn(f"warning: skipping {display_path(path)}: {array.shape[1]}x{array.shape[0]} px is below the "
                 f"{min_side} px this model reads")
            continue
        read += 1
        yield path, array
    if read == 0:
        raise UserError(f"no readable image in {', '.join(map(display_path, inputs))} (looked for "
                        f"{', '.join(IMAGE_SUFFIXES)} files; {len(paths)} found)")


def batches(items: Iterable, size: int) -> Iterator[list]:
    """``items`` in lists of ``size`` (the last one shorter), as the image verbs feed their models; lazily, so a
    folder's images are read one batch ahead, not all at once."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
