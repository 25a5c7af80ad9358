"""Head-sparse attention for Mixture-of-Head attention (MoH, Jin et al., "MoH: Multi-Head Attention as Mixture-of-Head
Attention", 2024).

MoH treats heads as experts: each token uses a few heads (always-on shared heads plus its top-k routed heads) and
the projection takes the head outputs scaled by per-(token, head) gates; the heads a token did not pick get gate 0.
The official code (SkyworkAI/MoH ``MoH-ViT/attention.py`` and ``attention_native.py``) computes every head for every
token and then multiplies by the gates (``einsum("bne,bned->bned", masked_gates, x)``), so the unused heads cost as
much as the used ones. This op takes the selection explicitly and computes attention only for the selected
(token, head) pairs::

    out[b, n, heads[b, n, s]] = gates[b, n, s] * softmax(scale * q[b, h, n] . k[b, h]^T + bias[h, n]) @ v[b, h]
    out[b, n, e] = 0 for every head e that token n did not select

Keys and values are per head for every token (any token may pick any head), as in MoH; the saving is in the
queries: the logits, softmax and weighted sums of the unselected (token, head) pairs are never computed.

The cut: the module keeps the projections, the router (softmax, top-k, renormalisation, the shared/routed mix
``wg_0``, ``wg_1``, the balancing loss), the query scaling (TransNeXt's cosine attention: the caller passes the
scaled q and ``scale=1``) and the CPB bias MLP; it hands over per token the heads used (shared heads included) and
their gate values. With the official gates, ``heads`` lists the shared heads and the top-k routed heads, ``gates``
the matching entries of ``masked_gates``.

In this file, in order:

- :func:`head_sparse_attention_reference`: dense-then-mask, the official order of operations (the spec; also the
  "dense" side of the benchmark).
- :func:`head_sparse_attention_gather`: plain torch, computes only the selected pairs (the CPU path): per head,
  the tokens that picked it are gathered (heads of similar load batched, padded to the group's most-loaded head),
  attended and scattered back; autograd differentiates the same gathered work.
- Triton kernels, the autograd.Function and :func:`head_sparse_attention`, which dispatches through
  :func:`attnzoo.kernels.backend.choose_backend`.
"""

from __future__ import annotations

import torch

from .backend import (
    cast_for_autocast,
    choose_backend,
    forced_backend,
    function_path,
    interpreting,
    kernel_op,
    recompute_path,
)
from .tiles import jit as _jit
from .tiles import matmul, strides4, tl, triton

__all__ = [
    "head_sparse_attention",
    "head_sparse_attention_reference",
    "head_sparse_attention_gather",
    "head_sparse_attention_cpu",
    "head_sparse_attention_triton",
    "HeadSparseAttentionFunction",
    "dense_gates",
    "TRITON_MAX_HEAD_DIM",
]

TRITON_MAX_HEAD_DIM = 128


def _check_inputs(q, k, v, heads, gates, bias) -> None:
    for name, t in {"q": q, "k": k, "v": v}.items():
        if t.dim() != 4:
            raise ValueError(f"{name} must be (batch, heads, tokens, dim); got shape {tuple(t.shape)}")
    b, h, n, d = q.shape
    m = k.shape[2]
    if k.shape != (b, h, m, d):
        raise ValueError(f"k must be (B, h, M, d) matching q's (B, h, d) = ({b}, {h}, {d}); got {tuple(k.shape)}")
    if v.shape[:3] != (b, h, m):
        raise ValueError(f"v must be (B, h, M, dv) with the tokens of k ({b}, {h}, {m}); got {tuple(v.shape)}")
    if heads.dim() != 3 or heads.shape[:2] != (b, n):
        raise ValueError(f"heads must be (B, N, heads_per_token) = ({b}, {n}, K); got {tuple(heads.shape)}")
    if heads.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"heads must hold integer head indices (int64 or int32); got {heads.dtype}")
    if not 1 <= heads.shape[2] <= h:
        raise ValueError(f"each token must use between 1 and {h} heads; heads has {heads.shape[2]} per token")
    if gates.shape != heads.shape:
        raise ValueError(f"gates must match heads' shape {tuple(heads.shape)}; got {tuple(gates.shape)}")
    if bias is not None and bias.shape != (h, n, m):
        raise ValueError(f"bias must be (heads, queries, keys) = ({h}, {n}, {m}); got {tuple(bias.shape)}")
    tensors = [q, k, v, gates] + ([bias] if bias is not None else [])
    if len({t.dtype for t in tensors}) != 1:
        raise ValueError(f"q, k, v, gates and bias must share a dtype; got {sorted({str(t.dtype) for t in tensors})}")
    if len({t.device for t in tensors + [heads]}) != 1:
        raise ValueError("all inputs must be on one device")


def dense_gates(heads: torch.Tensor, gates: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, num_heads): the gate of every head, 0 for the heads a token did not select (differentiable in gates)."""
    b, n, _ = heads.shape
    return gates.new_zeros(b, n, num_heads).scatter(2, heads.long(), gates)


# ----------------------------------------------------------------------------------------------------------------
# Reference (plain torch): the spec, dense-then-mask as the official code
# ----------------------------------------------------------------------------------------------------------------


def head_sparse_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: torch.Tensor,
    gates: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """Every head for every token, then the gates (zero for unselected heads), as the official MoH code.
    Returns (B, N, h, dv) in q's dtype."""
    _check_inputs(q, k, v, heads, gates, bias)
    attn = (q * scale) @ k.transpose(-2, -1) if scale != 1.0 else q @ k.transpose(-2, -1)
    if bias is not None:
        attn = attn + bias
    x = (attn.softmax(dim=-1) @ v).transpose(1, 2)  # (B, N, h, dv)
    return torch.einsum("bne,bned->bned", dense_gates(heads, gates, q.shape[1]), x)


# ----------------------------------------------------------------------------------------------------------------
# Gathered plain torch: only the selected pairs (the CPU path)
# ----------------------------------------------------------------------------------------------------------------


def _selection(heads: torch.Tensor, num_heads: int, check: bool = False) -> torch.Tensor:
    """(B, N, h) bool: which (token, head) pairs are selected. ``check``: refuse out-of-range or repeated heads (a
    host sync, so only the CPU path checks)."""
    b, n, _ = heads.shape
    if check and heads.numel() and (int(heads.min()) < 0 or int(heads.max()) >= num_heads):
        raise ValueError(
            f"heads must hold head indices in [0, {num_heads}); got {int(heads.min())}..{int(heads.max())}"
        )
    chosen = torch.zeros(b, n, num_heads, dtype=torch.bool, device=heads.device).scatter(2, heads.long(), True)
    if check and int(chosen.sum()) != heads.numel():
        raise ValueError("heads must list distinct heads per token (a head repeated for a token would count twice)")
    return chosen


GATHER_CHUNK_LOGITS = 1 << 21
"""Logits one batched step of the gathered CPU path may hold (8 MiB in fp32): larger maps go a few heads at a time."""

GROUP_SLACK = 0.9
"""The gathered CPU path batches heads whose query counts are within this ratio of the group's largest count."""


def _head_groups(caps: list[int]) -> list[tuple[list[int], int]]:
    """Heads with queries, most-loaded first, in groups padded to their largest count: a head joins the current group
    while its count is at least GROUP_SLACK of the group's, so padding wastes at most ~10% of a group's rows while
    a few batched ops replace one Python step per head (on 7x7 maps the per-head loop cost more than it saved)."""
    groups: list[tuple[list[int], int]] = []
    for head in sorted((h for h, cap in enumerate(caps) if cap > 0), key=lambda h: -caps[h]):
        if groups and caps[head] >= GROUP_SLACK * groups[-1][1]:
            groups[-1][0].append(head)
        else:
            groups.append(([head], caps[head]))
    return groups


def head_sparse_attention_gather(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: torch.Tensor,
    gates: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """Only the selected (token, head) pairs, in plain torch. Per head, the tokens that picked it come first (a
    stable sort); heads of similar load are batched (:func:`_head_groups`; a few heads at a time on large maps,
    ``GATHER_CHUNK_LOGITS``) and each group attends the first ``cap``
    tokens of each of its heads, ``cap`` being the group's largest count over batch and heads; the padding rows
    (unselected tokens) get gate 0. All results are gated and scattered back in one step. So the work is the
    selected pairs plus the load-imbalance padding, never the dense B * N * h rows unless every head is full.
    Returns (B, N, h, dv) in q's dtype."""
    _check_inputs(q, k, v, heads, gates, bias)
    b, h, n, d = q.shape
    dv = v.shape[3]
    chosen = _selection(heads, h, check=True)  # (B, N, h)
    gate = dense_gates(heads, gates, h)
    caps = chosen.sum(dim=1).amax(dim=0).tolist()  # per head: the most tokens one batch element sends to it
    order = torch.argsort((~chosen).to(torch.uint8), dim=1, stable=True)  # (B, N, h): selected tokens first
    results, flat_index = [], []
    m = k.shape[2]
    for whole_group, cap in _head_groups(caps):
        # a few heads at a time: logits of at most GATHER_CHUNK_LOGITS elements stay cache-sized
        step = max(1, GATHER_CHUNK_LOGITS // (b * cap * m))
        for start in range(0, len(whole_group), step):
            group = whole_group[start : start + step]
            _attend_heads(q, k, v, bias, scale, order, group, cap, results, flat_index)
    if not results:
        return q.new_zeros(b, n, h, dv)
    flat = torch.cat(flat_index, dim=1)
    o = torch.cat(results, dim=1) * gate.reshape(b, n * h).gather(1, flat).unsqueeze(-1)
    out = q.new_zeros(b, n * h, dv).scatter(1, flat.unsqueeze(-1).expand(-1, -1, dv), o)
    return out.reshape(b, n, h, dv)


GATHER_MIN_LOGITS = 1 << 20
"""The CPU path gathers the selected pairs only when the dense logits (B x h x N x M) reach this many: below it the
gathers' fixed costs exceed the skipped work (MoH-S's 7x7 last stage at batch 8: 0.46M, dense)."""

GATHER_MAX_ROW_FRACTION = 0.75
"""... and when the gathered rows (the selected pairs plus each head group's padding) are at most this share of the
dense B x h x N rows: each gathered logit also pays its bias gather and, in the backward, its scatter, so above
about three quarters of the rows the dense pass with the gates after it is the cheaper one."""


def head_sparse_attention_cpu(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: torch.Tensor,
    gates: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """The non-Triton path of :func:`head_sparse_attention` (same arguments and result), chosen by shape and load:
    :func:`head_sparse_attention_gather` (only the selected pairs) where the logits are large and the gathered rows
    few enough (``GATHER_MIN_LOGITS``, ``GATHER_MAX_ROW_FRACTION``), else the dense form with the gates after it
    (:func:`head_sparse_attention_reference`, the official order)."""
    _check_inputs(q, k, v, heads, gates, bias)
    b, h, n, _ = q.shape
    if b * h * n * k.shape[2] >= GATHER_MIN_LOGITS:
        chosen = _selection(heads, h, check=True)
        caps = chosen.sum(dim=1).amax(dim=0).tolist()
        rows = sum(cap * len(group) for group, cap in _head_groups(caps))
        if rows <= GATHER_MAX_ROW_FRACTION * h * n:
            return head_sparse_attention_gather(q, k, v, heads, gates, bias, scale)
    return head_sparse_attention_reference(q, k, v, heads, gates, bias, scale)


def _attend_heads(q, k, v, bias, scale, order, group, cap, results, flat_index) -> None:
    """Attention of the first ``cap`` ordered tokens of each head in ``group``; appends (B, G * cap, dv) outputs and
    their flat (token * h + head) positions."""
    b, h, n, d = q.shape
    dv = v.shape[3]
    index = torch.tensor(group, device=q.device)
    if cap == n:  # every token: no gather, the rows in order
        rows = torch.arange(n, device=q.device).expand(b, len(group), n)
        q_rows = q[:, index]
    else:
        rows = order[:, :cap, index].transpose(1, 2)  # (B, G, cap): distinct tokens per head, selected first
        q_rows = q[:, index].gather(2, rows.unsqueeze(-1).expand(-1, -1, -1, d))
    attn = (q_rows * scale if scale != 1.0 else q_rows) @ k[:, index].transpose(-2, -1)  # (B, G, cap, M)
    if bias is not None:
        group_bias = bias[index]  # (G, N, M)
        attn = attn + (group_bias if cap == n else group_bias[torch.arange(len(group), device=q.device)[:, None], rows])
    results.append((attn.softmax(dim=-1) @ v[:, index]).reshape(b, len(group) * cap, dv))
    flat_index.append((rows * h + index[:, None]).reshape(b, len(group) * cap))  # token * h + head


# ----------------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------------
#
# The selection is handed to the kernels as, per (batch, head), the tokens that picked the head, first in a row
# (``slots``: a stable argsort, (B, h, N) int32) and their number (``counts``, (B, h)). The grid covers every slot
# block of every (batch, head); a block past its head's count runs zero key steps (the loop bound is 0), so the work
# is proportional to the selected pairs. Flash-attention style: fp32 log-sum-exp kept by the forward, probabilities
# recomputed in the backward; the kernels return the ungated head outputs (zero at unselected pairs) and the gates
# are applied outside (one elementwise product, so autograd gives the gate gradient).
# Backward: dq per selected query row (plus the bias gradient, summed over the batch with fp32 atomics), then per key
# block a sweep over that (batch, head)'s selected rows only for dk and dv. delta = rowsum(dO * O) comes from torch.


@_jit
def _tile(base, rows, cols, s2, s3, mask_rows, mask_cols):
    ptrs = base + rows.to(tl.int64)[:, None] * s2 + cols[None, :] * s3
    return tl.load(ptrs, mask=mask_rows[:, None] & mask_cols[None, :], other=0.0).to(tl.float32)


@_jit
def _hs_fwd_kernel(
    Q, K, V, BIAS, SLOTS, COUNTS, OUT, LSE,
    sq0, sq1, sq2, sq3, sk0, sk1, sk2, sk3, sv0, sv1, sv2, sv3, sb0, sb1, sb2, so0, so1, so2, so3,
    heads, n_queries, n_keys, head_dim, value_dim, scale,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr, FP32_DOT: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // heads).to(tl.int64)
    h = (bh % heads).to(tl.int64)
    count = tl.load(COUNTS + bh)
    slot = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = slot < count
    rows = tl.load(SLOTS + bh.to(tl.int64) * n_queries + slot, mask=row_ok, other=0)
    cols_d = tl.arange(0, BLOCK_D)
    cols_dv = tl.arange(0, BLOCK_DV)
    d_ok = cols_d < head_dim
    dv_ok = cols_dv < value_dim
    q = _tile(Q + b * sq0 + h * sq1, rows, cols_d, sq2, sq3, row_ok, d_ok) * scale
    K = K + b * sk0 + h * sk1
    V = V + b * sv0 + h * sv1
    BIAS = BIAS + h * sb0
    m = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    keys_here = tl.where(pid_m * BLOCK_M < count, n_keys, 0)  # an empty slot block does no key steps
    for n0 in range(0, keys_here, BLOCK_N):
        cols_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = cols_n < n_keys
        k = _tile(K, cols_n, cols_d, sk2, sk3, n_ok, d_ok)
        s = matmul(q, tl.trans(k), FP32_DOT)
        if HAS_BIAS:
            s += _tile(BIAS, rows, cols_n, sb1, sb2, row_ok, n_ok)
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        l_sum = l_sum * alpha + tl.sum(p, 1)
        v = _tile(V, cols_n, cols_dv, sv2, sv3, n_ok, dv_ok)
        acc = acc * alpha[:, None] + matmul(p, v, FP32_DOT)
        m = m_new
    l_sum = tl.where(row_ok, l_sum, 1.0)  # rows of an empty slot block: no keys seen
    out = acc / l_sum[:, None]
    o_ptrs = OUT + b * so0 + h * so1 + rows.to(tl.int64)[:, None] * so2 + cols_dv[None, :] * so3
    tl.store(o_ptrs, out.to(OUT.dtype.element_ty), mask=row_ok[:, None] & dv_ok[None, :])
    tl.store(LSE + bh.to(tl.int64) * n_queries + rows, m + tl.log(l_sum), mask=row_ok)


@_jit
def _hs_bwd_dq_kernel(
    Q, K, V, BIAS, SLOTS, COUNTS, DO, LSE, DELTA, DQ, DBIAS,
    sq0, sq1, sq2, sq3, sk0, sk1, sk2, sk3, sv0, sv1, sv2, sv3, sb0, sb1, sb2, sdo0, sdo1, sdo2, sdo3,
    sdq0, sdq1, sdq2, sdq3,
    heads, n_queries, n_keys, head_dim, value_dim, scale,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr, FP32_DOT: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // heads).to(tl.int64)
    h = (bh % heads).to(tl.int64)
    count = tl.load(COUNTS + bh)
    slot = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = slot < count
    rows = tl.load(SLOTS + bh.to(tl.int64) * n_queries + slot, mask=row_ok, other=0)
    cols_d = tl.arange(0, BLOCK_D)
    cols_dv = tl.arange(0, BLOCK_DV)
    d_ok = cols_d < head_dim
    dv_ok = cols_dv < value_dim
    q = _tile(Q + b * sq0 + h * sq1, rows, cols_d, sq2, sq3, row_ok, d_ok) * scale
    do = _tile(DO + b * sdo0 + h * sdo1, rows, cols_dv, sdo2, sdo3, row_ok, dv_ok)
    lse = tl.load(LSE + bh.to(tl.int64) * n_queries + rows, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + bh.to(tl.int64) * n_queries + rows, mask=row_ok, other=0.0)
    K = K + b * sk0 + h * sk1
    V = V + b * sv0 + h * sv1
    BIAS = BIAS + h * sb0
    DBIAS = DBIAS + h * n_queries * n_keys
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    keys_here = tl.where(pid_m * BLOCK_M < count, n_keys, 0)
    for n0 in range(0, keys_here, BLOCK_N):
        cols_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = cols_n < n_keys
        k = _tile(K, cols_n, cols_d, sk2, sk3, n_ok, d_ok)
        v = _tile(V, cols_n, cols_dv, sv2, sv3, n_ok, dv_ok)
        s = matmul(q, tl.trans(k), FP32_DOT)
        if HAS_BIAS:
            s += _tile(BIAS, rows, cols_n, sb1, sb2, row_ok, n_ok)
        ok = row_ok[:, None] & n_ok[None, :]
        p = tl.where(ok, tl.exp(s - lse[:, None]), 0.0)
        ds = p * (matmul(do, tl.trans(v), FP32_DOT) - delta[:, None])
        dq += matmul(ds, k, FP32_DOT)
        if HAS_BIAS:
            tl.atomic_add(DBIAS + rows.to(tl.int64)[:, None] * n_keys + cols_n[None, :], ds, mask=ok)
    dq_ptrs = DQ + b * sdq0 + h * sdq1 + rows.to(tl.int64)[:, None] * sdq2 + cols_d[None, :] * sdq3
    tl.store(dq_ptrs, (dq * scale).to(DQ.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


@_jit
def _hs_bwd_dkv_kernel(
    Q, K, V, BIAS, SLOTS, COUNTS, DO, LSE, DELTA, DK, DV,
    sq0, sq1, sq2, sq3, sk0, sk1, sk2, sk3, sv0, sv1, sv2, sv3, sb0, sb1, sb2, sdo0, sdo1, sdo2, sdo3,
    sdk0, sdk1, sdk2, sdk3, sdv0, sdv1, sdv2, sdv3,
    heads, n_queries, n_keys, head_dim, value_dim, scale,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr, FP32_DOT: tl.constexpr,
):  # fmt: skip
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // heads).to(tl.int64)
    h = (bh % heads).to(tl.int64)
    count = tl.load(COUNTS + bh)
    cols_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = cols_n < n_keys
    cols_d = tl.arange(0, BLOCK_D)
    cols_dv = tl.arange(0, BLOCK_DV)
    d_ok = cols_d < head_dim
    dv_ok = cols_dv < value_dim
    k = _tile(K + b * sk0 + h * sk1, cols_n, cols_d, sk2, sk3, n_ok, d_ok)
    v = _tile(V + b * sv0 + h * sv1, cols_n, cols_dv, sv2, sv3, n_ok, dv_ok)
    Q = Q + b * sq0 + h * sq1
    DO = DO + b * sdo0 + h * sdo1
    BIAS = BIAS + h * sb0
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)
    for m0 in range(0, count, BLOCK_M):  # only the rows that selected this head
        slot = m0 + tl.arange(0, BLOCK_M)
        row_ok = slot < count
        rows = tl.load(SLOTS + bh.to(tl.int64) * n_queries + slot, mask=row_ok, other=0)
        q = _tile(Q, rows, cols_d, sq2, sq3, row_ok, d_ok) * scale
        do = _tile(DO, rows, cols_dv, sdo2, sdo3, row_ok, dv_ok)
        lse = tl.load(LSE + bh.to(tl.int64) * n_queries + rows, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + bh.to(tl.int64) * n_queries + rows, mask=row_ok, other=0.0)
        s = matmul(q, tl.trans(k), FP32_DOT)
        if HAS_BIAS:
            s += _tile(BIAS, rows, cols_n, sb1, sb2, row_ok, n_ok)
        p = tl.where(row_ok[:, None] & n_ok[None, :], tl.exp(s - lse[:, None]), 0.0)
        ds = p * (matmul(do, tl.trans(v), FP32_DOT) - delta[:, None])
        dv += matmul(tl.trans(p), do, FP32_DOT)
        dk += matmul(tl.trans(ds), q, FP32_DOT)
    dk_ptrs = DK + b * sdk0 + h * sdk1 + cols_n.to(tl.int64)[:, None] * sdk2 + cols_d[None, :] * sdk3
    tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=n_ok[:, None] & d_ok[None, :])
    dv_ptrs = DV + b * sdv0 + h * sdv1 + cols_n.to(tl.int64)[:, None] * sdv2 + cols_dv[None, :] * sdv3
    tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=n_ok[:, None] & dv_ok[None, :])


# ----------------------------------------------------------------------------------------------------------------
# autograd.Function
# ----------------------------------------------------------------------------------------------------------------


# every head-sparse kernel: 8 warps, no software pipelining (register-bound, not latency-bound)
_LAUNCH = dict(num_warps=8, num_stages=1)


def _blocks(head_dim: int, value_dim: int, dtype: torch.dtype | None = None) -> dict:
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_dv = max(16, triton.next_power_of_2(value_dim))
    # 32-token tiles on a GPU (16 in fp32): 64-token ones spilled in all three kernels (docs/kernels/compile_report.md)
    big = 64 if interpreting() else (16 if dtype == torch.float32 else 32)
    return dict(BLOCK_M=big, BLOCK_N=big, BLOCK_D=block_d, BLOCK_DV=block_dv)


def _slots(heads: torch.Tensor, num_heads: int, n_queries: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (batch, head): the selected tokens first (stable, (B, h, N) int32) and their count ((B, h) int32)."""
    chosen = _selection(heads, num_heads).transpose(1, 2)  # (B, h, N)
    counts = chosen.sum(dim=2, dtype=torch.int32)
    slots = torch.argsort((~chosen).to(torch.uint8), dim=2, stable=True).to(torch.int32)
    return slots.contiguous(), counts.contiguous()


def _triton_ready() -> bool:
    return triton is not None


def _triton_supports(q: torch.Tensor, v: torch.Tensor) -> bool:
    dims_ok = q.shape[3] <= TRITON_MAX_HEAD_DIM and v.shape[3] <= TRITON_MAX_HEAD_DIM
    return dims_ok and q.dtype in (torch.float16, torch.bfloat16, torch.float32)


class HeadSparseAttentionFunction(torch.autograd.Function):
    """Ungated head outputs for the selected pairs (Triton), zero elsewhere: (B, N, h, dv). ``slots`` and
    ``counts`` come from :func:`_slots`; the caller multiplies by the gates."""

    @staticmethod
    def forward(ctx, q, k, v, slots, counts, bias, scale: float):
        b, h, n, d = q.shape
        m, dv = k.shape[2], v.shape[3]
        blocks = _blocks(d, dv, q.dtype)
        fp32_dot = q.dtype == torch.float32
        out = torch.zeros(b, n, h, dv, dtype=q.dtype, device=q.device)
        lse = torch.zeros(b * h, n, dtype=torch.float32, device=q.device)
        has_bias = bias is not None
        bias_arg = bias if has_bias else q
        bias_strides = bias.stride() if has_bias else (0, 0, 0)
        out_heads = out.transpose(1, 2)
        _hs_fwd_kernel[(triton.cdiv(n, blocks["BLOCK_M"]), b * h)](
            q, k, v, bias_arg, slots, counts, out_heads, lse,
            *strides4(q), *strides4(k), *strides4(v), *bias_strides, *strides4(out_heads),
            h, n, m, d, dv, scale,
            HAS_BIAS=has_bias, FP32_DOT=fp32_dot, **_LAUNCH, **blocks,
        )  # fmt: skip
        ctx.save_for_backward(q, k, v, slots, counts, bias, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, slots, counts, bias, out, lse = ctx.saved_tensors
        scale = ctx.scale
        b, h, n, d = q.shape
        m, dv = k.shape[2], v.shape[3]
        blocks = _blocks(d, dv, q.dtype)
        fp32_dot = q.dtype == torch.float32
        has_bias = bias is not None
        bias_arg = bias if has_bias else q
        bias_strides = bias.stride() if has_bias else (0, 0, 0)
        delta = (grad_out.float() * out.float()).sum(dim=-1).transpose(1, 2).reshape(b * h, n).contiguous()
        do_heads = grad_out.transpose(1, 2)
        dq = torch.zeros(q.shape, dtype=q.dtype, device=q.device)  # unselected pairs get no gradient
        dbias = torch.zeros(h, n, m, dtype=torch.float32, device=q.device) if has_bias else lse
        args = (*strides4(q), *strides4(k), *strides4(v), *bias_strides, *strides4(do_heads))
        _hs_bwd_dq_kernel[(triton.cdiv(n, blocks["BLOCK_M"]), b * h)](
            q, k, v, bias_arg, slots, counts, do_heads, lse, delta, dq, dbias,
            *args, *strides4(dq), h, n, m, d, dv, scale,
            HAS_BIAS=has_bias, FP32_DOT=fp32_dot, **_LAUNCH, **blocks,
        )  # fmt: skip
        dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
        dv_ = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        _hs_bwd_dkv_kernel[(triton.cdiv(m, blocks["BLOCK_N"]), b * h)](
            q, k, v, bias_arg, slots, counts, do_heads, lse, delta, dk, dv_,
            *args, *strides4(dk), *strides4(dv_), h, n, m, d, dv, scale,
            HAS_BIAS=has_bias, FP32_DOT=fp32_dot, **_LAUNCH, **blocks,
        )  # fmt: skip
        return dq, dk, dv_, None, None, dbias.to(bias.dtype) if has_bias else None, None


def _gated_triton(q, k, v, heads, gates, bias, scale):
    slots, counts = _slots(heads, q.shape[1], q.shape[2])
    out = HeadSparseAttentionFunction.apply(q, k, v, slots, counts, bias, float(scale))
    return torch.einsum("bne,bned->bned", dense_gates(heads, gates, q.shape[1]), out)


def head_sparse_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: torch.Tensor,
    gates: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """The kernel path (forward + backward), whatever the device; needs CUDA tensors or TRITON_INTERPRET=1."""
    if triton is None:
        raise RuntimeError("head_sparse_attention_triton needs triton; install it or use head_sparse_attention_gather")
    _check_inputs(q, k, v, heads, gates, bias)
    return _gated_triton(q, k, v, heads, gates, bias, scale)


# ----------------------------------------------------------------------------------------------------------------
# The op: attnzoo::head_sparse_forward / attnzoo::head_sparse_backward (attnzoo.kernels.backend.kernel_op), the one
# entry point on every device; ungated (zero at the unselected pairs), the caller multiplies by the gates
# ----------------------------------------------------------------------------------------------------------------


def _uses_triton(q, k, v, heads, bias, scale) -> bool:
    """The path the op's kernel takes (real or fake tensors): Triton for CUDA tensors (or ZOO_KERNELS=triton) in
    fp16/bf16/fp32 at the head dims it takes; the CPU path (float64 included) otherwise."""
    return (choose_backend(q, k, v) == "triton" and _triton_ready() and q.dtype != torch.float64
            and _triton_supports(q, v))  # fmt: skip


def _fake_out(q, k, v, heads, bias, scale):
    return q.new_empty((q.shape[0], q.shape[2], q.shape[1], v.shape[3]))  # (B, N, h, dv), contiguous


class _HeadSparseLaunch(torch.autograd.Function):
    """HeadSparseAttentionFunction for the pairs ``heads`` selects: the slots are made inside the op's kernel."""

    @staticmethod
    def forward(ctx, q, k, v, heads, bias, scale):
        slots, counts = _slots(heads, q.shape[1], q.shape[2])
        return HeadSparseAttentionFunction.forward(ctx, q, k, v, slots, counts, bias, scale)

    @staticmethod
    def backward(ctx, grad_out):
        dq, dk, dv, _, _, dbias, _ = HeadSparseAttentionFunction.backward(ctx, grad_out)
        return dq, dk, dv, None, dbias, None


def _triton_fake_saved(q, k, v, heads, bias, scale):
    b, h, n, _ = q.shape  # slots, counts, the log-sum-exp
    return [q.new_empty((b, h, n), dtype=torch.int32), q.new_empty((b, h), dtype=torch.int32),
            q.new_empty((b * h, n), dtype=torch.float32)]  # fmt: skip


def _ones(heads: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return torch.ones(heads.shape, dtype=q.dtype, device=q.device)


_head_sparse_op = kernel_op(
    "head_sparse",
    "(Tensor q, Tensor k, Tensor v, Tensor heads, Tensor? bias, float scale)",
    uses_triton=_uses_triton,
    triton_path=None if triton is None else function_path(_HeadSparseLaunch, _triton_fake_saved),
    # the CPU path's choice (gathered pairs or dense) depends on the data: recomputed in the backward, not kept
    other=recompute_path(
        lambda q, k, v, heads, bias, scale: head_sparse_attention_cpu(q, k, v, heads, _ones(heads, q), bias,
                                                                      scale).contiguous()  # fmt: skip
    ),
    fake_out=_fake_out,
    decomposition=lambda q, k, v, heads, bias, scale: head_sparse_attention_reference(  # for ONNX: the dense form
        q, k, v, heads, _ones(heads, q), bias, scale
    ),
)


# ----------------------------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------------------------


def head_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: torch.Tensor,
    gates: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """MoH attention computed only for the selected (token, head) pairs, gated (see the module docstring).

    q (B, h, N, d), k (B, h, M, d), v (B, h, M, dv); heads (B, N, K) int64/int32: the K distinct heads each token
    uses (shared heads included); gates (B, N, K): their weights (the official ``masked_gates`` at those heads);
    bias (h, N, M) or None: added to the logits (TransNeXt's CPB bias); scale: multiplies q . k (1 for TransNeXt,
    whose q comes scaled). Returns (B, N, h, dv) in q's dtype, zero at the unselected pairs, so
    ``.reshape(B, N, h * dv)`` is the projection's input. Triton on CUDA (or with ``ZOO_KERNELS=triton``), only the
    selected work; :func:`head_sparse_attention_cpu` otherwise (the gathered pairs or the dense form, by shape).
    Head indices are not bounds-checked on the Triton path (torch.topk's output is in range).
    """
    q, k, v, gates, bias = cast_for_autocast(q, k, v, gates, bias)
    _check_inputs(q, k, v, heads, gates, bias)
    if (forced_backend() == "triton" and _triton_ready() and q.dtype != torch.float64
            and not _triton_supports(q, v)):  # fmt: skip
        raise ValueError(
            f"the Triton head-sparse kernel takes float16/bfloat16/float32 and head dims up to "
            f"{TRITON_MAX_HEAD_DIM}; got {q.dtype}, {q.shape[3]} (qk), {v.shape[3]} (v): use "
            f"ZOO_KERNELS=reference"
        )
    # one op on every device, ungated: its kernel runs the Triton launchers on the selected pairs where _uses_triton
    # says so (CUDA), head_sparse_attention_cpu elsewhere; the gates multiply its output here
    out, _ = _head_sparse_op(q, k, v, heads, bias, float(scale))
    return torch.einsum("bne,bned->bned", dense_gates(heads, gates, q.shape[1]), out)
