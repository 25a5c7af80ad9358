#!/usr/bin/env python
"""Make a synthetic PIDray-style X-ray set: 12 prohibited-item classes with masks, COCO json, easy/hard/hidden splits.

PIDray itself (47,677 real scans) cannot be downloaded here, so tests and the demo use this stand-in. It keeps what
matters for the detector and the evaluation code:

* the official layout and names: ``annotations/xray_train.json``, ``xray_test_{easy,hard,hidden}.json`` and image
  folders ``train/``, ``easy/``, ``hard/``, ``hidden/``; the 12 classes in the official order, category ids 1..12;
* X-ray-like images: objects are thickness maps of a material (organic, mixed/inorganic, metal), and the pixel
  colour is the transmitted intensity ``exp(-sum(mu_material * thickness))`` per colour channel, so overlapping
  objects darken each other and take the dual-energy pseudo-colours of real scanners (organic orange, mixed green,
  metal blue), inside a bag with cluttered everyday objects (clothes, cables, bottles, boards, laptops);
* the split semantics of the paper: easy = one prohibited item, hard = several, hidden = items deliberately buried
  under dense clutter;
* instance masks (uncompressed COCO RLE, so ring-shaped items such as handcuffs keep their holes).

Deterministic: image ``i`` of split ``s`` is drawn from ``numpy.random.default_rng([seed, s, i])`` only.

    python tools/make_pidray.py --out data/pidray_synth --train 400 --test 80 --size 128 --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# Official order (lutao2021/PIDray mmdet/datasets/coco.py, bywang2018/security-dataset mmdet/datasets/coco.py).
PIDRAY_CLASSES = ("Baton", "Pliers", "Hammer", "Powerbank", "Scissors", "Wrench", "Gun", "Bullet", "Sprayer",
                  "HandCuffs", "Knife", "Lighter")

# Split name -> (annotation file stem, image folder), as in the official release and configs.
SPLITS = {
    "train": ("xray_train", "train"),
    "easy": ("xray_test_easy", "easy"),
    "hard": ("xray_test_hard", "hard"),
    "hidden": ("xray_test_hidden", "hidden"),
}

# Attenuation per unit thickness for the R, G, B channels. A real dual-energy scanner colours by effective atomic
# number; here the channel ratios give the same look: low-Z organic transmits red (orange), mixed absorbs red and
# blue (green), metal absorbs red and green most (blue, dark where thick).
MATERIALS = {
    "organic": np.array([0.25, 0.55, 1.10], dtype=np.float32),
    "mixed": np.array([0.90, 0.45, 0.95], dtype=np.float32),
    "metal": np.array([2.20, 1.70, 0.90], dtype=np.float32),
}


# ------------------------------------------------------------------------------------------------------------------
# Shapes. Every item is a list of parts in a canonical frame (long axis along x, roughly within [-1, 1]);
# a part is a filled polygon or a stroked polyline, each with a density (thickness) and a material.


@dataclass(frozen=True)
class Part:
    points: np.ndarray  # (K, 2) canonical coordinates
    material: str
    density: float
    stroke: float = 0.0  # > 0: polyline of this width (canonical units); 0: filled polygon
    closed: bool = True


def _rect(cx, cy, w, h):
    return np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2], [cx + w / 2, cy + h / 2],
                     [cx - w / 2, cy + h / 2]], dtype=np.float32)


def _ellipse(cx, cy, rx, ry, start=0.0, end=360.0, n=28):
    angles = np.deg2rad(np.linspace(start, end, n, endpoint=(end - start) < 360))
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1).astype(np.float32)


def _poly(*points):
    return np.array(points, dtype=np.float32)


def _item_parts(name: str) -> list[Part]:
    if name == "Baton":  # tonfa: long shaft, grip, side handle
        return [Part(_rect(0.1, 0, 1.8, 0.13), "mixed", 1.3), Part(_rect(-0.85, 0, 0.3, 0.17), "organic", 1.0),
                Part(_rect(-0.45, 0.2, 0.09, 0.32), "mixed", 1.2)]
    if name == "Pliers":  # two diverging handles, jaws, pivot
        return [Part(_poly((-1, -0.32), (-0.1, -0.05), (-0.1, 0.03), (-1, -0.18)), "metal", 1.1),
                Part(_poly((-1, 0.32), (-0.1, 0.05), (-0.1, -0.03), (-1, 0.18)), "metal", 1.1),
                Part(_poly((-0.12, -0.08), (0.65, -0.03), (0.65, 0.03), (-0.12, 0.08)), "metal", 1.4),
                Part(_ellipse(-0.1, 0, 0.09, 0.09), "metal", 0.8)]
    if name == "Hammer":  # organic handle, metal head across it
        return [Part(_rect(-0.15, 0, 1.6, 0.13), "organic", 1.4), Part(_rect(0.72, 0, 0.24, 0.75), "metal", 1.5)]
    if name == "Powerbank":  # dense box with cylindrical cells inside
        return [Part(_rect(0, 0, 1.6, 0.85), "mixed", 1.1)] + [
            Part(_rect(-0.45 + 0.45 * k, 0, 0.34, 0.62), "metal", 0.5) for k in range(3)]
    if name == "Scissors":  # crossed blades, ring handles (holes stay empty)
        return [Part(_poly((-0.15, -0.06), (0.95, 0.02), (0.95, 0.05), (-0.15, 0.02)), "metal", 1.2),
                Part(_poly((-0.15, 0.06), (0.95, -0.02), (0.95, -0.05), (-0.15, -0.02)), "metal", 1.2),
                Part(_ellipse(-0.6, -0.27, 0.3, 0.2), "organic", 1.2, stroke=0.09),
                Part(_ellipse(-0.6, 0.27, 0.3, 0.2), "organic", 1.2, stroke=0.09)]
    if name == "Wrench":  # shaft, open jaw (C shape) and closed ring end
        return [Part(_rect(0, 0, 1.35, 0.15), "metal", 1.3),
                Part(_ellipse(0.8, 0, 0.2, 0.2, 40, 320, 20), "metal", 1.4, stroke=0.13, closed=False),
                Part(_ellipse(-0.8, 0, 0.17, 0.17), "metal", 1.4, stroke=0.11)]
    if name == "Gun":  # slide/barrel, angled grip, trigger guard
        return [Part(_rect(0.05, -0.22, 1.6, 0.28), "metal", 1.6),
                Part(_poly((-0.7, -0.1), (-0.3, -0.1), (-0.42, 0.62), (-0.82, 0.55)), "metal", 1.3),
                Part(_ellipse(-0.08, 0.02, 0.17, 0.15, 0, 180, 12), "metal", 1.0, stroke=0.06, closed=False)]
    if name == "Bullet":  # casing and pointed tip
        return [Part(_rect(-0.25, 0, 1.1, 0.5), "metal", 1.8),
                Part(_poly((0.3, -0.25), (0.75, -0.12), (0.95, 0), (0.75, 0.12), (0.3, 0.25)), "metal", 2.2)]
    if name == "Sprayer":  # can, cap, nozzle
        return [Part(_rect(-0.1, 0, 1.4, 0.55), "mixed", 0.9), Part(_rect(0.72, 0, 0.28, 0.42), "organic", 1.0),
                Part(_rect(0.92, -0.1, 0.14, 0.08), "metal", 1.0)]
    if name == "HandCuffs":  # two rings joined by a short chain
        return [Part(_ellipse(-0.55, 0, 0.38, 0.38), "metal", 1.3, stroke=0.11),
                Part(_ellipse(0.55, 0, 0.38, 0.38), "metal", 1.3, stroke=0.11),
                Part(_poly((-0.18, 0), (-0.06, 0.04), (0.06, -0.04), (0.18, 0)), "metal", 1.5, stroke=0.07,
                     closed=False)]
    if name == "Knife":  # metal blade, organic handle
        return [Part(_poly((-0.05, -0.13), (0.95, -0.13), (1.0, -0.09), (0.25, 0.13), (-0.05, 0.13)), "metal", 1.3),
                Part(_rect(-0.5, 0, 0.9, 0.2), "organic", 1.2)]
    if name == "Lighter":  # plastic body with fuel, metal top
        return [Part(_rect(-0.2, 0, 1.5, 0.55), "organic", 1.3), Part(_rect(0.75, 0, 0.42, 0.6), "metal", 1.4)]
    raise KeyError(name)


# Item length (long axis) as a fraction of the image side, per class: keeps bullets and lighters small.
ITEM_LENGTH = {"Baton": 0.45, "Pliers": 0.34, "Hammer": 0.40, "Powerbank": 0.30, "Scissors": 0.34, "Wrench": 0.40,
               "Gun": 0.36, "Bullet": 0.12, "Sprayer": 0.32, "HandCuffs": 0.36, "Knife": 0.36, "Lighter": 0.16}
ITEM_PARTS = {name: _item_parts(name) for name in PIDRAY_CLASSES}


# ------------------------------------------------------------------------------------------------------------------
# Rendering


class Scene:
    """Accumulates per-material thickness maps; turns them into an attenuation-coloured X-ray image."""

    def __init__(self, size: int):
        self.size = size
        self.thickness = {m: np.zeros((size, size), np.float32) for m in MATERIALS}
        self._stencil = np.zeros((size, size), np.uint8)

    def draw(self, parts: list[Part], center, angle: float, length_px: float) -> np.ndarray:
        """Draw an item or clutter piece; returns its silhouette mask (bool)."""
        scale = length_px / 2.0
        cos, sin = np.cos(angle), np.sin(angle)
        rotation = np.array([[cos, -sin], [sin, cos]], np.float32)
        silhouette = np.zeros((self.size, self.size), bool)
        for part in parts:
            points = part.points @ rotation.T * scale + np.asarray(center, np.float32)
            fixed = np.round(points * 16).astype(np.int32)  # 4 fractional bits for sub-pixel drawing
            self._stencil[:] = 0
            if part.stroke > 0:
                width = max(1, int(round(part.stroke * scale)))
                cv2.polylines(self._stencil, [fixed], part.closed, 255, width, cv2.LINE_AA, shift=4)
            else:
                cv2.fillPoly(self._stencil, [fixed], 255, cv2.LINE_AA, shift=4)
            coverage = self._stencil.astype(np.float32) / 255.0
            self.thickness[part.material] += part.density * coverage
            silhouette |= self._stencil > 127
        return silhouette

    def add_soft_blob(self, rng, center, radius: float, material: str, density: float) -> None:
        """Clothing-like clutter: an irregular, smooth, low-density region."""
        angles = np.linspace(0, 2 * np.pi, 18, endpoint=False)
        radii = radius * rng.uniform(0.6, 1.3, size=angles.size)
        points = np.stack([center[0] + radii * np.cos(angles), center[1] + radii * np.sin(angles)], 1)
        self._stencil[:] = 0
        cv2.fillPoly(self._stencil, [np.round(points * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        blob = cv2.GaussianBlur(self._stencil.astype(np.float32) / 255.0, (0, 0), radius * 0.15 + 0.5)
        self.thickness[material] += density * blob

    def render(self, rng) -> np.ndarray:
        """RGB uint8: transmitted intensity per channel, with scanner blur and noise."""
        absorbance = sum(self.thickness[m][..., None] * MATERIALS[m] for m in MATERIALS)
        image = np.exp(-absorbance)
        image = cv2.GaussianBlur(image, (0, 0), 0.6)
        image = image * rng.uniform(0.93, 1.0) + rng.normal(0.0, 0.012, image.shape).astype(np.float32)
        return np.clip(image * 255.0, 0, 255).astype(np.uint8)


def _add_bag(scene: Scene, rng) -> tuple[int, int, int, int]:
    """A bag outline (mixed rails, a handle) covering most of the image; returns its inner box."""
    s = scene.size
    margin = rng.uniform(0.03, 0.08, size=4) * s
    x0, y0, x1, y1 = margin[0], margin[1], s - margin[2], s - margin[3]
    frame = _poly((x0, y0), (x1, y0), (x1, y1), (x0, y1))
    scene.draw([Part(frame / (s / 2) - 1, "mixed", 0.7, stroke=0.025)], (s / 2, s / 2), 0.0, s)
    handle = _ellipse((x0 + x1) / 2, y0, (x1 - x0) * 0.18, s * 0.05, 180, 360, 12)
    scene.draw([Part(handle / (s / 2) - 1, "metal", 0.6, stroke=0.02, closed=False)], (s / 2, s / 2), 0.0, s)
    scene.thickness["organic"] += 0.15  # the bag's fabric
    return int(x0), int(y0), int(x1), int(y1)


def _add_clutter(scene: Scene, rng, box, count: int) -> None:
    x0, y0, x1, y1 = box
    for _ in range(count):
        center = (rng.uniform(x0, x1), rng.uniform(y0, y1))
        kind = rng.integers(0, 4)
        if kind == 0:  # clothes
            scene.add_soft_blob(rng, center, scene.size * rng.uniform(0.08, 0.2), "organic", rng.uniform(0.3, 0.8))
        elif kind == 1:  # cable
            points = np.cumsum(rng.normal(0, 0.25, size=(6, 2)), axis=0).astype(np.float32)
            scene.draw([Part(points, "mixed", 0.8, stroke=0.04, closed=False)], center, 0.0, scene.size * 0.3)
        elif kind == 2:  # bottle with liquid
            scene.draw([Part(_rect(0, 0, 1.6, 0.55), "organic", rng.uniform(0.8, 1.4))], center,
                       rng.uniform(0, np.pi), scene.size * rng.uniform(0.2, 0.35))
        else:  # circuit board or book
            material = "mixed" if rng.random() < 0.7 else "organic"
            scene.draw([Part(_rect(0, 0, 1.6, rng.uniform(0.6, 1.2)), material, rng.uniform(0.3, 0.7))], center,
                       rng.uniform(0, np.pi), scene.size * rng.uniform(0.15, 0.3))


def _add_occluder(scene: Scene, rng, target_center) -> None:
    """Deliberate hiding: a laptop or a metal plate laid over the item, off-centre but covering it."""
    offset = rng.normal(0, scene.size * 0.05, size=2)
    center = (target_center[0] + offset[0], target_center[1] + offset[1])
    length = scene.size * rng.uniform(0.35, 0.55)
    if rng.random() < 0.6:  # laptop: dense mixed slab with a metal battery strip
        scene.draw([Part(_rect(0, 0, 1.8, 1.2), "mixed", rng.uniform(0.8, 1.3)),
                    Part(_rect(0, 0.4, 1.6, 0.3), "metal", 0.5)], center, rng.uniform(-0.3, 0.3), length)
    else:
        scene.draw([Part(_rect(0, 0, 1.8, 1.4), "metal", rng.uniform(0.35, 0.6))], center, rng.uniform(0, np.pi),
                   length)
    scene.add_soft_blob(rng, center, length * 0.5, "organic", rng.uniform(0.8, 1.4))


# ------------------------------------------------------------------------------------------------------------------
# Images and annotations


def _mask_to_rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE: run lengths over the column-major flattening, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]]))
    if flat[0]:
        runs = np.concatenate([[0], runs])
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(r) for r in runs]}


def _place_items(rng, size: int, box, classes: list[str]):
    """Rotation, centre and length for each item, keeping items inside the bag and apart from each other."""
    placed = []
    x0, y0, x1, y1 = box
    for name in classes:
        length = ITEM_LENGTH[name] * size * rng.uniform(0.85, 1.15)
        for _attempt in range(20):
            angle = rng.uniform(0, 2 * np.pi)
            half = length / 2 + 2
            center = np.array([rng.uniform(x0 + half, x1 - half), rng.uniform(y0 + half, y1 - half)])
            if all(np.linalg.norm(center - c) > 0.5 * (length + other) for _, c, _, other in placed):
                break
        placed.append((name, center, angle, length))
    return placed


def make_image(rng, size: int, mode: str):
    """One X-ray scan: mode 'easy' (one item), 'hard' (several), 'hidden' (items under dense clutter)."""
    scene = Scene(size)
    box = _add_bag(scene, rng)
    num_items = {"easy": 1, "hard": int(rng.integers(2, 5)), "hidden": int(rng.integers(1, 3))}[mode]
    classes = [PIDRAY_CLASSES[k] for k in rng.integers(0, len(PIDRAY_CLASSES), size=num_items)]
    _add_clutter(scene, rng, box, int(rng.integers(2, 5)))  # clutter under the items
    items = []
    for name, center, angle, length in _place_items(rng, size, box, classes):
        items.append((name, scene.draw(ITEM_PARTS[name], center, angle, length)))
        if mode == "hidden":
            _add_occluder(scene, rng, center)
    _add_clutter(scene, rng, box, int(rng.integers(1, 3) if mode != "hidden" else rng.integers(3, 6)))
    return scene.render(rng), items


def _annotations_for(items, image_id: int, next_ann_id: int):
    annotations = []
    for name, mask in items:
        area = int(mask.sum())
        if area < 4:  # an item drawn entirely off the image: nothing to annotate
            continue
        ys, xs = np.nonzero(mask)
        x, y = int(xs.min()), int(ys.min())
        annotations.append({
            "id": next_ann_id + len(annotations), "image_id": image_id,
            "category_id": PIDRAY_CLASSES.index(name) + 1,
            "bbox": [x, y, int(xs.max()) - x + 1, int(ys.max()) - y + 1], "area": area,
            "segmentation": _mask_to_rle(mask), "iscrowd": 0,
        })
    return annotations


def make_split(out: Path, split: str, count: int, size: int, seed: int) -> Path:
    stem, folder = SPLITS[split]
    image_dir = out / folder
    image_dir.mkdir(parents=True, exist_ok=True)
    split_index = list(SPLITS).index(split)
    images, annotations = [], []
    for index in range(count):
        rng = np.random.default_rng([seed, split_index, index])
        mode = split if split != "train" else str(rng.choice(["easy", "hard", "hidden"], p=[0.4, 0.35, 0.25]))
        image, items = make_image(rng, size, mode)
        file_name = f"{folder}_{index:05d}.png"
        cv2.imwrite(str(image_dir / file_name), image[..., ::-1])  # OpenCV writes BGR
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        annotations += _annotations_for(items, image_id, len(annotations) + 1)
    coco = {
        "info": {"description": f"synthetic PIDray-style X-ray set, split {split}, seed {seed} (tools/make_pidray.py)"},
        "images": images, "annotations": annotations,
        "categories": [{"id": k + 1, "name": name, "supercategory": "prohibited"} for k, name in
                       enumerate(PIDRAY_CLASSES)],
    }
    ann_dir = out / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    ann_file = ann_dir / f"{stem}.json"
    ann_file.write_text(json.dumps(coco))
    return ann_file


def make_pidray(out_dir, num_train: int = 400, num_test: int = 80, image_size: int = 128, seed: int = 0,
                splits=tuple(SPLITS)) -> dict[str, Path]:
    """Write the set under ``out_dir``; ``num_test`` images per test split. Returns {split: annotation file}."""
    out = Path(out_dir)
    counts = {"train": num_train, "easy": num_test, "hard": num_test, "hidden": num_test}
    return {split: make_split(out, split, counts[split], image_size, seed) for split in splits}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (annotations/ and one image folder per split)")
    parser.add_argument("--train", type=int, default=400, help="training images")
    parser.add_argument("--test", type=int, default=80, help="images per test split (easy, hard, hidden)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    files = make_pidray(args.out, args.train, args.test, args.size, args.seed)
    for split, path in files.items():
        data = json.loads(path.read_text())
        print(f"{split:>6}: {len(data['images'])} images, {len(data['annotations'])} items -> {path}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
