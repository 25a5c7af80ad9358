"""TransNeXt skeleton: the official ``TransNeXt`` (DaiShiResearch/TransNeXt ``classification/transnext.py``) with the
attention built per block by the family.

Shared by plain TransNeXt (``backbones/transnext.py``) and MoH-ViT (``backbones/moh_transnext.py``, SkyworkAI/MoH
``MoH-ViT/transnext.py``): same state-dict layout (``patch_embed{i}``, ``block{i}.{j}.{norm1, attn.*, norm2, mlp.*}``,
``norm{i}``, ``head``); MoH only adds its gate layers inside the attention. Stages 1-3 use aggregated attention (a
3x3 sliding window of keys around each query plus a pooled global set, one softmax), stage 4 (``sr_ratio == 1``)
full attention; both are length-scaled cosine attention with a query embedding, a learnable temperature and a
continuous relative position bias (an MLP over log-spaced relative coordinates).

The official classification model fixes the input size at construction (``img_size``: the padding mask, the length
scale, the pooled grid and the relative positions are buffers for that size). Here they are computed for the actual
grid of each call (cached per size), as the official detection/segmentation backbones do; at ``img_size`` they are
the official buffers, so outputs are the official ones, and any input size works. ``pretrain_size`` (default
``img_size``) scales the relative coordinates as in the official code.

These modules import no family file: the arrows point from ``backbones/<family>.py`` to here, never back.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, to_2tuple, trunc_normal_
from timm.models import register_notrace_function, register_notrace_module
from timm.models._features import feature_take_indices

from attnzoo.kernels.aggregated_attention import aggregated_attention

from .heads import ClassifierHead

# The kernel op validates and dispatches on sizes and devices: an opaque call in FX graphs (timm's notrace registry).
register_notrace_function(aggregated_attention)

__all__ = [
    "AggregatedAttention",
    "ConvolutionalGLU",
    "FullAttention",
    "OverlapPatchEmbed",
    "TransNeXt",
    "TransNeXtBlock",
    "aggregated_attention_native",
    "local_window_mask",
    "relative_position_cpb",
]


# ---------------------------------------------------------------------------------------------------------------------
# Size-dependent tables (rebuilt per grid size, cached; opaque calls in FX graphs)
# ---------------------------------------------------------------------------------------------------------------------


def _cached_table(fn):
    """lru_cache for the size tables, built outside inference mode: a table first built under torch.inference_mode
    would otherwise be an inference tensor, refused later by autograd in training."""
    cached = functools.lru_cache(maxsize=64)(fn)

    @functools.wraps(fn)
    def build(*args):
        with torch.inference_mode(False):
            return cached(*args)

    return build


@_cached_table
def _relative_axes(query_hw, key_hw, pretrain_hw):
    """Per axis (rows, then columns): the distinct offsets between a query coordinate and an (adaptive-average-
    pooled) key coordinate, scaled by the pre-training side as the official code scales them, and each (query, key)
    coordinate pair's rank among them: ``(values (U,), ranks (Q, K))``."""
    axes = []
    for q_len, k_len, p_len in zip(query_hw, key_hw, pretrain_hw):
        query = torch.arange(q_len, dtype=torch.float32)
        key = F.adaptive_avg_pool1d(query.unsqueeze(0), k_len).squeeze(0)
        axes.append(torch.unique((query[:, None] - key[None, :]) / (p_len - 1) * 8, return_inverse=True))
    return axes


@_cached_table
def _relative_position_cpb(query_hw, key_hw, pretrain_hw):
    """The official code takes ``torch.unique`` over every (query, key) pair's (row, column) offset. A pair's row
    offset depends on the two rows only and its column offset on the two columns only, so the distinct pairs are
    every distinct row offset with every distinct column offset, in the same (lexicographic) order: built here from
    the two axes (:func:`_relative_axes`) without sorting the Nq x Nk pairs (25M at TransNeXt-T stage 1, 800x800),
    equal to the official table and index (tests/backbones/test_transnext_position_bias.py)."""
    (values_h, ranks_h), (values_w, ranks_w) = _relative_axes(query_hw, key_hw, pretrain_hw)
    table = torch.stack(torch.meshgrid(values_h, values_w, indexing="ij"), dim=-1).view(-1, 2)
    index = (ranks_h.view(query_hw[0], 1, key_hw[0], 1) * len(values_w)
             + ranks_w.view(1, query_hw[1], 1, key_hw[1])).view(-1)
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / torch.log2(torch.tensor(8.0))
    return index, table


@register_notrace_function
def relative_position_cpb(query_hw, key_hw, pretrain_hw, device=None):
    """(index (Nq*Nk,), table (T, 2)): the unique log-spaced relative coordinates between a query grid and the
    (adaptive-average-pooled) key grid, scaled by the pre-training grid, and each (query, key) pair's row in the table
    (the official ``get_relative_position_cpb``)."""
    if min(pretrain_hw) < 2:
        raise ValueError(f"TransNeXt's relative coordinates divide by the pre-training grid side - 1, and a stage's "
                         f"pre-training grid is {tuple(pretrain_hw)}: use pretrain_size >= 64 (32 x 2)")
    index, table = _relative_position_cpb(tuple(map(int, query_hw)), tuple(map(int, key_hw)),
                                          tuple(map(int, pretrain_hw)))
    return index.to(device), table.to(device)


def _separable_layout(query_hw, key_hw, pretrain_hw):
    """(rows (Hq, Hk), cols (Wq, Wk), U_h, U_w): a (query, key) pair's row of the :func:`relative_position_cpb`
    table is ``rows[qy, ky] * U_w + cols[qx, kx]`` (see :func:`_relative_position_cpb`)."""
    (values_h, rows), (values_w, cols) = _relative_axes(query_hw, key_hw, pretrain_hw)
    return rows, cols, len(values_h), len(values_w)


CPB_ROWS_PER_STEP = 2048
"""Coordinate-table rows the CPU bias MLP computes at a time: 2048 x 512 hidden floats (4 MiB) stay in cache."""


class _GridPositionBias(torch.autograd.Function):
    """The continuous position bias on the CPU: the bias MLP over the coordinate table, gathered for every (query,
    key) pair, with its own backward. The numbers of ``cpb_fc2(relu(cpb_fc1(table)))[:, index]`` and its autograd, to
    rounding (the MLP and its weight gradients are summed a chunk at a time), but the MLP runs :data:`CPB_ROWS_PER_STEP` rows at a time and is
    recomputed in the backward, so its (T, 512) hidden layer is never kept (about 1 GiB over TransNeXt-T's blocks at
    800 x 800); the gather goes row offsets first, then column offsets (:func:`_separable_layout`), and its gradient
    is one ``index_add_`` per head. Measured at TransNeXt-T stage 1, 800 x 800 (3 heads, 40000 x 625 pairs, one
    thread, the two paths alternated in one process on the 2-core CPU): forward + backward 2.5 s -> 0.9 s."""

    @staticmethod
    def forward(ctx, table, index, rows, cols, u_h, u_w, fc1_w, fc1_b, fc2_w, fc2_b):
        heads, n_rows = fc2_w.shape[0], table.shape[0]
        table = table.to(fc1_w.dtype)
        values = torch.empty(n_rows, heads, dtype=fc2_w.dtype, device=table.device)
        for start in range(0, n_rows, CPB_ROWS_PER_STEP):
            hidden = torch.addmm(fc1_b, table[start : start + CPB_ROWS_PER_STEP], fc1_w.t()).clamp_min_(0)
            torch.addmm(fc2_b, hidden, fc2_w.t(), out=values[start : start + CPB_ROWS_PER_STEP])
        (hq, hk), (wq, wk) = rows.shape, cols.shape
        by_row = values.t().reshape(heads, u_h, u_w).index_select(1, rows.reshape(-1))  # (h, Hq * Hk, U_w)
        by_row = by_row.view(heads, hq, 1, hk, u_w).expand(heads, hq, wq, hk, u_w)
        bias = by_row.gather(4, cols.view(1, 1, wq, 1, wk).expand(heads, hq, wq, hk, wk))
        ctx.save_for_backward(table, index, fc1_w, fc1_b, fc2_w)
        return bias.view(heads, hq * wq, hk * wk)

    @staticmethod
    def backward(ctx, grad):
        table, index, fc1_w, fc1_b, fc2_w = ctx.saved_tensors
        heads, n_rows = fc2_w.shape[0], table.shape[0]
        per_head = grad.reshape(heads, -1)
        d_values = grad.new_zeros(heads, n_rows)
        flat = index.view(-1)
        for head in range(heads):
            d_values[head].index_add_(0, flat, per_head[head])
        d_values = d_values.t().to(fc2_w.dtype).contiguous()  # (T, h)
        d_fc1_w, d_fc1_b, d_fc2_w = torch.zeros_like(fc1_w), torch.zeros_like(fc1_b), torch.zeros_like(fc2_w)
        for start in range(0, n_rows, CPB_ROWS_PER_STEP):
            rows_in, d_rows = table[start : start + CPB_ROWS_PER_STEP], d_values[start : start + CPB_ROWS_PER_STEP]
            hidden = torch.addmm(fc1_b, rows_in, fc1_w.t())
            active = hidden > 0
            hidden.clamp_min_(0)
            d_fc2_w.addmm_(d_rows.t(), hidden)
            d_hidden = torch.mm(d_rows, fc2_w).mul_(active)
            d_fc1_w.addmm_(d_hidden.t(), rows_in)
            d_fc1_b += d_hidden.sum(0)
        return None, None, None, None, None, None, d_fc1_w, d_fc1_b, d_fc2_w, d_values.sum(0)


def _grid_bias_applies(device: torch.device) -> bool:
    """The CPU eager path only: graphs that torch.jit.trace / torch.compile / torch.export capture and autocast
    regions keep the plain modules (their own memory planning and dtype rules)."""
    return device.type == "cpu" and not (torch.jit.is_tracing() or torch.compiler.is_compiling()
                                         or torch.is_autocast_enabled("cpu"))


@_cached_table
def _local_window_mask(hw, window_size):
    pad = window_size // 2
    ones = F.pad(torch.ones(1, 1, hw[0], hw[1]), (pad, pad, pad, pad))
    valid = ones.unfold(2, window_size, 1).unfold(3, window_size, 1).reshape(hw[0] * hw[1], window_size ** 2)
    return valid.sum(-1, keepdim=True), valid == 0


@register_notrace_function
def local_window_mask(hw, window_size, device=None):
    """(count (N, 1) float32, padded (N, window^2) bool): how many window positions around each query fall inside the
    map, and which fall outside (the official ``get_seqlen_and_mask``; window positions in row-major order)."""
    count, padded = _local_window_mask((int(hw[0]), int(hw[1])), int(window_size))
    return count.to(device), padded.to(device)


# ---------------------------------------------------------------------------------------------------------------------
# Aggregated attention, the plain-torch math of the official attention_native.py (with attention dropout; the
# model runs attnzoo.kernels.aggregated_attention, the same math without dropout, whenever dropout is off)
# ---------------------------------------------------------------------------------------------------------------------


def _unfold_heads(x, hw, window_size):
    """(B, h, N, d) -> (B, h, N, d, window^2): each query's zero-padded window of neighbours."""
    b, h, n, d = x.shape
    grid = x.permute(0, 1, 3, 2).reshape(b, h * d, hw[0], hw[1])
    windows = F.unfold(grid, window_size, padding=window_size // 2, stride=1)
    return windows.reshape(b, h, d, window_size ** 2, n).permute(0, 1, 4, 2, 3)


@register_notrace_function
def aggregated_attention_native(q_norm, q_scaled, k_local, v_local, k_pool, v_pool, local_bias, pool_bias,
                                local_tokens, local_token_bias, hw, window_size, attn_drop=0.0, training=False):
    """TransNeXt's aggregated attention core, as the official plain-torch ``attention_native.py`` computes it.

    q_norm, q_scaled: (B, h, N, d) l2-normalised queries and the scaled ones (query embedding, temperature, length
    scale applied); k_local (l2-normalised), v_local: (B, h, N, d) keys/values of every position of the ``hw`` grid;
    k_pool (l2-normalised), v_pool: (B, h, P, d) pooled keys/values; local_bias: (h, window^2) relative bias of the
    window positions; pool_bias: (h, N, P); local_tokens (h, d, window^2) and local_token_bias (h, 1, window^2): the
    query-dependent weights added to the window's attention weights. Returns (B, h, N, d).

    Window positions outside the map are masked from the softmax and their (zero) values add nothing.
    """
    window_len = window_size ** 2
    _, padded = local_window_mask(hw, window_size, device=q_norm.device)
    k_win = _unfold_heads(k_local, hw, window_size)
    v_win = _unfold_heads(v_local, hw, window_size)
    attn_local = (q_scaled.unsqueeze(-2) @ k_win).squeeze(-2) + local_bias.unsqueeze(1)
    attn_local = attn_local.masked_fill(padded, float("-inf"))
    attn_pool = q_scaled @ k_pool.transpose(-2, -1) + pool_bias
    attn = torch.cat([attn_local, attn_pool], dim=-1).softmax(dim=-1)
    attn = F.dropout(attn, attn_drop, training) if attn_drop > 0 else attn
    attn_local, attn_pool = attn.split([window_len, attn.shape[-1] - window_len], dim=-1)
    weights_local = q_norm @ local_tokens + local_token_bias + attn_local
    x_local = (weights_local.unsqueeze(-2) @ v_win.transpose(-2, -1)).squeeze(-2)
    return x_local + attn_pool @ v_pool


# ---------------------------------------------------------------------------------------------------------------------
# Attentions
# ---------------------------------------------------------------------------------------------------------------------


def _trunc_normal(t, std):
    """timm's truncated normal, skipped on the meta device (shape-only builds; the init costs seconds there)."""
    return t if t.is_meta else trunc_normal_(t, std=std)


class _CosineAttentionBase(nn.Module):
    """What both attentions share: heads, temperature, query embedding, the bias MLP, the output projection, and the
    one hook where families differ: :meth:`combine_heads` (MoH weights the heads; plain TransNeXt concatenates)."""

    def __init__(self, dim, num_heads, qkv_bias, attn_drop, proj_drop):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        # softplus(temperature) starts at 1 / 0.24 (official initialisation).
        self.temperature = nn.Parameter(torch.log((torch.ones(num_heads, 1, 1) / 0.24).exp() - 1))
        self.query_embedding = nn.Parameter(_trunc_normal(torch.empty(num_heads, 1, self.head_dim), 0.02))
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.cpb_fc1 = nn.Linear(2, 512, bias=True)
        self.cpb_act = nn.ReLU(inplace=True)
        self.cpb_fc2 = nn.Linear(512, num_heads, bias=True)

    def position_bias(self, index, table, n_query, n_key):
        """(h, Nq, Nk) continuous relative position bias from the MLP over the coordinate table."""
        bias = self.cpb_fc2(self.cpb_act(self.cpb_fc1(table.to(self.cpb_fc1.weight.dtype)))).transpose(0, 1)
        return bias[:, index.view(-1)].view(-1, n_query, n_key)

    def grid_bias(self, query_hw, key_hw, device=None):
        """(h, Hq * Wq, Hk * Wk) position bias between a query grid and a key grid (:meth:`position_bias` over the
        cached :func:`relative_position_cpb` tables; on the CPU in eager mode through :class:`_GridPositionBias`)."""
        query_hw, key_hw = tuple(map(int, query_hw)), tuple(map(int, key_hw))
        index, table = relative_position_cpb(query_hw, key_hw, self.pretrain_hw, device=device)
        if not _grid_bias_applies(index.device):
            return self.position_bias(index, table, query_hw[0] * query_hw[1], key_hw[0] * key_hw[1])
        layout = _separable_layout(query_hw, key_hw, tuple(map(int, self.pretrain_hw)))
        return _GridPositionBias.apply(table, index, *layout, self.cpb_fc1.weight, self.cpb_fc1.bias,
                                       self.cpb_fc2.weight, self.cpb_fc2.bias)

    def scaled_queries(self, q_norm, length_scale):
        return (q_norm + self.query_embedding) * F.softplus(self.temperature) * length_scale

    def combine_heads(self, x, heads):
        """(B, N, C) block input and (B, h, N, d) head outputs -> (B, N, C) before the projection."""
        b, h, n, d = heads.shape
        return heads.transpose(1, 2).reshape(b, n, h * d)

    def output(self, x, heads):
        return self.proj_drop(self.proj(self.combine_heads(x, heads)))


class FullAttention(_CosineAttentionBase):
    """Stage-4 attention (official ``Attention``): every token attends to every token; ``qkv`` fused."""

    def __init__(self, dim, num_heads=8, qkv_bias=True, attn_drop=0.0, proj_drop=0.0, pretrain_hw=(7, 7)):
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.pretrain_hw = tuple(pretrain_hw)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)

    def forward(self, x, H, W):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3 * self.num_heads, self.head_dim).permute(0, 2, 1, 3).chunk(3, dim=1)
        bias = self.grid_bias((H, W), (H, W), device=x.device)
        q_scaled = self.scaled_queries(F.normalize(q, dim=-1), math.log(n))
        attn = (q_scaled @ F.normalize(k, dim=-1).transpose(-2, -1) + bias).softmax(dim=-1)
        attn = F.dropout(attn, self.attn_drop, self.training) if self.attn_drop > 0 else attn
        return self.output(x, attn @ v)


class AggregatedAttention(_CosineAttentionBase):
    """Stages 1-3 attention (official ``AggregatedAttention``): each query attends to its ``window_size`` x
    ``window_size`` neighbours and to the map average-pooled to ``1 / sr_ratio`` of its side (or to
    ``fixed_pool_size``), through one softmax; the window's weights get a query-dependent term
    (``learnable_tokens``, ``learnable_bias``)."""

    def __init__(self, dim, num_heads=8, window_size=3, qkv_bias=True, attn_drop=0.0, proj_drop=0.0, sr_ratio=2,
                 fixed_pool_size=None, pretrain_hw=(14, 14)):
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        if window_size % 2 != 1:
            raise ValueError(f"TransNeXt's window_size must be odd (the window is centred on its query), got "
                             f"{window_size}")
        self.window_size = window_size
        self.local_len = window_size ** 2
        self.sr_ratio = sr_ratio
        self.fixed_pool_size = fixed_pool_size
        self.pretrain_hw = tuple(pretrain_hw)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.sr = nn.Conv2d(dim, dim, kernel_size=1, stride=1, padding=0)
        self.norm = nn.LayerNorm(dim)
        self.act = nn.GELU()
        self.relative_pos_bias_local = nn.Parameter(_trunc_normal(torch.empty(num_heads, self.local_len), 0.0004))
        self.learnable_tokens = nn.Parameter(
            _trunc_normal(torch.empty(num_heads, self.head_dim, self.local_len), 0.02))
        self.learnable_bias = nn.Parameter(torch.zeros(num_heads, 1, self.local_len))

    def pool_hw(self, H, W):
        if self.fixed_pool_size is not None:
            return (self.fixed_pool_size, self.fixed_pool_size)
        return (max(H // self.sr_ratio, 1), max(W // self.sr_ratio, 1))

    def attention_inputs(self, x, H, W):
        """(q_norm, q_scaled, k, v, k_pool, v_pool, pool_bias): the per-head tensors the attention core takes (keys
        l2-normalised, queries scaled), shared with the MoH attention that routes heads through the same core."""
        b, n, c = x.shape
        h, d = self.num_heads, self.head_dim
        pool_hw = self.pool_hw(H, W)
        pool_len = pool_hw[0] * pool_hw[1]
        count, _ = local_window_mask((H, W), self.window_size, device=x.device)
        length_scale = torch.log(count + pool_len).to(x.dtype)  # (N, 1): log of the keys each query sees

        q_norm = F.normalize(self.q(x).reshape(b, n, h, d).permute(0, 2, 1, 3), dim=-1)
        k, v = self.kv(x).reshape(b, n, 2 * h, d).permute(0, 2, 1, 3).chunk(2, dim=1)

        pooled = self.act(self.sr(x.transpose(1, 2).reshape(b, c, H, W)))
        pooled = self.norm(F.adaptive_avg_pool2d(pooled, pool_hw).reshape(b, c, pool_len).transpose(1, 2))
        k_pool, v_pool = self.kv(pooled).reshape(b, pool_len, 2 * h, d).permute(0, 2, 1, 3).chunk(2, dim=1)

        q_scaled = self.scaled_queries(q_norm, length_scale)
        k, k_pool = F.normalize(k, dim=-1), F.normalize(k_pool, dim=-1)
        pool_bias = self.grid_bias((H, W), pool_hw, device=x.device)
        return q_norm, q_scaled, k, v, k_pool, v_pool, pool_bias

    def forward(self, x, H, W):
        q_norm, q_scaled, k, v, k_pool, v_pool, pool_bias = self.attention_inputs(x, H, W)
        if self.attn_drop > 0 and self.training:  # the kernel op has no attention dropout (no released recipe uses it)
            heads = aggregated_attention_native(
                q_norm, q_scaled, k, v, k_pool, v_pool, self.relative_pos_bias_local, pool_bias, self.learnable_tokens,
                self.learnable_bias, (H, W), self.window_size, self.attn_drop, self.training)
        else:
            local_weights = q_norm @ self.learnable_tokens + self.learnable_bias
            heads = aggregated_attention(q_scaled, k, v, k_pool, v_pool, self.relative_pos_bias_local, pool_bias,
                                         local_weights, H, W, self.window_size)
        return self.output(x, heads)


# ---------------------------------------------------------------------------------------------------------------------
# Blocks, embedding, model
# ---------------------------------------------------------------------------------------------------------------------


# The attentions branch on the grid size (pooled grid, tables, the length scale): leaf modules in torch.fx graphs
# (timm's notrace registry; a family's subclasses are leaves too).
register_notrace_module(FullAttention)
register_notrace_module(AggregatedAttention)


class ConvolutionalGLU(nn.Module):
    """The official gated MLP: ``fc1`` to 2 x (2/3 hidden), depth-wise 3x3 conv + act on one half, times the other."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = int(2 * (hidden_features or in_features) / 3)
        self.fc1 = nn.Linear(in_features, hidden_features * 2)
        self.dwconv = nn.Module()  # official key path mlp.dwconv.dwconv.*
        self.dwconv.dwconv = nn.Conv2d(hidden_features, hidden_features, 3, 1, 1, bias=True, groups=hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x, H, W):
        x, v = self.fc1(x).chunk(2, dim=-1)
        b, n, c = x.shape
        x = self.dwconv.dwconv(x.transpose(1, 2).reshape(b, c, H, W)).flatten(2).transpose(1, 2)
        x = self.drop(self.act(x) * v)
        return self.drop(self.fc2(x))


class TransNeXtBlock(nn.Module):
    """Pre-norm block; ``attn_layer(dim)`` builds the attention, called as ``attn(x, H, W)``."""

    def __init__(self, dim, attn_layer: Callable[[int], nn.Module], mlp_ratio=4.0, drop=0.0, drop_path=0.0,
                 act_layer=nn.GELU, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn_layer(dim)
        self.norm2 = norm_layer(dim)
        self.mlp = ConvolutionalGLU(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x, H, W):
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x), H, W))


class OverlapPatchEmbed(nn.Module):
    """Overlapping strided conv (kernel 2 * stride - 1 for the stem, 3 after) + LayerNorm (eps 1e-5, as official)."""

    def __init__(self, patch_size=7, stride=4, in_chans=3, embed_dim=768):
        super().__init__()
        patch_size = to_2tuple(patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride,
                              padding=(patch_size[0] // 2, patch_size[1] // 2))
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw


def _init_weights(m: nn.Module) -> None:
    """The official ``_init_weights``: truncated-normal Linear, fan-out normal Conv2d, unit LayerNorm."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            m.bias.data.zero_()
    elif isinstance(m, nn.LayerNorm):
        nn.init.zeros_(m.bias)
        nn.init.ones_(m.weight)


class TransNeXt(ClassifierHead, nn.Module):
    """TransNeXt with the official flat stage names (``patch_embed{i}``, ``block{i}``, ``norm{i}``).

    ``attn_fn(stage=, index=, dim=, num_heads=, sr_ratio=, window_size=, fixed_pool_size=, qkv_bias=, attn_drop=,
    proj_drop=, pretrain_hw=)`` builds the attention of block ``index`` of stage ``stage`` (the skeleton's
    :class:`AggregatedAttention` / :class:`FullAttention` or a family's subclass); ``pretrain_hw`` is the stage's grid
    at ``pretrain_size``. Stages with ``sr_ratio == 1`` take full attention, the others aggregated attention.
    """

    default_attn_fn = None

    def __init__(self, attn_fn: Callable[..., nn.Module] | None = None, img_size=224, pretrain_size=None,
                 window_size=(3, 3, 3, None), patch_size=4, in_chans=3, num_classes=1000,
                 embed_dims=(64, 128, 256, 512), num_heads=(1, 2, 4, 8), mlp_ratios=(4, 4, 4, 4), qkv_bias=False,
                 drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, norm_layer=None, depths=(3, 4, 6, 3),
                 sr_ratios=(8, 4, 2, 1), num_stages=4, fixed_pool_size=None, global_pool="avg"):
        super().__init__()
        attn_fn = attn_fn or type(self).default_attn_fn or standard_attention
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)
        pretrain_size = to_2tuple(pretrain_size or img_size)
        self.num_classes = num_classes
        self.num_stages = num_stages
        self.depths = depths
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = embed_dims[num_stages - 1]
        self.feature_info = []

        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        cur = 0
        for i in range(num_stages):
            pretrain_hw = (pretrain_size[0] // 2 ** (i + 2), pretrain_size[1] // 2 ** (i + 2))
            attn_kwargs = dict(stage=i, num_heads=num_heads[i], sr_ratio=sr_ratios[i], window_size=window_size[i],
                               fixed_pool_size=fixed_pool_size, qkv_bias=qkv_bias, attn_drop=attn_drop_rate,
                               proj_drop=drop_rate, pretrain_hw=pretrain_hw)
            blocks = nn.ModuleList([
                TransNeXtBlock(embed_dims[i], partial(_attn_for_dim, attn_fn, dict(attn_kwargs, index=j)),
                               mlp_ratio=mlp_ratios[i],
                               drop=drop_rate, drop_path=dpr[cur + j], norm_layer=norm_layer)
                for j in range(depths[i])
            ])
            cur += depths[i]
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(
                patch_size=patch_size * 2 - 1 if i == 0 else 3, stride=patch_size if i == 0 else 2,
                in_chans=in_chans if i == 0 else embed_dims[i - 1], embed_dim=embed_dims[i]))
            setattr(self, f"block{i + 1}", blocks)
            setattr(self, f"norm{i + 1}", norm_layer(embed_dims[i]))
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=patch_size * 2 ** i, module=f"norm{i + 1}"))

        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if not next(self.parameters()).is_meta:  # nothing to initialise on the meta device
            self.apply(_init_weights)

    @torch.jit.ignore
    def no_weight_decay(self):
        """The parameters the official optimizer keeps out of weight decay (its ``no_weight_decay_keywords``)."""
        keywords = ("query_embedding", "relative_pos_bias_local", "cpb", "temperature")
        return {name for name, _ in self.named_parameters() if any(k in name for k in keywords)}

    def _stage(self, index, x):
        """Stage ``index`` on an NCHW map (or the image) -> its normalised NCHW map."""
        x, (H, W) = getattr(self, f"patch_embed{index + 1}")(x)
        for blk in getattr(self, f"block{index + 1}"):
            x = blk(x, H, W)
        x = getattr(self, f"norm{index + 1}")(x)
        return x.reshape(x.shape[0], H, W, x.shape[-1]).permute(0, 3, 1, 2).contiguous()  # sizes, not -1: batch 0

    def forward_features(self, x):
        """The last stage's normalised map, NCHW (B, C, H/32, W/32)."""
        for i in range(self.num_stages):
            x = self._stage(i, x)
        return x

    def forward_head(self, x, pre_logits: bool = False):
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))  # the official mean of the last stage's tokens
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """Per-stage normalised NCHW maps (the official downstream outputs) and, unless intermediates_only, the final
        map (as :meth:`forward_features`)."""
        if output_fmt != "NCHW":
            raise ValueError(f"{type(self).__name__} intermediates are NCHW only")
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        intermediates = []
        last = max_index if stop_early or intermediates_only else self.num_stages - 1
        for i in range(last + 1):
            x = self._stage(i, x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        for i in range(max_index + 1, self.num_stages):
            setattr(self, f"patch_embed{i + 1}", nn.Identity())
            setattr(self, f"block{i + 1}", nn.ModuleList())
            setattr(self, f"norm{i + 1}", nn.Identity())
        self.num_stages = max_index + 1
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices


def _attn_for_dim(attn_fn, kwargs, dim):
    return attn_fn(dim=dim, **kwargs)


def standard_attention(stage, index, dim, num_heads, sr_ratio, window_size, fixed_pool_size, qkv_bias, attn_drop,
                       proj_drop, pretrain_hw, attention_classes=(AggregatedAttention, FullAttention)):
    """The official choice: aggregated attention where ``sr_ratio > 1``, full attention in the others.
    ``attention_classes`` = (aggregated, full): a family's subclasses."""
    aggregated, full = attention_classes
    if sr_ratio == 1:
        return full(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop,
                    pretrain_hw=pretrain_hw)
    if window_size is None:
        raise ValueError(f"TransNeXt stage {stage + 1} has sr_ratio {sr_ratio} (aggregated attention) but no "
                         f"window_size: give an odd window_size for every stage with sr_ratio > 1")
    return aggregated(dim, num_heads, window_size=window_size, qkv_bias=qkv_bias, attn_drop=attn_drop,
                      proj_drop=proj_drop, sr_ratio=sr_ratio, fixed_pool_size=fixed_pool_size,
                      pretrain_hw=pretrain_hw)
