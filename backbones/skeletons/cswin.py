"""CSWin skeleton: the official ``CSWinTransformer`` with the attention of each block's branches chosen by the
family.

Shared by Agent-CSWin and SLAB-CSWin (same state-dict layout: ``stage1_conv_embed.{0,2}``, ``stage{i}.{j}.{qkv,
norm1, attns.k.*, proj, norm2, mlp.*}``, ``merge{i}``, ``norm``, ``head``). Fixed input size, as the official model:
``img_size`` at construction, :meth:`CSWinTransformer.set_input_size` to change it in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, to_2tuple
from timm.models import register_notrace_function
from timm.models._features import feature_take_indices

from .folding import fold_into_linear_input, fold_into_output, fold_norm
from .heads import ClassifierHead
from .resample import adopt_size_dependent_modules, resample_to_model
from .shared import init_weights, merge_heads, split_heads

__all__ = ["CSWinBlock", "CSWinLePEAttention", "CSWinMergeBlock", "CSWinStem", "CSWinTransformer",
           "cswin_lepe_branch", "cswin_split_sizes", "cswin_strip", "strip_partition", "strip_reverse"]


def cswin_split_sizes(img_size: int, split_size=None, la_split_size=None) -> tuple[list[int], list[int]]:
    """Strip sizes per stage for ``img_size``, as the official configs set them: the softmax stages' ``split_size``
    (1, 2, img/32, img/32) (official ``CSWinTransformer``'s comment; 1-2-7-7 at 224, 1-2-12-12 at 384) and the
    agent / linear stages' strips = the stage grids (img/4 .. img/32: '56-28-14-7' at 224, '96-48-24-12' at 384,
    i.e. global). An explicit value wins."""
    split = [1, 2, img_size // 32, img_size // 32] if split_size is None else [int(s) for s in split_size]
    if la_split_size is None:
        la_split = [img_size // 2 ** (i + 2) for i in range(4)]
    else:
        la_split = [int(s) for s in str(la_split_size).split("-")]
    return split, la_split


def strip_partition(x, hw, strip):
    """(B, H*W, C) -> (B * n_strips, sh * sw, C): row-major strips of size ``strip`` = (sh, sw)."""
    b, _, c = x.shape
    (h, w), (sh, sw) = hw, strip
    x = x.view(b, h // sh, sh, w // sw, sw, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b * (h // sh) * (w // sw), sh * sw, c)  # sizes, not -1: an empty batch has no -1 to infer


def strip_reverse(x, hw, strip):
    (h, w), (sh, sw) = hw, strip
    c = x.shape[-1]
    b = x.shape[0] // ((h // sh) * (w // sw))
    x = x.view(b, h // sh, w // sw, sh, sw, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * w, c)


def cswin_strip(resolution, split_size, branch):
    """Strip shape of a CSWin branch: -1 the whole map, 0 full-height columns, 1 full-width rows."""
    if branch == -1:
        return resolution, resolution
    return (resolution, split_size) if branch == 0 else (split_size, resolution)


@register_notrace_function  # shape checks are opaque calls in torch.fx graphs (timm's notrace registry)
def checked_square_tokens(x, resolution):
    """Returns ``x`` when it holds ``resolution`` x ``resolution`` tokens, else raises naming the fix."""
    if x.shape[1] != resolution ** 2:
        raise ValueError(f"CSWinBlock expects {resolution}x{resolution} tokens, got {x.shape[1]} "
                         "(CSWin models are built for one input size: pass img_size)")
    return x


@register_notrace_function
def square_tokens_to_nchw(x):
    """(B, side*side, C) row-major tokens -> (B, C, side, side)."""
    b, n, c = x.shape
    side = math.isqrt(n)
    return x.transpose(1, 2).reshape(b, c, side, side)


class CSWinLePEAttention(nn.Module):
    """CSWin cross-shaped window attention with locally-enhanced positional encoding (the softmax blocks)."""

    def __init__(self, dim, resolution, branch, split_size=7, num_heads=8, attn_drop=0.0, qk_scale=None):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.resolution = resolution
        self.strip = cswin_strip(resolution, split_size, branch)
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)
        self.attn_drop = attn_drop

    def forward(self, q, k, v):
        hw = (self.resolution, self.resolution)
        q, k, v = (strip_partition(t, hw, self.strip) for t in (q, k, v))
        n, c = v.shape[1:]
        lepe = self.get_v(v.transpose(1, 2).reshape(v.shape[0], c, *self.strip)).flatten(2).transpose(1, 2)
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale,
                                             dropout_p=self.attn_drop if self.training else 0.0)
        return strip_reverse(merge_heads(out) + lepe, hw, self.strip)


def cswin_lepe_branch(dim, branch, num_heads, reso, split_size, attn_drop, qk_scale):
    """A :class:`CSWinBlock` ``attn_layer`` (with the other arguments bound by ``partial``): CSWin's LePE attention,
    the softmax stages of the families on this skeleton."""
    return CSWinLePEAttention(dim, reso, branch, split_size=split_size, num_heads=num_heads, attn_drop=attn_drop,
                              qk_scale=qk_scale)


class CSWinBlock(nn.Module):
    """CSWin block: one branch over the whole map (last stage, or split == resolution), else two half-width
    branches (columns, rows). ``attn_layer(branch_dim, branch, branch_heads)`` builds each branch's attention
    (branch -1 whole map, 0 columns, 1 rows), called as ``attn(q, k, v)`` on (B, H*W, branch_dim) tensors."""

    def __init__(self, dim, reso, num_heads, attn_layer: Callable[[int, int, int], nn.Module], split_size=7,
                 mlp_ratio=4.0, qkv_bias=False, drop=0.0, drop_path=0.0, act_layer=nn.GELU, norm_layer=nn.LayerNorm,
                 last_stage=False):
        super().__init__()
        self.resolution = reso
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.norm1 = norm_layer(dim)
        self.branch_num = 1 if (last_stage or reso == split_size) else 2
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)
        branches = [-1] if self.branch_num == 1 else [0, 1]
        branch_dim, branch_heads = (dim, num_heads) if self.branch_num == 1 else (dim // 2, num_heads // 2)
        self.attns = nn.ModuleList([attn_layer(branch_dim, i, branch_heads) for i in branches])
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.norm2 = norm_layer(dim)

    def forward(self, x):
        b, n, c = checked_square_tokens(x, self.resolution).shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, c).unbind(2)
        if self.branch_num == 2:
            half = c // 2
            out = torch.cat([self.attns[0](q[..., :half], k[..., :half], v[..., :half]),
                             self.attns[1](q[..., half:], k[..., half:], v[..., half:])], dim=2)
        else:
            out = self.attns[0](q, k, v)
        x = x + self.drop_path(self.proj_drop(self.proj(out)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def reparameterize(self):
        """Folds affine-at-inference norms into qkv and the MLP's fc1 (no-op for LayerNorm)."""
        fold_norm(self, "norm1", lambda s, b: fold_into_linear_input(self.qkv, s, b))
        fold_norm(self, "norm2", lambda s, b: fold_into_linear_input(self.mlp.fc1, s, b))


class CSWinMergeBlock(nn.Module):
    """3x3 stride-2 conv + norm between stages (official ``Merge_Block``)."""

    def __init__(self, dim, dim_out, norm_layer=nn.LayerNorm):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 3, 2, 1)
        self.norm = norm_layer(dim_out)

    def forward(self, x):
        x = self.conv(square_tokens_to_nchw(x))
        return self.norm(x.flatten(2).transpose(1, 2))

    def reparameterize(self):
        fold_norm(self, "norm", lambda s, b: fold_into_output(self.conv, s, b))


class CSWinStem(nn.Sequential):
    """7x7 stride-4 conv, tokens, norm; a Sequential so the official keys (stage1_conv_embed.0/.2) hold."""

    def __init__(self, in_chans, embed_dim, norm_layer):
        super().__init__(nn.Conv2d(in_chans, embed_dim, 7, 4, 2), _ToTokens(), norm_layer(embed_dim))

    def reparameterize(self):
        fold_norm(self, "2", lambda s, b: fold_into_output(self[0], s, b))


class _ToTokens(nn.Module):
    """(B, C, H, W) -> (B, H*W, C); sits at index 1 of the stem so the official keys (stage1_conv_embed.0/.2) hold."""

    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class CSWinTransformer(ClassifierHead, nn.Module):
    """CSWin Transformer. ``block_fn(stage=, index=, dim=, reso=, num_heads=, mlp_ratio=, qkv_bias=, qk_scale=,
    drop=, attn_drop=, drop_path=, norm_layer=, last_stage=)`` builds block ``index`` of stage ``stage`` (a
    :class:`CSWinBlock` with the family's attention and split size). ``norm_layer`` is the blocks' and the final norm,
    ``embed_norm_layer`` the stem's and the merge blocks' (default: the same). ``img_size``: square, a multiple of
    32; the family's ``resample_rules`` resample size-dependent tensors (:meth:`resample_state_dict_to_size`)."""

    # Family rules for size-dependent tensors (backbones/skeletons/resample.py); none: nothing is resampled.
    resample_rules: dict = {}

    def __init__(self, block_fn: Callable[..., nn.Module], img_size=224, in_chans=3, num_classes=1000, embed_dim=96,
                 depth=(2, 2, 6, 2), num_heads=(2, 4, 8, 16), mlp_ratio=4.0, qkv_bias=True, qk_scale=None,
                 drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, norm_layer=nn.LayerNorm,
                 embed_norm_layer=None, global_pool="avg"):
        super().__init__()
        embed_norm_layer = embed_norm_layer or norm_layer
        size = to_2tuple(img_size)
        if size[0] != size[1] or int(size[0]) <= 0 or int(size[0]) % 32:
            raise ValueError(f"{type(self).__name__} cannot take img_size={img_size}: square sizes, multiples of 32 "
                             "from 32 (e.g. 224, 384; the official model is square with whole, even stage grids)")
        self.img_size = img_size = int(size[0])
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.stage1_conv_embed = CSWinStem(in_chans, embed_dim, embed_norm_layer)
        dpr = torch.linspace(0, drop_path_rate, sum(depth), device="cpu").tolist()
        dim, cur = embed_dim, 0
        self.num_stages = 4
        self.resolutions = [img_size // 2 ** (i + 2) for i in range(4)]
        self.feature_info = []
        for i in range(4):
            if i > 0:
                setattr(self, f"merge{i}", CSWinMergeBlock(dim, dim * 2, norm_layer=embed_norm_layer))
                dim *= 2
            setattr(self, f"stage{i + 1}", nn.ModuleList([
                block_fn(stage=i, index=j, dim=dim, reso=img_size // 2 ** (i + 2), num_heads=num_heads[i],
                         mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate,
                         attn_drop=attn_drop_rate, drop_path=dpr[cur + j], norm_layer=norm_layer, last_stage=i == 3)
                for j in range(depth[i])
            ]))
            cur += depth[i]
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2 ** i, module=f"stage{i + 1}"))
        self.num_features = self.head_hidden_size = dim
        self.output_fmt = "NHWC"  # forward_features' layout (timm's attribute)
        self.norm = norm_layer(dim)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_weights)

    def resample_state_dict_to_size(self, state_dict):
        """A state dict saved at another input size with its size-dependent tensors resampled to this model's shapes
        (family rules); reads only shapes, so it works on a meta-device model."""
        return resample_to_model(self, state_dict)

    def set_input_size(self, img_size=None):
        """timm's meaning: rebuilds the size-dependent parts (stage grids, strips, biases) for ``img_size`` in place
        and keeps the weights, resampled as :meth:`resample_state_dict_to_size` does. Strip sizes the model was
        built with explicitly stay; derived ones follow ``img_size``."""
        overrides = dict(img_size=self.img_size if img_size is None else img_size, num_classes=self.num_classes,
                         global_pool=self.global_pool)
        twin = adopt_size_dependent_modules(self, overrides, [
            f"stage{i + 1}.{j}" for i in range(self.num_stages) for j in range(len(getattr(self, f"stage{i + 1}")))])
        self.img_size, self.resolutions = twin.img_size, list(twin.resolutions)

    def _stage(self, index, x):
        """Stage ``index`` on the image (index 0) or the previous stage's tokens; returns (B, N, C) tokens."""
        x = self.stage1_conv_embed(x) if index == 0 else getattr(self, f"merge{index}")(x)
        for blk in getattr(self, f"stage{index + 1}"):
            x = blk(x)
        return x

    def _to_map(self, x, index, channels_last):
        side = self.resolutions[index]
        x = x.reshape(x.shape[0], side, side, x.shape[-1])
        return x if channels_last else x.permute(0, 3, 1, 2).contiguous()

    def forward_features(self, x):
        """The normed last-stage map, NHWC (B, H/32, W/32, C) (``output_fmt``)."""
        for i in range(self.num_stages):
            x = self._stage(i, x)
        return self._to_map(self.norm(x), self.num_stages - 1, channels_last=True)

    def forward_head(self, x, pre_logits: bool = False):
        if self.global_pool == "avg":
            x = x.mean(dim=(1, 2))  # the official mean over tokens
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """Stage outputs as NCHW (or NHWC) maps at strides 4-32 and, unless intermediates_only, the final map (NHWC,
        as :meth:`forward_features`). ``norm=True`` applies the final norm to the last stage's map."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"{type(self).__name__} intermediates are NCHW or NHWC, got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        last = max_index if stop_early or intermediates_only else self.num_stages - 1
        intermediates = []
        for i in range(last + 1):
            x = self._stage(i, x)
            if i in take_indices:
                feat = self.norm(x) if norm and i == self.num_stages - 1 else x
                intermediates.append(self._to_map(feat, i, channels_last=output_fmt == "NHWC"))
        if intermediates_only:
            return intermediates
        final = self.norm(x) if last == self.num_stages - 1 else x
        return self._to_map(final, last, channels_last=True), intermediates

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        """Drops the stages after the last one taken (their merge blocks too); returns the taken indices."""
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        for i in range(max_index + 1, self.num_stages):
            setattr(self, f"stage{i + 1}", nn.ModuleList())
            setattr(self, f"merge{i}", nn.Identity())
        if max_index + 1 < self.num_stages:
            self.num_stages = max_index + 1
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            prune_norm = prune_head = True  # the final norm and head are sized for the dropped last stage
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices
