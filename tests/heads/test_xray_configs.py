"""configs/xray: every config parses, wires PIDray (12 classes, per-split evaluator) and builds a detector whose
backbone feeds the neck (a forward through backbone + neck on a small image)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "xray").glob("*.py"))


def _load(path):
    from mmengine.config import Config

    return Config.fromfile(str(path))


def test_the_expected_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"cascade-mask-rcnn_r101_fpn-sdanet_1x_pidray.py", "cascade-mask-rcnn_r101_fpn_1x_pidray.py",
            "cascade-mask-rcnn_biformer-s_fpn-sdanet_1x_pidray.py", "cascade-mask-rcnn_agent-pvt-s_fpn-sdanet_1x_pidray.py",
            "cascade-mask-rcnn_biformer-tiny_fpn-sdanet_synthetic-demo.py"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_wires_pidray(path):
    cfg = _load(path)
    assert "attnzoo.heads.xray" in cfg.custom_imports["imports"]
    assert cfg.default_scope == "mmdet"
    assert cfg.model.type == "CascadeRCNN"
    assert cfg.model.neck.type == ("FPN" if path.name == "cascade-mask-rcnn_r101_fpn_1x_pidray.py" else "SDANetFPN")
    assert [h["num_classes"] for h in cfg.model.roi_head.bbox_head] == [12, 12, 12]
    assert cfg.model.roi_head.mask_head.num_classes == 12
    assert cfg.train_dataloader.dataset.type == "PIDrayDataset" and cfg.train_dataloader.dataset.split == "train"
    assert cfg.train_dataloader.batch_size >= 2  # SDANet's BatchNorm on pooled features
    splits = [d["split"] for d in cfg.test_dataloader.dataset.datasets]
    assert splits == ["easy", "hard", "hidden"]
    assert cfg.test_evaluator.type == "PIDrayMetric" and sorted(cfg.test_evaluator.ann_files) == sorted(splits)
    pack = [t for t in cfg.test_dataloader.dataset.datasets[0]["pipeline"] if t["type"] == "PackDetInputs"][0]
    assert "split" in pack["meta_keys"]


def test_paper_setup_matches_the_official_one():
    cfg = _load(REPO / "configs" / "xray" / "cascade-mask-rcnn_r101_fpn-sdanet_1x_pidray.py")
    assert cfg.model.backbone.depth == 101
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.optim_wrapper.optimizer.lr == 0.02 and cfg.auto_scale_lr.base_batch_size == 16
    assert [t for t in cfg.train_pipeline if t["type"] == "Resize"][0]["scale"] == (500, 500)
    text = (REPO / "configs" / "xray" / "cascade-mask-rcnn_r101_fpn-sdanet_1x_pidray.py").read_text()
    assert "71.2 / hard 64.2 / hidden 49.5 / overall 61.6" in text and "59.9 / hard 52.0 / hidden 37.4 / overall 49.8" in text


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_backbone_feeds_the_neck(path):
    from mmengine.registry import init_default_scope

    cfg = _load(path)  # imports attnzoo.heads.xray (and attnzoo.openmmlab) through custom_imports
    init_default_scope("mmdet")
    from mmdet.registry import MODELS

    backbone_cfg = cfg.model.backbone
    if backbone_cfg.type == "ResNet":
        backbone_cfg.init_cfg = None  # no torchvision download
    backbone, neck = MODELS.build(backbone_cfg), MODELS.build(cfg.model.neck)
    backbone.eval()  # mmdet's ResNet.train() returns None, so no chaining
    neck.eval()
    with torch.no_grad():
        pyramid = neck(backbone(torch.randn(2, 3, 96, 128)))
    assert len(pyramid) == cfg.model.neck.num_outs == 5
    assert [tuple(p.shape[2:]) for p in pyramid] == [(24, 32), (12, 16), (6, 8), (3, 4), (2, 2)]


def test_time_budget_hook_ends_the_run_after_the_current_iteration():
    from attnzoo.heads.xray import TrainTimeBudgetHook

    logged = []
    runner = types.SimpleNamespace(iter=4, train_loop=types.SimpleNamespace(_max_iters=100),
                                   logger=types.SimpleNamespace(info=logged.append))
    hook = TrainTimeBudgetHook(max_minutes=1e-9)
    hook.before_train(runner)
    hook.after_train_iter(runner, batch_idx=4)
    assert runner.train_loop._max_iters == 5 and "stopping after iteration 5" in logged[0]
    generous = TrainTimeBudgetHook(max_minutes=60)
    runner.train_loop._max_iters = 100
    generous.before_train(runner)
    generous.after_train_iter(runner, batch_idx=4)
    assert runner.train_loop._max_iters == 100
    with pytest.raises(TypeError, match="IterBasedTrainLoop"):
        generous.before_train(types.SimpleNamespace(train_loop=object()))


def test_importing_heads_and_the_demo_module_leaves_openmmlab_alone():
    """``import attnzoo.heads`` and ``import attnzoo.tasks.xray.demo`` must work without mmdet; only configs and tools import it."""
    import subprocess
    import sys

    code = ("import sys, attnzoo.heads, attnzoo.tasks.xray.demo; "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('mmdet', 'mmcv', 'mmengine') "
            "or m == 'attnzoo.heads.xray'); print(loaded); sys.exit(1 if loaded else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
