"""Make a small COCO-format detection + instance-segmentation set (boxes and polygon masks), deterministic by seed.

The layout is COCO's, so the COCO configs run on it by changing only ``data_root``:

    OUT/annotations/instances_train2017.json   OUT/train2017/000000000001.jpg ...
    OUT/annotations/instances_val2017.json     OUT/val2017/...

The json lists all 80 COCO categories with their real ids (so 80-class heads and mmdet's CocoDataset / CocoMetric
work unchanged); the objects use the first ``--num-classes`` of them, each class drawn as its own shape and colour
(person = red rectangle, bicycle = green ellipse, car = blue triangle, ...).

    python tools/make_coco_det.py data/coco_synth --num-train 64 --num-val 16 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os.path as osp
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _synthetic_shapes import CLASS_STYLES, background, cv2, draw, place_shapes, shape_set_args  # noqa: E402

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
# COCO's category ids skip 12, 26, 29, 30, 45, 66, 68, 69, 71, 83.
COCO_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))


def make_split(out: Path, split: str, num_images: int, rng: np.random.Generator, args, first_id: int) -> dict:
    image_dir = out / f"{split}2017"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        image_id = first_id + index
        file_name = f"{image_id:012d}.jpg"
        image = background(rng, args.height, args.width, args.noise)
        shapes = place_shapes(rng, args.height, args.width, args.num_classes, args.max_objects,
                              args.min_size, args.max_size)
        for slot, polygon in shapes:
            draw(image, polygon, CLASS_STYLES[slot][1], rng)
            mask = np.zeros((args.height, args.width), np.uint8)
            draw(mask, polygon, None, rng, value=1)
            ys, xs = np.nonzero(mask)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image_id, category_id=COCO_IDS[slot],
                bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)], area=float(mask.sum()), iscrowd=0,
                segmentation=[[round(float(v), 2) for v in polygon.reshape(-1)]]))
        cv2.imwrite(str(image_dir / file_name), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append(dict(id=image_id, file_name=file_name, height=args.height, width=args.width))
    return dict(
        info=dict(description=f"attnzoo synthetic COCO-format set ({split}), seed {args.seed}"),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=i, name=n, supercategory="synthetic") for i, n in zip(COCO_IDS, COCO_CLASSES)],
    )


def make(out, num_train=64, num_val=16, height=128, width=160, num_classes=4, max_objects=3, min_size=24,
         max_size=64, noise=8.0, seed=0) -> Path:
    """Write the set under ``out`` and return its path (also importable from tests)."""
    args = argparse.Namespace(height=height, width=width, num_classes=num_classes, max_objects=max_objects,
                              min_size=min_size, max_size=max_size, noise=noise, seed=seed)
    if not 1 <= num_classes <= len(CLASS_STYLES):
        raise ValueError(f"num_classes must be in 1..{len(CLASS_STYLES)}")
    if max_size >= min(height, width) - 2:
        raise ValueError("max_size must be smaller than the image")
    out = Path(out)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count, first_id in (("train", num_train, 1), ("val", num_val, 1_000_000)):
        coco = make_split(out, split, count, rng, args, first_id)
        (out / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(coco))
    return out


def main(argv=None):
    a = shape_set_args(make, __doc__.split("\n\n")[0], "output folder (COCO layout)", argv,
                       num_classes_help="how many of the COCO classes get objects")
    out = make(**vars(a))
    print(f"wrote {a.num_train} train / {a.num_val} val images to {out}")


if __name__ == "__main__":
    main()
