"""Probes of attnzoo.heads.probing: EP and MP against the official code (float64, forward and gradients), and what
each probe is made of."""

from __future__ import annotations

import pytest
import torch

from attnzoo.heads.probing import (
    AttentiveProbe,
    EfficientProbe,
    LinearProbe,
    MomentProbe,
    build_probe,
    convert_official_ep_state_dict,
    count_parameters,
)

TOL = dict(rtol=1e-5, atol=1e-6)  # fixtures: float64 official outputs stored as float32


def _ep_from(case) -> EfficientProbe:
    kwargs = case.meta["official_kwargs"]
    probe = EfficientProbe(kwargs["dim"], kwargs["nb_classes"], num_queries=kwargs["ep_queries"], d_out=kwargs["d_out"])
    probe.load_state_dict(convert_official_ep_state_dict(case.state_dict), strict=True)
    return probe.double()


def _grads(module, inputs: dict[str, torch.Tensor], forward, grad_y: torch.Tensor):
    xs = {k: v.double().requires_grad_(True) for k, v in inputs.items()}
    out = forward(module, xs)
    (out * grad_y.double()).sum().backward()
    grads = {k: v.grad for k, v in xs.items()}
    params = {k: p.grad for k, p in module.named_parameters()}
    return out.detach(), grads, params


EP_NAMES = {"0.cls_token": "pool.queries", "0.v.weight": "pool.v.weight", "2.weight": "classifier.weight",
            "2.bias": "classifier.bias"}


@pytest.mark.parametrize("name", ["probing_ep_q8", "probing_ep_q4_dout2"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_ep_matches_official(parity, name, mode):
    """Official probe_heads EP head (EfficientProbing + non-affine BN + Linear): logits, input and parameter grads,
    in eval mode (running statistics) and training mode (batch statistics, and the running statistics it leaves)."""
    case = parity(name)
    probe = _ep_from(case).train(mode == "train")
    out, grads, params = _grads(probe, {"x": case.inputs["x"]}, lambda m, i: m(i["x"]), case.inputs[f"grad_y_{mode}"])
    torch.testing.assert_close(out, case.outputs[f"logits_{mode}"].double(), **TOL)
    torch.testing.assert_close(grads["x"], case.outputs[f"{mode}.grad_input.x"].double(), **TOL)
    for official, ours in EP_NAMES.items():
        torch.testing.assert_close(params[ours], case.outputs[f"{mode}.grad.{official}"].double(), **TOL)
    if mode == "train":
        torch.testing.assert_close(probe.norm.running_mean, case.outputs["after_train.running_mean"].double(), **TOL)
        torch.testing.assert_close(probe.norm.running_var, case.outputs["after_train.running_var"].double(), **TOL)


def test_mp_matches_official(parity):
    """Official Moment_Probing_ViT (MHC3 'near', hidden 512, 4 heads): logits, grads of the class token, the tokens
    (the official forward drops x[:, 0], so its grad is zero) and every parameter."""
    case = parity("probing_mp_near")
    kwargs = case.meta["official_kwargs"]
    probe = MomentProbe(kwargs["in_dim"], kwargs["num_classes"], hidden_dim=kwargs["hidden_dim"],
                        num_heads=kwargs["num_heads"], cross_type=kwargs["cross_type"])
    probe.load_state_dict(case.state_dict, strict=True)
    probe.double()
    out, grads, params = _grads(probe, {"cls": case.inputs["cls"], "x": case.inputs["x"]},
                                lambda m, i: m(i["x"][:, 1:], i["cls"]), case.inputs["grad_y"])
    torch.testing.assert_close(out, case.outputs["logits"].double(), **TOL)
    torch.testing.assert_close(grads["cls"], case.outputs["grad_input.cls"].double(), **TOL)
    torch.testing.assert_close(grads["x"], case.outputs["grad_input.x"].double(), **TOL)
    assert set(params) == {k[len("grad."):] for k in case.outputs if k.startswith("grad.")}
    for key, grad in params.items():
        torch.testing.assert_close(grad, case.outputs[f"grad.{key}"].double(), **TOL)


def test_mp_default_sizes_are_the_official_ones():
    """At the official defaults (hidden 512, 4 heads, 'near') the second-order classifier takes 2883 inputs through
    3-channel convolutions, as the official code hard-codes; other settings size them from the pairs."""
    probe = MomentProbe(768, 1000)
    assert probe.classifier2.in_features == 2883
    assert probe.downblocks[0][0].in_channels == 3
    cn2 = MomentProbe(64, 3, hidden_dim=64, num_heads=4, cross_type="cn2")  # 6 pairs of 16-wide heads
    assert cn2.downblocks[0][0].in_channels == 6 and cn2.classifier2.in_features == 6 * 3 * 3
    assert cn2(torch.randn(2, 5, 64)).shape == (2, 3)
    with pytest.raises(ValueError, match="cross_type"):
        MomentProbe(64, 3, cross_type="one")


def test_ep_pools_each_query_over_its_own_value_slice():
    """EP by hand: query q's softmax over the raw tokens weights slice q of the value projection."""
    torch.manual_seed(0)
    probe = EfficientProbe(16, 3, num_queries=4).double()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    pooled = probe.pool(x)
    v = probe.pool.v(x)
    for q in range(4):
        weights = (probe.pool.queries[0, q] @ x.transpose(1, 2) * 16 ** -0.5).softmax(-1)  # (2, 7)
        expected = torch.einsum("bn,bnc->bc", weights, v[..., 4 * q:4 * q + 4])
        torch.testing.assert_close(pooled[:, 4 * q:4 * q + 4], expected)


def test_linear_probe_is_mae_batchnorm_then_linear():
    probe = LinearProbe(8, 3)
    assert not probe.norm.affine and probe.norm.eps == 1e-6
    assert count_parameters(probe) == 8 * 3 + 3
    tokens, pooled = torch.randn(4, 5, 8), torch.randn(4, 8)
    probe.eval()
    assert torch.allclose(probe(tokens, pooled), probe.classifier(probe.norm(pooled)))
    assert torch.allclose(probe(tokens), probe.classifier(probe.norm(tokens.mean(1))))  # pooled defaults to the mean


def test_attentive_probe_attends_to_the_tokens():
    """The attentive probe reads every token (each gets a gradient), and its output does not depend on the token
    order (cross-attention from learned queries is permutation-invariant)."""
    torch.manual_seed(0)
    probe = AttentiveProbe(32, 4, num_heads=4).double().eval()
    x = torch.randn(2, 9, 32, dtype=torch.float64, requires_grad=True)
    out = probe(x)
    torch.testing.assert_close(out, probe(x[:, torch.randperm(9)]))
    out.square().sum().backward()
    assert (x.grad.abs().sum(dim=-1) > 0).all()


def test_build_probe_picks_divisors_of_the_width():
    ep = build_probe("ep", 48, 10)  # 32 queries do not divide 48: the largest divisor below, 24
    assert ep.pool.num_queries == 24
    attentive = build_probe("attentive", 40, 10)  # 16 heads do not divide 40: 10
    assert attentive.attn.num_heads == 10
    with pytest.raises(ValueError, match="unknown probe"):
        build_probe("svm", 8, 2)
