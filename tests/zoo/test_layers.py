"""attnzoo.layers: the drop-in attention layers (issue 18).

Each layer at 8x8, 37x53 and 97x131 (forward + backward) and inside a torchvision ResNet-18; BRA's padding mask
against plain full attention; ELA against a hand-computed case; the Triton paths against the reference in Triton's
CPU interpreter (tests/conftest.py switches it on without a GPU); torch.compile(fullgraph=True) and ONNX; bad inputs.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.layers import (
    ELA,
    AgentAttention2d,
    BiLevelRoutingAttention2d,
    FlowAttention1d,
    FlowAttention2d,
    SimplifiedLinearAttention2d,
)
from attnzoo.tasks.export import compile_check, export_onnx

LAYERS = {
    "bra": BiLevelRoutingAttention2d,
    "agent": AgentAttention2d,
    "flow": FlowAttention2d,
    "slab": SimplifiedLinearAttention2d,
    "ela": ELA,
}


@pytest.fixture(autouse=True)
def _reference_kernels(monkeypatch):
    monkeypatch.delenv("ZOO_KERNELS", raising=False)


@pytest.mark.parametrize("size", [(8, 8), (37, 53), (97, 131)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(LAYERS))
def test_any_size_forward_backward(name, size):
    torch.manual_seed(0)
    layer = LAYERS[name](32)
    x = torch.randn(1, 32, *size, requires_grad=True)
    out = layer(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, param in layer.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname


@pytest.mark.parametrize("name", list(LAYERS))
def test_inside_torchvision_resnet18(name):
    """A plug-in after layer2 of a torchvision ResNet-18 (128 channels, a 9x7 map): forward + backward to the stem."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5)
    layer = LAYERS[name](128)

    class Residual(nn.Module):
        def forward(self, x):
            return x + layer(x)

    model.layer2 = nn.Sequential(model.layer2, Residual())
    logits = model(torch.randn(2, 3, 72, 56))
    assert logits.shape == (2, 5)
    F.cross_entropy(logits, torch.tensor([1, 3])).backward()
    assert model.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("channels", [13, 30, 48, 96])
@pytest.mark.parametrize("name", list(LAYERS))
def test_defaults_build_for_any_channel_count(name, channels):
    layer = LAYERS[name](channels)
    x = torch.randn(1, channels, 5, 6)
    assert layer(x).shape == x.shape


def _full_attention_with_lepe(layer: BiLevelRoutingAttention2d, x: torch.Tensor) -> torch.Tensor:
    """Plain softmax attention over all H*W tokens with the layer's weights, plus its LePE and projection."""
    batch, channels, height, width = x.shape
    heads, head_dim = layer.num_heads, layer.head_dim
    q, k, v = layer.qkv(x.flatten(2).transpose(1, 2)).chunk(3, dim=-1)  # (B, N, C)

    def split(t):
        return t.view(batch, -1, heads, head_dim).transpose(1, 2)

    attn = torch.softmax(split(q) @ split(k).transpose(-2, -1) * layer.scale, dim=-1)
    out = (attn @ split(v)).transpose(1, 2).reshape(batch, height * width, channels)
    lepe = layer.lepe(v.transpose(1, 2).reshape(batch, channels, height, width)).flatten(2).transpose(1, 2)
    return layer.proj(out + lepe).transpose(1, 2).reshape(batch, channels, height, width)


@pytest.mark.parametrize("size", [(11, 13), (8, 12), (3, 5)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_bra_padding_is_masked(size):
    """With topk = every region, BRA is full attention over the real tokens: padded keys must get no weight."""
    torch.manual_seed(0)
    layer = BiLevelRoutingAttention2d(16, num_heads=2, region_size=4, topk=64).double()
    x = torch.randn(2, 16, *size, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _full_attention_with_lepe(layer, x), rtol=1e-10, atol=1e-10)


def test_bra_routes_fixed_size_regions():
    """Regions have region_size^2 tokens whatever the map: a map twice as wide has twice the regions."""
    layer = BiLevelRoutingAttention2d(16, region_size=4, topk=2)
    seen = []
    original = layer.forward.__globals__["bra_attention"]

    def spy(q, k, v, r_idx, heads, scale):
        seen.append((q.shape[1], q.shape[2], r_idx.shape[-1]))
        return original(q, k, v, r_idx, heads, scale)

    layer.forward.__globals__["bra_attention"] = spy
    try:
        layer(torch.randn(1, 16, 16, 16))
        layer(torch.randn(1, 16, 16, 32))
    finally:
        layer.forward.__globals__["bra_attention"] = original
    assert seen == [(16, 16, 2), (32, 16, 2)]


def test_ela_hand_computed():
    """Two channels on a 2x3 map, identity 1D conv (kernel 3, weight [0, 1, 0]), GroupNorm with one channel per group.

    Channel 0 rows [1 2 3], [4 5 6]: row means 2, 5 -> normalised -1, +1; column means 2.5, 3.5, 4.5 -> normalised
    -sqrt(1.5), 0, +sqrt(1.5) (variance 2/3). Channel 1 rows [0 0 0], [6 6 6]: row means 0, 6 -> -1, +1; column means
    3, 3, 3 -> 0, 0, 0 (variance 0). out = x * sigmoid(row gate) * sigmoid(column gate).
    """
    layer = ELA(2, kernel_size=3, norm_groups=2).double()
    with torch.no_grad():
        layer.conv.weight.copy_(torch.tensor([[[0.0, 1.0, 0.0]], [[0.0, 1.0, 0.0]]]))
    x = torch.tensor([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [[0.0, 0.0, 0.0], [6.0, 6.0, 6.0]]]], dtype=torch.float64)
    eps = layer.norm.eps

    def sigmoid(value):
        return 1.0 / (1.0 + math.exp(-value))

    def norm(deviation, variance):
        return deviation / math.sqrt(variance + eps)

    row_gate = [[sigmoid(norm(-1.5, 2.25)), sigmoid(norm(1.5, 2.25))], [sigmoid(norm(-3, 9)), sigmoid(norm(3, 9))]]
    column_gate = [[sigmoid(norm(d, 2 / 3)) for d in (-1.0, 0.0, 1.0)], [sigmoid(0.0)] * 3]
    expected = torch.tensor(
        [[[[x[0, c, i, j].item() * row_gate[c][i] * column_gate[c][j] for j in range(3)] for i in range(2)]
          for c in range(2)]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_ela_presets():
    """T/B/S/L: kernel 5/7/5/7; depthwise (T, B) or C/8 conv groups (S, L); GroupNorm 32 (T) or 16 groups."""
    expected = {"T": (5, 64, 32), "B": (7, 64, 16), "S": (5, 8, 16), "L": (7, 8, 16)}
    for preset, (kernel, conv_groups, norm_groups) in expected.items():
        layer = ELA(64, preset=preset)
        assert (layer.conv.kernel_size[0], layer.conv.groups, layer.norm.num_groups) == (kernel, conv_groups,
                                                                                         norm_groups)
    assert ELA(48, preset="T").norm.num_groups == 24  # 32 does not divide 48: the largest divisor below it
    with pytest.raises(ValueError, match="preset must be one of"):
        ELA(64, preset="XL")


def _official_slab_attention(layer: SimplifiedLinearAttention2d, x: torch.Tensor) -> torch.Tensor:
    """SLAB's official SimplifiedLinearAttention on a square map, written from its equations with the layer's weights:
    k += positional encoding (one vector per token), ReLU on q and k, per head the (N x N) scores normalised by their
    row sums + 1e-6 (the linear form's ``q_i . sum_j k_j``), a depthwise conv of v shared by all heads, projection."""
    batch, channels, height, width = x.shape
    heads, head_dim = layer.num_heads, layer.head_dim
    q, k, v = layer.qkv(x.flatten(2).transpose(1, 2)).chunk(3, dim=-1)  # (B, N, C)
    k = k + layer.pos_grid.flatten(2).transpose(1, 2)  # the grid is the map's size: one vector per token

    def split(t):  # official rearrange "b n (h c) -> (b h) n c"
        return t.reshape(batch, -1, heads, head_dim).transpose(1, 2).reshape(batch * heads, -1, head_dim)

    q, k, v = split(torch.relu(q)), split(torch.relu(k)), split(v)
    scores = q @ k.transpose(-2, -1)
    out = scores @ v / (scores.sum(dim=-1, keepdim=True) + 1e-6)
    out = out + layer.dwc(v.transpose(-2, -1).reshape(batch * heads, head_dim, height, width)).flatten(2).transpose(1, 2)
    out = out.reshape(batch, heads, -1, head_dim).transpose(1, 2).reshape(batch, -1, channels)
    return layer.proj(out).transpose(1, 2).reshape(batch, channels, height, width)


def test_slab_is_the_official_attention_at_its_grid():
    """At H = W = pos_size the positional grid is used as is (bilinear to the same size is the identity)."""
    torch.manual_seed(0)
    layer = SimplifiedLinearAttention2d(16, num_heads=2, kernel_size=3, pos_size=6).double()
    with torch.no_grad():
        layer.pos_grid.normal_()  # zeros at init, as officially: make the test see it
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _official_slab_attention(layer, x), rtol=1e-10, atol=1e-10)
    # any other size interpolates the grid to the map
    assert layer(torch.randn(1, 16, 6, 9, dtype=torch.float64)).shape == (1, 16, 6, 9)


def test_slab_bad_arguments():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        SimplifiedLinearAttention2d(32, kernel_size=4)
    with pytest.raises(ValueError, match="pos_size must be >= 1"):
        SimplifiedLinearAttention2d(32, pos_size=0)


def test_flow_1d_causal_sees_only_the_past():
    torch.manual_seed(0)
    layer = FlowAttention1d(32, causal=True).double()
    x = torch.randn(2, 40, 32, dtype=torch.float64)
    later = x.clone()
    later[:, 25:] += torch.randn_like(later[:, 25:])
    torch.testing.assert_close(layer(later)[:, :25], layer(x)[:, :25])
    assert not torch.allclose(layer(later)[:, 25:], layer(x)[:, 25:])
    # and the non-causal form does look ahead
    both_ways = FlowAttention1d(32, causal=False).double()
    assert not torch.allclose(both_ways(later)[:, :25], both_ways(x)[:, :25])


@pytest.mark.parametrize("name", ["bra", "agent", "flow", "slab"])
def test_triton_path_matches_reference(name, monkeypatch):
    """ZOO_KERNELS=triton (interpreted on the CPU) against the reference: output and every gradient.

    BRA on a 10x7 map with 4x4 regions exercises the padding mask channel; agent's "triton" path is fused SDPA.
    """
    torch.manual_seed(0)
    layer = {"bra": lambda: BiLevelRoutingAttention2d(32, region_size=4, topk=2),
             "agent": lambda: AgentAttention2d(32, num_heads=2, agent_num=4),
             "flow": lambda: FlowAttention2d(32, num_heads=2),
             "slab": lambda: SimplifiedLinearAttention2d(32, num_heads=2)}[name]()
    x = torch.randn(1, 32, 10, 7)

    def run(backend):
        monkeypatch.setenv("ZOO_KERNELS", backend)
        layer.zero_grad()
        inputs = x.clone().requires_grad_()
        out = layer(inputs)
        out.backward(torch.ones_like(out))
        return out.detach(), inputs.grad, [p.grad.clone() for p in layer.parameters()]

    reference = run("reference")
    kernel = run("triton")
    torch.testing.assert_close(kernel[0], reference[0], rtol=2e-4, atol=2e-4)
    torch.testing.assert_close(kernel[1], reference[1], rtol=2e-4, atol=2e-4)
    for got, expected in zip(kernel[2], reference[2]):
        torch.testing.assert_close(got, expected, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("name", list(LAYERS) + ["flow1d_causal"])
def test_compile_fullgraph_and_onnx(name, tmp_path):
    torch.manual_seed(0)
    if name == "flow1d_causal":
        layer, x = FlowAttention1d(32, causal=True), torch.randn(2, 50, 32)
    else:
        layer, x = LAYERS[name](32), torch.randn(2, 32, 19, 23)
    assert compile_check(layer, x) < 1e-5
    result = export_onnx(layer, tmp_path / f"{name}.onnx", input_size=tuple(x.shape[1:]), batch_size=2,
                         exporter="dynamo")
    assert result.exporter == "dynamo"
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4


@pytest.mark.parametrize("name", ["bra", "agent", "flow", "slab"])
def test_channels_not_divisible_by_heads(name):
    with pytest.raises(ValueError, match=r"30 channels cannot be split into num_heads=4 .*such as 2, 3, 5,"):
        LAYERS[name](30, num_heads=4)


@pytest.mark.parametrize("name", list(LAYERS))
def test_bad_inputs_name_the_fix(name):
    layer = LAYERS[name](32)
    with pytest.raises(ValueError, match=r"expects a \(B, C, H, W\) feature map, got a rank-3 tensor.*FlowAttention1d"):
        layer(torch.randn(2, 64, 32))
    with pytest.raises(ValueError, match="built for 32 channels but the input has 16"):
        layer(torch.randn(1, 16, 8, 8))


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="agent_num must be a square number"):
        AgentAttention2d(32, agent_num=50)
    with pytest.raises(ValueError, match="topk must be >= 1"):
        BiLevelRoutingAttention2d(32, topk=0)
    with pytest.raises(ValueError, match=r"expects a \(B, N, C\) sequence.*FlowAttention2d"):
        FlowAttention1d(32)(torch.randn(1, 32, 4, 4))


def test_bra_compiles_for_training():
    """fullgraph compile with autograd: the chunked CPU path's autograd.Function traces without a graph break."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = BiLevelRoutingAttention2d(32, region_size=4)
    x = torch.randn(1, 32, 10, 13)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    eager_x, compiled_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    layer(eager_x).sum().backward()
    eager_grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    compiled(compiled_x).sum().backward()
    torch.testing.assert_close(compiled_x.grad, eager_x.grad, rtol=1e-5, atol=1e-5)
    for got, expected in zip((p.grad for p in layer.parameters()), eager_grads):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_empty_batch(name, backend, monkeypatch):
    """Batch 0 (the last shard of an uneven split, a filtered batch): an empty output of the input's shape, and a
    backward that gives the input and every parameter a gradient (zeros), as any batch does (issue 26, row 10)."""
    monkeypatch.setenv("ZOO_KERNELS", backend)
    layer = LAYERS[name](64)
    x = torch.randn(0, 64, 9, 7, requires_grad=True)
    out = layer(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    for pname, param in layer.named_parameters():
        assert param.grad is not None and not param.grad.any(), pname


@pytest.mark.parametrize("name", list(LAYERS))
def test_nonfinite_input_stays_in_its_sample(name):
    """The documented NaN behaviour (backbones/layers.py): a NaN or inf in one sample makes that sample's output
    non-finite and leaves the other samples exactly as they are without it."""
    torch.manual_seed(0)
    layer = LAYERS[name](32)
    x = torch.randn(2, 32, 12, 10)
    clean = layer(x)
    for value in (float("nan"), float("inf")):
        poisoned = x.clone()
        poisoned[0, 3, 2, 2] = value
        out = layer(poisoned)
        assert not torch.isfinite(out[0]).all()
        torch.testing.assert_close(out[1], clean[1], rtol=0, atol=0)
