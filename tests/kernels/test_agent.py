"""Agent attention: the fused path (two SDPA calls) against the plain-torch reference, forward and every gradient.

The fused path is SDPA-based (see the docstring of ``kernels/agent.py`` for why), so it runs on the CPU as it is:
no Triton, no interpreter. On a CUDA machine (tools/gpu_check.sh) the same tests run on the GPU, where SDPA picks its
memory-efficient kernel. Low-precision criterion (flash-attention's): the error of a path against a float64 reference
must stay within twice the error of the same-dtype torch reference plus a floor.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnzoo.kernels import agent as agent_op
from attnzoo.kernels.agent import agent_attention, agent_attention_fused, agent_attention_reference, pool_agent_tokens

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LOW_PRECISION_FLOOR = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
NAMES = ("out", "dq", "dk", "dv", "dagents", "dagent_bias", "dtoken_bias")


def make_inputs(batch, heads, hw, agent_shape, head_dim, dtype, *, key_hw=None, seed=0, bias_scale=1.0):
    """Random q/k/v, agents pooled from q (as the models do) and (1, h, ., .) biases that broadcast over batch."""
    generator = torch.Generator().manual_seed(seed)
    key_hw = key_hw or hw
    n, nk = hw[0] * hw[1], key_hw[0] * key_hw[1]
    n_agents = agent_shape[0] * agent_shape[1]
    q = torch.randn(batch, heads, n, head_dim, generator=generator)
    k = torch.randn(batch, heads, nk, head_dim, generator=generator)
    v = torch.randn(batch, heads, nk, head_dim, generator=generator)
    agents = pool_agent_tokens(q, hw, agent_shape) + 0.5 * torch.randn(batch, heads, n_agents, head_dim,
                                                                        generator=generator)
    agent_bias = bias_scale * torch.randn(1, heads, n_agents, nk, generator=generator)
    token_bias = bias_scale * torch.randn(1, heads, n, n_agents, generator=generator)
    to = dict(device=DEVICE, dtype=dtype)
    return tuple(t.to(**to) for t in (q, k, v, agents, agent_bias, token_bias))


def run_with_grads(fn, inputs, scale, grad_out):
    leaves = tuple(t.detach().clone().requires_grad_() for t in inputs)
    out = fn(*leaves, scale)
    grads = torch.autograd.grad(out, leaves, grad_out.to(out.dtype))
    return (out, *grads)


# (batch, heads, token grid, agent grid, head_dim): agent counts 9/16/49/144, heads 1..12, odd H != W grids,
# a spatially reduced key grid (Agent-PVT with sr_ratio > 1) and agents outnumbering nothing in particular.
CASES = [
    (2, 1, (7, 5), (3, 3), 16, {}),
    (1, 2, (9, 6), (4, 4), 32, {}),
    (2, 3, (11, 13), (7, 7), 32, {}),
    (1, 5, (13, 11), (12, 12), 16, {}),
    (1, 12, (5, 9), (3, 3), 8, {}),
    (2, 4, (14, 10), (7, 7), 64, {"key_hw": (7, 5)}),
    (1, 8, (15, 17), (4, 4), 24, {}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"b{c[0]}h{c[1]}hw{c[2][0]}x{c[2][1]}a{c[3][0] ** 2}d{c[4]}")
def test_fused_matches_reference_fp32(case):
    batch, heads, hw, agent_shape, head_dim, extra = case
    inputs = make_inputs(batch, heads, hw, agent_shape, head_dim, torch.float32, **extra)
    scale = head_dim ** -0.5
    grad_out = torch.randn_like(inputs[0])
    ref = run_with_grads(agent_attention_reference, inputs, scale, grad_out)
    fused = run_with_grads(agent_attention_fused, inputs, scale, grad_out)
    for name, a, b in zip(NAMES, fused, ref):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=2e-4, atol=2e-5, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES[:5], ids=lambda c: f"h{c[1]}hw{c[2][0]}x{c[2][1]}a{c[3][0] ** 2}")
def test_fused_low_precision_within_reference_error(case, dtype):
    """fp16/bf16: the fused path is at most 2x as far from float64 as the same-dtype reference (plus a floor)."""
    batch, heads, hw, agent_shape, head_dim, extra = case
    inputs = make_inputs(batch, heads, hw, agent_shape, head_dim, dtype, **extra)
    scale = head_dim ** -0.5
    grad_out = torch.randn(inputs[0].shape, device=DEVICE)
    exact = run_with_grads(agent_attention_reference, tuple(t.double() for t in inputs), scale, grad_out)
    ref = run_with_grads(agent_attention_reference, inputs, scale, grad_out)
    fused = run_with_grads(agent_attention_fused, inputs, scale, grad_out)
    for name, f, r, e in zip(NAMES, fused, ref, exact):
        assert f.dtype == dtype, name
        fused_err = (f.double() - e).abs().max().item()
        ref_err = (r.double() - e).abs().max().item()
        floor = LOW_PRECISION_FLOOR[dtype] * max(1.0, e.abs().max().item())
        assert fused_err <= 2 * ref_err + floor, f"{name}: fused err {fused_err:.3g}, reference err {ref_err:.3g}"


def test_reference_is_the_official_formula():
    """The spec itself: two softmax attentions with the scale on the left operand and batch-broadcast biases."""
    q, k, v, agents, agent_bias, token_bias = make_inputs(2, 3, (5, 6), (3, 3), 8, torch.float64)
    scale = 0.3
    agent_v = torch.softmax(agents * scale @ k.transpose(-1, -2) + agent_bias.repeat(2, 1, 1, 1), -1) @ v
    expected = torch.softmax(q * scale @ agents.transpose(-1, -2) + token_bias.repeat(2, 1, 1, 1), -1) @ agent_v
    torch.testing.assert_close(agent_attention_reference(q, k, v, agents, agent_bias, token_bias, scale), expected)


def test_per_sample_biases_are_accepted():
    q, k, v, agents, agent_bias, token_bias = make_inputs(2, 2, (4, 5), (2, 2), 8, torch.float32)
    agent_bias, token_bias = agent_bias.expand(2, -1, -1, -1) + 0.1, token_bias.expand(2, -1, -1, -1) - 0.2
    ref = agent_attention_reference(q, k, v, agents, agent_bias, token_bias, 0.35)
    torch.testing.assert_close(agent_attention_fused(q, k, v, agents, agent_bias, token_bias, 0.35), ref,
                               rtol=2e-4, atol=2e-5)


def test_pool_agent_tokens_equals_official_channel_pooling():
    """Pooling per head equals the official pooling of the (B, h*d, H, W) map of the unsplit queries."""
    batch, heads, head_dim, hw = 2, 3, 4, (7, 9)
    q_flat = torch.randn(batch, hw[0] * hw[1], heads * head_dim, dtype=torch.float64)
    pooled = F.adaptive_avg_pool2d(q_flat.reshape(batch, *hw, -1).permute(0, 3, 1, 2), (3, 3))
    expected = pooled.reshape(batch, heads * head_dim, -1).permute(0, 2, 1)
    expected = expected.reshape(batch, 9, heads, head_dim).permute(0, 2, 1, 3)
    q = q_flat.reshape(batch, -1, heads, head_dim).transpose(1, 2)
    torch.testing.assert_close(pool_agent_tokens(q, hw, (3, 3)), expected)


def test_bad_shapes_raise_clear_errors():
    q, k, v, agents, agent_bias, token_bias = make_inputs(1, 2, (4, 5), (2, 2), 8, torch.float32)
    with pytest.raises(ValueError, match="grid"):
        pool_agent_tokens(q, (4, 4), (2, 2))
    with pytest.raises(ValueError, match="agent_bias"):
        agent_attention_reference(q, k, v, agents, agent_bias[..., :-1], token_bias, 0.3)
    with pytest.raises(ValueError, match="token_bias"):
        agent_attention_fused(q, k, v, agents, agent_bias, token_bias[..., :-1, :], 0.3)


def test_dispatch_follows_zoo_kernels(monkeypatch):
    calls = []
    monkeypatch.setattr(agent_op, "agent_attention_fused", lambda *a, **kw: calls.append("fused") or a[0])
    monkeypatch.setattr(agent_op, "agent_attention_reference", lambda *a, **kw: calls.append("reference") or a[0])
    inputs = make_inputs(1, 1, (3, 3), (2, 2), 4, torch.float32)
    monkeypatch.setenv("ZOO_KERNELS", "reference")
    agent_attention(*inputs, 0.5)
    monkeypatch.setenv("ZOO_KERNELS", "triton")
    agent_attention(*inputs, 0.5)
    monkeypatch.delenv("ZOO_KERNELS")
    agent_attention(*inputs, 0.5)
    assert calls == ["reference", "fused", "fused"]  # SDPA on every device unless the reference is asked for
