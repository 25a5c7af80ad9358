"""The dataset makers, the analysis tools and the train/test front ends' argument handling."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from mm_cycle import CONFIGS, REPO, load_tool

MINI = str(CONFIGS / "det/retinanet_biformer-mini_fpn_coco-synth.py")


def _digest(root) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.relative_to(root).as_posix().encode() + p.read_bytes() for p in files)).hexdigest()


def test_makers_are_deterministic_and_consistent(tmp_path):
    import cv2
    import make_ade_seg
    import make_coco_det

    a = make_coco_det.make(tmp_path / "a", num_train=3, num_val=1, seed=5)
    b = make_coco_det.make(tmp_path / "b", num_train=3, num_val=1, seed=5)
    c = make_coco_det.make(tmp_path / "c", num_train=3, num_val=1, seed=6)
    assert _digest(a) == _digest(b) != _digest(c)
    coco = json.loads((a / "annotations/instances_train2017.json").read_text())
    assert len(coco["categories"]) == 80 and coco["categories"][-1]["id"] == 90  # COCO's own ids
    for ann in coco["annotations"]:  # the polygon is the drawn mask: its area matches, its box encloses it
        x, y, w, h = ann["bbox"]
        poly = np.asarray(ann["segmentation"][0]).reshape(-1, 2)
        assert poly[:, 0].min() >= x - 1 and poly[:, 0].max() <= x + w + 1 and ann["area"] > 0.2 * w * h

    ade = make_ade_seg.make(tmp_path / "ade", num_train=2, num_val=1, seed=0)
    label = cv2.imread(str(ade / "annotations/training/ADE_train_00000001.png"), cv2.IMREAD_UNCHANGED)
    assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 3, 4, 5, 6, 7, 8}
    assert (ade / "images/validation/ADE_val_00000001.jpg").is_file()


def test_get_flops_and_throughput_on_a_small_model():
    flops = load_tool("analysis/get_flops").count(MINI, 96, 128)
    assert 0.3 < flops["backbone_params_m"] < 1.0 and flops["params_m"] > flops["backbone_params_m"]
    assert flops["gflops"] > 0.01
    speed = load_tool("analysis/benchmark_throughput").benchmark(MINI, 96, 128, iters=1, warmup=1)
    assert speed["images_per_s"] > 0 and speed["device"].startswith("cpu")


def test_amp_on_cpu_is_refused_clearly(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="--amp needs a CUDA device"):
        load_tool("train").main([MINI, "--amp", "--work-dir", str(REPO / "work_dirs/never")])
