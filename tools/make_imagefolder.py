"""Make a small ImageFolder classification set (train/ and val/ class sub-folders), deterministic by seed.

Each class is one shape in its own colour (rectangle = red, ellipse = green, triangle = blue, diamond = yellow,
hexagon = magenta, cross = white; the same drawing as the detection and segmentation makers), one object per image at a
random size, place and tilt on a noisy gradient background. Easy on purpose: a small zoo model learns it from random
weights in a few CPU minutes, so ``zoo train`` / ``zoo validate`` / ``zoo predict`` can be shown end to end here.

    python tools/make_imagefolder.py data/shapes --num-train 64 --num-val 16 --size 64 --seed 0
    # data/shapes/train/rectangle/00000.png ... data/shapes/val/cross/00015.png

Every image has its own random stream (seed, split, class, index), so asking for more images keeps the first ones.
"""

from __future__ import annotations

import argparse
import os.path as osp
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _synthetic_shapes import CLASS_STYLES, background, cv2, draw, shape_polygon  # noqa: E402

# The first six styles are six different shapes (the later ones repeat a shape in another colour).
NUM_STYLES = 6
SPLITS = {"train": 0, "val": 1}


def class_names(num_classes: int = NUM_STYLES) -> list[str]:
    if not 2 <= num_classes <= NUM_STYLES:
        raise ValueError(f"--num-classes must be between 2 and {NUM_STYLES}, got {num_classes}")
    return [CLASS_STYLES[i][0] for i in range(num_classes)]


def draw_image(rng: np.random.Generator, slot: int, size: int, noise: float) -> np.ndarray:
    """One BGR image of class ``slot``: the shape covers 30-80% of the side, anywhere it fits."""
    image = background(rng, size, size, noise)
    w, h = rng.uniform(0.3 * size, 0.8 * size, size=2)
    cx = rng.uniform(w / 2, size - w / 2)
    cy = rng.uniform(h / 2, size - h / 2)
    kind, colour = CLASS_STYLES[slot]
    draw(image, shape_polygon(kind, cx, cy, w, h, rng.uniform(-0.6, 0.6)), colour, rng)
    return image


def make(out: str | Path, num_train: int = 64, num_val: int = 16, size: int = 64, num_classes: int = NUM_STYLES,
         noise: float = 8.0, seed: int = 0) -> Path:
    """Write OUT/{train,val}/<class>/<index>.png (``num_train`` / ``num_val`` images per class); returns OUT."""
    out = Path(out)
    names = class_names(num_classes)
    for split, count in (("train", num_train), ("val", num_val)):
        for slot, name in enumerate(names):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                rng = np.random.default_rng([seed, SPLITS[split], slot, index])
                cv2.imwrite(str(folder / f"{index:05d}.png"), draw_image(rng, slot, size, noise))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output folder (gets train/ and val/)")
    parser.add_argument("--num-train", type=int, default=64, help="training images per class")
    parser.add_argument("--num-val", type=int, default=16, help="validation images per class")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--num-classes", type=int, default=NUM_STYLES)
    parser.add_argument("--noise", type=float, default=8.0, help="background noise std (0-255 scale)")
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    out = make(a.out, a.num_train, a.num_val, a.size, a.num_classes, a.noise, a.seed)
    print(f"{out}: {a.num_classes} classes x ({a.num_train} train + {a.num_val} val) images of {a.size}x{a.size}")


if __name__ == "__main__":
    main()
