"""Head-sparse MoH attention: the dense-then-mask spec against the official gate arithmetic, the gathered CPU path
and the Triton kernels against the spec (forward and backward), and proof that both sparse paths do only the
selected work.

Where the kernels run: on a CUDA machine (tools/gpu_check.sh) for real; elsewhere in Triton's CPU interpreter
(``tests/conftest.py``; the ``setdefault`` covers running this file alone). Sizes are tiny and odd: token counts
that are not multiples of the 64-row tile, fewer keys than queries, heads that no token of a batch element picked.
"""

from __future__ import annotations

import os

if not __import__("torch").cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from kernel_checks import TOLERANCE, LargestTensor, assert_close_relative, launches  # noqa: E402

from attnzoo.kernels.moh import (  # noqa: E402
    HeadSparseAttentionFunction,
    dense_gates,
    head_sparse_attention,
    head_sparse_attention_gather,
    head_sparse_attention_reference,
    head_sparse_attention_triton,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def upstream_gradient(*shape):
    """A seeded float64 upstream gradient: not the global RNG, so a result does not depend on the tests run before."""
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(DEVICE)


def official_router(x_tokens, wg, wg_0, wg_1, shared, routed, batch, tokens):
    """The official MoH gate arithmetic (MoH-ViT/attention.py), from (B*N, C) tokens: the (B, N, h) masked gates
    and, for this op, the heads used (shared first, then the top-k routed) and their gates."""
    gates = F.softmax(x_tokens @ wg.T, dim=1)
    _, top = torch.topk(gates, k=routed, dim=1)
    mask = F.one_hot(top, num_classes=gates.shape[1]).sum(dim=1)
    routed_gates = gates * mask
    routed_gates = routed_gates / routed_gates.sum(dim=1, keepdim=True).clamp(min=torch.finfo(gates.dtype).eps)
    routed_gates = routed_gates.reshape(batch, tokens, -1) * routed
    shared_gates = F.softmax(x_tokens @ wg_1.T, dim=1).reshape(batch, tokens, -1) * shared
    weight_0 = F.softmax(x_tokens @ wg_0.T, dim=1).reshape(batch, tokens, 2) * 2
    masked = torch.cat([weight_0[:, :, :1] * shared_gates, weight_0[:, :, 1:] * routed_gates], dim=2)
    heads = torch.cat([torch.arange(shared).expand(batch, tokens, shared), shared + top.reshape(batch, tokens, -1)], 2)
    return masked, heads


def make_inputs(batch, heads, n_queries, n_keys, head_dim, value_dim, shared, routed, bias=True,
                dtype=torch.float64, seed=0):  # fmt: skip
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    x = randn(batch * n_queries, 8)
    masked, used = official_router(x, randn(heads - shared, 8), randn(2, 8), randn(max(shared, 1), 8), shared, routed,
                                   batch, n_queries)  # fmt: skip
    q, k = randn(batch, heads, n_queries, head_dim), randn(batch, heads, n_keys, head_dim)
    v = randn(batch, heads, n_keys, value_dim)
    tensors = [q * 2, k, v, masked.gather(2, used), randn(heads, n_queries, n_keys) if bias else None]
    tensors = [t.to(device=DEVICE, dtype=dtype) if t is not None else None for t in tensors]
    return tensors[:3], used.to(DEVICE), tensors[3], tensors[4], masked.to(device=DEVICE, dtype=dtype)


def run_with_grads(fn, qkv, heads, gates, bias, scale, grad_out):
    leaves = [t.detach().requires_grad_() for t in qkv] + [gates.detach().requires_grad_()]
    bias_leaf = bias.detach().requires_grad_() if bias is not None else None
    out = fn(*leaves[:3], heads, leaves[3], bias_leaf, scale)
    wrt = leaves + ([bias_leaf] if bias_leaf is not None else [])
    return [out, *torch.autograd.grad(out, wrt, grad_out.to(out.dtype))]


NAMES = ("out", "grad q", "grad k", "grad v", "grad gates", "grad bias")


# ----------------------------------------------------------------------------------------------------------------
# The spec and the gathered CPU path
# ----------------------------------------------------------------------------------------------------------------


def test_reference_is_the_official_gated_combination():
    """dense_gates rebuilds the official masked gates; the output is their einsum with every head's attention."""
    (q, k, v), used, gates, bias, masked = make_inputs(2, 6, 9, 9, 4, 4, shared=2, routed=2)
    torch.testing.assert_close(dense_gates(used, gates, 6), masked, rtol=0, atol=0)
    attn = ((q * 0.5) @ k.transpose(-1, -2) + bias).softmax(-1) @ v
    official = torch.einsum("bne,bned->bned", masked, attn.transpose(1, 2))
    torch.testing.assert_close(head_sparse_attention_reference(q, k, v, used, gates, bias, 0.5), official)


@pytest.mark.parametrize("shared,routed", [(1, 1), (2, 3)], ids=["s1r1", "s2r3"])
def test_gather_path_equals_reference(shared, routed):
    """Forward and every gradient (q, k, v, gates, bias); in s1r1 each of the 5 tokens picks 1 of 3 routed heads,
    so heads with few or no tokens occur."""
    heads = shared + 3
    (q, k, v), used, gates, bias, _ = make_inputs(2, heads, 5, 7, 4, 3, shared=shared, routed=routed)
    grad_out = upstream_gradient(2, 5, heads, 3)
    got = run_with_grads(head_sparse_attention_gather, (q, k, v), used, gates, bias, 0.7, grad_out)
    want = run_with_grads(head_sparse_attention_reference, (q, k, v), used, gates, bias, 0.7, grad_out)
    for name, g, w in zip(NAMES, got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12, msg=name)


def test_gather_path_computes_only_the_selected_pairs():
    """One routed head of four per token: no logits tensor larger than (B, h, most tokens on one head, M), under
    half the (B, h, N, M) that the dense-then-mask form builds (checked too, so the bound can fail)."""
    batch, heads, tokens, keys = 1, 4, 64, 256
    (q, k, v), used, gates, _, _ = make_inputs(batch, heads, tokens, keys, 2, 2, shared=1, routed=1, bias=False)
    used, gates = used[..., 1:], gates[..., 1:]  # routed heads only: 64 tokens spread over 3 heads
    most = F.one_hot(used[..., 0], heads).sum(1).max().item()
    with LargestTensor() as sparse:
        head_sparse_attention_gather(q, k, v, used, gates)
    assert sparse.largest_elements <= batch * heads * most * keys < batch * heads * tokens * keys / 2
    with LargestTensor() as dense:
        head_sparse_attention_reference(q, k, v, used, gates)
    assert dense.largest_elements >= batch * heads * tokens * keys


def test_head_groups_pad_little():
    """Heads of similar load share one padded batch; a much lighter head gets its own; unused heads none."""
    from attnzoo.kernels.moh import _head_groups

    assert _head_groups([40, 38, 37, 10, 0, 39]) == [([0, 5, 1, 2], 40), ([3], 10)]


def test_bad_inputs_name_the_problem():
    (q, k, v), used, gates, bias, _ = make_inputs(1, 3, 4, 5, 4, 4, shared=1, routed=1, dtype=torch.float32)
    with pytest.raises(ValueError, match="heads must be"):
        head_sparse_attention(q, k, v, used[0], gates[0])
    with pytest.raises(ValueError, match="integer head indices"):
        head_sparse_attention(q, k, v, used.float(), gates)
    with pytest.raises(ValueError, match="gates must match"):
        head_sparse_attention(q, k, v, used, gates[..., :1])
    with pytest.raises(ValueError, match="bias must be"):
        head_sparse_attention(q, k, v, used, gates, bias[:, :2])
    with pytest.raises(ValueError, match="share a dtype"):
        head_sparse_attention(q.double(), k, v, used, gates)
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        head_sparse_attention_gather(q, k, v, used + 3, gates)
    with pytest.raises(ValueError, match="distinct"):
        head_sparse_attention_gather(q, k, v, used[..., :1].expand(-1, -1, 2), gates)


# ----------------------------------------------------------------------------------------------------------------
# Triton kernels against the spec
# ----------------------------------------------------------------------------------------------------------------

# (batch, heads, N, M, head_dim, value_dim, shared, routed, bias, scale)
KERNEL_CASES = [
    (2, 4, 70, 49, 24, 24, 1, 2, True, 1.0),  # TransNeXt stage 4 layout (CPB bias, scaled q); 70 rows: 64 + ragged
    (1, 3, 37, 70, 8, 5, 1, 1, False, 0.35),  # a ViT-style scale, more keys than one 64-key block, odd dims
]
HALF_CASES = [(1, 3, 20, 23, 16, 16, 1, 1, True, 1.0, torch.bfloat16), (1, 3, 20, 23, 16, 16, 1, 1, True, 1.0,
                                                                         torch.float16)]  # fmt: skip


def _case_id(case):
    b, h, n, m, d, dv, s, r, bias, scale = case[:10]
    return f"b{b}h{h}-N{n}M{m}-d{d}dv{dv}-s{s}r{r}" + ("-bias" if bias else "") + f"-x{scale}"


def run_both(case, dtype):
    b, h, n, m, d, dv, shared, routed, has_bias, scale = case
    (q, k, v), used, gates, bias, _ = make_inputs(b, h, n, m, d, dv, shared, routed, has_bias, dtype=dtype)
    gen = torch.Generator().manual_seed(1)  # not the global RNG: the result must not depend on the tests run before
    grad_out = torch.randn(b, n, h, dv, dtype=torch.float64, generator=gen).to(device=DEVICE, dtype=dtype)

    got = run_with_grads(head_sparse_attention_triton, (q, k, v), used, gates, bias, scale, grad_out)
    exact = [t.double() if t is not None else None for t in (q, k, v, gates, bias)]
    ref = run_with_grads(head_sparse_attention_reference, exact[:3], used, exact[3], exact[4], scale, grad_out.double())
    return got, ref


@pytest.mark.parametrize("case", KERNEL_CASES, ids=_case_id)
def test_triton_matches_reference_fp32(case):
    got, ref = run_both(case, torch.float32)
    for name, g, r in zip(NAMES, got, ref):
        assert torch.isfinite(g).all(), f"{name}: non-finite values"
        assert_close_relative(g, r, TOLERANCE[torch.float32], name)


@pytest.mark.parametrize("case", HALF_CASES, ids=lambda c: _case_id(c) + "-" + str(c[-1]).split(".")[-1])
def test_triton_matches_reference_half(case):
    dtype = case[-1]
    got, ref = run_both(case[:-1], dtype)
    for name, g, r in zip(NAMES, got, ref):
        assert g.dtype == dtype, name
        assert torch.isfinite(g).all(), f"{name}: non-finite values"
        # bf16 keeps 8 mantissa bits to fp16's 11: over 25 random upstream gradients the worst bf16 gradient error
        # was 3.5e-2 of the largest magnitude (fp16: 2.5e-3, inside its 4e-3), so the shared 2e-2 is too tight here
        tol = 5e-2 if dtype == torch.bfloat16 and name.startswith("grad") else TOLERANCE[dtype]
        assert_close_relative(g, r, tol, name)


def test_triton_leaves_unselected_pairs_zero():
    """The kernel writes only selected (token, head) rows: the rest of its ungated output and of dq stay zero."""
    from attnzoo.kernels.moh import _slots

    (q, k, v), used, _, _, _ = make_inputs(1, 4, 20, 9, 4, 4, shared=1, routed=1, bias=False, dtype=torch.float32)
    chosen = torch.zeros(1, 20, 4, dtype=torch.bool, device=DEVICE).scatter(2, used, True)
    q.requires_grad_()
    out = HeadSparseAttentionFunction.apply(q, k, v, *_slots(used, 4, 20), None, 1.0)
    assert (out[~chosen] == 0).all() and (out[chosen].abs().sum(-1) > 0).all()
    (dq,) = torch.autograd.grad(out.sum(), q)
    assert (dq.transpose(1, 2)[~chosen] == 0).all()


def test_dispatch(monkeypatch):
    (q, k, v), used, gates, _, _ = make_inputs(1, 2, 5, 5, 4, 4, shared=1, routed=1, bias=False, dtype=torch.float32)
    q.requires_grad_()

    def grad_fn_chain(out):
        names, stack = [], [out.grad_fn]
        while stack:
            fn = stack.pop()
            if fn is not None:
                names.append(type(fn).__name__)
                stack.extend(next_fn for next_fn, _ in fn.next_functions)
        return " ".join(names)

    # one op whatever the path (attnzoo::head_sparse_forward); its kernel launches the Triton kernels or not
    outputs = []
    kernel_runs = lambda *tensors: launches(  # noqa: E731
        HeadSparseAttentionFunction, lambda: outputs.append(head_sparse_attention(*tensors))
    )
    monkeypatch.setenv("ZOO_KERNELS", "reference")
    assert kernel_runs(q, k, v, used, gates) == 0
    assert "attnzoo_head_sparse_forward" in grad_fn_chain(outputs[-1])
    monkeypatch.setenv("ZOO_KERNELS", "triton")
    assert kernel_runs(q, k, v, used, gates) == 1
    torch.testing.assert_close(outputs[-1], head_sparse_attention_reference(q, k, v, used, gates))
    assert "attnzoo_head_sparse_forward" in grad_fn_chain(outputs[-1])
    # float64: the exact CPU path
    assert kernel_runs(q.double(), k.double(), v.double(), used, gates.double()) == 0
