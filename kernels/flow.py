"""Flow-Attention (Wu et al., "Flowformer: Linearizing Transformers with Conservation Flows", ICML 2022).

Attention seen as a flow network: keys are sources, queries are sinks, ``phi = sigmoid`` makes every flow
non-negative. Per (batch, head), with ``q = phi(q_raw)`` (L, d), ``k = phi(k_raw)`` (S, d), ``v`` (S, dv)::

    sink_incoming[i]    = 1 / ((q_i + eps) . (sum_j k_j + eps) + sum_eps)         # incoming flow of sink i
    source_outgoing[j]  = 1 / ((k_j + eps) . (sum_i q_i + eps) + sum_eps)         # outgoing flow of source j
    conserved_sink[i]   = (q_i + eps) . (sum_j k_j source_outgoing[j] + eps) + sum_eps
    conserved_source[j] = clamp((k_j + eps) . (sum_i q_i sink_incoming[i] + eps) + sum_eps, -1, 1)
    allocation[i]  = sigmoid(conserved_sink[i] * L / S)                          # sinks: gate
    competition[j] = softmax_j(conserved_source) * S                             # sources: compete
    out_i = (q_i @ sum_j k_j^T (v_j competition[j])) * sink_incoming[i] * allocation[i]

Everything is a d-vector or a d x dv state per (batch, head): linear in the sequence length. The causal form
(official ``Flow_Attention_Causal``) replaces each sum over tokens by a prefix sum, rescales the flows by the
number of visible tokens ``n = i + 1``, and normalises the competition by a running sum of ``exp``.

Official code (thuml/Flowformer): ``Flow_Attention.py`` (the core, non-causal and causal) and
``Flowformer_CV/flowformer.py`` (the vision model's copy). Quirk of the vision copy, kept for checkpoint fidelity:
it adds ``eps`` once more *after* each of the four flow sums (``+ 1e-6`` outside ``my_sum``); the core does not.
That is ``sum_eps`` here: 1e-6 for Flowformer_CV, 0 (the default) for the core.

In this file, in order:

- ``flow_attention_reference``: plain torch, the official order of operations (the spec). Its causal form is
  chunked: the official ``causal_dot_product`` materialises an (L, d, dv) cumulative state per head, which does not
  fit at long L; the chunked product keeps one d x dv state per chunk of 64 tokens and is the same sum.
- ``flow_attention_causal_naive``: the literal official causal formula with the (L, d, dv) cumsum, kept only as
  the oracle for tests and the baseline for ``tools/benchmarks/flow.py``.
- Triton kernels: one program per (batch, head) that keeps the d x dv state and every d-vector flow in registers
  and streams the sequence in blocks of tokens; fp32 statistics and accumulation whatever the input dtype.
  Non-causal forward: four sweeps (keys: sum of k; queries: sum of q and the sinks' incoming flow; keys and
  values: the sources' outgoing flow and the competition-weighted k^T v state with its softmax denominator;
  queries: the output), so q and k are read twice and v once; nothing of size L is written but the output.
  Backward: four sweeps (queries, keys, queries, keys), reading q, dO, k, v twice each.
  Causal forward: one sweep (every statistic is a prefix sum, carried across blocks), reading q, k, v once; it
  stores the carried state at each block start for the backward (L/block states, never (L, d, dv)). Causal backward:
  one reverse sweep carrying the suffix sums of every gradient. The causal kernels keep their carried d x dv state
  in a per-program fp32 workspace (L2) and sweep the value dim in slices (``CHUNK_DV``), so it never sits whole in
  registers beside the token tiles (it spilled on sm_80 that way).
- ``FlowAttentionFunction`` (autograd) and ``flow_attention`` (dispatch through ``attnzoo.kernels.backend``).

Head dims up to 64 run in Triton (padded to a power of two >= 16 for ``tl.dot``); larger ones use the reference
(the causal backward at 128 does not fit an H100's shared memory).
Dot products take fp32 operands (the feature map is computed in fp32): 3xTF32 for fp32 inputs (fp32-accurate on
tensor cores), one TF32 pass for fp16/bf16 inputs; so the interpreter's bf16 ``tl.dot`` pitfall never arises (the
interpreter computes every dot in fp32).
"""

import torch
import torch.nn.functional as F

from .backend import choose_backend, forced_backend, function_path, interpreting, kernel_op, recompute_path
from .launch import target_capability
from .tiles import jit as _jit
from .tiles import load_rows as _load_rows
from .tiles import matmul as _mm
from .tiles import new_heads_last_output as _new_output
from .tiles import padded_dim as _padded
from .tiles import strides4 as _strides
from .tiles import tl, triton

__all__ = [
    "flow_attention",
    "flow_attention_reference",
    "flow_attention_causal_naive",
    "FlowAttentionFunction",
    "TRITON_MAX_HEAD_DIM",
]

TRITON_MAX_HEAD_DIM = 64  # sm_90: the causal backward at d = 128 needs 238 KiB of shared memory even in 16-token blocks
REFERENCE_CHUNK = 64


# ----------------------------------------------------------------------------------------------------------------
# Reference (plain torch, the official order of operations)
# ----------------------------------------------------------------------------------------------------------------


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "flow attention expects q, k, v of shape (batch, heads, tokens, head_dim); got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    b, h, _, d = q.shape
    if k.shape[:2] != (b, h) or k.shape[3] != d:
        raise ValueError(f"k {tuple(k.shape)} must be (batch, heads, S, head_dim) matching q {tuple(q.shape)}")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v {tuple(v.shape)} must have the batch, heads and tokens of k {tuple(k.shape)}")
    if causal and q.shape[2] != k.shape[2]:
        raise ValueError(
            f"causal flow attention needs as many queries as keys (self-attention); got {q.shape[2]} and {k.shape[2]}"
        )
    if q.shape[2] == 0 or k.shape[2] == 0:
        raise ValueError("flow attention needs at least one query and one key token")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype; got {q.dtype}, {k.dtype}, {v.dtype}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp32 statistics for half inputs; float64 stays float64 (parity tests run the model in float64)
    return torch.float64 if dtype == torch.float64 else torch.float32


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``einsum("nhld,nhd->nhl")`` when b is one vector per head, ``"nhld,nhld->nhl"`` when b has a row per token."""
    if b.dim() == a.dim() - 1:
        b = b.unsqueeze(2)
    return (a * b).sum(dim=-1)


def _chunked_causal_product(q: torch.Tensor, k: torch.Tensor, w: torch.Tensor, chunk: int) -> torch.Tensor:
    """``out_i = q_i @ sum_{j <= i} k_j^T w_j`` without the (L, d, dv) cumulative state.

    Within a chunk: the masked (chunk x chunk) score matrix; across chunks: the exclusive prefix sum of the
    per-chunk (d x dv) states. Memory: L * chunk + (L / chunk) * d * dv instead of L * d * dv.
    """
    b, h, length, d = q.shape
    dv = w.shape[-1]
    pad = (-length) % chunk
    if pad:  # zero keys/values at the end add nothing; padded queries are dropped
        q, k, w = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, w))
    n_chunks = (length + pad) // chunk
    qc = q.reshape(b, h, n_chunks, chunk, d)
    kc = k.reshape(b, h, n_chunks, chunk, d)
    wc = w.reshape(b, h, n_chunks, chunk, dv)
    chunk_states = kc.transpose(-2, -1) @ wc  # (b, h, n_chunks, d, dv)
    carried = torch.cat([torch.zeros_like(chunk_states[:, :, :1]), chunk_states[:, :, :-1].cumsum(dim=2)], dim=2)
    visible = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    scores = (qc @ kc.transpose(-2, -1)).masked_fill(~visible, 0.0)
    out = qc @ carried + scores @ wc
    return out.reshape(b, h, n_chunks * chunk, dv)[:, :, :length]


def _noncausal_reference(q, k, v, eps, sum_eps):
    n_queries, n_keys = float(q.shape[2]), float(k.shape[2])
    # (1) incoming and outgoing flow
    sink_incoming = 1.0 / (_row_dot(q + eps, k.sum(dim=2) + eps) + sum_eps)
    source_outgoing = 1.0 / (_row_dot(k + eps, q.sum(dim=2) + eps) + sum_eps)
    # (2) conservation refine
    conserved_sink = _row_dot(q + eps, (k * source_outgoing[..., None]).sum(dim=2) + eps) + sum_eps
    conserved_source = _row_dot(k + eps, (q * sink_incoming[..., None]).sum(dim=2) + eps) + sum_eps
    conserved_source = torch.clamp(conserved_source, min=-1.0, max=1.0)  # official: "for stability"
    # (3) competition and allocation
    sink_allocation = torch.sigmoid(conserved_sink * (n_queries / n_keys))
    source_competition = torch.softmax(conserved_source, dim=-1) * n_keys
    # (4) linear-time product
    kv = k.transpose(-2, -1) @ (v * source_competition[..., None])
    return (q @ kv) * sink_incoming[..., None] * sink_allocation[..., None]


def _causal_flows(q, k, eps, sum_eps):
    """Per-token scalars of the causal form (official ``Flow_Attention_Causal``); q, k after the feature map."""
    length = q.shape[2]
    normal = torch.arange(1, length + 1, dtype=q.dtype, device=q.device)  # visible tokens at each position
    sink_incoming = 1.0 / (_row_dot(q + eps, k.cumsum(dim=2) + eps) + sum_eps) * normal
    source_outgoing = 1.0 / (_row_dot(k + eps, q.cumsum(dim=2) + eps) + sum_eps) * normal
    conserved_sink = (_row_dot(q + eps, (k * source_outgoing[..., None]).cumsum(dim=2) + eps) + sum_eps) / normal
    conserved_source = (_row_dot(k + eps, (q * sink_incoming[..., None]).cumsum(dim=2) + eps) + sum_eps) / normal
    conserved_source = torch.clamp(conserved_source, min=-1.0, max=1.0)  # official: "for stability"
    sink_allocation = torch.sigmoid(conserved_sink)
    # the clamp bounds exp() to [1/e, e], so the running normaliser needs no max subtraction (as officially)
    conserved_source = torch.exp(conserved_source)
    source_competition = conserved_source / conserved_source.cumsum(dim=-1) * normal
    return normal, sink_incoming, sink_allocation, source_competition


def _causal_reference(q, k, v, eps, sum_eps, chunk):
    normal, sink_incoming, sink_allocation, source_competition = _causal_flows(q, k, eps, sum_eps)
    scaled_q = q * (sink_incoming / normal)[..., None]  # value normalisation
    out = _chunked_causal_product(scaled_q, k, v * source_competition[..., None], chunk)
    return out * sink_allocation[..., None]


def flow_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    eps: float = 1e-6,
    sum_eps: float = 0.0,
    chunk: int = REFERENCE_CHUNK,
) -> torch.Tensor:
    """Flow-Attention in plain torch. q (B, h, L, d), k (B, h, S, d), v (B, h, S, dv), all *before* the sigmoid
    feature map. Returns (B, h, L, dv) in q's dtype; computes in fp32 (float64 for float64 inputs)."""
    _check_inputs(q, k, v, causal)
    out_dtype = q.dtype
    dtype = _compute_dtype(q.dtype)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    q, k = torch.sigmoid(q), torch.sigmoid(k)  # non-negative feature map (official ``kernel_method``)
    if causal:
        out = _causal_reference(q, k, v, eps, sum_eps, chunk)
    else:
        out = _noncausal_reference(q, k, v, eps, sum_eps)
    return out.to(out_dtype)


def flow_attention_causal_naive(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6, sum_eps: float = 0.0
) -> torch.Tensor:
    """The official causal formula verbatim in its product: ``cumsum`` over an (B, h, L, d, dv) tensor.

    O(L d dv) memory per head; here only as the test oracle and the benchmark baseline.
    """
    _check_inputs(q, k, v, causal=True)
    out_dtype = q.dtype
    dtype = _compute_dtype(q.dtype)
    q, k, v = torch.sigmoid(q.to(dtype)), torch.sigmoid(k.to(dtype)), v.to(dtype)
    normal, sink_incoming, sink_allocation, source_competition = _causal_flows(q, k, eps, sum_eps)
    scaled_q = q * (sink_incoming / normal)[..., None]
    kv = torch.einsum("nhld,nhlm->nhldm", k, v * source_competition[..., None]).cumsum(dim=2)
    out = torch.einsum("nhld,nhldm->nhlm", scaled_q, kv) * sink_allocation[..., None]
    return out.to(out_dtype)


# ----------------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------------


@_jit
def _load_features(base, rows, cols, stride_l, stride_d, row_mask, col_mask):
    """sigmoid(x) tile in fp32 (the feature map), zero outside the tensor so padding adds no flow."""
    mask = row_mask[:, None] & col_mask[None, :]
    x = tl.load(base + rows[:, None] * stride_l + cols[None, :] * stride_d, mask=mask, other=0.0)
    return tl.where(mask, tl.sigmoid(x.to(tl.float32)), 0.0)


@_jit
def _flow_fwd_kernel(
    Q, K, V, OUT, STATS_VEC, STATS_KV, STATS_Z,
    stride_qb, stride_qh, stride_ql, stride_qd,
    stride_kb, stride_kh, stride_kl, stride_kd,
    stride_vb, stride_vh, stride_vl, stride_vd,
    stride_ob, stride_oh, stride_ol, stride_od,
    n_heads, n_queries, n_keys, keys_f, head_dim, value_dim,
    eps, sum_eps, length_ratio,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, FP32_DOT: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0)
    b = bh // n_heads
    h = bh % n_heads
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    o_base = OUT + b * stride_ob + h * stride_oh
    offs_l = tl.arange(0, BLOCK_L)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_DV)
    d_mask = offs_d < head_dim
    e_mask = offs_e < value_dim

    # sweep 1 (keys): total flow capacity of the sources, sum_j k_j
    k_sum = tl.zeros([BLOCK_D], dtype=tl.float32)
    for start in range(0, n_keys, BLOCK_L):
        rows = start + offs_l
        k = _load_features(k_base, rows, offs_d, stride_kl, stride_kd, rows < n_keys, d_mask)
        k_sum += tl.sum(k, axis=0)
    k_sum_eps = tl.where(d_mask, k_sum + eps, 0.0)

    # sweep 2 (queries): sum_i q_i, and sum_i q_i sink_incoming_i (sink_incoming needs only sum_j k_j)
    q_sum = tl.zeros([BLOCK_D], dtype=tl.float32)
    q_in = tl.zeros([BLOCK_D], dtype=tl.float32)
    for start in range(0, n_queries, BLOCK_L):
        rows = start + offs_l
        row_mask = rows < n_queries
        q = _load_features(q_base, rows, offs_d, stride_ql, stride_qd, row_mask, d_mask)
        q_eps = tl.where(d_mask[None, :], q + eps, 0.0)
        incoming = tl.where(row_mask, tl.sum(q_eps * k_sum_eps[None, :], axis=1) + sum_eps, 1.0)
        q_sum += tl.sum(q, axis=0)
        q_in += tl.sum(q * (1.0 / incoming)[:, None], axis=0)
    q_sum_eps = tl.where(d_mask, q_sum + eps, 0.0)
    q_in_eps = tl.where(d_mask, q_in + eps, 0.0)

    # sweep 3 (keys, values): sum_j k_j source_outgoing_j, and the competition-weighted state
    # sum_j k_j^T v_j exp(conserved_source_j) with its softmax denominator. conserved_source is clamped to
    # [-1, 1], so exp() needs no running max.
    k_out = tl.zeros([BLOCK_D], dtype=tl.float32)
    kv = tl.zeros([BLOCK_D, BLOCK_DV], dtype=tl.float32)
    denominator = tl.sum(tl.zeros([BLOCK_L], dtype=tl.float32), axis=0)
    for start in range(0, n_keys, BLOCK_L):
        rows = start + offs_l
        row_mask = rows < n_keys
        k = _load_features(k_base, rows, offs_d, stride_kl, stride_kd, row_mask, d_mask)
        v = _load_rows(v_base, rows, offs_e, stride_vl, stride_vd, row_mask, e_mask)
        k_eps = tl.where(d_mask[None, :], k + eps, 0.0)
        outgoing = tl.where(row_mask, tl.sum(k_eps * q_sum_eps[None, :], axis=1) + sum_eps, 1.0)
        k_out += tl.sum(k * (1.0 / outgoing)[:, None], axis=0)
        source = tl.sum(k_eps * q_in_eps[None, :], axis=1) + sum_eps
        source = tl.minimum(tl.maximum(source, -1.0), 1.0)
        weight = tl.where(row_mask, tl.exp(source), 0.0)
        denominator += tl.sum(weight, axis=0)
        kv += _mm(tl.trans(k), v * weight[:, None], FP32_DOT)
    kv = kv * (keys_f / denominator)  # competition = softmax * S
    k_out_eps = tl.where(d_mask, k_out + eps, 0.0)

    stats = STATS_VEC + bh * 4 * BLOCK_D
    tl.store(stats + offs_d, k_sum)
    tl.store(stats + BLOCK_D + offs_d, q_sum)
    tl.store(stats + 2 * BLOCK_D + offs_d, k_out)
    tl.store(stats + 3 * BLOCK_D + offs_d, q_in)
    tl.store(STATS_KV + bh * BLOCK_D * BLOCK_DV + offs_d[:, None] * BLOCK_DV + offs_e[None, :], kv)
    tl.store(STATS_Z + bh, denominator)

    # sweep 4: out_i = (q_i @ kv) * sink_incoming_i * sigmoid(conserved_sink_i * L / S)
    for start in range(0, n_queries, BLOCK_L):
        rows = start + offs_l
        row_mask = rows < n_queries
        q = _load_features(q_base, rows, offs_d, stride_ql, stride_qd, row_mask, d_mask)
        q_eps = tl.where(d_mask[None, :], q + eps, 0.0)
        incoming = tl.where(row_mask, tl.sum(q_eps * k_sum_eps[None, :], axis=1) + sum_eps, 1.0)
        sink = tl.sum(q_eps * k_out_eps[None, :], axis=1) + sum_eps
        allocation = tl.sigmoid(sink * length_ratio)
        out = _mm(q, kv, FP32_DOT) * (allocation / incoming)[:, None]
        mask = row_mask[:, None] & e_mask[None, :]
        tl.store(o_base + rows[:, None] * stride_ol + offs_e[None, :] * stride_od, out.to(OUT.dtype.element_ty), mask=mask)


@_jit
def _flow_bwd_kernel(
    Q, K, V, DO, DQ, DK, DV, STATS_VEC, STATS_KV, STATS_Z,
    stride_qb, stride_qh, stride_ql, stride_qd,
    stride_kb, stride_kh, stride_kl, stride_kd,
    stride_vb, stride_vh, stride_vl, stride_vd,
    stride_gb, stride_gh, stride_gl, stride_gd,
    stride_dqb, stride_dqh, stride_dql, stride_dqd,
    stride_dkb, stride_dkh, stride_dkl, stride_dkd,
    stride_dvb, stride_dvh, stride_dvl, stride_dvd,
    n_heads, n_queries, n_keys, keys_f, head_dim, value_dim,
    eps, sum_eps, length_ratio,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, FP32_DOT: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0)
    b = bh // n_heads
    h = bh % n_heads
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    g_base = DO + b * stride_gb + h * stride_gh
    dq_base = DQ + b * stride_dqb + h * stride_dqh
    dk_base = DK + b * stride_dkb + h * stride_dkh
    dv_base = DV + b * stride_dvb + h * stride_dvh
    offs_l = tl.arange(0, BLOCK_L)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = tl.arange(0, BLOCK_DV)
    d_mask = offs_d < head_dim
    e_mask = offs_e < value_dim

    stats = STATS_VEC + bh * 4 * BLOCK_D
    k_sum_eps = tl.where(d_mask, tl.load(stats + offs_d) + eps, 0.0)
    q_sum_eps = tl.where(d_mask, tl.load(stats + BLOCK_D + offs_d) + eps, 0.0)
    k_out_eps = tl.where(d_mask, tl.load(stats + 2 * BLOCK_D + offs_d) + eps, 0.0)
    q_in_eps = tl.where(d_mask, tl.load(stats + 3 * BLOCK_D + offs_d) + eps, 0.0)
    kv = tl.load(STATS_KV + bh * BLOCK_D * BLOCK_DV + offs_d[:, None] * BLOCK_DV + offs_e[None, :])
    denominator = tl.load(STATS_Z + bh)

    # sweep 1 (queries): gradient of the state and of the sources' total outgoing flow (through allocation)
    d_kv = tl.zeros([BLOCK_D, BLOCK_DV], dtype=tl.float32)
    d_k_out = tl.zeros([BLOCK_D], dtype=tl.float32)
    for start in range(0, n_queries, BLOCK_L):
        rows = start + offs_l
        row_mask = rows < n_queries
        q = _load_features(q_base, rows, offs_d, stride_ql, stride_qd, row_mask, d_mask)
        grad = _load_rows(g_base, rows, offs_e, stride_gl, stride_gd, row_mask, e_mask)
        q_eps = tl.where(d_mask[None, :], q + eps, 0.0)
        incoming = tl.where(row_mask, tl.sum(q_eps * k_sum_eps[None, :], axis=1) + sum_eps, 1.0)
        allocation = tl.sigmoid((tl.sum(q_eps * k_out_eps[None, :], axis=1) + sum_eps) * length_ratio)
        product = _mm(q, kv, FP32_DOT)
        d_scale = tl.sum(grad * product, axis=1)  # d(out)/d(allocation / incoming) per row
        d_sink = d_scale / incoming * allocation * (1.0 - allocation) * length_ratio
        d_kv += _mm(tl.trans(q), grad * (allocation / incoming)[:, None], FP32_DOT)
        d_k_out += tl.sum(d_sink[:, None] * q_eps, axis=0)
    # softmax backward needs sum_j competition_j * d(competition_j) = <d_kv, kv>
    competition_dot = tl.sum(tl.sum(d_kv * kv, axis=1), axis=0) / keys_f

    # sweep 2 (keys): gradients of sum_i q_i sink_incoming_i (via the competition) and of sum_i q_i (via outgoing)
    d_q_in = tl.zeros([BLOCK_D], dtype=tl.float32)
    d_q_sum = tl.zeros([BLOCK_D], dtype=tl.float32)
    for start in range(0, n_keys, BLOCK_L):
        rows = start + offs_l
        row_mask = rows < n_keys
        k = _load_features(k_base, rows, offs_d, stride_kl, stride_kd, row_mask, d_mask)
        v = _load_rows(v_base, rows, offs_e, stride_vl, stride_vd, row_mask, e_mask)
        k_eps = tl.where(d_mask[None, :], k + eps, 0.0)
        outgoing = tl.where(row_mask, tl.sum(k_eps * q_sum_eps[None, :], axis=1) + sum_eps, 1.0)
        source = tl.sum(k_eps * q_in_eps[None, :], axis=1) + sum_eps
        unclamped = (source >= -1.0) & (source <= 1.0)
        source = tl.minimum(tl.maximum(source, -1.0), 1.0)
        competition = tl.where(row_mask, tl.exp(source) * (keys_f / denominator), 0.0)
        d_competition = tl.sum(_mm(k, d_kv, FP32_DOT) * v, axis=1)
        d_source = tl.where(unclamped & row_mask, competition * (d_competition - competition_dot), 0.0)
        d_q_in += tl.sum(d_source[:, None] * k_eps, axis=0)
        d_outgoing_inv = tl.sum(k * d_k_out[None, :], axis=1)  # d / d(1 / outgoing)
        d_outgoing = tl.where(row_mask, -d_outgoing_inv / (outgoing * outgoing), 0.0)
        d_q_sum += tl.sum(d_outgoing[:, None] * k_eps, axis=0)

    # sweep 3 (queries): dq, and the gradient of sum_j k_j (via incoming)
    d_k_sum = tl.zeros([BLOCK_D], dtype=tl.float32)
    for start in range(0, n_queries, BLOCK_L):
        rows = start + offs_l
        row_mask = rows < n_queries
        q = _load_features(q_base, rows, offs_d, stride_ql, stride_qd, row_mask, d_mask)
        grad = _load_rows(g_base, rows, offs_e, stride_gl, stride_gd, row_mask, e_mask)
        q_eps = tl.where(d_mask[None, :], q + eps, 0.0)
        incoming = tl.where(row_mask, tl.sum(q_eps * k_sum_eps[None, :], axis=1) + sum_eps, 1.0)
        allocation = tl.sigmoid((tl.sum(q_eps * k_out_eps[None, :], axis=1) + sum_eps) * length_ratio)
        product = _mm(q, kv, FP32_DOT)
        d_scale = tl.sum(grad * product, axis=1)
        d_sink = d_scale / incoming * allocation * (1.0 - allocation) * length_ratio
        # sink_incoming = 1 / incoming feeds the output scale and sum_i q_i sink_incoming_i
        d_sink_incoming = d_scale * allocation + tl.sum(q * d_q_in[None, :], axis=1)
        d_incoming = tl.where(row_mask, -d_sink_incoming / (incoming * incoming), 0.0)
        d_k_sum += tl.sum(d_incoming[:, None] * q_eps, axis=0)
        dq = _mm(grad * (allocation / incoming)[:, None], tl.trans(kv), FP32_DOT)
        dq += d_sink[:, None] * k_out_eps[None, :]
        dq += (1.0 / incoming)[:, None] * d_q_in[None, :]
        dq += d_incoming[:, None] * k_sum_eps[None, :]
        dq += d_q_sum[None, :]
        dq = dq * q * (1.0 - q)  # through the sigmoid feature map
        mask = row_mask[:, None] & d_mask[None, :]
        tl.store(dq_base + rows[:, None] * stride_dql + offs_d[None, :] * stride_dqd, dq.to(DQ.dtype.element_ty), mask=mask)

    # sweep 4 (keys): dk, dv
    for start in range(0, n_keys, BLOCK_L):
        rows = start + offs_l
        row_mask = rows < n_keys
        k = _load_features(k_base, rows, offs_d, stride_kl, stride_kd, row_mask, d_mask)
        v = _load_rows(v_base, rows, offs_e, stride_vl, stride_vd, row_mask, e_mask)
        k_eps = tl.where(d_mask[None, :], k + eps, 0.0)
        outgoing = tl.where(row_mask, tl.sum(k_eps * q_sum_eps[None, :], axis=1) + sum_eps, 1.0)
        source = tl.sum(k_eps * q_in_eps[None, :], axis=1) + sum_eps
        unclamped = (source >= -1.0) & (source <= 1.0)
        source = tl.minimum(tl.maximum(source, -1.0), 1.0)
        competition = tl.where(row_mask, tl.exp(source) * (keys_f / denominator), 0.0)
        k_dkv = _mm(k, d_kv, FP32_DOT)
        d_competition = tl.sum(k_dkv * v, axis=1)
        d_source = tl.where(unclamped & row_mask, competition * (d_competition - competition_dot), 0.0)
        d_outgoing_inv = tl.sum(k * d_k_out[None, :], axis=1)
        d_outgoing = tl.where(row_mask, -d_outgoing_inv / (outgoing * outgoing), 0.0)
        dk = _mm(v, tl.trans(d_kv), FP32_DOT) * competition[:, None]
        dk += d_source[:, None] * q_in_eps[None, :]
        dk += (1.0 / outgoing)[:, None] * d_k_out[None, :]
        dk += d_outgoing[:, None] * q_sum_eps[None, :]
        dk += d_k_sum[None, :]
        dk = dk * k * (1.0 - k)
        dv = k_dkv * competition[:, None]
        mask = row_mask[:, None] & d_mask[None, :]
        tl.store(dk_base + rows[:, None] * stride_dkl + offs_d[None, :] * stride_dkd, dk.to(DK.dtype.element_ty), mask=mask)
        mask = row_mask[:, None] & e_mask[None, :]
        tl.store(dv_base + rows[:, None] * stride_dvl + offs_e[None, :] * stride_dvd, dv.to(DV.dtype.element_ty), mask=mask)


@_jit
def _flow_causal_fwd_kernel(
    Q, K, V, OUT, STATES_VEC, STATES_Z, STATES_KV, KV,
    stride_qb, stride_qh, stride_ql, stride_qd,
    stride_kb, stride_kh, stride_kl, stride_kd,
    stride_vb, stride_vh, stride_vl, stride_vd,
    stride_ob, stride_oh, stride_ol, stride_od,
    n_heads, length, head_dim, value_dim, n_blocks,
    eps, sum_eps,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, FP32_DOT: tl.constexpr,
    SAVE_STATES: tl.constexpr, CHUNK_DV: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0)
    b = bh // n_heads
    h = bh % n_heads
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    o_base = OUT + b * stride_ob + h * stride_oh
    offs_l = tl.arange(0, BLOCK_L)
    offs_d = tl.arange(0, BLOCK_D)
    offs_c = tl.arange(0, CHUNK_DV)
    d_mask = offs_d < head_dim
    visible = offs_l[:, None] >= offs_l[None, :]
    # the value dim is swept in CHUNK_DV-wide slices and the carried d x dv state lives in KV (zeros, one per
    # program, L2-resident), not in registers (whole, it spilled on sm_80 beside the token tiles)
    kv_base = KV + bh * BLOCK_D * BLOCK_DV

    # prefix sums carried from block to block
    k_sum = tl.zeros([BLOCK_D], dtype=tl.float32)
    q_sum = tl.zeros([BLOCK_D], dtype=tl.float32)
    k_out = tl.zeros([BLOCK_D], dtype=tl.float32)
    q_in = tl.zeros([BLOCK_D], dtype=tl.float32)
    exp_sum = tl.sum(tl.zeros([BLOCK_L], dtype=tl.float32), axis=0)
    for block in range(0, n_blocks):
        if SAVE_STATES:  # the state entering this block, for the backward's reverse sweep
            state = STATES_VEC + (bh * n_blocks + block) * 4 * BLOCK_D
            tl.store(state + offs_d, k_sum)
            tl.store(state + BLOCK_D + offs_d, q_sum)
            tl.store(state + 2 * BLOCK_D + offs_d, k_out)
            tl.store(state + 3 * BLOCK_D + offs_d, q_in)
            tl.store(STATES_Z + bh * n_blocks + block, exp_sum)
        rows = block * BLOCK_L + offs_l
        row_mask = rows < length
        q = _load_features(q_base, rows, offs_d, stride_ql, stride_qd, row_mask, d_mask)
        k = _load_features(k_base, rows, offs_d, stride_kl, stride_kd, row_mask, d_mask)
        q_eps = tl.where(d_mask[None, :], q + eps, 0.0)
        k_eps = tl.where(d_mask[None, :], k + eps, 0.0)
        visible_tokens = (rows + 1).to(tl.float32)
        k_sum_rows = k_sum[None, :] + tl.cumsum(k, axis=0)
        q_sum_rows = q_sum[None, :] + tl.cumsum(q, axis=0)
        incoming = tl.where(row_mask, tl.sum(q_eps * (k_sum_rows + eps), axis=1) + sum_eps, 1.0)
        outgoing = tl.where(row_mask, tl.sum(k_eps * (q_sum_rows + eps), axis=1) + sum_eps, 1.0)
        sink_incoming = tl.where(row_mask, visible_tokens / incoming, 0.0)
        source_outgoing = tl.where(row_mask, visible_tokens / outgoing, 0.0)
        k_out_rows = k_out[None, :] + tl.cumsum(k * source_outgoing[:, None], axis=0)
        q_in_rows = q_in[None, :] + tl.cumsum(q * sink_incoming[:, None], axis=0)
        sink = (tl.sum(q_eps * (k_out_rows + eps), axis=1) + sum_eps) / visible_tokens
        source = (tl.sum(k_eps * (q_in_rows + eps), axis=1) + sum_eps) / visible_tokens
        source = tl.minimum(tl.maximum(source, -1.0), 1.0)
        allocation = tl.sigmoid(sink)
        weight = tl.where(row_mask, tl.exp(source), 0.0)
        exp_sum_rows = exp_sum + tl.cumsum(weight, axis=0)
        competition = tl.where(row_mask, weight / exp_sum_rows * visible_tokens, 0.0)
        scores = tl.where(visible, _mm(q, tl.trans(k), FP32_DOT), 0.0)
        scale = allocation / incoming  # (sink_incoming / n) * allocation
        for c in range(0, BLOCK_DV, CHUNK_DV):  # value-dim slices: nothing below sums over the value dim
            cols = c + offs_c
            c_mask = cols < value_dim
            v = _load_rows(v_base, rows, cols, stride_vl, stride_vd, row_mask, c_mask)
            state_ptrs = offs_d[:, None] * BLOCK_DV + cols[None, :]
            kv = tl.load(kv_base + state_ptrs)
            if SAVE_STATES:  # the state entering this block, for the backward's reverse sweep
                tl.store(STATES_KV + (bh * n_blocks + block) * BLOCK_D * BLOCK_DV + state_ptrs, kv)
            weighted_v = v * competition[:, None]
            out = (_mm(q, kv, FP32_DOT) + _mm(scores, weighted_v, FP32_DOT)) * scale[:, None]
            mask = row_mask[:, None] & c_mask[None, :]
            tl.store(o_base + rows[:, None] * stride_ol + cols[None, :] * stride_od, out.to(OUT.dtype.element_ty), mask=mask)
            kv += _mm(tl.trans(k), weighted_v, FP32_DOT)
            tl.debug_barrier()  # every thread has read this slice of KV before any thread overwrites it
            tl.store(kv_base + state_ptrs, kv)
        tl.debug_barrier()  # the next block's threads read what other threads stored
        k_sum += tl.sum(k, axis=0)
        q_sum += tl.sum(q, axis=0)
        k_out += tl.sum(k * source_outgoing[:, None], axis=0)
        q_in += tl.sum(q * sink_incoming[:, None], axis=0)
        exp_sum += tl.sum(weight, axis=0)


@_jit
def _flow_causal_bwd_kernel(
    Q, K, V, DO, DQ, DK, DV, STATES_VEC, STATES_Z, STATES_KV, D_KV,
    stride_qb, stride_qh, stride_ql, stride_qd,
    stride_kb, stride_kh, stride_kl, stride_kd,
    stride_vb, stride_vh, stride_vl, stride_vd,
    stride_gb, stride_gh, stride_gl, stride_gd,
    stride_dqb, stride_dqh, stride_dql, stride_dqd,
    stride_dkb, stride_dkh, stride_dkl, stride_dkd,
    stride_dvb, stride_dvh, stride_dvl, stride_dvd,
    n_heads, length, head_dim, value_dim, n_blocks,
    eps, sum_eps,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, FP32_DOT: tl.constexpr,
    CHUNK_DV: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0)
    b = bh // n_heads
    h = bh % n_heads
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    g_base = DO + b * stride_gb + h * stride_gh
    dq_base = DQ + b * stride_dqb + h * stride_dqh
    dk_base = DK + b * stride_dkb + h * stride_dkh
    dv_base = DV + b * stride_dvb + h * stride_dvh
    offs_l = tl.arange(0, BLOCK_L)
    offs_d = tl.arange(0, BLOCK_D)
    offs_c = tl.arange(0, CHUNK_DV)
    d_mask = offs_d < head_dim
    visible = offs_l[:, None] >= offs_l[None, :]
    # the value dim is swept in CHUNK_DV-wide slices; the carried d x dv gradient state lives in D_KV (zeros, one
    # per program, L2-resident), not in registers: with it and the loaded prefix state kv both whole in registers
    # beside ~20 (tokens x d) tiles the kernel spilled up to 14.9 KB on sm_80 (docs/kernels/README.md)
    d_kv_base = D_KV + bh * BLOCK_D * BLOCK_DV

    # suffix sums of the gradients flowing into each prefix sum, carried backwards from block to block
    # (D_KV: sum_{i >= j} q_i^T d(out_i) scale_i)
    d_exp_sum = tl.sum(tl.zeros([BLOCK_L], dtype=tl.float32), axis=0)
    d_q_in = tl.zeros([BLOCK_D], dtype=tl.float32)
    d_k_out = tl.zeros([BLOCK_D], dtype=tl.float32)
    d_q_sum = tl.zeros([BLOCK_D], dtype=tl.float32)
    d_k_sum = tl.zeros([BLOCK_D], dtype=tl.float32)
    for reverse_block in range(0, n_blocks):
        block = n_blocks - 1 - reverse_block
        state = STATES_VEC + (bh * n_blocks + block) * 4 * BLOCK_D
        k_sum = tl.load(state + offs_d)
        q_sum = tl.load(state + BLOCK_D + offs_d)
        k_out = tl.load(state + 2 * BLOCK_D + offs_d)
        q_in = tl.load(state + 3 * BLOCK_D + offs_d)
        exp_sum = tl.load(STATES_Z + bh * n_blocks + block)
        kv_base = STATES_KV + (bh * n_blocks + block) * BLOCK_D * BLOCK_DV

        # recompute the block's forward quantities exactly as the forward kernel did
        rows = block * BLOCK_L + offs_l
        row_mask = rows < length
        q = _load_features(q_base, rows, offs_d, stride_ql, stride_qd, row_mask, d_mask)
        k = _load_features(k_base, rows, offs_d, stride_kl, stride_kd, row_mask, d_mask)
        q_eps = tl.where(d_mask[None, :], q + eps, 0.0)
        k_eps = tl.where(d_mask[None, :], k + eps, 0.0)
        visible_tokens = (rows + 1).to(tl.float32)
        k_sum_rows = k_sum[None, :] + tl.cumsum(k, axis=0)
        q_sum_rows = q_sum[None, :] + tl.cumsum(q, axis=0)
        incoming = tl.where(row_mask, tl.sum(q_eps * (k_sum_rows + eps), axis=1) + sum_eps, 1.0)
        outgoing = tl.where(row_mask, tl.sum(k_eps * (q_sum_rows + eps), axis=1) + sum_eps, 1.0)
        sink_incoming = tl.where(row_mask, visible_tokens / incoming, 0.0)
        source_outgoing = tl.where(row_mask, visible_tokens / outgoing, 0.0)
        k_out_rows = k_out[None, :] + tl.cumsum(k * source_outgoing[:, None], axis=0)
        q_in_rows = q_in[None, :] + tl.cumsum(q * sink_incoming[:, None], axis=0)
        sink = (tl.sum(q_eps * (k_out_rows + eps), axis=1) + sum_eps) / visible_tokens
        source = (tl.sum(k_eps * (q_in_rows + eps), axis=1) + sum_eps) / visible_tokens
        unclamped = (source >= -1.0) & (source <= 1.0)
        source = tl.minimum(tl.maximum(source, -1.0), 1.0)
        allocation = tl.sigmoid(sink)
        weight = tl.where(row_mask, tl.exp(source), 0.0)
        exp_sum_rows = tl.where(row_mask, exp_sum + tl.cumsum(weight, axis=0), 1.0)
        competition = tl.where(row_mask, weight / exp_sum_rows * visible_tokens, 0.0)
        scores = tl.where(visible, _mm(q, tl.trans(k), FP32_DOT), 0.0)
        scale = allocation / incoming

        # the value-dim slices: output scale (out = product * allocation / incoming) and the causal product (prefix
        # state kv entering the block plus the masked in-block scores); every sum over the value dim is accumulated
        # slice by slice (d_scale, d_competition, d_scores, dq, dk), the rest is per slice
        d_scale = tl.zeros([BLOCK_L], dtype=tl.float32)
        d_competition = tl.zeros([BLOCK_L], dtype=tl.float32)
        d_scores = tl.zeros([BLOCK_L, BLOCK_L], dtype=tl.float32)
        dq = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)
        dk = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)
        for c in range(0, BLOCK_DV, CHUNK_DV):
            cols = c + offs_c
            c_mask = cols < value_dim
            v = _load_rows(v_base, rows, cols, stride_vl, stride_vd, row_mask, c_mask)
            grad = _load_rows(g_base, rows, cols, stride_gl, stride_gd, row_mask, c_mask)
            state_ptrs = offs_d[:, None] * BLOCK_DV + cols[None, :]
            kv = tl.load(kv_base + state_ptrs)
            d_kv = tl.load(d_kv_base + state_ptrs)
            weighted_v = v * competition[:, None]
            product = _mm(q, kv, FP32_DOT) + _mm(scores, weighted_v, FP32_DOT)
            d_product = grad * scale[:, None]
            d_scale += tl.sum(grad * product, axis=1)
            d_scores += _mm(d_product, tl.trans(weighted_v), FP32_DOT)
            dq += _mm(d_product, tl.trans(kv), FP32_DOT)
            dk += _mm(weighted_v, tl.trans(d_kv), FP32_DOT)
            d_weighted_v = _mm(k, d_kv, FP32_DOT) + _mm(tl.trans(scores), d_product, FP32_DOT)
            d_competition += tl.sum(d_weighted_v * v, axis=1)
            dv = d_weighted_v * competition[:, None]
            mask = row_mask[:, None] & c_mask[None, :]
            tl.store(dv_base + rows[:, None] * stride_dvl + cols[None, :] * stride_dvd, dv.to(DV.dtype.element_ty), mask=mask)
            d_kv += _mm(tl.trans(q), d_product, FP32_DOT)  # carry the suffix sum into the previous block
            tl.debug_barrier()  # every thread has read this slice of D_KV before any thread overwrites it
            tl.store(d_kv_base + state_ptrs, d_kv)
        tl.debug_barrier()  # the next block's threads read what other threads stored
        d_sink = d_scale / incoming * allocation * (1.0 - allocation)
        d_incoming = -d_scale * scale / incoming
        d_scores = tl.where(visible, d_scores, 0.0)
        dq += _mm(d_scores, k, FP32_DOT)
        dk += _mm(tl.trans(d_scores), q, FP32_DOT)

        # competition = n * exp(source) / running sum of exp
        d_exp_sum_rows = tl.where(row_mask, -d_competition * competition / exp_sum_rows, 0.0)
        d_exp_sum_suffix = d_exp_sum + tl.cumsum(d_exp_sum_rows, axis=0, reverse=True)
        d_source = competition * d_competition + weight * d_exp_sum_suffix
        d_source = tl.where(unclamped & row_mask, d_source, 0.0)

        # source = ((k + eps) . (prefix of q * sink_incoming + eps) + sum_eps) / n
        d_source_n = d_source / visible_tokens
        dk += d_source_n[:, None] * (q_in_rows + eps)
        d_q_in_rows = d_q_in[None, :] + tl.cumsum(d_source_n[:, None] * k_eps, axis=0, reverse=True)
        dq += d_q_in_rows * sink_incoming[:, None]
        d_sink_incoming = tl.sum(d_q_in_rows * q, axis=1)

        # sink = ((q + eps) . (prefix of k * source_outgoing + eps) + sum_eps) / n
        d_sink_n = tl.where(row_mask, d_sink / visible_tokens, 0.0)
        dq += d_sink_n[:, None] * (k_out_rows + eps)
        d_k_out_rows = d_k_out[None, :] + tl.cumsum(d_sink_n[:, None] * q_eps, axis=0, reverse=True)
        dk += d_k_out_rows * source_outgoing[:, None]
        d_source_outgoing = tl.sum(d_k_out_rows * k, axis=1)

        # source_outgoing = n / ((k + eps) . (prefix of q + eps) + sum_eps)
        d_outgoing = tl.where(row_mask, -d_source_outgoing * source_outgoing / outgoing, 0.0)
        dk += d_outgoing[:, None] * (q_sum_rows + eps)
        d_q_sum_rows = d_q_sum[None, :] + tl.cumsum(d_outgoing[:, None] * k_eps, axis=0, reverse=True)
        dq += d_q_sum_rows

        # sink_incoming = n / ((q + eps) . (prefix of k + eps) + sum_eps)
        d_incoming = tl.where(row_mask, d_incoming - d_sink_incoming * sink_incoming / incoming, 0.0)
        dq += d_incoming[:, None] * (k_sum_rows + eps)
        d_k_sum_rows = d_k_sum[None, :] + tl.cumsum(d_incoming[:, None] * q_eps, axis=0, reverse=True)
        dk += d_k_sum_rows

        dq = dq * q * (1.0 - q)  # through the sigmoid feature map
        dk = dk * k * (1.0 - k)
        mask = row_mask[:, None] & d_mask[None, :]
        tl.store(dq_base + rows[:, None] * stride_dql + offs_d[None, :] * stride_dqd, dq.to(DQ.dtype.element_ty), mask=mask)
        tl.store(dk_base + rows[:, None] * stride_dkl + offs_d[None, :] * stride_dkd, dk.to(DK.dtype.element_ty), mask=mask)

        # carry the suffix sums into the previous block
        d_exp_sum += tl.sum(d_exp_sum_rows, axis=0)
        d_q_in += tl.sum(d_source_n[:, None] * k_eps, axis=0)
        d_k_out += tl.sum(d_sink_n[:, None] * q_eps, axis=0)
        d_q_sum += tl.sum(d_outgoing[:, None] * k_eps, axis=0)
        d_k_sum += tl.sum(d_incoming[:, None] * q_eps, axis=0)


# ----------------------------------------------------------------------------------------------------------------
# autograd.Function and dispatch
# ----------------------------------------------------------------------------------------------------------------


def _block_l(block_d: int, block_dv: int, causal: bool, fp32_dot: bool = False) -> int:
    if interpreting():
        # the CPU interpreter pays per loop step, not per element: fewer, larger steps (same code, same masks)
        return 128
    # the kernels keep d x dv fp32 states and d-vectors besides the token tiles: 16-token tiles at head dim 64, and
    # at head dim 32 for the causal kernels and fp32 (tools/kernel_check.py: 64-token tiles spilled there, e.g. the
    # fp32 backward 168 B on sm_80 / 96 B on sm_90, the causal backward 368 B-13.8 KB on sm_80 and 32-736 B on sm_90)
    wide = max(block_d, block_dv)
    if wide == 64 or (wide == 32 and (causal or fp32_dot)):
        return 16
    return 64


def _launch(kind: str, dtype: torch.dtype, block_d: int, block_dv: int, device: torch.device) -> dict:
    """The launch table: FP32_DOT (and CHUNK_DV for the causal kernels), num_warps, num_stages of one flow kernel
    ("fwd", "bwd", "causal_fwd", "causal_bwd") for the input dtype, the padded head dims and the target GPU.

    Every kernel: 8 warps, no software pipelining (the token sweeps are bound by the on-chip states, not by load
    latency; 3-stage 4-warp launches spilled 2.3-3 KB and took 192 KB of shared memory, over the A100's 163 KB).
    Dots: 3xTF32 for fp32 inputs, one TF32 pass for half inputs (``tiles.matmul``), except where the tensor-core
    operands do not fit beside the states: the sm_80 backward at head dim 64 (504 B of spills in fp32, 32 B in half),
    the sm_80 fp32 forward at head dim 16 (8 B), the sm_80 causal backward at head dims 32 and 64 (0.4-14.9 KB) and
    the fp32 causal backward at head dim 32 on every target (sm_90: 16 B, sm_100: 24-40 B) take exact fp32 FMA dots
    ("ieee") there, 0 spills. The causal kernels sweep the value dim in CHUNK_DV-wide slices (32; 16 where the
    backward takes FMA dots).
    tools/kernel_check.py measured each row (docs/kernels/compile_report.md).
    """
    options = dict(FP32_DOT=dtype == torch.float32, num_warps=8, num_stages=1)
    # (the CPU interpreter takes the table of attnzoo.kernels.launch.compiling_for's target, sm_90 by default: the
    # tests run both tables' code paths)
    sm80 = target_capability(device) < 90
    widest = max(block_d, block_dv)
    chunk = 32
    if kind == "bwd" and sm80 and widest == 64:
        options["FP32_DOT"] = "ieee"
    if kind == "fwd" and sm80 and dtype == torch.float32 and widest == 16:  # 3xTF32: 8 B of spills (Flowformer)
        options["FP32_DOT"] = "ieee"
    if kind == "causal_bwd" and widest >= 32:
        if sm80 or (dtype == torch.float32 and widest == 32):  # sm_90 / sm_100 fp32 at head dim 32: 16-40 B else
            options["FP32_DOT"], chunk = "ieee", 16
    if kind.startswith("causal"):
        options["CHUNK_DV"] = min(chunk, block_dv)
    return options


class FlowAttentionFunction(torch.autograd.Function):
    """Fused Flow-Attention (Triton). Inputs before the sigmoid feature map; see the module docstring."""

    @staticmethod
    def forward(ctx, q, k, v, causal: bool, eps: float, sum_eps: float):
        b, h, n_queries, head_dim = q.shape
        n_keys, value_dim = k.shape[2], v.shape[3]
        block_d, block_dv = _padded(head_dim), _padded(value_dim)
        block_l = _block_l(block_d, block_dv, causal, q.dtype == torch.float32)
        out = _new_output(q, value_dim)
        grid = (b * h,)
        f32 = dict(dtype=torch.float32, device=q.device)
        if causal:
            n_blocks = triton.cdiv(n_queries, block_l)
            save = ctx.needs_input_grad[0] or ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
            if save:
                states_vec = torch.empty(b * h, n_blocks, 4, block_d, **f32)
                states_z = torch.empty(b * h, n_blocks, **f32)
                states_kv = torch.empty(b * h, n_blocks, block_d, block_dv, **f32)
            else:
                states_vec = states_z = states_kv = torch.empty(1, **f32)
            kv = torch.zeros(b * h, block_d, block_dv, **f32)  # the kernel's workspace: the carried state
            _flow_causal_fwd_kernel[grid](
                q, k, v, out, states_vec, states_z, states_kv, kv,
                *_strides(q), *_strides(k), *_strides(v), *_strides(out),
                h, n_queries, head_dim, value_dim, n_blocks, eps, sum_eps,
                BLOCK_L=block_l, BLOCK_D=block_d, BLOCK_DV=block_dv, SAVE_STATES=save,
                **_launch("causal_fwd", q.dtype, block_d, block_dv, q.device),
            )  # fmt: skip
            ctx.save_for_backward(q, k, v, states_vec, states_z, states_kv)
            ctx.n_blocks = n_blocks
        else:
            stats_vec = torch.empty(b * h, 4, block_d, **f32)
            stats_kv = torch.empty(b * h, block_d, block_dv, **f32)
            stats_z = torch.empty(b * h, **f32)
            length_ratio = float(n_queries) / float(n_keys)
            _flow_fwd_kernel[grid](
                q, k, v, out, stats_vec, stats_kv, stats_z,
                *_strides(q), *_strides(k), *_strides(v), *_strides(out),
                h, n_queries, n_keys, float(n_keys), head_dim, value_dim, eps, sum_eps, length_ratio,
                BLOCK_L=block_l, BLOCK_D=block_d, BLOCK_DV=block_dv,
                **_launch("fwd", q.dtype, block_d, block_dv, q.device),
            )  # fmt: skip
            ctx.save_for_backward(q, k, v, stats_vec, stats_kv, stats_z)
            ctx.length_ratio = length_ratio
        ctx.causal, ctx.eps, ctx.sum_eps = causal, eps, sum_eps
        ctx.blocks = (block_l, block_d, block_dv)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, *stats = ctx.saved_tensors
        block_l, block_d, block_dv = ctx.blocks
        b, h, n_queries, head_dim = q.shape
        n_keys, value_dim = k.shape[2], v.shape[3]
        dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
        dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        grid = (b * h,)
        common = (*_strides(q), *_strides(k), *_strides(v), *_strides(grad_out),
                  *_strides(dq), *_strides(dk), *_strides(dv))  # fmt: skip
        if ctx.causal:
            d_kv = torch.zeros(b * h, block_d, block_dv, dtype=torch.float32, device=q.device)  # the kernel's workspace
            _flow_causal_bwd_kernel[grid](
                q, k, v, grad_out, dq, dk, dv, *stats, d_kv, *common,
                h, n_queries, head_dim, value_dim, ctx.n_blocks, ctx.eps, ctx.sum_eps,
                BLOCK_L=block_l, BLOCK_D=block_d, BLOCK_DV=block_dv,
                **_launch("causal_bwd", q.dtype, block_d, block_dv, q.device),
            )  # fmt: skip
        else:
            _flow_bwd_kernel[grid](
                q, k, v, grad_out, dq, dk, dv, *stats, *common,
                h, n_queries, n_keys, float(n_keys), head_dim, value_dim, ctx.eps, ctx.sum_eps, ctx.length_ratio,
                BLOCK_L=block_l, BLOCK_D=block_d, BLOCK_DV=block_dv,
                **_launch("bwd", q.dtype, block_d, block_dv, q.device),
            )  # fmt: skip
        return dq, dk, dv, None, None, None


def _triton_supports(q: torch.Tensor, v: torch.Tensor) -> bool:
    return q.shape[3] <= TRITON_MAX_HEAD_DIM and v.shape[3] <= TRITON_MAX_HEAD_DIM


# ----------------------------------------------------------------------------------------------------------------
# The op: attnzoo::flow_forward / attnzoo::flow_backward (attnzoo.kernels.backend.kernel_op), the one entry point
# ----------------------------------------------------------------------------------------------------------------


def _uses_triton(q, k, v, causal, eps, sum_eps) -> bool:
    """The path the op's kernel takes (real or fake tensors): Triton for CUDA tensors (or ZOO_KERNELS=triton) at the
    head dims it takes, float64 never (the kernels compute in fp32); the reference otherwise."""
    return choose_backend(q, k, v) == "triton" and _triton_supports(q, v) and q.dtype != torch.float64


def _fake_out(q, k, v, causal, eps, sum_eps):
    if _uses_triton(q, k, v, causal, eps, sum_eps):
        return _new_output(q, v.shape[3])  # the kernels write a (B, L, h, dv) buffer seen as (B, h, L, dv)
    return q.new_empty((*q.shape[:3], v.shape[3]))


def _fake_saved(q, k, v, causal, eps, sum_eps):
    """The fp32 statistics FlowAttentionFunction.forward keeps: per (batch, head), four d-vectors, the d x dv state
    and the competition's normaliser (non-causal), or those carried at every block start (causal)."""
    b, h, n_queries, head_dim = q.shape
    block_d, block_dv = _padded(head_dim), _padded(v.shape[3])
    f32 = dict(dtype=torch.float32, device=q.device)
    if causal:
        n_blocks = triton.cdiv(n_queries, _block_l(block_d, block_dv, causal, q.dtype == torch.float32))
        return [q.new_empty((b * h, n_blocks, 4, block_d), **f32), q.new_empty((b * h, n_blocks), **f32),
                q.new_empty((b * h, n_blocks, block_d, block_dv), **f32)]  # fmt: skip
    return [q.new_empty((b * h, 4, block_d), **f32), q.new_empty((b * h, block_d, block_dv), **f32),
            q.new_empty((b * h,), **f32)]  # fmt: skip


_flow_op = kernel_op(
    "flow",
    "(Tensor q, Tensor k, Tensor v, bool causal, float eps, float sum_eps)",
    uses_triton=_uses_triton,
    triton_path=None if triton is None else function_path(FlowAttentionFunction, _fake_saved),
    other=recompute_path(lambda q, k, v, causal, eps, sum_eps: flow_attention_reference(q, k, v, causal, eps, sum_eps)),
    fake_out=_fake_out,
)


def flow_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    eps: float = 1e-6,
    sum_eps: float = 0.0,
) -> torch.Tensor:
    """Flow-Attention, dispatched: Triton on CUDA (or when ``ZOO_KERNELS=triton``), the reference otherwise.

    q (B, h, L, d), k (B, h, S, d), v (B, h, S, dv), all before the sigmoid feature map (the op applies it).
    ``causal`` needs L == S. ``eps`` is the official ``eps``; ``sum_eps`` is the extra ``+ eps`` the vision code
    adds after each flow sum (1e-6 for Flowformer_CV, 0 for the core ``Flow_Attention``). Returns (B, h, L, dv).
    """
    _check_inputs(q, k, v, causal)
    if forced_backend() == "triton" and not _triton_supports(q, v):
        raise ValueError(
            f"the Triton flow-attention kernel takes head dims up to {TRITON_MAX_HEAD_DIM}; got "
            f"{q.shape[3]} (qk) and {v.shape[3]} (v): use ZOO_KERNELS=reference or smaller heads"
        )
    # one op on every device: its kernel runs FlowAttentionFunction's launchers where _uses_triton says so (CUDA),
    # the reference elsewhere (float64 parity runs included)
    out, _ = _flow_op(q, k, v, bool(causal), float(eps), float(sum_eps))
    return out

