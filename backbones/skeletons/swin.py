"""Swin skeleton: the official ``SwinTransformer`` (classification and downstream) with the attention chosen per
block by the family.

Shared by Agent-Swin and SLAB-Swin (same state-dict layout: ``layers.i.blocks.j.{norm1, attn.*, norm2, mlp.*}``,
``layers.i.downsample``, ``patch_embed``, ``norm``, ``head``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, to_2tuple, trunc_normal_
from timm.models import register_notrace_function
from timm.models._features import feature_take_indices

from .folding import fold_into_attention_input, fold_into_linear_input, fold_into_output, fold_norm
from .heads import ClassifierHead
from .resample import adopt_size_dependent_modules, resample_to_model
from .shared import init_weights

__all__ = ["PatchMerging", "SwinBlock", "SwinPatchEmbed", "SwinStage", "SwinTransformer", "WindowAttention",
           "checked_img_size", "shifted_window_mask", "window_partition", "window_reverse"]


def checked_img_size(img_size, multiple: int, who: str) -> tuple[int, int]:
    """(h, w) of ``img_size``, each a positive multiple of ``multiple`` (the total stride: every stage grid is then
    whole and even before each patch merging, as the official models need), else one ValueError naming the sizes."""
    size = tuple(int(s) for s in to_2tuple(img_size))
    if len(size) != 2 or any(s <= 0 or s % multiple for s in size):
        raise ValueError(f"{who} cannot take img_size={img_size}: sizes are multiples of {multiple} from {multiple} "
                         f"(e.g. 224, 288, 384)")
    return size


def window_partition(x, window_size):
    b, h, w, c = x.shape
    x = x.reshape(b, h // window_size, window_size, w // window_size, window_size, c)
    # sizes, not -1, here and below: an empty batch (0 elements) has no -1 to infer
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b * (h // window_size) * (w // window_size), window_size * window_size, c)


def window_reverse(windows, window_size, h, w):
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window_size) * (w // window_size))
    x = windows.reshape(b, h // window_size, w // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


# torch.fx cannot trace Python branches on map sizes: the functions below that build masks or pad by size are opaque
# calls in FX graphs (timm's notrace registry; FX wraps only names without a leading underscore).
@register_notrace_function
def shifted_window_mask(h, w, window_size, shift_size, device=None):
    """Swin's (0 / -100) mask for the cyclically shifted windows of an (h, w) map (h, w multiples of the window)."""
    img_mask = torch.zeros((1, h, w, 1), device=device)
    slices = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    cnt = 0
    for hs in slices:
        for ws in slices:
            img_mask[:, hs, ws, :] = cnt
            cnt += 1
    mask_windows = window_partition(img_mask, window_size).squeeze(-1)
    mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class WindowAttention(nn.Module):
    """Swin window attention with relative position bias (the families' softmax blocks)."""

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, qk_scale=None, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.window_size = to_2tuple(window_size)
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
        index = (rel[..., 0] + wh - 1) * (2 * ww - 1) + (rel[..., 1] + ww - 1)
        # Rebuilt from the window size; the families' checkpoint filters drop the copy official checkpoints carry.
        self.register_buffer("relative_position_index", index, persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x, mask=None):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        bias = bias.permute(2, 0, 1).unsqueeze(0)  # (1, heads, n, n)
        if mask is not None:
            nw = mask.shape[0]
            bias = (bias + mask.unsqueeze(1)).unsqueeze(0)  # (1, nW, heads, n, n)
            q, k, v = (t.view(b // nw, nw, self.num_heads, n, c // self.num_heads) for t in (q, k, v))
        if torch.compiler.is_exporting():
            # torch.export's SDPA decomposition (torch 2.14) reports output strides it does not have, and the
            # reshape below then fails as an invalid view in the ONNX exporter: spell the same attention out.
            attn = (q * self.scale) @ k.transpose(-2, -1) + bias.to(q.dtype)
            out = attn.softmax(dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale,
                                                 dropout_p=self.attn_drop if self.training else 0.0)
        out = out.reshape(b, self.num_heads, n, c // self.num_heads).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


@register_notrace_function
def pad_to_windows(x, window_size, pad_value=None):
    """Pads an NHWC map at the bottom/right to multiples of ``window_size`` with zeros, or with ``pad_value`` (the
    pre-norm value that a folded norm1 maps to 0, see :meth:`SwinBlock.reparameterize`)."""
    _, h, w, _ = x.shape
    pad_b, pad_r = (window_size - h % window_size) % window_size, (window_size - w % window_size) % window_size
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    if pad_value is not None and (pad_b or pad_r):
        hp, wp = x.shape[1], x.shape[2]
        rows = torch.arange(hp, device=x.device)[:, None] >= h
        cols = torch.arange(wp, device=x.device)[None, :] >= w
        x = torch.where((rows | cols)[None, :, :, None], pad_value.to(x.dtype), x)
    return x


@register_notrace_function
def checked_token_grid(x, hw, who):
    """Returns ``x`` when its (B, N, C) tokens fill the ``hw`` grid, else raises (kept in FX graphs as a call)."""
    if x.shape[1] != hw[0] * hw[1]:
        raise ValueError(f"{who} got {x.shape[1]} tokens but was told the grid is {hw[0]}x{hw[1]}")
    return x


@register_notrace_function
def pad_to_even(x):
    """Zero-pads an NHWC map to even height and width (patch merging of odd grids, official downstream)."""
    h, w = x.shape[1], x.shape[2]
    if h % 2 or w % 2:
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    return x


class SwinBlock(nn.Module):
    """Swin block around a family attention built by ``attn_layer(dim, window_size)``.

    ``global_attn=False``: (shifted) window attention, called as ``attn(windows, mask=mask)``; a window as large as
    the grid is neither partitioned nor shifted (official classification behaviour, from Swin) unless
    ``always_partition`` (the official downstream backbones keep window and shift at every size).
    ``global_attn=True``: the attention sees the whole map, called as ``attn(x, (H, W))``; no shift.
    """

    def __init__(self, dim, input_resolution, num_heads, attn_layer: Callable[[int, int], nn.Module], window_size=7,
                 shift_size=0, global_attn=False, mlp_ratio=4.0, drop=0.0, drop_path=0.0, act_layer=nn.GELU,
                 norm_layer=nn.LayerNorm, always_partition=False):
        super().__init__()
        self.global_attn = global_attn
        self.input_resolution = tuple(input_resolution)
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        if global_attn:
            self.shift_size = 0
        elif not always_partition and min(self.input_resolution) <= window_size:
            self.shift_size = 0
            self.window_size = min(self.input_resolution)
        if not 0 <= self.shift_size < self.window_size:
            raise ValueError(f"shift_size {self.shift_size} must lie in [0, window_size={self.window_size})")
        self.norm1 = norm_layer(dim)
        # Value of the padding of windowed maps: 0 after norm1; once norm1 is folded into the attention (reparameterize)
        # the padded tokens must be the pre-norm value that norm1 maps to 0, so the two models stay equal.
        self.register_buffer("pad_value", None, persistent=False)
        self.attn = attn_layer(dim, self.window_size)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def _window_attention(self, x):
        h, w = x.shape[1], x.shape[2]
        ws = self.window_size
        x = pad_to_windows(x, ws, self.pad_value)
        hp, wp = x.shape[1], x.shape[2]
        mask = None
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            mask = shifted_window_mask(hp, wp, ws, self.shift_size, device=x.device).to(x.dtype)
        x = window_reverse(self.attn(window_partition(x, ws), mask=mask), ws, hp, wp)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        return x[:, :h, :w, :]

    def forward(self, x, hw):
        b, n, c = checked_token_grid(x, hw, "SwinBlock").shape
        shortcut = x
        x = self.norm1(x)
        if self.global_attn:
            x = self.attn(x, hw)
        else:
            x = self._window_attention(x.view(b, hw[0], hw[1], c)).reshape(b, n, c)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def reparameterize(self):
        """Folds affine-at-inference norms into the attention's qkv and the MLP's fc1 (no-op for LayerNorm)."""
        affine = fold_norm(self, "norm1", lambda s, b: fold_into_attention_input(self.attn, s, b))
        if affine is not None and not self.global_attn:
            scale, shift = affine
            if bool((scale == 0).any()):
                raise ValueError("norm1 has a zero scale: padded windows could not be reproduced after folding")
            self.register_buffer("pad_value", (-shift / scale).detach(), persistent=False)
        fold_norm(self, "norm2", lambda s, b: fold_into_linear_input(self.mlp.fc1, s, b))


class PatchMerging(nn.Module):
    """2x2 patch merging; odd grids are zero-padded (official downstream behaviour)."""

    def __init__(self, dim, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x, hw):
        b, n, c = x.shape
        h, w = hw
        x = pad_to_even(x.view(b, h, w, c))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        out_hw = (x.shape[1], x.shape[2])
        return self.reduction(self.norm(x.reshape(b, out_hw[0] * out_hw[1], 4 * c))), out_hw

    def reparameterize(self):
        fold_norm(self, "norm", lambda s, b: fold_into_linear_input(self.reduction, s, b))


class SwinStage(nn.Module):
    """Official ``BasicLayer``: blocks, then the patch merging that feeds the next stage."""

    def __init__(self, blocks, dim, norm_layer=nn.LayerNorm, downsample=True):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = PatchMerging(dim, norm_layer=norm_layer) if downsample else None

    def forward(self, x, hw):
        """Returns (stage output, its grid) before the patch merging; call ``self.downsample`` for the next stage."""
        for blk in self.blocks:
            x = blk(x, hw)
        return x, hw


class SwinPatchEmbed(nn.Module):
    """Patch embedding that pads the image to a multiple of the patch size (official downstream behaviour)."""

    def __init__(self, patch_size=4, in_chans=3, embed_dim=96, norm_layer=nn.LayerNorm):
        super().__init__()
        self.patch_size = to_2tuple(patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x):
        ph, pw = self.patch_size
        x = F.pad(x, (0, (pw - x.shape[3] % pw) % pw, 0, (ph - x.shape[2] % ph) % ph))
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        return (self.norm(x) if self.norm is not None else x), hw

    def reparameterize(self):
        if self.norm is not None:
            fold_norm(self, "norm", lambda s, b: fold_into_output(self.proj, s, b))


class SwinTransformer(ClassifierHead, nn.Module):
    """Swin Transformer (classification and downstream layouts).

    ``block_fn(stage=, index=, dim=, input_resolution=, num_heads=, window_size=, mlp_ratio=, qkv_bias=, qk_scale=,
    drop=, attn_drop=, drop_path=, norm_layer=, always_partition=)`` builds block ``index`` of stage ``stage`` (a
    :class:`SwinBlock` with the family's attention, window and shift). ``input_resolution`` is the stage grid at
    ``img_size``. ``out_norms=True`` is the official downstream layout: per-stage norms ``norm0..norm3`` (built by
    ``out_norm_layer``, default ``norm_layer``) on the intermediates and no final norm or classifier, so detection /
    segmentation checkpoints load strictly.

    Input size: ``img_size`` (multiples of the total stride) is the size the size-dependent parts are built for;
    :meth:`set_input_size` changes it in place, :meth:`resample_state_dict_to_size` brings a checkpoint saved at
    another size to this one, both by the family's ``resample_rules``.
    """

    # Family rules for size-dependent tensors (backbones/skeletons/resample.py); none: nothing is resampled.
    resample_rules: dict = {}

    def __init__(self, block_fn: Callable[..., nn.Module], img_size=224, patch_size=4, in_chans=3, num_classes=1000,
                 embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4.0,
                 qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1,
                 norm_layer=nn.LayerNorm, ape=False, patch_norm=True, always_partition=False, out_norms=False,
                 out_norm_layer=None, global_pool="avg"):
        super().__init__()
        if ape:
            raise ValueError("ape=True (absolute position embedding) is used by none of the official models here; "
                             "not supported")
        self.num_classes = num_classes
        self.num_layers = len(depths)
        self.global_pool = global_pool
        self.embed_dim = embed_dim
        self.num_features = self.head_hidden_size = int(embed_dim * 2 ** (self.num_layers - 1))
        self.output_fmt = "NHWC"  # forward_features' layout (timm's attribute, as its Swin)
        self.img_size = img_size = checked_img_size(img_size, patch_size * 2 ** (self.num_layers - 1),
                                                    type(self).__name__)
        grid = (img_size[0] // patch_size, img_size[1] // patch_size)

        self.patch_embed = SwinPatchEmbed(patch_size, in_chans, embed_dim, norm_layer if patch_norm else None)
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        self.feature_info = []
        for i in range(self.num_layers):
            dim = int(embed_dim * 2 ** i)
            drop_path = dpr[sum(depths[:i]):sum(depths[:i + 1])]
            blocks = [
                block_fn(stage=i, index=j, dim=dim, input_resolution=(grid[0] // 2 ** i, grid[1] // 2 ** i),
                         num_heads=num_heads[i], window_size=window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                         qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate, drop_path=drop_path[j],
                         norm_layer=norm_layer, always_partition=always_partition)
                for j in range(depths[i])
            ]
            self.layers.append(SwinStage(blocks, dim, norm_layer=norm_layer, downsample=i < self.num_layers - 1))
            self.feature_info.append(dict(num_chs=dim, reduction=patch_size * 2 ** i, module=f"layers.{i}"))
        self.out_norms = out_norms
        if out_norms:
            # The official downstream backbone: per-stage output norms, and neither final norm nor classifier.
            for i in range(self.num_layers):
                self.add_module(f"norm{i}", (out_norm_layer or norm_layer)(int(embed_dim * 2 ** i)))
            num_classes = self.num_classes = 0
        self.norm = nn.Identity() if out_norms else norm_layer(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_weights)

    @torch.jit.ignore
    def no_weight_decay_keywords(self):
        return {"relative_position_bias_table"}

    def resample_state_dict_to_size(self, state_dict):
        """A state dict saved at another input size with its size-dependent tensors resampled to this model's shapes
        (family rules); reads only shapes, so it works on a meta-device model."""
        return resample_to_model(self, state_dict)

    def set_input_size(self, img_size=None, window_size=None):
        """timm's meaning: rebuilds the size-dependent parts (windows, shifts, masks, biases) for ``img_size`` in
        place and keeps the weights, resampled as :meth:`resample_state_dict_to_size` does. ``window_size``: as at
        construction (None: the family derives it from ``img_size``, else the one the model was built with)."""
        overrides = dict(img_size=self.img_size if img_size is None else img_size, num_classes=self.num_classes,
                         global_pool=self.global_pool)
        if window_size is not None:
            overrides["window_size"] = window_size
        twin = adopt_size_dependent_modules(self, overrides, [
            f"layers.{i}.blocks.{j}" for i, layer in enumerate(self.layers) for j in range(len(layer.blocks))])
        self.img_size = twin.img_size

    def forward_features(self, x):
        """The normed last-stage map, NHWC (B, H/32, W/32, C): ``output_fmt``, as timm's Swin returns it."""
        x, hw = self.patch_embed(x)
        x = self.pos_drop(x)
        for layer in self.layers:
            x, hw = layer(x, hw)
            if layer.downsample is not None:
                x, hw = layer.downsample(x, hw)
        return self.norm(x).reshape(x.shape[0], hw[0], hw[1], x.shape[-1])

    def forward_head(self, x, pre_logits: bool = False):
        if self.global_pool == "avg":
            x = x.mean(dim=(1, 2))  # the official mean over tokens
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """Stage outputs before patch merging, as NCHW maps (through ``norm{i}`` when built with out_norms), and unless
        intermediates_only the final map (NHWC, as :meth:`forward_features`)."""
        if output_fmt != "NCHW":
            raise ValueError(f"{type(self).__name__} intermediates are NCHW only")
        take_indices, max_index = feature_take_indices(self.num_layers, indices)
        x, hw = self.patch_embed(x)
        x = self.pos_drop(x)
        intermediates = []
        layers = self.layers if not (stop_early or intermediates_only) else self.layers[:max_index + 1]
        for i, layer in enumerate(layers):
            x, hw = layer(x, hw)
            if i in take_indices:
                feat = getattr(self, f"norm{i}")(x) if self.out_norms else x
                intermediates.append(feat.reshape(x.shape[0], hw[0], hw[1], feat.shape[-1]).permute(0, 3, 1, 2).contiguous())
            if layer.downsample is not None and i < len(layers) - 1:
                x, hw = layer.downsample(x, hw)
        if intermediates_only:
            return intermediates
        if len(layers) == self.num_layers:
            x = self.norm(x)
        return x.reshape(x.shape[0], hw[0], hw[1], x.shape[-1]), intermediates

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        take_indices, max_index = feature_take_indices(self.num_layers, indices)
        self.layers = self.layers[:max_index + 1]
        self.layers[-1].downsample = None
        self.num_layers = max_index + 1
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices
