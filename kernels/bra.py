"""Bi-level routing attention (BRA), the attention of BiFormer (Zhu et al., CVPR 2023).

Tensors in, tensors out. The caller has already projected and region-partitioned the feature map:

* ``q``: (B, Rq, Tq, Cqk) queries, ``Rq`` regions of ``Tq`` tokens each;
* ``k``: (B, Rk, Tk, Cqk) keys and ``v``: (B, Rk, Tk, Cv) values (the released models have Rk == Rq, Tk == Tq);
* ``r_idx``: (B, Rq, topk) int64, the key regions each query region attends to, shared by all heads.

Heads split the channels head-major, as the official code does (``rearrange(..., '(m c)')`` in
rayleizhu/BiFormer ops/bra_legacy.py and ``view(B, num_heads, C // num_heads, ...)`` in ops/torch/rrsda.py):
channel ``h * head_dim + c`` belongs to head ``h``; the output keeps that order.

Four implementations of the same function live here:

* :func:`bra_attention_reference` -- **the spec**: a loop over the topk routed slots that gathers one routed key/value
  region per query region at a time (advanced indexing of whole regions) and takes one exact softmax over all routed
  tokens. It never builds the topk-fold (B, R, topk, T, C) copy at once: without grad it holds one slot's copy at a
  time; with grad, autograd keeps each slot's copy for the backward (topk-fold in total, like the official forward),
  but its backward accumulates into 1-fold gradients.
* :func:`bra_attention_gather` -- equal to the official implementation (ops/bra_legacy.py ``KVGather`` + dense
  matmuls): it materialises the topk-fold copy of the routed keys/values and runs one dense attention. Its backward
  is where the official code spends its memory: ``torch.gather`` over the ``expand``-ed (B, Rq, Rk, T, C) view
  allocates a gradient of that full Rq-fold shape (49x the keys/values at n_win 7) before summing it back. Kept for
  the benchmark and as a second, independent check of the spec.
* :func:`bra_attention_chunked` -- the CPU path: the spec computed flash-attention style in blocks of query regions
  (fp32 log-sum-exp kept, probabilities recomputed in the backward), so the gathered keys/values, logits and
  probabilities of only one block exist at a time and memory grows linearly with the map;
* the Triton kernels below (forward + backward) that read the routed regions in place.

``r_idx`` must hold valid key-region indices in [0, Rk) (torch.topk's output does); the kernels do not bounds-check.

:func:`bra_attention` calls the op ``attnzoo::bra_forward`` on every device; its kernel picks the Triton or the chunked
path through :func:`attnzoo.kernels.backend.choose_backend` (docs/ARCHITECTURE.md, "Kernels").
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from .backend import KernelPath, choose_backend, function_path, kernel_op

__all__ = [
    "region_routing",
    "bra_attention",
    "bra_attention_reference",
    "bra_attention_gather",
    "bra_attention_chunked",
    "REFERENCE_CHUNK_LOGITS",
    "bra_attention_triton",
    "BraAttentionFunction",
]

REFERENCE_CHUNK_LOGITS = 1 << 22
"""Logits (query tokens x routed key tokens x heads) one block of the chunked CPU path, or of the region routing, may
hold: 16 MiB in fp32. BiFormer-T's 224x224 stages (batch 8) fit one block; a 1x32x600x500 map with 8x8 regions ~20."""


# ----------------------------------------------------------------------------------------------------------------------
# Reference (plain torch): the spec
# ----------------------------------------------------------------------------------------------------------------------


def region_routing(q_region: torch.Tensor, k_region: torch.Tensor, topk: int, scale: float) -> torch.Tensor:
    """Official legacy BRA routing: region-mean queries and keys, region affinity, top-k per query region.

    ``q_region``: (B, Rq, T, Cqk), ``k_region``: (B, Rk, T', Cqk). Returns ``r_idx`` (B, Rq, topk) int64.
    Mirrors ``TopkRouting`` of rayleizhu/BiFormer ops/bra_legacy.py with ``param_routing=False, diff_routing=False``:
    the inputs are detached (the routing is not differentiable), the logits are ``(mean_q * scale) @ mean_k^T`` in the
    inputs' dtype, and one routing serves every head. Padded tokens (zeros from ``auto_pad``) join the means, as there.
    """
    _check_rank("q_region", q_region, 4)
    _check_rank("k_region", k_region, 4)
    num_key_regions = k_region.shape[1]
    if not 1 <= topk <= num_key_regions:
        raise ValueError(f"topk={topk} must be in [1, {num_key_regions}] (the number of key regions)")
    query_mean = q_region.detach().mean(dim=2)  # (B, Rq, C)
    key_mean = k_region.detach().mean(dim=2)  # (B, Rk, C)
    # The (Rq x Rk) affinity is the one term quadratic in the region count: at most REFERENCE_CHUNK_LOGITS of it exist
    # at a time (rows are independent, so the top-k of each block of rows is the top-k of the whole).
    rows_per_block = max(1, REFERENCE_CHUNK_LOGITS // max(1, q_region.shape[0] * num_key_regions))
    indices = []
    for start in range(0, query_mean.shape[1], rows_per_block):
        logits = (query_mean[:, start : start + rows_per_block] * scale) @ key_mean.transpose(-2, -1)  # (B, r, Rk)
        indices.append(torch.topk(logits, k=topk, dim=-1).indices)
    return indices[0] if len(indices) == 1 else torch.cat(indices, dim=1)


def _check_rank(name: str, tensor: torch.Tensor, rank: int) -> None:
    if tensor.dim() != rank:
        raise ValueError(f"{name} must have {rank} dims, got shape {tuple(tensor.shape)}")


def _check_inputs(q, k, v, r_idx, num_heads: int) -> None:
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        _check_rank(name, tensor, 4)
    _check_rank("r_idx", r_idx, 3)
    batch, query_regions, _, qk_channels = q.shape
    if k.shape[0] != batch or v.shape[0] != batch or r_idx.shape[0] != batch:
        raise ValueError(f"batch sizes differ: q {q.shape[0]}, k {k.shape[0]}, v {v.shape[0]}, r_idx {r_idx.shape[0]}")
    if k.shape[-1] != qk_channels:
        raise ValueError(f"q and k need the same channels, got {qk_channels} and {k.shape[-1]}")
    if k.shape[1:3] != v.shape[1:3]:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must share (regions, tokens)")
    if r_idx.shape[1] != query_regions:
        raise ValueError(f"r_idx has {r_idx.shape[1]} query regions, q has {query_regions}")
    if r_idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"r_idx must be an integer index tensor, got {r_idx.dtype}")
    if num_heads < 1 or qk_channels % num_heads or v.shape[-1] % num_heads:
        raise ValueError(
            f"num_heads={num_heads} must divide the q/k channels ({qk_channels}) and the v channels ({v.shape[-1]})"
        )
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, R, T, h*d) -> (B, h, R, T, d), head-major channels as in the official code."""
    batch, regions, tokens, channels = x.shape
    return x.view(batch, regions, tokens, num_heads, channels // num_heads).permute(0, 3, 1, 2, 4)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, h, R, T, d) -> (B, R, T, h*d)."""
    batch, heads, regions, tokens, dim = x.shape
    return x.permute(0, 2, 3, 1, 4).reshape(batch, regions, tokens, heads * dim)


def _routed_regions(x: torch.Tensor, region_index: torch.Tensor) -> torch.Tensor:
    """x: (B, Rk, T, C), region_index: (B, Rq) -> the routed region of each query region, (B, Rq, T, C).

    Advanced indexing copies whole (T, C) regions (its backward accumulates into a 1-fold gradient); torch.gather over
    an expanded view, as the official code does, would allocate an Rq-fold gradient in the backward.
    """
    batch_index = torch.arange(x.shape[0], device=x.device).view(-1, 1)
    return x[batch_index, region_index]


def bra_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, r_idx: torch.Tensor, num_heads: int, scale: float
) -> torch.Tensor:
    """The spec: each query region attends to the tokens of its ``topk`` routed key regions (one joint softmax).

    A loop over routed slots: slot ``j`` gathers key/value region ``r_idx[:, :, j]`` for every query region (a 1-fold
    copy), the logits of all slots are concatenated and normalised by one softmax (statistics in fp32), and the output
    sums the slots' probability-weighted values. Padded tokens are not masked (the official code does not mask them).
    Returns (B, Rq, Tq, Cv) in q's dtype.
    """
    _check_inputs(q, k, v, r_idx, num_heads)
    topk = r_idx.shape[-1]
    key_tokens = k.shape[2]
    query = _split_heads(q, num_heads) * scale  # (B, h, Rq, Tq, dqk)
    logits = torch.cat(
        [
            query @ _split_heads(_routed_regions(k, r_idx[:, :, slot]), num_heads).transpose(-2, -1)
            for slot in range(topk)
        ],
        dim=-1,
    )  # (B, h, Rq, Tq, topk * Tk), slot-major like the official (k w2) flattening
    # softmax statistics at least in fp32 (float64 stays float64 for exact checks)
    probs = torch.softmax(logits, dim=-1, dtype=torch.promote_types(q.dtype, torch.float32)).to(q.dtype)
    out = None
    for slot in range(topk):
        slot_probs = probs[..., slot * key_tokens : (slot + 1) * key_tokens]
        contribution = slot_probs @ _split_heads(_routed_regions(v, r_idx[:, :, slot]), num_heads)
        out = contribution if out is None else out + contribution
    return _merge_heads(out)


def bra_attention_gather(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, r_idx: torch.Tensor, num_heads: int, scale: float
) -> torch.Tensor:
    """The official algorithm (ops/bra_legacy.py): gather a topk-fold (B, Rq, topk, Tk, C) copy, then dense attention.

    Same result as :func:`bra_attention_reference` up to rounding; exists so that benchmarks compare against what the
    official code does (memory and time of the topk-fold copy) and as an independent check of the spec.
    """
    _check_inputs(q, k, v, r_idx, num_heads)
    batch, query_regions, query_tokens, _ = q.shape
    _, key_regions, key_tokens, _ = k.shape
    topk = r_idx.shape[-1]
    kv = torch.cat([k, v], dim=-1)  # (B, Rk, Tk, Cqk + Cv), as the official qkv split keeps k and v together
    kv_channels = kv.shape[-1]
    gathered = torch.gather(
        kv.view(batch, 1, key_regions, key_tokens, kv_channels).expand(-1, query_regions, -1, -1, -1),
        dim=2,
        index=r_idx.view(batch, query_regions, topk, 1, 1).expand(-1, -1, -1, key_tokens, kv_channels),
    )  # (B, Rq, topk, Tk, Cqk + Cv): the topk-fold copy
    key_sel, value_sel = gathered.split([k.shape[-1], v.shape[-1]], dim=-1)
    # (B*Rq, h, topk*Tk, d): slot-major token order, heads head-major over channels
    key_sel = key_sel.reshape(batch * query_regions, topk * key_tokens, num_heads, -1).transpose(1, 2)
    value_sel = value_sel.reshape(batch * query_regions, topk * key_tokens, num_heads, -1).transpose(1, 2)
    query = q.reshape(batch * query_regions, query_tokens, num_heads, -1).transpose(1, 2)
    attn = (query * scale) @ key_sel.transpose(-2, -1)
    attn = torch.softmax(attn, dim=-1)
    out = attn @ value_sel  # (B*Rq, h, Tq, dv)
    return out.transpose(1, 2).reshape(batch, query_regions, query_tokens, -1)


# ----------------------------------------------------------------------------------------------------------------------
# Chunked reference: the CPU path (memory linear in the map, never the whole (queries x routed keys) logits at once)
# ----------------------------------------------------------------------------------------------------------------------
#
# The spec above keeps, under autograd, every slot's gathered copy and the logits and probabilities of the whole map
# for the backward: for a 600x500 map that is hundreds of MB per head. The chunked path is the same function written
# flash-attention style in plain torch: the forward walks blocks of query regions (all batch elements flattened) and
# keeps only each row's fp32 log-sum-exp; the backward walks the same blocks, recomputes the probabilities from it and
# scatters the key/value gradients of each block into 1-fold dK/dV with index_add_. At any moment only one block's
# gathered keys/values, logits and probabilities exist, so peak memory is O(map) + O(block), whatever the map size.


def _flat_routes(r_idx: torch.Tensor, key_regions: int) -> torch.Tensor:
    """(B, Rq, topk) per-batch key-region indices -> (B*Rq, topk) indices into the flattened (B*Rk) key regions."""
    batch = r_idx.shape[0]
    offsets = torch.arange(batch, device=r_idx.device, dtype=torch.int64).view(batch, 1, 1) * key_regions
    return (r_idx.long() + offsets).flatten(0, 1)


def _chunk_bounds(query_regions: int, logits_per_region: int, max_chunk_logits: int) -> list[tuple[int, int]]:
    per_chunk = max(1, max_chunk_logits // max(1, logits_per_region))
    return [(start, min(start + per_chunk, query_regions)) for start in range(0, query_regions, per_chunk)]


# Layout: the chunked path works on head-major copies (N, h, T, d) of q, k and v, made once per call. Then one block's
# queries are a contiguous slice, one gather builds its routed keys/values directly as (c, h, topk*T, d), and every
# product is a plain batched matmul over (c*h) without hidden .contiguous() copies (with the channel-interleaved
# (N, T, h*d) layout, splitting heads per block made copies that cost more than the matmuls, see issue 18's profile).


def _heads_first(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(N, T, h*d) -> (N, h, T, d), contiguous (a copy unless h == 1)."""
    count, tokens, channels = x.shape
    # reshape, not view: x may be a strided view (e.g. 1-token regions cut from an NCHW map)
    return x.reshape(count, tokens, num_heads, channels // num_heads).transpose(1, 2).contiguous()


def _heads_last(x: torch.Tensor) -> torch.Tensor:
    """(N, h, T, d) -> (N, T, h*d)."""
    count, heads, tokens, dim = x.shape
    return x.transpose(1, 2).reshape(count, tokens, heads * dim)


def _route_heads(routes: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(c, topk) region routes -> (c, h, topk) rows of the (N*h) head-major regions."""
    heads = torch.arange(num_heads, device=routes.device, dtype=routes.dtype).view(1, num_heads, 1)
    return routes.unsqueeze(1) * num_heads + heads


def _gather_routed(x: torch.Tensor, routes: torch.Tensor) -> torch.Tensor:
    """x (N, h, T, d), routes (c, topk) -> (c, h, topk*T, d): each query region's routed tokens, slot-major as the spec."""
    count, heads, tokens, dim = x.shape
    chunk, topk = routes.shape
    rows = _route_heads(routes, heads).flatten()  # (c*h*topk,)
    # index_select copies whole rows (memcpy); advanced indexing x[rows] computes an offset per element (slower on CPU)
    return x.view(count * heads, tokens * dim).index_select(0, rows).view(chunk, heads, topk * tokens, dim)


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)  # fp32 statistics; float64 stays float64 for exact checks


def _chunked_forward(q_heads, k_heads, v_heads, routes, max_chunk_logits: int):
    """Head-major inputs (q already scaled): out (N, h, Tq, dv) and the per-row log-sum-exp (N, h, Tq, 1)."""
    count, heads, query_tokens, _ = q_heads.shape
    routed_tokens = routes.shape[1] * k_heads.shape[2]
    stat_dtype = _stat_dtype(q_heads.dtype)
    out = q_heads.new_empty((count, heads, query_tokens, v_heads.shape[-1]))
    lse = q_heads.new_empty((count, heads, query_tokens, 1), dtype=stat_dtype)
    for start, stop in _chunk_bounds(count, heads * query_tokens * routed_tokens, max_chunk_logits):
        block_routes = routes[start:stop]
        logits = (q_heads[start:stop] @ _gather_routed(k_heads, block_routes).transpose(-2, -1)).to(stat_dtype)
        block_lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        probs = logits.sub_(block_lse).exp_().to(q_heads.dtype)  # in place: one logits-sized buffer per block
        out[start:stop] = probs @ _gather_routed(v_heads, block_routes)
        lse[start:stop] = block_lse
    return out, lse


class _ChunkedBraFunction(torch.autograd.Function):
    """The chunked path under autograd: saves head-major q (scaled), k, v, the routes, the output and its log-sum-exp;
    the backward recomputes each block's probabilities."""

    @staticmethod
    def forward(ctx, q_flat, k_flat, v_flat, routes, num_heads: int, scale: float, max_chunk_logits: int):
        # out of place: with one-token regions the head-major "copy" is a view of the caller's q
        q_heads = _heads_first(q_flat, num_heads) * scale
        k_heads, v_heads = _heads_first(k_flat, num_heads), _heads_first(v_flat, num_heads)
        out, lse = _chunked_forward(q_heads, k_heads, v_heads, routes, max_chunk_logits)
        ctx.save_for_backward(q_heads, k_heads, v_heads, routes, out, lse)
        ctx.scale, ctx.max_chunk_logits = scale, max_chunk_logits
        return _heads_last(out)

    @staticmethod
    def backward(ctx, grad_out):
        q_heads, k_heads, v_heads, routes, out, lse = ctx.saved_tensors
        count, heads, query_tokens, _ = q_heads.shape
        key_regions, _, key_tokens, _ = k_heads.shape
        topk = routes.shape[1]
        dtype, stat_dtype = q_heads.dtype, _stat_dtype(q_heads.dtype)
        grad_heads = _heads_first(grad_out, heads)  # (N, h, Tq, dv)
        # delta = rowsum(dO * O), the softmax backward's correction term, in the statistics dtype
        delta = (grad_heads.to(stat_dtype) * out.to(stat_dtype)).sum(dim=-1, keepdim=True)
        grad_q = torch.empty_like(q_heads)
        grad_k = torch.zeros_like(k_heads)
        grad_v = torch.zeros_like(v_heads)
        grad_k_rows = grad_k.view(key_regions * heads, key_tokens * k_heads.shape[-1])
        grad_v_rows = grad_v.view(key_regions * heads, key_tokens * v_heads.shape[-1])
        for start, stop in _chunk_bounds(count, heads * query_tokens * topk * key_tokens, ctx.max_chunk_logits):
            block_routes = routes[start:stop]
            chunk = stop - start
            query, grad_block = q_heads[start:stop], grad_heads[start:stop]
            keys = _gather_routed(k_heads, block_routes)  # (c, h, topk*Tk, dqk)
            values = _gather_routed(v_heads, block_routes)
            probs = (query @ keys.transpose(-2, -1)).to(stat_dtype).sub_(lse[start:stop]).exp_()
            grad_logits = (grad_block @ values.transpose(-2, -1)).to(stat_dtype)
            grad_logits = grad_logits.sub_(delta[start:stop]).mul_(probs).to(dtype)
            probs = probs.to(dtype)
            grad_q[start:stop] = grad_logits @ keys
            rows = _route_heads(block_routes, heads).flatten()  # (c*h*topk,): one row per routed region and head
            grad_keys = grad_logits.transpose(-2, -1) @ query  # (c, h, topk*Tk, dqk), slot-major
            grad_k_rows.index_add_(0, rows, grad_keys.view(chunk * heads * topk, -1))
            grad_values = probs.transpose(-2, -1) @ grad_block
            grad_v_rows.index_add_(0, rows, grad_values.view(chunk * heads * topk, -1))
        grad_q = _heads_last(grad_q.mul_(ctx.scale))
        return grad_q, _heads_last(grad_k), _heads_last(grad_v), None, None, None, None


def bra_attention_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    r_idx: torch.Tensor,
    num_heads: int,
    scale: float,
    max_chunk_logits: int = REFERENCE_CHUNK_LOGITS,
) -> torch.Tensor:
    """The spec's function, computed in blocks of query regions (the CPU path of :func:`bra_attention`).

    Same inputs and result as :func:`bra_attention_reference` (up to summation order). Memory: q, k, v, the output
    and an fp32 log-sum-exp per query row are kept for the backward; the topk-fold gathered keys/values, the logits
    and the probabilities exist for one block of at most ``max_chunk_logits`` logits at a time (forward and backward),
    so the peak grows linearly with the map at a fixed region size and topk. The backward recomputes each block's
    logits (one extra q @ k^T per block, as flash attention does). Without grad no autograd.Function is involved
    (plain ops: what torch.export / ONNX trace).
    """
    _check_inputs(q, k, v, r_idx, num_heads)
    if max_chunk_logits < 1:
        raise ValueError(f"max_chunk_logits must be >= 1, got {max_chunk_logits}")
    batch, query_regions, query_tokens, _ = q.shape
    _, key_regions, key_tokens, _ = k.shape
    q_flat = q.reshape(batch * query_regions, query_tokens, q.shape[-1])
    k_flat = k.reshape(batch * key_regions, key_tokens, k.shape[-1])
    v_flat = v.reshape(batch * key_regions, key_tokens, v.shape[-1])
    routes = _flat_routes(r_idx, key_regions)
    scale = float(scale)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        out = _ChunkedBraFunction.apply(q_flat, k_flat, v_flat, routes, num_heads, scale, max_chunk_logits)
    else:
        q_heads = _heads_first(q_flat, num_heads) * scale
        out, _ = _chunked_forward(
            q_heads, _heads_first(k_flat, num_heads), _heads_first(v_flat, num_heads), routes, max_chunk_logits
        )
        out = _heads_last(out)
    return out.view(batch, query_regions, query_tokens, v.shape[-1])

# ----------------------------------------------------------------------------------------------------------------------
# Triton kernels: block-sparse attention driven by the routing index
# ----------------------------------------------------------------------------------------------------------------------
#
# Every program sees the routed keys of one query region as one virtual sequence of ``topk * Tk`` tokens: key row ``n``
# is token ``n % Tk`` of region ``r_idx[b, r, n // Tk]``, loaded by per-row pointers straight from the un-gathered k/v.
# A key tile may therefore span several small routed regions (BiFormer-T stage 3 has 4-token regions and topk 16: one
# 64-row tile instead of sixteen quarter-filled ones), and nothing topk-fold is written.
#
# Backward: dQ walks the same virtual key sequence. dK/dV use a *transposed routing list* (CSR: for each key region, the
# query regions that routed to it, built with one argsort) rather than atomics: each dK/dV program owns one key tile,
# walks the virtual sequence of incoming query tokens, accumulates in fp32 registers and writes once in the input dtype.
# That is deterministic, needs no fp32 scratch copy of dK/dV plus a cast pass, and has no atomic contention on "hot"
# key regions (many query regions route to the same few regions); the cost is one argsort of B*R*topk integers.
# Softmax statistics (running max, row sum, logsumexp, delta) are fp32 whatever the input dtype; logits are kept in
# the log2 domain (scale * log2(e) folded in) so the kernels use exp2.

try:  # Triton is optional: without it (or without a GPU and TRITON_INTERPRET=1) the reference runs.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = None
    tl = None

_LOG2E = 1.4426950408889634

if triton is not None:

    @triton.jit
    def _dot(a, b, UPCAST: tl.constexpr, FP32_PRECISION: tl.constexpr):
        # UPCAST: the Triton interpreter computes tl.dot on bf16 operands wrongly (fp16/fp32 are right), so interpreted
        # bf16 runs multiply in fp32. FP32_PRECISION follows torch.backends.cuda.matmul.allow_tf32 for fp32 inputs.
        if UPCAST:
            return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=FP32_PRECISION)
        if a.dtype == tl.float32:
            return tl.dot(a, b, input_precision=FP32_PRECISION)
        return tl.dot(a, b)

    @triton.jit
    def _bra_fwd_kernel(
        Q, K, V, RIDX, OUT, LSE,
        stride_qb, stride_qr, stride_qt,
        stride_kb, stride_kr, stride_kt,
        stride_vb, stride_vr, stride_vt,
        stride_ob, stride_or, stride_ot,
        query_regions, query_tokens, key_tokens, topk, num_heads,
        qk_scale_log2,
        HEAD_DIM_QK: tl.constexpr, HEAD_DIM_V: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
        UPCAST: tl.constexpr, FP32_PRECISION: tl.constexpr,
    ):
        block_m = tl.program_id(0)
        batch_region = tl.program_id(1)
        head = tl.program_id(2)
        batch = (batch_region // query_regions).to(tl.int64)
        region = (batch_region % query_regions).to(tl.int64)

        offs_m = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_dqk = tl.arange(0, BLOCK_DQK)
        offs_dv = tl.arange(0, BLOCK_DV)
        valid_m = offs_m < query_tokens
        valid_dqk = offs_dqk < HEAD_DIM_QK
        valid_dv = offs_dv < HEAD_DIM_V

        q_ptrs = (Q + batch * stride_qb + region * stride_qr + offs_m[:, None] * stride_qt
                  + head * HEAD_DIM_QK + offs_dqk[None, :])
        q = tl.load(q_ptrs, mask=valid_m[:, None] & valid_dqk[None, :], other=0.0)
        routes = RIDX + (batch * query_regions + region) * topk

        row_max = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        row_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
        routed_tokens = topk * key_tokens
        for start_n in range(0, routed_tokens, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            valid_n = offs_n < routed_tokens
            slot = offs_n // key_tokens
            token = (offs_n - slot * key_tokens).to(tl.int64)
            key_region = tl.load(routes + slot, mask=valid_n, other=0).to(tl.int64)
            kt_ptrs = (K + batch * stride_kb + key_region[None, :] * stride_kr + token[None, :] * stride_kt
                       + head * HEAD_DIM_QK + offs_dqk[:, None])
            kt = tl.load(kt_ptrs, mask=valid_n[None, :] & valid_dqk[:, None], other=0.0)
            logits = _dot(q, kt, UPCAST, FP32_PRECISION) * qk_scale_log2
            logits = tl.where(valid_n[None, :], logits, float("-inf"))
            new_max = tl.maximum(row_max, tl.max(logits, 1))
            correction = tl.exp2(row_max - new_max)
            probs = tl.exp2(logits - new_max[:, None])
            row_sum = row_sum * correction + tl.sum(probs, 1)
            v_ptrs = (V + batch * stride_vb + key_region[:, None] * stride_vr + token[:, None] * stride_vt
                      + head * HEAD_DIM_V + offs_dv[None, :])
            v = tl.load(v_ptrs, mask=valid_n[:, None] & valid_dv[None, :], other=0.0)
            acc = acc * correction[:, None] + _dot(probs.to(v.dtype), v, UPCAST, FP32_PRECISION)
            row_max = new_max

        acc = acc / row_sum[:, None]
        o_ptrs = (OUT + batch * stride_ob + region * stride_or + offs_m[:, None] * stride_ot
                  + head * HEAD_DIM_V + offs_dv[None, :])
        tl.store(o_ptrs, acc.to(OUT.dtype.element_ty), mask=valid_m[:, None] & valid_dv[None, :])
        # logsumexp in the log2 domain, (B, h, Rq, Tq) fp32
        lse_ptrs = LSE + ((batch * num_heads + head) * query_regions + region) * query_tokens + offs_m
        tl.store(lse_ptrs, row_max + tl.log2(row_sum), mask=valid_m)

    @triton.jit
    def _bra_bwd_dq_kernel(
        Q, K, V, RIDX, OUT, DOUT, LSE, DELTA, DQ,
        stride_qb, stride_qr, stride_qt,
        stride_kb, stride_kr, stride_kt,
        stride_vb, stride_vr, stride_vt,
        stride_ob, stride_or, stride_ot,
        query_regions, query_tokens, key_tokens, topk, num_heads,
        qk_scale_log2, scale,
        HEAD_DIM_QK: tl.constexpr, HEAD_DIM_V: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
        UPCAST: tl.constexpr, FP32_PRECISION: tl.constexpr,
    ):
        # dQ and dOUT share q's / out's (contiguous) layouts: DQ uses the q strides, OUT and DOUT the out strides.
        # This kernel also computes delta = rowsum(dO * O) (fp32) for its rows and stores it for the dK/dV kernel,
        # which runs after it on the same stream; that saves the separate elementwise + reduction launches.
        block_m = tl.program_id(0)
        batch_region = tl.program_id(1)
        head = tl.program_id(2)
        batch = (batch_region // query_regions).to(tl.int64)
        region = (batch_region % query_regions).to(tl.int64)

        offs_m = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_dqk = tl.arange(0, BLOCK_DQK)
        offs_dv = tl.arange(0, BLOCK_DV)
        valid_m = offs_m < query_tokens
        valid_dqk = offs_dqk < HEAD_DIM_QK
        valid_dv = offs_dv < HEAD_DIM_V

        q_offsets = batch * stride_qb + region * stride_qr + offs_m[:, None] * stride_qt + head * HEAD_DIM_QK
        q = tl.load(Q + q_offsets + offs_dqk[None, :], mask=valid_m[:, None] & valid_dqk[None, :], other=0.0)
        o_offsets = (batch * stride_ob + region * stride_or + offs_m[:, None] * stride_ot
                     + head * HEAD_DIM_V + offs_dv[None, :])
        do = tl.load(DOUT + o_offsets, mask=valid_m[:, None] & valid_dv[None, :], other=0.0)
        o = tl.load(OUT + o_offsets, mask=valid_m[:, None] & valid_dv[None, :], other=0.0)
        delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
        stat_offsets = ((batch * num_heads + head) * query_regions + region) * query_tokens + offs_m
        tl.store(DELTA + stat_offsets, delta, mask=valid_m)
        lse = tl.load(LSE + stat_offsets, mask=valid_m, other=0.0)
        routes = RIDX + (batch * query_regions + region) * topk

        dq = tl.zeros([BLOCK_M, BLOCK_DQK], dtype=tl.float32)
        routed_tokens = topk * key_tokens
        for start_n in range(0, routed_tokens, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            valid_n = offs_n < routed_tokens
            slot = offs_n // key_tokens
            token = (offs_n - slot * key_tokens).to(tl.int64)
            key_region = tl.load(routes + slot, mask=valid_n, other=0).to(tl.int64)
            k_ptrs = (K + batch * stride_kb + key_region[:, None] * stride_kr + token[:, None] * stride_kt
                      + head * HEAD_DIM_QK + offs_dqk[None, :])
            k = tl.load(k_ptrs, mask=valid_n[:, None] & valid_dqk[None, :], other=0.0)
            vt_ptrs = (V + batch * stride_vb + key_region[None, :] * stride_vr + token[None, :] * stride_vt
                       + head * HEAD_DIM_V + offs_dv[:, None])
            vt = tl.load(vt_ptrs, mask=valid_n[None, :] & valid_dv[:, None], other=0.0)
            logits = _dot(q, tl.trans(k), UPCAST, FP32_PRECISION) * qk_scale_log2
            probs = tl.exp2(logits - lse[:, None])
            probs = tl.where(valid_n[None, :], probs, 0.0)
            dprobs = _dot(do, vt, UPCAST, FP32_PRECISION)
            dlogits = probs * (dprobs - delta[:, None])
            dq += _dot(dlogits.to(k.dtype), k, UPCAST, FP32_PRECISION)

        tl.store(DQ + q_offsets + offs_dqk[None, :], (dq * scale).to(DQ.dtype.element_ty),
                 mask=valid_m[:, None] & valid_dqk[None, :])

    @triton.jit
    def _bra_bwd_dkv_kernel(
        Q, K, V, DOUT, LSE, DELTA, DK, DV, INCOMING_START, INCOMING_QUERY_REGION,
        stride_qb, stride_qr, stride_qt,
        stride_kb, stride_kr, stride_kt,
        stride_vb, stride_vr, stride_vt,
        stride_ob, stride_or, stride_ot,
        query_regions, key_regions, query_tokens, key_tokens, num_heads,
        qk_scale_log2, scale,
        HEAD_DIM_QK: tl.constexpr, HEAD_DIM_V: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
        UPCAST: tl.constexpr, FP32_PRECISION: tl.constexpr,
    ):
        # One program: BLOCK_N tokens of one key region, one head. The query side is the virtual sequence of all query
        # tokens whose region routed here (transposed routing list, CSR over batch * key_regions buckets).
        block_n = tl.program_id(0)
        batch_region = tl.program_id(1)
        head = tl.program_id(2)
        batch = (batch_region // key_regions).to(tl.int64)
        region = (batch_region % key_regions).to(tl.int64)

        offs_n = block_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_dqk = tl.arange(0, BLOCK_DQK)
        offs_dv = tl.arange(0, BLOCK_DV)
        valid_n = offs_n < key_tokens
        valid_dqk = offs_dqk < HEAD_DIM_QK
        valid_dv = offs_dv < HEAD_DIM_V

        k_offsets = batch * stride_kb + region * stride_kr + offs_n[:, None] * stride_kt + head * HEAD_DIM_QK
        k = tl.load(K + k_offsets + offs_dqk[None, :], mask=valid_n[:, None] & valid_dqk[None, :], other=0.0)
        v_offsets = batch * stride_vb + region * stride_vr + offs_n[:, None] * stride_vt + head * HEAD_DIM_V
        v = tl.load(V + v_offsets + offs_dv[None, :], mask=valid_n[:, None] & valid_dv[None, :], other=0.0)

        first = tl.load(INCOMING_START + batch_region).to(tl.int64)
        count = tl.load(INCOMING_START + batch_region + 1).to(tl.int64) - first
        incoming_tokens = count * query_tokens

        dk = tl.zeros([BLOCK_N, BLOCK_DQK], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)
        for start_m in range(0, incoming_tokens, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            valid_m = offs_m < incoming_tokens
            entry = offs_m // query_tokens
            token = offs_m - entry * query_tokens
            query_region = tl.load(INCOMING_QUERY_REGION + first + entry, mask=valid_m, other=0).to(tl.int64)
            q_ptrs = (Q + batch * stride_qb + query_region[:, None] * stride_qr + token[:, None] * stride_qt
                      + head * HEAD_DIM_QK + offs_dqk[None, :])
            q = tl.load(q_ptrs, mask=valid_m[:, None] & valid_dqk[None, :], other=0.0)
            do_ptrs = (DOUT + batch * stride_ob + query_region[:, None] * stride_or + token[:, None] * stride_ot
                       + head * HEAD_DIM_V + offs_dv[None, :])
            do = tl.load(do_ptrs, mask=valid_m[:, None] & valid_dv[None, :], other=0.0)
            stat_offsets = ((batch * num_heads + head) * query_regions + query_region) * query_tokens + token
            # masked query rows get lse = +inf, so their probabilities are exactly 0
            lse = tl.load(LSE + stat_offsets, mask=valid_m, other=float("inf"))
            delta = tl.load(DELTA + stat_offsets, mask=valid_m, other=0.0)

            logits_t = _dot(k, tl.trans(q), UPCAST, FP32_PRECISION) * qk_scale_log2  # (BLOCK_N, BLOCK_M)
            probs_t = tl.exp2(logits_t - lse[None, :])
            dv += _dot(probs_t.to(do.dtype), do, UPCAST, FP32_PRECISION)
            dprobs_t = _dot(v, tl.trans(do), UPCAST, FP32_PRECISION)
            dlogits_t = probs_t * (dprobs_t - delta[None, :])
            dk += _dot(dlogits_t.to(q.dtype), q, UPCAST, FP32_PRECISION)

        tl.store(DK + k_offsets + offs_dqk[None, :], (dk * scale).to(DK.dtype.element_ty),
                 mask=valid_n[:, None] & valid_dqk[None, :])
        tl.store(DV + v_offsets + offs_dv[None, :], dv.to(DV.dtype.element_ty),
                 mask=valid_n[:, None] & valid_dv[None, :])


def _launch_config(query_tokens: int, routed_tokens: int, head_dim_qk: int, head_dim_v: int, dtype: torch.dtype,
                   kernel: str = "fwd"):  # fmt: skip
    """Tiles and launch options per kernel ("fwd", "dq", "dkv") and dtype: tl.dot needs every dim >= 16; wide fp32
    heads get smaller tiles. fp32 (IEEE or TF32 dots) runs unpipelined (num_stages=1) on 8 warps, and dK/dV (two
    accumulators) on 32-token tiles: the pipelined 4-warp launches spilled up to 7 KB of registers on sm_80
    (tools/kernel_check.py, docs/kernels/compile_report.md); half precision keeps 64-token tiles, 3 stages."""
    from .backend import interpreting

    block_dqk = max(16, triton.next_power_of_2(head_dim_qk))
    block_dv = max(16, triton.next_power_of_2(head_dim_v))
    widest = max(block_dqk, block_dv)
    fp32 = dtype == torch.float32
    # fp32 at head dims above 32: 32-token tiles (64 x 64 tiles at a 33..64 head dim spilled 88-376 B on sm_80/90/100)
    big = 64 if (widest <= 32 or not fp32) else 32
    if (fp32 or widest == 64) and kernel == "dkv" and not interpreting():
        big = 32  # dK/dV (two accumulators): 32-token tiles for fp32, and for half at head dims above 32 (88 B on sm_80)
    block_m = min(big, max(16, triton.next_power_of_2(query_tokens)))
    block_n = min(big, max(16, triton.next_power_of_2(routed_tokens)))
    if fp32:
        options = dict(num_warps=4 if kernel == "dkv" and widest <= 32 else 8, num_stages=1)
    else:
        # 8 warps from 64 x 64 tiles on (dK/dV at 64 x 64 on 4 warps: 88 B of spills on sm_80), and for dK/dV at
        # head dims above 32 (its 32 x 64 tiles on 4 warps: 16 B on sm_100)
        wide_dkv = kernel == "dkv" and widest == 64 and not interpreting()
        options = dict(num_warps=4 if block_m * widest < 64 * 64 and not wide_dkv else 8, num_stages=3)
    return block_m, block_n, block_dqk, block_dv, options


def _kernel_flags(dtype: torch.dtype) -> tuple[bool, str]:
    from .backend import interpreting

    upcast = interpreting() and dtype == torch.bfloat16
    fp32_precision = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    return upcast, fp32_precision


def _bra_forward_triton(q, k, v, r_idx, num_heads: int, scale: float):
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    routes = r_idx.to(torch.int32).contiguous()
    batch, query_regions, query_tokens, qk_channels = q.shape
    _, _, key_tokens, v_channels = v.shape
    topk = routes.shape[-1]
    head_dim_qk, head_dim_v = qk_channels // num_heads, v_channels // num_heads
    out = torch.empty((batch, query_regions, query_tokens, v_channels), device=q.device, dtype=q.dtype)
    lse = torch.empty((batch, num_heads, query_regions, query_tokens), device=q.device, dtype=torch.float32)
    block_m, block_n, block_dqk, block_dv, options = _launch_config(
        query_tokens, topk * key_tokens, head_dim_qk, head_dim_v, q.dtype, "fwd"
    )
    upcast, fp32_precision = _kernel_flags(q.dtype)
    grid = (triton.cdiv(query_tokens, block_m), batch * query_regions, num_heads)
    _bra_fwd_kernel[grid](
        q, k, v, routes, out, lse,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        query_regions, query_tokens, key_tokens, topk, num_heads,
        scale * _LOG2E,
        HEAD_DIM_QK=head_dim_qk, HEAD_DIM_V=head_dim_v,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_DQK=block_dqk, BLOCK_DV=block_dv,
        UPCAST=upcast, FP32_PRECISION=fp32_precision, **options,
    )  # fmt: skip
    return out, lse


def _transposed_routing(r_idx: torch.Tensor, key_regions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR of the routing: for bucket ``b * key_regions + kr``, the query regions (with multiplicity) routed to ``kr``.

    Returns ``start`` (B*Rk + 1,) int32 and ``query_region`` (B*Rq*topk,) int32, sorted by bucket.
    """
    batch, query_regions, topk = r_idx.shape
    bucket = (r_idx.long() + torch.arange(batch, device=r_idx.device).view(batch, 1, 1) * key_regions).flatten()
    sorted_bucket, order = torch.sort(bucket, stable=True)
    query_region = ((order % (query_regions * topk)) // topk).to(torch.int32)
    # bucket boundaries by binary search (deterministic, unlike bincount's atomics under use_deterministic_algorithms)
    boundaries = torch.arange(batch * key_regions + 1, device=r_idx.device, dtype=sorted_bucket.dtype)
    start = torch.searchsorted(sorted_bucket, boundaries).to(torch.int32)
    return start, query_region


def _bra_backward_triton(grad_out, q, k, v, r_idx, out, lse, num_heads: int, scale: float):
    q, k, v, out = q.contiguous(), k.contiguous(), v.contiguous(), out.contiguous()
    grad_out = grad_out.contiguous()
    routes = r_idx.to(torch.int32).contiguous()
    batch, query_regions, query_tokens, qk_channels = q.shape
    _, key_regions, key_tokens, v_channels = v.shape
    topk = routes.shape[-1]
    head_dim_qk, head_dim_v = qk_channels // num_heads, v_channels // num_heads
    # delta = rowsum(dO * O) per head, fp32, laid out like lse (B, h, Rq, Tq); written by the dQ kernel
    delta = torch.empty_like(lse)
    grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    upcast, fp32_precision = _kernel_flags(q.dtype)
    strides = (
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
    )  # fmt: skip

    block_m, block_n, block_dqk, block_dv, options = _launch_config(
        query_tokens, topk * key_tokens, head_dim_qk, head_dim_v, q.dtype, "dq"
    )
    _bra_bwd_dq_kernel[(triton.cdiv(query_tokens, block_m), batch * query_regions, num_heads)](
        q, k, v, routes, out, grad_out, lse, delta, grad_q, *strides,
        query_regions, query_tokens, key_tokens, topk, num_heads,
        scale * _LOG2E, scale,
        HEAD_DIM_QK=head_dim_qk, HEAD_DIM_V=head_dim_v,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_DQK=block_dqk, BLOCK_DV=block_dv,
        UPCAST=upcast, FP32_PRECISION=fp32_precision, **options,
    )  # fmt: skip

    start, incoming = _transposed_routing(routes, key_regions)
    # key tile: one key region; query side: all incoming query tokens (typically topk * Tq on average)
    block_n, block_m, block_dqk, block_dv, options = _launch_config(
        key_tokens, topk * query_tokens, head_dim_qk, head_dim_v, q.dtype, "dkv"
    )
    _bra_bwd_dkv_kernel[(triton.cdiv(key_tokens, block_n), batch * key_regions, num_heads)](
        q, k, v, grad_out, lse, delta, grad_k, grad_v, start, incoming, *strides,
        query_regions, key_regions, query_tokens, key_tokens, num_heads,
        scale * _LOG2E, scale,
        HEAD_DIM_QK=head_dim_qk, HEAD_DIM_V=head_dim_v,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_DQK=block_dqk, BLOCK_DV=block_dv,
        UPCAST=upcast, FP32_PRECISION=fp32_precision, **options,
    )  # fmt: skip
    return grad_q, grad_k, grad_v


# ----------------------------------------------------------------------------------------------------------------------
# autograd.Function: the Triton launchers (forward + backward); the op below runs them on CUDA
# ----------------------------------------------------------------------------------------------------------------------


class BraAttentionFunction(torch.autograd.Function):
    """Fused BRA: forward saves q, k, v, r_idx, out and the fp32 logsumexp; backward recomputes the probabilities."""

    @staticmethod
    def forward(ctx, q, k, v, r_idx, num_heads: int, scale: float):
        out, lse = _bra_forward_triton(q, k, v, r_idx, num_heads, scale)
        ctx.save_for_backward(q, k, v, r_idx, out, lse)
        ctx.num_heads, ctx.scale = num_heads, scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, r_idx, out, lse = ctx.saved_tensors
        grad_q, grad_k, grad_v = _bra_backward_triton(grad_out, q, k, v, r_idx, out, lse, ctx.num_heads, ctx.scale)
        return grad_q, grad_k, grad_v, None, None, None


def bra_attention_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, r_idx: torch.Tensor, num_heads: int, scale: float
) -> torch.Tensor:
    """The fused kernel path (forward + backward), whatever the device; needs CUDA tensors or TRITON_INTERPRET=1."""
    if triton is None:
        raise RuntimeError("bra_attention_triton needs triton; install it or use bra_attention_reference")
    _check_inputs(q, k, v, r_idx, num_heads)
    return BraAttentionFunction.apply(q, k, v, r_idx, num_heads, float(scale))


# ----------------------------------------------------------------------------------------------------------------------
# The op: attnzoo::bra_forward / attnzoo::bra_backward (attnzoo.kernels.backend.kernel_op), the one entry point
# ----------------------------------------------------------------------------------------------------------------------


def _uses_triton(q, k, v, r_idx, num_heads, scale) -> bool:
    """The path the op's kernel takes (real or fake tensors): Triton for CUDA tensors (or ZOO_KERNELS=triton), the
    chunked reference otherwise."""
    return triton is not None and choose_backend(q, k, v) == "triton"


def _fake_out(q, k, v, r_idx, num_heads, scale):
    return q.new_empty((*q.shape[:3], v.shape[-1]))  # both paths return a contiguous (B, Rq, Tq, Cv)


def _chunked_inputs(q, k, v, r_idx, num_heads, scale):
    """The chunked path's head-major operands: q (scaled), k, v as (N, h, T, d), and the flat routes."""
    batch, query_regions, query_tokens, _ = q.shape
    key_regions, key_tokens = k.shape[1:3]
    q_heads = _heads_first(q.reshape(batch * query_regions, query_tokens, q.shape[-1]), num_heads) * scale
    k_heads = _heads_first(k.reshape(batch * key_regions, key_tokens, k.shape[-1]), num_heads)
    v_heads = _heads_first(v.reshape(batch * key_regions, key_tokens, v.shape[-1]), num_heads)
    return q_heads, k_heads, v_heads, _flat_routes(r_idx, key_regions)


def _chunked_op_forward(q, k, v, r_idx, num_heads, scale):
    """The CPU path: bra_attention_chunked's blocks, keeping only the per-row log-sum-exp for the backward."""
    _check_inputs(q, k, v, r_idx, num_heads)
    out, lse = _chunked_forward(*_chunked_inputs(q, k, v, r_idx, num_heads, scale), REFERENCE_CHUNK_LOGITS)
    return _heads_last(out).view(*q.shape[:3], v.shape[-1]), [lse]


def _chunked_op_backward(grad_out, q, k, v, r_idx, num_heads, scale, out, saved):
    """_ChunkedBraFunction's backward (probabilities recomputed block by block from the log-sum-exp)."""
    q_heads, k_heads, v_heads, routes = _chunked_inputs(q, k, v, r_idx, num_heads, scale)
    flat = (q_heads.shape[0], q.shape[2], out.shape[-1])  # explicit: a batch of 0 has nothing to infer -1 from
    ctx = SimpleNamespace(saved_tensors=(q_heads, k_heads, v_heads, routes, _heads_first(out.reshape(flat), num_heads),
                                         saved[0]), scale=scale, max_chunk_logits=REFERENCE_CHUNK_LOGITS)  # fmt: skip
    grad_q, grad_k, grad_v = _ChunkedBraFunction.backward(ctx, grad_out.reshape(flat))[:3]
    return grad_q.view(q.shape), grad_k.view(k.shape), grad_v.view(v.shape), None, None, None


def _chunked_fake_saved(q, k, v, r_idx, num_heads, scale):
    rows = q.shape[0] * q.shape[1]
    return [q.new_empty((rows, num_heads, q.shape[2], 1), dtype=_stat_dtype(q.dtype))]


def _triton_fake_saved(q, k, v, r_idx, num_heads, scale):
    return [q.new_empty((q.shape[0], num_heads, q.shape[1], q.shape[2]), dtype=torch.float32)]  # log2-domain lse


_bra_op = kernel_op(
    "bra",
    "(Tensor q, Tensor k, Tensor v, Tensor r_idx, int num_heads, float scale)",
    uses_triton=_uses_triton,
    triton_path=None if triton is None else function_path(BraAttentionFunction, _triton_fake_saved),
    other=KernelPath(_chunked_op_forward, _chunked_op_backward, _chunked_fake_saved),
    fake_out=_fake_out,
    decomposition=bra_attention_reference,  # for ONNX: the chunks write in place, a decomposition may not
)


# ----------------------------------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------------------------------


def bra_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, r_idx: torch.Tensor, num_heads: int, scale: float
) -> torch.Tensor:
    """Bi-level routing attention: (B, Rq, Tq, Cqk), (B, Rk, Tk, Cqk), (B, Rk, Tk, Cv), (B, Rq, topk) -> (B, Rq, Tq, Cv).

    One op on every device (``attnzoo::bra_forward``, its backward ``attnzoo::bra_backward``): its kernel runs the
    Triton kernels for CUDA tensors (or when ``ZOO_KERNELS=triton``), otherwise the reference computed in blocks of
    query regions (:func:`bra_attention_chunked`'s blocks: memory linear in the map).
    """
    _check_inputs(q, k, v, r_idx, num_heads)
    out, _ = _bra_op(q, k, v, r_idx, int(num_heads), float(scale))
    return out
