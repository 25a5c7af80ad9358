"""PoolFormer v1 with the official classifier head, built on timm's MetaFormer (no re-implementation).

Paper: `MetaFormer Is Actually What You Need for Vision` - https://arxiv.org/abs/2111.11418
Official code: https://github.com/sail-sg/poolformer (models/poolformer.py)

timm builds PoolFormer v1 (``poolformer_s12`` ... ``poolformer_m48``) on its generic ``MetaFormer``, whose head pools
first and then normalises the pooled vector (``head.norm`` is a LayerNorm2d, eps 1e-6, on a 1x1 map). The official
model does it the other way round: ``PoolFormer.forward`` applies ``self.norm`` - GroupNorm with one group, eps 1e-5 -
to the whole final feature map and only then takes the spatial mean. Both subtract the same mean, but they divide by
different deviations (over all C*H*W values vs over the C pooled means), so an official checkpoint loaded into timm's
model gives different logits (0.24 max abs on tests/fixtures/poolformer_cls_224) although every stage output is
identical.

The ``poolformer_*_official`` variants here are timm's MetaFormer with the v1 arguments timm uses, plus two changes to
the head and nothing else: ``head.norm`` is timm's GroupNorm1 (one group, eps 1e-5, same ``weight``/``bias`` names) and
``forward_head`` normalises the map before pooling. Parameter names and shapes equal timm's ``poolformer_*`` so the
official sail-sg checkpoints (``network.*`` keys) load strictly through timm's own ``metaformer.checkpoint_filter_fn``
and give the official logits. PoolFormer v2 needs none of this: its official head (sail-sg/metaformer
metaformer_baselines.py, ``forward_features``) pools and then applies LayerNorm, which is what timm does.
"""

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import GroupNorm1, to_2tuple
from timm.models import generate_default_cfgs, register_model
from timm.models import metaformer as timm_metaformer
from timm.models._input import update_model_input_size
from torch import nn

from .pretrained import PretrainedFromLoader, build_with_official_weights, official_weights

__all__ = ["PoolFormerV1Official", "checkpoint_filter_fn"]


class PoolFormerV1Official(PretrainedFromLoader, timm_metaformer.MetaFormer):
    """timm's MetaFormer configured as PoolFormer v1, with the official head order: GroupNorm over the map, then pool.

    Everything but ``forward_head`` and the class of ``head.norm`` is inherited from timm, so features_only,
    forward_intermediates, prune_intermediate_layers and reset_classifier behave exactly as for timm's poolformer_*.

    ``img_size`` (not a timm MetaFormer argument) and ``set_input_size`` only record the nominal input size: a conv
    net with pooling token mixers has nothing that depends on it, and takes any size per call.
    """

    def __init__(
            self,
            depths: tuple = (2, 2, 6, 2),
            dims: tuple = (64, 128, 320, 512),
            layer_scale_init_values: float | None = 1e-5,
            img_size: int | tuple[int, int] = 224,
            **kwargs,
    ):
        size = _checked_size(img_size)  # checked before timm builds anything
        # The PoolFormer v1 arguments timm passes in metaformer.poolformer_s12 ... poolformer_m48 (checked against
        # timm's models by tests/backbones/test_poolformer.py), except output_norm.
        super().__init__(
            depths=depths,
            dims=dims,
            downsample_norm=None,
            mlp_act=nn.GELU,
            mlp_bias=True,
            norm_layers=GroupNorm1,
            layer_scale_init_values=layer_scale_init_values,
            res_scale_init_values=None,
            use_mlp_head=False,
            # Official head norm: nn.GroupNorm(1, C) with torch's default eps 1e-5 (sail-sg/poolformer
            # models/poolformer.py, class GroupNorm). GroupNorm1 has the same parameters (weight, bias) and eps.
            output_norm=GroupNorm1,
            **kwargs,
        )
        self.img_size = size

    @torch.jit.ignore
    def set_input_size(self, img_size: int | tuple[int, int] | None = None) -> None:
        """timm's ``set_input_size``: records ``img_size`` (None: unchanged); no weight depends on the size."""
        if img_size is not None:
            self.img_size = _checked_size(img_size)
            update_model_input_size(self, self.img_size)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # Quirk kept for checkpoint fidelity: the official v1 head normalises the whole (B, C, H, W) map with
        # GroupNorm(1 group) and pools afterwards; timm's MetaFormer.forward_head pools first.
        x = self.head.norm(x)
        x = self.head.global_pool(x)
        x = self.head.flatten(x)
        x = self.head.drop(x)
        return x if pre_logits else self.head.fc(x)


def _checked_size(img_size) -> tuple[int, int]:
    size = tuple(int(s) for s in to_2tuple(img_size))
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"PoolFormer: img_size must be a positive int or (height, width), got {img_size!r}")
    return size


class _TargetlessKey:
    """What ``_TolerantStateDict`` returns for a key the model does not have: matches no shape, reshapes to nothing."""

    shape = None

    @staticmethod
    def numel() -> int:
        return -1


class _TolerantStateDict(dict):
    def __missing__(self, key):
        return _TargetlessKey


class _StateDictView:
    """Stands in for the model inside timm's filter, which indexes ``model.state_dict()`` with every renamed key.

    timm's metaformer.checkpoint_filter_fn raises a bare KeyError on the first checkpoint key the model lacks. Keys
    the model lacks are passed through unchanged instead, so the loader can report every unexpected key by name.
    """

    def __init__(self, model: nn.Module):
        self._state = _TolerantStateDict(model.state_dict())

    def state_dict(self):
        return self._state


def checkpoint_filter_fn(state_dict: dict, model: nn.Module) -> dict:
    """Official sail-sg PoolFormer v1 checkpoints (``network.*`` keys) -> timm MetaFormer names, by timm's own filter.

    Also accepts checkpoints already in timm's layout (returned unchanged) and ``{"model": ...}`` wrappers.
    """
    if "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]
    return timm_metaformer.checkpoint_filter_fn(state_dict, _StateDictView(model))


def _create_poolformer_official(variant: str, pretrained: bool = False, **kwargs) -> PoolFormerV1Official:
    default_out_indices = tuple(range(len(kwargs.get("depths", (2, 2, 6, 2)))))
    out_indices = kwargs.pop("out_indices", default_out_indices)
    return build_with_official_weights(
        PoolFormerV1Official,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    )


def _cfg(**kwargs) -> dict:
    return {
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.9, "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "classifier": "head.fc", "first_conv": "stem.conv",
        "license": "apache-2.0",
        **kwargs,
    }


# Official release checkpoints and crop_pct (0.9 for S, 0.95 for M) from sail-sg/poolformer models/poolformer.py. Cached
# under names of their own (timm's poolformer_* cache timm's converted weights; backbones/pretrained.py).
_RELEASE = "https://github.com/sail-sg/poolformer/releases/download/v1.0"


def _release(size: str, **kwargs) -> dict:
    return _cfg(**official_weights(f"{_RELEASE}/poolformer_{size}.pth.tar", f"poolformer_{size}_official.sail_in1k.pth.tar"),
                **kwargs)


default_cfgs = generate_default_cfgs({
    "poolformer_s12_official.sail_in1k": _release("s12"),
    "poolformer_s24_official.sail_in1k": _release("s24"),
    "poolformer_s36_official.sail_in1k": _release("s36"),
    "poolformer_m36_official.sail_in1k": _release("m36", crop_pct=0.95),
    "poolformer_m48_official.sail_in1k": _release("m48", crop_pct=0.95),
})


@register_model
def poolformer_s12_official(pretrained: bool = False, **kwargs) -> PoolFormerV1Official:
    model_args = dict(depths=(2, 2, 6, 2), dims=(64, 128, 320, 512), layer_scale_init_values=1e-5)
    return _create_poolformer_official("poolformer_s12_official", pretrained, **dict(model_args, **kwargs))


@register_model
def poolformer_s24_official(pretrained: bool = False, **kwargs) -> PoolFormerV1Official:
    model_args = dict(depths=(4, 4, 12, 4), dims=(64, 128, 320, 512), layer_scale_init_values=1e-5)
    return _create_poolformer_official("poolformer_s24_official", pretrained, **dict(model_args, **kwargs))


@register_model
def poolformer_s36_official(pretrained: bool = False, **kwargs) -> PoolFormerV1Official:
    model_args = dict(depths=(6, 6, 18, 6), dims=(64, 128, 320, 512), layer_scale_init_values=1e-6)
    return _create_poolformer_official("poolformer_s36_official", pretrained, **dict(model_args, **kwargs))


@register_model
def poolformer_m36_official(pretrained: bool = False, **kwargs) -> PoolFormerV1Official:
    model_args = dict(depths=(6, 6, 18, 6), dims=(96, 192, 384, 768), layer_scale_init_values=1e-6)
    return _create_poolformer_official("poolformer_m36_official", pretrained, **dict(model_args, **kwargs))


@register_model
def poolformer_m48_official(pretrained: bool = False, **kwargs) -> PoolFormerV1Official:
    model_args = dict(depths=(8, 8, 24, 8), dims=(96, 192, 384, 768), layer_scale_init_values=1e-6)
    return _create_poolformer_official("poolformer_m48_official", pretrained, **dict(model_args, **kwargs))
