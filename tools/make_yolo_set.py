"""Make a small YOLO-format detection set of drawn shapes (Ultralytics' layout), deterministic by seed.

    OUT/data.yaml                       path, train, val, names: what `model.train(data=...)` takes
    OUT/images/train/000001.jpg ...     OUT/labels/train/000001.txt   one "class cx cy w h" line per object (0-1)
    OUT/images/val/...                  OUT/labels/val/...

Each class is its own shape and colour (tools/_synthetic_shapes.py, shared with the COCO and ADE makers), so the set is
learnable; the boxes are the drawn pixels' extent.

    python tools/make_yolo_set.py data/yolo_shapes --num-train 64 --num-val 16 --seed 0
    python -c "from attnzoo.integrations.ultralytics import register; register(); from ultralytics import YOLO; \\
               YOLO('configs/yolo/yolo11n-bra-neck.yaml').train(data='data/yolo_shapes/data.yaml', epochs=30, imgsz=128)"
"""

from __future__ import annotations

import argparse
import os.path as osp
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _synthetic_shapes import CLASS_STYLES, background, cv2, draw, place_shapes, shape_set_args  # noqa: E402


def class_names(num_classes: int) -> list[str]:
    """One name per class slot: the shape, with the slot number where a shape repeats (``ellipse``, ``ellipse-6``)."""
    names = []
    for slot, (shape, _) in enumerate(CLASS_STYLES[:num_classes]):
        names.append(shape if shape not in names else f"{shape}-{slot}")
    return names


def make_split(out: Path, split: str, num_images: int, rng: np.random.Generator, args) -> None:
    image_dir, label_dir = out / "images" / split, out / "labels" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    for index in range(1, num_images + 1):
        image = background(rng, args.height, args.width, args.noise)
        lines = []
        for slot, polygon in place_shapes(rng, args.height, args.width, args.num_classes, args.max_objects,
                                          args.min_size, args.max_size):
            draw(image, polygon, CLASS_STYLES[slot][1], rng)
            mask = np.zeros((args.height, args.width), np.uint8)
            draw(mask, polygon, None, rng, value=1)
            ys, xs = np.nonzero(mask)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            lines.append(f"{slot} {(x0 + x1) / 2 / args.width:.6f} {(y0 + y1) / 2 / args.height:.6f} "
                         f"{(x1 - x0) / args.width:.6f} {(y1 - y0) / args.height:.6f}")
        cv2.imwrite(str(image_dir / f"{index:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        (label_dir / f"{index:06d}.txt").write_text("".join(f"{line}\n" for line in lines))


def make(out, num_train=64, num_val=16, height=128, width=128, num_classes=3, max_objects=3, min_size=20,
         max_size=56, noise=8.0, seed=0) -> Path:
    """Write the set under ``out``; returns the path of its ``data.yaml`` (also importable from tests)."""
    args = argparse.Namespace(height=height, width=width, num_classes=num_classes, max_objects=max_objects,
                              min_size=min_size, max_size=max_size, noise=noise)
    if not 1 <= num_classes <= len(CLASS_STYLES):
        raise ValueError(f"num_classes must be in 1..{len(CLASS_STYLES)}")
    if max_size >= min(height, width) - 2:
        raise ValueError("max_size must be smaller than the image")
    out = Path(out).resolve()
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_train), ("val", num_val)):
        make_split(out, split, count, rng, args)
    data = dict(path=str(out), train="images/train", val="images/val",
                names=dict(enumerate(class_names(num_classes))))
    (out / "data.yaml").write_text(f"# attnzoo synthetic shapes, seed {seed} (tools/make_yolo_set.py)\n"
                                   + yaml.safe_dump(data, sort_keys=False))
    return out / "data.yaml"


def main(argv=None):
    a = shape_set_args(make, __doc__.split("\n\n")[0], "output folder (YOLO layout)", argv)
    data = make(**vars(a))
    print(f"wrote {a.num_train} train / {a.num_val} val images; data: {data}")


if __name__ == "__main__":
    main()
