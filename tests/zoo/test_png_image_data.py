"""Issue 35 item 7: a PNG whose chunk checksums are valid but whose image data stops short is caught by the folder
check (``check_image(complete=True)``, which ``zoo validate`` / ``zoo train`` run on every image once) instead of
stopping an epoch halfway. Pillow's ``verify`` checks the chunks and their checksums only."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from attnzoo.tasks.images import UnreadableImage, check_image

RNG = np.random.default_rng(0)
IMAGES = {
    "RGB": Image.fromarray(RNG.integers(0, 255, (40, 50, 3), dtype=np.uint8)),
    "L": Image.fromarray(RNG.integers(0, 255, (33, 17), dtype=np.uint8)),
    "RGBA": Image.fromarray(RNG.integers(0, 255, (20, 21, 4), dtype=np.uint8)),
    "P": Image.fromarray(RNG.integers(0, 255, (30, 30, 3), dtype=np.uint8)).convert("P"),
    "1": Image.fromarray(RNG.integers(0, 255, (19, 23), dtype=np.uint8)).convert("1"),
    "I;16": Image.fromarray(RNG.integers(0, 65535, (16, 12), dtype=np.uint16)),
}


def _png(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def _with_valid_checksums(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(struct.pack(">I", len(body)) + kind + body +
                                           struct.pack(">I", zlib.crc32(kind + body)) for kind, body in chunks)


@pytest.mark.parametrize("mode", sorted(IMAGES))
def test_whole_pngs_pass_and_cut_image_data_with_valid_checksums_is_caught(mode, tmp_path):
    data = _png(IMAGES[mode])
    whole = tmp_path / "whole.png"
    whole.write_bytes(data)
    check_image(whole, complete=True)

    chunks = _chunks(data)
    cut = tmp_path / "cut.png"  # the image data cut in half, every checksum recomputed
    cut.write_bytes(_with_valid_checksums([(k, b[:len(b) // 2] if k == b"IDAT" else b) for k, b in chunks]))
    with Image.open(cut) as image:
        image.verify()  # what the folder check relied on: it passes
    with pytest.raises(UnreadableImage, match="truncated"):
        check_image(cut, complete=True)

    raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    short = tmp_path / "short.png"  # a complete zlib stream of half the rows the header promises
    idat = zlib.compress(raw[:len(raw) // 2])
    short.write_bytes(_with_valid_checksums([c for c in chunks if c[0] == b"IHDR"] + [(b"IDAT", idat)] +
                                            [c for c in chunks if c[0] not in (b"IHDR", b"IDAT")]))
    with pytest.raises(UnreadableImage, match="truncated"):
        check_image(short, complete=True)


def test_interlaced_and_many_chunk_pngs_pass(tmp_path):
    image = Image.fromarray(RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    path = tmp_path / "interlaced.png"
    image.save(path, "PNG", interlace=1)  # Pillow writes no interlaced PNGs; keep the check honest either way
    check_image(path, complete=True)
    data = _png(image)
    chunks = _chunks(data)
    body = b"".join(b for k, b in chunks if k == b"IDAT")
    split = [c for c in chunks if c[0] != b"IDAT" and c[0] != b"IEND"] + \
        [(b"IDAT", body[i:i + 100]) for i in range(0, len(body), 100)] + [(b"IEND", b"")]
    many = tmp_path / "many.png"
    many.write_bytes(_with_valid_checksums(split))
    check_image(many, complete=True)
