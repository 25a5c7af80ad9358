"""BiFormer: Vision Transformer with Bi-Level Routing Attention.

Paper: `BiFormer: Vision Transformer with Bi-Level Routing Attention` (Zhu et al., CVPR 2023)
    - https://arxiv.org/abs/2303.08810
Official code: https://github.com/rayleizhu/BiFormer (models/biformer.py, models/biformer_stl.py,
models/biformer_stl_nchw.py, models/_common.py, ops/bra_legacy.py, ops/bra_nchw.py; MIT license).

A faithful re-implementation: parameter names and shapes equal the official ones, so the released checkpoints
(``{'model': state_dict}``) load with ``strict=True`` and give the official outputs (checked against fixtures made by
the official code, tests/backbones/test_biformer.py). The attention itself is :mod:`attnzoo.kernels.bra` (plain-torch
reference on the CPU, Triton on CUDA); this file only projects, partitions into regions and assembles.

Variants (all ImageNet-1k, 224x224):

* ``biformer_tiny`` / ``biformer_small`` / ``biformer_base``: overlapping conv stem, 3x3 depthwise positional conv
  before each attention, legacy BRA with ``n_win=7`` and ``topks=(1, 4, 16, -2)``; stage 4 is plain global attention
  with LePE (``topk=-2``).
* ``biformer_stl``: the Swin-Tiny layout of the paper's ablation (patchify stem, norm+conv merging, legacy BRA).
* ``biformer_stl_nchw``: the same layout with the refactored channels-first BRA (``nchwBRA``); stage 4 is global
  attention with LePE on the values (``topk=-1``).

Options for dense prediction, as the official detection/segmentation backbone (``BiFormer_mm`` in
object_detection/models_mm/biformer_mm.py) uses them, and which the OpenMMLab wrapper passes through
``timm.create_model(..., features_only=True, **kwargs)``:

* ``n_win``: regions per side (7 for 224 classification; 16 for COCO detection, 8 for ADE20K segmentation).
* ``auto_pad`` (default True, so any input size works as with any timm model): zero-pad each BRA input to a multiple
  of ``n_win`` as the official detection backbone does (see the quirk below). A map that is already a multiple is not
  touched, so 224x224 with ``n_win=7`` gives the official classification outputs. ``auto_pad=False`` is the official
  classification model's behaviour: such inputs are refused with an error naming the stage and the fix.
* ``img_size`` / ``set_input_size(img_size=...)``: the nominal input size (recorded as timm's model trait). Nothing
  in the weights depends on the size (no position embedding; ``n_win`` counts regions whatever their size, and the
  official code has no size argument), so a 224 checkpoint loads unchanged at any size. ``img_size`` does not change
  ``n_win``: the official dense-prediction configs set it by hand (8 at 512 for ADE20K, 16 with auto_pad for COCO).
  With ``auto_pad=False`` a size whose routed stage maps are not multiples of ``n_win`` is refused, naming the sizes
  that work.
* ``extra_norms``: one LayerNorm2d (eps 1e-6) per stage applied to every returned feature map, under the official key
  names ``extra_norms.{i}.weight/bias``. Official downstream checkpoints (``backbone.*``) then load strictly; an
  ImageNet checkpoint leaves them at their initial values, as the official code does (it loads with ``strict=False``).

Quirks of the official code kept on purpose (checkpoint fidelity), each marked where it lives:

* legacy BRA scales logits by ``qk_dim ** -0.5`` (the whole q/k width), not ``head_dim ** -0.5``;
* ``auto_pad`` pads the NHWC map with zeros BEFORE the qkv projection and masks nothing: padded tokens (whose q/k/v are
  the projection biases) join the region means used for routing, the attention and the LePE conv; the output is cropped;
* the last stage with ``topk=-2`` is plain global attention with 8 heads, no qkv bias, ``head_dim ** -0.5`` scale and
  LePE on the block input;
* the positional depthwise conv before attention has ``padding=1`` whatever its kernel size;
* ``nchwBRA`` (biformer_stl_nchw) pads after the projection, routes on pad-excluded region means, scales by
  ``dim ** -0.5``, and lets padded (zero) keys take part in the softmax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, LayerNorm2d, to_2tuple, trunc_normal_
from timm.models import (
    checkpoint_seq,
    generate_default_cfgs,
    register_model,
    register_notrace_function,
)
from timm.models._features import feature_take_indices
from timm.models._input import update_model_input_size
from torch import nn

from attnzoo.kernels.bra import bra_attention, region_routing

from .pretrained import PretrainedFromLoader, build_with_official_weights, official_weights
from .skeletons.heads import ClassifierHead

# torch.fx (timm's FX feature extraction and tests) cannot trace Python branches on tensor shapes. The kernels' public
# ops validate shapes and dispatch on the device, so FX keeps them as opaque calls; so are the few functions below that
# branch on a map's size (marked @register_notrace_function where they are defined; FX only wraps functions whose
# module-level names do not start with an underscore, hence their public-looking names).
register_notrace_function(bra_attention)
register_notrace_function(region_routing)

__all__ = [
    "BiFormer",
    "BiFormerSTL",
    "BiLevelRoutingAttention",
    "NchwBiLevelRoutingAttention",
    "checkpoint_filter_fn",
]


# ----------------------------------------------------------------------------------------------------------------------
# Region partition helpers
# ----------------------------------------------------------------------------------------------------------------------


@register_notrace_function
def nhwc_to_regions(x: torch.Tensor, regions_h: int, regions_w: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, regions_h*regions_w, region tokens, C); regions and their tokens in row-major order."""
    batch, height, width, channels = x.shape
    region_h, region_w = height // regions_h, width // regions_w
    x = x.view(batch, regions_h, region_h, regions_w, region_w, channels).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, regions_h * regions_w, region_h * region_w, channels)


@register_notrace_function
def regions_to_nhwc(x: torch.Tensor, regions_h: int, regions_w: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`nhwc_to_regions`."""
    batch, _, _, channels = x.shape
    region_h, region_w = height // regions_h, width // regions_w
    x = x.view(batch, regions_h, regions_w, region_h, region_w, channels).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, height, width, channels)


def _partition_error(height: int, width: int, n_win: int, where: str) -> ValueError:
    return ValueError(
        f"BiFormer: {where} is {height}x{width}, which cannot be split into n_win x n_win = {n_win}x{n_win} regions "
        f"({height} or {width} is not a multiple of n_win={n_win}) and the model was built with auto_pad=False. "
        f"Build it with auto_pad=True (the default; e.g. timm.create_model(name, auto_pad=True)) to zero-pad each "
        f"attention input to a multiple of n_win, or feed an input whose stage maps are multiples of n_win "
        f"(224x224 for n_win=7)."
    )


@register_notrace_function
def pad_to_region_grid(x: torch.Tensor, n_win: int, auto_pad: bool) -> torch.Tensor:
    """Zero-pads an NHWC map at the bottom/right to multiples of ``n_win`` (the official ``auto_pad``).

    Quirk kept for fidelity: the padding happens BEFORE the qkv projection and nothing is masked, so padded tokens
    (whose q/k/v are the projection biases) join the routing means, the attention and the LePE conv. A map that is
    already a multiple of ``n_win`` (every stage of a 224x224 input with n_win=7) is returned as is.
    """
    _, height, width, _ = x.shape
    pad_bottom = (n_win - height % n_win) % n_win
    pad_right = (n_win - width % n_win) % n_win
    if not (pad_bottom or pad_right):
        return x
    if not auto_pad:
        raise _partition_error(height, width, n_win, "the attention input")
    return F.pad(x, (0, 0, 0, pad_right, 0, pad_bottom))


@register_notrace_function
def crop_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Crops an NHWC map padded by :func:`pad_to_region_grid` back to the size of ``like``."""
    height, width = like.shape[1:3]
    if x.shape[1:3] == like.shape[1:3]:
        return x
    return x[:, :height, :width, :].contiguous()


# ----------------------------------------------------------------------------------------------------------------------
# Attention modules
# ----------------------------------------------------------------------------------------------------------------------


class QKVLinear(nn.Module):
    """One linear for q (qk_dim), k (qk_dim) and v (dim); official key ``qkv.qkv``."""

    def __init__(self, dim: int, qk_dim: int, bias: bool = True):
        super().__init__()
        self.dim = dim
        self.qk_dim = qk_dim
        self.qkv = nn.Linear(dim, qk_dim + qk_dim + dim, bias=bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.qkv(x).split([self.qk_dim, self.qk_dim, self.dim], dim=-1)


class RegionRouter(nn.Module):
    """Region-to-region routing: top-k key regions per query region from region-mean affinity.

    ``emb`` is the optional routing linear of the official ``TopkRouting`` (``param_routing``; key ``router.emb``),
    applied to the region means. The routing is a hard, non-differentiable top-k in every released model.
    """

    def __init__(self, qk_dim: int, param_routing: bool = False):
        super().__init__()
        self.emb = nn.Linear(qk_dim, qk_dim) if param_routing else nn.Identity()

    def forward(self, q_regions: torch.Tensor, k_regions: torch.Tensor, topk: int, scale: float) -> torch.Tensor:
        if isinstance(self.emb, nn.Identity):
            return region_routing(q_regions, k_regions, topk, scale)
        # emb acts on the region means: pass them as one-token regions (the mean of one token is itself)
        query_mean = self.emb(q_regions.detach().mean(dim=2, keepdim=True))
        key_mean = self.emb(k_regions.detach().mean(dim=2, keepdim=True))
        return region_routing(query_mean, key_mean, topk, scale)


class BiLevelRoutingAttention(nn.Module):
    """Legacy bi-level routing attention (official ops/bra_legacy.py), NHWC in and out.

    The map is split into ``n_win x n_win`` regions; each query region attends to all tokens of its ``topk`` most
    related key regions (region-mean affinity, one routing for all heads), plus a depthwise-conv LePE on the values.
    Argument names are the official ones; only what the released models use is supported (``kv_downsample_mode``
    'identity', hard routing).
    """

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            n_win: int = 7,
            qk_dim: int | None = None,
            qk_scale: float | None = None,
            kv_per_win: int = 4,
            kv_downsample_mode: str = "identity",
            topk: int = 4,
            param_attention: str = "qkvo",
            param_routing: bool = False,
            diff_routing: bool = False,
            soft_routing: bool = False,
            side_dwconv: int = 3,
            auto_pad: bool = False,
    ):
        super().__init__()
        self.dim = dim
        self.qk_dim = qk_dim or dim
        self.num_heads = num_heads
        self.n_win = n_win
        self.topk = topk
        self.auto_pad = auto_pad
        if self.qk_dim % num_heads or dim % num_heads:
            raise ValueError(f"qk_dim ({self.qk_dim}) and dim ({dim}) must be divisible by num_heads ({num_heads})")
        if topk < 1:
            raise ValueError(f"BiLevelRoutingAttention needs topk >= 1, got {topk}")
        # kv_per_win only matters for the pooled kv modes, which no released model uses
        if kv_downsample_mode != "identity":
            raise NotImplementedError(
                f"kv_downsample_mode={kv_downsample_mode!r} is not supported; every released BiFormer uses 'identity'"
            )
        if soft_routing or diff_routing:
            raise NotImplementedError(
                "soft_routing / diff_routing are not supported: no released BiFormer uses them "
                "(the official code raises for diff_routing without soft_routing)"
            )
        # Quirk kept for checkpoint fidelity: the legacy scale is qk_dim ** -0.5, not head_dim ** -0.5.
        self.scale = qk_scale or self.qk_dim ** -0.5

        self.lepe = (
            nn.Conv2d(dim, dim, kernel_size=side_dwconv, stride=1, padding=side_dwconv // 2, groups=dim)
            if side_dwconv > 0 else None
        )
        self.router = RegionRouter(self.qk_dim, param_routing=param_routing)
        if param_attention == "qkvo":
            self.qkv = QKVLinear(dim, self.qk_dim)
            self.wo = nn.Linear(dim, dim)
        elif param_attention == "qkv":
            self.qkv = QKVLinear(dim, self.qk_dim)
            self.wo = nn.Identity()
        else:
            raise ValueError(f"param_attention must be 'qkvo' or 'qkv', got {param_attention!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = x
        x = pad_to_region_grid(x, self.n_win, self.auto_pad)
        height, width = x.shape[1:3]

        q, k, v = self.qkv(x)
        if self.lepe is not None:
            lepe = self.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        q_regions = nhwc_to_regions(q, self.n_win, self.n_win)
        k_regions = nhwc_to_regions(k, self.n_win, self.n_win)
        v_regions = nhwc_to_regions(v, self.n_win, self.n_win)

        r_idx = self.router(q_regions, k_regions, self.topk, self.scale)
        out = bra_attention(q_regions, k_regions, v_regions, r_idx, self.num_heads, self.scale)
        out = regions_to_nhwc(out, self.n_win, self.n_win, height, width)
        if self.lepe is not None:
            out = out + lepe
        out = self.wo(out)
        return crop_to(out, x_in)


class AttentionLePE(nn.Module):
    """Global multi-head attention plus LePE on the block input (official models/_common.py), NHWC in and out.

    This is the last stage of biformer_tiny/small/base/stl (``topk=-2``): 8 heads whatever the width, no qkv bias and
    the usual ``head_dim ** -0.5`` scale. With ``side_dwconv=0`` it is the official plain ``Attention`` (``topk=-1``).
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_scale: float | None = None,
                 side_dwconv: int = 5):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.lepe = (
            nn.Conv2d(dim, dim, kernel_size=side_dwconv, stride=1, padding=side_dwconv // 2, groups=dim)
            if side_dwconv > 0 else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        tokens = x.reshape(batch, height * width, channels)
        qkv = self.qkv(tokens).reshape(batch, height * width, 3, self.num_heads, channels // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, N, head_dim) each
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = out.transpose(1, 2).reshape(batch, height * width, channels)
        if self.lepe is not None:
            out = out + self.lepe(x.permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
        out = self.proj(out)
        return out.reshape(batch, height, width, channels)


class NchwBiLevelRoutingAttention(nn.Module):
    """The refactored BRA of biformer_stl_nchw (official ops/bra_nchw.py ``nchwBRA``), NCHW in and out.

    Region size is ``(H // n_win, W // n_win)``; maps not divisible by it are handled as the official code does:
    q/k/v are zero-padded AFTER the projection, region means for the routing exclude the padding
    (avg_pool2d with ceil_mode and count_include_pad=False), and padded keys are not masked (zero logits, zero values).
    Maps smaller than ``n_win`` (which the official code cannot run) are handled as :func:`nchw_routed_attention` says.
    """

    def __init__(self, dim: int, num_heads: int = 8, n_win: int = 7, qk_scale: float | None = None, topk: int = 4,
                 side_dwconv: int = 3):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if topk < 1:
            raise ValueError(f"NchwBiLevelRoutingAttention needs topk >= 1, got {topk}")
        self.dim = dim
        self.num_heads = num_heads
        self.n_win = n_win
        self.topk = topk
        # Quirk kept for checkpoint fidelity: dim ** -0.5 (the official note: "to be consistent with old models")
        self.scale = qk_scale or dim ** -0.5
        self.lepe = (
            nn.Conv2d(dim, dim, kernel_size=side_dwconv, stride=1, padding=side_dwconv // 2, groups=dim)
            if side_dwconv > 0 else None
        )
        self.qkv_linear = nn.Conv2d(dim, 3 * dim, kernel_size=1)
        self.output_linear = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_linear(x).chunk(3, dim=1)
        out = nchw_routed_attention(q, k, v, self.n_win, self.topk, self.num_heads, self.scale)
        if self.lepe is not None:
            out = out + self.lepe(v)
        return self.output_linear(out)


@register_notrace_function
def nchw_routed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_win: int, topk: int, num_heads: int,
                           scale: float) -> torch.Tensor:
    """nchwBRA's routing and attention on projected (B, C, H, W) q/k/v; returns the (B, C, H, W) attention output.

    Region size is ``(H // n_win, W // n_win)`` as in the official code. Beyond it (the official code fails there):
    a side shorter than ``n_win`` gets 1-token regions, and a map with fewer regions than ``topk`` routes every query
    region to all of them (global attention), so any input size runs; neither happens at the released 224x224.
    """
    height, width = q.shape[-2:]
    region_size = (max(1, height // n_win), max(1, width // n_win))

    # Routing on region means that exclude padding; the official code routes on unscaled q_r @ k_r (scale 1)
    query_mean = F.avg_pool2d(q.detach(), region_size, ceil_mode=True, count_include_pad=False)
    key_mean = F.avg_pool2d(k.detach(), region_size, ceil_mode=True, count_include_pad=False)
    regions_h, regions_w = query_mean.shape[-2:]
    r_idx = region_routing(
        query_mean.flatten(2).transpose(1, 2).unsqueeze(2),  # one-token regions: their mean is the region mean
        key_mean.flatten(2).transpose(1, 2).unsqueeze(2),
        min(topk, regions_h * regions_w),
        1.0,
    )

    # Quirk kept for fidelity: zero-pad q/k/v after the projection; padded keys are not masked
    pad_bottom = regions_h * region_size[0] - height
    pad_right = regions_w * region_size[1] - width
    q_pad, k_pad, v_pad = (F.pad(t, (0, pad_right, 0, pad_bottom)) for t in (q, k, v))
    q_regions, k_regions, v_regions = (
        nhwc_to_regions(t.permute(0, 2, 3, 1), regions_h, regions_w) for t in (q_pad, k_pad, v_pad)
    )
    out = bra_attention(q_regions, k_regions, v_regions, r_idx, num_heads, scale)
    out = regions_to_nhwc(out, regions_h, regions_w, height + pad_bottom, width + pad_right)
    return out[:, :height, :width, :].permute(0, 3, 1, 2)


class NchwAttentionLePE(nn.Module):
    """Global attention with LePE on the values, NCHW (official models/_common.py ``nchwAttentionLePE``).

    The last stage of biformer_stl_nchw (``topk=-1``): 8 heads, 1x1-conv projections, no qkv bias.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_scale: float | None = None,
                 side_dwconv: int = 5):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=qkv_bias)
        self.proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.lepe = (
            nn.Conv2d(dim, dim, kernel_size=side_dwconv, stride=1, padding=side_dwconv // 2, groups=dim)
            if side_dwconv > 0 else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=1)

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, heads, HW, head_dim), head-major channels
            return t.reshape(batch, self.num_heads, self.head_dim, height * width).transpose(-1, -2)

        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), scale=self.scale)
        out = out.transpose(-1, -2).reshape(batch, channels, height, width)
        if self.lepe is not None:
            out = out + self.lepe(v)
        return self.proj(out)


# ----------------------------------------------------------------------------------------------------------------------
# Blocks and stages
# ----------------------------------------------------------------------------------------------------------------------


class DWConv(nn.Module):
    """3x3 depthwise conv inside the MLP (``mlp_dwconv``), NHWC in and out; official key ``mlp.1.dwconv``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _legacy_attention(dim: int, topk: int, num_heads: int, n_win: int, qk_dim: int | None, qk_scale: float | None,
                      side_dwconv: int, auto_pad: bool, **bra_kwargs) -> nn.Module:
    """The attention of a legacy (NHWC) block for the official ``topk`` code: >0 BRA, -1 Attention, -2 AttentionLePE."""
    if topk > 0:
        return BiLevelRoutingAttention(
            dim=dim, num_heads=num_heads, n_win=n_win, qk_dim=qk_dim, qk_scale=qk_scale, topk=topk,
            side_dwconv=side_dwconv, auto_pad=auto_pad, **bra_kwargs,
        )
    if topk == -1:
        return AttentionLePE(dim, side_dwconv=0)  # official Attention: 8 heads, no LePE
    if topk == -2:
        return AttentionLePE(dim, side_dwconv=side_dwconv)  # official AttentionLePE: 8 heads
    raise ValueError(
        f"topk={topk} is not supported: use topk > 0 (routing), -1 (global attention) or -2 (global attention + LePE); "
        f"topk=0 (the official conv pseudo-attention ablation) has no released checkpoint"
    )


class BiFormerBlock(nn.Module):
    """Block of biformer_tiny/small/base, NCHW in and out (official models/biformer.py ``Block``).

    depthwise positional conv -> (pre-norm) attention -> (pre-norm) MLP, with optional layer scale and post-norm.
    """

    def __init__(
            self,
            dim: int,
            drop_path: float = 0.0,
            layer_scale_init_value: float = -1,
            num_heads: int = 8,
            n_win: int = 7,
            qk_dim: int | None = None,
            qk_scale: float | None = None,
            kv_per_win: int = 4,
            kv_downsample_mode: str = "identity",
            topk: int = 4,
            param_attention: str = "qkvo",
            param_routing: bool = False,
            diff_routing: bool = False,
            soft_routing: bool = False,
            mlp_ratio: float = 4,
            mlp_dwconv: bool = False,
            side_dwconv: int = 5,
            before_attn_dwconv: int = 3,
            pre_norm: bool = True,
            auto_pad: bool = False,
    ):
        super().__init__()
        qk_dim = qk_dim or dim
        # Quirk kept for checkpoint fidelity: padding=1 whatever the kernel size (as the official code)
        self.pos_embed = (
            nn.Conv2d(dim, dim, kernel_size=before_attn_dwconv, padding=1, groups=dim) if before_attn_dwconv > 0
            else None
        )
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _legacy_attention(
            dim, topk, num_heads, n_win, qk_dim, qk_scale, side_dwconv, auto_pad,
            kv_per_win=kv_per_win, kv_downsample_mode=kv_downsample_mode, param_attention=param_attention,
            param_routing=param_routing, diff_routing=diff_routing, soft_routing=soft_routing,
        )
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(mlp_ratio * dim)
        # index layout (0 linear, 1 dwconv/identity, 2 act, 3 linear) is the official key layout
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), DWConv(hidden) if mlp_dwconv else nn.Identity(), nn.GELU(), nn.Linear(hidden, dim)
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        if layer_scale_init_value > 0:
            self.gamma1 = nn.Parameter(layer_scale_init_value * torch.ones(dim))
            self.gamma2 = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        else:
            self.gamma1 = self.gamma2 = None
        self.pre_norm = pre_norm

    def _scaled(self, gamma: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        return x if gamma is None else gamma * x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pos_embed is not None:
            x = x + self.pos_embed(x)
        x = x.permute(0, 2, 3, 1)
        if self.pre_norm:
            x = x + self.drop_path(self._scaled(self.gamma1, self.attn(self.norm1(x))))
            x = x + self.drop_path(self._scaled(self.gamma2, self.mlp(self.norm2(x))))
        else:  # post-norm, as the official option
            x = self.norm1(x + self.drop_path(self._scaled(self.gamma1, self.attn(x))))
            x = self.norm2(x + self.drop_path(self._scaled(self.gamma2, self.mlp(x))))
        return x.permute(0, 3, 1, 2)


class StlBlock(nn.Module):
    """Block of biformer_stl, NHWC in and out (official models/biformer_stl.py ``BiFormerBlock``)."""

    def __init__(self, dim: int, drop_path: float = 0.0, num_heads: int = 8, n_win: int = 7,
                 qk_scale: float | None = None, topk: int = 4, mlp_ratio: float = 4, side_dwconv: int = 5,
                 auto_pad: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _legacy_attention(dim, topk, num_heads, n_win, dim, qk_scale, side_dwconv, auto_pad)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(mlp_ratio * dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class NchwStlBlock(nn.Module):
    """Block of biformer_stl_nchw, NCHW in and out (official models/biformer_stl_nchw.py ``BiFormerBlock``)."""

    def __init__(self, dim: int, drop_path: float = 0.0, num_heads: int = 8, n_win: int = 7,
                 qk_scale: float | None = None, topk: int = 4, mlp_ratio: float = 4, side_dwconv: int = 5):
        super().__init__()
        self.norm1 = LayerNorm2d(dim)  # eps 1e-6, timm's LayerNorm2d as the official code
        if topk > 0:
            self.attn = NchwBiLevelRoutingAttention(dim, num_heads=num_heads, n_win=n_win, qk_scale=qk_scale,
                                                    topk=topk, side_dwconv=side_dwconv)
        elif topk == -1:
            self.attn = NchwAttentionLePE(dim, side_dwconv=side_dwconv)  # 8 heads, as the official code
        else:
            raise ValueError(f"biformer_stl_nchw blocks need topk > 0 or topk == -1, got {topk}")
        self.norm2 = LayerNorm2d(dim)
        hidden = int(mlp_ratio * dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, kernel_size=1), nn.GELU(), nn.Conv2d(hidden, dim, kernel_size=1))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class StlStage(nn.Module):
    """A stage of the STL layout, NCHW in and out; official key layout ``stages.{i}.blocks.{j}``."""

    def __init__(self, blocks: Sequence[nn.Module], channels_last: bool):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.channels_last = channels_last  # legacy STL blocks work on NHWC
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.permute(0, 2, 3, 1)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            for block in self.blocks:
                x = block(x)
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        return x


# ----------------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------------


def _init_weights(module: nn.Module) -> None:
    """Official init: truncated-normal linears (std .02, zero bias), unit LayerNorms; convs keep torch defaults."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.constant_(module.bias, 0)
    elif isinstance(module, nn.LayerNorm):
        nn.init.constant_(module.bias, 0)
        nn.init.constant_(module.weight, 1.0)


def _stage_sizes(stem_kind: str, height: int, width: int) -> list[tuple[int, int]]:
    """Map sizes after each of the four downsampling layers."""
    sizes = []
    if stem_kind == "overlap":  # 3x3 stride-2 pad-1 convs (two in the stem): ceil(size / 2) each
        for i in range(4):
            for _ in range(2 if i == 0 else 1):
                height, width = (height + 1) // 2, (width + 1) // 2
            sizes.append((height, width))
    else:  # 4x4/4 patchify, then 2x2/2 merges (floor)
        sizes.append((height // 4, width // 4))
        for _ in range(3):
            sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    return sizes


@register_notrace_function
def checked_image_batch(x: torch.Tensor, in_chans: int, stem_kind: str,
                         partitioned_stages: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """Returns ``x`` when it is an NCHW batch the model can run, else raises naming the problem and the fix.

    ``partitioned_stages``: (stage index, n_win) of the stages that need maps divisible by n_win (auto_pad=False).
    Returning ``x`` keeps the check in FX graphs (an opaque call on the input) instead of it being traced away.
    """
    if x.dim() != 4:
        raise ValueError(f"BiFormer expects an NCHW image batch (4 dims), got shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(
            f"BiFormer was built for {in_chans}-channel input but got {x.shape[1]} channels "
            f"(shape {tuple(x.shape)}). Repeat a grayscale image to 3 channels (x.expand(-1, 3, -1, -1)) or build "
            f"the model with in_chans={x.shape[1]} (timm adapts the pretrained stem)."
        )
    height, width = (int(size) for size in x.shape[-2:])
    sizes = _stage_sizes(stem_kind, height, width)
    for stage, n_win in partitioned_stages:
        stage_h, stage_w = sizes[stage]
        if stage_h % n_win or stage_w % n_win:
            raise _partition_error(stage_h, stage_w, n_win, f"the stage-{stage + 1} map of a {height}x{width} input")
    return x


def _side_fits(side: int, stem_kind: str, partitioned_stages: tuple[tuple[int, int], ...]) -> bool:
    sizes = _stage_sizes(stem_kind, side, side)
    return sizes[-1][0] > 0 and all(sizes[stage][0] % n_win == 0 for stage, n_win in partitioned_stages)


def _fitting_sides(stem_kind: str, partitioned_stages: tuple[tuple[int, int], ...], up_to: int) -> str:
    """The image sides in 1..up_to whose routed stage maps are multiples of n_win, as ranges ('109-112, 221-224')."""
    runs: list[list[int]] = []
    for side in range(1, up_to + 1):
        if _side_fits(side, stem_kind, partitioned_stages):
            if runs and runs[-1][1] == side - 1:
                runs[-1][1] = side
            else:
                runs.append([side, side])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)


class _BiFormerBase(PretrainedFromLoader, ClassifierHead, nn.Module):
    """What both layouts share: ``downsample_layers[i]`` then ``stages[i]`` for i in 0..3, a BatchNorm2d ``norm``,
    average pooling and a linear ``head``, plus the timm feature API."""

    global_pools = ("avg", "")  # reset_classifier's choices (and the constructor's)

    downsample_layers: nn.ModuleList
    stages: nn.ModuleList

    def _init_head_and_features(self, embed_dim: Sequence[int], num_classes: int, in_chans: int, global_pool: str,
                                drop_rate: float, norm_layer: Callable[[int], nn.Module], extra_norms: bool,
                                use_checkpoint_stages: Sequence[int]) -> None:
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.embed_dim = list(embed_dim)
        self.num_features = self.head_hidden_size = embed_dim[-1]
        self.feature_info = [
            dict(num_chs=embed_dim[i], reduction=4 * 2 ** i, module=f"stages.{i}") for i in range(len(embed_dim))
        ]
        # per-stage output norms of the official dense-prediction backbone (models_mm/biformer_mm.py)
        self.extra_norms = nn.ModuleList([LayerNorm2d(c) for c in embed_dim]) if extra_norms else None
        self.norm = norm_layer(embed_dim[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.grad_checkpointing = False
        self.checkpoint_stages = set(use_checkpoint_stages)  # the official per-stage activation checkpointing
        for index in self.checkpoint_stages:
            if isinstance(self.stages[index], StlStage):
                self.stages[index].grad_checkpointing = True

    def _check_img_size(self, img_size) -> tuple[int, int]:
        """``img_size`` as (H, W), or a ValueError naming the sides that work when the model cannot take it."""
        size = tuple(int(s) for s in to_2tuple(img_size))
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"BiFormer: img_size must be a positive int or (height, width), got {img_size!r}")
        stages = self._partitioned_stages()
        bad = [side for side in size if not _side_fits(side, self.stem_kind, stages)]
        if bad:
            n_wins = "/".join(str(n) for n in sorted({n for _, n in stages}))
            raise ValueError(
                f"BiFormer: img_size {size} gives routed stage maps that are not multiples of n_win={n_wins}, which a "
                f"model built with auto_pad=False cannot split into regions; it takes image sides "
                f"{_fitting_sides(self.stem_kind, stages, 4 * 224)}, ... Pass one of those, or build with "
                f"auto_pad=True (the default) to take any size."
            )
        return size

    @torch.jit.ignore
    def set_input_size(self, img_size: int | tuple[int, int] | None = None) -> None:
        """timm's ``set_input_size``: the model's nominal input size becomes ``img_size`` (None: unchanged).

        Nothing in BiFormer's weights or buffers depends on the size, so only the size is recorded (timm's
        ``update_model_input_size``); a size the model cannot take (auto_pad=False) raises as the constructor does.
        """
        if img_size is None:
            return
        self.img_size = self._check_img_size(img_size)
        update_model_input_size(self, self.img_size)

    # -- timm API --------------------------------------------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^downsample_layers\.0",
            blocks=r"^stages\.(\d+)" if coarse else [
                (r"^downsample_layers\.(\d+)", (0,)),
                (r"^stages\.(\d+)\.(?:blocks\.)?(\d+)", None),
                (r"^norm", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            if isinstance(stage, StlStage):
                stage.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int, global_pool: str | None = None, **kwargs) -> None:
        super().reset_classifier(num_classes, global_pool)  # other keyword arguments accepted and ignored

    # -- input checks ----------------------------------------------------------------------------------------------

    stem_kind: str  # 'overlap' (two 3x3/2 convs, then 3x3/2 merges) or 'patchify' (4x4/4, then 2x2/2 merges)

    def _partitioned_stages(self) -> tuple[tuple[int, int], ...]:
        """(stage index, n_win) of stages whose attention needs maps divisible by n_win (legacy BRA, auto_pad=False)."""
        return ()

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        return checked_image_batch(x, self.in_chans, self.stem_kind, self._partitioned_stages())

    # -- forward ---------------------------------------------------------------------------------------------------

    def _run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample_layers[index](x)
        stage = self.stages[index]
        if (index in self.checkpoint_stages or self.grad_checkpointing) and isinstance(stage, nn.Sequential) \
                and not torch.jit.is_scripting():
            return checkpoint_seq(stage, x)
        return stage(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._check_input(x)
        for index in range(len(self.stages)):
            x = self._run_stage(index, x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean((2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | list[int] | None = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (strides 4/8/16/32), after the per-stage ``extra_norms`` when the model has them.

        Args:
            x: input images (B, in_chans, H, W).
            indices: take the last n stages if int, all if None, the listed stages if a sequence.
            norm: apply the final ``norm`` to the last stage's map when it is taken.
            stop_early: stop after the last stage needed.
            output_fmt: only 'NCHW'.
            intermediates_only: return only the list of maps.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"BiFormer returns NCHW maps only, got output_fmt={output_fmt!r}")
        x = self._check_input(x)
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last_index = len(self.stages) - 1
        stages_to_run = max_index + 1 if stop_early else len(self.stages)
        intermediates = []
        for index in range(stages_to_run):
            x = self._run_stage(index, x)
            if index in take_indices:
                feature = x
                if self.extra_norms is not None:
                    feature = self.extra_norms[index](feature)
                if norm and index == last_index:
                    feature = self.norm(feature)
                intermediates.append(feature)
        if intermediates_only:
            return intermediates
        if stages_to_run - 1 == last_index:
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: int | list[int] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> list[int]:
        """Drop the stages after the last one needed (and the norm/head) for feature extraction."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        self.downsample_layers = self.downsample_layers[: max_index + 1]
        if self.extra_norms is not None:
            self.extra_norms = self.extra_norms[: max_index + 1]
        prune_end = max_index < len(self.feature_info) - 1
        if prune_norm or prune_end:
            self.norm = nn.Identity()  # sized for the last stage only
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices


class BiFormer(_BiFormerBase):
    """BiFormer-T/S/B (official models/biformer.py ``BiFormer``); the official constructor arguments.

    Args:
        depth: blocks per stage.
        in_chans: input channels.
        num_classes: classifier outputs (0: no head).
        embed_dim: channels per stage.
        head_dim: channels per head of the routed stages (heads = qk_dims[i] // head_dim).
        qk_scale: overrides the legacy ``qk_dim ** -0.5`` attention scale.
        drop_path_rate: stochastic depth, linearly increasing over blocks.
        drop_rate: dropout before the classifier (accepted but unused by the official code; 0 there).
        use_checkpoint_stages: stages run under activation checkpointing (the official option).
        n_win: regions per side of every routed stage.
        kv_downsample_mode: only 'identity' (every release).
        kv_per_wins: unused with 'identity' (accepted so official configs pass through).
        topks: routed regions per stage; -2 is global attention + LePE, -1 global attention.
        side_dwconv: LePE kernel size (0: none).
        layer_scale_init_value: > 0 enables layer scale.
        qk_dims: q/k channels per stage (default: embed_dim).
        param_routing: linear on the region means before routing (official ``router.emb``).
        diff_routing, soft_routing: not supported (no released model uses them).
        pre_norm: pre-norm blocks (False: post-norm).
        pe: only None (no released model uses an extra positional encoding).
        before_attn_dwconv: kernel of the depthwise positional conv before attention (0: none).
        auto_pad: zero-pad each BRA input to multiples of n_win (default; see the module docstring). False refuses
            inputs whose routed stage maps are not multiples of n_win, as the official classification model.
        mlp_ratios: MLP expansion per stage.
        param_attention: 'qkvo' (output projection) or 'qkv'.
        mlp_dwconv: 3x3 depthwise conv inside the MLP.
        global_pool: 'avg' or ''.
        extra_norms: per-stage LayerNorm2d on the returned feature maps (official dense-prediction backbone).
        img_size: nominal input size (a timm model trait; nothing in the weights depends on it). With
            auto_pad=False a size whose routed stage maps are not multiples of n_win is refused.
    """

    def __init__(
            self,
            depth: Sequence[int] = (3, 4, 8, 3),
            in_chans: int = 3,
            num_classes: int = 1000,
            embed_dim: Sequence[int] = (64, 128, 320, 512),
            head_dim: int = 64,
            qk_scale: float | None = None,
            drop_path_rate: float = 0.0,
            drop_rate: float = 0.0,
            use_checkpoint_stages: Sequence[int] = (),
            n_win: int = 7,
            kv_downsample_mode: str = "identity",
            kv_per_wins: Sequence[int] = (-1, -1, -1, -1),
            topks: Sequence[int] = (8, 8, -1, -1),
            side_dwconv: int = 5,
            layer_scale_init_value: float = -1,
            qk_dims: Sequence[int | None] | None = None,
            param_routing: bool = False,
            diff_routing: bool = False,
            soft_routing: bool = False,
            pre_norm: bool = True,
            pe: str | None = None,
            before_attn_dwconv: int = 3,
            auto_pad: bool = True,
            mlp_ratios: Sequence[float] = (4, 4, 4, 4),
            param_attention: str = "qkvo",
            mlp_dwconv: bool = False,
            global_pool: str = "avg",
            extra_norms: bool = False,
            img_size: int | tuple[int, int] = 224,
    ):
        super().__init__()
        if pe is not None:
            raise NotImplementedError(f"pe={pe!r} is not supported; no released BiFormer uses an extra positional encoding")
        qk_dims = [q or d for q, d in zip(qk_dims or [None] * 4, embed_dim)]
        self.n_win = n_win
        self.auto_pad = auto_pad
        self.topks = list(topks)

        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(  # two overlapping 3x3 stride-2 convs (UniFormer-style stem)
            nn.Conv2d(in_chans, embed_dim[0] // 2, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(embed_dim[0] // 2),
            nn.GELU(),
            nn.Conv2d(embed_dim[0] // 2, embed_dim[0], kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(embed_dim[0]),
        ))
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                nn.Conv2d(embed_dim[i], embed_dim[i + 1], kernel_size=3, stride=2, padding=1),
                nn.BatchNorm2d(embed_dim[i + 1]),
            ))

        num_heads = [qk_dim // head_dim for qk_dim in qk_dims]
        drop_path_rates = torch.linspace(0, drop_path_rate, sum(depth), device="cpu").tolist()
        self.stages = nn.ModuleList()
        first = 0
        for i in range(4):
            self.stages.append(nn.Sequential(*[
                BiFormerBlock(
                    dim=embed_dim[i],
                    drop_path=drop_path_rates[first + j],
                    layer_scale_init_value=layer_scale_init_value,
                    topk=topks[i],
                    num_heads=num_heads[i],
                    n_win=n_win,
                    qk_dim=qk_dims[i],
                    qk_scale=qk_scale,
                    kv_per_win=kv_per_wins[i],
                    kv_downsample_mode=kv_downsample_mode,
                    param_attention=param_attention,
                    param_routing=param_routing,
                    diff_routing=diff_routing,
                    soft_routing=soft_routing,
                    mlp_ratio=mlp_ratios[i],
                    mlp_dwconv=mlp_dwconv,
                    side_dwconv=side_dwconv,
                    before_attn_dwconv=before_attn_dwconv,
                    pre_norm=pre_norm,
                    auto_pad=auto_pad,
                )
                for j in range(depth[i])
            ]))
            first += depth[i]

        self._init_head_and_features(embed_dim, num_classes, in_chans, global_pool, drop_rate, nn.BatchNorm2d,
                                     extra_norms, use_checkpoint_stages)
        self.apply(_init_weights)
        self.img_size = self._check_img_size(img_size)

    stem_kind = "overlap"

    def _partitioned_stages(self) -> tuple[tuple[int, int], ...]:
        if self.auto_pad:
            return ()
        return tuple((i, self.n_win) for i in range(len(self.stages)) if self.topks[i] > 0)


class BiFormerSTL(_BiFormerBase):
    """BiFormer in the Swin-T layout (official models/biformer_stl.py and models/biformer_stl_nchw.py).

    Args:
        nchw: build the refactored channels-first model (``nchwBiFormerSTL``: nchwBRA, LayerNorm2d, 1x1-conv MLPs);
            it always pads maps that are not multiples of the region size, so ``auto_pad`` does not apply to it.
        norm_layer: norm of the stem, the patch merging and the final norm (BatchNorm2d in every release).
        n_wins, topks: per stage.
        auto_pad: legacy (nchw=False) only: zero-pad each BRA input to multiples of n_win (default; False refuses
            such inputs).
        Others (``img_size`` included) as :class:`BiFormer`.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            depth: Sequence[int] = (2, 2, 6, 2),
            embed_dim: Sequence[int] = (96, 192, 384, 768),
            head_dim: int = 32,
            qk_scale: float | None = None,
            drop_path_rate: float = 0.0,
            drop_rate: float = 0.0,
            use_checkpoint_stages: Sequence[int] = (),
            mlp_ratios: Sequence[float] = (4, 4, 4, 4),
            norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
            pre_head_norm_layer: Callable[[int], nn.Module] | None = None,
            n_wins: Sequence[int] = (7, 7, 7, 7),
            topks: Sequence[int] = (1, 4, 16, -2),
            side_dwconv: int = 5,
            nchw: bool = False,
            auto_pad: bool = True,
            global_pool: str = "avg",
            extra_norms: bool = False,
            img_size: int | tuple[int, int] = 224,
    ):
        super().__init__()
        self.nchw = nchw
        self.n_wins = list(n_wins)
        self.topks = list(topks)
        self.auto_pad = auto_pad

        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(  # patchify stem: conv 4x4/4 then norm
            nn.Conv2d(in_chans, embed_dim[0], kernel_size=4, stride=4), norm_layer(embed_dim[0]),
        ))
        for i in range(3):  # patch merging: norm then conv 2x2/2
            self.downsample_layers.append(nn.Sequential(
                norm_layer(embed_dim[i]), nn.Conv2d(embed_dim[i], embed_dim[i + 1], kernel_size=2, stride=2),
            ))

        num_heads = [dim // head_dim for dim in embed_dim]
        drop_path_rates = torch.linspace(0, drop_path_rate, sum(depth), device="cpu").tolist()
        self.stages = nn.ModuleList()
        for i in range(4):
            rates = drop_path_rates[sum(depth[:i]): sum(depth[: i + 1])]
            if nchw:
                blocks = [NchwStlBlock(embed_dim[i], drop_path=rates[j], num_heads=num_heads[i], n_win=n_wins[i],
                                       qk_scale=qk_scale, topk=topks[i], mlp_ratio=mlp_ratios[i],
                                       side_dwconv=side_dwconv) for j in range(depth[i])]
            else:
                blocks = [StlBlock(embed_dim[i], drop_path=rates[j], num_heads=num_heads[i], n_win=n_wins[i],
                                   qk_scale=qk_scale, topk=topks[i], mlp_ratio=mlp_ratios[i],
                                   side_dwconv=side_dwconv, auto_pad=auto_pad) for j in range(depth[i])]
            self.stages.append(StlStage(blocks, channels_last=not nchw))

        self._init_head_and_features(embed_dim, num_classes, in_chans, global_pool, drop_rate,
                                     pre_head_norm_layer or norm_layer, extra_norms, use_checkpoint_stages)
        self.apply(_init_weights)
        self.img_size = self._check_img_size(img_size)

    stem_kind = "patchify"

    def _partitioned_stages(self) -> tuple[tuple[int, int], ...]:
        if self.nchw or self.auto_pad:
            return ()
        return tuple((i, self.n_wins[i]) for i in range(len(self.stages)) if self.topks[i] > 0)


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------------


STEM_CONV_WEIGHT = "downsample_layers.0.0.weight"  # pretrained_cfg['first_conv'] of both layouts


def checkpoint_filter_fn(state_dict: dict, model: nn.Module) -> dict:
    """Official checkpoints -> this model (or its timm ``features_only`` wrapper).

    Accepts the released ``{'model': state_dict}`` files (and ``state_dict`` / ``module.``-prefixed variants), and the
    official detection/segmentation checkpoints (``backbone.*`` keys, with ``extra_norms``). Official key names are
    already ours, so nothing is renamed. Keys of parts the model has pruned (later stages, final norm, classifier) are
    dropped. When the model has ``extra_norms`` and the checkpoint does not (an ImageNet checkpoint), they keep their
    initial values, as the official downstream code leaves them. Every other key passes unchanged: the loader names
    what does not fit the model (e.g. a checkpoint of another variant).

    Raises a ValueError when a detection/segmentation checkpoint meets a model built without ``extra_norms``.
    """
    prefix = ""
    if not isinstance(model, _BiFormerBase) and isinstance(getattr(model, "model", None), _BiFormerBase):
        model, prefix = model.model, "model."  # timm's FeatureGetterNet (features_only) keeps the model as .model

    for wrapper_key in ("model", "state_dict"):
        if wrapper_key in state_dict and isinstance(state_dict[wrapper_key], dict):
            state_dict = state_dict[wrapper_key]
            break
    state_dict = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    if any(k.startswith("backbone.") for k in state_dict):
        state_dict = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}

    model_state = model.state_dict()
    has_extra_norms = any(k.startswith("extra_norms.") for k in state_dict)
    if has_extra_norms and model.extra_norms is None:
        raise ValueError(
            "This checkpoint is an official detection/segmentation backbone (it has per-stage extra_norms.* keys); "
            "create the model with extra_norms=True (e.g. timm.create_model(name, extra_norms=True, features_only=True))"
        )
    state_dict = dict(state_dict)
    if model.extra_norms is not None and not has_extra_norms:
        # ImageNet checkpoint into the dense-prediction layout: the extra norms keep their init values (as official)
        state_dict.update({k: v.clone() for k, v in model_state.items() if k.startswith("extra_norms.")})
    if has_extra_norms and not any(k.startswith("norm.") for k in state_dict):
        # downstream checkpoint (official BiFormer_mm deletes norm and head): keep the model's own, unused ones
        state_dict.update({k: v.clone() for k, v in model_state.items() if k.startswith(("norm.", "head."))})

    def pruned(key: str) -> bool:  # parts prune_intermediate_layers removed (features_only, out_indices)
        parts = key.split(".")
        if parts[0] in ("stages", "downsample_layers", "extra_norms") and len(parts) > 1 and parts[1].isdigit() \
                and int(parts[1]) >= len(model.stages):
            return True
        return (parts[0] == "norm" and isinstance(model.norm, nn.Identity)) or \
            (parts[0] == "head" and isinstance(model.head, nn.Identity))

    return {prefix + k: v for k, v in state_dict.items() if not pruned(k)}


# ----------------------------------------------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------------------------------------------


def _create_biformer(variant: str, pretrained: bool = False, **kwargs) -> _BiFormerBase:
    model_cls = BiFormerSTL if variant.startswith("biformer_stl") else BiFormer
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    return build_with_official_weights(
        model_cls,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


def _cfg(**kwargs) -> dict:
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        # official eval transform (datasets.py): resize 256 bicubic, center crop 224
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": STEM_CONV_WEIGHT.removesuffix(".weight"),
        "classifier": "head",
        "license": "mit",
        "paper_ids": "arXiv:2303.08810",
        "paper_name": "BiFormer: Vision Transformer with Bi-Level Routing Attention",
        "origin_url": "https://github.com/rayleizhu/BiFormer",
        **kwargs,
    }


# Checkpoint URLs from the official README (rayleizhu/BiFormer README.md, "ImageNet-1K trained models"). They all end in
# ".../root/content", so each gets a cache file name of its own (backbones/pretrained.py says why and how they load).
_ONEDRIVE = "https://api.onedrive.com/v1.0/shares/{}/root/content"
default_cfgs = generate_default_cfgs({
    "biformer_tiny.in1k": _cfg(**official_weights(_ONEDRIVE.format("s!AkBbczdRlZvChHEOoGkgwgQzEDlM"),
                                                  "biformer_tiny.in1k.pth")),
    "biformer_small.in1k": _cfg(**official_weights(_ONEDRIVE.format("s!AkBbczdRlZvChHDyM-x9KWRBZ832"),
                                                   "biformer_small.in1k.pth")),
    "biformer_base.in1k": _cfg(**official_weights(_ONEDRIVE.format("s!AkBbczdRlZvChHI_XPhoadjaNxtO"),
                                                  "biformer_base.in1k.pth")),
    "biformer_stl.in1k": _cfg(**official_weights(_ONEDRIVE.format("s!AkBbczdRlZvChSf-m7ujkvx9lIQ1"),
                                                 "biformer_stl.in1k.pth")),
    "biformer_stl_nchw.in1k": _cfg(**official_weights(_ONEDRIVE.format("s!AkBbczdRlZvChWYrKbWbMgqd2Ai0"),
                                                      "biformer_stl_nchw.in1k.pth")),
})

# The released recipe of biformer_tiny/small/base (official models/biformer.py), widths and depths aside.
_RELEASED_BIFORMER_ARGS = dict(
    mlp_ratios=(3, 3, 3, 3),
    n_win=7,
    kv_downsample_mode="identity",
    kv_per_wins=(-1, -1, -1, -1),
    topks=(1, 4, 16, -2),
    side_dwconv=5,
    before_attn_dwconv=3,
    layer_scale_init_value=-1,
    head_dim=32,
    param_routing=False,
    diff_routing=False,
    soft_routing=False,
    pre_norm=True,
    pe=None,
)


@register_model
def biformer_tiny(pretrained: bool = False, **kwargs) -> BiFormer:
    model_args = dict(_RELEASED_BIFORMER_ARGS, depth=(2, 2, 8, 2), embed_dim=(64, 128, 256, 512),
                      qk_dims=(64, 128, 256, 512))
    return _create_biformer("biformer_tiny", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def biformer_small(pretrained: bool = False, **kwargs) -> BiFormer:
    model_args = dict(_RELEASED_BIFORMER_ARGS, depth=(4, 4, 18, 4), embed_dim=(64, 128, 256, 512),
                      qk_dims=(64, 128, 256, 512))
    return _create_biformer("biformer_small", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def biformer_base(pretrained: bool = False, **kwargs) -> BiFormer:
    model_args = dict(_RELEASED_BIFORMER_ARGS, depth=(4, 4, 18, 4), embed_dim=(96, 192, 384, 768),
                      qk_dims=(96, 192, 384, 768))
    return _create_biformer("biformer_base", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def biformer_stl(pretrained: bool = False, **kwargs) -> BiFormerSTL:
    model_args = dict(depth=(2, 2, 6, 2), embed_dim=(96, 192, 384, 768), mlp_ratios=(4, 4, 4, 4), head_dim=32,
                      norm_layer=nn.BatchNorm2d, n_wins=(7, 7, 7, 7), topks=(1, 4, 16, -2), side_dwconv=5)
    return _create_biformer("biformer_stl", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def biformer_stl_nchw(pretrained: bool = False, **kwargs) -> BiFormerSTL:
    model_args = dict(depth=(2, 2, 6, 2), embed_dim=(96, 192, 384, 768), mlp_ratios=(4, 4, 4, 4), head_dim=32,
                      norm_layer=nn.BatchNorm2d, n_wins=(7, 7, 7, 7), topks=(1, 4, 16, -1), side_dwconv=5, nchw=True)
    return _create_biformer("biformer_stl_nchw", pretrained=pretrained, **dict(model_args, **kwargs))
