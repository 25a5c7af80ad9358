"""DeiT skeleton: the official DeiT ``VisionTransformer`` with the block chosen per index by the family.

Shared by Agent-DeiT and SLAB-DeiT (same state-dict layout: ``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.i.{norm1, attn.*, norm2, mlp.*}``, ``norm``, ``head``). The position embedding (and the families' attention
tables) are tied to the patch grid of ``img_size``; ``set_input_size`` / ``resample_state_dict_to_size`` move them to
another size by the family's rules, and ``dynamic_img_size=True`` (timm's ViT option) resamples them on the fly for
any input size (multiples of the patch size), equal to ``set_input_size`` at that size.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn
from timm.layers import DropPath, Mlp, PatchEmbed, to_2tuple, trunc_normal_
from timm.models._features import feature_take_indices

from .folding import fold_into_attention_input, fold_into_linear_input, fold_norm
from .heads import ClassifierHead
from .pvt import checked_input_size
from .resample import adopt_size_dependent_modules, resample_grid_embed, resample_to_model
from .shared import init_weights
from .swin import checked_img_size

__all__ = ["DeitBlock", "VisionTransformer"]


class DeitBlock(nn.Module):
    """Pre-norm ViT block; ``attn_layer(dim)`` builds the attention, called as ``attn(x)`` on all tokens."""

    def __init__(self, dim, attn_layer: Callable[[int], nn.Module], mlp_ratio=4.0, drop=0.0, drop_path=0.0,
                 act_layer=nn.GELU, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn_layer(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    @property
    def takes_grid(self) -> bool:
        """Whether the attention takes the patch grid per call (``attn(x, grid)``: a size-dependent attention)."""
        return getattr(self.attn, "takes_grid", False)

    def forward(self, x, grid=None):
        x = x + self.drop_path(self.attn(self.norm1(x)) if grid is None else self.attn(self.norm1(x), grid))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def reparameterize(self):
        """Folds affine-at-inference norms into the attention's qkv and the MLP's fc1 (no-op for LayerNorm)."""
        fold_norm(self, "norm1", lambda s, b: fold_into_attention_input(self.attn, s, b))
        fold_norm(self, "norm2", lambda s, b: fold_into_linear_input(self.mlp.fc1, s, b))


class VisionTransformer(ClassifierHead, nn.Module):
    """DeiT. ``block_fn(index=, dim=, num_heads=, mlp_ratio=, qkv_bias=, drop=, attn_drop=, drop_path=, norm_layer=,
    act_layer=, grid_size=)`` builds block ``index``. ``class_token=True``: a class token is prepended (and has a
    position embedding); ``class_token=False``: patch tokens only. ``img_size``: multiples of ``patch_size``. The
    family sets ``resample_rules`` (checkpoints and :meth:`set_input_size`) and ``pos_embed_rule``
    (``dynamic_img_size``: blocks whose ``takes_grid`` is true get the actual patch grid per call)."""

    # Family rules for size-dependent tensors (backbones/skeletons/resample.py); none: nothing is resampled.
    resample_rules: dict = {}
    # resample_grid_embed rule for pos_embed under dynamic_img_size ('agent' or 'timm').
    pos_embed_rule = "timm"

    def __init__(self, block_fn: Callable[..., nn.Module], img_size=224, patch_size=16, in_chans=3, num_classes=1000,
                 embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, qkv_bias=True, drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.0, norm_layer=None, act_layer=None, class_token=True,
                 global_pool="token", dynamic_img_size=False):
        super().__init__()
        self.img_size = img_size = checked_img_size(img_size, to_2tuple(patch_size)[0], type(self).__name__)
        self.dynamic_img_size = dynamic_img_size
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)
        act_layer = act_layer or nn.GELU
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1 if class_token else 0
        # dynamic: any input size, the grid read from the NHWC patch map (timm's ViT does the same)
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                                      strict_img_size=not dynamic_img_size, flatten=not dynamic_img_size,
                                      output_fmt="NHWC" if dynamic_img_size else None)
        grid = self.patch_embed.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + self.num_prefix_tokens, embed_dim))
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.Sequential(*[
            block_fn(index=i, dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                     drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i], norm_layer=norm_layer,
                     act_layer=act_layer, grid_size=tuple(grid))
            for i in range(depth)
        ])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        # every block is a feature level (timm's ViT/DeiT: features_only through forward_intermediates)
        reduction = self.patch_embed.patch_size[0]
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=reduction) for i in range(depth)]
        trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_weights)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {"pos_embed", "cls_token"}

    def resample_state_dict_to_size(self, state_dict):
        """A state dict saved at another input size with its size-dependent tensors (pos_embed, the family's attention
        tables) resampled to this model's shapes by ``resample_rules``; reads only shapes (meta-safe)."""
        return resample_to_model(self, state_dict)

    def set_input_size(self, img_size=None):
        """timm's meaning: the size-dependent parts rebuilt for ``img_size`` in place, the weights kept and resampled
        as :meth:`resample_state_dict_to_size` does (so equal to building at ``img_size`` and loading this model's
        state dict through the family's checkpoint filter)."""
        overrides = dict(img_size=self.img_size if img_size is None else img_size, num_classes=self.num_classes,
                         global_pool=self.global_pool)
        twin = adopt_size_dependent_modules(self, overrides, ["patch_embed", "blocks"], ["pos_embed"])
        self.img_size = twin.img_size

    def _embed(self, x):
        """Tokens with their position embedding, and the patch grid."""
        if self.dynamic_img_size:
            x = self.patch_embed(checked_input_size(x, self.patch_embed.patch_size[0], type(self).__name__))
            grid = (x.shape[1], x.shape[2])
            x = x.flatten(1, 2)
            pos_embed = resample_grid_embed(self.pos_embed, self.patch_embed.grid_size, grid, self.num_prefix_tokens,
                                            self.pos_embed_rule)
        else:
            x, grid, pos_embed = self.patch_embed(x), self.patch_embed.grid_size, self.pos_embed
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.pos_drop(x + pos_embed), grid

    def _blocks(self, x, grid):
        if not self.dynamic_img_size:
            return self.blocks(x)
        for blk in self.blocks:
            x = blk(x, grid) if getattr(blk, "takes_grid", False) else blk(x)
        return x

    def forward_features(self, x):
        return self.norm(self._blocks(*self._embed(x)))

    def forward_head(self, x, pre_logits: bool = False):
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """Block outputs (patch tokens as NCHW maps, or NLC with the prefix tokens)."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        b = x.shape[0]
        x, grid = self._embed(x)
        blocks = self.blocks if not (stop_early or intermediates_only) else self.blocks[:max_index + 1]
        intermediates = []
        for i, blk in enumerate(blocks):
            x = blk(x, grid) if self.dynamic_img_size and getattr(blk, "takes_grid", False) else blk(x)
            if i in take_indices:
                feat = self.norm(x) if norm else x
                if output_fmt == "NCHW":
                    feat = feat[:, self.num_prefix_tokens:].reshape(b, grid[0], grid[1], feat.shape[-1])
                    feat = feat.permute(0, 3, 1, 2).contiguous()
                intermediates.append(feat)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices
