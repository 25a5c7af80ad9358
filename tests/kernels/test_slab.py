"""SLAB's simplified linear attention: the plain-torch spec against an independent formulation, and the Triton
kernels against the spec.

Where the kernels run: on a CUDA machine (tools/gpu_check.sh) for real; elsewhere in Triton's CPU interpreter, which
``tests/conftest.py`` switches on (TRITON_INTERPRET=1 when no GPU is visible) before any test imports ``kernels``.
"""

from __future__ import annotations

import os

if not __import__("torch").cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from kernels.slab import (  # noqa: E402
    OFFICIAL_EPS,
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


def test_public_function_runs_the_reference(monkeypatch):
    q, k, v = relu_inputs(1, 2, 20, 20, 8, 8, dtype=torch.float32)
    monkeypatch.setenv("ZOO_KERNELS", "reference")
    torch.testing.assert_close(simplified_linear_attention(q, k, v), simplified_linear_attention_reference(q, k, v))


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
