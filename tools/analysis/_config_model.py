"""Build a config's model (without pretrained weights) and feed it a synthetic batch, for the analysis tools."""

from __future__ import annotations

import os.path as osp
import sys

import torch
from torch import nn

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if osp.join(REPO_ROOT, "tools") not in sys.path:
    sys.path.insert(0, osp.join(REPO_ROOT, "tools"))
from _clone_import import make_attnzoo_importable  # noqa: E402

make_attnzoo_importable()


def build_model(config: str, cfg_options: dict | None = None, device: str = "cpu") -> tuple[nn.Module, str]:
    """(model in eval mode, scope) with random weights: pretrained loading is switched off (no downloads)."""
    from mmengine.config import Config
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.registry import init_default_scope

    import attnzoo.openmmlab  # noqa: F401

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.model.get("backbone", {}).get("type") == "ZooBackbone":
        cfg.model.backbone.pretrained = None
    scope = cfg.get("default_scope", "mmdet")
    init_default_scope(scope)
    registry = __import__(f"{scope}.registry", fromlist=["MODELS"]).MODELS
    model = revert_sync_batchnorm(registry.build(cfg.model))  # SyncBN needs a process group
    return model.to(device).eval(), scope


def data_samples(scope: str, batch: int, height: int, width: int) -> list:
    """Data samples with the metainfo heads read (image and pad shapes), as a dataloader would give them."""
    meta = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width),
                batch_input_shape=(height, width), scale_factor=(1.0, 1.0))
    if scope == "mmseg":
        from mmseg.structures import SegDataSample as Sample
    else:
        from mmdet.structures import DetDataSample as Sample
    samples = []
    for _ in range(batch):
        sample = Sample()
        sample.set_metainfo(meta)
        samples.append(sample)
    return samples


class TensorForward(nn.Module):
    """``model(images)`` -> the detector's / segmentor's raw head outputs (mode='tensor') for op counters."""

    def __init__(self, model: nn.Module, scope: str):
        super().__init__()
        self.model, self.scope = model, scope

    def forward(self, images: torch.Tensor):
        samples = data_samples(self.scope, images.shape[0], images.shape[-2], images.shape[-1])
        return self.model(images, samples, mode="tensor")
