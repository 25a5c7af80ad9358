"""RetinaNet + BVR through the real entry points: tools/train.py, --resume, tools/test.py (COCO mAP), DetInferencer."""

from __future__ import annotations

import re

from mm_cycle import CONFIGS, _dataset_overrides, run_tool
from mmengine.config import Config


def _tiny_config(data, work_dir):
    cfg = Config.fromfile(str(CONFIGS / "bvr/retinanet-bvr_r18-mini_fpn_coco-synth.py"))
    cfg.merge_from_dict(_dataset_overrides("det", data, 4, 2, (96, 64)))
    cfg.train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=1, val_interval=1)
    cfg.param_scheduler = [dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=2)]
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=1)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=1)
    cfg.model.test_cfg = dict(nms_pre=200, min_bbox_size=0, score_thr=0.0, nms=dict(type="nms", iou_threshold=0.5),
                              max_per_img=20)  # score_thr 0: an untrained model still reaches the evaluator
    path = work_dir / "config.py"
    cfg.dump(str(path))
    return path


def test_bvr_train_resume_test_infer(coco_synth, tmp_path, capsys):
    path = _tiny_config(coco_synth, tmp_path)
    run_tool("train", str(path), "--work-dir", str(tmp_path))
    first = tmp_path / "epoch_1.pth"
    assert first.is_file()
    run_tool("train", str(path), "--work-dir", str(tmp_path), "--resume", str(first),
             cfg_options=("train_cfg.max_epochs=2",))
    second = tmp_path / "epoch_2.pth"
    assert second.is_file()
    log = "\n".join(p.read_text() for p in tmp_path.glob("*/*.log"))
    assert "resumed" in log.lower()
    assert re.search(r"kpt_loss_point_cls: [0-9.]+ +kpt_loss_point_offset: [0-9.]+ +bbox_loss_cls", log), log[-2000:]

    capsys.readouterr()
    metrics = run_tool("test", str(path), str(second), "--work-dir", str(tmp_path))
    assert 0.0 <= metrics["coco/bbox_mAP"] <= 1.0
    assert re.search(r"^coco/bbox_mAP: [0-9.]+$", capsys.readouterr().out, re.M)

    from mmdet.apis import DetInferencer

    inferencer = DetInferencer(model=str(path), weights=str(second), device="cpu", show_progress=False)
    image = next((coco_synth / "val2017").glob("*.jpg"))
    result = inferencer(str(image), return_datasamples=True)["predictions"][0]
    assert result.pred_instances.bboxes.shape[1] == 4
    assert len(result.pred_instances.scores) == len(result.pred_instances.labels) <= 20
