"""TransNeXt: aggregated attention (a sliding window of neighbours plus a pooled global set, one softmax).

Paper: "TransNeXt: Robust Foveal Visual Perception for Vision Transformers" (Shi, CVPR 2024),
https://arxiv.org/abs/2311.17132. Official code: https://github.com/DaiShiResearch/TransNeXt
(``classification/transnext.py``, ``attention_native.py``). The whole architecture is the skeleton
``backbones/skeletons/transnext.py`` with its own attentions; this file registers the released ImageNet-1K models
(the same state-dict layout as MoH-ViT, ``backbones/moh_transnext.py``, without the head gates).
"""

from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model

from .moh_transnext import checkpoint_filter_fn
from .pretrained import PretrainedFromLoader, build_with_official_weights, official_weights
from .skeletons import transnext

__all__ = ["TransNeXt", "checkpoint_filter_fn"]


class TransNeXt(PretrainedFromLoader, transnext.TransNeXt):
    """The official TransNeXt (aggregated attention in stages with ``sr_ratio > 1``, full attention in the others)."""

    def __init__(self, **kwargs):
        super().__init__(transnext.standard_attention, **kwargs)


def _create(variant, pretrained=False, **kwargs):
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    # Every release was pre-trained at 224, so the relative coordinates stay scaled by 224 at any img_size: building at
    # 384 (or `zoo train --img-size 384`) is the official 384 fine-tune (pretrain_size 224), not a 384 pre-training.
    kwargs.setdefault("pretrain_size", 224)
    return build_with_official_weights(TransNeXt, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                       feature_cfg=dict(out_indices=out_indices, feature_cls="getter"), **kwargs)


def _cfg(hf_name, size=224, **kwargs):
    """Official checkpoint on the Hugging Face hub (classification/README.md "Model Zoo"), cached as
    ``<file>.pth``. Evaluation transform of the official ``datasets.build_transform``: below 384, resize the short
    side to size / 0.875 (bicubic) and centre-crop; at 384 and above, warp to size x size (crop_pct 1, 'squash')."""
    filename = hf_name.replace("-", "_") + ".pth"
    crop = dict(crop_pct=0.875) if size < 384 else dict(crop_pct=1.0, crop_mode="squash")
    return {
        **official_weights(f"https://huggingface.co/DaiShiResearch/{hf_name}/resolve/main/{filename}", filename),
        "num_classes": 1000, "input_size": (3, size, size), "pool_size": (size // 32, size // 32),
        "interpolation": "bicubic", "fixed_input_size": False, "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD, "first_conv": "patch_embed1.proj", "classifier": "head",
        "license": "apache-2.0", **crop, **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "transnext_micro.in1k": _cfg("transnext-micro-224-1k"),
    "transnext_tiny.in1k": _cfg("transnext-tiny-224-1k"),
    "transnext_small.in1k": _cfg("transnext-small-224-1k"),
    "transnext_small.in1k_384": _cfg("transnext-small-384-1k-ft-1k", 384),
    "transnext_base.in1k": _cfg("transnext-base-224-1k"),
    "transnext_base.in1k_384": _cfg("transnext-base-384-1k-ft-1k", 384),
})

# The official factories (classification/transnext.py). The 384 fine-tunes run at 384 with pretrain_size 224
# (configs/finetune/transnext_*_384_ft.py): here img_size (default 224) only sets pretrain_size, and the tables
# follow the input, so the same model serves both tags.
_COMMON = dict(window_size=(3, 3, 3, None), patch_size=4, mlp_ratios=(8, 8, 4, 4), qkv_bias=True,
               sr_ratios=(8, 4, 2, 1))


@register_model
def transnext_micro(pretrained=False, **kwargs):
    args = dict(_COMMON, embed_dims=(48, 96, 192, 384), num_heads=(2, 4, 8, 16), depths=(2, 2, 15, 2))
    return _create("transnext_micro", pretrained, **{**args, **kwargs})


@register_model
def transnext_tiny(pretrained=False, **kwargs):
    args = dict(_COMMON, embed_dims=(72, 144, 288, 576), num_heads=(3, 6, 12, 24), depths=(2, 2, 15, 2))
    return _create("transnext_tiny", pretrained, **{**args, **kwargs})


@register_model
def transnext_small(pretrained=False, **kwargs):
    args = dict(_COMMON, embed_dims=(72, 144, 288, 576), num_heads=(3, 6, 12, 24), depths=(5, 5, 22, 5))
    return _create("transnext_small", pretrained, **{**args, **kwargs})


@register_model
def transnext_base(pretrained=False, **kwargs):
    args = dict(_COMMON, embed_dims=(96, 192, 384, 768), num_heads=(4, 8, 16, 32), depths=(5, 5, 23, 5))
    return _create("transnext_base", pretrained, **{**args, **kwargs})
