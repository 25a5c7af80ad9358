"""Plug-in attention layers: drop-in ``nn.Module``s for anyone's network, over the ops in :mod:`kernels`.

Published as :mod:`attnzoo.layers` (``from attnzoo.layers import BiLevelRoutingAttention2d``); they live here, next to the
backbones, so that a backbone family may reuse them without importing ``zoo`` (the arrows point down:
``zoo`` -> ``backbones`` -> ``kernels``). The BiFormer / Agent / Flowformer / SLAB backbones keep their own attention
modules: those reproduce the official architectures and checkpoints exactly, quirks included; these layers are the
same attentions made general (any map size, any channel count, masks instead of unmasked padding).

One convention for every 2D layer:

* ``(B, C, H, W)`` in, ``(B, C, H, W)`` out, same shape and dtype; any ``H x W`` (a layer that needs a grid pads
  inside and masks what it padded, never crops the input and never asks for divisibility);
* the channel count ``dim`` is the first argument and every other argument has a default that works for any ``dim``
  (``num_heads=None`` means ``dim // 32`` heads of 32 channels when 32 divides ``dim``, else one head), so a config
  naming only the type builds for any channel count;
* no residual connection inside: the caller adds ``x + layer(x)`` where its architecture wants one (the OpenMMLab
  plug-in wrappers in :mod:`attnzoo.openmmlab` do: mmcv plug-ins replace a block's feature map with their output);
* wrong inputs raise ``ValueError`` naming the problem and the fix (a rank-3 tensor, channels that differ from
  ``dim``, a head count that does not divide ``dim``);
* each class docstring states its cost (parameters, multiply-adds and activation memory in ``H, W, C``), and each
  traces with ``torch.compile(fullgraph=True)`` and exports to ONNX (tests/zoo/test_layers.py);
* an empty batch ``(0, C, H, W)`` gives an empty output of the same shape, and its backward runs and gives every
  parameter a (zero) gradient, as a non-empty batch does (so a rank with no samples left keeps DDP in step);
* NaN and inf are not checked for (a check would cost a device sync per call): a non-finite value anywhere in one
  sample's map makes that sample's output non-finite almost everywhere (the attentions mix every token; in BRA a
  non-finite region affinity ranks first, so nearly every region routes to the poisoned one; ELA's GroupNorm spreads
  it over the poisoned channel's group, at every position), and never reaches the other samples of the batch. Check inputs upstream (``torch.isfinite``) where they may hold NaN.

The sequence layer :class:`FlowAttention1d` takes ``(B, N, C)`` and has a ``causal`` switch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.kernels.agent import agent_attention, agent_attention_reference, pool_agent_tokens
from attnzoo.kernels.bra import bra_attention, region_routing
from attnzoo.kernels.flow import flow_attention
from attnzoo.kernels.slab import simplified_linear_attention

__all__ = [
    "BiLevelRoutingAttention2d",
    "AgentAttention2d",
    "FlowAttention2d",
    "FlowAttention1d",
    "SimplifiedLinearAttention2d",
    "ELA",
    "ELA_PRESETS",
    "MOH_BALANCE_WEIGHT",
    "MixtureOfHeadAttention",
    "default_num_heads",
    "moh_balance_loss",
]

DEFAULT_HEAD_DIM = 32


def default_num_heads(dim: int, head_dim: int = DEFAULT_HEAD_DIM) -> int:
    """``dim // head_dim`` heads when ``head_dim`` divides ``dim`` (and ``dim >= head_dim``), else one head."""
    return dim // head_dim if dim >= head_dim and dim % head_dim == 0 else 1


def _resolve_heads(layer: str, dim: int, num_heads: int | None) -> int:
    if dim < 1:
        raise ValueError(f"{layer}: dim must be a positive channel count, got {dim}")
    if num_heads is None:
        return default_num_heads(dim)
    if num_heads < 1 or dim % num_heads:
        # suggest the head counts closest to the one asked for (for 60 channels and 7 heads: 4, 5, 6)
        divisors = [d for d in range(1, min(dim, 64) + 1) if dim % d == 0]
        nearest = sorted(sorted(divisors, key=lambda d: (abs(d - num_heads), d))[:3])
        raise ValueError(
            f"{layer}: {dim} channels cannot be split into num_heads={num_heads} equal heads "
            f"({dim} % {num_heads} = {dim % num_heads if num_heads > 0 else 'n/a'}); pick a divisor of {dim} "
            f"such as {', '.join(map(str, nearest))}, or leave num_heads unset for {default_num_heads(dim)}"
        )
    return num_heads


def _check_nchw(layer: str, x: torch.Tensor, dim: int) -> None:
    if x.dim() != 4:
        hint = " (a (B, N, C) sequence: use FlowAttention1d, or reshape tokens to (B, C, H, W))" if x.dim() == 3 else ""
        raise ValueError(f"{layer} expects a (B, C, H, W) feature map, got a rank-{x.dim()} tensor of shape "
                         f"{tuple(x.shape)}{hint}")
    if x.shape[1] != dim:
        raise ValueError(f"{layer} was built for {dim} channels but the input has {x.shape[1]} (shape "
                         f"{tuple(x.shape)}): build it with dim={x.shape[1]} or feed channels-first (NCHW) maps")
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{layer}: empty feature map {tuple(x.shape)}")


# ----------------------------------------------------------------------------------------------------------------------
# Bi-level routing attention
# ----------------------------------------------------------------------------------------------------------------------

# Padded keys get a logit of -_MASK_LOGIT through one extra q/k channel per head (q side sqrt(M / scale), key side
# -sqrt(M / scale) on padded tokens, 0 on real ones), so the same attnzoo.kernels.bra op masks them on every backend without a
# mask argument; exp(-1e4) is exactly 0 in fp32. The split square root keeps both factors small enough for fp16.
_MASK_LOGIT = 1e4


def _to_regions(x: torch.Tensor, regions_h: int, regions_w: int, region: int) -> torch.Tensor:
    """(B, Hp, Wp, C) -> (B, regions_h * regions_w, region * region, C), regions and tokens in row-major order."""
    batch, _, _, channels = x.shape
    x = x.view(batch, regions_h, region, regions_w, region, channels).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, regions_h * regions_w, region * region, channels)


def _from_regions(x: torch.Tensor, regions_h: int, regions_w: int, region: int) -> torch.Tensor:
    """Inverse of :func:`_to_regions`: (B, R, T, C) -> (B, Hp, Wp, C)."""
    batch, _, _, channels = x.shape
    x = x.view(batch, regions_h, regions_w, region, region, channels).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, regions_h * region, regions_w * region, channels)


class BiLevelRoutingAttention2d(nn.Module):
    """Bi-level routing attention (BiFormer, Zhu et al. CVPR 2023) for any NCHW map, on :func:`attnzoo.kernels.bra.bra_attention`.

    The map is cut into square regions of ``region_size x region_size`` tokens (a fixed token size: a larger map gets
    more regions, not larger ones). Each query region picks the ``topk`` key regions whose mean key is most similar to
    its mean query (one routing for all heads, not differentiable, as in BiFormer), and its tokens attend to all the
    tokens of those regions (one softmax). A depthwise ``lepe_kernel`` conv on the values (LePE) is added, then the
    output projection. A map whose sides are not multiples of ``region_size`` is zero-padded to the next multiple
    after the projection; padded tokens are left out of the region means and masked out of the attention, and the
    output is cropped back, so the result does not depend on the padding. ``topk`` is capped at the number of
    regions (a map of one region is plain full attention).

    Args:
        dim: channels C.
        num_heads: heads (must divide C); default C // 32 when 32 divides C, else 1.
        topk: routed key regions per query region.
        region_size: tokens per region side.
        lepe_kernel: kernel of the depthwise LePE conv on the values; 0 disables it.
        qkv_bias: bias in the q/k/v projection.
        qk_scale: logit scale; default ``head_dim ** -0.5``.

    Cost, for ``N = H * W`` tokens, ``S = region_size``, ``R = ceil(H / S) * ceil(W / S)`` regions, ``k = topk``:

    * parameters ``4 C^2 + 4 C + C * lepe_kernel^2 (+ C)``;
    * multiply-adds ``4 N C^2`` (projections) ``+ 2 N k S^2 C`` (attention) ``+ N C lepe_kernel^2`` (LePE)
      ``+ R^2 C`` (region affinity: quadratic in the region count, but ``S^4`` times smaller than full attention);
    * memory (activations, training): ``O(N C)`` for q, k, v, output and a per-token fp32 log-sum-exp; the routed
      ``k S^2``-token key/value copies, logits and probabilities exist one block of query regions at a time
      (``attnzoo.kernels.bra.REFERENCE_CHUNK_LOGITS`` logits on the CPU path; the Triton path reads routed regions in place),
      and the region affinity one block of rows at a time. So memory is linear in ``H * W`` at fixed S and k.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        topk: int = 4,
        region_size: int = 8,
        lepe_kernel: int = 3,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
    ):
        super().__init__()
        name = type(self).__name__
        self.dim = dim
        self.num_heads = _resolve_heads(name, dim, num_heads)
        if topk < 1:
            raise ValueError(f"{name}: topk must be >= 1 (routed regions per query region), got {topk}")
        if region_size < 1:
            raise ValueError(f"{name}: region_size must be >= 1 token, got {region_size}")
        if lepe_kernel < 0 or (lepe_kernel and lepe_kernel % 2 == 0):
            raise ValueError(f"{name}: lepe_kernel must be 0 (no LePE) or odd (same-size conv), got {lepe_kernel}")
        self.topk = topk
        self.region_size = region_size
        self.head_dim = dim // self.num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.lepe = (
            nn.Conv2d(dim, dim, lepe_kernel, padding=lepe_kernel // 2, groups=dim) if lepe_kernel else None
        )
        self.proj = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, topk={self.topk}, region_size={self.region_size}"

    def _valid_tokens(self, height: int, width: int, regions_h: int, regions_w: int, device) -> torch.Tensor:
        """(R, T) bool: which tokens of each region lie inside the unpadded map (static in H, W)."""
        size = self.region_size
        rows = torch.arange(regions_h * size, device=device) < height
        cols = torch.arange(regions_w * size, device=device) < width
        grid = (rows[:, None] & cols[None, :]).view(regions_h, size, regions_w, size).permute(0, 2, 1, 3)
        return grid.reshape(regions_h * regions_w, size * size)

    def _with_mask_channel(self, q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor):
        """Append one channel per head: q gets +c, k gets -c on padded tokens and 0 on real ones (c^2 * scale = M)."""
        batch, regions, tokens, channels = q.shape
        factor = math.sqrt(_MASK_LOGIT / self.scale)
        q_heads = q.view(batch, regions, tokens, self.num_heads, self.head_dim)
        k_heads = k.view(batch, regions, tokens, self.num_heads, self.head_dim)
        q_extra = q_heads.new_full((batch, regions, tokens, self.num_heads, 1), factor)
        k_extra = torch.where(valid, 0.0, -factor).to(k.dtype).view(1, regions, tokens, 1, 1)
        k_extra = k_extra.expand(batch, -1, -1, self.num_heads, -1)
        q_masked = torch.cat([q_heads, q_extra], dim=-1).flatten(-2)
        k_masked = torch.cat([k_heads, k_extra], dim=-1).flatten(-2)
        return q_masked, k_masked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_nchw(type(self).__name__, x, self.dim)
        batch, channels, height, width = x.shape
        size = self.region_size
        # ceil division without negatives: torch.onnx's TorchScript exporter (Ultralytics' ONNX export) turns the
        # floor division of a negative traced size into a truncating one, which miscounts the regions of a padded map
        regions_h, regions_w = (height + size - 1) // size, (width + size - 1) // size
        pad_h, pad_w = regions_h * size - height, regions_w * size - width
        regions = regions_h * regions_w

        q, k, v = self.qkv(x.permute(0, 2, 3, 1)).chunk(3, dim=-1)  # (B, H, W, C) each
        if pad_h or pad_w:
            q, k, v = (F.pad(t, (0, 0, 0, pad_w, 0, pad_h)) for t in (q, k, v))
        q_regions, k_regions, v_regions = (_to_regions(t, regions_h, regions_w, size) for t in (q, k, v))

        # routing on region means over real tokens only (padding is zero, so sums are unaffected; counts are not)
        valid = self._valid_tokens(height, width, regions_h, regions_w, x.device)
        counts = valid.sum(dim=1).to(q.dtype).view(1, regions, 1, 1)
        query_mean = q_regions.sum(dim=2, keepdim=True) / counts
        key_mean = k_regions.sum(dim=2, keepdim=True) / counts
        r_idx = region_routing(query_mean, key_mean, min(self.topk, regions), self.scale)

        if pad_h or pad_w:
            q_regions, k_regions = self._with_mask_channel(q_regions, k_regions, valid)
        out = bra_attention(q_regions, k_regions, v_regions, r_idx, self.num_heads, self.scale)
        out = _from_regions(out, regions_h, regions_w, size)[:, :height, :width]  # (B, H, W, C)
        if self.lepe is not None:
            lepe = self.lepe(v[:, :height, :width].permute(0, 3, 1, 2))
            out = out + lepe.permute(0, 2, 3, 1)
        return self.proj(out).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------------------------------------------------
# Agent attention
# ----------------------------------------------------------------------------------------------------------------------


class AgentAttention2d(nn.Module):
    """Agent attention (Han et al., ECCV 2024) for any NCHW map, on :func:`attnzoo.kernels.agent.agent_attention`.

    ``agent_num`` agent tokens (the queries average-pooled to a ``sqrt(agent_num)`` square grid) attend to all keys
    and values; then every query attends to the agents (two softmax attentions, each linear in the token count). As
    in Agent-PVT, both attentions get a position bias interpolated (bilinear) from a learned 7x7 grid per head and agent
    to the map's H x W, and a depthwise 3x3 conv of the values is added. The official per-row/per-column biases, whose
    size is fixed by the training resolution, are left out so that any H x W works without resizing parameters.

    Args:
        dim: channels C.
        num_heads: heads (must divide C); default C // 32 when 32 divides C, else 1.
        agent_num: agent tokens, a square number (49 = 7x7, the official default).
        qkv_bias: bias in the q/k/v projection.
        qk_scale: logit scale; default ``head_dim ** -0.5``.

    Cost, for ``N = H * W`` tokens and ``n = agent_num``:

    * parameters ``4 C^2 + 4 C + 9 C + C + 2 * 49 n h``;
    * multiply-adds ``4 N C^2`` (projections) ``+ 4 N n C`` (two attentions) ``+ 9 N C`` (conv) ``+ N C`` (pooling);
    * memory (activations, training): ``O(N C + N n h)`` (the (N x n) attention maps): linear in ``H * W``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        agent_num: int = 49,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
    ):
        super().__init__()
        name = type(self).__name__
        self.dim = dim
        self.num_heads = _resolve_heads(name, dim, num_heads)
        side = math.isqrt(agent_num) if agent_num > 0 else 0
        if side < 1 or side * side != agent_num:
            raise ValueError(f"{name}: agent_num must be a square number (agents form a grid), got {agent_num}; "
                             f"e.g. 49 (7x7), 16 (4x4) or 64 (8x8)")
        self.agent_num = agent_num
        self.agent_shape = (side, side)
        self.head_dim = dim // self.num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.agent_bias_grid = nn.Parameter(torch.zeros(self.num_heads, agent_num, 7, 7))  # agents -> keys
        self.token_bias_grid = nn.Parameter(torch.zeros(self.num_heads, agent_num, 7, 7))  # queries -> agents
        nn.init.trunc_normal_(self.agent_bias_grid, std=0.02)
        nn.init.trunc_normal_(self.token_bias_grid, std=0.02)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, agent_num={self.agent_num}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_nchw(type(self).__name__, x, self.dim)
        batch, channels, height, width = x.shape
        tokens = height * width
        qkv = self.qkv(x.flatten(2).transpose(1, 2))  # (B, N, 3C)
        q, k, v = qkv.view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if batch:
            agents = pool_agent_tokens(q, (height, width), self.agent_shape)  # (B, h, n, d)
            attend = agent_attention
        else:
            # An empty batch: the pooling's reshape cannot infer the agent count from 0 elements, and the fused
            # (SDPA) path returns early without a gradient for the bias grids; the reference op gives every
            # parameter its (zero) gradient, as a non-empty batch does, so DDP sees every parameter used.
            agents = q.new_zeros(0, self.num_heads, self.agent_num, self.head_dim)
            attend = agent_attention_reference
        agent_bias = F.interpolate(self.agent_bias_grid, size=(height, width), mode="bilinear")
        agent_bias = agent_bias.reshape(1, self.num_heads, self.agent_num, tokens)
        token_bias = F.interpolate(self.token_bias_grid, size=(height, width), mode="bilinear")
        token_bias = token_bias.reshape(1, self.num_heads, self.agent_num, tokens).transpose(-2, -1)
        out = attend(q, k, v, agents, agent_bias, token_bias, self.scale)  # (B, h, N, d)
        out = out.transpose(1, 2).reshape(batch, tokens, channels)
        v_map = v.transpose(-2, -1).reshape(batch, channels, height, width)
        out = out + self.dwc(v_map).flatten(2).transpose(1, 2)
        return self.proj(out).transpose(1, 2).reshape(batch, channels, height, width)


# ----------------------------------------------------------------------------------------------------------------------
# Flow attention
# ----------------------------------------------------------------------------------------------------------------------


class FlowAttention1d(nn.Module):
    """Flow-Attention (Flowformer, Wu et al. ICML 2022) over a ``(B, N, C)`` sequence, on :func:`attnzoo.kernels.flow`.

    The core ``Flow_Attention`` of thuml/Flowformer: q/k/v projections, per-head sigmoid feature map, the
    flow-conservation normalisation, output projection. ``causal=True`` is the official ``Flow_Attention_Causal``
    (token i sees tokens <= i).

    Args:
        dim: channels C.
        num_heads: heads (must divide C); default C // 32 when 32 divides C, else 1.
        causal: causal (autoregressive) form.
        eps: the official ``eps`` of the flow sums.

    Cost, for ``N`` tokens and head dim ``d = C / h``: parameters ``4 C^2 + 4 C``; multiply-adds ``4 N C^2``
    (projections) ``+ ~6 N C d`` (flows and the ``d x d`` states); memory ``O(N C)`` (no N x N term; the causal form
    keeps one ``d x d`` state per 64-token chunk).
    """

    def __init__(self, dim: int, num_heads: int | None = None, causal: bool = False, eps: float = 1e-6):
        super().__init__()
        self.dim = dim
        self.num_heads = _resolve_heads(type(self).__name__, dim, num_heads)
        self.head_dim = dim // self.num_heads
        self.causal = causal
        self.eps = eps
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, causal={self.causal}"

    def _check(self, x: torch.Tensor) -> None:
        name = type(self).__name__
        if x.dim() != 3:
            hint = " (a (B, C, H, W) map: use FlowAttention2d)" if x.dim() == 4 else ""
            raise ValueError(f"{name} expects a (B, N, C) sequence, got a rank-{x.dim()} tensor of shape "
                             f"{tuple(x.shape)}{hint}")
        if x.shape[-1] != self.dim:
            raise ValueError(f"{name} was built for {self.dim} channels but the input has {x.shape[-1]} (shape "
                             f"{tuple(x.shape)}): build it with dim={x.shape[-1]}")
        if x.shape[1] < 1:
            raise ValueError(f"{name}: empty sequence {tuple(x.shape)}")

    def attend(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C) without the input checks (shared with :class:`FlowAttention2d`)."""
        batch, length, channels = tokens.shape
        qkv = self.qkv(tokens).view(batch, length, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, N, d)
        out = flow_attention(q, k, v, causal=self.causal, eps=self.eps)
        return self.proj(out.transpose(1, 2).reshape(batch, length, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.attend(x)


class FlowAttention2d(nn.Module):
    """Flow-Attention (Flowformer, Wu et al. ICML 2022) over the ``H * W`` tokens of an NCHW map (non-causal).

    The same layer as :class:`FlowAttention1d` on the row-major token sequence (``self.attention``); linear in the
    token count, so any map size works without padding.

    Args:
        dim: channels C.
        num_heads: heads (must divide C); default C // 32 when 32 divides C, else 1.
        eps: the official ``eps`` of the flow sums.

    Cost, for ``N = H * W`` tokens and head dim ``d = C / h``: parameters ``4 C^2 + 4 C``; multiply-adds
    ``4 N C^2 + ~6 N C d``; memory ``O(N C)``.
    """

    def __init__(self, dim: int, num_heads: int | None = None, eps: float = 1e-6):
        super().__init__()
        self.dim = dim
        self.attention = FlowAttention1d(dim, num_heads=num_heads, causal=False, eps=eps)
        self.num_heads = self.attention.num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_nchw(type(self).__name__, x, self.dim)
        batch, channels, height, width = x.shape
        out = self.attention.attend(x.flatten(2).transpose(1, 2))
        return out.transpose(1, 2).reshape(batch, channels, height, width)


# ----------------------------------------------------------------------------------------------------------------------
# SLAB simplified linear attention
# ----------------------------------------------------------------------------------------------------------------------


class SimplifiedLinearAttention2d(nn.Module):
    """SLAB's simplified linear attention (Guo et al., ICML 2024) for any NCHW map, on
    :func:`attnzoo.kernels.slab.simplified_linear_attention`.

    As the official ``SimplifiedLinearAttention``: q/k/v projections, a positional encoding added to k, the ReLU
    feature map on q and k, then ``out_i = (q_i @ (k^T v)) / (q_i . sum_j k_j + 1e-6)`` per head (global over all
    ``H * W`` tokens: linear in the token count), plus a depthwise ``kernel_size`` conv of the values (one conv of
    ``head_dim`` channels shared by every head, as officially), and the output projection. The official positional
    encoding is one vector per token, so its size fixes the token count; here it is a learned ``pos_size x pos_size``
    grid (zeros at init, as officially) interpolated (bilinear) to the map's H x W, so any H x W works; at
    ``H = W = pos_size`` the interpolation is the identity and the layer is the official attention.

    Args:
        dim: channels C.
        num_heads: heads (must divide C); default C // 32 when 32 divides C, else 1.
        kernel_size: the values' depthwise conv (5, the official default; odd).
        qkv_bias: bias in the q/k/v projection.
        pos_size: side of the learned positional-encoding grid (7).
        eps: the official ``1e-6`` of the normaliser.

    Cost, for ``N = H * W`` tokens, head dim ``d = C / h`` and ``k = kernel_size``:

    * parameters ``4 C^2 + 4 C`` (projections) ``+ d k^2 + d`` (conv) ``+ C pos_size^2`` (positional grid);
    * multiply-adds ``4 N C^2`` (projections) ``+ 2 N C d`` (the ``d x d`` states and their products) ``+ N C k^2``
      (conv) ``+ N C`` (normaliser);
    * memory (activations, training): ``O(N C)``: no N x N term (the Triton path keeps the state on chip).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        kernel_size: int = 5,
        qkv_bias: bool = True,
        pos_size: int = 7,
        eps: float = 1e-6,
    ):
        super().__init__()
        name = type(self).__name__
        self.dim = dim
        self.num_heads = _resolve_heads(name, dim, num_heads)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"{name}: kernel_size must be odd and positive (the conv keeps the map size), got "
                             f"{kernel_size}; e.g. 3 or 5 (the official default)")
        if pos_size < 1:
            raise ValueError(f"{name}: pos_size must be >= 1 (the side of the positional grid), got {pos_size}")
        self.head_dim = dim // self.num_heads
        self.kernel_size = kernel_size
        self.eps = eps
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dwc = nn.Conv2d(self.head_dim, self.head_dim, kernel_size, padding=kernel_size // 2,
                             groups=self.head_dim)
        self.pos_grid = nn.Parameter(torch.zeros(1, dim, pos_size, pos_size))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_nchw(type(self).__name__, x, self.dim)
        batch, channels, height, width = x.shape
        tokens = height * width
        heads, head_dim = self.num_heads, self.head_dim
        q, k, v = self.qkv(x.flatten(2).transpose(1, 2)).chunk(3, dim=-1)  # (B, N, C) each
        position = F.interpolate(self.pos_grid, size=(height, width), mode="bilinear").flatten(2).transpose(1, 2)
        q, k = torch.relu(q), torch.relu(k + position)

        def split(t):  # (B, N, C) -> (B, h, N, d)
            return t.view(batch, tokens, heads, head_dim).transpose(1, 2)

        v = split(v)
        out = simplified_linear_attention(split(q), split(k), v, eps=self.eps)  # (B, h, N, d)
        v_maps = v.transpose(-2, -1).reshape(batch * heads, head_dim, height, width)
        out = out + self.dwc(v_maps).view(batch, heads, head_dim, tokens).transpose(-2, -1)
        out = out.transpose(1, 2).reshape(batch, tokens, channels)
        return self.proj(out).transpose(1, 2).reshape(batch, channels, height, width)


# ----------------------------------------------------------------------------------------------------------------------
# Efficient Local Attention
# ----------------------------------------------------------------------------------------------------------------------

ELA_PRESETS = {
    # name: (1D conv kernel, 1D conv groups as a divisor of C ("C" = depthwise, "C/8"), GroupNorm groups)
    "T": dict(kernel_size=5, conv_groups="C", norm_groups=32),
    "B": dict(kernel_size=7, conv_groups="C", norm_groups=16),
    "S": dict(kernel_size=5, conv_groups="C/8", norm_groups=16),
    "L": dict(kernel_size=7, conv_groups="C/8", norm_groups=16),
}
"""The four settings the ELA paper names ELA-T/B/S/L: kernel 5 or 7; a depthwise 1D conv (T, B) or one with C/8
groups (S, L); GroupNorm with 32 (T) or 16 groups. No official code exists; the values are the paper's hyperparameter
settings as its public re-implementations state them (the paper's own table was not re-read for this file)."""


def _largest_divisor_at_most(value: int, limit: int) -> int:
    limit = max(1, min(value, limit))
    return next(d for d in range(limit, 0, -1) if value % d == 0)


class ELA(nn.Module):
    """Efficient Local Attention (Xu & Wan, arXiv:2403.01123, 2024), from the paper's equations (no official code).

    With ``x`` of shape (B, C, H, W)::

        z_h[c, i] = mean_j x[c, i, j]          # strip pooling along W: one value per row    (B, C, H)
        z_w[c, j] = mean_i x[c, i, j]          # strip pooling along H: one value per column (B, C, W)
        y_h = sigmoid(GN(conv1d(z_h)))         # the same 1D conv and GroupNorm for both directions
        y_w = sigmoid(GN(conv1d(z_w)))
        out[c, i, j] = x[c, i, j] * y_h[c, i] * y_w[c, j]

    The conv has no bias and zero "same" padding; the channel count never shrinks (the paper's point against
    Coordinate Attention). Unlike the attention layers, ELA is a gate: its output already contains the input scaled.

    Args:
        dim: channels C.
        preset: "T", "B" (default), "S" or "L" (:data:`ELA_PRESETS`); explicit arguments below override it.
        kernel_size: 1D conv kernel (odd).
        conv_groups: 1D conv groups (C = depthwise).
        norm_groups: GroupNorm groups.
        Groups that do not divide C are lowered to the largest divisor of C below them (e.g. C = 48 with 32 GN
        groups uses 24), so every preset builds for any C.

    Cost: parameters ``C * k * C / conv_groups + 2 C``; multiply-adds ``2 H W C`` (pooling and gating)
    ``+ (H + W) C k C / conv_groups``; memory ``O(H W C)`` (the output) ``+ O((H + W) C)``.
    """

    def __init__(
        self,
        dim: int,
        preset: str = "B",
        kernel_size: int | None = None,
        conv_groups: int | None = None,
        norm_groups: int | None = None,
    ):
        super().__init__()
        if preset not in ELA_PRESETS:
            raise ValueError(f"ELA: preset must be one of {sorted(ELA_PRESETS)} (the paper's ELA-T/B/S/L), got "
                             f"{preset!r}")
        if dim < 1:
            raise ValueError(f"ELA: dim must be a positive channel count, got {dim}")
        settings = ELA_PRESETS[preset]
        kernel_size = kernel_size or settings["kernel_size"]
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ELA: kernel_size must be odd (same-length 1D conv), got {kernel_size}")
        if conv_groups is None:
            conv_groups = dim if settings["conv_groups"] == "C" else _largest_divisor_at_most(dim, dim // 8)
        elif conv_groups < 1 or dim % conv_groups:
            raise ValueError(f"ELA: conv_groups={conv_groups} must divide dim={dim}")
        norm_groups = _largest_divisor_at_most(dim, norm_groups or settings["norm_groups"])
        self.dim = dim
        self.preset = preset
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=conv_groups, bias=False)
        self.norm = nn.GroupNorm(norm_groups, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, preset={self.preset!r}"

    def _gate(self, strip: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.norm(self.conv(strip)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_nchw(type(self).__name__, x, self.dim)
        gate_h = self._gate(x.mean(dim=3))  # (B, C, H)
        gate_w = self._gate(x.mean(dim=2))  # (B, C, W)
        return x * gate_h.unsqueeze(-1) * gate_w.unsqueeze(-2)


# ---------------------------------------------------------------------------------------------------------------------
# Mixture-of-Head attention (MoH, Jin et al. 2024, arXiv:2410.11842; official code SkyworkAI/MoH)
# ---------------------------------------------------------------------------------------------------------------------

MOH_BALANCE_WEIGHT = 0.01
"""The official weight of the load-balancing loss (SkyworkAI/MoH ``MoH-ViT/engine.py``: ``0.01 * mean``)."""


def check_moh_heads(num_heads: int, shared_heads: int, routed_heads: int, who: str) -> None:
    """Raises ``ValueError`` naming the fix when the shared/routed split cannot be built."""
    routable = num_heads - shared_heads
    if shared_heads < 0 or routed_heads < 0 or shared_heads > num_heads:
        raise ValueError(f"{who}: shared_heads={shared_heads} and routed_heads={routed_heads} must be >= 0 with "
                         f"shared_heads <= num_heads={num_heads}")
    if routed_heads > routable:
        raise ValueError(f"{who}: routed_heads={routed_heads} (the top-k of each token) exceeds the "
                         f"{routable} routable heads (num_heads {num_heads} - shared_heads {shared_heads})")
    if routed_heads == 0 and shared_heads < 2:
        raise ValueError(f"{who}: with routed_heads=0 every head is shared and weighted by a softmax over the shared "
                         f"heads, which needs shared_heads >= 2 (got {shared_heads}); set routed_heads > 0")
    if routed_heads > 0 and routable == 0:
        raise ValueError(f"{who}: routed_heads={routed_heads} but every head is shared; lower shared_heads")


def build_moh_gates(module: nn.Module, dim: int, num_heads: int, shared_heads: int, routed_heads: int) -> None:
    """Adds the official gate layers to ``module`` under the official names: ``wg`` (router over the routed heads),
    ``wg_0`` (shared vs routed share, when both exist), ``wg_1`` (weights of the shared heads, when > 1)."""
    module.shared_head = shared_heads
    module.routed_head = routed_heads
    if routed_heads > 0:
        module.wg = nn.Linear(dim, num_heads - shared_heads, bias=False)
        if shared_heads > 0:
            module.wg_0 = nn.Linear(dim, 2, bias=False)
    if shared_heads > 1:
        module.wg_1 = nn.Linear(dim, shared_heads, bias=False)


def moh_head_gates(module: nn.Module, x: torch.Tensor, return_heads: bool = False):
    """Per-token head weights of a module with :func:`build_moh_gates`' layers, as the official MoH computes them.

    x: (B, N, C) the attention's input. Returns ``gates`` (B, N, heads): the shared heads first, each token's top-k
    routed heads with their renormalised router scores, the unselected routed heads exactly 0; and the
    load-balancing loss ``mean(importance * load) * E^2`` over the routed heads (E of them) in training, else None.
    With ``return_heads`` (routed modules only), also ``heads`` (B, N, shared + k): the heads each token uses, shared
    first (the selection :func:`attnzoo.kernels.moh.head_sparse_attention` takes).
    """
    b, n, c = x.shape
    tokens = x.reshape(b * n, c)
    shared, routed = module.shared_head, module.routed_head
    if routed == 0:
        return F.softmax(module.wg_1(tokens), dim=1).reshape(b, n, shared) * shared, None
    scores = F.softmax(module.wg(tokens), dim=1)
    experts = scores.shape[1]
    indices = torch.topk(scores, k=routed, dim=1).indices
    mask = torch.zeros_like(scores).scatter(1, indices, 1.0)  # the official one_hot(...).sum(1), ONNX-exportable
    balance = None
    if module.training:  # no token (an empty batch): nothing to balance, a loss of 0 (a mean over none is NaN)
        balance = (torch.mean(scores.mean(dim=0) * mask.mean(dim=0)) * experts * experts if b * n
                   else scores.sum() * 0)
    routed_gates = scores * mask
    denom = routed_gates.sum(dim=1, keepdim=True).clamp(min=torch.finfo(routed_gates.dtype).eps)
    routed_gates = (routed_gates / denom).reshape(b, n, experts) * routed
    if shared == 0:
        gates = routed_gates
    elif shared > 1:
        shared_gates = F.softmax(module.wg_1(tokens), dim=1).reshape(b, n, shared) * shared
    else:
        shared_gates = torch.full((b, n, 1), float(shared), dtype=x.dtype, device=x.device)
    if shared:
        share = F.softmax(module.wg_0(tokens), dim=1).reshape(b, n, 2) * 2
        gates = torch.cat([shared_gates * share[..., :1], routed_gates * share[..., 1:]], dim=2)
    if not return_heads:
        return gates, balance
    shared_idx = torch.arange(shared, device=x.device).expand(b * n, shared)
    return gates, balance, torch.cat([shared_idx, indices + shared], dim=1).reshape(b, n, shared + routed)


def moh_balance_loss(model: nn.Module, weight: float = 1.0) -> torch.Tensor | None:
    """``weight`` x the mean load-balancing loss of the MoH layers in ``model`` over its last training forward (the
    official ``sum(losses) / len(losses)``), or None when no MoH layer routed in training mode since.

    Every MoH layer (:class:`MixtureOfHeadAttention`, the MoH-TransNeXt attentions) keeps its last training forward's
    loss in ``moh_balance`` (None after an eval forward); add ``moh_balance_loss(model, MOH_BALANCE_WEIGHT)`` to the
    task loss, as the official training does.
    """
    losses = [m.moh_balance for m in model.modules() if getattr(m, "moh_balance", None) is not None]
    if not losses:
        return None
    return weight * torch.stack(losses).mean()


class MixtureOfHeadAttention(nn.Module):
    """Mixture-of-Head attention (MoH, Jin et al. 2024, arXiv:2410.11842) for a ``(B, N, C)`` sequence: a drop-in
    for timm's ``Attention`` in a ViT block (same ``qkv`` / ``proj`` names and shapes,
    ``forward(x, attn_mask=None, is_causal=False)``).

    Heads are experts: ``shared_heads`` are always on, each token picks its top-``routed_heads`` of the other heads
    by a router (``wg``); the head outputs are summed with the learned weights of the official MoH (``wg_1`` over the
    shared heads, ``wg_0`` shared-vs-routed share) instead of equally. In training each forward keeps the
    load-balancing loss in ``moh_balance``; add :func:`moh_balance_loss` ``(model, MOH_BALANCE_WEIGHT)`` to the loss
    (``zoo train`` does). Attention is scaled dot-product over all heads, then the unselected ones weigh 0 (the
    official form); :attr:`head_fraction` is the share of heads a token uses.

    Args:
        dim: channels C.
        num_heads: heads (must divide C); default C // 32 when 32 divides C, else 1.
        shared_heads: always-on heads; default ``num_heads // 4`` (at least 1 when there are 2+ heads).
        routed_heads: top-k routed heads per token; default half of the others (at least 1 when any).
        qkv_bias, qk_norm, proj_bias, attn_drop, proj_drop, norm_layer: as timm's ``Attention``.

    Cost, for ``N`` tokens, ``h`` heads, ``E`` routed experts: parameters ``4 C^2 (+ biases) + C (E + 2 + shared)``
    for the gates; multiply-adds ``4 N C^2 + 2 N^2 C`` (as multi-head attention) ``+ N C (E + 2 + shared)``;
    memory ``O(h N^2)`` for the attention map on the math path (SDPA elsewhere).
    """

    def __init__(self, dim: int, num_heads: int | None = None, shared_heads: int | None = None,
                 routed_heads: int | None = None, qkv_bias: bool = False, qk_norm: bool = False,
                 proj_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 norm_layer: type[nn.Module] | None = None, **_timm_kwargs):
        super().__init__()
        self.dim = dim
        self.num_heads = _resolve_heads(type(self).__name__, dim, num_heads)
        self.head_dim = dim // self.num_heads
        if shared_heads is None:
            shared_heads = max(self.num_heads // 4, 1) if self.num_heads > 1 else 0
        if routed_heads is None:
            routed_heads = max((self.num_heads - shared_heads) // 2, 1) if self.num_heads > shared_heads else 0
        check_moh_heads(self.num_heads, shared_heads, routed_heads, type(self).__name__)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        norm_layer = norm_layer or nn.LayerNorm
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)
        build_moh_gates(self, dim, self.num_heads, shared_heads, routed_heads)
        self.moh_balance: torch.Tensor | None = None

    @property
    def head_fraction(self) -> float:
        return (self.shared_head + self.routed_head) / self.num_heads

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, shared_heads={self.shared_head}, "
                f"routed_heads={self.routed_head}")

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        name = type(self).__name__
        if x.dim() != 3:
            raise ValueError(f"{name} expects a (B, N, C) sequence, got shape {tuple(x.shape)}")
        if x.shape[-1] != self.dim:
            raise ValueError(f"{name} was built for {self.dim} channels but the input has {x.shape[-1]}: build it "
                             f"with dim={x.shape[-1]}")
        b, n, c = x.shape
        gates, self.moh_balance = moh_head_gates(self, x)
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal and attn_mask is None,
                                             dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2) * gates.unsqueeze(-1).to(out.dtype)  # (B, N, h, d) weighted heads
        return self.proj_drop(self.proj(out.reshape(b, n, c)))
