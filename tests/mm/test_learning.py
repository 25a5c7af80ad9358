"""Detection training through ZooBackbone learns: a miniature BiFormer RetinaNet trained for about a minute of CPU
time on the easy synthetic COCO-format set beats the same detector untrained by a wide margin in COCO box mAP."""

from __future__ import annotations

import pytest
import torch
from mm_cycle import CONFIGS, run_tool
from mmengine.config import Config
from mmengine.registry import init_default_scope

CONFIG = CONFIGS / "det/retinanet_biformer-mini_fpn_coco-synth.py"


@pytest.mark.slow
def test_detector_learns(tmp_path, capsys):
    import make_coco_det

    data = make_coco_det.make(tmp_path / "coco_synth", num_train=128, num_val=32, height=96, width=128, min_size=20,
                              max_size=56, seed=1)
    root = f"{data}/"
    ann = f"{root}annotations/instances_val2017.json"
    data_options = (
        f"train_dataloader.dataset.data_root={root}", f"val_dataloader.dataset.data_root={root}",
        f"test_dataloader.dataset.data_root={root}", f"val_evaluator.ann_file={ann}", f"test_evaluator.ann_file={ann}",
        "randomness.seed=0",
    )

    # Untrained: the detector as built (seeded), saved as a plain state dict and evaluated by tools/test.py. Scores
    # are all low before training, so score_thr=0 lets its detections reach the evaluator at all.
    from mmdet.registry import MODELS

    import attnzoo.openmmlab  # noqa: F401

    cfg = Config.fromfile(str(CONFIG))
    init_default_scope("mmdet")
    torch.manual_seed(0)
    untrained = MODELS.build(cfg.model)
    untrained.init_weights()
    torch.save({"state_dict": untrained.state_dict()}, tmp_path / "untrained.pth")
    before = run_tool("test", str(CONFIG), str(tmp_path / "untrained.pth"), "--work-dir", str(tmp_path / "before"),
                      cfg_options=(*data_options, "model.test_cfg.score_thr=0.0"))["coco/bbox_mAP"]

    run_tool("train", str(CONFIG), "--work-dir", str(tmp_path / "train"), cfg_options=data_options)
    capsys.readouterr()
    after = run_tool("test", str(CONFIG), str(tmp_path / "train/epoch_12.pth"), "--work-dir", str(tmp_path / "after"),
                     cfg_options=data_options)["coco/bbox_mAP"]
    assert "coco/bbox_mAP: " in capsys.readouterr().out
    print(f"\ncoco/bbox_mAP untrained {before:.3f} -> trained {after:.3f}")
    assert after >= 0.3 and after >= before + 0.25, (before, after)
