"""Run a trained X-ray detector on images: mmdet's own ``DetInferencer`` (config -> model, checkpoint loading, test
pipeline, batching), one JSON record and one picture per image, one summary line per image.

Images are read by the zoo's one reader (``attnzoo.tasks.images``: header and pixel limit first, Pillow, any mode to RGB)
and handed to the inferencer as decoded BGR arrays (mmcv's channel order), so neither mmcv nor OpenCV ever opens a
user's file by name: a name that is not UTF-8 is read like any other, and an image that does not decode (truncated,
corrupt) or is over the pixel limit is skipped with a warning naming it while the others are processed.

A checkpoint whose weights do not fit the config's model (missing, unexpected or misshapen keys) is refused with the
zoo's one misfit message (``attnzoo.weights.describe_misfit``) naming both files, never a silently half-loaded detector:
mmengine's own load only logs what did not fit. The checkpoint file is read by mmengine through the zoo's reader
(``import attnzoo.openmmlab``), so a truncated, empty or unsafe file is a ``CheckpointError`` naming it. OpenMMLab is
imported only when a detector is built.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ...errors import UserError
from ...outputs import output_folder, per_input_names, writing
from ..images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    UnreadableImage,
    batches,
    collect_images,
    display_path,
    read_image,
)
from .drawing import draw_detections

__all__ = ["DEFAULT_SCORE_THR", "build_inferencer", "detect", "instance_records", "output_stems", "resolve_config",
           "summary_line"]

DEFAULT_SCORE_THR = 0.3
CONFIG_FIX = "Pass the config the checkpoint was trained with (or a checkpoint trained with this config)."


# -- inputs --------------------------------------------------------------------------------------------------------


def resolve_config(name: str) -> Path:
    """A config file, a shipped config (``xray/<file>.py``) or a detector card's name, as an existing file."""
    from ...cards import get_card, has_card
    from ...shipped import config_path

    if has_card(name):
        card = get_card(name)
        if card.detector is None:
            raise UserError(f"model card '{name}' is a {card.task} card, not a detector; pass a detector config or "
                            "card (`zoo list --task xray`)")
        return card.detector.config_file
    return config_path(name)


def read_bgr_images(paths: Sequence[Path], warn: Callable[[str], None], max_pixels: int | None
                    ) -> Iterator[tuple[int, np.ndarray]]:
    """(index into ``paths``, BGR uint8 array (H, W, 3), as mmcv loads images) for every image the zoo's reader
    decodes, one at a time; the others are skipped with a warning naming them."""
    for index, path in enumerate(paths):
        try:
            rgb = np.asarray(read_image(path, max_pixels))
        except UnreadableImage as err:
            warn(f"warning: skipping {err}")
            continue
        yield index, np.ascontiguousarray(rgb[..., ::-1])


OUTPUT_SUFFIXES = (".json", ".png")


def output_stems(images: Sequence[Path], out: str | Path, keep: Sequence[Path] = ()) -> list[str]:
    """One output name per image (``attnzoo.outputs.per_input_names``' rule): its stem; the stem and suffix
    (``bag_png``, ``bag_jpg``) when two inputs share a stem or ``<out>/<stem>.json|.png`` is an input (``--out`` is
    the input folder), then ``_2``, ``_3`` ...: no output overwrites an input or another image's output."""
    return per_input_names(images, out, OUTPUT_SUFFIXES, keep=keep)


# -- the detector --------------------------------------------------------------------------------------------------


def _fitting_weights(checkpoint: dict, model, config: Path, checkpoint_path: Path) -> dict:
    """The checkpoint's weights (the zoo's one unwrapping rule) when every key and shape fits ``model``; else a
    CheckpointError with the one misfit message, naming both files."""
    from collections import OrderedDict

    from ...weights import CheckpointError, compare_state_dicts, describe_misfit, unwrap_state_dict

    state = unwrap_state_dict(checkpoint, origin=f"checkpoint {checkpoint_path}")
    misfit = compare_state_dicts(state, model.state_dict())
    if not misfit.fits:
        raise CheckpointError(describe_misfit(f"checkpoint {checkpoint_path}", f"the model of config {config}",
                                              misfit, fix=CONFIG_FIX))
    weights = OrderedDict(state)
    # torch's per-module version numbers, which some modules' loaders read
    inner = next((checkpoint[k] for k in ("state_dict", "model") if isinstance(checkpoint.get(k), dict)), checkpoint)
    weights._metadata = getattr(inner, "_metadata", OrderedDict())
    return weights


def _read_config(config: Path):
    from ...openmmlab.configs import read_config

    try:
        cfg = read_config(str(config))
    except (SyntaxError, ImportError, KeyError, ValueError) as err:
        raise UserError(f"{config}: cannot be read as an OpenMMLab config ({type(err).__name__}: {err})") from err
    if cfg.get("default_scope") != "mmdet" or "test_dataloader" not in cfg:
        raise UserError(f"{config} is not an mmdet detector config with a test pipeline (default_scope "
                        f"{cfg.get('default_scope')!r}); `zoo configs 'xray/*'` lists the X-ray detectors")
    if cfg.test_dataloader.dataset.get("type") == "ConcatDataset":
        # PIDray tests on three splits at once; the inferencer needs one dataset's pipeline and class names, and
        # all three share them (building the ConcatDataset would also read every split's annotation file)
        cfg.test_dataloader.dataset = cfg.test_dataloader.dataset.datasets[0]
    return cfg


def build_inferencer(config: Path, checkpoint: Path, device: str):
    """mmdet's DetInferencer for ``config`` + ``checkpoint``; refuses a checkpoint that does not fit the model.

    The file is read by mmengine through the zoo's reader (``import attnzoo.openmmlab``): an unreadable or unsafe file
    raises ``CheckpointError`` naming it.
    """
    import warnings

    from mmdet.apis import DetInferencer

    from ... import openmmlab  # noqa: F401  (mmengine reads checkpoint files through attnzoo.weights.read_checkpoint)

    class CheckedDetInferencer(DetInferencer):
        """DetInferencer whose weight loading first checks that every key and shape fits (mmengine's own load is
        lenient: it only logs missing and misshapen keys, which would leave a half-random detector)."""

        def _load_weights_to_model(self, model, checkpoint, cfg):
            if checkpoint is None:
                return super()._load_weights_to_model(model, checkpoint, cfg)
            weights = _fitting_weights(checkpoint, model, config, checkpoint_path)
            meta = checkpoint.get("meta") or {}
            has_meta = "dataset_meta" in meta
            with warnings.catch_warnings():
                if not has_meta:  # mmdet would name the 80 COCO classes; the config's own test set is right
                    warnings.filterwarnings("ignore", message="dataset_meta or class names are not saved")
                super()._load_weights_to_model(model, {"state_dict": weights, "meta": meta}, cfg)
            if not has_meta:
                dataset_meta = _config_dataset_meta(cfg)
                dataset_meta.setdefault("palette", model.dataset_meta.get("palette"))
                model.dataset_meta = dataset_meta

    checkpoint_path = checkpoint
    cfg = _read_config(config)
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
    """``bag_0012.png: Gun 0.91, Knife 0.44`` (or ``...: nothing at or above 0.3``)."""
    if not records:
        return f"{name}: nothing at or above {score_thr:g}"
    return f"{name}: " + ", ".join(f"{r['class']} {r['score']:.2f}" for r in records)


# -- the task ------------------------------------------------------------------------------------------------------


def detect(config: str | Path, checkpoint: str | Path, inputs: Sequence[str | Path], out: str | Path,
           score_thr: float = DEFAULT_SCORE_THR, device: str | None = None, batch_size: int = 1,
           log: Callable[[str], None] = print, warn: Callable[[str], None] | None = None,
           max_pixels: int | None = DEFAULT_MAX_PIXELS) -> dict:
    """Run the detector on every image of ``inputs``: ``<out>/<stem>.json`` and ``<stem>.png`` per image, one
    :func:`summary_line` per image to ``log``; returns the run's summary (``zoo xray detect``'s last line).

    Images are read by the zoo's reader (``attnzoo.tasks.images``); one it does not read (not an image, truncated,
    corrupt, more than ``max_pixels`` pixels) is skipped with a warning (``warn``) naming it, and counted in the
    summary's ``skipped``."""
    warn = warn or (lambda message: print(message, file=sys.stderr))
    skipped = 0

    def warn_skip(message: str) -> None:
        nonlocal skipped
        skipped += 1
        warn(message)

    if not 0.0 <= score_thr <= 1.0:
        raise UserError(f"--score-thr must be between 0 and 1, got {score_thr}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    config_file = resolve_config(str(config))
    checkpoint_file = Path(checkpoint)
    if not checkpoint_file.is_file():
        raise UserError(f"{checkpoint}: no such checkpoint file (a .pth written by tools/train.py, or an official "
                        "checkpoint converted with the card's key mapping)")
    out_dir = output_folder(out, "--out", create=False)
    images = collect_images(inputs, warn_skip, max_pixels)
    if not images:
        raise UserError(f"no image files in {', '.join(map(display_path, inputs))} (looked for "
                        f"{', '.join(IMAGE_SUFFIXES)})")
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"

    start = time.perf_counter()
    import warnings

    # mmengine 0.10.7 imports pkg_resources, whose deprecation warning says nothing to a user of this command (for
    # this import only: the process's warning filters are left as they were)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        inferencer = build_inferencer(config_file, checkpoint_file, device)
    classes = inferencer.model.dataset_meta["classes"]
    palette = inferencer.model.dataset_meta.get("palette")
    output_folder(out_dir, "--out")
    stems = output_stems(images, out_dir, keep=(config_file, checkpoint_file))
    total = done = 0
    for batch in batches(read_bgr_images(images, warn_skip, max_pixels), batch_size):
        indices, arrays = zip(*batch)
        predictions = inferencer(list(arrays), batch_size=batch_size, return_datasamples=True,
                                 no_save_vis=True, pred_score_thr=score_thr)["predictions"]
        for index, bgr, sample in zip(indices, arrays, predictions, strict=True):
            image, stem = images[index], stems[index]
            records = instance_records(sample.pred_instances, classes, score_thr)
            height, width = sample.ori_shape
            result = {"image": str(image), "width": int(width), "height": int(height),
                      "config": str(config_file), "checkpoint": str(checkpoint_file), "score_thr": score_thr,
                      "instances": records}
            with writing(out_dir, "--out"):
                (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
                draw_detections(bgr, records, palette, out_dir / f"{stem}.png")
            total += len(records)
            done += 1
            log(summary_line(display_path(image.name), records, score_thr))
    if done == 0:
        raise UserError(f"none of the {len(images)} image file(s) in {', '.join(map(display_path, inputs))} could be "
                        "read (see the warnings above)")
    return {"images": done, "skipped": skipped, "instances": total, "score_thr": score_thr, "out": str(out_dir),
            "config": str(config_file), "checkpoint": str(checkpoint_file),
            "seconds": round(time.perf_counter() - start, 1)}
