"""SLAB backbones: simplified linear attention + progressive re-parameterized BatchNorm (PRepBN).

Paper: "SLAB: Efficient Transformers with Simplified Linear Attention and Progressive Re-parameterized Batch
Normalization" (Guo, Chen, Tang, Wang; ICML 2024), https://arxiv.org/abs/2405.11582. Official code:
https://github.com/xinghaochen/SLAB (classification/models/{prepbn,slab_deit,deit,slab_pvt,slab_swin,swin_transformer,
slab_cswin}.py, configs classification/cfgs/*.yaml over classification/config.py; detection/mmdet_custom).

The architectures are the shared skeletons in ``backbones/skeletons`` (the same PVT / Swin / CSWin / DeiT code and
state-dict layout as Agent attention); this file supplies what is SLAB's own:

- the norms: :class:`RepBN` (``BN(x) + alpha * x``) and :class:`LinearNorm`, which blends LayerNorm into RepBN during
  training (``lambda * LN(x) + (1 - lambda) * RepBN(x)`` with ``lambda = r0 * iter / total_step``; the buffers
  ``warm`` and ``iter`` count down once per training forward, so a fine-tune resumed from a checkpoint continues the
  schedule) and is RepBN alone at inference;
- the simplified linear attention (ReLU feature map on q and k + a learnt positional encoding on k, the linear
  attention core of :func:`attnzoo.kernels.slab.simplified_linear_attention`, plus a depth-wise conv of v shared by the
  heads) for each skeleton, picked per stage by the ``attn_type`` letters ('L' linear, 'S' the skeleton's softmax
  attention);
- ``reparameterize()`` (timm's ``reparameterize_model``): every RepBN is folded into the linear / conv layer next to
  it (the final norm, whose output ``forward_features`` returns, into a per-channel scale and shift), so no
  BatchNorm is left and the outputs equal the unfolded model's in eval mode;
- the checkpoint filter, default cfgs and the 12 released models (6 SLAB, 6 PRepBN baselines).

Quirks kept for checkpoint fidelity are marked where they live. ``focusing_factor`` is accepted (the official
configs set it) but, as in the official code, unused; so is attention dropout.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import register_notrace_module, to_2tuple
from timm.models import generate_default_cfgs, register_model, register_notrace_function
from timm.models.vision_transformer import Attention as VitAttention

from attnzoo.kernels.slab import simplified_linear_attention

from .pretrained import PretrainedFromLoader, build_with_official_weights, official_weights
from .skeletons import cswin, deit, pvt, swin
from .skeletons.folding import ChannelAffine
from .skeletons.resample import TIMM_POS_EMBED_RULES, TIMM_RULES, init_arguments, resample_grid_embed
from .skeletons.shared import merge_heads, split_heads, stage_letters

# torch.fx cannot trace Python branches on tensor sizes: the op and the size-dependent helpers below are opaque calls
# in FX graphs (timm's notrace registry; FX wraps only names without a leading underscore), RepBN / LinearNorm leaves.
register_notrace_function(simplified_linear_attention)

__all__ = ["LinearNorm", "RepBN", "SlabCSWin", "SlabDeiT", "SlabPVT", "SlabSwinTransformer", "checkpoint_filter_fn",
           "slab_norm"]


# ---------------------------------------------------------------------------------------------------------------------
# PRepBN: RepBN and the progressive LinearNorm
# ---------------------------------------------------------------------------------------------------------------------


@register_notrace_module  # checks its input's rank: an FX leaf
class RepBN(nn.Module):
    """``BatchNorm1d(x) + alpha * x`` over the channels of (B, N, C) tokens (official ``prepbn.RepBN``)."""

    def __init__(self, channels):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        self.bn = nn.BatchNorm1d(channels)

    def forward(self, x):
        if x.dim() != 3:
            raise ValueError(f"RepBN normalises (B, N, C) tokens; got a tensor of shape {tuple(x.shape)}")
        # contiguous (B, C, N): under torch.compile the CPU batch_norm kernel's output strides for a transposed view
        # differ from what its meta function reports, and a later view then fails; the values are the same
        xt = x.transpose(1, 2).contiguous()
        return (self.bn(xt) + self.alpha * xt).transpose(1, 2)

    def inference_affine(self):
        """(scale, shift) with ``RepBN(x) = scale * x + shift`` in eval mode (running statistics)."""
        bn = self.bn
        inv_std = torch.rsqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.weight is not None else torch.ones_like(inv_std)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(inv_std)
        return gamma * inv_std + self.alpha, beta - gamma * bn.running_mean * inv_std

    def fuse(self):
        """timm ``reparameterize_model``: a RepBN that no neighbouring layer absorbed becomes its eval affine."""
        return ChannelAffine(*self.inference_affine())


@register_notrace_module  # its training branch reads its own buffers: an FX leaf, as timm does for such modules
class LinearNorm(nn.Module):
    """Progressive LayerNorm -> RepBN (official ``prepbn.LinearNorm``).

    Training: while ``warm > 0`` only ``norm1`` (LayerNorm) is used and ``warm`` counts down; then
    ``lambda = r0 * iter / total_step`` blends ``lambda * norm1(x) + (1 - lambda) * norm2(x)`` and ``iter`` counts
    down to 0, once per training forward of this module. Eval: ``norm2`` (RepBN) alone. The three buffers are saved
    in checkpoints, so a resumed fine-tune continues the schedule where it stopped.
    """

    def __init__(self, dim, norm1, norm2, warm=0, step=300000, r0=1.0):
        super().__init__()
        # Official buffers: 0-dim int64 tensors (torch.tensor(int)); lambda is computed from them as the official
        # code does (an int tensor division, float32), so the blend rounds the same.
        self.register_buffer("warm", torch.tensor(warm))
        self.register_buffer("iter", torch.tensor(step))
        self.register_buffer("total_step", torch.tensor(step))
        self.r0 = r0
        self.norm1 = norm1(dim)
        self.norm2 = norm2(dim)

    def forward(self, x):
        if self.training:
            if self.warm > 0:
                self.warm.copy_(self.warm - 1)
                return self.norm1(x)
            lamda = self.r0 * self.iter / self.total_step
            if self.iter > 0:
                self.iter.copy_(self.iter - 1)
            return lamda * self.norm1(x) + (1 - lamda) * self.norm2(x)
        return self.norm2(x)

    def inference_affine(self):
        """The eval-mode map (norm2) as (scale, shift), when norm2 is affine at inference (RepBN)."""
        affine = getattr(self.norm2, "inference_affine", None)
        return affine() if callable(affine) else None

    def fuse(self):
        affine = self.inference_affine()
        if affine is None:
            raise TypeError(f"LinearNorm with norm2={type(self.norm2).__name__} is not affine at inference")
        return ChannelAffine(*affine)


def slab_norm(step: int, layer_norm_eps: float = 1e-5):
    """The official PRepBN norm: ``LinearNorm(norm1=LayerNorm(eps), norm2=RepBN, step=step)``."""
    return partial(LinearNorm, norm1=partial(nn.LayerNorm, eps=layer_norm_eps), norm2=RepBN, step=step)


# ---------------------------------------------------------------------------------------------------------------------
# Simplified linear attention
# ---------------------------------------------------------------------------------------------------------------------


def _linear_attention_heads(q, k, v, num_heads):
    """ReLU'd q (B, N, C), k (B, M, C) and v (B, M, C) -> the linear-attention core per head (B, h, N, d) and the
    values per head (B, h, M, d). Heads split channels as the official ``b n (h c) -> (b h) n c``."""
    q, k, v = (split_heads(t, num_heads) for t in (F.relu(q), F.relu(k), v))
    return simplified_linear_attention(q, k, v), v


def _depthwise_heads(dwc: nn.Conv2d, v: torch.Tensor, grid) -> torch.Tensor:
    """The official depth-wise conv of v: one (head_dim)-channel conv shared by all heads, on the token grid."""
    b, h, m, d = v.shape
    fmap = v.reshape(b * h, grid[0], grid[1], d).permute(0, 3, 1, 2)
    return dwc(fmap).flatten(2).transpose(1, 2).reshape(b, h, m, d)


@register_notrace_function
def resized_positional_encoding(pe: torch.Tensor, grid, trained_grid) -> torch.Tensor:
    """The key positional encoding on the actual key grid. Identity at the trained grid (the official models);
    elsewhere (a zoo extension: the official classification code only runs at its training size) bilinear."""
    grid = (int(grid[0]), int(grid[1]))
    if grid == tuple(trained_grid):
        return pe
    table = pe.reshape(1, trained_grid[0], trained_grid[1], -1).permute(0, 3, 1, 2)
    return F.interpolate(table, size=tuple(grid), mode="bilinear").flatten(2).transpose(1, 2)


class SimplifiedLinearAttention(nn.Module):
    """SLAB linear attention over a square token grid (official ``slab_swin.SimplifiedLinearAttention`` on windows,
    ``slab_deit.Attention`` on the 14x14 patch grid): qkv, ``k += positional_encoding``, ReLU on q and k, the linear
    core, ``+ dwc(v)`` per head, proj. ``mask`` (Swin's shifted-window mask) is accepted and ignored, as officially.
    """

    def __init__(self, dim, grid, num_heads, qkv_bias=True, proj_drop=0.0, kernel_size=5, focusing_factor=3):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.grid = tuple(grid)
        self.focusing_factor = focusing_factor  # official config value; unused by the official forward
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dwc = nn.Conv2d(head_dim, head_dim, kernel_size=kernel_size, groups=head_dim, padding=kernel_size // 2)
        self.positional_encoding = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], dim))

    def forward(self, x, mask=None):
        b, n, c = x.shape
        x = checked_token_count(x, self.grid[0] * self.grid[1],
                                f"SimplifiedLinearAttention built for a {self.grid[0]}x{self.grid[1]} grid")
        q, k, v = self.qkv(x).reshape(b, n, 3, c).unbind(2)
        out, v = _linear_attention_heads(q, k + self.positional_encoding, v, self.num_heads)
        out = out + _depthwise_heads(self.dwc, v, self.grid)
        return self.proj_drop(self.proj(merge_heads(out)))


@register_notrace_function
def checked_token_count(x: torch.Tensor, expected: int, who: str) -> torch.Tensor:
    """Returns ``x`` when it holds ``expected`` tokens (B, N, C), else raises naming ``who``."""
    if x.shape[1] != expected:
        raise ValueError(f"{who}: expected {expected} tokens, got {x.shape[1]}")
    return x


@register_notrace_function
def stretched_values(v: torch.Tensor, n: int) -> torch.Tensor:
    """Quirk kept for fidelity (SLAB-PVT with reduced keys): the official code stretches the reduced values back to
    ``n`` tokens by a 1-D linear interpolation along the flattened token sequence, not by a 2-D resize of the map."""
    b, h, m, d = v.shape
    hv = v.reshape(b * h, m, d).transpose(1, 2)
    return F.interpolate(hv, size=int(n), mode="linear").transpose(1, 2).reshape(b, h, int(n), d)


class PvtLinearAttention(pvt.SpatialReductionFolding, nn.Module):
    """SLAB linear attention of SLAB-PVT (official ``slab_pvt.SimplifiedLinearAttention``): q and kv projections,
    optional spatial reduction of the keys (sr conv + the family norm), ``k += positional_encoding``. On another key
    grid the encoding is resized bilinearly, or with ``dynamic_img_size`` by timm's rule (as set_input_size)."""

    def __init__(self, dim, num_patches, num_heads=8, qkv_bias=False, proj_drop=0.0, sr_ratio=1, kernel_size=5,
                 focusing_factor=3, norm_layer=nn.LayerNorm, dynamic_img_size=False):
        super().__init__()
        self.dynamic_img_size = dynamic_img_size
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.focusing_factor = focusing_factor  # official config value; unused by the official forward
        side = int(num_patches ** 0.5)
        self.trained_key_grid = (side // sr_ratio, side // sr_ratio)
        head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = norm_layer(dim)
        self.dwc = nn.Conv2d(head_dim, head_dim, kernel_size=kernel_size, groups=head_dim, padding=kernel_size // 2)
        self.positional_encoding = nn.Parameter(torch.zeros(1, num_patches // (sr_ratio * sr_ratio), dim))

    def forward(self, x, H, W):
        b, n, c = x.shape
        x = checked_token_count(x, H * W, f"PvtLinearAttention told the grid is {H}x{W}")
        q = self.q(x)
        key_hw = (H, W)
        if self.sr_ratio > 1:
            x = self.sr(x.transpose(1, 2).reshape(b, c, H, W))
            key_hw = (x.shape[2], x.shape[3])
            x = self.norm(x.flatten(2).transpose(1, 2))
        k, v = self.kv(x).reshape(b, x.shape[1], 2, c).unbind(2)  # sizes, not -1: an empty batch
        if self.dynamic_img_size:
            k = k + resample_grid_embed(self.positional_encoding, self.trained_key_grid, key_hw, 0, "timm")
        else:
            k = k + resized_positional_encoding(self.positional_encoding, key_hw, self.trained_key_grid)
        out, v = _linear_attention_heads(q, k, v, self.num_heads)
        if self.sr_ratio > 1:
            v = stretched_values(v, n)
        out = out + _depthwise_heads(self.dwc, v, (H, W))
        return self.proj_drop(self.proj(merge_heads(out)))


class CSWinLinearAttention(nn.Module):
    """SLAB linear attention inside CSWin strips (official ``slab_cswin.SimplifiedLinearAttention``), with CSWin's
    LePE (``get_v``) added like the depth-wise conv term. At the official split sizes (56-28 at 224) the strip is
    the whole map. The official module's ``scale`` parameter is never used; checkpoint_filter_fn drops it."""

    def __init__(self, dim, resolution, branch, split_size=7, num_heads=8, kernel_size=5, focusing_factor=3):
        super().__init__()
        self.num_heads = num_heads
        self.resolution = resolution
        self.strip = cswin.cswin_strip(resolution, split_size, branch)
        self.focusing_factor = focusing_factor  # official config value; unused by the official forward
        head_dim = dim // num_heads
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)
        self.dwc = nn.Conv2d(head_dim, head_dim, kernel_size=kernel_size, groups=head_dim, padding=kernel_size // 2)
        self.positional_encoding = nn.Parameter(torch.zeros(1, self.strip[0] * self.strip[1], dim))

    def forward(self, q, k, v):
        hw = (self.resolution, self.resolution)
        q, k, v = (cswin.strip_partition(t, hw, self.strip) for t in (q, k, v))
        c = v.shape[-1]
        lepe = self.get_v(v.transpose(1, 2).reshape(v.shape[0], c, *self.strip)).flatten(2).transpose(1, 2)
        out, vh = _linear_attention_heads(q, k + self.positional_encoding, v, self.num_heads)
        out = out + _depthwise_heads(self.dwc, vh, self.strip) + split_heads(lepe, self.num_heads)
        return cswin.strip_reverse(merge_heads(out), hw, self.strip)


def _check_letters(family, attn_type, num_stages):
    if len(attn_type) < num_stages:
        raise ValueError(f"{family} attn_type {attn_type!r} needs a letter per stage ({num_stages})")


# Per-block letters of a stage: 'L' linear, 'S' softmax, or for 'M' linear in the first k blocks (k = the number after
# the per-stage letters, e.g. 'LLMS2') and softmax after (official ``attn_type`` convention).
_stage_letters = partial(stage_letters, mixed=("L", "S"), mixed_count="linear",
                         letters={"L": "linear", "S": "softmax"})


# ---------------------------------------------------------------------------------------------------------------------
# Models on the skeletons
# ---------------------------------------------------------------------------------------------------------------------


class SlabPVT(PretrainedFromLoader, pvt.PyramidVisionTransformer):
    """SLAB-PVT / PVT-PRepBN (official ``slab_pvt.PyramidVisionTransformer``) on the PVT skeleton: 'L' stages use
    linear attention with spatial reduction ``la_sr_ratios``, 'S' stages PVT softmax attention with ``sr_ratios``;
    ``norm_layer`` (the PRepBN LinearNorm) everywhere, patch embeddings and reduced-key norms included.
    No official high-resolution SLAB model exists: another size (``img_size``, :meth:`set_input_size`, checkpoints
    saved at another size, ``dynamic_img_size``) resamples the stage embeddings and the linear attentions' key
    encodings by timm's ``resample_abs_pos_embed``."""

    resample_rules = {**TIMM_RULES, **TIMM_POS_EMBED_RULES}

    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, embed_dims=(64, 128, 320, 512),
                 num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), qkv_bias=True, qk_scale=None, drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.0, norm_layer=None, depths=(2, 2, 2, 2),
                 sr_ratios=(8, 4, 2, 1), la_sr_ratios="1111", num_stages=4, focusing_factor=3, kernel_size=5,
                 attn_type="LLLL", global_pool="avg", dynamic_img_size=False):
        config = init_arguments(locals())  # set_input_size builds the same model at another size
        norm_layer = norm_layer or slab_norm(300000, 1e-6)
        _check_letters("SLAB-PVT", attn_type, num_stages)
        letters = [_stage_letters(attn_type, i, num_stages, 1, "SLAB-PVT")[0] for i in range(num_stages)]

        def block_fn(stage, index, dim, num_patches, num_heads, qkv_bias, qk_scale, drop, attn_drop, norm_layer,
                     **block_kwargs):
            if letters[stage] == "L":
                attn_layer = partial(PvtLinearAttention, num_patches=num_patches, num_heads=num_heads,
                                     qkv_bias=qkv_bias, proj_drop=drop, sr_ratio=int(str(la_sr_ratios)[stage]),
                                     kernel_size=kernel_size, focusing_factor=focusing_factor, norm_layer=norm_layer,
                                     dynamic_img_size=dynamic_img_size)
            else:
                attn_layer = partial(pvt.PvtAttention, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                     attn_drop=attn_drop, proj_drop=drop, sr_ratio=sr_ratios[stage],
                                     norm_layer=norm_layer)
            return pvt.PvtBlock(dim, attn_layer, drop=drop, norm_layer=norm_layer, **block_kwargs)

        super().__init__(block_fn, img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                         num_classes=num_classes, embed_dims=embed_dims, num_heads=num_heads, mlp_ratios=mlp_ratios,
                         qkv_bias=qkv_bias, qk_scale=qk_scale, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                         drop_path_rate=drop_path_rate, norm_layer=norm_layer, embed_norm_layer=norm_layer,
                         depths=depths, num_stages=num_stages, global_pool=global_pool,
                         dynamic_img_size=dynamic_img_size)
        self._init_config = config


class SlabSwinTransformer(PretrainedFromLoader, swin.SwinTransformer):
    """SLAB-Swin / Swin-PRepBN (official ``slab_swin.SlabSwinTransformer`` / ``swin_transformer.SwinTransformer``) on
    the Swin skeleton.

    'L' blocks: linear attention on windows of ``window_size`` (56 in the official configs: clamped to the stage grid
    at 224, i.e. one window per map); 'S' blocks: Swin window attention, window 7 (12 when ``window_size > 56``).
    Downstream (the official ``SwinTransformer_SLAB`` detection backbone): ``stage_window_sizes=(56, 28, 7, 7)``
    (every block of a stage, both kinds), ``always_partition=True`` (windows and shifts at any size, maps padded to
    the window), ``out_norms=True`` with LayerNorm ``norm0..norm3``.
    ``window_size=None`` (default) follows ``img_size`` as Agent-Swin's high-resolution configs do (the first stage
    grid, img_size // patch_size: 56 at 224), so 'L' stages stay global; an explicit value wins. No official
    high-resolution SLAB model exists: checkpoints saved at another size are resampled by timm's helpers (TIMM_RULES).
    """

    resample_rules = TIMM_RULES

    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, embed_dim=96, depths=(2, 2, 6, 2),
                 num_heads=(3, 6, 12, 24), window_size=None, mlp_ratio=4.0, qkv_bias=True, qk_scale=None,
                 drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1, norm_layer=None, ape=False, patch_norm=True,
                 focusing_factor=3, kernel_size=5, attn_type="LLSS", stage_window_sizes=None, always_partition=False,
                 out_norms=False, global_pool="avg"):
        config = init_arguments(locals())
        if window_size is None:
            window_size = max(int(s) for s in to_2tuple(img_size)) // patch_size
        norm_layer = norm_layer or slab_norm(60000)
        num_stages = len(depths)
        _check_letters("SLAB-Swin", attn_type, num_stages)
        letters = [_stage_letters(attn_type, i, num_stages, depths[i], "SLAB-Swin") for i in range(num_stages)]
        if stage_window_sizes is not None and len(stage_window_sizes) != num_stages:
            raise ValueError(f"stage_window_sizes {stage_window_sizes} needs one window per stage ({num_stages})")

        def block_fn(stage, index, window_size, num_heads, qkv_bias, qk_scale, drop, attn_drop, **block_kwargs):
            letter = letters[stage][index]
            if stage_window_sizes is not None:
                window = int(stage_window_sizes[stage])
            else:
                window = window_size if letter == "L" else (7 if window_size <= 56 else 12)
            if letter == "L":
                def attn_layer(dim, window):
                    return SimplifiedLinearAttention(dim, (window, window), num_heads, qkv_bias=qkv_bias,
                                                     proj_drop=drop, kernel_size=kernel_size,
                                                     focusing_factor=focusing_factor)
            else:
                def attn_layer(dim, window):
                    return swin.WindowAttention(dim, window, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                                attn_drop=attn_drop, proj_drop=drop)
            return swin.SwinBlock(num_heads=num_heads, attn_layer=attn_layer, window_size=window,
                                  shift_size=0 if index % 2 == 0 else window // 2, drop=drop, **block_kwargs)

        super().__init__(block_fn, img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                         num_classes=num_classes, embed_dim=embed_dim, depths=depths, num_heads=num_heads,
                         window_size=window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                         drop_rate=drop_rate, attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
                         norm_layer=norm_layer, ape=ape, patch_norm=patch_norm, always_partition=always_partition,
                         out_norms=out_norms, out_norm_layer=nn.LayerNorm, global_pool=global_pool)
        self._init_config = config


class DeitLinearAttention(SimplifiedLinearAttention):
    """SLAB-DeiT's linear attention on the patch grid; ``forward(x, grid)`` runs on another grid (dynamic_img_size),
    the positional encoding resampled by timm's rule (as set_input_size does)."""

    takes_grid = True  # the DeiT skeleton passes the actual patch grid under dynamic_img_size

    def forward(self, x, grid=None):
        if grid is None:
            return super().forward(x)
        grid = (int(grid[0]), int(grid[1]))
        b, n, c = checked_token_count(x, grid[0] * grid[1], f"DeitLinearAttention on a {grid[0]}x{grid[1]} grid").shape
        q, k, v = self.qkv(x).reshape(b, n, 3, c).unbind(2)
        pe = resample_grid_embed(self.positional_encoding, self.grid, grid, 0, "timm")
        out, v = _linear_attention_heads(q, k + pe, v, self.num_heads)
        out = out + _depthwise_heads(self.dwc, v, grid)
        return self.proj_drop(self.proj(merge_heads(out)))


class SlabDeiT(PretrainedFromLoader, deit.VisionTransformer):
    """SLAB-DeiT / DeiT-PRepBN (official ``slab_deit.VisionTransformer`` / ``deit.VisionTransformer``) on the DeiT
    skeleton. ``linear=True`` (SLAB): linear attention on the patch grid, no class token (the official model keeps an
    unused ``cls_token``, which checkpoint_filter_fn drops), average pooling. ``linear=False`` (PRepBN baseline):
    DeiT softmax attention with the class token. Another size resamples pos_embed and the linear attentions'
    positional encodings by timm's ``resample_abs_pos_embed`` (no official high-resolution model exists)."""

    resample_rules = {**TIMM_RULES, **TIMM_POS_EMBED_RULES}

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=192, depth=12,
                 num_heads=3, mlp_ratio=4.0, qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                 norm_layer=None, act_layer=None, linear=True, kernel_size=5, focusing_factor=3, global_pool=None,
                 dynamic_img_size=False):
        config = init_arguments(locals())  # set_input_size builds the same model at another size
        norm_layer = norm_layer or slab_norm(60000, 1e-6)

        def block_fn(index, dim, num_heads, qkv_bias, drop, attn_drop, grid_size, **block_kwargs):
            if linear:
                attn_layer = partial(DeitLinearAttention, grid=grid_size, num_heads=num_heads,
                                     qkv_bias=qkv_bias, proj_drop=drop, kernel_size=kernel_size,
                                     focusing_factor=focusing_factor)
            else:
                attn_layer = partial(VitAttention, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                     proj_drop=drop)
            return deit.DeitBlock(dim, attn_layer, drop=drop, **block_kwargs)

        super().__init__(block_fn, img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                         num_classes=num_classes, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                         mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                         drop_path_rate=drop_path_rate, norm_layer=norm_layer, act_layer=act_layer,
                         class_token=not linear, global_pool=global_pool or ("avg" if linear else "token"),
                         dynamic_img_size=dynamic_img_size)
        self._init_config = config


class SlabCSWin(PretrainedFromLoader, cswin.CSWinTransformer):
    """SLAB-CSWin (official ``slab_cswin.CSWinTransformer``) on the CSWin skeleton: linear attention in the 'L'
    stages on strips ``la_split_size`` ('56-28-14-7' at 224: the whole map), CSWin LePE attention in the 'S' stages
    on ``split_size`` strips; the PRepBN norm everywhere (stem and merge blocks included). Both strip sizes default
    (None) to what they are at ``img_size`` in the official configs (:func:`cswin.cswin_split_sizes`; 1-2-7-7 and
    '56-28-14-7' at 224); an explicit value wins."""

    resample_rules = TIMM_RULES

    def __init__(self, img_size=224, in_chans=3, num_classes=1000, embed_dim=64, depth=(2, 4, 18, 1),
                 split_size=None, la_split_size=None, num_heads=(2, 4, 8, 16), mlp_ratio=4.0,
                 qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                 norm_layer=None, focusing_factor=3, kernel_size=5, attn_type="LLSS", global_pool="avg"):
        config = init_arguments(locals())
        norm_layer = norm_layer or slab_norm(120000)
        split_size, la_split = cswin.cswin_split_sizes(int(to_2tuple(img_size)[0]), split_size, la_split_size)
        _check_letters("SLAB-CSWin", attn_type, 4)
        letters = [_stage_letters(attn_type, i, 4, depth[i], "SLAB-CSWin") for i in range(4)]

        def block_fn(stage, index, dim, reso, num_heads, qk_scale, attn_drop, **block_kwargs):
            if letters[stage][index] == "L":
                split = la_split[stage]
                attn_layer = partial(_cswin_linear_branch, reso=reso, split_size=split, kernel_size=kernel_size,
                                     focusing_factor=focusing_factor)
            else:
                split = split_size[stage]
                attn_layer = partial(cswin.cswin_lepe_branch, reso=reso, split_size=split, attn_drop=attn_drop,
                                     qk_scale=qk_scale)
            return cswin.CSWinBlock(dim, reso, num_heads, attn_layer, split_size=split, **block_kwargs)

        super().__init__(block_fn, img_size=img_size, in_chans=in_chans, num_classes=num_classes,
                         embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                         qkv_bias=qkv_bias, qk_scale=qk_scale, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                         drop_path_rate=drop_path_rate, norm_layer=norm_layer, embed_norm_layer=norm_layer,
                         global_pool=global_pool)
        self._init_config = config


def _cswin_linear_branch(dim, branch, num_heads, reso, split_size, kernel_size, focusing_factor):
    return CSWinLinearAttention(dim, reso, branch, split_size=split_size, num_heads=num_heads,
                                kernel_size=kernel_size, focusing_factor=focusing_factor)


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------

# Buffers official checkpoints carry that are rebuilt here from the configuration.
_REBUILT_BUFFERS = ("relative_position_index", "attn_mask")


def _unused_official_parameters(model) -> tuple[str, ...]:
    """Parameters the official modules create but never use (dropped here: timm's tests and DDP want every
    parameter to take part): SLAB-DeiT's ``cls_token`` and SLAB-CSWin's per-attention ``scale``."""
    if isinstance(model, SlabDeiT) and model.cls_token is None:
        return ("cls_token",)
    return ()


def checkpoint_filter_fn(state_dict, model):
    """Official checkpoint (``{'model': ...}``, ``{'state_dict': ...}`` or a bare state dict; ``module.`` /
    ``backbone.`` prefixes) -> this model's state dict. Only maps keys (unwraps, strips prefixes, drops the rebuilt
    buffers and the unused official parameters, adapts an ImageNet checkpoint to the downstream Swin layout); every
    other key passes unchanged, and the loader names what does not fit the model (e.g. a SLAB checkpoint into a
    PRepBN baseline)."""
    for wrapper in ("model", "state_dict", "model_ema"):
        if isinstance(state_dict, dict) and wrapper in state_dict and isinstance(state_dict[wrapper], dict):
            state_dict = state_dict[wrapper]
            break
    if any(k.startswith("backbone.") for k in state_dict):
        state_dict = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    unused = set(_unused_official_parameters(model))
    out = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        leaf = key.rsplit(".", 1)[-1]
        if leaf in _REBUILT_BUFFERS or key in unused:
            continue
        if isinstance(model, SlabCSWin) and leaf == "scale" and ".attns." in key:
            continue  # official SimplifiedLinearAttention.scale: created, never used
        out[key] = value

    expected = model.state_dict()
    if getattr(model, "out_norms", False) and "norm0.weight" not in out:
        # ImageNet checkpoint -> downstream SLAB-Swin, as the official detection backbone loads it
        # (load_checkpoint(strict=False)): the final norm and head are dropped, the per-stage LayerNorms norm0..norm3
        # keep their fresh initialisation (copied here so that a strict load succeeds).
        out = {k: v for k, v in out.items() if not k.startswith(("norm.", "head."))}
        out.update({k: v for k, v in expected.items() if k.split(".", 1)[0][4:].isdigit() and k.startswith("norm")})
    if not any(k.startswith("head.") for k in expected):
        out = {k: v for k, v in out.items() if not k.startswith("head.")}  # num_classes=0: no classifier to load
    # Size-dependent tensors (position embeddings, agent biases, relative-position tables) saved at another input
    # size are resampled to this model's size by the skeleton / family (ARCHITECTURE.md, "Input sizes").
    resample = getattr(model, "resample_state_dict_to_size", None)
    return resample(out) if resample is not None else out


# ---------------------------------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------------------------------


def _create(cls, variant, pretrained=False, **kwargs):
    # DeiT: every block is a level and features_only takes the last three by default, as timm's DeiT; the hierarchical
    # models: the four stages. All through forward_intermediates (timm's FeatureGetterNet).
    out_indices = kwargs.pop("out_indices", 3 if cls is SlabDeiT else (0, 1, 2, 3))
    return build_with_official_weights(cls, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                       feature_cfg=dict(out_indices=out_indices, feature_cls="getter"), **kwargs)


_RELEASES = "https://github.com/xinghaochen/SLAB/releases/download/ckpts/"


def _cfg(file, variant, **kwargs):
    # GitHub release files already have names of their own; the cache name adds the variant all the same, and the
    # custom loader (backbones/pretrained.py) takes the safe path: weights-only, sha256, this filter, strict keys.
    return {
        **official_weights(_RELEASES + file, f"{variant}.in1k.pth"), "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bicubic", "fixed_input_size": False, "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD, "first_conv": "patch_embed.proj", "classifier": "head",
        "license": "unknown (official repository carries no license file)", **kwargs,
    }


# Checkpoint files and top-1: xinghaochen/SLAB README.md ("Checkpoints" table); crop 224/256 (config.py TEST.CROP).
default_cfgs = generate_default_cfgs({
    "slab_deit_tiny.in1k": _cfg("slab_deit_tiny.pth", "slab_deit_tiny", fixed_input_size=True, pool_size=None),
    "slab_deit_small.in1k": _cfg("slab_deit_small.pth", "slab_deit_small", fixed_input_size=True, pool_size=None),
    "slab_pvt_tiny.in1k": _cfg("slab_pvt_tiny.pth", "slab_pvt_tiny", first_conv="patch_embed1.proj"),
    "slab_swin_tiny.in1k": _cfg("slab_swin_tiny.pth", "slab_swin_tiny"),
    "slab_swin_small.in1k": _cfg("slab_swin_small.pth", "slab_swin_small"),
    "slab_cswin_tiny.in1k": _cfg("slab_cswin_tiny.pth", "slab_cswin_tiny", first_conv="stage1_conv_embed.0", fixed_input_size=True),
    "prepbn_deit_tiny.in1k": _cfg("deit_tiny_prepbn.pth", "prepbn_deit_tiny", fixed_input_size=True, pool_size=None),
    "prepbn_deit_small.in1k": _cfg("deit_small_prepbn.pth", "prepbn_deit_small", fixed_input_size=True, pool_size=None),
    "prepbn_pvt_tiny.in1k": _cfg("pvt_tiny_prepbn.pth", "prepbn_pvt_tiny", first_conv="patch_embed1.proj"),
    "prepbn_pvt_small.in1k": _cfg("pvt_small_prepbn.pth", "prepbn_pvt_small", first_conv="patch_embed1.proj"),
    "prepbn_pvt_medium.in1k": _cfg("pvt_medium_prepbn.pth", "prepbn_pvt_medium", first_conv="patch_embed1.proj"),
    "prepbn_swin_tiny.in1k": _cfg("swin_tiny_prepbn.pth", "prepbn_swin_tiny"),
})


# SLAB-DeiT: slab_deit.deit_{tiny,small}_patch16_224_linear_repbn (LinearNorm step 60000, LayerNorm eps 1e-6).
@register_model
def slab_deit_tiny(pretrained=False, **kwargs):
    args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, linear=True)
    return _create(SlabDeiT, "slab_deit_tiny", pretrained, **{**args, **kwargs})


@register_model
def slab_deit_small(pretrained=False, **kwargs):
    args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, linear=True)
    return _create(SlabDeiT, "slab_deit_small", pretrained, **{**args, **kwargs})


# DeiT-PRepBN: deit.deit_{tiny,small}_patch16_224_repbn. Quirk kept for checkpoint fidelity: the official tiny
# builds its norms as plain RepBN, the small one as LinearNorm (LayerNorm eps 1e-6, RepBN, default step 300000).
@register_model
def prepbn_deit_tiny(pretrained=False, **kwargs):
    args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, linear=False, norm_layer=RepBN)
    return _create(SlabDeiT, "prepbn_deit_tiny", pretrained, **{**args, **kwargs})


@register_model
def prepbn_deit_small(pretrained=False, **kwargs):
    args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, linear=False, norm_layer=slab_norm(300000, 1e-6))
    return _create(SlabDeiT, "prepbn_deit_small", pretrained, **{**args, **kwargs})


# SLAB-PVT / PVT-PRepBN: slab_pvt.slab_pvt_* + cfgs/{slab_pvt,pvt_*_prepbn}.yaml (attn LLLL / SSSS, la_sr 1111).
_PVT_COMMON = dict(patch_size=4, embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4),
                   qkv_bias=True, sr_ratios=(8, 4, 2, 1), la_sr_ratios="1111", focusing_factor=3, kernel_size=5)


@register_model
def slab_pvt_tiny(pretrained=False, **kwargs):
    args = dict(_PVT_COMMON, depths=(2, 2, 2, 2), attn_type="LLLL")
    return _create(SlabPVT, "slab_pvt_tiny", pretrained, **{**args, **kwargs})


@register_model
def prepbn_pvt_tiny(pretrained=False, **kwargs):
    args = dict(_PVT_COMMON, depths=(2, 2, 2, 2), attn_type="SSSS")
    return _create(SlabPVT, "prepbn_pvt_tiny", pretrained, **{**args, **kwargs})


@register_model
def prepbn_pvt_small(pretrained=False, **kwargs):
    args = dict(_PVT_COMMON, depths=(3, 4, 6, 3), attn_type="SSSS")
    return _create(SlabPVT, "prepbn_pvt_small", pretrained, **{**args, **kwargs})


@register_model
def prepbn_pvt_medium(pretrained=False, **kwargs):
    args = dict(_PVT_COMMON, depths=(3, 4, 18, 3), attn_type="SSSS")
    return _create(SlabPVT, "prepbn_pvt_medium", pretrained, **{**args, **kwargs})


# SLAB-Swin: cfgs/slab_swin_{t,s}.yaml (window 56, attn LLSS, focusing 3, kernel 5; LinearNorm step 60000); the window
# follows img_size (56 at 224), see SlabSwinTransformer.
@register_model
def slab_swin_tiny(pretrained=False, **kwargs):
    args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), attn_type="LLSS")
    return _create(SlabSwinTransformer, "slab_swin_tiny", pretrained, **{**args, **kwargs})


@register_model
def slab_swin_small(pretrained=False, **kwargs):
    args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), attn_type="LLSS")
    return _create(SlabSwinTransformer, "slab_swin_small", pretrained, **{**args, **kwargs})


# Swin-PRepBN: swin_transformer.SwinTransformer + cfgs/swin_t_prepbn.yaml (window 7, softmax everywhere, RepBN).
@register_model
def prepbn_swin_tiny(pretrained=False, **kwargs):
    args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, attn_type="SSSS",
                norm_layer=RepBN)
    return _create(SlabSwinTransformer, "prepbn_swin_tiny", pretrained, **{**args, **kwargs})


# SLAB-CSWin: slab_cswin.SLAB_CSWin_64_24181_tiny_224 + cfgs/slab_cswin_t.yaml (attn LLSS, strips 56-28-14-7).
@register_model
def slab_cswin_tiny(pretrained=False, **kwargs):
    args = dict(embed_dim=64, depth=(2, 4, 18, 1), num_heads=(2, 4, 8, 16), attn_type="LLSS")  # strips follow img_size
    return _create(SlabCSWin, "slab_cswin_tiny", pretrained, **{**args, **kwargs})
