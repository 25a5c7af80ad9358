"""Agent attention backbones: Agent-DeiT, Agent-PVT, Agent-Swin and Agent-CSWin.

Paper: "Agent Attention: On the Integration of Softmax and Linear Attention" (Han et al., ECCV 2024),
https://arxiv.org/abs/2312.08874. Official code: https://github.com/LeapLabTHU/Agent-Attention
(classification: agent_transformer/models/agent_{deit,pvt,swin,cswin}.py; dense prediction:
downstream/{detection,segmentation}/mm*/models/backbones/agent_{pvt,swin}.py).

The architectures (blocks, stages, feature_info, forward_intermediates) are the shared skeletons in
``backbones/skeletons``; this file supplies what is Agent's own: the agent attention modules and their position
biases, the ``attn_type`` letters that pick them per block ('A' agent, 'B' the skeleton's softmax attention), the
checkpoint filter, default cfgs and registrations.

Parameter and module names follow the official code so official checkpoints load with ``strict=True``
(through :func:`checkpoint_filter_fn`). The attention itself runs through :func:`attnzoo.kernels.agent.agent_attention`
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
from timm.layers import to_2tuple, trunc_normal_
from timm.models import generate_default_cfgs, register_model, register_notrace_function
from timm.models.vision_transformer import Block as VitBlock

from attnzoo.kernels.agent import agent_attention, pool_agent_tokens

from .pretrained import PretrainedFromLoader, build_with_official_weights, official_weights
from .skeletons import cswin, deit, pvt, swin
from .skeletons.resample import AGENT_POS_EMBED_RULES, AGENT_RULES, init_arguments
from .skeletons.shared import merge_heads as _merge_heads
from .skeletons.shared import split_heads as _split_heads
from .skeletons.shared import stage_letters
from .skeletons.swin import checked_token_grid

__all__ = ["AgentCSWin", "AgentDeiT", "AgentPVT", "AgentSwinTransformer", "checkpoint_filter_fn"]

# torch.fx cannot trace Python branches on sizes: the kernel ops (which validate and dispatch on the device) and the
# size-dependent helpers below are opaque calls in FX graphs (timm's notrace registry, read by timm's FX tools).
register_notrace_function(agent_attention)
register_notrace_function(pool_agent_tokens)


# The softmax ('B') attentions are the skeletons' own; re-exported under the names this module always had.
PvtAttention = pvt.PvtAttention
WindowAttention = swin.WindowAttention
CSWinLePEAttention = cswin.CSWinLePEAttention


# ---------------------------------------------------------------------------------------------------------------------
# Agent biases (shared by the four families)
# ---------------------------------------------------------------------------------------------------------------------


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


@register_notrace_function
def resize_grid(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of the last two dims (the identity, skipped, when the size already matches)."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
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
        position = position + resize_grid((self.ah_bias + self.aw_bias).squeeze(0), tuple(key_hw))
        position = _resize_agents(position.reshape(heads, a0, -1), pool, agent_shape)
        # token -> agent: same construction on the query grid, transposed to (tokens, agents)
        token = F.interpolate(self.na_bias, size=tuple(token_hw), mode="bilinear")
        token = token + resize_grid((self.ha_bias + self.wa_bias).squeeze(0).permute(0, 3, 1, 2), tuple(token_hw))
        token = _resize_agents(token.reshape(heads, a0, -1), pool, agent_shape).transpose(1, 2)
        return position.unsqueeze(0), token.unsqueeze(0)


def _agent_shape(agent_num: int, downstream_agent_shape) -> tuple[int, int]:
    pool = agent_pool_size(agent_num)
    if downstream_agent_shape is None:
        return pool, pool
    shape = tuple(int(s) for s in to_2tuple(downstream_agent_shape))
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(f"downstream_agent_shape must be (rows, cols) of positive ints, got {downstream_agent_shape}")
    return shape


def _check_letter(family: str, letter: str, meaning: str) -> None:
    if letter not in ("A", "B"):
        raise ValueError(f"{family} attn_type letters are 'A' (agent) or 'B' ({meaning}), got {letter!r}")


# ---------------------------------------------------------------------------------------------------------------------
# Agent-PVT
# ---------------------------------------------------------------------------------------------------------------------


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
        b, n, c = checked_token_grid(x, (H, W), "PvtAgentAttention").shape
        q = self.q(x)
        if self.sr_ratio > 1:
            x = self.norm(self.sr(x.transpose(1, 2).reshape(b, c, H, W)).flatten(2).transpose(1, 2))
            key_hw = (H // self.sr_ratio, W // self.sr_ratio)
        else:
            key_hw = (H, W)
        k, v = self.kv(x).reshape(b, x.shape[1], 2, c).unbind(2)
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


class AgentPVT(PretrainedFromLoader, pvt.PyramidVisionTransformer):
    """Agent-PVT (official ``agent_pvt.PyramidVisionTransformer`` / downstream ``AgentPVT``) on the PVT skeleton.

    ``attn_type`` has one letter per stage: 'A' agent attention (spatial reduction ``agent_sr_ratios``), 'B' PVT
    softmax attention (``sr_ratios``). Quirk kept for checkpoint fidelity: no final norm; the classifier sees the
    mean of the last stage's tokens. Downstream options: ``downstream_agent_shapes`` (e.g. [(12, 12), (16, 16),
    (28, 28), (28, 28)] for detection and segmentation), ``kernel_size`` of the depth-wise conv, ``scale``
    (exponent of head_dim).

    Input size: ``img_size`` sizes the stage embeddings and the agent biases on the token grids, the agent counts
    stay (cfgs/agent_pvt_m_256.yaml: 9-16-49-49 at 256). Checkpoints saved at another size and :meth:`set_input_size`
    follow the official ``load_pretrained`` rule (biases linear, position embeddings bicubic); ``dynamic_img_size``
    applies that rule on the fly (the biases' bilinear resize of their separable sum is the same linear rule).
    """

    resample_rules = {**AGENT_RULES, **AGENT_POS_EMBED_RULES}
    pos_embed_rule = "agent"

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dims=(64, 128, 256, 512),
                 num_heads=(1, 2, 4, 8), mlp_ratios=(4, 4, 4, 4), qkv_bias=False, qk_scale=None, drop_rate=0.0,
                 attn_drop_rate=0.0, drop_path_rate=0.0, norm_layer=None, depths=(3, 4, 6, 3),
                 sr_ratios=(8, 4, 2, 1), agent_sr_ratios="1111", num_stages=4, agent_num=(9, 16, 49, 49),
                 attn_type="AAAA", downstream_agent_shapes=None, kernel_size=3, scale=-0.5, global_pool="avg",
                 dynamic_img_size=False):
        config = init_arguments(locals())  # set_input_size builds the same model at another size
        attn_type = "AAAA" if attn_type is None else attn_type
        if len(attn_type) < num_stages or len(agent_num) < num_stages:
            raise ValueError(f"attn_type {attn_type!r} and agent_num {agent_num} need one entry per stage ({num_stages})")
        for letter in attn_type[:num_stages]:
            _check_letter("Agent-PVT", letter, "PVT softmax")
        downstream_agent_shapes = downstream_agent_shapes or [None] * num_stages

        def block_fn(stage, index, dim, num_patches, num_heads, qkv_bias, qk_scale, drop, attn_drop, **block_kwargs):
            if attn_type[stage] == "A":
                attn_layer = partial(PvtAgentAttention, num_patches=num_patches, num_heads=num_heads,
                                     qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop,
                                     sr_ratio=int(agent_sr_ratios[stage]), agent_num=int(agent_num[stage]),
                                     downstream_agent_shape=downstream_agent_shapes[stage], kernel_size=kernel_size,
                                     scale=scale)
            else:
                attn_layer = partial(pvt.PvtAttention, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                     attn_drop=attn_drop, proj_drop=drop, sr_ratio=sr_ratios[stage])
            return pvt.PvtBlock(dim, attn_layer, drop=drop, **block_kwargs)

        # The official Agent-PVT patch embeddings use LayerNorm with the default eps (the blocks: eps 1e-6).
        super().__init__(block_fn, img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                         num_classes=num_classes, embed_dims=embed_dims, num_heads=num_heads, mlp_ratios=mlp_ratios,
                         qkv_bias=qkv_bias, qk_scale=qk_scale, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                         drop_path_rate=drop_path_rate, norm_layer=norm_layer, embed_norm_layer=nn.LayerNorm,
                         depths=depths, num_stages=num_stages, global_pool=global_pool,
                         dynamic_img_size=dynamic_img_size)
        self._init_config = config


# ---------------------------------------------------------------------------------------------------------------------
# Agent-Swin
# ---------------------------------------------------------------------------------------------------------------------


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
        b, n, c = checked_token_grid(x, hw, "SwinAgentAttention").shape
        h, w = hw
        q, k, v = self.qkv(x).reshape(b, n, 3, c).unbind(2)  # unpacked, not iterated: torch.fx can trace it
        q, k, v = _split_heads(q, self.num_heads), _split_heads(k, self.num_heads), _split_heads(v, self.num_heads)
        agents = pool_agent_tokens(q, hw, self.agent_shape)
        agent_bias, token_bias = self.agent_biases(hw, hw, self.agent_shape)
        out = agent_attention(q, k, v, agents, agent_bias, token_bias, self.scale,
                              dropout_p=self.attn_drop if self.training else 0.0)
        out = _merge_heads(out) + self.dwc(v.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
        return self.proj_drop(self.proj(out))


class SwinBlock(swin.SwinBlock):
    """Agent-Swin block by letter: global agent attention ('A') or (shifted) window attention ('B')."""

    def __init__(self, dim, input_resolution, num_heads, window_size=7, shift_size=0, mlp_ratio=4.0, qkv_bias=True,
                 qk_scale=None, drop=0.0, attn_drop=0.0, drop_path=0.0, act_layer=nn.GELU, norm_layer=nn.LayerNorm,
                 agent_num=49, attn_type="A", downstream_agent_shape=None, kernel_size=3, scale=-0.5,
                 always_partition=False):
        _check_letter("Agent-Swin block", attn_type, "window")
        if attn_type == "A":
            # Agent blocks are global. The official classification model reaches that by a window (56) at least as
            # large as the stage grid, clamped to it; a smaller window would mean windowed agent attention, which no
            # official model uses and this implementation does not provide.
            if window_size < max(input_resolution):
                raise ValueError(f"agent blocks are global: window_size {window_size} must cover the stage grid "
                                 f"{tuple(input_resolution)}; leave window_size out (None) so img_size sets it "
                                 "(img_size // 4, as the official configs: 56 at 224, 72 at 288, 96 at 384)")

            def attn_layer(dim, window_size):
                return SwinAgentAttention(dim, input_resolution, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                          proj_drop=drop, agent_num=agent_num,
                                          downstream_agent_shape=downstream_agent_shape, kernel_size=kernel_size,
                                          scale=scale)
        else:
            def attn_layer(dim, window_size):
                return swin.WindowAttention(dim, window_size, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                            attn_drop=attn_drop, proj_drop=drop)
        super().__init__(dim, input_resolution, num_heads, attn_layer, window_size=window_size, shift_size=shift_size,
                         global_attn=attn_type == "A", mlp_ratio=mlp_ratio, drop=drop, drop_path=drop_path,
                         act_layer=act_layer, norm_layer=norm_layer, always_partition=always_partition)
        self.attn_type = attn_type


# Per-block letters of a stage ('M': agent in the first k blocks, e.g. 'AAMB2'); the letters are checked where used.
_stage_letters = partial(stage_letters, mixed=("A", "B"), mixed_count="agent")


class AgentSwinTransformer(PretrainedFromLoader, swin.SwinTransformer):
    """Agent-Swin (official ``agent_swin.AgentSwinTransformer``, classification and downstream) on the Swin skeleton.

    ``attn_type`` has one letter per stage ('A' agent, 'B' window) and an optional suffix for 'M' stages:
    'AAAB' (T), 'AABB' (S), 'AAMB2' (B: stage 3 has agent attention in its first 2 blocks). Window ('B') blocks use
    window_size // 8 (at least 7): 7 for the official window_size=56.
    ``window_size=None`` (default) derives it from ``img_size`` as the official configs do: the grid of the first
    stage (img_size // patch_size: 56 at 224, 72 at 288, 96 at 384), so agent stages stay global; an explicit value
    wins. Checkpoints saved at another size are resampled by the official ``load_pretrained`` rule (AGENT_RULES).
    Downstream options: ``downstream_agent_shapes`` (e.g. [(9, 9), (12, 12), (14, 14), (7, 7)]), ``kernel_size``,
    ``scale``, ``always_partition`` (True: window blocks keep window and shift at any size, as the official downstream
    backbones do) and ``out_norms`` (the official downstream backbone layout: per-stage LayerNorms ``norm0..norm3`` on
    the intermediates and no final norm or classifier, so detection / segmentation checkpoints load strictly).
    """

    resample_rules = AGENT_RULES

    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, embed_dim=96, depths=(2, 2, 6, 2),
                 num_heads=(3, 6, 12, 24), window_size=None, mlp_ratio=4.0, qkv_bias=True, qk_scale=None,
                 drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1, norm_layer=nn.LayerNorm, ape=False,
                 patch_norm=True, agent_num=(9, 16, 49, 49), attn_type="BBBB", downstream_agent_shapes=None,
                 kernel_size=3, scale=-0.5, always_partition=False, out_norms=False, global_pool="avg"):
        config = init_arguments(locals())
        if window_size is None:
            window_size = max(int(s) for s in to_2tuple(img_size)) // patch_size
        num_stages = len(depths)
        if len(attn_type) < num_stages:
            raise ValueError(f"attn_type {attn_type!r} needs a letter per stage ({num_stages})")
        downstream_agent_shapes = downstream_agent_shapes or [None] * num_stages
        letters = [_stage_letters(attn_type, i, num_stages, depths[i], "Agent-Swin") for i in range(num_stages)]

        def block_fn(stage, index, window_size, **block_kwargs):
            letter = letters[stage][index]
            window = window_size if letter == "A" else max(7, window_size // 8)
            return SwinBlock(window_size=window, shift_size=0 if index % 2 == 0 else window // 2,
                             agent_num=int(agent_num[stage]), attn_type=letter,
                             downstream_agent_shape=downstream_agent_shapes[stage], kernel_size=kernel_size,
                             scale=scale, **block_kwargs)

        super().__init__(block_fn, img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                         num_classes=num_classes, embed_dim=embed_dim, depths=depths, num_heads=num_heads,
                         window_size=window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                         drop_rate=drop_rate, attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
                         norm_layer=norm_layer, ape=ape, patch_norm=patch_norm, always_partition=always_partition,
                         out_norms=out_norms, global_pool=global_pool)
        self._init_config = config


# ---------------------------------------------------------------------------------------------------------------------
# Agent-DeiT
# ---------------------------------------------------------------------------------------------------------------------


@register_notrace_function
def checked_class_and_patch_tokens(x: torch.Tensor, hw) -> torch.Tensor:
    """Returns ``x`` when it holds a class token and ``hw[0]`` x ``hw[1]`` patch tokens, else raises."""
    if x.shape[1] != 1 + hw[0] * hw[1]:
        raise ValueError(f"DeitAgentAttention expects 1 + {hw[0]}x{hw[1]} tokens, got {x.shape[1]} "
                         "(Agent-DeiT is built for one input size: pass img_size, or dynamic_img_size=True)")
    return x


class DeitAgentAttention(AgentBiasMixin, nn.Module):
    """Agent attention with a class token (official ``agent_deit.AgentAttention``).

    The class token is a key and a query but not pooled into the agents; ``ac_bias`` / ``ca_bias`` are its biases
    (agent -> cls and cls -> agent), and the depth-wise conv only touches the patch tokens. ``window``: the trained
    patch grid side (the biases' size); ``forward(x, grid)`` runs on another grid (dynamic_img_size), the biases
    resized to it (bilinear on their separable sum: the official ``load_pretrained`` linear rule).
    """

    takes_grid = True  # the DeiT skeleton passes the actual patch grid under dynamic_img_size

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

    def forward(self, x, grid=None):
        hw = (self.window, self.window) if grid is None else (int(grid[0]), int(grid[1]))
        b, n, c = checked_class_and_patch_tokens(x, hw).shape
        q, k, v = self.qkv(x).reshape(b, n, 3, c).unbind(2)  # unpacked, not iterated: torch.fx can trace it
        q, k, v = _split_heads(q, self.num_heads), _split_heads(k, self.num_heads), _split_heads(v, self.num_heads)
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


class DeitAgentBlock(deit.DeitBlock):
    """DeiT block with agent attention."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, drop=0.0, attn_drop=0.0, drop_path=0.0,
                 act_layer=nn.GELU, norm_layer=nn.LayerNorm, agent_num=49, window=14):
        attn_layer = partial(DeitAgentAttention, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                             proj_drop=drop, agent_num=agent_num, window=window)
        super().__init__(dim, attn_layer, mlp_ratio=mlp_ratio, drop=drop, drop_path=drop_path, act_layer=act_layer,
                         norm_layer=norm_layer)


class AgentDeiT(PretrainedFromLoader, deit.VisionTransformer):
    """Agent-DeiT (official ``agent_deit.VisionTransformer``) on the DeiT skeleton: agent attention in the first
    ``agent_layer`` blocks (all when ``agent_layer <= 0``), timm's plain ViT blocks after.

    Input size: ``img_size`` (a square patch grid) sizes pos_embed and the agent biases (window = grid side, as the
    official ``window=img_size // patch_size``); the agent count stays (cfgs/agent_deit_s_448.yaml: 49 at 448).
    Checkpoints saved at another size and :meth:`set_input_size` follow the official ``load_pretrained`` rule;
    ``dynamic_img_size=True`` applies it on the fly for any input (multiples of the patch size)."""

    # Official mapping from block pair (block // 2) to the entry of agent_num it uses.
    _AGENT_NUM_INDEX = {0: 0, 1: 1, 2: 2, 3: 2, 4: 2, 5: 3}
    resample_rules = {**AGENT_RULES, **AGENT_POS_EMBED_RULES}
    pos_embed_rule = "agent"

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=768, depth=12,
                 num_heads=12, mlp_ratio=4.0, qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                 norm_layer=None, act_layer=None, agent_num=(49, 49, 49, 49), agent_layer=-1, global_pool="token",
                 dynamic_img_size=False):
        config = init_arguments(locals())  # set_input_size builds the same model at another size
        agent_layer = agent_layer if agent_layer > 0 else depth
        if isinstance(agent_num, int):
            agent_num = [agent_num] * 4
        img_hw, patch_hw = to_2tuple(img_size), to_2tuple(patch_size)
        if img_hw[0] // patch_hw[0] != img_hw[1] // patch_hw[1]:
            raise ValueError("Agent-DeiT needs a square patch grid (the official agent biases are square)")

        def block_fn(index, dim, num_heads, mlp_ratio, qkv_bias, drop, attn_drop, drop_path, norm_layer, act_layer,
                     grid_size):
            if index < agent_layer:
                return DeitAgentBlock(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop,
                                      attn_drop=attn_drop, drop_path=drop_path, norm_layer=norm_layer,
                                      act_layer=act_layer, agent_num=int(agent_num[self._AGENT_NUM_INDEX[index // 2]]),
                                      window=grid_size[0])
            return VitBlock(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=drop,
                            attn_drop=attn_drop, drop_path=drop_path, norm_layer=norm_layer, act_layer=act_layer)

        super().__init__(block_fn, img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                         num_classes=num_classes, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                         mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                         drop_path_rate=drop_path_rate, norm_layer=norm_layer, act_layer=act_layer, class_token=True,
                         global_pool=global_pool, dynamic_img_size=dynamic_img_size)
        self._init_config = config


# ---------------------------------------------------------------------------------------------------------------------
# Agent-CSWin
# ---------------------------------------------------------------------------------------------------------------------


class CSWinAgentAttention(AgentBiasMixin, nn.Module):
    """Agent attention inside CSWin strips (official ``agent_cswin.AgentAttention``); at the official split sizes
    (56-28-14-7 at 224) the strip is the whole map, i.e. global agent attention, plus CSWin's LePE."""

    def __init__(self, dim, resolution, branch, split_size=7, num_heads=8, attn_drop=0.0, agent_num=49):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.resolution = resolution
        self.strip = cswin.cswin_strip(resolution, split_size, branch)
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)
        self.attn_drop = attn_drop
        self.agent_num = int(agent_num)
        self.pool_size = agent_pool_size(agent_num)
        self.agent_shape = (self.pool_size, self.pool_size)
        self._init_agent_biases(num_heads, self.agent_num, self.strip, self.strip)

    def forward(self, q, k, v):
        hw = (self.resolution, self.resolution)
        q, k, v = (cswin.strip_partition(t, hw, self.strip) for t in (q, k, v))
        c = v.shape[-1]
        lepe = self.get_v(v.transpose(1, 2).reshape(v.shape[0], c, *self.strip)).flatten(2).transpose(1, 2)
        q, k, v = (_split_heads(t, self.num_heads) for t in (q, k, v))
        agents = pool_agent_tokens(q, self.strip, self.agent_shape)
        agent_bias, token_bias = self.agent_biases(self.strip, self.strip, self.agent_shape)
        out = agent_attention(q, k, v, agents, agent_bias, token_bias, self.scale,
                              dropout_p=self.attn_drop if self.training else 0.0)
        return cswin.strip_reverse(_merge_heads(out) + lepe, hw, self.strip)


class AgentCSWin(PretrainedFromLoader, cswin.CSWinTransformer):
    """Agent-CSWin (official ``agent_cswin.CSWinTransformer``) on the CSWin skeleton: agent attention in the 'A'
    stages, CSWin's LePE attention in the 'B' stages ('M' with the count after the four letters: agent in the first
    blocks, CSWin after).

    ``la_split_size`` gives the strip size of the agent stages ('56-28-14-7' at 224: the whole map, global agent
    attention); ``split_size`` the CSWin strips of the 'B' stages. Fixed input size (as the official model); both
    default (None) to what the official configs use at ``img_size`` (:func:`cswin.cswin_split_sizes`: 1-2-12-12 and
    '96-48-24-12' at 384, Agent_CSWin_96_36292_base_384 + cfgs/agent_cswin_b_384.yaml); an explicit value wins.
    """

    resample_rules = AGENT_RULES

    def __init__(self, img_size=224, in_chans=3, num_classes=1000, embed_dim=96, depth=(2, 2, 6, 2),
                 split_size=None, la_split_size=None, num_heads=(2, 4, 8, 16), mlp_ratio=4.0,
                 qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                 norm_layer=nn.LayerNorm, agent_num=(9, 16, 49, 49), attn_type="AABB", global_pool="avg"):
        config = init_arguments(locals())
        split_size, la_split = cswin.cswin_split_sizes(int(to_2tuple(img_size)[0]), split_size, la_split_size)
        letters = []
        for i in range(4):
            stage_letters = _stage_letters(attn_type, i, 4, depth[i], "Agent-CSWin")
            for letter in stage_letters:
                _check_letter("Agent-CSWin", letter, "CSWin")
            letters.append(stage_letters)

        def block_fn(stage, index, dim, reso, num_heads, qk_scale, attn_drop, **block_kwargs):
            if letters[stage][index] == "A":
                split = la_split[stage]
                attn_layer = partial(_cswin_agent_branch, reso=reso, split_size=split, attn_drop=attn_drop,
                                     agent_num=int(agent_num[stage]))
            else:
                split = split_size[stage]
                attn_layer = partial(cswin.cswin_lepe_branch, reso=reso, split_size=split, attn_drop=attn_drop,
                                     qk_scale=qk_scale)
            return cswin.CSWinBlock(dim, reso, num_heads, attn_layer, split_size=split, **block_kwargs)

        # The official Agent-CSWin stem and merge blocks use plain LayerNorm whatever norm_layer is.
        super().__init__(block_fn, img_size=img_size, in_chans=in_chans, num_classes=num_classes,
                         embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                         qkv_bias=qkv_bias, qk_scale=qk_scale, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                         drop_path_rate=drop_path_rate, norm_layer=norm_layer, embed_norm_layer=nn.LayerNorm,
                         global_pool=global_pool)
        self._init_config = config


def _cswin_agent_branch(dim, branch, num_heads, reso, split_size, attn_drop, agent_num):
    return CSWinAgentAttention(dim, reso, branch, split_size=split_size, num_heads=num_heads, attn_drop=attn_drop,
                               agent_num=agent_num)


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------

# Buffers official checkpoints carry that are rebuilt here from the configuration.
_REBUILT_BUFFERS = ("relative_position_index", "attn_mask")


def checkpoint_filter_fn(state_dict, model):
    """Official checkpoint (classification ``{'model': ...}`` or downstream ``{'state_dict': {'backbone.*'}}``) ->
    this model's state dict. Only maps keys (unwraps, strips prefixes, drops the rebuilt buffers, adapts an ImageNet
    checkpoint to the downstream Swin layout); every other key passes unchanged, and the loader names what does not
    fit the model (e.g. a checkpoint of another variant)."""
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
    # Size-dependent tensors (position embeddings, agent biases, relative-position tables) saved at another input
    # size are resampled to this model's size by the skeleton / family (ARCHITECTURE.md, "Input sizes").
    resample = getattr(model, "resample_state_dict_to_size", None)
    return resample(out) if resample is not None else out


# ---------------------------------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------------------------------


def _create(cls, variant, pretrained=False, **kwargs):
    # DeiT: every block is a level and features_only takes the last three by default, as timm's DeiT; the hierarchical
    # models: the four stages. Both through forward_intermediates (timm's FeatureGetterNet).
    out_indices = kwargs.pop("out_indices", 3 if cls is AgentDeiT else tuple(range(4)))
    return build_with_official_weights(cls, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                       feature_cfg=dict(out_indices=out_indices, feature_cls="getter"), **kwargs)


def _cfg(variant, tsinghua_id, **kwargs):
    """A cfg whose official checkpoint (Tsinghua cloud share, a URL that names no file) is cached as
    ``<variant>.in1k.pth`` (backbones/pretrained.py).

    Evaluation transform as the official ``agent_transformer/data/build.py`` for every Agent model: resize to a
    256x256 square (not the short side), then centre-crop 224 -> crop_pct 0.875 with timm's crop_mode 'squash'."""
    return {
        **official_weights(f"https://cloud.tsinghua.edu.cn/f/{tsinghua_id}/?dl=1", f"{variant}.in1k.pth"),
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.875,
        "crop_mode": "squash", "interpolation": "bicubic", "fixed_input_size": False, "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD, "first_conv": "patch_embed1.proj", "classifier": "head",
        "license": "unknown (official repository carries no license file)", **kwargs,
    }


_DEIT = dict(first_conv="patch_embed.proj", fixed_input_size=True, pool_size=None)
_CSWIN = dict(first_conv="stage1_conv_embed.0", fixed_input_size=True)


def _hr(size):
    """The high-resolution configs' evaluation (cfgs/agent_{swin,cswin}_*_{288,384}.yaml set TEST.CROP: False):
    data/build.py then resizes to a size x size square with no crop -> crop_pct 1.0, 'squash'."""
    return dict(input_size=(3, size, size), pool_size=(size // 32, size // 32), crop_pct=1.0)

# Checkpoint URLs: LeapLabTHU/Agent-Attention agent_transformer/README.md ("Pretrained Models").
default_cfgs = generate_default_cfgs({
    "agent_deit_tiny.in1k": _cfg("agent_deit_tiny", "57e0904221824ee7b7af", **_DEIT),
    "agent_deit_small.in1k": _cfg("agent_deit_small", "fdd43304372541db8ea7", **_DEIT),
    "agent_deit_base.in1k": _cfg("agent_deit_base", "5115f15fdd7e4ab58fbc", **_DEIT),
    # 448: data/build.py resizes to int(256 / 224 * 448) = 512 squared, centre-crops 448 -> crop_pct 448 / 512
    "agent_deit_small_448.in1k": _cfg("agent_deit_small_448", "a228f86241c445f1969b", **_DEIT,
                                      input_size=(3, 448, 448), crop_pct=0.875),
    "agent_pvt_tiny.in1k": _cfg("agent_pvt_tiny", "13fdf0e0a7c5498c934f"),
    "agent_pvt_small.in1k": _cfg("agent_pvt_small", "36b8be9a8863456685a3"),
    "agent_pvt_medium.in1k": _cfg("agent_pvt_medium", "4d00ecacf18b45f9b88c"),
    # 256: resize to int(256 / 224 * 256) = 292 squared, centre-crop 256 -> crop_pct 256 / 292 (timm: floor(256 / it)
    # = 292)
    "agent_pvt_medium_256.in1k": _cfg("agent_pvt_medium_256", "654df734121643b19c52", input_size=(3, 256, 256),
                                      pool_size=(8, 8), crop_pct=256 / 292),
    "agent_pvt_large.in1k": _cfg("agent_pvt_large", "040cfe0cfbbe4762ad09"),
    "agent_swin_tiny.in1k": _cfg("agent_swin_tiny", "a2ddc1190c224f768a41", first_conv="patch_embed.proj"),
    "agent_swin_small.in1k": _cfg("agent_swin_small", "f607172c9fea4d6e99bb", first_conv="patch_embed.proj"),
    "agent_swin_base.in1k": _cfg("agent_swin_base", "4fcd2d0114bb490483c3", first_conv="patch_embed.proj"),
    "agent_swin_small_288.in1k": _cfg("agent_swin_small_288", "09760394e93b4046a25e", first_conv="patch_embed.proj",
                                      **_hr(288)),
    "agent_swin_base_384.in1k": _cfg("agent_swin_base_384", "bb84ee9058954706a557", first_conv="patch_embed.proj",
                                     **_hr(384)),
    "agent_cswin_tiny.in1k": _cfg("agent_cswin_tiny", "8c562a74441e46d5902b", **_CSWIN),
    "agent_cswin_small.in1k": _cfg("agent_cswin_small", "30eb8af675bc4b7a8747", **_CSWIN),
    "agent_cswin_base.in1k": _cfg("agent_cswin_base", "c8035b0839b2410c8c9f", **_CSWIN),
    "agent_cswin_base_384.in1k": _cfg("agent_cswin_base_384", "1239be0df44b47719432", **_CSWIN, **_hr(384)),
})


# Agent-DeiT: agent_deit.py registrations + cfgs/agent_deit_{t,s,b}.yaml (agent counts 49 / 49 / 81).
@register_model
def agent_deit_tiny(pretrained=False, **kwargs):
    args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, agent_num=(49, 49, 49, 49))
    return _create(AgentDeiT, "agent_deit_tiny", pretrained, **{**args, **kwargs})


@register_model
def agent_deit_small(pretrained=False, **kwargs):
    args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, agent_num=(49, 49, 49, 49))
    return _create(AgentDeiT, "agent_deit_small", pretrained, **{**args, **kwargs})


@register_model
def agent_deit_base(pretrained=False, **kwargs):
    args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, agent_layer=4, agent_num=(81, 81, 81, 81))
    return _create(AgentDeiT, "agent_deit_base", pretrained, **{**args, **kwargs})


# cfgs/agent_deit_s_448.yaml: agent_deit_small (patch 16, 384 wide, depth 12, 6 heads, every block agent attention)
# at IMG_SIZE 448 (window 28) with agent num 49-49-49-49.
@register_model
def agent_deit_small_448(pretrained=False, **kwargs):
    args = dict(img_size=448, patch_size=16, embed_dim=384, depth=12, num_heads=6, agent_num=(49, 49, 49, 49))
    return _create(AgentDeiT, "agent_deit_small_448", pretrained, **{**args, **kwargs})


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


# cfgs/agent_pvt_m_256.yaml: agent_pvt_medium at IMG_SIZE 256, 'AAAA', agents 9-16-49-49 (PVT_LA_SR_RATIOS: the
# config default 1111); stage grids 64-32-16-8.
@register_model
def agent_pvt_medium_256(pretrained=False, **kwargs):
    args = {**_PVT_COMMON, "depths": (3, 4, 18, 3), "img_size": 256}
    return _create(AgentPVT, "agent_pvt_medium_256", pretrained, **{**args, **kwargs})


@register_model
def agent_pvt_large(pretrained=False, **kwargs):
    return _create(AgentPVT, "agent_pvt_large", pretrained, **{**_PVT_COMMON, "depths": (3, 8, 27, 3), **kwargs})


# Agent-Swin: cfgs/agent_swin_{t,s,b}.yaml (window 56, agents 9-16-49-49); the window follows img_size as in the
# high-resolution configs (img_size // 4: 56 at 224), see AgentSwinTransformer.
@register_model
def agent_swin_tiny(pretrained=False, **kwargs):
    args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), attn_type="AAAB",
                agent_num=(9, 16, 49, 49))
    return _create(AgentSwinTransformer, "agent_swin_tiny", pretrained, **{**args, **kwargs})


@register_model
def agent_swin_small(pretrained=False, **kwargs):
    args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), attn_type="AABB",
                agent_num=(9, 16, 49, 49))
    return _create(AgentSwinTransformer, "agent_swin_small", pretrained, **{**args, **kwargs})


@register_model
def agent_swin_base(pretrained=False, **kwargs):
    args = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), attn_type="AAMB2",
                agent_num=(9, 16, 49, 49))
    return _create(AgentSwinTransformer, "agent_swin_base", pretrained, **{**args, **kwargs})


# cfgs/agent_swin_s_288.yaml: IMG_SIZE 288, window 72 (= 288 // 4), 'AABB', agents 9-16-49-49; window blocks 72 // 8 = 9.
@register_model
def agent_swin_small_288(pretrained=False, **kwargs):
    args = dict(img_size=288, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), attn_type="AABB",
                agent_num=(9, 16, 49, 49))
    return _create(AgentSwinTransformer, "agent_swin_small_288", pretrained, **{**args, **kwargs})


# cfgs/agent_swin_b_384.yaml: IMG_SIZE 384, window 96 (= 384 // 4), 'AAMB2' (official BasicLayer: an 'M' stage has
# agent attention in its first 2 blocks, window attention after), agents 9-16-49-49; window blocks 96 // 8 = 12.
@register_model
def agent_swin_base_384(pretrained=False, **kwargs):
    args = dict(img_size=384, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), attn_type="AAMB2",
                agent_num=(9, 16, 49, 49))
    return _create(AgentSwinTransformer, "agent_swin_base_384", pretrained, **{**args, **kwargs})


# Agent-CSWin: agent_cswin.py Agent_CSWin_{64_24181_tiny,64_36292_small,96_36292_base}_224 + cfgs/agent_cswin_{t,s,b}.yaml
# (attn 'AABB', agents 9-16-49-49, agent strips 56-28-14-7 = whole maps at 224, split 1-2-7-7): strips follow img_size
# (cswin.cswin_split_sizes), as the 384 config's do.
_CSWIN_COMMON = dict(mlp_ratio=4.0, agent_num=(9, 16, 49, 49), attn_type="AABB")


@register_model
def agent_cswin_tiny(pretrained=False, **kwargs):
    args = dict(_CSWIN_COMMON, embed_dim=64, depth=(2, 4, 18, 1), num_heads=(2, 4, 8, 16))
    return _create(AgentCSWin, "agent_cswin_tiny", pretrained, **{**args, **kwargs})


@register_model
def agent_cswin_small(pretrained=False, **kwargs):
    args = dict(_CSWIN_COMMON, embed_dim=64, depth=(3, 6, 29, 2), num_heads=(2, 4, 8, 16))
    return _create(AgentCSWin, "agent_cswin_small", pretrained, **{**args, **kwargs})


@register_model
def agent_cswin_base(pretrained=False, **kwargs):
    args = dict(_CSWIN_COMMON, embed_dim=96, depth=(3, 6, 29, 2), num_heads=(4, 8, 16, 32))
    return _create(AgentCSWin, "agent_cswin_base", pretrained, **{**args, **kwargs})


# agent_cswin.py Agent_CSWin_96_36292_base_384 (split 1-2-12-12) + cfgs/agent_cswin_b_384.yaml (IMG_SIZE 384, 'AABB',
# agents 9-16-49-49, agent strips 96-48-24-12).
@register_model
def agent_cswin_base_384(pretrained=False, **kwargs):
    args = dict(_CSWIN_COMMON, img_size=384, embed_dim=96, depth=(3, 6, 29, 2), num_heads=(4, 8, 16, 32))
    return _create(AgentCSWin, "agent_cswin_base_384", pretrained, **{**args, **kwargs})
