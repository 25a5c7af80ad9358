"""PVT (v1) skeleton: the official ``PyramidVisionTransformer`` with the attention chosen per block by the family.

Shared by Agent-PVT and SLAB-PVT (same state-dict layout: ``patch_embed{i}``, ``pos_embed{i}``, ``block{i}.{j}``).
Quirk kept for checkpoint fidelity: no final norm; the classifier sees the mean of the last stage's tokens.

Input size: ``img_size`` sizes the position embeddings (and the families' size-dependent attention tables);
``set_input_size`` / ``resample_state_dict_to_size`` move them to another size by the family's rules
(``resample_rules``, backbones/skeletons/resample.py). Any other input size runs too: by default the stage embeddings
are resized bilinearly on the fly (the official ``_get_pos_embed``, as the official detection / segmentation models
do); with ``dynamic_img_size=True`` by the family's rule instead, so a forward at size N equals ``set_input_size(N)``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, to_2tuple, trunc_normal_
from timm.models import register_notrace_function
from timm.models._features import feature_take_indices

from .folding import (
    fold_into_attention_input,
    fold_into_conv_input,
    fold_into_linear_input,
    fold_into_output,
    fold_norm,
)
from .heads import ClassifierHead
from .resample import adopt_size_dependent_modules, resample_grid_embed, resample_to_model
from .shared import init_weights, merge_heads, split_heads
from .swin import checked_img_size

__all__ = ["PvtAttention", "PvtBlock", "PvtPatchEmbed", "PyramidVisionTransformer", "SpatialReductionFolding",
           "checked_input_size"]


class SpatialReductionFolding:
    """Re-parameterisation of a PVT attention laid out as ``q``, ``kv`` and, when ``sr_ratio > 1``, the key reduction
    ``sr`` conv + ``norm`` (PvtAttention here, SLAB-PVT's linear attention): what folds where is fixed by that layout."""

    def fold_input_affine(self, scale, shift):
        """The block norm before this attention feeds q and (sr conv, or kv)."""
        fold_into_linear_input(self.q, scale, shift)
        if self.sr_ratio > 1:
            fold_into_conv_input(self.sr, scale, shift)
        else:
            fold_into_linear_input(self.kv, scale, shift)

    def reparameterize(self):
        """Folds the reduced-key norm into the sr conv when that norm is affine at inference."""
        if self.sr_ratio > 1:
            fold_norm(self, "norm", lambda s, b: fold_into_output(self.sr, s, b))


class PvtAttention(SpatialReductionFolding, nn.Module):
    """PVT spatial-reduction softmax attention (the families' softmax stages); ``norm_layer`` normalises the reduced
    keys (LayerNorm in Agent-PVT, the family norm in SLAB-PVT)."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0, sr_ratio=1,
                 norm_layer=nn.LayerNorm):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = norm_layer(dim)

    def forward(self, x, H, W):
        b, n, c = x.shape
        q = split_heads(self.q(x), self.num_heads)
        if self.sr_ratio > 1:
            x = self.norm(self.sr(x.transpose(1, 2).reshape(b, c, H, W)).flatten(2).transpose(1, 2))
        k, v = self.kv(x).reshape(b, x.shape[1], 2, c).unbind(2)  # sizes, not -1: an empty batch
        out = F.scaled_dot_product_attention(
            q, split_heads(k, self.num_heads), split_heads(v, self.num_heads),
            dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale,
        )
        return self.proj_drop(self.proj(merge_heads(out)))



class PvtBlock(nn.Module):
    """Pre-norm transformer block; ``attn_layer(dim)`` builds the attention, called as ``attn(x, H, W)``."""

    def __init__(self, dim, attn_layer: Callable[[int], nn.Module], mlp_ratio=4.0, drop=0.0, drop_path=0.0,
                 act_layer=nn.GELU, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn_layer(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x, H, W):
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def reparameterize(self):
        """Folds affine-at-inference norms into the attention's and the MLP's input layers (no-op for LayerNorm)."""
        fold_norm(self, "norm1", lambda s, b: fold_into_attention_input(self.attn, s, b))
        fold_norm(self, "norm2", lambda s, b: fold_into_linear_input(self.mlp.fc1, s, b))


class PvtPatchEmbed(nn.Module):
    """Strided conv + norm; returns tokens and their grid."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, norm_layer=nn.LayerNorm):
        super().__init__()
        img_size, patch_size = to_2tuple(img_size), to_2tuple(patch_size)
        self.patch_size = patch_size
        self.H, self.W = img_size[0] // patch_size[0], img_size[1] // patch_size[1]
        self.num_patches = self.H * self.W
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim)

    def forward(self, x):
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw

    def reparameterize(self):
        fold_norm(self, "norm", lambda s, b: fold_into_output(self.proj, s, b))


@register_notrace_function  # branches on the grid size: an opaque call in torch.fx graphs
def resized_pos_embed(pos_embed, trained_hw, hw):
    """A stage's (1, H*W, C) position embedding on the actual ``hw`` grid: as trained, or bilinearly resized.

    The official ``_get_pos_embed`` skips the resize when H*W equals *stage 1's* patch count (for every stage); at the
    training size that is the identity for stage 1 and an identity resize for the others, so we compare with the
    stage's own grid instead (the official check would skip the resize of a non-square stage-1 grid of the same area,
    and fail for a stage-2 grid as large as stage 1's).
    """
    hw = (int(hw[0]), int(hw[1]))
    if hw == tuple(trained_hw):
        return pos_embed
    grid = pos_embed.reshape(1, trained_hw[0], trained_hw[1], -1).permute(0, 3, 1, 2)
    return F.interpolate(grid, size=hw, mode="bilinear").flatten(2).transpose(1, 2)


@register_notrace_function  # checks the input's size: an opaque call in torch.fx graphs
def checked_input_size(x: torch.Tensor, multiple: int, who: str) -> torch.Tensor:
    """Returns the image batch ``x`` when its height and width are positive multiples of ``multiple``, else raises."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h <= 0 or w <= 0 or h % multiple or w % multiple:
        raise ValueError(f"{who} with dynamic_img_size=True cannot take a {h}x{w} input: sizes are multiples of "
                         f"{multiple} from {multiple}")
    return x


class PyramidVisionTransformer(ClassifierHead, nn.Module):
    """PVT v1 with flat official stage names (``patch_embed{i}``, ``pos_embed{i}``, ``pos_drop{i}``, ``block{i}``).

    ``block_fn(stage=, index=, dim=, num_patches=, num_heads=, mlp_ratio=, qkv_bias=, qk_scale=, drop=, attn_drop=,
    drop_path=, norm_layer=)`` builds block ``index`` of stage ``stage`` (a :class:`PvtBlock` with the family's
    attention). ``norm_layer`` is the blocks' norm, ``embed_norm_layer`` the patch embeddings' (default: the same).
    ``img_size``: multiples of ``patch_size * 2 ** (num_stages - 1)`` (every stage grid whole). The family sets
    ``resample_rules`` (checkpoints and :meth:`set_input_size`) and ``pos_embed_rule`` (``dynamic_img_size``).
    """

    # Family rules for size-dependent tensors (backbones/skeletons/resample.py); none: nothing is resampled.
    resample_rules: dict = {}
    # resample_grid_embed rule for the stage embeddings under dynamic_img_size ('agent' or 'timm').
    pos_embed_rule = "timm"

    def __init__(self, block_fn: Callable[..., nn.Module], img_size=224, patch_size=16, in_chans=3, num_classes=1000,
                 embed_dims=(64, 128, 256, 512), num_heads=(1, 2, 4, 8), mlp_ratios=(4, 4, 4, 4), qkv_bias=False,
                 qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, norm_layer=None,
                 embed_norm_layer=None, depths=(3, 4, 6, 3), num_stages=4, global_pool="avg", dynamic_img_size=False):
        super().__init__()
        self.stride = patch_size * 2 ** (num_stages - 1)
        self.img_size = img_size = checked_img_size(img_size, self.stride, type(self).__name__)
        self.dynamic_img_size = dynamic_img_size
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)
        embed_norm_layer = embed_norm_layer or norm_layer
        self.num_classes = num_classes
        self.num_stages = num_stages
        self.depths = depths
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = embed_dims[num_stages - 1]
        self.feature_info = []

        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        cur = 0
        for i in range(num_stages):
            reduction = 1 if i == 0 else 2 ** (i - 1) * patch_size
            patch_embed = PvtPatchEmbed(
                img_size=(img_size[0] // reduction, img_size[1] // reduction),
                patch_size=patch_size if i == 0 else 2,
                in_chans=in_chans if i == 0 else embed_dims[i - 1],
                embed_dim=embed_dims[i],
                norm_layer=embed_norm_layer,
            )
            pos_embed = nn.Parameter(torch.zeros(1, patch_embed.num_patches, embed_dims[i]))
            blocks = nn.ModuleList([
                block_fn(stage=i, index=j, dim=embed_dims[i], num_patches=patch_embed.num_patches,
                         num_heads=num_heads[i], mlp_ratio=mlp_ratios[i], qkv_bias=qkv_bias, qk_scale=qk_scale,
                         drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[cur + j], norm_layer=norm_layer)
                for j in range(depths[i])
            ])
            cur += depths[i]
            setattr(self, f"patch_embed{i + 1}", patch_embed)
            setattr(self, f"pos_embed{i + 1}", pos_embed)
            setattr(self, f"pos_drop{i + 1}", nn.Dropout(p=drop_rate))
            setattr(self, f"block{i + 1}", blocks)
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=patch_size * 2 ** i, module=f"block{i + 1}"))

        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        for i in range(num_stages):
            trunc_normal_(getattr(self, f"pos_embed{i + 1}"), std=0.02)
        self.apply(init_weights)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {f"pos_embed{i + 1}" for i in range(self.num_stages)}

    def resample_state_dict_to_size(self, state_dict):
        """A state dict saved at another input size with its size-dependent tensors (stage embeddings, the family's
        attention tables) resampled to this model's shapes by ``resample_rules``; reads only shapes (meta-safe)."""
        return resample_to_model(self, state_dict)

    def set_input_size(self, img_size=None):
        """timm's meaning: the size-dependent parts rebuilt for ``img_size`` in place, the weights kept and resampled
        as :meth:`resample_state_dict_to_size` does (so equal to building at ``img_size`` and loading this model's
        state dict through the family's checkpoint filter)."""
        overrides = dict(img_size=self.img_size if img_size is None else img_size, num_classes=self.num_classes,
                         global_pool=self.global_pool)
        n = self.num_stages
        twin = adopt_size_dependent_modules(self, overrides, [f"{name}{i + 1}" for i in range(n) for name in ("patch_embed", "block")],
                                [f"pos_embed{i + 1}" for i in range(n)])
        self.img_size = twin.img_size

    def _pos_embed(self, index, hw):
        """Stage position embedding on the actual grid: :func:`resized_pos_embed` (bilinear, the official on-the-fly
        resize), or with ``dynamic_img_size`` the family's resampling rule."""
        patch_embed = getattr(self, f"patch_embed{index + 1}")
        pos_embed = getattr(self, f"pos_embed{index + 1}")
        if self.dynamic_img_size:
            return resample_grid_embed(pos_embed, (patch_embed.H, patch_embed.W), hw, 0, self.pos_embed_rule)
        return resized_pos_embed(pos_embed, (patch_embed.H, patch_embed.W), hw)

    def _checked(self, x):
        return checked_input_size(x, self.stride, type(self).__name__) if self.dynamic_img_size else x

    def _stage(self, index, x):
        """Runs stage ``index`` on an NCHW map (or the image); returns tokens (B, H*W, C) and (H, W)."""
        x, hw = getattr(self, f"patch_embed{index + 1}")(x)
        x = getattr(self, f"pos_drop{index + 1}")(x + self._pos_embed(index, hw))
        for blk in getattr(self, f"block{index + 1}"):
            x = blk(x, hw[0], hw[1])
        return x, hw

    @staticmethod
    def _to_nchw(x, hw):
        return x.reshape(x.shape[0], hw[0], hw[1], x.shape[-1]).permute(0, 3, 1, 2).contiguous()

    def forward_features(self, x):
        """The last stage's map, NCHW (B, C, H/32, W/32), as timm's PVT-v2 returns it."""
        x = self._checked(x)
        for i in range(self.num_stages):
            x, hw = self._stage(i, x)
            x = self._to_nchw(x, hw)
        return x

    def forward_head(self, x, pre_logits: bool = False):
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))  # the official mean of the last stage's tokens
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """Per-stage NCHW maps (the official downstream outputs) and, unless intermediates_only, the final map (NCHW, as
        :meth:`forward_features`)."""
        if output_fmt != "NCHW":
            raise ValueError(f"{type(self).__name__} intermediates are NCHW only")
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        x = self._checked(x)
        intermediates = []
        last = max_index if stop_early or intermediates_only else self.num_stages - 1
        for i in range(last + 1):
            x, hw = self._stage(i, x)
            feat = self._to_nchw(x, hw)
            if i in take_indices:
                intermediates.append(feat)
            x = feat
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        for i in range(max_index + 1, self.num_stages):
            for name in ("patch_embed", "pos_drop", "block"):
                setattr(self, f"{name}{i + 1}", nn.Identity() if name != "block" else nn.ModuleList())
            delattr(self, f"pos_embed{i + 1}")
            self.register_parameter(f"pos_embed{i + 1}", None)
        self.num_stages = max_index + 1
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices
