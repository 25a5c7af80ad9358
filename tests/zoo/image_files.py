"""Files that users hand the image verbs and that used to crash them (issue 26): a name that is not UTF-8, a truncated
JPEG, a small file holding a huge image; and a guard that fails a test when such an image is decoded."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

NOT_UTF8 = b"\xff\xfe"  # no UTF-8 text has these bytes; os.fsdecode turns them into surrogate escapes
HUGE_SIDE = 14000  # 196 megapixels: over the default limit (and over twice Pillow's own); about 24 KB as a 1-bit PNG


def not_utf8_path(folder: Path, stem: str, suffix: str = ".png") -> str:
    """A path in ``folder`` whose name starts with bytes that are not UTF-8 (a ``str`` with surrogate escapes, as
    ``sys.argv`` and ``os.listdir`` give it)."""
    return os.fsdecode(os.fsencode(folder) + b"/" + NOT_UTF8 + stem.encode() + suffix.encode())


def write_image(path, seed: int = 0, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    """A random RGB image at ``path`` (format by suffix); returns its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def write_truncated_jpeg(path, seed: int = 0, size: tuple[int, int] = (64, 64)) -> None:
    """The first half of a JPEG: its header is whole (Pillow identifies it, ``verify`` passes), its pixels are not."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    data = buffer.getvalue()
    Path(path).write_bytes(data[:len(data) // 2])


def write_huge_png(path, side: int = HUGE_SIDE) -> None:
    """A valid black 1-bit PNG of side x side pixels, written chunk by chunk (never side x side bytes in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def forbid_decoding_huge_images(monkeypatch, limit: int = 50_000_000, names: tuple[str, ...] = ("huge",)) -> None:
    """Fail the test if Pillow decodes an image of more than ``limit`` pixels, or OpenCV reads a file whose name
    contains one of ``names``: an oversized image must be skipped from its header, before any pixel is decoded."""
    import cv2

    load = ImageFile.ImageFile.load

    def guarded_load(self):
        assert self.size[0] * self.size[1] <= limit, f"decoded a {self.size[0]}x{self.size[1]} image"
        return load(self)

    imread = cv2.imread

    def guarded_imread(filename, *args, **kwargs):
        assert not any(name in str(filename) for name in names), f"OpenCV decoded {filename}"
        return imread(filename, *args, **kwargs)

    monkeypatch.setattr(ImageFile.ImageFile, "load", guarded_load)
    monkeypatch.setattr(cv2, "imread", guarded_imread)
