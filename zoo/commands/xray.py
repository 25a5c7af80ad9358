"""``zoo xray detect CONFIG CHECKPOINT IMAGE_OR_DIR... --out DIR``: what is in these bags?

Runs a trained detector through mmdet's own ``DetInferencer`` (config -> model, checkpoint loading, test pipeline,
batching) and writes, for every image, ``<stem>.json`` (one record per instance at or above ``--score-thr``: class,
score, box ``[x1, y1, x2, y2]`` in image pixels, mask as compressed COCO RLE when the model predicts masks) and
``<stem>.png`` (boxes, tinted masks, and "class score" labels placed so that no two overlap). One summary line per
image goes to stdout (``bag_0012.png: Gun 0.91, Knife 0.44``), and the last line is one JSON object for the run.

CONFIG is a config file, a shipped config's path below the configs folder (``xray/<file>.py``; ``zoo configs``
lists them), or a model card's name (``sdanet_r101_pidray``). A directory input contributes its image files (not its
subdirectories); other files in it are skipped with a warning naming them. A checkpoint whose weights do not fit the
config's model (missing, unexpected or misshapen keys) is an error naming both files, never a silently half-loaded
detector. OpenMMLab is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .errors import UserError
from .image_inputs import IMAGE_SUFFIXES, collect_images

DEFAULT_SCORE_THR = 0.3
DISPLAY_SIDE = 512  # pictures of small scans are enlarged (nearest neighbour) to about this size so labels fit
_LISTED = 4  # keys named in a mismatch message


# -- inputs --------------------------------------------------------------------------------------------------------


def resolve_config(name: str) -> Path:
    """A config file, a shipped config (``xray/<file>.py``) or a detector card's name, as an existing file."""
    from ..cards import get_card, has_card
    from ..shipped import config_path

    if has_card(name):
        card = get_card(name)
        if card.detector is None:
            raise UserError(f"model card '{name}' is a {card.task} card, not a detector; pass a detector config or "
                            "card (`zoo list --task xray`)")
        return card.detector.config_file
    return config_path(name)


def output_stems(images: Sequence[Path]) -> list[str]:
    """One output name per image: its stem, with ``_2``, ``_3`` ... added when two inputs share a stem."""
    seen: dict[str, int] = {}
    stems = []
    for image in images:
        count = seen.get(image.stem, 0) + 1
        seen[image.stem] = count
        stems.append(image.stem if count == 1 else f"{image.stem}_{count}")
    return stems


# -- checkpoint against config -------------------------------------------------------------------------------------


def mismatch_message(config: Path, checkpoint: Path, state: dict, expected: dict) -> str | None:
    """None when ``state`` (the checkpoint's weights) fits ``expected`` (the model's); else the error text."""
    from ..checkpoint import compare_state_dicts

    missing, unexpected, misshapen = compare_state_dicts(state, expected)
    if not (missing or unexpected or misshapen):
        return None
    problems = []
    if missing:
        problems.append(f"{len(missing)} of the model's {len(expected)} weights are not in the checkpoint "
                        f"(e.g. {', '.join(missing[:_LISTED])})")
    if unexpected:
        problems.append(f"{len(unexpected)} checkpoint keys are not in the model (e.g. {', '.join(unexpected[:_LISTED])})")
    if misshapen:
        shown = ", ".join(f"{k} {tuple(a)} in the checkpoint vs {tuple(b)} in the model" for k, a, b in misshapen[:2])
        problems.append(f"{len(misshapen)} weights have other shapes ({shown})")
    return (f"checkpoint {checkpoint} does not match config {config}: {'; '.join(problems)}. "
            "Pass the config the checkpoint was trained with (or a checkpoint trained with this config).")


def _checkpoint_state(checkpoint: dict) -> dict:
    import re

    state = checkpoint.get("state_dict", checkpoint)
    # mmengine strips a DataParallel/DDP 'module.' prefix when it loads; compare the same names it will load
    return {re.sub(r"^module\.", "", k): v for k, v in state.items() if hasattr(v, "shape")}


def build_inferencer(config: Path, checkpoint: Path, device: str):
    """mmdet's DetInferencer for ``config`` + ``checkpoint``; refuses a checkpoint that does not fit the model."""
    from mmdet.apis import DetInferencer
    from mmengine.config import Config

    from .. import openmmlab  # noqa: F401  (allow-lists what Runner checkpoints hold for torch.load(weights_only=True))
    from ..checkpoint import read_checkpoint

    class CheckedDetInferencer(DetInferencer):
        """DetInferencer whose weight loading first checks that every key and shape fits (mmengine's own load is
        lenient: it only logs missing and misshapen keys, which would leave a half-random detector)."""

        def _load_weights_to_model(self, model, checkpoint, cfg):
            import warnings

            if checkpoint is None:
                return super()._load_weights_to_model(model, checkpoint, cfg)
            problem = mismatch_message(config, checkpoint_path, _checkpoint_state(checkpoint), model.state_dict())
            if problem:
                raise UserError(problem)
            has_meta = "dataset_meta" in checkpoint.get("meta", {})
            with warnings.catch_warnings():
                if not has_meta:  # mmdet would name the 80 COCO classes; the config's own test set is right
                    warnings.filterwarnings("ignore", message="dataset_meta or class names are not saved")
                super()._load_weights_to_model(model, checkpoint, cfg)
            if not has_meta:
                meta = _config_dataset_meta(cfg)
                meta.setdefault("palette", model.dataset_meta.get("palette"))
                model.dataset_meta = meta

    checkpoint_path = checkpoint
    try:
        cfg = Config.fromfile(str(config))
    except (SyntaxError, ImportError, KeyError, ValueError) as err:
        raise UserError(f"{config}: cannot be read as an OpenMMLab config ({type(err).__name__}: {err})") from err
    if cfg.get("default_scope") != "mmdet" or "test_dataloader" not in cfg:
        raise UserError(f"{config} is not an mmdet detector config with a test pipeline (default_scope "
                        f"{cfg.get('default_scope')!r}); `zoo configs 'xray/*'` lists the X-ray detectors")
    if cfg.test_dataloader.dataset.get("type") == "ConcatDataset":
        # PIDray tests on three splits at once; the inferencer needs one dataset's pipeline and class names, and
        # all three share them (building the ConcatDataset would also read every split's annotation file)
        cfg.test_dataloader.dataset = cfg.test_dataloader.dataset.datasets[0]
    # A file torch cannot read fails here with a message naming it (mmengine's own reader would raise from deep
    # inside the unpickler); the inferencer then reads it again, which costs a second for a 300 MB detector.
    read_checkpoint(checkpoint)
    # mmengine prints its loading messages on stdout; stdout is for the results
    with contextlib.redirect_stdout(sys.stderr):
        return CheckedDetInferencer(model=cfg, weights=str(checkpoint), device=device, show_progress=False)


def _config_dataset_meta(cfg) -> dict:
    import copy

    from mmdet.registry import DATASETS

    dataset_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    dataset_cfg["lazy_init"] = True
    meta = DATASETS.build(dataset_cfg).metainfo
    return {k: v for k, v in meta.items() if k in ("classes", "palette")}


# -- predictions ---------------------------------------------------------------------------------------------------


def instance_records(pred_instances, classes: Sequence[str], score_thr: float) -> list[dict]:
    """The instances at or above ``score_thr``, best first, as JSON-ready records (mask as compressed COCO RLE)."""
    from pycocotools import mask as mask_utils

    scores = pred_instances.scores.detach().cpu().numpy()
    order = [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] >= score_thr]
    labels = pred_instances.labels.detach().cpu().numpy()
    boxes = pred_instances.bboxes.detach().cpu().numpy()
    masks = pred_instances.get("masks")
    records = []
    for i in order:
        record = {"class": str(classes[int(labels[i])]), "label": int(labels[i]), "score": round(float(scores[i]), 4),
                  "box": [round(float(v), 2) for v in boxes[i]]}
        if masks is not None:
            mask = masks[i].detach().cpu().numpy().astype(np.uint8)
            rle = mask_utils.encode(np.asfortranarray(mask))
            record["mask"] = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
        records.append(record)
    return records


def summary_line(name: str, records: Sequence[dict], score_thr: float) -> str:
    if not records:
        return f"{name}: nothing at or above {score_thr:g}"
    return f"{name}: " + ", ".join(f"{r['class']} {r['score']:.2f}" for r in records)


# -- pictures ------------------------------------------------------------------------------------------------------


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


def draw_detections(image_path: Path, records: Sequence[dict], palette, out_path: Path) -> Path:
    """The image (enlarged when small) with tinted masks, boxes, and non-overlapping "class score" labels."""
    import cv2
    from pycocotools import mask as mask_utils

    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
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
    cv2.imwrite(str(out_path), canvas)
    return out_path


# -- the command ---------------------------------------------------------------------------------------------------


def detect(config: str, checkpoint: str, inputs: Sequence[str], out: str, score_thr: float = DEFAULT_SCORE_THR,
           device: str | None = None, batch_size: int = 1, log: Callable[[str], None] = print,
           warn: Callable[[str], None] | None = None) -> dict:
    """Run the detector on every image of ``inputs``; returns the run's summary (also the command's last line)."""
    warn = warn or (lambda message: print(message, file=sys.stderr))
    if not 0.0 <= score_thr <= 1.0:
        raise UserError(f"--score-thr must be between 0 and 1, got {score_thr}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    config_file = resolve_config(config)
    checkpoint_file = Path(checkpoint)
    if not checkpoint_file.is_file():
        raise UserError(f"{checkpoint}: no such checkpoint file (a .pth written by tools/train.py, or an official "
                        "checkpoint converted with the card's key mapping)")
    images = collect_images(inputs, warn)
    if not images:
        raise UserError(f"no image files in {', '.join(map(str, inputs))} (looked for {', '.join(IMAGE_SUFFIXES)})")
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"

    start = time.perf_counter()
    import warnings

    # mmengine 0.10.7 imports pkg_resources, whose deprecation warning says nothing to a user of this command
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    inferencer = build_inferencer(config_file, checkpoint_file, device)
    classes = inferencer.model.dataset_meta["classes"]
    palette = inferencer.model.dataset_meta.get("palette")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = output_stems(images)
    total = 0
    for first in range(0, len(images), batch_size):
        chunk = images[first:first + batch_size]
        predictions = inferencer([str(p) for p in chunk], batch_size=batch_size, return_datasamples=True,
                                 no_save_vis=True, pred_score_thr=score_thr)["predictions"]
        for image, stem, sample in zip(chunk, stems[first:first + batch_size], predictions):
            records = instance_records(sample.pred_instances, classes, score_thr)
            height, width = sample.ori_shape
            result = {"image": str(image), "width": int(width), "height": int(height), "config": str(config_file),
                      "checkpoint": str(checkpoint_file), "score_thr": score_thr, "instances": records}
            (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
            draw_detections(image, records, palette, out_dir / f"{stem}.png")
            total += len(records)
            log(summary_line(image.name, records, score_thr))
    summary = {"images": len(images), "instances": total, "score_thr": score_thr, "out": str(out_dir),
               "config": str(config_file), "checkpoint": str(checkpoint_file),
               "seconds": round(time.perf_counter() - start, 1)}
    return summary


def run(args: argparse.Namespace) -> int:
    summary = detect(args.config, args.checkpoint, args.inputs, args.out, score_thr=args.score_thr,
                     device=args.device, batch_size=args.batch_size)
    print(json.dumps(summary))
    return 0


def register(commands) -> None:
    xray = commands.add_parser("xray", help="X-ray prohibited-item detection on your own images")
    verbs = xray.add_subparsers(dest="xray_command", required=True, metavar="COMMAND")
    detect_parser = verbs.add_parser(
        "detect", help="run a trained detector on images or folders: one JSON + one picture per image",
        description=__doc__.split("\n\n")[1])
    detect_parser.add_argument("config", help="config file, shipped config (xray/<file>.py) or detector card name")
    detect_parser.add_argument("checkpoint", help="trained checkpoint (.pth) for that config")
    detect_parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    detect_parser.add_argument("--out", required=True, help="folder for <image>.json and <image>.png")
    detect_parser.add_argument("--score-thr", type=float, default=DEFAULT_SCORE_THR,
                               help="keep instances scoring at least this (default %(default)s)")
    detect_parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    detect_parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    detect_parser.set_defaults(run=run)
