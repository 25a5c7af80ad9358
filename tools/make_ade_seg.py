"""Make a small ADE20K-format semantic segmentation set, deterministic by seed.

The layout is ADEChallengeData2016's, so the ADE20K configs run on it by changing only ``data_root``:

    OUT/images/training/ADE_train_00000001.jpg      OUT/annotations/training/ADE_train_00000001.png
    OUT/images/validation/ADE_val_00000001.jpg      OUT/annotations/validation/ADE_val_00000001.png

Label maps use ADE20K's 150-class numbering with 0 = "other" (ignored by mmseg's ``reduce_zero_label=True``):
the scene is sky (3) above a random horizon and floor (4) below it, with shapes of ``--num-classes`` object classes
(ADE labels 5, 6, ...; each class its own shape and colour) and a thin band of label 0 around each object.

    python tools/make_ade_seg.py data/ade_synth/ADEChallengeData2016 --num-train 32 --num-val 8 --seed 0
"""

from __future__ import annotations

import argparse
import os.path as osp
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _synthetic_shapes import CLASS_STYLES, background, cv2, draw, place_shapes, shape_set_args  # noqa: E402

SKY, FLOOR, FIRST_OBJECT = 3, 4, 5


def make_split(out: Path, split: str, prefix: str, num_images: int, rng: np.random.Generator, args) -> None:
    image_dir, label_dir = out / "images" / split, out / "annotations" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    h, w = args.height, args.width
    for index in range(1, num_images + 1):
        horizon = int(rng.integers(h // 4, 3 * h // 4))
        sky = background(rng, horizon, w, args.noise)
        floor = background(rng, h - horizon, w, args.noise)
        floor[..., 0] = np.clip(floor[..., 0].astype(np.int16) - 40, 0, 255)  # floors are warmer than skies
        image = np.concatenate([sky, floor], axis=0)
        label = np.full((h, w), FLOOR, np.uint8)
        label[:horizon] = SKY
        for slot, polygon in place_shapes(rng, h, w, args.num_classes, args.max_objects, args.min_size,
                                          args.max_size):
            draw(image, polygon, CLASS_STYLES[slot][1], rng)
            pts = np.round(polygon).astype(np.int32)[None]
            cv2.polylines(label, pts, True, 0, thickness=1)  # ambiguous border pixels: "other", ignored
            draw(label, polygon, None, rng, value=FIRST_OBJECT + slot)
        name = f"ADE_{prefix}_{index:08d}"
        cv2.imwrite(str(image_dir / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(label_dir / f"{name}.png"), label)


def make(out, num_train=32, num_val=8, height=128, width=128, num_classes=4, max_objects=3, min_size=20,
         max_size=56, noise=8.0, seed=0) -> Path:
    """Write the set under ``out`` and return its path (also importable from tests)."""
    if not 1 <= num_classes <= len(CLASS_STYLES):
        raise ValueError(f"num_classes must be in 1..{len(CLASS_STYLES)}")
    if max_size >= min(height, width) - 2:
        raise ValueError("max_size must be smaller than the image")
    args = argparse.Namespace(height=height, width=width, num_classes=num_classes, max_objects=max_objects,
                              min_size=min_size, max_size=max_size, noise=noise)
    out = Path(out)
    rng = np.random.default_rng(seed)
    make_split(out, "training", "train", num_train, rng, args)
    make_split(out, "validation", "val", num_val, rng, args)
    return out


def main(argv=None):
    a = shape_set_args(make, __doc__.split("\n\n")[0], "output folder (ADEChallengeData2016 layout)", argv,
                       num_classes_help="object classes (ADE labels 5, 6, ...)")
    out = make(**vars(a))
    print(f"wrote {a.num_train} train / {a.num_val} val images to {out}")


if __name__ == "__main__":
    main()
