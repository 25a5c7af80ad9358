"""For each backbone family: a detection and a segmentation config train on the small data, save, resume and test."""

from __future__ import annotations

import re

import pytest
from mm_cycle import CONFIGS, run_tool, shrink_config

# (config, how to shrink the backbone further); one detection and one segmentation config per family, alternating
# RetinaNet / Mask R-CNN and Semantic FPN / UperNet so every detector and segmentor kind runs somewhere.
# Families whose constructors take depth overrides get one block per stage (timm's PoolFormer / FocalNet fix theirs).
_BIFORMER_TINY = dict(model_kwargs=dict(depth=(1, 1, 1, 1), embed_dim=(32, 64, 96, 128), qk_dims=(32, 64, 96, 128)))
_AGENT_PVT_TINY = dict(model_kwargs=dict(depths=(1, 1, 1, 1)))
_AGENT_SWIN_TINY = dict(model_kwargs=dict(depths=(1, 1, 1, 1)))
# SLAB-Swin downstream: stage windows 56/28/7/7, so even the small synthetic maps pad to them; width 32 keeps it quick
_SLAB_SWIN_TINY = dict(model_kwargs=dict(depths=(1, 1, 1, 1), embed_dim=32, num_heads=(1, 2, 4, 8),
                                         stage_window_sizes=(56, 28, 7, 7), always_partition=True, out_norms=True))
_MOH_TRANSNEXT_TINY = dict(model_kwargs=dict(depths=(1, 1, 1, 1), embed_dims=(24, 48, 96, 192)))
CYCLES = {
    "poolformer-det": ("det/retinanet_poolformer-s12_fpn_1x_coco.py", {}),
    "poolformer-seg": ("seg/fpn_poolformer-s12_8xb4-40k_ade20k-512x512.py", {}),
    "focalnet-det": ("det/mask-rcnn_focalnet-t-srf_fpn_ms-crop-1x_coco.py", {}),
    "focalnet-seg": ("seg/upernet_focalnet-t-srf_8xb2-160k_ade20k-512x512.py", {}),
    "biformer-det": ("det/mask-rcnn_biformer-s_fpn_1x_coco.py", _BIFORMER_TINY),
    "biformer-seg": ("seg/upernet_biformer-s_8xb2-160k_ade20k-512x512.py", _BIFORMER_TINY),
    "agent-pvt-det": ("det/retinanet_agent-pvt-t_fpn_1x_coco.py", _AGENT_PVT_TINY),
    "agent-pvt-seg": ("seg/fpn_agent-pvt-t_8xb2-40k_ade20k-512x512.py", _AGENT_PVT_TINY),
    "agent-swin-det": ("det/mask-rcnn_agent-swin-t_fpn_ms-crop-1x_coco.py", _AGENT_SWIN_TINY),
    "agent-swin-seg": ("seg/upernet_agent-swin-t_8xb2-160k_ade20k-512x512.py", _AGENT_SWIN_TINY),
    "slab-swin-det": ("det/mask-rcnn_slab-swin-t_fpn_ms-crop-1x_coco.py", _SLAB_SWIN_TINY),
    "moh-transnext-det": ("det/mask-rcnn_moh-transnext-s-75_fpn_1x_coco.py", _MOH_TRANSNEXT_TINY),
    "transnext-seg": ("seg/upernet_transnext-t_8xb2-160k_ade20k-512x512.py", _MOH_TRANSNEXT_TINY),
}


def _families():
    return sorted(CYCLES)


@pytest.mark.parametrize("case", _families())
def test_train_resume_test(case, coco_synth, ade_synth, tmp_path, capsys):
    config, backbone = CYCLES[case]
    seg = config.startswith("seg/")
    data = ade_synth if seg else coco_synth
    scale = (64, 64) if seg else (96, 64)
    path = shrink_config(CONFIGS / config, data, tmp_path, image_scale=scale, backbone_overrides=backbone)

    run_tool("train", str(path), "--work-dir", str(tmp_path))
    first = tmp_path / ("iter_2.pth" if seg else "epoch_1.pth")
    assert first.is_file()
    # Resume: one more epoch / two more iterations from the saved state (optimizer, scheduler, message hub).
    more = "train_cfg.max_iters=4" if seg else "train_cfg.max_epochs=2"
    run_tool("train", str(path), "--work-dir", str(tmp_path), "--resume", str(first), cfg_options=(more,))
    second = tmp_path / ("iter_4.pth" if seg else "epoch_2.pth")
    assert second.is_file()
    log = "\n".join(p.read_text() for p in tmp_path.glob("*/*.log"))
    assert "resumed" in log.lower()

    capsys.readouterr()
    metrics = run_tool("test", str(path), str(second), "--work-dir", str(tmp_path), "--out", str(tmp_path / "out.pkl"))
    printed = capsys.readouterr().out
    key = "mIoU" if seg else "coco/bbox_mAP"
    assert key in metrics, metrics
    assert 0.0 <= metrics[key] <= (100.0 if seg else 1.0)
    assert re.search(rf"^{re.escape(key)}: [0-9.]+$", printed, re.M), printed
    assert (tmp_path / "out.pkl").stat().st_size > 0  # --out dumped the raw predictions
