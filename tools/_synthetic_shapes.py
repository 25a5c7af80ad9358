"""Drawing shared by tools/make_coco_det.py, make_ade_seg.py and make_yolo_set.py: coloured shapes on a textured
background; and their common command line (:func:`shape_set_args`).

Every shape is a polygon (an ellipse is a 32-gon), so the COCO polygon annotation and the drawn mask are the same
thing. Each class has its own shape and colour, with a little jitter, so an easy set is learnable in minutes.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable, Sequence

import numpy as np

try:
    import cv2
except ImportError as err:  # opencv comes with mmcv; the makers need it for drawing and writing images
    raise ImportError("the dataset makers need OpenCV: pip install opencv-python-headless") from err

# (shape, BGR colour) per class slot; more slots than any default needs.
CLASS_STYLES = [
    ("rectangle", (40, 40, 220)),
    ("ellipse", (40, 200, 40)),
    ("triangle", (220, 60, 40)),
    ("diamond", (30, 200, 230)),
    ("hexagon", (200, 40, 200)),
    ("cross", (230, 230, 230)),
    ("ellipse", (20, 120, 250)),
    ("rectangle", (200, 200, 40)),
]


def shape_polygon(kind: str, cx: float, cy: float, w: float, h: float, angle: float) -> np.ndarray:
    """Vertices (N, 2) float of one shape centred at (cx, cy) with box size (w, h) before rotation."""
    if kind == "rectangle":
        points = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]
    elif kind == "ellipse":
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        points = list(zip(0.5 * np.cos(t), 0.5 * np.sin(t)))
    elif kind == "triangle":
        points = [(0.0, -0.5), (0.5, 0.5), (-0.5, 0.5)]
    elif kind == "diamond":
        points = [(0.0, -0.5), (0.5, 0.0), (0.0, 0.5), (-0.5, 0.0)]
    elif kind == "hexagon":
        t = np.linspace(0, 2 * np.pi, 6, endpoint=False)
        points = list(zip(0.5 * np.cos(t), 0.5 * np.sin(t)))
    elif kind == "cross":
        a, b = 0.5, 0.17
        points = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b),
                  (-b, -b)]
    else:
        raise ValueError(f"unknown shape {kind!r}")
    unit = np.asarray(points, dtype=np.float64) * np.array([w, h])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return unit @ rotation.T + np.array([cx, cy])


def background(rng: np.random.Generator, height: int, width: int, noise: float) -> np.ndarray:
    """A smooth two-colour gradient plus Gaussian noise, uint8 BGR."""
    top = rng.uniform(60, 160, size=3)
    bottom = rng.uniform(60, 160, size=3)
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    image = (1 - ramp) * top + ramp * bottom
    image = np.broadcast_to(image, (height, width, 3)) + rng.normal(0.0, noise, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def place_shapes(rng: np.random.Generator, height: int, width: int, num_classes: int, max_objects: int,
                 min_size: float, max_size: float) -> list[tuple[int, np.ndarray]]:
    """Non-overlapping shapes: [(class slot, polygon)], 1..max_objects of them, sizes in pixels."""
    placed: list[tuple[int, np.ndarray]] = []
    boxes: list[tuple[float, float, float, float]] = []
    wanted = int(rng.integers(1, max_objects + 1))
    for _ in range(wanted * 20):
        if len(placed) == wanted:
            break
        slot = int(rng.integers(num_classes))
        w, h = rng.uniform(min_size, max_size, size=2)
        angle = rng.uniform(-0.4, 0.4)
        cx = rng.uniform(w / 2 + 1, width - w / 2 - 1)
        cy = rng.uniform(h / 2 + 1, height - h / 2 - 1)
        polygon = shape_polygon(CLASS_STYLES[slot][0], cx, cy, w, h, angle)
        polygon[:, 0] = polygon[:, 0].clip(0, width - 1)
        polygon[:, 1] = polygon[:, 1].clip(0, height - 1)
        x0, y0 = polygon.min(0)
        x1, y1 = polygon.max(0)
        if any(x0 < bx1 + 2 and bx0 < x1 + 2 and y0 < by1 + 2 and by0 < y1 + 2 for bx0, by0, bx1, by1 in boxes):
            continue
        boxes.append((x0, y0, x1, y1))
        placed.append((slot, polygon))
    return placed


def draw(image: np.ndarray, polygon: np.ndarray, colour, rng: np.random.Generator, value=None) -> None:
    """Fill the polygon in place with the class colour (jittered); ``value`` overrides the colour (label maps)."""
    pts = np.round(polygon).astype(np.int32)[None]
    if value is None:
        jitter = rng.integers(-25, 26, size=3)
        colour = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(colour, jitter))
    else:
        colour = value
    cv2.fillPoly(image, pts, colour)


# Flags of a shapes-set maker that take fractions (the rest are counts); their help where they need one.
_FLOAT_FLAGS = ("min_size", "max_size", "noise")
_FLAG_HELP = {"noise": "background noise std (0-255 scale)"}


def shape_set_args(make: Callable, description: str, out_help: str, argv: Sequence[str] | None = None,
                   num_classes_help: str | None = None) -> argparse.Namespace:
    """The command line of a shapes-set maker: ``out``, then one ``--flag`` per keyword argument of its
    ``make(out, ...)``, defaulting to ``make``'s own default (so the two cannot drift apart)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("out", help=out_help)
    helps = {**_FLAG_HELP, "num_classes": num_classes_help}
    for name, parameter in inspect.signature(make).parameters.items():
        if parameter.default is inspect.Parameter.empty:
            continue
        parser.add_argument(f"--{name.replace('_', '-')}", type=float if name in _FLOAT_FLAGS else int,
                            default=parameter.default, help=helps.get(name))
    return parser.parse_args(argv)
