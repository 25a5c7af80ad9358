"""TransNeXt's aggregated attention: the plain-torch spec against an independent formulation (shifted zero-padded
maps instead of unfold), and the Triton kernels against the spec, forward and backward.

Where the kernels run: on a CUDA machine (tools/gpu_check.sh) for real; elsewhere in Triton's CPU interpreter, which
``tests/conftest.py`` switches on before any test imports ``kernels`` (the ``setdefault`` covers running this file
alone). Sizes are tiny (the interpreter costs milliseconds per program step) but odd: maps that are not multiples of
the 64-pixel tile, windows reaching past every border, a window larger than the map, pooled keys over two blocks.
"""

from __future__ import annotations

import os

if not __import__("torch").cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from kernel_checks import TOLERANCE, LargestTensor, assert_close_relative, launches  # noqa: E402

from attnzoo.kernels.aggregated_attention import (  # noqa: E402
    AggregatedAttentionFunction,
    aggregated_attention,
    aggregated_attention_reference,
    head_sparse_aggregated_attention,
    length_scale,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def upstream_gradient(*shape):
    """A seeded float64 upstream gradient: not the global RNG, so a result does not depend on the tests run before."""
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(DEVICE)


NAMES = ("out", "grad q", "grad k_local", "grad v_local", "grad k_pool", "grad v_pool", "grad local_bias",
         "grad pool_bias", "grad local_weights")  # fmt: skip


def make_inputs(batch, heads, height, width, head_dim, value_dim, window_size, pool_len, dtype=torch.float64,
                local_weights=True, seed=0):  # fmt: skip
    """Inputs shaped as the module makes them: a scaled cosine query, l2-normalised keys, small biases."""
    gen = torch.Generator().manual_seed(seed)
    n = height * width

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    scale = length_scale(height, width, window_size, pool_len).double() / 0.24
    q = (F.normalize(randn(batch, heads, n, head_dim), dim=-1) + 0.02 * randn(heads, 1, head_dim)) * scale
    tensors = [
        q,
        F.normalize(randn(batch, heads, n, head_dim), dim=-1),
        randn(batch, heads, n, value_dim),
        F.normalize(randn(batch, heads, pool_len, head_dim), dim=-1),
        randn(batch, heads, pool_len, value_dim),
        0.5 * randn(heads, window_size * window_size),
        0.5 * randn(heads, n, pool_len),
        0.1 * randn(batch, heads, n, window_size * window_size) if local_weights else None,
    ]
    return [t.to(device=DEVICE, dtype=dtype) if t is not None else None for t in tensors]


def shifted_form(q, k_local, v_local, k_pool, v_pool, local_bias, pool_bias, local_weights, height, width, ws):
    """Independent of the reference's unfold: neighbour (dy, dx) read from a zero-padded map by slicing."""
    b, h, n, _ = q.shape
    half = ws // 2

    def padded(x):  # (B, h, N, c) -> (B, h, H + 2 half, W + 2 half, c)
        return F.pad(x.reshape(b, h, height, width, -1), (0, 0, half, half, half, half))

    kp, vp = padded(k_local), padded(v_local)
    inside = F.pad(torch.ones(height, width, dtype=torch.bool, device=q.device), (half, half, half, half))
    logits, values, weights = [], [], []
    for j in range(ws * ws):
        dy, dx = j // ws, j % ws  # offset + half
        k_j = kp[:, :, dy : dy + height, dx : dx + width].reshape(b, h, n, -1)
        ok = inside[dy : dy + height, dx : dx + width].reshape(n)
        logits.append(((q * k_j).sum(-1) + local_bias[:, j, None]).masked_fill(~ok, float("-inf")))
        values.append(vp[:, :, dy : dy + height, dx : dx + width].reshape(b, h, n, -1))
        weights.append(0 if local_weights is None else local_weights[..., j])
    pool_logits = q @ k_pool.transpose(-1, -2) + pool_bias
    probs = torch.cat([torch.stack(logits, -1), pool_logits], -1).softmax(-1)
    out = probs[..., ws * ws :] @ v_pool
    for j in range(ws * ws):
        out = out + (probs[..., j] + weights[j]).unsqueeze(-1) * values[j]
    return out


def run_with_grads(fn, inputs, height, width, ws, grad_out):
    leaves = [t.detach().requires_grad_() if t is not None else None for t in inputs]
    out = fn(*leaves, height, width, ws)
    present = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(out, present, grad_out.to(out.dtype))
    return [out, *grads]


# ----------------------------------------------------------------------------------------------------------------
# The spec
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", [(2, 2, 4, 5, 6, 6, 3, 4, True), (1, 3, 3, 7, 5, 4, 5, 9, False)], ids=["ws3-dyn", "ws5-plain"]
)
def test_reference_equals_shifted_map_form(case):
    b, h, height, width, d, dv, ws, p, lw = case
    inputs = make_inputs(b, h, height, width, d, dv, ws, p, local_weights=lw)
    grad_out = upstream_gradient(b, h, height * width, dv)
    got = run_with_grads(aggregated_attention_reference, inputs, height, width, ws, grad_out)
    want = run_with_grads(shifted_form, inputs, height, width, ws, grad_out)
    for name, g, w in zip(NAMES, got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10, msg=name)


def test_length_scale_is_the_official_buffer():
    """log(unfold(ones).sum + pool_len), as attention_native.get_seqlen_and_mask (and the CUDA avg_pool2d form)."""
    height, width, ws, pool = 5, 6, 3, 4
    counts = F.unfold(torch.ones(1, 1, height, width), ws, padding=ws // 2).sum(-2).squeeze().unsqueeze(-1)
    torch.testing.assert_close(length_scale(height, width, ws, pool), torch.log(counts + pool), rtol=0, atol=0)
    pooled = F.avg_pool2d(torch.ones(1, height, width) * ws**2, ws, stride=1, padding=ws // 2).reshape(-1, 1)
    torch.testing.assert_close(length_scale(height, width, ws, pool), torch.log(pooled + pool), rtol=0, atol=0)


def test_bad_inputs_name_the_problem():
    inputs = make_inputs(1, 2, 3, 4, 4, 4, 3, 2, dtype=torch.float32)
    with pytest.raises(ValueError, match="height \\* width"):
        aggregated_attention(*inputs, 4, 4, 3)
    with pytest.raises(ValueError, match="odd"):
        aggregated_attention(*inputs[:5], inputs[5].repeat(1, 2)[:, :4], *inputs[6:], 3, 4, 2)
    with pytest.raises(ValueError, match="pool_bias"):
        aggregated_attention(*inputs[:6], inputs[6][:, :, :1], inputs[7], 3, 4, 3)
    with pytest.raises(ValueError, match="share a dtype"):
        aggregated_attention(inputs[0].double(), *inputs[1:], 3, 4, 3)


# ----------------------------------------------------------------------------------------------------------------
# Triton kernels against the spec
# ----------------------------------------------------------------------------------------------------------------

# (batch, heads, H, W, head_dim, value_dim, window, pooled, local_weights)
KERNEL_CASES = [
    (1, 1, 9, 8, 24, 24, 3, 6, True),  # TransNeXt head dim 24, every border, 72 pixels: a full and a ragged tile
    (1, 1, 4, 3, 8, 5, 5, 40, False),  # window wider than the map, pooled keys over two 32-key blocks
]
HALF_CASES = [(1, 2, 5, 4, 16, 16, 3, 6, True, torch.bfloat16), (2, 1, 5, 4, 16, 16, 3, 6, True, torch.float16)]


def _case_id(case):
    b, h, height, width, d, dv, ws, p, lw = case
    return f"b{b}h{h}-{height}x{width}-d{d}dv{dv}-ws{ws}-P{p}" + ("-dyn" if lw else "")


def run_both(case, dtype, heads_last=False):
    b, h, height, width, d, dv, ws, p, lw = case
    inputs = make_inputs(b, h, height, width, d, dv, ws, p, dtype=dtype, local_weights=lw)
    if heads_last:  # the model's (B, N, h, d) layout seen as (B, h, N, d): non-contiguous
        inputs[:5] = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in inputs[:5]]
    grad_out = upstream_gradient(b, h, height * width, dv).to(dtype)
    got = run_with_grads(AggregatedAttentionFunction.apply, inputs, height, width, ws, grad_out)
    assert got[0].transpose(1, 2).is_contiguous(), "the output is (B, N, h, dv) in memory"
    exact = [t.double() if t is not None else None for t in inputs]
    ref = run_with_grads(aggregated_attention_reference, exact, height, width, ws, grad_out.double())
    return got, ref, lw


@pytest.mark.parametrize("case", KERNEL_CASES, ids=_case_id)
def test_triton_matches_reference_fp32(case):
    got, ref, lw = run_both(case, torch.float32, heads_last=case[-1])
    names = NAMES if lw else NAMES[:-1]
    for name, g, r in zip(names, got, ref):
        assert torch.isfinite(g).all(), f"{name}: non-finite values"
        assert_close_relative(g, r, TOLERANCE[torch.float32], name)


@pytest.mark.parametrize("target", [80, 100])
def test_per_target_launch_tables_match_reference_fp32(target):
    """The A100's and Blackwell's choices (fp32 FMA dots in the forward on sm_80, in the query backward on sm_100,
    where tensor-core operands spilled) are the same math: run in the interpreter with the launchers choosing for
    that target."""
    from attnzoo.kernels.aggregated_attention import _query_dots
    from attnzoo.kernels.launch import compiling_for

    kind = "fwd" if target == 80 else "bwd_query"
    with compiling_for(target):
        assert _query_dots(kind, torch.float32, False, torch.device("cpu"), 16)[0] == "ieee"
        got, ref, lw = run_both(KERNEL_CASES[0], torch.float32)
    for name, g, r in zip(NAMES, got, ref):
        assert torch.isfinite(g).all(), f"{name}: non-finite values"
        assert_close_relative(g, r, TOLERANCE[torch.float32], name)


@pytest.mark.parametrize("case", HALF_CASES, ids=lambda c: _case_id(c[:-1]) + "-" + str(c[-1]).split(".")[-1])
def test_triton_matches_reference_half(case):
    dtype = case[-1]
    got, ref, lw = run_both(case[:-1], dtype)
    for name, g, r in zip(NAMES, got, ref):
        assert g.dtype == dtype, name
        assert torch.isfinite(g).all(), f"{name}: non-finite values"
        assert_close_relative(g, r, TOLERANCE[dtype], name)


def test_triton_never_unfolds_the_windows():
    """Forward + backward allocate less than one unfolded copy of the keys (B, h, N, d, L) that the official native
    code builds; the reference (the official algorithm) does build it, so the check can fail."""
    b, h, height, width, d, ws, p = 1, 1, 6, 6, 16, 3, 4
    inputs = [t.requires_grad_() if t is not None else None
              for t in make_inputs(b, h, height, width, d, d, ws, p, dtype=torch.float32, local_weights=False)]  # fmt: skip
    unfolded_bytes = b * h * height * width * d * ws * ws * 4
    with LargestTensor() as watch:
        AggregatedAttentionFunction.apply(*inputs, height, width, ws).sum().backward()
    assert watch.largest_bytes < unfolded_bytes / 4, f"largest tensor {watch.largest_bytes} bytes"
    with LargestTensor() as official:
        aggregated_attention_reference(*inputs, height, width, ws)
    assert official.largest_bytes >= unfolded_bytes


def test_dispatch(monkeypatch):
    inputs = make_inputs(1, 1, 3, 3, 4, 4, 3, 2, dtype=torch.float32)
    inputs[0].requires_grad_()
    # one op whatever the path (attnzoo::aggregated_forward); its kernel launches the Triton kernels or not
    assert "attnzoo_aggregated_forward" in type(aggregated_attention(*inputs, 3, 3, 3).grad_fn).__name__
    kernel_runs = lambda tensors: launches(  # noqa: E731
        AggregatedAttentionFunction, lambda: aggregated_attention(*tensors, 3, 3, 3)
    )
    monkeypatch.setenv("ZOO_KERNELS", "reference")
    assert kernel_runs(inputs) == 0
    monkeypatch.setenv("ZOO_KERNELS", "triton")
    assert kernel_runs(inputs) == 1
    double = [t.double() for t in inputs]  # float64 stays on the exact reference
    assert kernel_runs(double) == 0
    monkeypatch.delenv("ZOO_KERNELS")
    assert kernel_runs(inputs) == (1 if DEVICE == "cuda" else 0)


# ----------------------------------------------------------------------------------------------------------------
# Head-sparse (MoH) aggregated attention
# ----------------------------------------------------------------------------------------------------------------


def _routing(batch, heads, tokens, used, dtype, seed=1):
    """Each token's top-``used`` heads of random scores; batch element 0 never picks the last head (an empty head)."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, tokens, heads, generator=gen)
    scores[0, :, heads - 1] = float("-inf")
    chosen = scores.topk(used, dim=-1).indices
    gates = torch.rand(batch, tokens, used, generator=gen, dtype=torch.float64)
    return chosen.to(DEVICE), gates.to(device=DEVICE, dtype=dtype)


@pytest.mark.parametrize(
    "case",
    [(2, 3, 5, 7, 2, torch.float32), (1, 2, 4, 5, 1, torch.bfloat16)],
    ids=["b2h3-5x7-K2-fp32", "b1h2-4x5-K1-bf16"],
)
def test_head_sparse_triton_matches_dense_then_gate(monkeypatch, case):
    """The kernel on the selected pairs only, gated, against the official form: every head, then the gates.
    Ragged tiles, every border, K of h heads per token, and in batch element 0 a head that no token picked."""
    b, h, height, width, used, dtype = case
    d, ws, p = 8, 3, 6
    inputs = make_inputs(b, h, height, width, d, d, ws, p, dtype=dtype)
    chosen, gates = _routing(b, h, height * width, used, dtype)
    grad_out = upstream_gradient(b, height * width, h, d)

    def run(fn, tensors, gate):
        leaves = [t.detach().requires_grad_() for t in tensors] + [gate.detach().requires_grad_()]
        out = fn(*leaves[:8], height, width, ws, chosen, leaves[8])
        return [out, *torch.autograd.grad(out, leaves, grad_out.to(out.dtype))]

    def official(*args):
        *core, heads, gate = args
        full = aggregated_attention_reference(*core)
        masked = torch.zeros(b, height * width, h, dtype=gate.dtype, device=DEVICE).scatter(2, heads, gate)
        return torch.einsum("bne,bned->bned", masked, full.transpose(1, 2))

    monkeypatch.setenv("ZOO_KERNELS", "triton")
    got = run(head_sparse_aggregated_attention, inputs, gates)
    ref = run(official, [t.double() for t in inputs], gates.double())
    for name, g, r in zip((*NAMES, "grad gates"), got, ref):
        assert g.dtype == dtype, name
        assert torch.isfinite(g).all(), f"{name}: non-finite values"
        assert_close_relative(g, r, TOLERANCE[dtype], name)


def test_head_sparse_kernel_leaves_unselected_pairs_zero():
    from attnzoo.kernels.moh import _slots

    b, h, height, width = 1, 3, 4, 5
    inputs = make_inputs(b, h, height, width, 4, 4, 3, 2, dtype=torch.float32)
    chosen, _ = _routing(b, h, height * width, 1, torch.float32)
    selected = torch.zeros(b, height * width, h, dtype=torch.bool, device=DEVICE).scatter(2, chosen, True)
    out = AggregatedAttentionFunction.apply(*inputs, height, width, 3, *_slots(chosen, h, height * width))
    rows = out.transpose(1, 2)  # (B, N, h, dv)
    assert (rows[~selected] == 0).all() and (rows[selected].abs().sum(-1) > 0).all()
    torch.testing.assert_close(
        rows[selected], aggregated_attention_reference(*inputs, height, width, 3).transpose(1, 2)[selected]
    )


def test_head_sparse_reference_path_is_the_official_form(monkeypatch):
    """ZOO_KERNELS=reference (the CPU default; dense at this size): every head, then the official gate einsum, equal
    in float64 to rounding (the CPU path is the shifted-view form, not the unfold)."""
    monkeypatch.setenv("ZOO_KERNELS", "reference")
    b, h, height, width = 2, 3, 3, 4
    inputs = make_inputs(b, h, height, width, 4, 4, 3, 2)
    chosen, gates = _routing(b, h, height * width, 2, torch.float64)
    masked = torch.zeros(b, height * width, h, dtype=torch.float64, device=DEVICE).scatter(2, chosen, gates)
    full = aggregated_attention_reference(*inputs, height, width, 3).transpose(1, 2)
    got = head_sparse_aggregated_attention(*inputs, height, width, 3, chosen, gates)
    torch.testing.assert_close(got, torch.einsum("bne,bned->bned", masked, full), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="heads must be"):
        head_sparse_aggregated_attention(*inputs, height, width, 3, chosen[0], gates[0])
