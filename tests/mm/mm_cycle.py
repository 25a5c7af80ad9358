"""Shrink a paper config to the project's small data and run tools/train.py / tools/test.py on it in-process.

The shrunk config is the paper config with: the synthetic dataset bases (configs/_base_/datasets/*-synth*.py) at a
tmp data_root, a few images, narrow necks and heads, no pretrained weights, and a schedule of one or two iterations /
epochs. It is dumped to a file and run through the real command-line entry points.
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import torch
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
SYNTH_BASES = {
    "det": CONFIGS / "_base_/datasets/coco-synth_detection.py",
    "ins": CONFIGS / "_base_/datasets/coco-synth_instance.py",
    "seg": CONFIGS / "_base_/datasets/ade20k-synth.py",
}
NARROW = 16  # channels of the shrunk necks and heads
_run_ids = itertools.count()


def load_tool(name: str):
    """tools/<name>.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"attnzoo_tools_{name.replace('/', '_')}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dataset_overrides(kind: str, data_root: Path, train_images: int, val_images: int, image_scale) -> dict:
    base = Config.fromfile(str(SYNTH_BASES[kind]))
    root = str(data_root) + ("/" if kind != "seg" else "")
    train, val = base.train_dataloader, base.val_dataloader
    train.dataset.data_root = val.dataset.data_root = root
    train.dataset.indices, val.dataset.indices = train_images, val_images
    train.batch_size = 2
    if kind == "seg":
        crop = image_scale
        train.dataset.pipeline[2].scale = (4 * crop[0], crop[1])
        train.dataset.pipeline[3].crop_size = crop
        val.dataset.pipeline[1].scale = (4 * crop[0], crop[1])
    else:
        train.dataset.pipeline[2].scale = image_scale
        val.dataset.pipeline[1].scale = image_scale
    overrides = dict(
        train_dataloader=dict(_delete_=True, **train.to_dict()),
        val_dataloader=dict(_delete_=True, **val.to_dict()),
        test_dataloader=dict(_delete_=True, **val.to_dict()),
    )
    evaluator = base.val_evaluator.to_dict()
    if kind != "seg":
        evaluator["ann_file"] = f"{root}annotations/instances_val2017.json"
    overrides["val_evaluator"] = dict(_delete_=True, **evaluator)
    overrides["test_evaluator"] = dict(_delete_=True, **evaluator)
    return overrides


def _model_overrides(model: Config, kind: str, image_scale) -> dict:
    c = NARROW
    out: dict = dict(backbone=dict(pretrained=None, drop_path_rate=0.0))
    if model.type == "RetinaNet":
        out["neck"] = dict(out_channels=c)
        out["bbox_head"] = dict(in_channels=c, feat_channels=c, stacked_convs=1)
        # score_thr 0 so even an untrained model's detections reach the COCO evaluator (a real mAP line).
        out["test_cfg"] = dict(score_thr=0.0, max_per_img=20, nms_pre=200)
    elif model.type == "MaskRCNN":
        out["neck"] = dict(out_channels=c)
        out["rpn_head"] = dict(in_channels=c, feat_channels=c)
        out["roi_head"] = dict(
            bbox_roi_extractor=dict(out_channels=c),
            bbox_head=dict(in_channels=c, fc_out_channels=32),
            mask_roi_extractor=dict(out_channels=c),
            mask_head=dict(in_channels=c, conv_out_channels=c, num_convs=1))
        out["train_cfg"] = dict(rpn_proposal=dict(nms_pre=200, max_per_img=100), rcnn=dict(sampler=dict(num=64)))
        out["test_cfg"] = dict(rpn=dict(nms_pre=200, max_per_img=100), rcnn=dict(score_thr=0.0, max_per_img=20))
    elif model.type == "EncoderDecoder":
        out["data_preprocessor"] = dict(size=tuple(reversed(image_scale)))
        if model.decode_head.type == "FPNHead":
            out["neck"] = dict(out_channels=c)
            out["decode_head"] = dict(in_channels=[c] * 4, channels=c)
        else:  # UPerHead
            out["decode_head"] = dict(channels=c)
        if model.get("auxiliary_head"):
            out["auxiliary_head"] = dict(channels=c, num_convs=1)
    else:
        raise ValueError(f"no shrink rule for {model.type}")
    return out


def _match_channels(model: Config) -> None:
    """Point the neck / decode heads at the (possibly shrunk) backbone's channels, read off a meta-device build."""
    from attnzoo.openmmlab import ZooBackbone

    kwargs = {k: v for k, v in model.backbone.items() if k != "type"}
    with torch.device("meta"):
        channels = ZooBackbone(**kwargs).out_channels
    if model.get("neck") is not None:
        model.neck.in_channels = channels
    else:
        model.decode_head.in_channels = channels
    if model.get("auxiliary_head") is not None:
        model.auxiliary_head.in_channels = channels[model.auxiliary_head.in_index]


def shrink_config(config: str | Path, data_root: Path, work_dir: Path, *, train_images=4, val_images=2,
                  image_scale=(96, 64), backbone_overrides: dict | None = None) -> Path:
    """The shrunk config, dumped as ``work_dir/config.py``."""
    cfg = Config.fromfile(str(config))
    kind = "seg" if cfg.default_scope == "mmseg" else ("ins" if cfg.model.type == "MaskRCNN" else "det")
    cfg.merge_from_dict(_dataset_overrides(kind, data_root, train_images, val_images, image_scale))
    model = _model_overrides(cfg.model, kind, image_scale)
    if backbone_overrides:
        model["backbone"].update(backbone_overrides)
    cfg.merge_from_dict(dict(model=model))
    _match_channels(cfg.model)
    if kind == "seg":
        cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=2, val_interval=2)
        cfg.default_hooks.checkpoint = dict(type="CheckpointHook", by_epoch=False, interval=2)
    else:
        cfg.train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=1, val_interval=1)
        cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=1)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=1)
    cfg.randomness = dict(seed=0)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "config.py"
    cfg.dump(str(path))
    return path


def run_tool(name: str, *args: str, cfg_options: tuple[str, ...] = ()):
    """Run tools/<name>.py's main() in-process with a unique experiment name; returns what main returns."""
    torch.set_num_threads(1)  # 2 threads on a busy 2-core box are many times slower than 1
    experiment = f"mmtest{next(_run_ids)}"
    argv = [*args, "--cfg-options", f"experiment_name={experiment}", *cfg_options]
    return load_tool(name).main(argv)
