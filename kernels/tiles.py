"""Triton tile helpers shared by the linear-attention kernels (kernels/flow.py, kernels/slab.py). No op of its own.

Both ops keep a (head_dim x value_dim) state on chip and sweep (rows x cols) tiles of (batch, heads, tokens, dim)
tensors that the models lay out as (batch, tokens, heads, dim): the loads, stores, dot precision and output layout
are the same for both, so they live here once. Importing this module works without Triton: ``triton`` is then
None and ``jit`` leaves functions as they are (only the reference paths run).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the reference paths need no Triton
    triton = None

    class _NoTriton:
        constexpr = None

    tl = _NoTriton()

    def jit(fn):
        return fn
else:
    jit = triton.jit

__all__ = ["jit", "load_rows", "matmul", "new_heads_last_output", "padded_dim", "store_rows", "strides4", "tl", "triton"]


@jit
def matmul(a, b, FP32_DOT: tl.constexpr):
    # FP32_DOT True: 3xTF32 (fp32-accurate on tensor cores; "ieee" FMA dots took >10 min to compile flow's causal
    # backward while it held its whole state in registers; 7-13 s with value slices). False: one TF32 pass (half
    # inputs: the operands are fp32 after the feature map either way).
    # "ieee": fp32 FMA dots (exact fp32; no tensor-core operand copies, so far fewer registers: the launch tables of
    # flow and SLAB pick it where 3xTF32 spills, docs/kernels/README.md).
    if FP32_DOT == "ieee":
        return tl.dot(a, b, input_precision="ieee")
    elif FP32_DOT:
        return tl.dot(a, b, input_precision="tf32x3")
    else:
        return tl.dot(a, b, input_precision="tf32")


@jit
def load_rows(base, rows, cols, stride_l, stride_d, row_mask, col_mask):
    """(rows x cols) tile in fp32, zero outside the tensor (padded tokens add nothing to a state or a sum)."""
    mask = row_mask[:, None] & col_mask[None, :]
    x = tl.load(base + rows[:, None] * stride_l + cols[None, :] * stride_d, mask=mask, other=0.0)
    return x.to(tl.float32)


@jit
def store_rows(base, rows, cols, stride_l, stride_d, row_mask, col_mask, x):
    """Store an fp32 (rows x cols) tile in the tensor's dtype, only inside the tensor."""
    mask = row_mask[:, None] & col_mask[None, :]
    tl.store(base + rows[:, None] * stride_l + cols[None, :] * stride_d, x.to(base.dtype.element_ty), mask=mask)


def padded_dim(dim: int) -> int:
    """The tile width for a head dim: a power of two, at least 16 (tl.dot's minimum)."""
    return max(16, triton.next_power_of_2(dim))


def new_heads_last_output(q: torch.Tensor, value_dim: int) -> torch.Tensor:
    """(B, L, h, dv) in memory, seen as (B, h, L, dv): the model's ``transpose(1, 2).reshape`` is then free."""
    b, h, length, _ = q.shape
    return torch.empty(b, length, h, value_dim, dtype=q.dtype, device=q.device).transpose(1, 2)


def strides4(t: torch.Tensor) -> tuple[int, int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2), t.stride(3)
