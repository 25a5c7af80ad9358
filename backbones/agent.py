"""Agent attention backbones: Agent-DeiT, Agent-PVT, Agent-Swin and Agent-CSWin.

Paper: "Agent Attention: On the Integration of Softmax and Linear Attention" (Han et al., ECCV 2024),
https://arxiv.org/abs/2312.08874. Official code: https://github.com/LeapLabTHU/Agent-Attention
(classification: agent_transformer/models/agent_{deit,pvt,swin,cswin}.py; dense prediction:
downstream/{detection,segmentation}/mm*/models/backbones/agent_{pvt,swin}.py).

Parameter and module names follow the official code so official checkpoints load with ``strict=True``
(through :func:`checkpoint_filter_fn`). The attention itself runs through :func:`kernels.agent.agent_attention`
(reference or fused path); the position biases are built here, once per call, shaped ``(1, heads, ...)`` so they
broadcast over the batch.

One code path serves classification and dense prediction. The official downstream backbones differ from the
classification ones only by (a) interpolating the agent biases to the actual token grid and, when
``downstream_agent_shapes`` asks for more agents, across the agent grid, and (b) for Swin, keeping the window
partition of the softmax-window ('B') blocks at any resolution (``always_partition=True``). At the training
resolution with the trained agent count every interpolation is the identity, so classification outputs are the
official ones, and any input size works.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, PatchEmbed, to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.vision_transformer import Block as VitBlock

from kernels.agent import agent_attention, pool_agent_tokens

__all__ = ["AgentCSWin", "AgentDeiT", "AgentPVT", "AgentSwinTransformer", "checkpoint_filter_fn"]


# ---------------------------------------------------------------------------------------------------------------------
# Agent biases (shared by the three families)
# ---------------------------------------------------------------------------------------------------------------------


def _init_weights(m: nn.Module) -> None:
    """The official models' initialisation, shared by every Agent family: truncated-normal Linear, unit LayerNorm."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.zeros_(m.bias)
        nn.init.ones_(m.weight)


def agent_pool_size(agent_num: int) -> int:
    """Side of the square agent grid; agents are pooled on a square grid, so agent_num must be a square."""
    agent_num = int(agent_num)
    side = math.isqrt(agent_num)
    if side * side != agent_num or agent_num <= 0:
        raise ValueError(
            f"agent_num={agent_num} is not a perfect square: agent tokens are pooled on a square grid "
            f"(official values: 9, 16, 49, 81). Use e.g. {max(1, side) ** 2} or {(side + 1) ** 2}."
        )
    return side


def _resize_grid(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of the last two dims (the identity, skipped, when the size already matches)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear")


def _resize_agents(bias: torch.Tensor, pool_size: int, agent_shape: tuple[int, int]) -> torch.Tensor:
    """(heads, pool*pool, N) -> (heads, ah*aw, N): bilinear across the agent grid (official downstream scheme)."""
    if tuple(agent_shape) == (pool_size, pool_size):
        return bias
    heads, _, n = bias.shape
    grid = bias.reshape(heads, pool_size, pool_size, n).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=agent_shape, mode="bilinear")
    return grid.reshape(heads, n, -1).transpose(1, 2)


class AgentBiasMixin:
    """The official agent position biases, resized to the actual grids, built once per call.

    Parameters (official names and shapes, ``A0 = agent_num`` trained agents, trained key grid ``(kh, kw)``,
    trained token grid ``(th, tw)``): ``an_bias``/``na_bias`` (heads, A0, 7, 7), ``ah_bias`` (1, heads, A0, kh, 1),
    ``aw_bias`` (1, heads, A0, 1, kw), ``ha_bias`` (1, heads, th, 1, A0), ``wa_bias`` (1, heads, 1, tw, A0).
    """

    def _init_agent_biases(self, num_heads: int, agent_num: int, key_grid, token_grid) -> None:
        self.an_bias = nn.Parameter(torch.zeros(num_heads, agent_num, 7, 7))
        self.na_bias = nn.Parameter(torch.zeros(num_heads, agent_num, 7, 7))
        self.ah_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, key_grid[0], 1))
        self.aw_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, 1, key_grid[1]))
        self.ha_bias = nn.Parameter(torch.zeros(1, num_heads, token_grid[0], 1, agent_num))
        self.wa_bias = nn.Parameter(torch.zeros(1, num_heads, 1, token_grid[1], agent_num))
        for p in (self.an_bias, self.na_bias, self.ah_bias, self.aw_bias, self.ha_bias, self.wa_bias):
            trunc_normal_(p, std=0.02)

    def agent_biases(self, key_hw, token_hw, agent_shape) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns agent_bias (1, heads, n_agents, Hk*Wk) and token_bias (1, heads, H*W, n_agents)."""
        heads, a0 = self.an_bias.shape[:2]
        pool = self.pool_size
        # agent -> token: interpolated 7x7 table plus the separable (row + column) table, both on the key grid
        position = F.interpolate(self.an_bias, size=tuple(key_hw), mode="bilinear")
        position = position + _resize_grid((self.ah_bias + self.aw_bias).squeeze(0), tuple(key_hw))
        position = _resize_agents(position.reshape(heads, a0, -1), pool, agent_shape)
        # token -> agent: same construction on the query grid, transposed to (tokens, agents)
        token = F.interpolate(self.na_bias, size=tuple(token_hw), mode="bilinear")
        token = token + _resize_grid((self.ha_bias + self.wa_bias).squeeze(0).permute(0, 3, 1, 2), tuple(token_hw))
        token = _resize_agents(token.reshape(heads, a0, -1), pool, agent_shape).transpose(1, 2)
        return position.unsqueeze(0), token.unsqueeze(0)


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _agent_shape(agent_num: int, downstream_agent_shape) -> tuple[int, int]:
    pool = agent_pool_size(agent_num)
    if downstream_agent_shape is None:
        return pool, pool
    shape = tuple(int(s) for s in to_2tuple(downstream_agent_shape))
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(f"downstream_agent_shape must be (rows, cols) of positive ints, got {downstream_agent_shape}")
    return shape


# ---------------------------------------------------------------------------------------------------------------------
# Agent-PVT
# ---------------------------------------------------------------------------------------------------------------------


class PvtAttention(nn.Module):
    """PVT spatial-reduction softmax attention (the 'B' stages)."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0, sr_ratio=1):
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
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, H, W):
        b, n, c = x.shape
        q = _split_heads(self.q(x), self.num_heads)
        if self.sr_ratio > 1:
            x = self.norm(self.sr(x.transpose(1, 2).reshape(b, c, H, W)).flatten(2).transpose(1, 2))
        k, v = self.kv(x).reshape(b, -1, 2, c).unbind(2)
        out = F.scaled_dot_product_attention(
            q, _split_heads(k, self.num_heads), _split_heads(v, self.num_heads),
            dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale,
        )
        return self.proj_drop(self.proj(_merge_heads(out)))


class PvtAgentAttention(AgentBiasMixin, nn.Module):
    """Agent attention of Agent-PVT (official ``agent_pvt.AgentAttention``; downstream options included)."""

    def __init__(self, dim, num_patches, num_heads=8, qkv_bias=False, attn_drop=0.0, proj_drop=0.0, sr_ratio=1,
                 agent_num=49, downstream_agent_shape=None, kernel_size=3, scale=-0.5):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** scale
        side = int(num_patches ** 0.5)
        self.window_size = (side, side)  # the trained token grid (square, as in the official code)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)
        self.agent_num = int(agent_num)
        self.pool_size = agent_pool_size(agent_num)
        self.agent_shape = _agent_shape(agent_num, downstream_agent_shape)
        self.dwc = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)
        key_grid = (side // sr_ratio, side // sr_ratio)
        self._init_agent_biases(num_heads, self.agent_num, key_grid, self.window_size)

    def forward(self, x, H, W):
        b, n, c = x.shape
        if n != H * W:
            raise ValueError(f"PvtAgentAttention got {n} tokens but was told the grid is {H}x{W} ({H * W} tokens)")
        q = self.q(x)
        if self.sr_ratio > 1:
            x = self.norm(self.sr(x.transpose(1, 2).reshape(b, c, H, W)).flatten(2).transpose(1, 2))
            key_hw = (H // self.sr_ratio, W // self.sr_ratio)
        else:
            key_hw = (H, W)
        k, v = self.kv(x).reshape(b, -1, 2, c).unbind(2)
        q, k, v = (_split_heads(t, self.num_heads) for t in (q, k, v))
        agents = pool_agent_tokens(q, (H, W), self.agent_shape)
        agent_bias, token_bias = self.agent_biases(key_hw, (H, W), self.agent_shape)
        out = agent_attention(q, k, v, agents, agent_bias, token_bias, self.scale,
                              dropout_p=self.attn_drop if self.training else 0.0)
        out = _merge_heads(out)
        v = v.transpose(1, 2).reshape(b, key_hw[0], key_hw[1], c).permute(0, 3, 1, 2)
        if self.sr_ratio > 1:
            v = F.interpolate(v, size=(H, W), mode="bilinear")
        out = out + self.dwc(v).flatten(2).transpose(1, 2)
        return self.proj_drop(self.proj(out))


class PvtBlock(nn.Module):
    def __init__(self, dim, num_patches, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0,
                 attn_drop=0.0, drop_path=0.0, act_layer=nn.GELU, norm_layer=nn.LayerNorm, sr_ratio=1, agent_num=49,
                 attn_type="A", downstream_agent_shape=None, kernel_size=3, scale=-0.5):
        super().__init__()
        if attn_type not in ("A", "B"):
            raise ValueError(f"Agent-PVT attn_type letters are 'A' (agent) or 'B' (PVT softmax), got {attn_type!r}")
        self.norm1 = norm_layer(dim)
        if attn_type == "A":
            self.attn = PvtAgentAttention(dim, num_patches, num_heads=num_heads, qkv_bias=qkv_bias,
                                          attn_drop=attn_drop, proj_drop=drop, sr_ratio=sr_ratio, agent_num=agent_num,
                                          downstream_agent_shape=downstream_agent_shape, kernel_size=kernel_size,
                                          scale=scale)
        else:
            self.attn = PvtAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                     attn_drop=attn_drop, proj_drop=drop, sr_ratio=sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x, H, W):
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PvtPatchEmbed(nn.Module):
    """Strided conv + LayerNorm (default eps, as in the official code); returns tokens and their grid."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
        super().__init__()
        img_size, patch_size = to_2tuple(img_size), to_2tuple(patch_size)
        self.patch_size = patch_size
        self.H, self.W = img_size[0] // patch_size[0], img_size[1] // patch_size[1]
        self.num_patches = self.H * self.W
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw


class AgentPVT(nn.Module):
    """Agent-PVT (official ``agent_pvt.PyramidVisionTransformer`` / downstream ``AgentPVT``).

    Stage attributes keep the official flat names (``patch_embed{i}``, ``pos_embed{i}``, ``block{i}``).
    Quirk kept for checkpoint fidelity: no final norm; the classifier sees the mean of the last stage's tokens.
    Downstream options: ``downstream_agent_shapes`` (e.g. [(12, 12), (16, 16), (28, 28), (28, 28)] for detection and
    segmentation), ``kernel_size`` of the depth-wise conv, ``scale`` (exponent of head_dim).
    """

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dims=(64, 128, 256, 512),
                 num_heads=(1, 2, 4, 8), mlp_ratios=(4, 4, 4, 4), qkv_bias=False, qk_scale=None, drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.0, norm_layer=None, depths=(3, 4, 6, 3),
                 sr_ratios=(8, 4, 2, 1), agent_sr_ratios="1111", num_stages=4, agent_num=(9, 16, 49, 49),
                 attn_type="AAAA", downstream_agent_shapes=None, kernel_size=3, scale=-0.5, global_pool="avg"):
        super().__init__()
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)
        attn_type = "AAAA" if attn_type is None else attn_type
        if len(attn_type) < num_stages or len(agent_num) < num_stages:
            raise ValueError(f"attn_type {attn_type!r} and agent_num {agent_num} need one entry per stage ({num_stages})")
        downstream_agent_shapes = downstream_agent_shapes or [None] * num_stages
        self.num_classes = num_classes
        self.num_stages = num_stages
        self.depths = depths
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = embed_dims[num_stages - 1]
        self.feature_info = []

        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        cur = 0
        for i in range(num_stages):
            patch_embed = PvtPatchEmbed(
                img_size=img_size if i == 0 else img_size // (2 ** (i - 1) * patch_size),
                patch_size=patch_size if i == 0 else 2,
                in_chans=in_chans if i == 0 else embed_dims[i - 1],
                embed_dim=embed_dims[i],
            )
            pos_embed = nn.Parameter(torch.zeros(1, patch_embed.num_patches, embed_dims[i]))
            blocks = nn.ModuleList([
                PvtBlock(dim=embed_dims[i], num_patches=patch_embed.num_patches, num_heads=num_heads[i],
                         mlp_ratio=mlp_ratios[i], qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate,
                         attn_drop=attn_drop_rate, drop_path=dpr[cur + j], norm_layer=norm_layer,
                         sr_ratio=sr_ratios[i] if attn_type[i] == "B" else int(agent_sr_ratios[i]),
                         agent_num=int(agent_num[i]), attn_type=attn_type[i],
                         downstream_agent_shape=downstream_agent_shapes[i], kernel_size=kernel_size, scale=scale)
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
        self.apply(_init_weights)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {f"pos_embed{i + 1}" for i in range(self.num_stages)}

    @torch.jit.ignore
    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes, global_pool=None):
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _pos_embed(self, index, hw):
        """Stage position embedding on the actual grid.

        The official ``_get_pos_embed`` skips the resize when H*W equals *stage 1's* patch count (for every stage);
        at the training size that is the identity for stage 1 and an identity resize for the others, so we compare
        with the stage's own grid instead (the official check would skip the resize of a non-square stage-1 grid of
        the same area, and fail for a stage-2 grid as large as stage 1's).
        """
        patch_embed = getattr(self, f"patch_embed{index + 1}")
        pos_embed = getattr(self, f"pos_embed{index + 1}")
        if tuple(hw) == (patch_embed.H, patch_embed.W):
            return pos_embed
        grid = pos_embed.reshape(1, patch_embed.H, patch_embed.W, -1).permute(0, 3, 1, 2)
        return F.interpolate(grid, size=tuple(hw), mode="bilinear").flatten(2).transpose(1, 2)

    def _stage(self, index, x):
        """Runs stage ``index`` on an NCHW map (or the image); returns tokens (B, H*W, C) and (H, W)."""
        x, hw = getattr(self, f"patch_embed{index + 1}")(x)
        x = getattr(self, f"pos_drop{index + 1}")(x + self._pos_embed(index, hw))
        for blk in getattr(self, f"block{index + 1}"):
            x = blk(x, hw[0], hw[1])
        return x, hw

    @staticmethod
    def _to_nchw(x, hw):
        return x.reshape(x.shape[0], hw[0], hw[1], -1).permute(0, 3, 1, 2).contiguous()

    def forward_features(self, x):
        for i in range(self.num_stages):
            x, hw = self._stage(i, x)
            if i != self.num_stages - 1:
                x = self._to_nchw(x, hw)
        return x  # (B, N, C) tokens of the last stage

    def forward_head(self, x, pre_logits: bool = False):
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """Per-stage NCHW maps (the official downstream outputs) and, unless intermediates_only, the final tokens."""
        if output_fmt != "NCHW":
            raise ValueError("Agent-PVT intermediates are NCHW only")
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        intermediates = []
        last = max_index if stop_early or intermediates_only else self.num_stages - 1
        for i in range(last + 1):
            x, hw = self._stage(i, x)
            feat = self._to_nchw(x, hw)
            if i in take_indices:
                intermediates.append(feat)
            if i != self.num_stages - 1:
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


# ---------------------------------------------------------------------------------------------------------------------
# Agent-Swin
# ---------------------------------------------------------------------------------------------------------------------


def window_partition(x, window_size):
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)


def window_reverse(windows, window_size, h, w):
    c = windows.shape[-1]
    x = windows.view(-1, h // window_size, w // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


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
    """Swin window attention with relative position bias (the 'B' blocks)."""

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
        # Rebuilt from the window size; checkpoint_filter_fn drops the copy official checkpoints carry.
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
            q, k, v = (t.view(b // nw, nw, self.num_heads, n, -1) for t in (q, k, v))
        if torch.compiler.is_exporting():
            # torch.export's SDPA decomposition (torch 2.14) reports output strides it does not have, and the
            # reshape below then fails as an invalid view in the ONNX exporter: spell the same attention out.
            attn = (q * self.scale) @ k.transpose(-2, -1) + bias.to(q.dtype)
            out = attn.softmax(dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale,
                                                 dropout_p=self.attn_drop if self.training else 0.0)
        out = out.reshape(b, self.num_heads, n, -1).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class SwinAgentAttention(AgentBiasMixin, nn.Module):
    """Global agent attention of Agent-Swin (official ``agent_swin.AgentAttention``; downstream options included).

    ``input_resolution`` is the stage grid at the training size; the biases are learnt on it and resized to the
    actual grid. (The official classification model sizes them by the window clamped to that grid, the downstream
    model by the grid itself: the same numbers for every official configuration.)
    """

    def __init__(self, dim, input_resolution, num_heads, qkv_bias=True, attn_drop=0.0, proj_drop=0.0, agent_num=49,
                 downstream_agent_shape=None, kernel_size=3, scale=-0.5):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** scale
        self.input_resolution = tuple(input_resolution)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.agent_num = int(agent_num)
        self.pool_size = agent_pool_size(agent_num)
        self.agent_shape = _agent_shape(agent_num, downstream_agent_shape)
        self.dwc = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)
        self._init_agent_biases(num_heads, self.agent_num, self.input_resolution, self.input_resolution)

    def forward(self, x, hw):
        b, n, c = x.shape
        h, w = hw
        if n != h * w:
            raise ValueError(f"SwinAgentAttention got {n} tokens but was told the grid is {h}x{w} ({h * w} tokens)")
        q, k, v = (_split_heads(t, self.num_heads) for t in self.qkv(x).reshape(b, n, 3, c).unbind(2))
        agents = pool_agent_tokens(q, hw, self.agent_shape)
        agent_bias, token_bias = self.agent_biases(hw, hw, self.agent_shape)
        out = agent_attention(q, k, v, agents, agent_bias, token_bias, self.scale,
                              dropout_p=self.attn_drop if self.training else 0.0)
        out = _merge_heads(out) + self.dwc(v.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
        return self.proj_drop(self.proj(out))


class SwinBlock(nn.Module):
    """Agent-Swin block: global agent attention ('A') or (shifted) window attention ('B')."""

    def __init__(self, dim, input_resolution, num_heads, window_size=7, shift_size=0, mlp_ratio=4.0, qkv_bias=True,
                 qk_scale=None, drop=0.0, attn_drop=0.0, drop_path=0.0, act_layer=nn.GELU, norm_layer=nn.LayerNorm,
                 agent_num=49, attn_type="A", downstream_agent_shape=None, kernel_size=3, scale=-0.5,
                 always_partition=False):
        super().__init__()
        if attn_type not in ("A", "B"):
            raise ValueError(f"Agent-Swin block attn_type is 'A' (agent) or 'B' (window), got {attn_type!r}")
        self.attn_type = attn_type
        self.input_resolution = tuple(input_resolution)
        self.window_size = window_size
        self.shift_size = shift_size
        if attn_type == "A":
            # Agent blocks are global. The official classification model reaches that by a window (56) at least as
            # large as the stage grid, clamped to it; a smaller window would mean windowed agent attention, which no
            # official model uses and this implementation does not provide.
            if window_size < max(self.input_resolution):
                raise ValueError(f"agent blocks are global: window_size {window_size} must cover the stage grid "
                                 f"{self.input_resolution} (official Agent-Swin uses window_size=56 at 224)")
            self.shift_size = 0
        elif not always_partition and min(self.input_resolution) <= window_size:
            # Official classification behaviour (from Swin): a window as large as the grid is not partitioned or
            # shifted. The downstream backbones (always_partition=True) keep window and shift at every size.
            self.shift_size = 0
            self.window_size = min(self.input_resolution)
        if not 0 <= self.shift_size < self.window_size:
            raise ValueError(f"shift_size {self.shift_size} must lie in [0, window_size={self.window_size})")
        self.norm1 = norm_layer(dim)
        if attn_type == "A":
            self.attn = SwinAgentAttention(dim, self.input_resolution, num_heads, qkv_bias=qkv_bias,
                                           attn_drop=attn_drop, proj_drop=drop, agent_num=agent_num,
                                           downstream_agent_shape=downstream_agent_shape, kernel_size=kernel_size,
                                           scale=scale)
        else:
            self.attn = WindowAttention(dim, self.window_size, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                        attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def _window_attention(self, x):
        b, h, w, c = x.shape
        ws = self.window_size
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
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
        b, n, c = x.shape
        if n != hw[0] * hw[1]:
            raise ValueError(f"SwinBlock got {n} tokens but was told the grid is {hw[0]}x{hw[1]}")
        shortcut = x
        x = self.norm1(x)
        if self.attn_type == "A":
            x = self.attn(x, hw)
        else:
            x = self._window_attention(x.view(b, hw[0], hw[1], c)).reshape(b, n, c)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 patch merging; odd grids are zero-padded (official downstream behaviour)."""

    def __init__(self, dim, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x, hw):
        b, n, c = x.shape
        h, w = hw
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        out_hw = (x.shape[1], x.shape[2])
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c))), out_hw


class SwinStage(nn.Module):
    """Official ``BasicLayer``: blocks, then the patch merging that feeds the next stage."""

    def __init__(self, dim, input_resolution, depth, num_heads, window_size, attn_type, agent_num, mlp_ratio=4.0,
                 qkv_bias=True, qk_scale=None, drop=0.0, attn_drop=0.0, drop_path=0.0, norm_layer=nn.LayerNorm,
                 downsample=True, downstream_agent_shape=None, kernel_size=3, scale=-0.5, always_partition=False):
        super().__init__()
        # 'A'/'B' for the whole stage, or 'M<k>': agent attention in the first k blocks, window attention after.
        if attn_type[0] == "M":
            attn_types = ["A" if i < int(attn_type[1:]) else "B" for i in range(depth)]
        else:
            attn_types = [attn_type] * depth
        # Window ('B') blocks use window_size // 8 (at least 7): 7 for the official window_size=56.
        window_sizes = [window_size if t == "A" else max(7, window_size // 8) for t in attn_types]
        self.blocks = nn.ModuleList([
            SwinBlock(dim, input_resolution, num_heads, window_size=window_sizes[i],
                      shift_size=0 if i % 2 == 0 else window_sizes[i] // 2, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                      qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                      drop_path=drop_path[i] if isinstance(drop_path, (list, tuple)) else drop_path,
                      norm_layer=norm_layer, agent_num=agent_num, attn_type=attn_types[i],
                      downstream_agent_shape=downstream_agent_shape, kernel_size=kernel_size, scale=scale,
                      always_partition=always_partition)
            for i in range(depth)
        ])
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


class AgentSwinTransformer(nn.Module):
    """Agent-Swin (official ``agent_swin.AgentSwinTransformer``, classification and downstream).

    ``attn_type`` has one letter per stage ('A' agent, 'B' window) and an optional suffix for 'M' stages:
    'AAAB' (T), 'AABB' (S), 'AAMB2' (B: stage 3 has agent attention in its first 2 blocks).
    Downstream options: ``downstream_agent_shapes`` (e.g. [(9, 9), (12, 12), (14, 14), (7, 7)]), ``kernel_size``,
    ``scale``, ``always_partition`` (True: window blocks keep window and shift at any size, as the official downstream
    backbones do) and ``out_norms`` (the official downstream backbone layout: per-stage LayerNorms ``norm0..norm3`` on
    the intermediates and no final norm or classifier, so detection / segmentation checkpoints load strictly).
    """

    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, embed_dim=96, depths=(2, 2, 6, 2),
                 num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.1, norm_layer=nn.LayerNorm, ape=False, patch_norm=True,
                 agent_num=(9, 16, 49, 49), attn_type="BBBB", downstream_agent_shapes=None, kernel_size=3,
                 scale=-0.5, always_partition=False, out_norms=False, global_pool="avg"):
        super().__init__()
        if ape:
            raise ValueError("ape=True (absolute position embedding) is not used by any Agent-Swin model; not supported")
        self.num_classes = num_classes
        self.num_layers = len(depths)
        self.global_pool = global_pool
        self.embed_dim = embed_dim
        self.num_features = self.head_hidden_size = int(embed_dim * 2 ** (self.num_layers - 1))
        if len(attn_type) < self.num_layers:
            raise ValueError(f"attn_type {attn_type!r} needs a letter per stage ({self.num_layers})")
        downstream_agent_shapes = downstream_agent_shapes or [None] * self.num_layers
        img_size = to_2tuple(img_size)
        grid = (img_size[0] // patch_size, img_size[1] // patch_size)

        self.patch_embed = SwinPatchEmbed(patch_size, in_chans, embed_dim, norm_layer if patch_norm else None)
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        self.feature_info = []
        for i in range(self.num_layers):
            stage_type = attn_type[i] + (attn_type[self.num_layers:] if attn_type[i] == "M" else "")
            self.layers.append(SwinStage(
                dim=int(embed_dim * 2 ** i), input_resolution=(grid[0] // 2 ** i, grid[1] // 2 ** i), depth=depths[i],
                num_heads=num_heads[i], window_size=window_size, attn_type=stage_type, agent_num=int(agent_num[i]),
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])], norm_layer=norm_layer,
                downsample=i < self.num_layers - 1, downstream_agent_shape=downstream_agent_shapes[i],
                kernel_size=kernel_size, scale=scale, always_partition=always_partition,
            ))
            self.feature_info.append(dict(num_chs=int(embed_dim * 2 ** i), reduction=patch_size * 2 ** i,
                                          module=f"layers.{i}"))
        self.out_norms = out_norms
        if out_norms:
            # The official downstream backbone: per-stage output norms, and neither final norm nor classifier.
            for i in range(self.num_layers):
                self.add_module(f"norm{i}", norm_layer(int(embed_dim * 2 ** i)))
            num_classes = self.num_classes = 0
        self.norm = nn.Identity() if out_norms else norm_layer(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    @torch.jit.ignore
    def no_weight_decay_keywords(self):
        return {"relative_position_bias_table"}

    @torch.jit.ignore
    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes, global_pool=None):
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x):
        x, hw = self.patch_embed(x)
        x = self.pos_drop(x)
        for layer in self.layers:
            x, hw = layer(x, hw)
            if layer.downsample is not None:
                x, hw = layer.downsample(x, hw)
        return self.norm(x)

    def forward_head(self, x, pre_logits: bool = False):
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """Stage outputs before patch merging, as NCHW maps (through ``norm{i}`` when built with out_norms)."""
        if output_fmt != "NCHW":
            raise ValueError("Agent-Swin intermediates are NCHW only")
        take_indices, max_index = feature_take_indices(self.num_layers, indices)
        x, hw = self.patch_embed(x)
        x = self.pos_drop(x)
        intermediates = []
        layers = self.layers if not (stop_early or intermediates_only) else self.layers[:max_index + 1]
        for i, layer in enumerate(layers):
            x, hw = layer(x, hw)
            if i in take_indices:
                feat = getattr(self, f"norm{i}")(x) if self.out_norms else x
                intermediates.append(feat.reshape(x.shape[0], hw[0], hw[1], -1).permute(0, 3, 1, 2).contiguous())
            if layer.downsample is not None and i < len(layers) - 1:
                x, hw = layer.downsample(x, hw)
        if intermediates_only:
            return intermediates
        if len(layers) == self.num_layers:
            x = self.norm(x)
        return x, intermediates

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


# ---------------------------------------------------------------------------------------------------------------------
# Agent-DeiT
# ---------------------------------------------------------------------------------------------------------------------


class DeitAgentAttention(AgentBiasMixin, nn.Module):
    """Agent attention with a class token (official ``agent_deit.AgentAttention``).

    The class token is a key and a query but not pooled into the agents; ``ac_bias`` / ``ca_bias`` are its biases
    (agent -> cls and cls -> agent), and the depth-wise conv only touches the patch tokens.
    """

    def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0.0, proj_drop=0.0, agent_num=49, window=14):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.window = window
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.agent_num = int(agent_num)
        self.pool_size = agent_pool_size(agent_num)
        self.agent_shape = (self.pool_size, self.pool_size)
        self.dwc = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self._init_agent_biases(num_heads, self.agent_num, (window, window), (window, window))
        self.ac_bias = nn.Parameter(torch.zeros(1, num_heads, self.agent_num, 1))
        self.ca_bias = nn.Parameter(torch.zeros(1, num_heads, 1, self.agent_num))
        trunc_normal_(self.ac_bias, std=0.02)
        trunc_normal_(self.ca_bias, std=0.02)

    def forward(self, x):
        b, n, c = x.shape
        hw = (self.window, self.window)
        if n != 1 + self.window * self.window:
            raise ValueError(f"DeitAgentAttention expects 1 + {self.window}x{self.window} tokens, got {n}")
        q, k, v = (_split_heads(t, self.num_heads) for t in self.qkv(x).reshape(b, n, 3, c).unbind(2))
        agents = pool_agent_tokens(q[:, :, 1:], hw, self.agent_shape)
        agent_bias, token_bias = self.agent_biases(hw, hw, self.agent_shape)
        agent_bias = torch.cat([self.ac_bias, agent_bias], dim=-1)
        token_bias = torch.cat([self.ca_bias, token_bias], dim=-2)
        out = agent_attention(q, k, v, agents, agent_bias, token_bias, self.scale,
                              dropout_p=self.attn_drop if self.training else 0.0)
        out = _merge_heads(out)
        local = self.dwc(v[:, :, 1:].transpose(1, 2).reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2))
        out = torch.cat([out[:, :1], out[:, 1:] + local.flatten(2).transpose(1, 2)], dim=1)
        return self.proj_drop(self.proj(out))


class DeitAgentBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, drop=0.0, attn_drop=0.0, drop_path=0.0,
                 act_layer=nn.GELU, norm_layer=nn.LayerNorm, agent_num=49, window=14):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = DeitAgentAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                       proj_drop=drop, agent_num=agent_num, window=window)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class AgentDeiT(nn.Module):
    """Agent-DeiT (official ``agent_deit.VisionTransformer``): agent attention in the first ``agent_layer`` blocks
    (all when ``agent_layer <= 0``), plain ViT blocks after. Fixed input size (the agent biases are tied to it)."""

    # Official mapping from block pair (block // 2) to the entry of agent_num it uses.
    _AGENT_NUM_INDEX = {0: 0, 1: 1, 2: 2, 3: 2, 4: 2, 5: 3}

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=768, depth=12,
                 num_heads=12, mlp_ratio=4.0, qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                 norm_layer=None, act_layer=None, agent_num=(49, 49, 49, 49), agent_layer=-1, global_pool="token"):
        super().__init__()
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)
        act_layer = act_layer or nn.GELU
        agent_layer = agent_layer if agent_layer > 0 else depth
        if isinstance(agent_num, int):
            agent_num = [agent_num] * 4
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        window = self.patch_embed.grid_size[0]
        if self.patch_embed.grid_size[0] != self.patch_embed.grid_size[1]:
            raise ValueError("Agent-DeiT needs a square patch grid (the official agent biases are square)")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.Sequential(*[
            DeitAgentBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                           attn_drop=attn_drop_rate, drop_path=dpr[i], norm_layer=norm_layer, act_layer=act_layer,
                           agent_num=int(agent_num[self._AGENT_NUM_INDEX[i // 2]]), window=window)
            if i < agent_layer else
            VitBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=drop_rate,
                     attn_drop=attn_drop_rate, drop_path=dpr[i], norm_layer=norm_layer, act_layer=act_layer)
            for i in range(depth)
        ])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_weights)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {"pos_embed", "cls_token"}

    @torch.jit.ignore
    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes, global_pool=None):
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(self.pos_drop(x + self.pos_embed))
        return self.norm(x)

    def forward_head(self, x, pre_logits: bool = False):
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, 1:].mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """Block outputs (patch tokens as NCHW maps, or NLC with the class token)."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        b = x.shape[0]
        grid = self.patch_embed.grid_size
        x = self.patch_embed(x)
        x = self.pos_drop(torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + self.pos_embed)
        blocks = self.blocks if not (stop_early or intermediates_only) else self.blocks[:max_index + 1]
        intermediates = []
        for i, blk in enumerate(blocks):
            x = blk(x)
            if i in take_indices:
                feat = self.norm(x) if norm else x
                if output_fmt == "NCHW":
                    feat = feat[:, 1:].reshape(b, grid[0], grid[1], -1).permute(0, 3, 1, 2).contiguous()
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


# ---------------------------------------------------------------------------------------------------------------------
# Agent-CSWin
# ---------------------------------------------------------------------------------------------------------------------


def _strip_partition(x, hw, strip):
    """(B, H*W, C) -> (B * n_strips, sh * sw, C): row-major strips of size ``strip`` = (sh, sw)."""
    b, _, c = x.shape
    (h, w), (sh, sw) = hw, strip
    x = x.view(b, h // sh, sh, w // sw, sw, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, sh * sw, c)


def _strip_reverse(x, hw, strip):
    (h, w), (sh, sw) = hw, strip
    c = x.shape[-1]
    x = x.view(-1, h // sh, w // sw, sh, sw, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h * w, c)


def _cswin_strip(resolution, split_size, branch):
    """Strip shape of a CSWin branch: -1 the whole map, 0 full-height columns, 1 full-width rows."""
    if branch == -1:
        return resolution, resolution
    return (resolution, split_size) if branch == 0 else (split_size, resolution)


class CSWinLePEAttention(nn.Module):
    """CSWin cross-shaped window attention with locally-enhanced positional encoding (the 'B' blocks)."""

    def __init__(self, dim, resolution, branch, split_size=7, num_heads=8, attn_drop=0.0, qk_scale=None):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.resolution = resolution
        self.strip = _cswin_strip(resolution, split_size, branch)
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)
        self.attn_drop = attn_drop

    def forward(self, q, k, v):
        hw = (self.resolution, self.resolution)
        q, k, v = (_strip_partition(t, hw, self.strip) for t in (q, k, v))
        n, c = v.shape[1:]
        lepe = self.get_v(v.transpose(1, 2).reshape(-1, c, *self.strip)).flatten(2).transpose(1, 2)
        q, k, v = (_split_heads(t, self.num_heads) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale,
                                             dropout_p=self.attn_drop if self.training else 0.0)
        return _strip_reverse(_merge_heads(out) + lepe, hw, self.strip)


class CSWinAgentAttention(AgentBiasMixin, nn.Module):
    """Agent attention inside CSWin strips (official ``agent_cswin.AgentAttention``); at the official split sizes
    (56-28-14-7 at 224) the strip is the whole map, i.e. global agent attention, plus CSWin's LePE."""

    def __init__(self, dim, resolution, branch, split_size=7, num_heads=8, attn_drop=0.0, agent_num=49):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.resolution = resolution
        self.strip = _cswin_strip(resolution, split_size, branch)
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)
        self.attn_drop = attn_drop
        self.agent_num = int(agent_num)
        self.pool_size = agent_pool_size(agent_num)
        self.agent_shape = (self.pool_size, self.pool_size)
        self._init_agent_biases(num_heads, self.agent_num, self.strip, self.strip)

    def forward(self, q, k, v):
        hw = (self.resolution, self.resolution)
        q, k, v = (_strip_partition(t, hw, self.strip) for t in (q, k, v))
        c = v.shape[-1]
        lepe = self.get_v(v.transpose(1, 2).reshape(-1, c, *self.strip)).flatten(2).transpose(1, 2)
        q, k, v = (_split_heads(t, self.num_heads) for t in (q, k, v))
        agents = pool_agent_tokens(q, self.strip, self.agent_shape)
        agent_bias, token_bias = self.agent_biases(self.strip, self.strip, self.agent_shape)
        out = agent_attention(q, k, v, agents, agent_bias, token_bias, self.scale,
                              dropout_p=self.attn_drop if self.training else 0.0)
        return _strip_reverse(_merge_heads(out) + lepe, hw, self.strip)


class CSWinBlock(nn.Module):
    """CSWin block: one branch over the whole map (last stage, or split == resolution), else two half-width
    branches (columns, rows); each branch agent ('A') or LePE window ('B') attention."""

    def __init__(self, dim, reso, num_heads, split_size=7, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0,
                 attn_drop=0.0, drop_path=0.0, act_layer=nn.GELU, norm_layer=nn.LayerNorm, last_stage=False,
                 agent_num=49, attn_type="A"):
        super().__init__()
        if attn_type not in ("A", "B"):
            raise ValueError(f"Agent-CSWin attn_type letters are 'A' (agent) or 'B' (CSWin), got {attn_type!r}")
        self.resolution = reso
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.norm1 = norm_layer(dim)
        self.branch_num = 1 if (last_stage or reso == split_size) else 2
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)
        branches = [-1] if self.branch_num == 1 else [0, 1]
        branch_dim, branch_heads = (dim, num_heads) if self.branch_num == 1 else (dim // 2, num_heads // 2)
        if attn_type == "A":
            self.attns = nn.ModuleList([
                CSWinAgentAttention(branch_dim, reso, i, split_size=split_size, num_heads=branch_heads,
                                    attn_drop=attn_drop, agent_num=agent_num) for i in branches])
        else:
            self.attns = nn.ModuleList([
                CSWinLePEAttention(branch_dim, reso, i, split_size=split_size, num_heads=branch_heads,
                                   attn_drop=attn_drop, qk_scale=qk_scale) for i in branches])
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.norm2 = norm_layer(dim)

    def forward(self, x):
        b, n, c = x.shape
        if n != self.resolution ** 2:
            raise ValueError(f"CSWinBlock expects {self.resolution}x{self.resolution} tokens, got {n} "
                             "(Agent-CSWin is built for one input size: pass img_size)")
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, c).unbind(2)
        if self.branch_num == 2:
            half = c // 2
            out = torch.cat([self.attns[0](q[..., :half], k[..., :half], v[..., :half]),
                             self.attns[1](q[..., half:], k[..., half:], v[..., half:])], dim=2)
        else:
            out = self.attns[0](q, k, v)
        x = x + self.drop_path(self.proj_drop(self.proj(out)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CSWinMergeBlock(nn.Module):
    """3x3 stride-2 conv + LayerNorm between stages (official ``Merge_Block``)."""

    def __init__(self, dim, dim_out, norm_layer=nn.LayerNorm):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 3, 2, 1)
        self.norm = norm_layer(dim_out)

    def forward(self, x):
        b, n, c = x.shape
        side = math.isqrt(n)
        x = self.conv(x.transpose(1, 2).reshape(b, c, side, side))
        return self.norm(x.flatten(2).transpose(1, 2))


class _ToTokens(nn.Module):
    """(B, C, H, W) -> (B, H*W, C); sits at index 1 of the stem so the official keys (stage1_conv_embed.0/.2) hold."""

    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class AgentCSWin(nn.Module):
    """Agent-CSWin (official ``agent_cswin.CSWinTransformer``): CSWin with agent attention in the 'A' stages.

    ``la_split_size`` gives the strip size of the agent stages ('56-28-14-7' at 224: the whole map, global agent
    attention); ``split_size`` the CSWin strips of the 'B' stages. Fixed input size (as the official model).
    """

    def __init__(self, img_size=224, in_chans=3, num_classes=1000, embed_dim=96, depth=(2, 2, 6, 2),
                 split_size=(1, 2, 7, 7), la_split_size="56-28-14-7", num_heads=(2, 4, 8, 16), mlp_ratio=4.0,
                 qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                 norm_layer=nn.LayerNorm, agent_num=(9, 16, 49, 49), attn_type="AABB", global_pool="avg"):
        super().__init__()
        la_split = [int(s) for s in str(la_split_size).split("-")]
        img_size = to_2tuple(img_size)
        if img_size[0] != img_size[1]:
            raise ValueError(f"Agent-CSWin needs a square input (official model), got img_size={img_size}")
        img_size = img_size[0]
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.stage1_conv_embed = nn.Sequential(nn.Conv2d(in_chans, embed_dim, 7, 4, 2), _ToTokens(),
                                               nn.LayerNorm(embed_dim))
        dpr = torch.linspace(0, drop_path_rate, sum(depth), device="cpu").tolist()
        dim, cur = embed_dim, 0
        for i in range(4):
            if i > 0:
                setattr(self, f"merge{i}", CSWinMergeBlock(dim, dim * 2))
                dim *= 2
            # 'A'/'B' per stage, or 'M' with the count after the four letters: agent in the first blocks, CSWin after.
            types = [attn_type[i] if attn_type[i] != "M" else ("A" if j < int(attn_type[4:]) else "B")
                     for j in range(depth[i])]
            setattr(self, f"stage{i + 1}", nn.ModuleList([
                CSWinBlock(dim, img_size // 2 ** (i + 2), num_heads[i],
                           split_size=la_split[i] if types[j] == "A" else split_size[i], mlp_ratio=mlp_ratio,
                           qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                           drop_path=dpr[cur + j], norm_layer=norm_layer, last_stage=i == 3,
                           agent_num=int(agent_num[i]), attn_type=types[j])
                for j in range(depth[i])
            ]))
            cur += depth[i]
        self.num_features = self.head_hidden_size = dim
        self.norm = norm_layer(dim)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    @torch.jit.ignore
    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes, global_pool=None):
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x):
        x = self.stage1_conv_embed(x)
        for i in range(4):
            if i > 0:
                x = getattr(self, f"merge{i}")(x)
            for blk in getattr(self, f"stage{i + 1}"):
                x = blk(x)
        return self.norm(x)

    def forward_head(self, x, pre_logits: bool = False):
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------

def _block_counts(state_dict) -> list[int]:
    """Blocks per stage found in a state dict (Agent-PVT ``block{i}.{j}``, Agent-Swin ``layers.{i}.blocks.{j}``,
    Agent-DeiT ``blocks.{j}``), to name a variant mismatch."""
    stages: dict[str, set[str]] = {}
    for key in state_dict:
        parts = key.split(".")
        if parts[0].startswith("block") and parts[0][5:].isdigit():
            stages.setdefault(parts[0], set()).add(parts[1])
        elif parts[0] == "layers" and len(parts) > 3 and parts[2] == "blocks":
            stages.setdefault(f"layers.{parts[1]}", set()).add(parts[3])
        elif parts[0] == "blocks":
            stages.setdefault("blocks", set()).add(parts[1])
    return [len(stages[name]) for name in sorted(stages)]


# Buffers official checkpoints carry that are rebuilt here from the configuration.
_REBUILT_BUFFERS = ("relative_position_index", "attn_mask")


def checkpoint_filter_fn(state_dict, model):
    """Official checkpoint (classification ``{'model': ...}`` or downstream ``{'state_dict': {'backbone.*'}}``) ->
    this model's state dict. Raises a ValueError naming the keys when the checkpoint is another variant."""
    for wrapper in ("model", "state_dict", "model_ema"):
        if isinstance(state_dict, dict) and wrapper in state_dict and isinstance(state_dict[wrapper], dict):
            state_dict = state_dict[wrapper]
            break
    if any(k.startswith("backbone.") for k in state_dict):
        state_dict = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    out = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.rsplit(".", 1)[-1] in _REBUILT_BUFFERS:
            continue
        out[key] = value

    expected = model.state_dict()
    if getattr(model, "out_norms", False) and "norm0.weight" not in out:
        # ImageNet checkpoint -> downstream Swin backbone, as the official downstream init_weights does it
        # (load_state_dict(strict=False)): the classifier's final norm and head are dropped, and the per-stage output
        # norms norm0..norm3 keep their fresh initialisation (copied here so that a strict load succeeds).
        out = {k: v for k, v in out.items() if not k.startswith(("norm.", "head."))}
        out.update({k: v for k, v in expected.items() if k.split(".", 1)[0].startswith("norm") and k not in out})
    if not any(k.startswith("head.") for k in expected):
        out = {k: v for k, v in out.items() if not k.startswith("head.")}  # num_classes=0: no classifier to load
    missing = sorted(set(expected) - set(out))
    unexpected = sorted(set(out) - set(expected))
    # A classifier head of another size is a fine-tuning choice, not another variant: leave it to the loader.
    head_keys = {"head.weight", "head.bias"}
    mismatched = [
        f"{k}: checkpoint {tuple(out[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(out) & set(expected))
        if tuple(out[k].shape) != tuple(expected[k].shape) and k not in head_keys
    ]
    non_head_missing = [k for k in missing if k not in head_keys]
    if non_head_missing or unexpected or mismatched:
        lines = [f"checkpoint does not match {type(model).__name__} as built (another variant or configuration?)"]
        ckpt_depths, model_depths = _block_counts(out), _block_counts(expected)
        if ckpt_depths != model_depths:
            lines.append(f"  blocks per stage: checkpoint {ckpt_depths}, model {model_depths}")
        if non_head_missing:
            lines.append(f"  {len(non_head_missing)} keys missing from the checkpoint, e.g. {non_head_missing[:3]}")
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
        if mismatched:
            lines.append(f"  {len(mismatched)} shape mismatches, e.g. {mismatched[:3]}")
        lines.append("  Build the variant the checkpoint was trained as (depths, dims, agent_num, attn_type, img_size "
                     "for the agent bias grids; out_norms=True for downstream Swin checkpoints).")
        raise ValueError("\n".join(lines))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------------------------------


def _create(cls, variant, pretrained=False, hierarchical=True, **kwargs):
    if not hierarchical and kwargs.get("features_only"):
        raise RuntimeError(f"{variant}: features_only is provided for the hierarchical Agent-PVT / Agent-Swin models; "
                           "use forward_intermediates on Agent-DeiT")
    num_stages = 4
    out_indices = kwargs.pop("out_indices", tuple(range(num_stages)))
    feature_cfg = dict(out_indices=out_indices, feature_cls="getter") if hierarchical else None
    return build_model_with_cfg(cls, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=feature_cfg, **kwargs)


def _cfg(url="", **kwargs):
    return {
        "url": url, "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.875,
        "interpolation": "bicubic", "fixed_input_size": False, "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD, "first_conv": "patch_embed1.proj", "classifier": "head",
        "license": "unknown (official repository carries no license file)", **kwargs,
    }


# Checkpoint URLs: LeapLabTHU/Agent-Attention agent_transformer/README.md ("Pretrained Models").
default_cfgs = generate_default_cfgs({
    "agent_deit_tiny.in1k": _cfg(url="https://cloud.tsinghua.edu.cn/f/57e0904221824ee7b7af/?dl=1",
                                 first_conv="patch_embed.proj", fixed_input_size=True, crop_pct=0.9),
    "agent_deit_small.in1k": _cfg(url="https://cloud.tsinghua.edu.cn/f/fdd43304372541db8ea7/?dl=1",
                                  first_conv="patch_embed.proj", fixed_input_size=True, crop_pct=0.9),
    "agent_deit_base.in1k": _cfg(url="https://cloud.tsinghua.edu.cn/f/5115f15fdd7e4ab58fbc/?dl=1",
                                 first_conv="patch_embed.proj", fixed_input_size=True, crop_pct=0.9),
    "agent_pvt_tiny.in1k": _cfg(url="https://cloud.tsinghua.edu.cn/f/13fdf0e0a7c5498c934f/?dl=1"),
    "agent_pvt_small.in1k": _cfg(url="https://cloud.tsinghua.edu.cn/f/36b8be9a8863456685a3/?dl=1"),
    "agent_pvt_medium.in1k": _cfg(url="https://cloud.tsinghua.edu.cn/f/4d00ecacf18b45f9b88c/?dl=1"),
    "agent_pvt_large.in1k": _cfg(url="https://cloud.tsinghua.edu.cn/f/040cfe0cfbbe4762ad09/?dl=1"),
    "agent_swin_tiny.in1k": _cfg(url="https://cloud.tsinghua.edu.cn/f/a2ddc1190c224f768a41/?dl=1",
                                 first_conv="patch_embed.proj"),
    "agent_swin_small.in1k": _cfg(url="https://cloud.tsinghua.edu.cn/f/f607172c9fea4d6e99bb/?dl=1",
                                  first_conv="patch_embed.proj"),
    "agent_swin_base.in1k": _cfg(url="https://cloud.tsinghua.edu.cn/f/4fcd2d0114bb490483c3/?dl=1",
                                 first_conv="patch_embed.proj"),
    "agent_cswin_tiny.in1k": _cfg(url="https://cloud.tsinghua.edu.cn/f/8c562a74441e46d5902b/?dl=1",
                                  first_conv="stage1_conv_embed.0", fixed_input_size=True, crop_pct=0.9),
    "agent_cswin_small.in1k": _cfg(url="https://cloud.tsinghua.edu.cn/f/30eb8af675bc4b7a8747/?dl=1",
                                   first_conv="stage1_conv_embed.0", fixed_input_size=True, crop_pct=0.9),
    "agent_cswin_base.in1k": _cfg(url="https://cloud.tsinghua.edu.cn/f/c8035b0839b2410c8c9f/?dl=1",
                                  first_conv="stage1_conv_embed.0", fixed_input_size=True, crop_pct=0.9),
})


# Agent-DeiT: agent_deit.py registrations + cfgs/agent_deit_{t,s,b}.yaml (agent counts 49 / 49 / 81).
@register_model
def agent_deit_tiny(pretrained=False, **kwargs):
    args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, agent_num=(49, 49, 49, 49))
    return _create(AgentDeiT, "agent_deit_tiny", pretrained, hierarchical=False, **{**args, **kwargs})


@register_model
def agent_deit_small(pretrained=False, **kwargs):
    args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, agent_num=(49, 49, 49, 49))
    return _create(AgentDeiT, "agent_deit_small", pretrained, hierarchical=False, **{**args, **kwargs})


@register_model
def agent_deit_base(pretrained=False, **kwargs):
    args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, agent_layer=4, agent_num=(81, 81, 81, 81))
    return _create(AgentDeiT, "agent_deit_base", pretrained, hierarchical=False, **{**args, **kwargs})


# Agent-PVT: agent_pvt.py registrations + cfgs/agent_pvt_{t,s,m,b}.yaml (attn 'AAAA', agents 9-16-49-49).
_PVT_COMMON = dict(patch_size=4, embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4),
                   qkv_bias=True, sr_ratios=(8, 4, 2, 1), agent_num=(9, 16, 49, 49), attn_type="AAAA")


@register_model
def agent_pvt_tiny(pretrained=False, **kwargs):
    return _create(AgentPVT, "agent_pvt_tiny", pretrained, **{**_PVT_COMMON, "depths": (2, 2, 2, 2), **kwargs})


@register_model
def agent_pvt_small(pretrained=False, **kwargs):
    return _create(AgentPVT, "agent_pvt_small", pretrained, **{**_PVT_COMMON, "depths": (3, 4, 6, 3), **kwargs})


@register_model
def agent_pvt_medium(pretrained=False, **kwargs):
    return _create(AgentPVT, "agent_pvt_medium", pretrained, **{**_PVT_COMMON, "depths": (3, 4, 18, 3), **kwargs})


@register_model
def agent_pvt_large(pretrained=False, **kwargs):
    return _create(AgentPVT, "agent_pvt_large", pretrained, **{**_PVT_COMMON, "depths": (3, 8, 27, 3), **kwargs})


# Agent-Swin: cfgs/agent_swin_{t,s,b}.yaml (window 56, agents 9-16-49-49).
@register_model
def agent_swin_tiny(pretrained=False, **kwargs):
    args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=56, attn_type="AAAB",
                agent_num=(9, 16, 49, 49))
    return _create(AgentSwinTransformer, "agent_swin_tiny", pretrained, **{**args, **kwargs})


@register_model
def agent_swin_small(pretrained=False, **kwargs):
    args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=56, attn_type="AABB",
                agent_num=(9, 16, 49, 49))
    return _create(AgentSwinTransformer, "agent_swin_small", pretrained, **{**args, **kwargs})


@register_model
def agent_swin_base(pretrained=False, **kwargs):
    args = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=56, attn_type="AAMB2",
                agent_num=(9, 16, 49, 49))
    return _create(AgentSwinTransformer, "agent_swin_base", pretrained, **{**args, **kwargs})


# Agent-CSWin: agent_cswin.py Agent_CSWin_{64_24181_tiny,64_36292_small,96_36292_base}_224 + cfgs/agent_cswin_{t,s,b}.yaml
# (attn 'AABB', agents 9-16-49-49, agent strips 56-28-14-7 = whole maps at 224).
_CSWIN_COMMON = dict(split_size=(1, 2, 7, 7), la_split_size="56-28-14-7", mlp_ratio=4.0, agent_num=(9, 16, 49, 49),
                     attn_type="AABB")


@register_model
def agent_cswin_tiny(pretrained=False, **kwargs):
    args = dict(_CSWIN_COMMON, embed_dim=64, depth=(2, 4, 18, 1), num_heads=(2, 4, 8, 16))
    return _create(AgentCSWin, "agent_cswin_tiny", pretrained, hierarchical=False, **{**args, **kwargs})


@register_model
def agent_cswin_small(pretrained=False, **kwargs):
    args = dict(_CSWIN_COMMON, embed_dim=64, depth=(3, 6, 29, 2), num_heads=(2, 4, 8, 16))
    return _create(AgentCSWin, "agent_cswin_small", pretrained, hierarchical=False, **{**args, **kwargs})


@register_model
def agent_cswin_base(pretrained=False, **kwargs):
    args = dict(_CSWIN_COMMON, embed_dim=96, depth=(3, 6, 29, 2), num_heads=(4, 8, 16, 32))
    return _create(AgentCSWin, "agent_cswin_base", pretrained, hierarchical=False, **{**args, **kwargs})
