"""SDANet's selective dense attention: official parity, attention normalisation, FPN-compatible shapes, training."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mmdet")

from attnzoo.heads.xray.selective_attention import (  # noqa: E402
    SelectiveDenseAttention,
    convert_official_attention_state_dict,
    convert_official_sdanet_checkpoint,
)

LEVELS = ("level0", "level1", "level2", "level3", "level4")


@pytest.mark.parametrize("level", [0, 2, 4])
def test_matches_official_attfpn(parity, level):
    """Per-level dense attention + refinement reproduces the official selective_attention (float64, eval mode)."""
    case = parity(f"sdanet_selective_attention_l{level}")
    assert case.meta["official_kwargs"]["refine_level"] == level
    module = SelectiveDenseAttention(level).double().eval()
    module.load_state_dict(convert_official_attention_state_dict(case.state_dict), strict=True)
    with torch.no_grad():
        out = module([case.inputs[name].double() for name in LEVELS])
    torch.testing.assert_close(out, case.outputs["out"].double(), rtol=1e-5, atol=1e-6)


def test_official_checkpoint_keys_load_into_the_neck(parity):
    """Whole-detector conversion: official neck.selective_attention_{l}.* land in SDANetFPN and give its outputs."""
    from attnzoo.heads.xray import SDANetFPN

    neck = SDANetFPN(in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5).double().eval()
    official = {f"neck.{k}": v for k, v in neck.state_dict().items() if not k.startswith("selective_attentions.")}
    for level in range(5):
        source = parity(f"sdanet_selective_attention_l{level if level in (0, 2, 4) else 0}")
        official.update({f"neck.selective_attention_{level}.{k}": v for k, v in source.state_dict.items()})
    converted = convert_official_sdanet_checkpoint(official)
    neck.load_state_dict({k[len("neck."):]: v for k, v in converted.items()}, strict=True)
    case = parity("sdanet_selective_attention_l2")
    with torch.no_grad():
        out = neck.selective_attentions[2]([case.inputs[name].double() for name in LEVELS])
    torch.testing.assert_close(out, case.outputs["out"].double(), rtol=1e-5, atol=1e-6)
    # the bywang2018 layout keeps the modules at the detector's top level
    top_level = convert_official_sdanet_checkpoint({"selective_attention_3.refine.conv_mask.bias": torch.zeros(1)})
    assert list(top_level) == ["neck.selective_attentions.3.refinement.context_logits.bias"]


def test_unknown_official_key_is_an_error():
    with pytest.raises(KeyError, match="unexpected key"):
        convert_official_attention_state_dict({"channel_att.extra.weight": torch.zeros(1)})


def _pyramid(channels, sizes, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, h, w, generator=generator) for h, w in sizes]


@pytest.mark.parametrize("num_levels,channels", [(5, 32), (3, 16)])
def test_attention_weights_sum_to_one_over_levels(num_levels, channels):
    sizes = [(17, 23), (9, 12), (5, 6), (3, 3), (2, 2)][:num_levels]
    levels = _pyramid(channels, sizes)
    for target in range(num_levels):
        module = SelectiveDenseAttention(target, num_levels, channels, squeeze_channels=channels // 2,
                                         context_ratio=1 / 8).eval()
        gathered, channel_weights, spatial_weights = module.attention_weights(levels)
        height, width = sizes[target]
        assert gathered.shape == (2, num_levels, channels, height, width)
        assert channel_weights.shape == (2, num_levels, channels, 1, 1)
        assert spatial_weights.shape == (2, num_levels, 1, height, width)
        for weights in (channel_weights, spatial_weights):
            assert (weights > 0).all()
            torch.testing.assert_close(weights.sum(dim=1), torch.ones_like(weights.sum(dim=1)))


def test_gathering_pools_finer_and_interpolates_coarser_levels():
    from attnzoo.heads.xray.selective_attention import gather_levels

    levels = _pyramid(4, [(8, 8), (4, 4), (2, 2)], batch=1)
    gathered = gather_levels(levels, target_level=1)
    torch.testing.assert_close(gathered[:, 0], torch.nn.functional.max_pool2d(levels[0], 2))
    torch.testing.assert_close(gathered[:, 1], levels[1])
    torch.testing.assert_close(gathered[:, 2], levels[2].repeat_interleave(2, 2).repeat_interleave(2, 3))


def test_neck_output_shapes_match_fpn():
    from mmdet.models.necks import FPN

    from attnzoo.heads.xray import SDANetFPN

    in_channels = [16, 32, 64, 128]
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randn(2, c, 50 // 2**i + 1, 38 // 2**i + 1, generator=generator) for i, c in enumerate(in_channels)]
    kwargs = dict(in_channels=in_channels, out_channels=32, num_outs=5)
    fpn_shapes = [o.shape for o in FPN(**kwargs)(inputs)]
    neck = SDANetFPN(**kwargs, attention_norm_cfg=dict(type="GN", num_groups=4))
    assert [o.shape for o in neck(inputs)] == fpn_shapes
    assert len(neck.selective_attentions) == 5
    assert neck.selective_attentions[0].channel_attention.squeeze[0].out_channels == 16  # out_channels // 2


def test_batchnorm_attention_needs_two_images_in_training():
    module = SelectiveDenseAttention(0, num_levels=2, channels=8, squeeze_channels=4, context_ratio=1 / 4).train()
    with pytest.raises(ValueError, match="at least 2 images"):
        module(_pyramid(8, [(4, 4), (2, 2)], batch=1))


def _tiny_cascade_mask_rcnn():
    """Cascade Mask R-CNN (3 stages + mask head) with a ResNet-18 of base width 8 and a 32-channel SDANet neck."""
    from mmengine.config import Config

    config = Config.fromfile("configs/xray/_base_/cascade-mask-rcnn_r50_fpn_pidray.py")
    model = config.model
    model.backbone.update(depth=18, base_channels=8, frozen_stages=-1, norm_eval=False, init_cfg=None)
    # context_ratio 1/4: the official 1/16 of 32 channels would leave a 2-wide LayerNorm, whose gradient vanishes
    model.neck.update(type="SDANetFPN", in_channels=[8, 16, 32, 64], out_channels=32, context_ratio=1 / 4)
    model.rpn_head.update(in_channels=32, feat_channels=32)
    for extractor in (model.roi_head.bbox_roi_extractor, model.roi_head.mask_roi_extractor):
        extractor.out_channels = 32
    for head in model.roi_head.bbox_head:
        head.update(in_channels=32, fc_out_channels=64)
    model.roi_head.mask_head.update(in_channels=32, conv_out_channels=16, num_convs=2)
    # anchors crossing the border count, so every level of a 64 px image gets an RPN loss (and the neck a gradient)
    model.train_cfg.rpn.allowed_border = -1
    model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
    for stage in model.train_cfg.rcnn:
        stage.sampler.num = 64
    return model


def test_neck_trains_end_to_end_inside_cascade_mask_rcnn():
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmdet.utils import register_all_modules
    from mmengine.structures import InstanceData

    import attnzoo.heads.xray  # noqa: F401  (registers SDANetFPN)

    register_all_modules()
    torch.manual_seed(0)
    detector = MODELS.build(_tiny_cascade_mask_rcnn())
    detector.init_weights()
    detector.train()

    size = 96  # the coarsest of the five levels is then 2x2 (a 1x1 map leaves the context softmax nothing to learn)
    images, samples = [], []
    for index in range(2):  # two images: SDANet's BatchNorm on pooled features needs a batch
        images.append(torch.randint(0, 255, (3, size, size), dtype=torch.uint8))
        masks = torch.zeros(2, size, size, dtype=torch.bool)
        masks[0, 8:40, 10:60] = True
        masks[1, 45:90, 30:90] = True
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size), scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[10.0, 8.0, 60.0, 40.0], [30.0, 45.0, 90.0, 90.0]]),
            labels=torch.tensor([index, 11]),
            masks=BitmapMasks(masks.numpy(), size, size))
        samples.append(sample)

    data = detector.data_preprocessor({"inputs": images, "data_samples": samples}, True)
    losses = detector.loss(data["inputs"], data["data_samples"])
    for key in ("loss_rpn_cls", "s0.loss_cls", "s2.loss_bbox", "s2.loss_mask"):
        assert key in losses
    loss, _ = detector.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    for level, attention in enumerate(detector.neck.selective_attentions):
        for part in ("channel_attention", "spatial_attention", "refinement"):
            grads = [p.grad for p in getattr(attention, part).parameters()]
            assert all(g is not None and torch.isfinite(g).all() for g in grads), (level, part)
            assert sum(g.abs().sum() for g in grads) > 0, f"no gradient reached level {level}'s {part}"

    # and the step itself: the attention's parameters move
    output_conv = detector.neck.selective_attentions[0].refinement.transform[-1].weight
    before = output_conv.detach().clone()
    torch.optim.SGD(detector.parameters(), lr=0.01).step()
    assert not torch.equal(output_conv, before)
