"""Write the UCI handwritten digits bundled with scikit-learn as an ImageFolder (train/ and val/ class sub-folders).

The data are real: 1797 scans of handwritten digits (43 writers, 10 classes, 8x8 pixels of 0-16 ink), the
``sklearn/datasets/data/digits.csv.gz`` that ships inside scikit-learn (read with ``sklearn.datasets.load_digits``; no
download). Each scan is written as an 8-bit grey PNG, dark ink on white (``255 - 255 * ink / 16``), enlarged by
``--scale`` with nearest-neighbour pixels (1 keeps the 8x8 scan). The split is stratified and seeded: in each class a
permutation drawn from ``--seed`` puts ``--val-fraction`` of the scans in val/.

    python tools/make_digits.py data/digits                # data/digits/train/0/0000.png ... data/digits/val/9/1796.png
    python tools/make_digits.py data/digits --per-class 50  # a smaller set: the first 50 of each class's permutation

File names are the scan's row in digits.csv.gz, so a file traces back to its scan.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 ink 0-16, N x 8 x 8; labels int, N) from scikit-learn's bundled copy."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise SystemExit("make_digits.py needs scikit-learn (pip install 'attnzoo[dev]' or pip install scikit-learn)") from None
    data = sklearn_digits()
    return data.images.astype(np.uint8), data.target.astype(np.int64)


def split_indices(labels: np.ndarray, val_fraction: float, seed: int, per_class: int | None = None
                  ) -> dict[str, list[int]]:
    """Stratified, seeded split: {'train': rows, 'val': rows}, each class's val share rounded, at least one each."""
    rng = np.random.default_rng(seed)
    splits: dict[str, list[int]] = {"train": [], "val": []}
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        if per_class is not None:
            rows = rows[:per_class]
        n_val = min(len(rows) - 1, max(1, round(val_fraction * len(rows))))
        splits["val"].extend(sorted(rows[:n_val].tolist()))
        splits["train"].extend(sorted(rows[n_val:].tolist()))
    return splits


def write_digits(out: str | Path, *, val_fraction: float = 0.2, seed: int = 0, scale: int = 1,
                 per_class: int | None = None) -> dict[str, int]:
    """Write the ImageFolder under ``out``; returns {'train': count, 'val': count}."""
    images, labels = load_digits()
    out = Path(out)
    counts = {}
    for split, rows in split_indices(labels, val_fraction, seed, per_class).items():
        for row in rows:
            folder = out / split / str(int(labels[row]))
            folder.mkdir(parents=True, exist_ok=True)
            grey = (255 - np.round(images[row].astype(np.float64) * 255 / 16)).astype(np.uint8)
            if scale > 1:
                grey = np.kron(grey, np.ones((scale, scale), dtype=np.uint8))
            Image.fromarray(grey, mode="L").save(folder / f"{row:04d}.png")
        counts[split] = len(rows)
    (out / "digits.json").write_text(json.dumps({
        "source": "sklearn/datasets/data/digits.csv.gz (UCI Optical Recognition of Handwritten Digits, test part)",
        "val_fraction": val_fraction, "seed": seed, "scale": scale, "per_class": per_class, **counts}, indent=1) + "\n")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder (train/ and val/ are made in it)")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=1, help="enlarge each 8x8 scan by this factor (nearest)")
    parser.add_argument("--per-class", type=int, default=None, help="keep at most this many scans of each class")
    args = parser.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        parser.error(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    if args.scale < 1 or (args.per_class is not None and args.per_class < 2):
        parser.error("--scale must be >= 1 and --per-class >= 2")
    counts = write_digits(args.out, val_fraction=args.val_fraction, seed=args.seed, scale=args.scale,
                          per_class=args.per_class)
    print(f"{args.out}: {counts['train']} train and {counts['val']} val images of 10 digit classes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
