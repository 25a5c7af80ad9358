"""Flow-Attention: the plain-torch spec against independent formulations, and the Triton kernels against the spec.

Where the kernels run: on a CUDA machine (tools/gpu_check.sh) for real; elsewhere in Triton's CPU interpreter, which
``tests/conftest.py`` switches on (TRITON_INTERPRET=1 when no GPU is visible) before any test imports ``kernels``.
The ``setdefault`` below only covers running this file alone with an older conftest.

bf16/fp16: the kernels' dot products take fp32 operands (3xTF32 for fp32 inputs, one TF32 pass for half inputs on
the GPU), so the interpreter's bf16 ``tl.dot`` pitfall does not arise; the half cases test half loads/stores and fp32
statistics on the CPU (the interpreter computes every dot in fp32), and the tensor-core dots only on the GPU.

Sizes: the vision shapes (L = 3136 with head dim 8, L = 49 ... 784) and the causal form up to L = 3136, one or two
(batch, head) programs each: the interpreter costs ~2.5 ms per program per loop step.
"""

from __future__ import annotations

import os

if not __import__("torch").cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from kernel_checks import TOLERANCE, LargestTensor, assert_close_relative, launches  # noqa: E402

from attnzoo.kernels.flow import (  # noqa: E402
    FlowAttentionFunction,
    flow_attention,
    flow_attention_causal_naive,
    flow_attention_reference,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
VISION_EPS = 1e-6  # Flowformer_CV's extra eps after each flow sum


def make_inputs(batch, heads, n_queries, n_keys, head_dim, value_dim, dtype, packed=False, seed=0):
    """Random pre-feature-map q, k and values; ``packed`` gives the model's strided views of one qkv tensor."""
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


def run_both(case, dtype):
    batch, heads, n_queries, n_keys, head_dim, value_dim, causal, sum_eps, packed = case
    (q, k, v), leaves = make_inputs(batch, heads, n_queries, n_keys, head_dim, value_dim, dtype, packed)
    grad_out = torch.randn(batch, heads, n_queries, value_dim, generator=torch.Generator().manual_seed(1))
    grad_out = grad_out.to(device=DEVICE, dtype=dtype)
    results = []
    for fn in (
        lambda: FlowAttentionFunction.apply(q, k, v, causal, 1e-6, sum_eps),
        lambda: flow_attention_reference(q, k, v, causal=causal, sum_eps=sum_eps),
    ):
        out = fn()
        grads = torch.autograd.grad(out, leaves, grad_out)
        results.append((out.detach(), *grads))
    return results


# (batch, heads, L, S, head_dim, value_dim, causal, sum_eps, packed qkv views)
FP32_CASES = [
    (1, 2, 49, 49, 8, 8, False, VISION_EPS, True),  # Flowformer stage 4 length, stage 1 head dim, model layout
    (1, 1, 3136, 3136, 8, 8, False, VISION_EPS, True),  # Flowformer stage 1
    (2, 1, 784, 784, 16, 16, False, VISION_EPS, False),  # stage 2
    (1, 2, 196, 196, 32, 32, False, 0.0, False),  # stage 3
    (1, 1, 50, 50, 64, 64, False, 0.0, False),
    (1, 2, 67, 67, 1, 1, False, 0.0, False),
    (1, 2, 100, 70, 5, 7, False, 0.0, False),  # cross-attention, odd head dims
    (1, 2, 49, 49, 8, 8, True, 0.0, False),
    (1, 1, 3136, 3136, 16, 16, True, 0.0, False),
    (1, 2, 200, 200, 64, 64, True, 0.0, False),
    (1, 2, 33, 33, 1, 1, True, 0.0, False),
    (1, 1, 130, 130, 3, 20, True, VISION_EPS, False),
]
HALF_CASES = [
    (1, 2, 196, 196, 32, 32, False, VISION_EPS, True, torch.bfloat16),
    (1, 2, 130, 130, 16, 16, True, 0.0, False, torch.bfloat16),
    (1, 2, 100, 100, 8, 8, False, 0.0, False, torch.float16),
]


def _case_id(case):
    b, h, n_q, n_k, d, dv, causal, sum_eps, packed = case[:9]
    name = f"b{b}h{h}-L{n_q}" + (f"S{n_k}" if n_k != n_q else "") + f"-d{d}" + (f"dv{dv}" if dv != d else "")
    return name + ("-causal" if causal else "") + ("-visioneps" if sum_eps else "") + ("-packed" if packed else "")


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
        assert_close_relative(g, r, TOLERANCE[dtype], name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_sm80_launch_table_matches_reference(causal, dtype):
    """The A100's table (fp32 FMA dots in the backward at head dim 64, 16-wide value slices in the causal backward)
    is the same math: run in the interpreter with the launchers choosing for sm_80."""
    from attnzoo.kernels.flow import _launch
    from attnzoo.kernels.launch import compiling_for

    with compiling_for(80):
        chosen = _launch("causal_bwd" if causal else "bwd", dtype, 64, 64, torch.device("cpu"))
        assert chosen["FP32_DOT"] == "ieee" and chosen.get("CHUNK_DV", 16) == 16
        got, ref = run_both((1, 2, 150, 150, 64, 64, causal, VISION_EPS, False), dtype)
    for name, g, r in zip(("out", "grad q", "grad k", "grad v"), got, ref):
        assert g.dtype == dtype and torch.isfinite(g).all(), f"{name}: non-finite values"
        assert_close_relative(g, r, TOLERANCE[dtype], name)


@pytest.mark.parametrize("length", [1, 63, 64, 65, 200])
@pytest.mark.parametrize("chunk", [16, 64])
def test_chunked_causal_reference_is_the_official_cumsum(length, chunk):
    """The chunked causal product equals the official (L, d, dv) cumsum, forward and backward (float64)."""
    generator = torch.Generator().manual_seed(length)
    q, k, v = (torch.randn(2, 2, length, 6, generator=generator, dtype=torch.float64).requires_grad_() for _ in range(3))
    grad_out = torch.randn(2, 2, length, 6, generator=generator, dtype=torch.float64)
    ours = flow_attention_reference(q, k, v, causal=True, chunk=chunk)
    official = flow_attention_causal_naive(q, k, v)
    torch.testing.assert_close(ours, official, rtol=1e-12, atol=1e-12)
    for g_ours, g_official in zip(torch.autograd.grad(ours, (q, k, v), grad_out),
                                  torch.autograd.grad(official, (q, k, v), grad_out)):  # fmt: skip
        torch.testing.assert_close(g_ours, g_official, rtol=1e-10, atol=1e-12)


def test_noncausal_reference_is_the_dense_flow_matrix():
    """Linear-time product == the explicit (L x S) flow matrix diag(incoming * allocation) phi(Q) phi(K)^T diag(competition)."""
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 30, 5, generator=generator, dtype=torch.float64)
    k = torch.randn(1, 2, 40, 5, generator=generator, dtype=torch.float64)
    v = torch.randn(1, 2, 40, 3, generator=generator, dtype=torch.float64)
    eps = 1e-6
    fq, fk = q.sigmoid(), k.sigmoid()
    incoming = 1 / torch.einsum("bhld,bhd->bhl", fq + eps, fk.sum(2) + eps)
    outgoing = 1 / torch.einsum("bhsd,bhd->bhs", fk + eps, fq.sum(2) + eps)
    sink = torch.einsum("bhld,bhd->bhl", fq + eps, (fk * outgoing[..., None]).sum(2) + eps)
    source = torch.einsum("bhsd,bhd->bhs", fk + eps, (fq * incoming[..., None]).sum(2) + eps).clamp(-1, 1)
    allocation = torch.sigmoid(sink * 30 / 40)
    competition = torch.softmax(source, -1) * 40
    flow_matrix = (incoming * allocation)[..., None] * (fq @ fk.transpose(-1, -2)) * competition[..., None, :]
    torch.testing.assert_close(flow_attention_reference(q, k, v), flow_matrix @ v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("use_triton", [False, True], ids=["reference", "triton"])
def test_causal_output_ignores_the_future(use_triton):
    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 150, 8, generator=generator).to(DEVICE) for _ in range(3))
    cut = 97
    k2, v2, q2 = k.clone(), v.clone(), q.clone()
    for t in (q2, k2, v2):
        t[:, :, cut:] = torch.randn(t[:, :, cut:].shape, generator=generator).to(DEVICE) * 5
    if use_triton:
        out, out2 = (FlowAttentionFunction.apply(a, b, c, True, 1e-6, 0.0) for a, b, c in ((q, k, v), (q2, k2, v2)))
    else:
        out, out2 = flow_attention_reference(q, k, v, causal=True), flow_attention_reference(q2, k2, v2, causal=True)
    torch.testing.assert_close(out[:, :, :cut], out2[:, :, :cut], rtol=0, atol=0)
    assert not torch.allclose(out[:, :, cut:], out2[:, :, cut:])


def test_causal_reference_never_builds_the_cumulative_state():
    """No tensor of the forward or backward reaches L * d * dv elements (the official form builds exactly that)."""
    length, dim = 2048, 32
    q, k, v = (torch.randn(1, 1, length, dim, requires_grad=True) for _ in range(3))
    with LargestTensor() as watch:
        out = flow_attention_reference(q, k, v, causal=True)
        out.sum().backward()
    assert watch.largest_elements <= length * dim * dim // 8, f"largest tensor {watch.largest_elements} elements"
    with LargestTensor() as naive:
        flow_attention_causal_naive(q, k, v)
    assert naive.largest_elements >= length * dim * dim  # the check above can fail


def test_dispatch(monkeypatch):
    (q, k, v), _ = make_inputs(1, 2, 20, 20, 4, 4, torch.float32)
    # one op whatever the path (attnzoo::flow_forward); its kernel launches the Triton kernels or not
    assert "attnzoo_flow_forward" in type(flow_attention(q, k, v).grad_fn).__name__
    kernel_runs = lambda *inputs: launches(FlowAttentionFunction, lambda: flow_attention(*inputs))  # noqa: E731
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


def test_bad_inputs_raise_clear_errors(monkeypatch):
    q = torch.randn(1, 2, 10, 4)
    with pytest.raises(ValueError, match="as many queries as keys"):
        flow_attention(q, torch.randn(1, 2, 12, 4), torch.randn(1, 2, 12, 4), causal=True)
    with pytest.raises(ValueError, match="matching q"):
        flow_attention(q, torch.randn(1, 2, 10, 5), torch.randn(1, 2, 10, 4))
    with pytest.raises(ValueError, match="tokens of k"):
        flow_attention(q, q, torch.randn(1, 2, 9, 4))
    with pytest.raises(ValueError, match=r"\(batch, heads, tokens, head_dim\)"):
        flow_attention(q[0], q[0], q[0])
    with pytest.raises(ValueError, match="share a dtype"):
        flow_attention(q, q.double(), q)
    monkeypatch.setenv("ZOO_KERNELS", "triton")
    big = torch.randn(1, 1, 8, 96, device=DEVICE)
    with pytest.raises(ValueError, match="head dims up to 64"):
        flow_attention(big, big, big)
