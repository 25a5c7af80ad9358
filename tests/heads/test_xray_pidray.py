"""PIDray support: the synthetic generator, the dataset (official class order, loud bad inputs) and the per-split
metric (perfect predictions score 100, missing splits raise, a split without detections is a logged, real zero)."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mmdet")
pycocotools_mask = pytest.importorskip("pycocotools.mask")

REPO = Path(__file__).resolve().parents[2]
OFFICIAL_ORDER = ("Baton", "Pliers", "Hammer", "Powerbank", "Scissors", "Wrench", "Gun", "Bullet", "Sprayer",
                  "HandCuffs", "Knife", "Lighter")


def _generator():
    """tools/make_pidray.py as a module (tools/ is not a package)."""
    if "make_pidray" not in sys.modules:
        spec = importlib.util.spec_from_file_location("make_pidray", REPO / "tools" / "make_pidray.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["make_pidray"] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules["make_pidray"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("pidray")
    files = _generator().make_pidray(root, num_train=8, num_test=5, image_size=64, seed=3)
    return root, files


@pytest.fixture
def warnings_logged():
    """Messages that mmengine's current logger emits at WARNING or above during the test."""
    from mmengine.logging import MMLogger

    messages = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger = MMLogger.get_current_instance()
    handler = Keep(level=logging.WARNING)
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def _dataset(root, split, **kwargs):
    from attnzoo.heads.xray import PIDRAY_SPLITS, PIDrayDataset

    ann_file, folder = PIDRAY_SPLITS[split]
    return PIDrayDataset(split=split, data_root=str(root), ann_file=ann_file, data_prefix=dict(img=folder),
                         test_mode=True, pipeline=[], **kwargs)


# --- generator ------------------------------------------------------------------------------------------------------


def test_generator_layout_classes_and_splits(synthetic):
    from attnzoo.heads.xray import PIDRAY_CLASSES, PIDRAY_SPLITS

    root, files = synthetic
    assert PIDRAY_CLASSES == OFFICIAL_ORDER == _generator().PIDRAY_CLASSES
    for split, (ann_file, folder) in PIDRAY_SPLITS.items():
        assert files[split] == root / ann_file
        coco = json.loads(files[split].read_text())
        assert [c["name"] for c in coco["categories"]] == list(OFFICIAL_ORDER)
        for image in coco["images"]:
            assert (root / folder / image["file_name"]).is_file()
        per_image = np.bincount([a["image_id"] for a in coco["annotations"]], minlength=len(coco["images"]) + 1)[1:]
        if split == "easy":
            assert (per_image == 1).all()
        if split == "hard":
            assert (per_image >= 2).all()
        for ann in coco["annotations"]:  # masks decode and agree with their boxes and areas
            rle = pycocotools_mask.frPyObjects(ann["segmentation"], 64, 64)
            mask = pycocotools_mask.decode(rle)
            assert mask.sum() == ann["area"] > 0
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_generator_is_deterministic_by_seed(tmp_path):
    generator = _generator()
    a = generator.make_pidray(tmp_path / "a", num_train=3, num_test=2, image_size=48, seed=7, splits=("hidden",))
    b = generator.make_pidray(tmp_path / "b", num_train=3, num_test=2, image_size=48, seed=7, splits=("hidden",))
    c = generator.make_pidray(tmp_path / "c", num_train=3, num_test=2, image_size=48, seed=8, splits=("hidden",))
    assert a["hidden"].read_bytes() == b["hidden"].read_bytes() != c["hidden"].read_bytes()
    image = "hidden/hidden_00001.png"
    assert (tmp_path / "a" / image).read_bytes() == (tmp_path / "b" / image).read_bytes()
    assert (tmp_path / "a" / image).read_bytes() != (tmp_path / "c" / image).read_bytes()


def test_hidden_items_are_buried_under_more_material(synthetic):
    """The hidden split's items sit under more attenuating clutter than the easy split's (darker item pixels)."""
    import cv2

    root, files = synthetic

    def mean_item_brightness(split, folder):
        coco = json.loads(files[split].read_text())
        names = {image["id"]: image["file_name"] for image in coco["images"]}
        values = []
        for ann in coco["annotations"]:
            image = cv2.imread(str(root / folder / names[ann["image_id"]])).astype(np.float32)
            mask = pycocotools_mask.decode(pycocotools_mask.frPyObjects(ann["segmentation"], 64, 64)).astype(bool)
            values.append(image[mask].mean())
        return np.mean(values)

    assert mean_item_brightness("hidden", "hidden") < mean_item_brightness("easy", "easy")


# --- dataset --------------------------------------------------------------------------------------------------------


def test_dataset_loads_a_split_with_its_name(synthetic):
    root, _ = synthetic
    dataset = _dataset(root, "hard")
    assert len(dataset) == 5
    info = dataset.get_data_info(0)
    assert info["split"] == "hard" and len(info["instances"]) >= 2
    assert all(0 <= inst["bbox_label"] < 12 for inst in info["instances"])
    assert dataset.metainfo["classes"] == OFFICIAL_ORDER


def test_labels_follow_category_names_not_file_order(synthetic, tmp_path):
    root, files = synthetic
    coco = json.loads(files["easy"].read_text())
    # renumber categories in reverse and list them shuffled: labels must still follow the names
    new_id = {c["id"]: 100 - c["id"] for c in coco["categories"]}
    coco["categories"] = [{**c, "id": new_id[c["id"]]} for c in reversed(coco["categories"])]
    for ann in coco["annotations"]:
        ann["category_id"] = new_id[ann["category_id"]]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "xray_test_easy.json").write_text(json.dumps(coco))
    (tmp_path / "easy").symlink_to(root / "easy")
    original, renumbered = _dataset(root, "easy"), _dataset(tmp_path, "easy")
    labels = [[i["bbox_label"] for i in d.get_data_info(k)["instances"]] for d in (original, renumbered)
              for k in range(len(d))]
    assert labels[:5] == labels[5:]


def test_unknown_class_name_is_an_error(synthetic, tmp_path):
    root, files = synthetic
    coco = json.loads(files["easy"].read_text())
    coco["categories"][6]["name"] = "Rifle"
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "xray_test_easy.json").write_text(json.dumps(coco))
    (tmp_path / "easy").symlink_to(root / "easy")
    with pytest.raises(ValueError, match="'Rifle'.*not PIDray classes"):
        _dataset(tmp_path, "easy")


def test_missing_image_is_an_error_or_a_logged_skip(synthetic, tmp_path, warnings_logged):
    root, files = synthetic
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "xray_test_easy.json").write_bytes(files["easy"].read_bytes())
    (tmp_path / "easy").mkdir()
    for path in sorted((root / "easy").iterdir())[1:]:  # the first image is missing
        (tmp_path / "easy" / path.name).symlink_to(path)
    with pytest.raises(FileNotFoundError, match="easy_00000.png"):
        _dataset(tmp_path, "easy")
    dataset = _dataset(tmp_path, "easy", missing_images="skip")
    assert len(dataset) == 4
    assert any("skipping 1 image(s)" in m and "easy_00000.png" in m for m in warnings_logged)


def test_empty_split_is_an_error(synthetic, tmp_path):
    root, files = synthetic
    coco = json.loads(files["hidden"].read_text())
    coco["images"], coco["annotations"] = [], []
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "xray_test_hidden.json").write_text(json.dumps(coco))
    (tmp_path / "hidden").mkdir()
    with pytest.raises(ValueError, match="split 'hidden'.*has no images"):
        _dataset(tmp_path, "hidden")


# --- metric ---------------------------------------------------------------------------------------------------------


def _ground_truth_predictions(root, files, split, drop_every=0, shift=0.0):
    """Data samples whose predictions are the split's ground truth (optionally some dropped or shifted)."""
    coco = json.loads(files[split].read_text())
    samples = []
    for image in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        if drop_every:
            anns = [a for k, a in enumerate(anns) if k % drop_every]
        boxes = [[a["bbox"][0] + shift, a["bbox"][1], a["bbox"][0] + a["bbox"][2] + shift, a["bbox"][1] + a["bbox"][3]]
                 for a in anns]
        masks = [pycocotools_mask.decode(pycocotools_mask.frPyObjects(a["segmentation"], 64, 64)) for a in anns]
        if shift:
            masks = [np.roll(m, int(shift), axis=1) for m in masks]
        samples.append({
            "split": split, "img_id": image["id"],
            "pred_instances": {
                "bboxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "scores": torch.linspace(0.99, 0.5, len(anns)),
                "labels": torch.tensor([a["category_id"] - 1 for a in anns], dtype=torch.long),
                "masks": torch.from_numpy(np.stack(masks).astype(bool)) if masks else
                torch.zeros(0, 64, 64, dtype=torch.bool),
            }})
    return samples


def _metric(files, splits=("easy", "hard", "hidden"), **kwargs):
    from attnzoo.heads.xray import PIDrayMetric

    metric = PIDrayMetric(ann_files={s: str(files[s]) for s in splits}, **kwargs)
    metric.dataset_meta = {"classes": OFFICIAL_ORDER}
    return metric


def test_perfect_predictions_score_100_per_split_and_overall(synthetic, tmp_path):
    root, files = synthetic
    metric = _metric(files, results_file=str(tmp_path / "pidray"))
    for split in ("easy", "hard", "hidden"):
        metric.process({}, _ground_truth_predictions(root, files, split))
    results = metric.evaluate(size=15)
    for split in ("easy", "hard", "hidden", "overall"):
        assert results[f"pidray/{split}/bbox_mAP"] == pytest.approx(1.0)
        assert results[f"pidray/{split}/segm_mAP"] == pytest.approx(1.0)
    table = (tmp_path / "pidray.md").read_text()
    assert "| box AP " in table and "overall" in table and "100.0" in table
    assert json.loads((tmp_path / "pidray.json").read_text())["overall"]["images"] == 15


def test_worse_predictions_score_lower_and_overall_pools_images(synthetic):
    root, files = synthetic
    metric = _metric(files)
    metric.process({}, _ground_truth_predictions(root, files, "easy"))
    metric.process({}, _ground_truth_predictions(root, files, "hard", drop_every=2))
    metric.process({}, _ground_truth_predictions(root, files, "hidden", shift=3.0))
    results = metric.evaluate(size=15)
    assert results["pidray/easy/bbox_mAP"] == pytest.approx(1.0)
    assert results["pidray/hard/bbox_mAP"] < 1.0
    assert results["pidray/hidden/segm_mAP"] < 1.0
    low = min(results[f"pidray/{s}/bbox_mAP"] for s in ("easy", "hard", "hidden"))
    assert low < results["pidray/overall/bbox_mAP"] < 1.0


def test_a_split_without_predictions_raises(synthetic):
    root, files = synthetic
    metric = _metric(files)
    metric.process({}, _ground_truth_predictions(root, files, "easy"))
    with pytest.raises(RuntimeError, match=r"no predictions for split\(s\) \['hard', 'hidden'\]"):
        metric.evaluate(size=5)


def test_a_split_with_no_detections_is_a_logged_real_zero(synthetic, warnings_logged):
    root, files = synthetic
    metric = _metric(files, splits=("easy", "hard"))
    metric.process({}, _ground_truth_predictions(root, files, "easy"))
    empty = _ground_truth_predictions(root, files, "hard", drop_every=1)  # every object dropped
    assert all(len(s["pred_instances"]["labels"]) == 0 for s in empty)
    metric.process({}, empty)
    results = metric.evaluate(size=10)
    assert results["pidray/hard/bbox_mAP"] == 0.0
    assert any("split 'hard': the model made no bbox detections" in m for m in warnings_logged)


def test_samples_without_split_are_rejected_when_several_splits_are_evaluated(synthetic):
    root, files = synthetic
    samples = _ground_truth_predictions(root, files, "easy")
    for sample in samples:
        del sample["split"]
    with pytest.raises(KeyError, match="meta_keys"):
        _metric(files).process({}, samples)
