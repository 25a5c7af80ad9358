"""Pictures of detections: the image (enlarged when small) with tinted masks, boxes and "class score" labels placed so
that no two overlap (a label that finds no room goes to a white strip below the picture, with a leader line)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["DISPLAY_SIDE", "draw_detections", "place_labels"]

DISPLAY_SIDE = 512  # pictures of small scans are enlarged (nearest neighbour) to about this size so labels fit


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(boxes: Sequence[Sequence[float]], sizes: Sequence[tuple[int, int]], width: int,
                 height: int) -> list[tuple[int, int, int, int]]:
    """Label rectangles (x1, y1, x2, y2), one per box, inside a ``width`` x ``height`` picture, none overlapping.

    Boxes are taken in the given order (best first), each label going to the first free spot of: above the box's
    top-left corner, inside it, below the box, above its right end; then ever farther above / below the box. A label
    that finds no free spot inside the picture goes below it (``y >= height``): the caller adds a strip for those.
    """
    placed: list[tuple[int, int, int, int]] = []
    spill_y = height  # where the next label that found no room goes
    for (x1, y1, x2, y2), (w, h) in zip(boxes, sizes):
        x1, y1, x2, y2 = (int(round(v)) for v in (x1, y1, x2, y2))
        xs = [x1, x2 - w]
        ys = [y1 - h, y1, y2, y2 - h]
        step = h + 1
        ys += [y for k in range(1, max(1, height // step) + 1) for y in (y1 - h - k * step, y2 + k * step)]
        spot = None
        for y in ys:
            for x in xs:
                x = min(max(0, x), max(0, width - w))
                rect = (x, y, x + w, y + h)
                if y >= 0 and y + h <= height and not any(_overlaps(rect, other) for other in placed):
                    spot = rect
                    break
            if spot:
                break
        if spot is None:
            x = min(max(0, x1), max(0, width - w))
            spot = (x, spill_y, x + w, spill_y + h)
            spill_y += step
        placed.append(spot)
    return placed


def _touches(label, box) -> bool:
    """Whether a label rectangle sits on its box's top or bottom edge (no leader line needed)."""
    x1, y1, x2, y2 = label
    bx1, by1, bx2, by2 = box
    return x1 < bx2 and bx1 < x2 and (by1 in (y1, y2) or by2 in (y1, y2))


def _colour(palette, label: int) -> tuple[int, int, int]:
    """BGR colour of a class: the dataset's palette (RGB, mmdet's convention) or a fixed fallback."""
    if isinstance(palette, (list, tuple)) and label < len(palette):
        r, g, b = palette[label]
    else:
        r, g, b = (int(c) for c in np.random.default_rng(label).integers(64, 256, 3))
    return int(b), int(g), int(r)


def draw_detections(image: np.ndarray, records: Sequence[dict], palette, out_path: Path) -> Path:
    """The image (BGR uint8 pixels, as attnzoo.tasks.images decodes them for mmdet; enlarged when small) with tinted
    masks, boxes, and non-overlapping "class score" labels.

    ``records`` are :func:`attnzoo.tasks.xray.detect.instance_records`' (class, label, score, box, optional RLE mask);
    ``palette`` the dataset's RGB colours per class (or None). Writes ``out_path`` as PNG (encoded in memory and
    written by Python, so any file name works) and returns it.
    """
    import cv2
    from pycocotools import mask as mask_utils

    height, width = image.shape[:2]
    scale = max(1, int(round(DISPLAY_SIDE / max(height, width))))
    canvas = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST).astype(np.float32)
    colours = [_colour(palette, r["label"]) for r in records]
    outlines = []
    for record, colour in zip(records, colours):
        if "mask" in record:
            mask = mask_utils.decode({"size": record["mask"]["size"], "counts": record["mask"]["counts"].encode()})
            big = cv2.resize(mask, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            canvas[big.astype(bool)] = 0.5 * canvas[big.astype(bool)] + 0.5 * np.array(colour, np.float32)
            outlines.append(cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0])
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)
    # X-ray scans are blue where metal is, and many palette colours are dark blues: a white halo under every mask
    # outline and box keeps them visible on any item
    for contours in outlines:
        cv2.drawContours(canvas, contours, -1, (255, 255, 255), 1, cv2.LINE_AA)

    font, font_scale, thickness, pad = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1, 3
    texts = [f"{r['class']} {r['score']:.2f}" for r in records]
    metrics = [cv2.getTextSize(text, font, font_scale, thickness) for text in texts]  # ((w, h), baseline)
    sizes = [(w + 2 * pad, h + baseline + 2 * pad) for (w, h), baseline in metrics]
    boxes = [[int(round(v * scale)) for v in r["box"]] for r in records]
    for (x1, y1, x2, y2), colour in zip(boxes, colours):
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (255, 255, 255), 4)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 2)
    labels = place_labels(boxes, sizes, canvas.shape[1], canvas.shape[0])
    spill = max((y2 for _, _, _, y2 in labels), default=0) - canvas.shape[0]
    if spill > 0:  # labels that found no room inside the picture: a white strip below it
        canvas = np.pad(canvas, ((0, spill + 2), (0, 0), (0, 0)), constant_values=255)
    for text, ((_, _), baseline), label, box, colour in zip(texts, metrics, labels, boxes, colours):
        x1, y1, x2, y2 = label
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), colour, -1)
        ink = (0, 0, 0) if 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2] > 140 else (255, 255, 255)
        cv2.putText(canvas, text, (x1 + pad, y2 - pad - baseline), font, font_scale, ink, thickness, cv2.LINE_AA)
        if not _touches(label, box):  # a label moved away from its box: a leader line to the box's corner
            cv2.line(canvas, (x1, y1 if y1 >= box[3] else y2 - 1), (box[0], box[1] if y1 < box[1] else box[3]),
                     colour, 1, cv2.LINE_AA)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", canvas)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode the picture for {out_path}")
    out_path.write_bytes(encoded.tobytes())
    return out_path
