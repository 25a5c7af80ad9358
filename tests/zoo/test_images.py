"""The one image reader (``attnzoo.tasks.images``, issue 26): names that are not UTF-8, truncated files, the pixel limit
checked from the header before decoding, every mode to 8-bit RGB, a folder's own image files."""

from __future__ import annotations

import argparse
import os
import warnings

import numpy as np
import pytest
from image_files import (
    HUGE_SIDE,
    forbid_decoding_huge_images,
    not_utf8_path,
    write_huge_png,
    write_image,
    write_truncated_jpeg,
)
from PIL import Image

from attnzoo.errors import UserError
from attnzoo.tasks import images
from attnzoo.tasks.images import collect_images, read_rgb_images


def test_a_name_that_is_not_utf8_is_read_and_shown_with_escapes(tmp_path):
    """Row 1: OpenCV's bindings crashed the process (segmentation fault) on such a name in the collector."""
    odd = not_utf8_path(tmp_path, "bag")
    pixels = write_image(odd)
    write_image(tmp_path / "plain.png", seed=1)
    warned = []
    found = list(read_rgb_images([tmp_path], warned.append))
    assert [str(p) for p, _ in found] == [str(tmp_path / "plain.png"), odd] and not warned  # sorted by name
    np.testing.assert_array_equal(found[1][1], pixels)
    assert images.display_path(odd).endswith("/\\xff\\xfebag.png")
    assert images.display_path(os.fsencode(odd)) == images.display_path(odd)
    write_truncated_jpeg(not_utf8_path(tmp_path, "broken", ".jpg"))
    list(read_rgb_images([tmp_path], warned.append))
    assert len(warned) == 1 and f"skipping {tmp_path}/\\xff\\xfebroken.jpg: cannot be decoded" in warned[0]
    warned[0].encode("utf-8")  # printable on a strict UTF-8 stream


def test_a_truncated_jpeg_is_skipped_with_a_warning_and_the_next_image_is_read(tmp_path):
    """Row 2's reader part: the header is whole, so only decoding finds the damage; the images after it are read."""
    write_image(tmp_path / "a.png")
    write_truncated_jpeg(tmp_path / "b.jpg")
    write_image(tmp_path / "c.png", seed=2)
    warned = []
    assert [p.name for p in collect_images([tmp_path], warned.append)] == ["a.png", "b.jpg", "c.png"] and not warned
    assert [p.name for p, _ in read_rgb_images([tmp_path], warned.append)] == ["a.png", "c.png"]
    assert len(warned) == 1 and f"skipping {tmp_path / 'b.jpg'}: cannot be decoded" in warned[0]
    assert "truncated" in warned[0]
    with pytest.raises(images.UnreadableImage, match="b.jpg: cannot be decoded.*truncated"):
        images.check_image(tmp_path / "b.jpg", complete=True)
    images.check_image(tmp_path / "b.jpg")  # the header alone is fine


def test_an_oversized_image_is_skipped_from_its_header_before_decoding(tmp_path, monkeypatch):
    """Row 3: a 24 KB PNG of 14000x14000 pixels. Pillow raised DecompressionBombError (a traceback, the images after
    it never read); OpenCV decoded it in full (10.5 GB peak in ``zoo xray detect``). Now: a warning from the header,
    nothing decoded, the next image read."""
    huge = tmp_path / "huge.png"
    write_huge_png(huge)
    assert huge.stat().st_size < 200_000
    write_image(tmp_path / "small.png")
    forbid_decoding_huge_images(monkeypatch)
    warned = []
    assert [p.name for p, _ in read_rgb_images([tmp_path], warned.append)] == ["small.png"]
    assert warned == [f"warning: skipping {huge}: {HUGE_SIDE}x{HUGE_SIDE} = 196.0 megapixels, over the limit of "
                      f"89.5 megapixels (--max-pixels {HUGE_SIDE ** 2} reads it)"]
    with pytest.raises(images.UnreadableImage, match="over the limit"):
        images.check_image(huge, complete=True)


def test_max_pixels_moves_the_limit_above_pillows_own(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    write_huge_png(path, side=3000)  # 9 megapixels
    with pytest.raises(images.UnreadableImage, match="3000x3000 = 9.0 megapixels, over the limit of 8.0 megapixels"):
        images.read_image(path, max_pixels=8_000_000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # Pillow would refuse (over twice its limit) ...
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ... or warn
        for limit in (9_000_000, 0, None):
            assert images.read_image(path, max_pixels=limit).size == (3000, 3000)
    assert Image.MAX_IMAGE_PIXELS == 1_000_000  # Pillow's own limit is back after the zoo's read
    assert images.DEFAULT_MAX_PIXELS == 89_478_485  # the documented default: Pillow's own default limit
    assert [images.parse_pixel_limit(t) for t in ("200000000", "2e8", "0")] == [200_000_000, 200_000_000, 0]
    for bad in ("-1", "1.5", "lots"):
        with pytest.raises(argparse.ArgumentTypeError, match="whole number of pixels"):
            images.parse_pixel_limit(bad)


def _mode_cases():
    gray = np.array([[0, 64, 128, 255]], np.uint8)
    rgba = np.zeros((1, 4, 4), np.uint8)
    rgba[..., :3] = gray[..., None]
    rgba[..., 3] = [0, 80, 160, 255]  # alpha is dropped, as timm, mmcv and the forgery loaders drop it
    palette = Image.fromarray(gray).convert("P")
    transparent = palette.copy()
    transparent.info["transparency"] = 0
    return [
        ("L", Image.fromarray(gray), gray),
        ("LA", Image.fromarray(np.ascontiguousarray(rgba[..., [0, 3]])), gray),
        ("RGBA", Image.fromarray(rgba), gray),
        ("P", palette, gray),
        ("P+transparency", transparent, gray),
        ("1", Image.fromarray(gray > 100), np.array([[0, 0, 255, 255]], np.uint8)),
        # 16 bits: scaled 65535 -> 255, not clipped at 255 (Pillow's convert("RGB") gives 0, 255, 255, 255)
        ("I;16", Image.fromarray(np.array([[0, 1000, 32768, 65535]], np.uint16)), np.array([[0, 4, 128, 255]])),
        ("I 8-bit range", Image.fromarray(np.array([[0, 64, 128, 255]], np.int32)), gray),
        ("I 16-bit range", Image.fromarray(np.array([[-5, 1000, 32768, 65535]], np.int32)), np.array([[0, 4, 128, 255]])),
        ("F 0..1", Image.fromarray(np.array([[0.0, 0.25, 0.5, 1.0]], np.float32)), np.array([[0, 64, 128, 255]])),
        ("F with NaN", Image.fromarray(np.array([[np.nan, 64, 128, 255]], np.float32)), gray),
    ]


@pytest.mark.parametrize("name, image, expected", _mode_cases(), ids=[c[0] for c in _mode_cases()])
def test_every_mode_becomes_8_bit_rgb(tmp_path, name, image, expected):
    """The files are read through the forgery reader's old entry point (``read_rgb_images``): 16-bit images were
    clipped there (every value above 255 became white)."""
    suffix = ".tif" if image.mode in ("I", "F") else ".png"
    path = tmp_path / f"image{suffix}"
    image.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow warns about palette transparency unless it goes through RGBA
        ((_, array),) = read_rgb_images([path], lambda message: pytest.fail(message))
    assert array.dtype == np.uint8 and array.shape == (1, 4, 3)
    np.testing.assert_array_equal(array, np.repeat(np.asarray(expected, np.uint8)[..., None], 3, axis=-1))


def test_a_folder_gives_its_own_image_files_not_its_subfolders(tmp_path):
    """Row 12's rule (the README: a folder contributes its own image files, not its subfolders), once for all verbs."""
    (tmp_path / "nested").mkdir()
    write_image(tmp_path / "nested" / "deep.png")
    write_image(tmp_path / "top.jpg")
    (tmp_path / "notes.txt").write_text("x")
    warned = []
    assert collect_images([tmp_path, tmp_path / "top.jpg"], warned.append) == [tmp_path / "top.jpg"]
    assert len(warned) == 2 and "notes.txt: not an image file" in warned[1]
    assert warned[0].startswith(f"warning: skipping the 1 image(s) in sub-folder {tmp_path / 'nested'}: ")  # issue 35
    with pytest.raises(UserError, match="nowhere: no such file or directory"):
        collect_images([tmp_path / "nowhere"], warned.append)
    write_truncated_jpeg(tmp_path / "broken.jpg")
    with pytest.raises(UserError, match="no readable image in"):
        list(read_rgb_images([tmp_path / "broken.jpg", tmp_path / "notes.txt"], warned.append))
