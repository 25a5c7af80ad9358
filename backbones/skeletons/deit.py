"""DeiT skeleton: the official DeiT ``VisionTransformer`` with the block chosen per index by the family.

Shared by Agent-DeiT and SLAB-DeiT (same state-dict layout: ``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.i.{norm1, attn.*, norm2, mlp.*}``, ``norm``, ``head``). Fixed input size: the position embedding (and the
families' attention tables) are tied to the patch grid.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn
from timm.layers import DropPath, Mlp, PatchEmbed, trunc_normal_
from timm.models._features import feature_take_indices

from .folding import fold_into_attention_input, fold_into_linear_input, fold_norm
from .heads import ClassifierHead
from .shared import init_weights

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

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def reparameterize(self):
        """Folds affine-at-inference norms into the attention's qkv and the MLP's fc1 (no-op for LayerNorm)."""
        fold_norm(self, "norm1", lambda s, b: fold_into_attention_input(self.attn, s, b))
        fold_norm(self, "norm2", lambda s, b: fold_into_linear_input(self.mlp.fc1, s, b))


class VisionTransformer(ClassifierHead, nn.Module):
    """DeiT. ``block_fn(index=, dim=, num_heads=, mlp_ratio=, qkv_bias=, drop=, attn_drop=, drop_path=, norm_layer=,
    act_layer=, grid_size=)`` builds block ``index``. ``class_token=True``: a class token is prepended (and has a
    position embedding); ``class_token=False``: patch tokens only."""

    def __init__(self, block_fn: Callable[..., nn.Module], img_size=224, patch_size=16, in_chans=3, num_classes=1000,
                 embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, qkv_bias=True, drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.0, norm_layer=None, act_layer=None, class_token=True,
                 global_pool="token"):
        super().__init__()
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)
        act_layer = act_layer or nn.GELU
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1 if class_token else 0
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
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

    def _embed(self, x):
        x = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.pos_drop(x + self.pos_embed)

    def forward_features(self, x):
        return self.norm(self.blocks(self._embed(x)))

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
        grid = self.patch_embed.grid_size
        x = self._embed(x)
        blocks = self.blocks if not (stop_early or intermediates_only) else self.blocks[:max_index + 1]
        intermediates = []
        for i, blk in enumerate(blocks):
            x = blk(x)
            if i in take_indices:
                feat = self.norm(x) if norm else x
                if output_fmt == "NCHW":
                    feat = feat[:, self.num_prefix_tokens:].reshape(b, grid[0], grid[1], -1)
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
