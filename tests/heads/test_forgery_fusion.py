"""FakeReasoning's Forgery-Aware Feature Fusion: official parity, what the attention-map bias does, loud errors."""

from __future__ import annotations

import pytest
import torch

from attnzoo.heads.forgery.fusion import AttentionBias, ForgeryAwareFusion, convert_official_fusion_state_dict


def _official_fusion(case) -> ForgeryAwareFusion:
    kwargs = case.meta["official_kwargs"]
    module = ForgeryAwareFusion(kwargs["HIDDEN_SIZE"], kwargs["MULTI_HEAD"], kwargs["FF_SIZE"], kwargs["DROPOUT_R"])
    module.load_state_dict(convert_official_fusion_state_dict(case.state_dict), strict=True)
    return module.double().eval()


def test_matches_official_cross_attention(parity):
    """Official CrossAttention (16 heads, width 64) in float64: with the DINO map and without it."""
    case = parity("fakereasoning_fusion")
    module = _official_fusion(case)
    q, kv, attn_map = (case.inputs[name].double() for name in ("q", "kv", "attn_map"))
    with torch.no_grad():
        fused = module(q, kv, attn_map)
        fused_no_map = module(q, kv)
    torch.testing.assert_close(fused, case.outputs["fused"].double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused_no_map, case.outputs["fused_no_map"].double(), rtol=1e-5, atol=1e-6)


def test_attention_map_bias_changes_the_attention(parity):
    """The real DINO map reshapes the cross-attention; a zeroed map gives log(1e-6) everywhere, a per-head constant
    bias that the softmax cancels, so it attends exactly like no map at all."""
    case = parity("fakereasoning_fusion")
    module = _official_fusion(case)
    q, kv, attn_map = (case.inputs[name].double() for name in ("q", "kv", "attn_map"))
    with torch.no_grad():
        with_map = module.attention_probs(q, kv, attn_map)
        zeroed = module.attention_probs(q, kv, torch.zeros_like(attn_map))
        unbiased = module.attention_probs(q, kv, None)
    assert (with_map - zeroed).abs().max() > 1e-3
    torch.testing.assert_close(zeroed, unbiased)
    torch.testing.assert_close(with_map.sum(-1), torch.ones_like(with_map.sum(-1)))
    # and the bias is what the official code builds: conv-GELU-conv over heads of log(A + 1e-6) without the CLS
    bias = module.attention_bias(attn_map)
    assert bias.shape == (2, 16, 36, 36)


def test_bias_mlp_maps_between_head_counts():
    """A low-level branch with fewer heads (a tiny DINO with 4) still biases a 16-head fusion."""
    bias = AttentionBias(map_heads=4, hidden_channels=32, out_heads=16)
    out = bias(torch.rand(2, 4, 10, 10).softmax(-1))
    assert out.shape == (2, 16, 9, 9)


def test_bad_inputs_are_named():
    module = ForgeryAwareFusion(64, 16, 256, 0.0)
    q, kv = torch.randn(1, 9, 64), torch.randn(1, 16, 64)
    assert module(q, kv).shape == (1, 9, 64)  # unbiased cross-attention takes any key count
    with pytest.raises(ValueError, match="same number of patch"):
        module(q, kv, torch.rand(1, 16, 17, 17))
    with pytest.raises(ValueError, match="16 heads"):
        module(q, q, torch.rand(1, 8, 10, 10))
    with pytest.raises(ValueError, match="width 64"):
        module(torch.randn(1, 9, 32), kv)
    with pytest.raises(ValueError, match="divisible"):
        ForgeryAwareFusion(60, 16)


def test_official_key_conversion_refuses_unknown_keys(parity):
    state = dict(parity("fakereasoning_fusion").state_dict)
    state["mhatt.1.linear_q.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="mhatt.1.linear_q.weight"):
        convert_official_fusion_state_dict(state)
    with pytest.raises(KeyError, match="prefix"):
        convert_official_fusion_state_dict(parity("fakereasoning_fusion").state_dict, prefix="model.crossattention.")
