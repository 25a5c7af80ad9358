"""ZooBackbone: strict pretrained loading, build-time errors, freezing, and Runner-checkpoint safety."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import attnzoo.openmmlab as glue
from attnzoo import CheckpointError
from attnzoo.openmmlab import ZooBackbone


def _save(model: torch.nn.Module, path) -> str:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


@pytest.fixture(scope="module")
def poolformer_ckpt(tmp_path_factory):
    """A poolformer_s12 ImageNet-layout checkpoint (seeded random weights; no hub here)."""
    torch.manual_seed(0)
    model = timm.create_model("poolformer_s12")
    return _save(model, tmp_path_factory.mktemp("ckpt") / "poolformer_s12.safetensors"), model.state_dict()


def test_registered_in_mmdet_and_mmseg():
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG

    assert DET.get("ZooBackbone") is ZooBackbone and SEG.get("ZooBackbone") is ZooBackbone


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown model_name 'poolformer_s13'.*poolformer_s12"):
        ZooBackbone("poolformer_s13")


def test_out_indices_out_of_range():
    with pytest.raises(ValueError, match=r"out_indices \(1, 4\) out of range: poolformer_s12 has 4 feature levels"):
        ZooBackbone("poolformer_s12", out_indices=(1, 4))


def test_pretrained_loads_exactly_and_survives_init_weights(poolformer_ckpt):
    path, reference = poolformer_ckpt
    backbone = ZooBackbone("poolformer_s12", pretrained=path, out_indices=(1, 2, 3), out_norm="GN1")
    backbone.init_weights()  # what the Runner calls; must not re-initialise the loaded weights
    loaded = backbone.model.state_dict()
    assert "head.fc.weight" not in loaded  # head pruned
    for key, value in loaded.items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0)
    features = backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape) for f in features] == [(1, 128, 8, 12), (1, 320, 4, 6), (1, 512, 2, 3)]


def test_pretrained_through_detector_init_weights(poolformer_ckpt):
    """The same through mmdet: building the detector and its init_weights keep the checkpoint's values."""
    from mm_cycle import CONFIGS
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    path, reference = poolformer_ckpt
    cfg = Config.fromfile(str(CONFIGS / "det/retinanet_poolformer-s12_fpn_1x_coco.py"))
    cfg.model.backbone.pretrained = path
    init_default_scope("mmdet")
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    weight = "stages.2.blocks.0.mlp.fc1.weight"
    torch.testing.assert_close(detector.backbone.model.state_dict()[weight], reference[weight], rtol=0, atol=0)


def test_init_cfg_pretrained_is_strict_too(poolformer_ckpt, tmp_path):
    path, _ = poolformer_ckpt
    backbone = ZooBackbone("poolformer_s12", init_cfg=dict(type="Pretrained", checkpoint=path))
    assert backbone.pretrained == path and not backbone.init_cfg
    other = _save(timm.create_model("resnet18"), tmp_path / "resnet18.safetensors")
    with pytest.raises(CheckpointError, match="does not match the model"):
        ZooBackbone("poolformer_s12", init_cfg=dict(type="Pretrained", checkpoint=other))


def test_pretrained_of_another_family_fails_at_build_time(poolformer_ckpt):
    path, _ = poolformer_ckpt
    with pytest.raises(CheckpointError, match=r"(?s)does not fit agent_pvt_tiny.*another family"):
        ZooBackbone("agent_pvt_tiny", pretrained=path)


def test_focalnet_kernels_padded_for_downstream(tmp_path):
    torch.manual_seed(0)
    classifier = timm.create_model("focalnet_tiny_srf")  # focal kernels 3 / 5
    path = _save(classifier, tmp_path / "focalnet_tiny_srf.safetensors")
    backbone = ZooBackbone("focalnet_tiny_srf", pretrained=path, out_norm="LN2d",
                           model_kwargs=dict(focal_windows=(9, 9, 9, 9)))  # kernels 9 / 11
    key = "layers.1.blocks.0.modulation.focal_layers.1.0.weight"
    small, big = classifier.state_dict()[key], backbone.model.state_dict()[key]
    assert small.shape[-1] == 5 and big.shape[-1] == 11
    torch.testing.assert_close(big[..., 3:8, 3:8], small, rtol=0, atol=0)
    assert big.abs().sum() == small.abs().sum()  # zeros around the centre


def test_frozen_stages_and_norm_eval():
    backbone = ZooBackbone("poolformer_s12", frozen_stages=2, norm_eval=True, out_norm="BN")
    stages = backbone.parameter_stage()
    for name, param in backbone.model.named_parameters():
        assert param.requires_grad == (stages[name] >= 2), name
    assert stages["stem.conv.weight"] == -1
    backbone.train()
    assert not backbone.model.stem.training and not backbone.model.stages[1].training
    assert backbone.model.stages[2].training
    assert all(not norm.training for norm in backbone.out_norms)  # BatchNorm kept in eval by norm_eval
    with pytest.raises(ValueError, match="frozen_stages=5"):
        ZooBackbone("poolformer_s12", frozen_stages=5)


def test_runner_checkpoint_globals_are_narrow(tmp_path):
    """HistoryBuffer's pickled methods load through mmengine's reader (the zoo's, weights-only, with the Runner's
    globals); other getattr lookups stay refused."""
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner.checkpoint import _load_checkpoint

    buffer = HistoryBuffer()
    buffer.update(np.float64(1.5))
    torch.save({"message_hub": {"log_scalars": {"loss": buffer}}, "scalar": np.float32(2.0)}, tmp_path / "ok.pth")
    restored = _load_checkpoint(str(tmp_path / "ok.pth"), map_location="cpu")
    assert restored["message_hub"]["log_scalars"]["loss"].mean() == 1.5

    class Sneaky:
        def __reduce__(self):
            return getattr, (HistoryBuffer, "__init__")

    torch.save({"x": Sneaky()}, tmp_path / "sneaky.pth")
    with pytest.raises(CheckpointError, match=r"sneaky.pth: refused: .*getattr\(.*HistoryBuffer.*'__init__'\)"):
        glue.load_from_zoo_reader(str(tmp_path / "sneaky.pth"))


@pytest.mark.parametrize(("model_name", "model_kwargs", "expected"), [
    # BiFormer: downsample_layers.k sits before stage k (index 0 is the stem); extra_norms.k after it.
    ("biformer_small", dict(depth=(1, 1, 1, 1), extra_norms=True),
     {"downsample_layers.0.0.weight": -1, "downsample_layers.2.0.weight": 2, "extra_norms.0.weight": 0}),
    # PVT: patch_embed1 / pos_embed1 start stage 0 (names count from 1).
    ("agent_pvt_tiny", dict(depths=(1, 1, 1, 1)), {"patch_embed1.proj.weight": 0, "pos_embed4": 3}),
    # Swin: per-stage output norms norm0..norm3 follow their stage.
    ("agent_swin_tiny", dict(depths=(1, 1, 1, 1), out_norms=True), {"patch_embed.proj.weight": -1, "norm0.weight": 0,
                                                                      "norm3.weight": 3}),
])
def test_stage_assignment_per_family(model_name, model_kwargs, expected):
    stages = ZooBackbone(model_name, model_kwargs=model_kwargs).parameter_stage()
    assert {name: stages[name] for name in expected} == expected
    assert set(stages.values()) <= {-1, 0, 1, 2, 3}  # every parameter placed
