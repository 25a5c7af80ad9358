"""PIDray evaluation: COCO box and mask AP per test split (easy / hard / hidden) and overall, in one table.

As in the paper's tables (SDANet, ICCV 2021, Table 4; the official configs evaluate ``test.json``, the union of the
three splits), "overall" is COCO AP over all test images together, not the mean of the three split APs.

Every sample must carry its split (``PIDrayDataset`` sets it; ``PackDetInputs`` must list ``'split'`` in meta_keys).
Problems are reported, never folded into a zero: a configured split that received no predictions, a split whose
evaluated images hold no ground truth, or predictions for an unknown split raise; images missing from the run and
splits on which the model detected nothing are logged as warnings next to the numbers.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from mmdet.datasets.api_wrappers import COCO, COCOeval
from mmdet.registry import METRICS
from mmdet.structures.mask import encode_mask_results
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from .pidray import PIDRAY_CLASSES, check_category_names

_IOU_TYPES = {"bbox": "box", "segm": "mask"}
_STAT_NAMES = ("mAP", "mAP_50", "mAP_75")  # COCOeval.stats[0:3]


@METRICS.register_module()
class PIDrayMetric(BaseMetric):
    """Box and mask AP per PIDray split and overall.

    Args:
        ann_files: {split name: COCO json} for the splits being evaluated, e.g. the three test splits.
        metric: ``'bbox'``, ``'segm'`` or both.
        results_file: optional path; the per-split table (Markdown) and the numbers (JSON) are written next to it as
            ``<results_file>.md`` / ``<results_file>.json``.
    """

    default_prefix = "pidray"

    def __init__(self, ann_files: dict[str, str], metric: str | Sequence[str] = ("bbox", "segm"),
                 results_file: str | None = None, collect_device: str = "cpu", prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if not ann_files:
            raise ValueError("PIDrayMetric needs ann_files={split: annotation json} for at least one split")
        self.ann_files = dict(ann_files)
        self.metrics = [metric] if isinstance(metric, str) else list(metric)
        for name in self.metrics:
            if name not in _IOU_TYPES:
                raise ValueError(f"PIDrayMetric: metric {name!r} is not one of {list(_IOU_TYPES)}")
        self.results_file = results_file

    # -- collecting ------------------------------------------------------------------------------------------------
    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            split = sample.get("split")
            if split is None:
                if len(self.ann_files) != 1:
                    raise KeyError(
                        "PIDrayMetric: a data sample has no 'split'. Build the test set from PIDrayDataset and add "
                        "'split' to PackDetInputs' meta_keys (see configs/xray/_base_/pidray_instance.py).")
                split = next(iter(self.ann_files))
            pred = sample["pred_instances"]
            result = {
                "split": split,
                "img_id": int(sample["img_id"]),
                "bboxes": pred["bboxes"].cpu().numpy(),
                "scores": pred["scores"].cpu().numpy(),
                "labels": pred["labels"].cpu().numpy(),
            }
            if "masks" in pred:
                masks = pred["masks"]
                result["masks"] = encode_mask_results(masks.detach().cpu().numpy()) \
                    if isinstance(masks, torch.Tensor) else masks
            self.results.append(result)

    # -- evaluating ------------------------------------------------------------------------------------------------
    def compute_metrics(self, results: list) -> dict[str, float]:
        by_split = defaultdict(list)
        for result in results:
            by_split[result["split"]].append(result)
        unknown = sorted(set(by_split) - set(self.ann_files))
        if unknown:
            raise KeyError(f"PIDrayMetric: predictions for split(s) {unknown}, but ann_files only names "
                           f"{sorted(self.ann_files)}")
        empty = [split for split in self.ann_files if not by_split.get(split)]
        if empty:
            raise RuntimeError(
                f"PIDrayMetric: no predictions for split(s) {empty}. The test dataloader must cover every split in "
                f"ann_files (a ConcatDataset of one PIDrayDataset per split); evaluating them would give a "
                f"meaningless zero AP.")

        ground_truths = {split: _load_ground_truth(path, split) for split, path in self.ann_files.items()}
        table, metrics = {}, {}
        for split, (coco, cat_of_label) in ground_truths.items():
            detections, img_ids = _detections(by_split[split], cat_of_label)
            table[split] = self._evaluate(coco, detections, img_ids, split)
        if len(ground_truths) > 1:
            coco, detections, img_ids = _merge_splits(ground_truths, by_split)
            table["overall"] = self._evaluate(coco, detections, img_ids, "overall")
        for split, row in table.items():
            for key, value in row.items():
                metrics[f"{split}/{key}"] = value
        text = format_table(table, self.metrics)
        print_log("\n" + text, logger="current")
        if self.results_file:
            base = Path(self.results_file)
            base.parent.mkdir(parents=True, exist_ok=True)
            Path(f"{base}.md").write_text(text + "\n")
            Path(f"{base}.json").write_text(json.dumps(table, indent=1))
        return metrics

    def _evaluate(self, coco: COCO, detections: dict[str, list], img_ids: list[int], split: str) -> dict:
        row = {"images": len(img_ids)}
        total = len(coco.get_img_ids())
        if len(img_ids) < total:
            print_log(f"PIDrayMetric: split '{split}': evaluating the {len(img_ids)} of {total} annotated images that "
                      f"were run (the others were skipped or not in the dataloader)", logger="current", level=30)
        num_gt = len(coco.get_ann_ids(img_ids=img_ids))
        if num_gt == 0:
            raise ValueError(f"PIDrayMetric: split '{split}' has no ground-truth objects on its {len(img_ids)} "
                             f"evaluated images, so AP is undefined; check its annotation file")
        row["objects"] = num_gt
        for iou_type in self.metrics:
            dets = detections[iou_type]
            if not dets:
                print_log(f"PIDrayMetric: split '{split}': the model made no {iou_type} detections on "
                          f"{len(img_ids)} images; its {iou_type} AP is 0 (a real result, not a missing split)",
                          logger="current", level=30)
                stats = np.zeros(3)
            else:
                with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its whole summary
                    evaluator = COCOeval(coco, coco.loadRes(dets), iou_type)
                    evaluator.params.imgIds = img_ids
                    evaluator.params.catIds = coco.get_cat_ids()
                    evaluator.evaluate()
                    evaluator.accumulate()
                    evaluator.summarize()
                # -1 marks "no ground truth in any category"; excluded above, so clamp defensively to a real 0 floor
                stats = np.maximum(evaluator.stats[:3], 0.0)
            for name, value in zip(_STAT_NAMES, stats):
                row[f"{iou_type}_{name}"] = round(float(value), 4)
        return row


def _load_ground_truth(path: str, split: str) -> tuple[COCO, dict[int, int]]:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(path)
    cat2label = check_category_names(coco.dataset.get("categories", []), PIDRAY_CLASSES, f"split '{split}' ({path})")
    return coco, {label: cat for cat, label in cat2label.items()}


def _detections(results: list[dict], cat_of_label: dict[int, int], image_id_map=None) -> tuple[dict, list[int]]:
    """COCO-format detections per iou type, and the evaluated image ids (optionally remapped)."""
    detections = {"bbox": [], "segm": []}
    img_ids = []
    for result in results:
        img_id = result["img_id"] if image_id_map is None else image_id_map[result["img_id"]]
        img_ids.append(img_id)
        for index, (box, score, label) in enumerate(zip(result["bboxes"], result["scores"], result["labels"])):
            label = int(label)
            if label not in cat_of_label:
                raise KeyError(f"PIDrayMetric: predicted label {label} has no category in the annotation file")
            x1, y1, x2, y2 = (float(v) for v in box)
            common = {"image_id": img_id, "category_id": cat_of_label[label], "score": float(score)}
            detections["bbox"].append({**common, "bbox": [x1, y1, x2 - x1, y2 - y1]})
            if "masks" in result:
                rle = dict(result["masks"][index])
                if isinstance(rle["counts"], bytes):
                    rle["counts"] = rle["counts"].decode()
                detections["segm"].append({**common, "segmentation": rle})
    return detections, sorted(set(img_ids))


def _merge_splits(ground_truths: dict, by_split: dict) -> tuple[COCO, dict, list[int]]:
    """All splits as one COCO set (image and annotation ids renumbered, categories by class order)."""
    merged = {"images": [], "annotations": [],
              "categories": [{"id": k + 1, "name": name} for k, name in enumerate(PIDRAY_CLASSES)]}
    detections, img_ids = {"bbox": [], "segm": []}, []
    for split, (coco, cat_of_label) in ground_truths.items():
        label_of_cat = {cat: label for label, cat in cat_of_label.items()}
        image_id_map = {}
        for image in coco.dataset["images"]:
            image_id_map[image["id"]] = len(merged["images"]) + 1
            merged["images"].append({**image, "id": image_id_map[image["id"]]})
        for ann in coco.dataset["annotations"]:
            merged["annotations"].append({**ann, "id": len(merged["annotations"]) + 1,
                                          "image_id": image_id_map[ann["image_id"]],
                                          "category_id": label_of_cat[ann["category_id"]] + 1})
        canonical = {label: label + 1 for label in range(len(PIDRAY_CLASSES))}
        split_dets, split_ids = _detections(by_split[split], canonical, image_id_map)
        for key in detections:
            detections[key] += split_dets[key]
        img_ids += split_ids
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = merged
        coco.createIndex()
    return coco, detections, img_ids


def format_table(table: dict[str, dict], metrics: Sequence[str]) -> str:
    """Markdown table, AP in percent as in the paper: one column per split, rows box/mask AP, AP50, AP75."""
    splits = list(table)
    rows = []
    for iou_type in metrics:
        for name, label in zip(_STAT_NAMES, ("AP", "AP50", "AP75")):
            rows.append([f"{_IOU_TYPES[iou_type]} {label}"] +
                        [f"{100 * table[s][f'{iou_type}_{name}']:.1f}" for s in splits])
    rows.append(["images"] + [str(table[s]["images"]) for s in splits])
    rows.append(["objects"] + [str(table[s]["objects"]) for s in splits])
    header = ["PIDray"] + splits
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])
