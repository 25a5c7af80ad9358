"""Simplified linear attention (Guo et al., "SLAB: Efficient Transformers with Simplified Linear Attention and
Progressive Re-parameterized Batch Normalization", ICML 2024).

The attention core of SLAB's ``SimplifiedLinearAttention``. Per (batch, head), with the feature-mapped queries
``q`` (N, d) and keys ``k`` (M, d) (the module applies ``ReLU`` after adding its positional encoding to k, so both
are non-negative) and the values ``v`` (M, dv)::

    z_i   = 1 / (q_i . sum_j k_j + eps)                  # eps = 1e-6 in every official variant
    out_i = (q_i @ (k^T v)) * z_i                        # = sum_j (q_i . k_j) v_j * z_i

No scale, no softmax, no focusing function (``focusing_factor`` is stored by the official modules but unused).
The module adds a depthwise conv of v and projects; that is model code, not this op.

Official code (xinghaochen/SLAB, ``classification/models/``: ``slab_deit.py`` ``Attention``, ``slab_pvt.py`` /
``slab_pvt_v2.py``, ``slab_swin.py`` and ``slab_cswin.py`` ``SimplifiedLinearAttention``), on ``(B*h, tokens, d)``::

    z = 1 / (einsum("b i c, b c -> b i", q, k.sum(dim=1)) + 1e-6)
    if i * j * (c + d) > c * d * (i + j):                # fewer flops: the d x dv state first
        kv = einsum("b j c, b j d -> b c d", k, v);  x = einsum("b i c, b c d, b i -> b i d", q, kv, z)
    else:                                                # fewer flops: the N x M scores first
        qk = einsum("b i c, b j c -> b i j", q, k);  x = einsum("b i j, b j d, b i -> b i d", qk, v, z)

The two orders are the same sum (associativity of the matrix product); they differ only in rounding. The reference
below picks the order by the same rule, so it reproduces the official rounding as well as the official value.
The DeiT, Swin and PVT-v2 copies compute this core in fp32 with autocast off (``q.to(torch.float32)``); the PVT-v1
and CSWin copies in the input dtype. Here the core always runs in fp32 for fp16/bf16 inputs and in float64 for
float64 inputs, and the result comes back in the input dtype (the official fp32 copies return fp32 under autocast;
the module casts where it needs the official dtype).

In this file, in order:

- ``simplified_linear_attention_reference``: plain torch, the official order of operations (the spec).
- Triton kernels: one program per (batch, head) that keeps the d x dv state ``k^T v`` and the d-vector
  ``sum_j k_j`` in registers and streams the tokens in blocks; fp32 accumulation whatever the input dtype.
  Forward: two sweeps (keys and values: the state and the key sum; queries: the output), so every input is read
  once and nothing of size N x M or N x d x dv is ever written; the state and the key sum (d x dv + d floats per
  head) are kept for the backward. Backward, with ``z_i = 1 / (q_i . s + eps)``, ``s = sum_j k_j``,
  ``S = k^T v``::

      dq_i = z_i (dO_i S^T) - z_i (dO_i . out_i) s          dS = sum_i z_i q_i^T dO_i
      dk_j = v_j dS^T + ds                                  ds = -sum_i z_i (dO_i . out_i) q_i
      dv_j = k_j dS

  two sweeps (queries: dq, dS and ds; keys: dk and dv), no atomics (deterministic).
- ``SimplifiedLinearAttentionFunction`` (autograd) and ``simplified_linear_attention`` (dispatch through
  ``attnzoo.kernels.backend``).

Head dims up to 64 run in Triton (padded to a power of two >= 16 for ``tl.dot``), which covers every released SLAB
model (DeiT-T/S, PVT, Swin, CSWin: 32 or 64); larger ones use the reference. The kernels always take the state-first
order (that is what keeps the state on chip); the reference's scores-first case differs from it by rounding only.
Dot products take fp32 operands: 3xTF32 for fp32 inputs (fp32-accurate on tensor cores), one TF32 pass for
fp16/bf16 inputs; so the interpreter's bf16 ``tl.dot`` pitfall never arises (the interpreter computes every dot in
fp32). float64 inputs always take the reference (the kernels compute in fp32; parity runs want the exact spec).
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
from .launch import target_capability
from .tiles import jit as _jit
from .tiles import load_rows as _load_rows
from .tiles import matmul as _mm
from .tiles import new_heads_last_output as _new_output
from .tiles import padded_dim as _padded
from .tiles import store_rows as _store_rows
from .tiles import strides4 as _strides
from .tiles import tl

__all__ = [
    "simplified_linear_attention",
    "simplified_linear_attention_reference",
    "SimplifiedLinearAttentionFunction",
    "state_first",
    "OFFICIAL_EPS",
    "TRITON_MAX_HEAD_DIM",
]

TRITON_MAX_HEAD_DIM = 64  # two d x dv fp32 tiles (state and its gradient) per program stay in registers at 64

OFFICIAL_EPS = 1e-6  # ``+ 1e-6`` in the normaliser of every official SimplifiedLinearAttention


# ----------------------------------------------------------------------------------------------------------------
# Reference (plain torch, the official order of operations)
# ----------------------------------------------------------------------------------------------------------------


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "simplified linear attention expects q, k, v of shape (batch, heads, tokens, head_dim); got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    b, h, _, d = q.shape
    if k.shape[:2] != (b, h) or k.shape[3] != d:
        raise ValueError(f"k {tuple(k.shape)} must be (batch, heads, M, head_dim) matching q {tuple(q.shape)}")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v {tuple(v.shape)} must have the batch, heads and tokens of k {tuple(k.shape)}")
    if q.shape[2] == 0 or k.shape[2] == 0:
        raise ValueError("simplified linear attention needs at least one query and one key token")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if not q.dtype.is_floating_point:
        raise ValueError(f"q, k, v must be floating point; got {q.dtype}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp32 for half inputs (as the official DeiT/Swin copies); float64 stays float64 (parity tests run in float64)
    return torch.float64 if dtype == torch.float64 else torch.float32


def state_first(n_queries: int, n_keys: int, head_dim: int, value_dim: int) -> bool:
    """The official choice of product order: True -> ``q @ (k^T v)``, False -> ``(q k^T) @ v``.

    Whichever needs fewer multiply-adds: ``N M (d + dv)`` for the scores first, ``d dv (N + M)`` for the state first.
    """
    return n_queries * n_keys * (head_dim + value_dim) > head_dim * value_dim * (n_queries + n_keys)


def simplified_linear_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = OFFICIAL_EPS
) -> torch.Tensor:
    """SLAB's linear attention in plain torch. q (B, h, N, d), k (B, h, M, d), v (B, h, M, dv), q and k *after*
    the feature map (non-negative). Returns (B, h, N, dv) in q's dtype; computes in fp32 (float64 for float64)."""
    _check_inputs(q, k, v)
    out_dtype = q.dtype
    dtype = _compute_dtype(q.dtype)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    z = 1.0 / (torch.einsum("bhic,bhc->bhi", q, k.sum(dim=2)) + eps)
    if state_first(q.shape[2], k.shape[2], q.shape[3], v.shape[3]):
        kv = torch.einsum("bhjc,bhjd->bhcd", k, v)
        out = torch.einsum("bhic,bhcd,bhi->bhid", q, kv, z)
    else:
        qk = torch.einsum("bhic,bhjc->bhij", q, k)
        out = torch.einsum("bhij,bhjd,bhi->bhid", qk, v, z)
    return out.to(out_dtype)


# ----------------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------------


@_jit
def _slab_fwd_kernel(
    Q, K, V, OUT, STATE, KEY_SUM,
    stride_qb, stride_qh, stride_ql, stride_qd,
    stride_kb, stride_kh, stride_kl, stride_kd,
    stride_vb, stride_vh, stride_vl, stride_vd,
    stride_ob, stride_oh, stride_ol, stride_od,
    n_heads, n_queries, n_keys, head_dim, value_dim, eps,
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

    # sweep 1 (keys, values): the state k^T v and the key sum, both on chip
    state = tl.zeros([BLOCK_D, BLOCK_DV], dtype=tl.float32)
    key_sum = tl.zeros([BLOCK_D], dtype=tl.float32)
    for start in range(0, n_keys, BLOCK_L):
        rows = start + offs_l
        row_mask = rows < n_keys
        k = _load_rows(k_base, rows, offs_d, stride_kl, stride_kd, row_mask, d_mask)
        v = _load_rows(v_base, rows, offs_e, stride_vl, stride_vd, row_mask, e_mask)
        state += _mm(tl.trans(k), v, FP32_DOT)
        key_sum += tl.sum(k, axis=0)
    tl.store(STATE + bh * BLOCK_D * BLOCK_DV + offs_d[:, None] * BLOCK_DV + offs_e[None, :], state)
    tl.store(KEY_SUM + bh * BLOCK_D + offs_d, key_sum)

    # sweep 2 (queries): out_i = (q_i @ state) / (q_i . key_sum + eps)
    for start in range(0, n_queries, BLOCK_L):
        rows = start + offs_l
        row_mask = rows < n_queries
        q = _load_rows(q_base, rows, offs_d, stride_ql, stride_qd, row_mask, d_mask)
        normaliser = 1.0 / (tl.sum(q * key_sum[None, :], axis=1) + eps)
        out = _mm(q, state, FP32_DOT) * normaliser[:, None]
        _store_rows(o_base, rows, offs_e, stride_ol, stride_od, row_mask, e_mask, out)


@_jit
def _slab_bwd_kernel(
    Q, K, V, DO, DQ, DK, DV, STATE, KEY_SUM,
    stride_qb, stride_qh, stride_ql, stride_qd,
    stride_kb, stride_kh, stride_kl, stride_kd,
    stride_vb, stride_vh, stride_vl, stride_vd,
    stride_gb, stride_gh, stride_gl, stride_gd,
    stride_dqb, stride_dqh, stride_dql, stride_dqd,
    stride_dkb, stride_dkh, stride_dkl, stride_dkd,
    stride_dvb, stride_dvh, stride_dvl, stride_dvd,
    n_heads, n_queries, n_keys, head_dim, value_dim, eps,
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

    state = tl.load(STATE + bh * BLOCK_D * BLOCK_DV + offs_d[:, None] * BLOCK_DV + offs_e[None, :])
    key_sum = tl.load(KEY_SUM + bh * BLOCK_D + offs_d)

    # sweep 1 (queries): dq, and the gradients of the state and of the key sum
    d_state = tl.zeros([BLOCK_D, BLOCK_DV], dtype=tl.float32)
    d_key_sum = tl.zeros([BLOCK_D], dtype=tl.float32)
    for start in range(0, n_queries, BLOCK_L):
        rows = start + offs_l
        row_mask = rows < n_queries
        q = _load_rows(q_base, rows, offs_d, stride_ql, stride_qd, row_mask, d_mask)
        grad = _load_rows(g_base, rows, offs_e, stride_gl, stride_gd, row_mask, e_mask)  # zero on padded rows
        normaliser = 1.0 / (tl.sum(q * key_sum[None, :], axis=1) + eps)
        d_numerator = grad * normaliser[:, None]  # gradient of q_i @ state
        out = _mm(q, state, FP32_DOT) * normaliser[:, None]
        d_denominator = -tl.sum(d_numerator * out, axis=1)  # gradient of q_i . key_sum + eps
        dq = _mm(d_numerator, tl.trans(state), FP32_DOT) + d_denominator[:, None] * key_sum[None, :]
        d_state += _mm(tl.trans(q), d_numerator, FP32_DOT)
        d_key_sum += tl.sum(d_denominator[:, None] * q, axis=0)
        _store_rows(dq_base, rows, offs_d, stride_dql, stride_dqd, row_mask, d_mask, dq)

    # sweep 2 (keys, values): dk_j = v_j @ d_state^T + d_key_sum, dv_j = k_j @ d_state
    for start in range(0, n_keys, BLOCK_L):
        rows = start + offs_l
        row_mask = rows < n_keys
        k = _load_rows(k_base, rows, offs_d, stride_kl, stride_kd, row_mask, d_mask)
        v = _load_rows(v_base, rows, offs_e, stride_vl, stride_vd, row_mask, e_mask)
        dk = _mm(v, tl.trans(d_state), FP32_DOT) + d_key_sum[None, :]
        dv = _mm(k, d_state, FP32_DOT)
        _store_rows(dk_base, rows, offs_d, stride_dkl, stride_dkd, row_mask, d_mask, dk)
        _store_rows(dv_base, rows, offs_e, stride_dvl, stride_dvd, row_mask, e_mask, dv)


# ----------------------------------------------------------------------------------------------------------------
# autograd.Function and dispatch
# ----------------------------------------------------------------------------------------------------------------


def _block_l(block_d: int = 0, block_dv: int = 0, fp32_dot: bool = False) -> int:
    # the CPU interpreter pays per loop step, not per element: fewer, larger steps (same code, same masks)
    if interpreting():
        return 128
    # fp32 (3xTF32 dots) at d = 64 keeps two 64 x 64 fp32 states in registers besides the token tiles (as flow)
    return 16 if fp32_dot and max(block_d, block_dv) == 64 else 64


def _launch(kind: str, dtype: torch.dtype, device: torch.device) -> dict:
    """The launch table: FP32_DOT, num_warps, num_stages of the "fwd" / "bwd" kernel for the input dtype and target.

    Both kernels: 8 warps, no software pipelining (the sweeps are bound by the on-chip state; the 3-stage 4-warp
    launches spilled up to 2.6 KB on sm_80 and took 160 KB of shared memory). Dots: 3xTF32 for fp32 inputs, one TF32
    pass for half inputs, except the fp32 backward on sm_80, whose 3xTF32 operands spill (72 B at head dim 32,
    64-token tiles; 8-64 B at 16 / 32 tokens or 4 warps): exact fp32 FMA dots ("ieee") there, 102 registers, 0
    spills. tools/kernel_check.py measured each row (docs/kernels/compile_report.md).
    """
    options = dict(FP32_DOT=dtype == torch.float32, num_warps=8, num_stages=1)
    if kind == "bwd" and dtype == torch.float32 and target_capability(device) < 90:
        options["FP32_DOT"] = "ieee"
    return options


class SimplifiedLinearAttentionFunction(torch.autograd.Function):
    """Fused SLAB linear attention (Triton). q and k after the feature map; see the module docstring."""

    @staticmethod
    def forward(ctx, q, k, v, eps: float):
        b, h, n_queries, head_dim = q.shape
        n_keys, value_dim = k.shape[2], v.shape[3]
        block_d, block_dv = _padded(head_dim), _padded(value_dim)
        fp32_dot = q.dtype == torch.float32
        block_l = _block_l(block_d, block_dv, fp32_dot)
        out = _new_output(q, value_dim)
        state = torch.empty(b * h, block_d, block_dv, dtype=torch.float32, device=q.device)
        key_sum = torch.empty(b * h, block_d, dtype=torch.float32, device=q.device)
        _slab_fwd_kernel[(b * h,)](
            q, k, v, out, state, key_sum,
            *_strides(q), *_strides(k), *_strides(v), *_strides(out),
            h, n_queries, n_keys, head_dim, value_dim, eps,
            BLOCK_L=block_l, BLOCK_D=block_d, BLOCK_DV=block_dv, **_launch("fwd", q.dtype, q.device),
        )  # fmt: skip
        ctx.save_for_backward(q, k, v, state, key_sum)
        ctx.eps = eps
        ctx.blocks = (block_l, block_d, block_dv, fp32_dot)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, state, key_sum = ctx.saved_tensors
        block_l, block_d, block_dv, fp32_dot = ctx.blocks
        b, h, n_queries, head_dim = q.shape
        n_keys, value_dim = k.shape[2], v.shape[3]
        dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
        dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        _slab_bwd_kernel[(b * h,)](
            q, k, v, grad_out, dq, dk, dv, state, key_sum,
            *_strides(q), *_strides(k), *_strides(v), *_strides(grad_out),
            *_strides(dq), *_strides(dk), *_strides(dv),
            h, n_queries, n_keys, head_dim, value_dim, ctx.eps,
            BLOCK_L=block_l, BLOCK_D=block_d, BLOCK_DV=block_dv, **_launch("bwd", q.dtype, q.device),
        )  # fmt: skip
        return dq, dk, dv, None


def _triton_supports(q: torch.Tensor, v: torch.Tensor) -> bool:
    return q.shape[3] <= TRITON_MAX_HEAD_DIM and v.shape[3] <= TRITON_MAX_HEAD_DIM


# ----------------------------------------------------------------------------------------------------------------
# The op: attnzoo::slab_forward / attnzoo::slab_backward (attnzoo.kernels.backend.kernel_op), the one entry point
# ----------------------------------------------------------------------------------------------------------------


def _uses_triton(q, k, v, eps) -> bool:
    """The path the op's kernel takes (real or fake tensors): Triton for CUDA tensors (or ZOO_KERNELS=triton) at the
    head dims it takes, float64 never (the kernels compute in fp32); the reference otherwise."""
    return choose_backend(q, k, v) == "triton" and _triton_supports(q, v) and q.dtype != torch.float64


def _fake_out(q, k, v, eps):
    if _uses_triton(q, k, v, eps):
        return _new_output(q, v.shape[3])  # the kernel writes a (B, N, h, dv) buffer seen as (B, h, N, dv)
    return q.new_empty((*q.shape[:3], v.shape[3]))


def _fake_saved(q, k, v, eps):
    """What SimplifiedLinearAttentionFunction.forward keeps: the fp32 state k^T v and key sum per (batch, head)."""
    bh, block_d, block_dv = q.shape[0] * q.shape[1], _padded(q.shape[3]), _padded(v.shape[3])
    return [q.new_empty((bh, block_d, block_dv), dtype=torch.float32), q.new_empty((bh, block_d), dtype=torch.float32)]


_slab_op = kernel_op(
    "slab",
    "(Tensor q, Tensor k, Tensor v, float eps)",
    uses_triton=_uses_triton,
    triton_path=None if tl is None else function_path(SimplifiedLinearAttentionFunction, _fake_saved),
    other=recompute_path(lambda q, k, v, eps: simplified_linear_attention_reference(q, k, v, eps)),
    fake_out=_fake_out,
)


def simplified_linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = OFFICIAL_EPS
) -> torch.Tensor:
    """SLAB's linear attention, dispatched: Triton on CUDA (or when ``ZOO_KERNELS=triton``), the reference otherwise.

    q (B, h, N, d), k (B, h, M, d), v (B, h, M, dv); q and k already through the feature map (ReLU: non-negative),
    any strides. ``eps`` is the official ``1e-6`` added to the normaliser. Returns (B, h, N, dv) in q's dtype.
    float64 always takes the reference (the kernels compute in fp32); so do head dims over ``TRITON_MAX_HEAD_DIM``
    unless ``ZOO_KERNELS=triton`` forces the kernel, which then refuses them. Under ``torch.autocast`` q, k, v are
    taken in the autocast dtype (the models' k carries a float32 positional term next to half-precision q, v).
    """
    q, k, v = cast_for_autocast(q, k, v)
    _check_inputs(q, k, v)
    if forced_backend() == "triton" and not _triton_supports(q, v):
        raise ValueError(
            f"the Triton SLAB linear-attention kernel takes head dims up to {TRITON_MAX_HEAD_DIM}; got "
            f"{q.shape[3]} (qk) and {v.shape[3]} (v): use ZOO_KERNELS=reference or smaller heads"
        )
    # one op on every device: its kernel runs SimplifiedLinearAttentionFunction's launchers where _uses_triton says
    # so (CUDA), the reference elsewhere (float64 parity runs included)
    out, _ = _slab_op(q, k, v, float(eps))
    return out
