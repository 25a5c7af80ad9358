#!/usr/bin/env python
"""Make a synthetic real-vs-generated image set for the forgery heads (no downloads).

Real images follow natural-image statistics: a 1/f amplitude spectrum (colour channels correlated), a few soft-edged
shapes, and a little sensor noise at full resolution. Each fake is the *same* scene passed through an upsampling
generator: the scene is rendered at half resolution (area downsampling, which also removes the sensor noise) and then
upsampled 2x the way generator decoders do:

* ``nearest``: nearest-neighbour upsampling (2x2 pixel blocks);
* ``bilinear``: bilinear upsampling (smooth, correlated neighbours);
* ``transposed_conv``: a fixed random 4x4 stride-2 transposed convolution (per-phase normalised, so it keeps the
  colours but leaves the periodic checkerboard GAN decoders are known for).

These are the traces NPR and frequency-aware detectors look for; the set checks that training and evaluation code
work end to end, not how a detector fares on real generators. Layout (what ``attnzoo.heads.forgery.data`` reads)::

    <out>/train.jsonl, <out>/test.jsonl        one JSON object per image (image, label, generator, reasoning)
    <out>/{train,test}/real/00000.png
    <out>/{train,test}/fake/<generator>/00000.png

Deterministic: image ``i`` of split ``s`` comes from ``numpy.random.default_rng([seed, s, i])``.

    python tools/make_forgery_set.py --out data/forgery_synth --train 600 --test 200 --size 32 --seed 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tools") not in sys.path:
    sys.path.insert(0, str(REPO / "tools"))
from _clone_import import make_attnzoo_importable  # noqa: E402

make_attnzoo_importable()  # a clone that is not installed

from attnzoo.errors import EXIT_USER_ERROR, ZooError  # noqa: E402
from attnzoo.heads.forgery.data import ForgeryAnnotation, write_annotations  # noqa: E402
from attnzoo.heads.forgery.prompt import AUTHENTIC_ATTRIBUTES, FORGERY_ATTRIBUTES  # noqa: E402
from attnzoo.outputs import output_folder, writing  # noqa: E402

GENERATORS = ("nearest", "bilinear", "transposed_conv")
SPLITS = ("train", "test")

REAL_REASONING = dict(zip(AUTHENTIC_ATTRIBUTES, (
    "Light falls from one direction and the shading of every shape agrees with it.",
    "Edges are crisp where shapes meet and fade naturally where they are soft.",
    "Fine grain noise covers every region evenly, as a camera sensor leaves it.",
    "The image is sharp down to single pixels with no blocks or blur.",
    "The shapes overlap and occlude each other in a plausible way.",
)))
FAKE_REASONING = {
    "nearest": "Edges show stair steps of two by two pixel blocks.",
    "bilinear": "Edges are soft everywhere and fine detail is smeared.",
    "transposed_conv": "A faint periodic checkerboard pattern covers flat regions.",
}
FAKE_SHARED = dict(zip(FORGERY_ATTRIBUTES[2:4], (
    "The texture lacks the fine grain noise of a real photo; neighbouring pixels are too similar.",
    "Pixel level detail looks resampled rather than captured.",
)))


def natural_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A float RGB scene in [0, 1] with a 1/f spectrum and a few soft shapes (no sensor noise yet)."""
    freqs = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2)
    freqs[0, 0] = 1.0
    alpha = rng.uniform(0.8, 1.2)
    fields = []
    for _ in range(3):
        phase = np.exp(2j * np.pi * rng.random((size, size)))
        field = np.real(np.fft.ifft2(phase / freqs**alpha))
        fields.append((field - field.mean()) / (field.std() + 1e-8))
    mix = rng.normal(0.0, 0.3, (3, 3)) + np.eye(3) * 0.4 + 0.5  # correlated colour channels
    image = np.tensordot(mix, np.stack(fields), axes=1)
    image = 0.5 + 0.12 * image + rng.uniform(-0.15, 0.15, (3, 1, 1))
    yy, xx = np.mgrid[0:size, 0:size] / size
    for _ in range(rng.integers(2, 6)):
        cy, cx, ry, rx = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        mask = 0.5 * (1.0 - np.tanh(0.5 * (inside - 1.0) * rng.uniform(5, 40)))  # logistic; soft to crisp edges
        colour = rng.uniform(0.05, 0.95, (3, 1, 1))
        image = image * (1 - mask) + colour * mask * (1 + 0.1 * fields[0])
    return np.clip(image.transpose(1, 2, 0), 0.0, 1.0)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def camera(rng: np.random.Generator, scene: np.ndarray) -> np.ndarray:
    """The real image: the scene at full resolution with sensor noise."""
    return _to_uint8(scene + rng.normal(0.0, rng.uniform(0.03, 0.06), scene.shape))


def _transposed_conv_kernel(seed: int = 1234) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    kernel = 1.0 + 0.6 * torch.rand(4, 4, generator=generator)
    # each output phase (r, c) of a stride-2 transposed conv sums kernel[r::2, c::2]; normalise them to 1 so colours
    # keep their level while the unequal taps leave a 2-periodic pattern.
    for r in range(2):
        for c in range(2):
            kernel[r::2, c::2] /= kernel[r::2, c::2].sum()
    return kernel.expand(3, 1, 4, 4).clone()


_KERNEL = _transposed_conv_kernel()


def upsampling_generator(scene: np.ndarray, kind: str) -> np.ndarray:
    """The fake image: the scene rendered at half resolution, upsampled 2x by ``kind``."""
    x = torch.from_numpy(scene.transpose(2, 0, 1)).float()[None]
    low = F.avg_pool2d(x, 2)
    if kind == "nearest":
        up = F.interpolate(low, scale_factor=2, mode="nearest")
    elif kind == "bilinear":
        up = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
    elif kind == "transposed_conv":
        up = F.conv_transpose2d(F.pad(low, (1, 1, 1, 1), mode="replicate"), _KERNEL, stride=2, groups=3)
        up = up[..., 3:-3, 3:-3]
    else:
        raise ValueError(f"unknown generator {kind!r}; choose from {GENERATORS}")
    return _to_uint8(up[0].numpy().transpose(1, 2, 0))


def make_set(out: str | Path, train: int = 600, test: int = 200, size: int = 32, seed: int = 0) -> dict[str, Path]:
    """Write both splits (half real, half fake, generators in turn); returns {split: annotation file}."""
    if size % 2:
        raise ValueError(f"size must be even (2x upsampling); got {size}")
    out = output_folder(out, "--out")  # the zoo's output-path rule (attnzoo.outputs), before any image is made
    with writing(out, "--out"):
        return _write_splits(out, train, test, size, seed)


def _write_splits(out: Path, train: int, test: int, size: int, seed: int) -> dict[str, Path]:
    from PIL import Image

    files = {}
    for split_index, (split, count) in enumerate(zip(SPLITS, (train, test))):
        records = []
        for i in range(count):
            rng = np.random.default_rng([seed, split_index, i])
            scene = natural_image(rng, size)
            if i % 2 == 0:
                image, label, generator = camera(rng, scene), 0, "real"
                path = out / split / "real" / f"{i:05d}.png"
                reasoning = dict(REAL_REASONING)
            else:
                generator = GENERATORS[(i // 2) % len(GENERATORS)]
                image, label = upsampling_generator(scene, generator), 1
                path = out / split / "fake" / generator / f"{i:05d}.png"
                reasoning = {FORGERY_ATTRIBUTES[1]: FAKE_REASONING[generator], **FAKE_SHARED}
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
            # real images are evaluated within every generator's table row, as MMFR's sets pair reals with each
            # generator: name them by the generator whose turn it is.
            row_generator = generator if label else GENERATORS[(i // 2) % len(GENERATORS)]
            records.append(ForgeryAnnotation(path, label, row_generator, reasoning))
        files[split] = out / f"{split}.jsonl"
        write_annotations(files[split], records)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make_forgery_set.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        files = make_set(args.out, args.train, args.test, args.size, args.seed)
    except ZooError as err:  # an output path the rule refuses, a write the file system refuses: one line
        parser.exit(EXIT_USER_ERROR, f"{parser.prog}: error: {err}\n")
    for split, path in files.items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
