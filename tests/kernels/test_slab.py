"""SLAB's simplified linear attention: the plain-torch spec against an independent formulation, and the Triton
kernels against the spec.

Where the kernels run: on a CUDA machine (tools/gpu_check.sh) for real; elsewhere in Triton's CPU interpreter, which
``tests/conftest.py`` switches on (TRITON_INTERPRET=1 when no GPU is visible) before any test imports ``kernels``.
The ``setdefault`` below only covers running this file alone with an older conftest.

Kernel-vs-spec cases take the gradient with respect to the *pre-ReLU* q and k, as the model does: a query row the
ReLU zeroed has a normaliser of 1/eps = 1e6, and its raw dq can overflow fp16 in the kernel and in the spec alike;
the ReLU's backward drops exactly those entries. One fp32 case checks the op's own dq/dk as well.

bf16/fp16: the kernels' dot products take fp32 operands (3xTF32 for fp32 inputs, one TF32 pass for half inputs on
the GPU), so the interpreter's bf16 ``tl.dot`` pitfall does not arise; the half cases test half loads/stores and fp32
accumulation on the CPU (the interpreter computes every dot in fp32), and the tensor-core dots only on the GPU.

Sizes: the SLAB shapes (Swin windows of 49 and 3136 tokens at head dim 32, DeiT's 196 at 64, PVT's 3136 queries
over 49 reduced keys) plus odd sizes, one or two (batch, head) programs each: the interpreter costs ~2.5 ms per
program per loop step.
"""

from __future__ import annotations

import os

if not __import__("torch").cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from kernel_checks import TOLERANCE, LargestTensor, assert_close_relative, launches  # noqa: E402

from attnzoo.kernels.slab import (  # noqa: E402
    OFFICIAL_EPS,
    SimplifiedLinearAttentionFunction,
    simplified_linear_attention,
    simplified_linear_attention_reference,
    state_first,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def dense_form(q, k, v, eps):
    """Independent of the reference's einsums: the (N x M) score matrix, normalised by its row sums.

    ``q_i . sum_j k_j`` is the i-th row sum of ``q k^T``, so out = (q k^T v) / (rowsum(q k^T) + eps).
    """
    scores = q @ k.transpose(-1, -2)
    return (scores @ v) / (scores.sum(dim=-1, keepdim=True) + eps)


def relu_inputs(batch, heads, n_queries, n_keys, head_dim, value_dim, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, n_queries, head_dim, generator=generator).relu()
    k = torch.randn(batch, heads, n_keys, head_dim, generator=generator).relu()
    v = torch.randn(batch, heads, n_keys, value_dim, generator=generator)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def test_official_product_order_rule():
    """The official rule picks the cheaper order: state first for long sequences, scores first for short ones."""
    assert state_first(49, 49, 32, 32)  # SLAB-Swin window, head dim 32
    assert state_first(196, 196, 64, 64)  # SLAB-DeiT-S
    assert not state_first(49, 49, 64, 64)  # 7x7 tokens at head dim 64: the scores are cheaper
    assert not state_first(3, 3, 8, 8)


@pytest.mark.parametrize(
    "shape",
    [(2, 2, 49, 49, 32, 32), (1, 2, 49, 49, 64, 64), (1, 3, 50, 13, 8, 5), (2, 1, 7, 7, 16, 16)],
    ids=lambda s: "b{}h{}-N{}M{}-d{}dv{}".format(*s),
)
def test_reference_is_the_normalised_score_product(shape):
    """Both official product orders (see the ids: 49/32 state first, 49/64 scores first) equal the dense form."""
    q, k, v = relu_inputs(*shape)
    ours = simplified_linear_attention_reference(q, k, v)
    torch.testing.assert_close(ours, dense_form(q, k, v, OFFICIAL_EPS), rtol=1e-12, atol=1e-12)


def test_reference_eps_is_in_the_normaliser():
    """A query that the ReLU zeroed gets 0 (0 / eps), and eps shifts every other row's normaliser."""
    q, k, v = relu_inputs(1, 1, 10, 12, 8, 8)
    q[:, :, 3] = 0.0
    out = simplified_linear_attention_reference(q, k, v)
    assert torch.equal(out[:, :, 3], torch.zeros_like(out[:, :, 3]))
    scale = q @ k.sum(dim=2, keepdim=True).transpose(-1, -2)  # (1, 1, N, 1)
    bigger_eps = simplified_linear_attention_reference(q, k, v, eps=0.5)
    torch.testing.assert_close(bigger_eps, out * (scale + OFFICIAL_EPS) / (scale + 0.5), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_reference_computes_in_fp32_and_returns_the_input_dtype(dtype):
    q, k, v = relu_inputs(1, 2, 40, 40, 16, 16)
    out = simplified_linear_attention_reference(q.to(dtype), k.to(dtype), v.to(dtype))
    assert out.dtype == dtype
    exact = dense_form(q.to(dtype).double(), k.to(dtype).double(), v.to(dtype).double(), OFFICIAL_EPS)
    # only the final rounding to the input dtype (plus fp32 sums) separates it from the float64 result
    tol = {torch.float16: 1e-3, torch.bfloat16: 8e-3, torch.float32: 1e-6}[dtype]
    torch.testing.assert_close(out.double(), exact, rtol=tol, atol=tol)


def test_bad_inputs_raise_clear_errors():
    q = torch.rand(1, 2, 10, 4)
    with pytest.raises(ValueError, match="matching q"):
        simplified_linear_attention(q, torch.rand(1, 2, 10, 5), torch.rand(1, 2, 10, 4))
    with pytest.raises(ValueError, match="tokens of k"):
        simplified_linear_attention(q, q, torch.rand(1, 2, 9, 4))
    with pytest.raises(ValueError, match=r"\(batch, heads, tokens, head_dim\)"):
        simplified_linear_attention(q[0], q[0], q[0])
    with pytest.raises(ValueError, match="share a dtype"):
        simplified_linear_attention(q, q.double(), q)
    with pytest.raises(ValueError, match="at least one"):
        simplified_linear_attention(q[:, :, :0], q, q)


# ----------------------------------------------------------------------------------------------------------------
# Triton kernels against the spec
# ----------------------------------------------------------------------------------------------------------------


def make_raw_inputs(batch, heads, n_queries, n_keys, head_dim, value_dim, dtype, packed=False, seed=0):
    """Pre-ReLU q, k and the values as leaves; ``packed`` gives the model's strided views of one qkv tensor."""
    generator = torch.Generator().manual_seed(seed)
    if packed:
        assert n_queries == n_keys and head_dim == value_dim
        qkv = torch.randn(batch, n_queries, 3, heads, head_dim, generator=generator)
        qkv = qkv.to(device=DEVICE, dtype=dtype).requires_grad_()
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return (q, k, v), (qkv,)
    q = torch.randn(batch, heads, n_queries, head_dim, generator=generator)
    k = torch.randn(batch, heads, n_keys, head_dim, generator=generator)
    v = torch.randn(batch, heads, n_keys, value_dim, generator=generator)
    leaves = tuple(t.to(device=DEVICE, dtype=dtype).requires_grad_() for t in (q, k, v))
    return leaves, leaves


def run_both(case, dtype, feature_map=torch.relu):
    batch, heads, n_queries, n_keys, head_dim, value_dim, packed = case
    (q, k, v), leaves = make_raw_inputs(batch, heads, n_queries, n_keys, head_dim, value_dim, dtype, packed)
    grad_out = torch.randn(batch, heads, n_queries, value_dim, generator=torch.Generator().manual_seed(1))
    grad_out = grad_out.to(device=DEVICE, dtype=dtype)
    results = []
    for fn in (
        lambda: SimplifiedLinearAttentionFunction.apply(feature_map(q), feature_map(k), v, OFFICIAL_EPS),
        lambda: simplified_linear_attention_reference(feature_map(q), feature_map(k), v),
    ):
        out = fn()
        grads = torch.autograd.grad(out, leaves, grad_out)
        results.append((out.detach(), *grads))
    return results


# (batch, heads, N queries, M keys, head_dim, value_dim, packed qkv views)
FP32_CASES = [
    (2, 2, 49, 49, 32, 32, True),  # SLAB-Swin 7x7 window, model layout
    (1, 1, 3136, 3136, 32, 32, False),  # SLAB-Swin-T stage 1: one 56x56 window
    (1, 2, 196, 196, 64, 64, True),  # SLAB-DeiT-S
    (1, 1, 3136, 49, 64, 64, False),  # SLAB-PVT stage 1: keys spatially reduced by 8
    (1, 2, 100, 70, 5, 7, False),  # odd head dims, fewer keys than queries
    # head dim 2, not 1: at d = 1, out_i = q_i (k^T v) / (q_i s + eps) hardly depends on q_i, and dq_i is the
    # difference of two nearly equal terms (fp32 cancellation: the fp32 reference is 1e-3 off float64 there, more
    # than the kernel)
    (2, 1, 67, 67, 2, 1, False),
    (1, 2, 130, 129, 24, 40, False),  # blocks of 128 tokens plus a ragged tail
]
HALF_CASES = [
    (1, 2, 196, 196, 32, 32, True, torch.bfloat16),
    (1, 2, 130, 60, 16, 16, False, torch.bfloat16),
    (1, 2, 100, 100, 64, 64, False, torch.float16),
]


def _case_id(case):
    b, h, n, m, d, dv, packed = case[:7]
    name = f"b{b}h{h}-N{n}" + (f"M{m}" if m != n else "") + f"-d{d}" + (f"dv{dv}" if dv != d else "")
    return name + ("-packed" if packed else "")


@pytest.mark.parametrize("case", FP32_CASES, ids=_case_id)
def test_triton_matches_reference_fp32(case):
    got, ref = run_both(case, torch.float32)
    for name, g, r in zip(("out", "grad q", "grad k", "grad v"), got, ref):
        assert torch.isfinite(g).all(), f"{name}: non-finite values"
        assert_close_relative(g, r, TOLERANCE[torch.float32], name)


@pytest.mark.parametrize("case", HALF_CASES, ids=lambda c: _case_id(c) + f"-{str(c[-1]).split('.')[-1]}")
def test_triton_matches_reference_half(case):
    dtype = case[-1]
    got, ref = run_both(case[:-1], dtype)
    for name, g, r in zip(("out", "grad q", "grad k", "grad v"), got, ref):
        assert g.dtype == dtype
        assert torch.isfinite(g).all(), f"{name}: non-finite values"
        assert_close_relative(g, r, TOLERANCE[dtype], name)


def test_sm80_launch_table_matches_reference():
    """The A100's table (fp32 FMA dots in the fp32 backward) is the same math: run in the interpreter with the
    launchers choosing for sm_80."""
    from attnzoo.kernels.launch import compiling_for
    from attnzoo.kernels.slab import _launch

    with compiling_for(80):
        assert _launch("bwd", torch.float32, torch.device("cpu"))["FP32_DOT"] == "ieee"
        got, ref = run_both((1, 2, 130, 129, 32, 32, False), torch.float32)
    for name, g, r in zip(("out", "grad q", "grad k", "grad v"), got, ref):
        assert torch.isfinite(g).all(), f"{name}: non-finite values"
        assert_close_relative(g, r, TOLERANCE[torch.float32], name)


def test_triton_op_gradients_without_the_relu():
    """The op's own dq and dk (not masked by a ReLU backward), on strictly positive features."""
    got, ref = run_both((1, 2, 90, 75, 16, 8, False), torch.float32, feature_map=lambda x: x.abs() + 0.1)
    for name, g, r in zip(("out", "grad q", "grad k", "grad v"), got, ref):
        assert_close_relative(g, r, TOLERANCE[torch.float32], name)


def test_triton_path_never_builds_the_score_matrix():
    """Forward and backward allocate nothing beyond the inputs' sizes and the d x dv state (no N x M scores)."""
    n_tokens, dim = 1000, 8
    q, k, v = (torch.rand(1, 1, n_tokens, dim, device=DEVICE, requires_grad=True) for _ in range(3))
    with LargestTensor() as watch:
        out = SimplifiedLinearAttentionFunction.apply(q, k, v, OFFICIAL_EPS)
        out.sum().backward()
    assert watch.largest_bytes <= n_tokens * dim * 4, f"largest tensor {watch.largest_bytes} bytes"
    with LargestTensor() as dense:
        dense_form(q, k, v, OFFICIAL_EPS)
    assert dense.largest_bytes >= n_tokens * n_tokens * 4  # the check above can fail: the dense form builds N x M


def test_dispatch(monkeypatch):
    (q, k, v), _ = make_raw_inputs(1, 2, 20, 20, 4, 4, torch.float32)
    q, k = q.relu(), k.relu()
    # one op whatever the path (attnzoo::slab_forward); its kernel launches the Triton kernels or not
    assert "attnzoo_slab_forward" in type(simplified_linear_attention(q, k, v).grad_fn).__name__
    kernel_runs = lambda *inputs: launches(  # noqa: E731
        SimplifiedLinearAttentionFunction, lambda: simplified_linear_attention(*inputs)
    )
    monkeypatch.setenv("ZOO_KERNELS", "reference")
    assert kernel_runs(q, k, v) == 0
    monkeypatch.setenv("ZOO_KERNELS", "triton")
    assert kernel_runs(q, k, v) == 1
    monkeypatch.delenv("ZOO_KERNELS")
    assert kernel_runs(q, k, v) == (1 if DEVICE == "cuda" else 0)
    # float64 stays on the exact reference even when the kernel is forced (the kernel computes in fp32)
    monkeypatch.setenv("ZOO_KERNELS", "triton")
    q64 = q.detach().double().requires_grad_()
    assert kernel_runs(q64, k.double(), v.double()) == 0


def test_forced_triton_refuses_large_head_dims(monkeypatch):
    monkeypatch.setenv("ZOO_KERNELS", "triton")
    big = torch.rand(1, 1, 8, 96, device=DEVICE)
    with pytest.raises(ValueError, match="head dims up to 64"):
        simplified_linear_attention(big, big, big)
    monkeypatch.delenv("ZOO_KERNELS")
    assert simplified_linear_attention(big, big, big).shape == (1, 1, 8, 96)  # unforced: the reference
