"""The aggregated attention's CPU path (:func:`aggregated_attention_cpu`: shifted views of the padded key / value
maps, its own backward) against the official unfold spec, in float64, forward and every gradient; that it never
builds the unfolded windows; that the dispatcher's non-Triton branch takes it; and the head-sparse (MoH) CPU path.

Maps are odd and not square, windows reach past every border (one larger than the map), and the pooled keys are
attended in several query blocks (``CPU_CHUNK_LOGITS`` made small), so every branch of the blocked loops runs.
"""

from __future__ import annotations

import pytest
import torch
from kernel_checks import TOLERANCE, LargestTensor, assert_close_relative
from test_aggregated_attention import NAMES, _routing, make_inputs, run_with_grads, upstream_gradient

from attnzoo.kernels import aggregated_attention as agg
from attnzoo.kernels.aggregated_attention import (
    aggregated_attention,
    aggregated_attention_cpu,
    aggregated_attention_reference,
)

CASES = {
    # batch, heads, height, width, head dim, value dim, window, pooled keys, local weights
    "b2h3-5x7-ws3-dyn": (2, 3, 5, 7, 6, 4, 3, 5, True),
    "b1h2-7x3-ws5-plain": (1, 2, 7, 3, 5, 7, 5, 9, False),
    "b1h1-3x5-ws5-wider-than-map": (1, 1, 3, 5, 4, 4, 5, 2, True),
    "b1h2-9x5-ws1": (1, 2, 9, 5, 3, 3, 1, 3, True),
}


def _on_cpu(inputs):
    return [t.cpu() if t is not None else None for t in inputs]


@pytest.mark.parametrize("blocks", ["one-block", "many-blocks"])
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_cpu_path_equals_the_unfold_spec_float64(monkeypatch, case, blocks):
    b, h, height, width, d, dv, ws, p, lw = case
    if blocks == "many-blocks":  # a few query rows per block, the last one ragged
        monkeypatch.setattr(agg, "CPU_CHUNK_LOGITS", b * h * p * 4)
    inputs = _on_cpu(make_inputs(b, h, height, width, d, dv, ws, p, local_weights=lw))
    grad_out = upstream_gradient(b, h, height * width, dv).cpu()
    got = run_with_grads(aggregated_attention_cpu, inputs, height, width, ws, grad_out)
    want = run_with_grads(aggregated_attention_reference, inputs, height, width, ws, grad_out)
    assert len(got) == len(want) == (9 if lw else 8)
    for name, g, w in zip(NAMES, got, want):
        assert g.dtype == torch.float64, name
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_path_low_precision(dtype):
    """float32 computes in float32; bfloat16 is upcast inside and returned (and differentiated) in bfloat16."""
    b, h, height, width, d, dv, ws, p, _ = CASES["b2h3-5x7-ws3-dyn"]
    inputs = _on_cpu(make_inputs(b, h, height, width, d, dv, ws, p))
    grad_out = upstream_gradient(b, h, height * width, dv).cpu()
    want = run_with_grads(aggregated_attention_reference, inputs, height, width, ws, grad_out)
    low = [t.to(dtype) for t in inputs]
    got = run_with_grads(aggregated_attention_cpu, low, height, width, ws, grad_out)
    for name, g, w in zip(NAMES, got, want):
        assert g.dtype == dtype, name
        assert_close_relative(g, w, TOLERANCE[dtype], name)


def test_cpu_path_never_unfolds_the_windows():
    """Forward + backward allocate nothing as large as one unfolded copy of the keys (B, h, N, d, L), nor one window
    entry per pixel for all L entries at once; the spec does build the unfolded copy, so the check can fail."""
    b, h, height, width, d, ws, p = 1, 2, 9, 11, 16, 3, 4
    inputs = [t.cpu().float().requires_grad_() if t is not None else None
              for t in make_inputs(b, h, height, width, d, d, ws, p)]  # fmt: skip
    unfolded_bytes = b * h * height * width * d * ws * ws * 4
    with LargestTensor() as watch:
        aggregated_attention_cpu(*inputs, height, width, ws).sum().backward()
    assert watch.largest_bytes < unfolded_bytes / 4, f"largest tensor {watch.largest_bytes} bytes"
    with LargestTensor() as official:
        aggregated_attention_reference(*inputs, height, width, ws)
    assert official.largest_bytes >= unfolded_bytes


def test_dispatcher_non_triton_branch_takes_the_cpu_path(monkeypatch):
    """On the CPU (default and ZOO_KERNELS=reference) the public op runs the shifted-view forward and backward, and
    nothing on the way calls unfold (made to raise here); its results are the spec's in float64."""
    b, h, height, width, d, dv, ws, p, _ = CASES["b2h3-5x7-ws3-dyn"]
    inputs = _on_cpu(make_inputs(b, h, height, width, d, dv, ws, p))
    grad_out = upstream_gradient(b, h, height * width, dv).cpu()
    want = run_with_grads(aggregated_attention_reference, inputs, height, width, ws, grad_out)
    calls = []
    shifted = agg.AggregatedAttentionShiftedFunction
    forward, backward = shifted.forward, shifted.backward
    monkeypatch.setattr(shifted, "forward", staticmethod(lambda *a: calls.append("forward") or forward(*a)))
    monkeypatch.setattr(shifted, "backward", staticmethod(lambda *a: calls.append("backward") or backward(*a)))

    def no_unfold(*args, **kwargs):
        raise AssertionError("unfold called")

    monkeypatch.setattr(torch.nn.functional, "unfold", no_unfold)
    for forced in (None, "reference"):
        if forced:
            monkeypatch.setenv("ZOO_KERNELS", forced)
        else:
            monkeypatch.delenv("ZOO_KERNELS", raising=False)
        calls.clear()
        got = run_with_grads(aggregated_attention, inputs, height, width, ws, grad_out)
        assert calls == ["forward", "backward"], forced
        for name, g, w in zip(NAMES, got, want):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=name)
    with pytest.raises(ValueError, match="height \\* width"):
        aggregated_attention_cpu(*inputs, 4, 4, 3)


def test_cpu_path_needs_only_the_gradients_asked_for():
    """A frozen input (here every input but v_local) still gets a correct v_local gradient."""
    b, h, height, width, d, dv, ws, p, _ = CASES["b2h3-5x7-ws3-dyn"]
    inputs = _on_cpu(make_inputs(b, h, height, width, d, dv, ws, p))
    grad_out = upstream_gradient(b, h, height * width, dv).cpu()
    v_cpu = inputs[2].clone().requires_grad_()
    v_ref = inputs[2].clone().requires_grad_()
    args = inputs[:2], inputs[3:]
    aggregated_attention_cpu(*args[0], v_cpu, *args[1], height, width, ws).backward(grad_out)
    aggregated_attention_reference(*args[0], v_ref, *args[1], height, width, ws).backward(grad_out)
    torch.testing.assert_close(v_cpu.grad, v_ref.grad, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Head-sparse (MoH) CPU paths: the gathered routed pairs where cheaper, the dense pass with the gates otherwise
# ----------------------------------------------------------------------------------------------------------------


def _official_gated(b, h, n, heads, gate, *core):
    full = aggregated_attention_reference(*core)
    masked = torch.zeros(b, n, h, dtype=gate.dtype).scatter(2, heads, gate)
    return torch.einsum("bne,bned->bned", masked, full.transpose(1, 2))


@pytest.mark.parametrize("path", ["gathered", "gathered-many-groups", "dense"])
def test_head_sparse_cpu_path_equals_the_official_form_float64(monkeypatch, path):
    """Every output and gradient (gates included) against every head then the official gates, in float64; in batch
    element 0 one head is picked by no token. ``gathered``: the routed pairs only (thresholds lowered so this small
    map takes that path); ``-many-groups``: one head per group and step; ``dense``: the shape rule's other choice."""
    b, h, height, width, d, ws, p, used = 2, 4, 5, 7, 6, 3, 5, 2
    if path.startswith("gathered"):
        monkeypatch.setattr(agg, "SPARSE_MIN_POOLED_LOGITS", 0)
        monkeypatch.setattr(agg, "SPARSE_MAX_ROW_FRACTION", 1.0)
    if path == "gathered-many-groups":
        monkeypatch.setattr(agg, "CPU_CHUNK_LOGITS", 1)
    inputs = _on_cpu(make_inputs(b, h, height, width, d, d, ws, p))
    chosen, gates = _routing(b, h, height * width, used, torch.float64)
    routes = agg._aggregated_routes(chosen.cpu(), h, height * width, p, torch.float64)
    assert (routes is None) == (path == "dense")
    if path == "gathered-many-groups":
        assert all(len(heads) == 1 for heads, _ in routes.groups)
    grad_out = upstream_gradient(b, height * width, h, d).cpu()

    def run(fn):
        leaves = [t.detach().requires_grad_() for t in inputs] + [gates.cpu().detach().requires_grad_()]
        out = fn(*leaves[:8], height, width, ws, chosen.cpu(), leaves[8])
        return [out, *torch.autograd.grad(out, leaves, grad_out)]

    got = run(agg.head_sparse_aggregated_attention_cpu)
    want = run(lambda *a: _official_gated(b, h, height * width, a[11], a[12], *a[:11]))
    for name, g, w in zip((*NAMES, "grad gates"), got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=name)
    selected = torch.zeros(b, height * width, h, dtype=torch.bool).scatter(2, chosen.cpu(), True)
    assert (got[0][~selected] == 0).all()


def test_head_sparse_cpu_path_chooses_by_shape_and_load():
    """Small maps and heavily used heads stay dense; a large map whose tokens use half the heads is gathered."""
    gen = torch.Generator().manual_seed(0)

    def routing(b, n, h, used):
        return torch.rand(b, n, h, generator=gen).topk(used, dim=-1).indices

    assert agg._aggregated_routes(routing(1, 14 * 14, 12, 6), 12, 14 * 14, 49, torch.float32) is None  # too small
    big = 32 * 32
    assert agg._aggregated_routes(routing(1, big, 12, 12), 12, big, 256, torch.float32) is None  # every head
    routes = agg._aggregated_routes(routing(1, big, 12, 6), 12, big, 256, torch.float32)
    assert routes is not None and sorted(torch.cat([heads for heads, _ in routes.groups]).tolist()) == list(range(12))


def test_moh_full_attention_cpu_path_chooses_by_shape(monkeypatch):
    """attnzoo.kernels.moh's CPU path: dense-then-gate on small maps, the gathered pairs on large ones with few
    heads per token; both equal the official form."""
    from attnzoo.kernels import moh

    calls = []
    gather = moh.head_sparse_attention_gather
    monkeypatch.setattr(moh, "head_sparse_attention_gather", lambda *a: calls.append(a[0].shape) or gather(*a))
    gen = torch.Generator().manual_seed(2)
    for b, h, n, used, gathered in ((2, 6, 49, 3, False), (1, 16, 256, 8, True), (1, 16, 256, 15, False)):
        q, k, v = (torch.randn(b, h, n, 8, generator=gen, dtype=torch.float64) for _ in range(3))
        heads = torch.rand(b, n, h, generator=gen).topk(used, dim=-1).indices
        gates = torch.rand(b, n, used, generator=gen, dtype=torch.float64)
        bias = torch.randn(h, n, n, generator=gen, dtype=torch.float64)
        calls.clear()
        got = moh.head_sparse_attention(q, k, v, heads, gates, bias, 0.5)
        assert bool(calls) == gathered, (b, h, n, used)
        want = moh.head_sparse_attention_reference(q, k, v, heads, gates, bias, 0.5)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
