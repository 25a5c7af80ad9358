"""MoH-ViT (MoH-TransNeXt) and TransNeXt: official parity (eval and training, the balancing loss and gradients
included), official checkpoint layouts, any input size, features, bad inputs.

torch.compile(fullgraph=True) and ONNX (dynamo exporter) of a tiny MoH-TransNeXt pass too, but cost ~16 s and ~25 s
on a 2-core CPU, over this file's budget; the MoH layer's own compile/ONNX test is in tests/zoo/test_moh_layer.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

import attnzoo.backbones  # noqa: F401  (registers the families)
import attnzoo.backbones.moh_transnext as moh_module
import attnzoo.kernels.aggregated_attention as aggregated_kernel
from attnzoo.backbones.layers import MOH_BALANCE_WEIGHT
from attnzoo.backbones.moh_transnext import MoHAggregatedAttention, MoHTransNeXt, checkpoint_filter_fn
from attnzoo.backbones.skeletons import transnext as skeleton
from attnzoo.backbones.transnext import TransNeXt

PARITY = {
    "moh_transnext_small_75_cls_64": MoHTransNeXt,  # the small_75 head counts: stages 1-2 all shared, 3-4 routed
    "moh_transnext_base_50_cls_64": MoHTransNeXt,  # the base_50 head counts: every stage shared + routed
    "transnext_micro_cls_64": TransNeXt,
}
MOH_NAMES = ["moh_transnext_small_80", "moh_transnext_small_75", "moh_transnext_base_75", "moh_transnext_base_50"]
TRANSNEXT_NAMES = ["transnext_micro", "transnext_tiny", "transnext_small", "transnext_base"]
# Parameters (millions), DaiShiResearch/TransNeXt classification/README.md (Model Zoo).
README_PARAMS_M = {"transnext_micro": 12.8, "transnext_tiny": 28.2, "transnext_small": 49.7, "transnext_base": 89.7}
# Per stage, the fraction of heads a token uses, (shared + routed) / heads, from the official factories.
HEAD_FRACTIONS = {"moh_transnext_small_80": [1, 1, 9 / 12, 20 / 24], "moh_transnext_small_75": [1, 1, 9 / 12, 16 / 24],
                  "moh_transnext_base_75": [1, 1, 12 / 16, 21 / 32], "moh_transnext_base_50": [1, 6 / 8, 8 / 16, 12 / 32]}
TINY = dict(embed_dims=(12, 24, 48, 96), depths=(1, 1, 1, 1), num_classes=10)


def _official(case):
    kwargs = dict(case.meta["official_kwargs"])
    assert kwargs.pop("norm_layer") == "LayerNorm(eps=1e-6)"  # the skeleton's default norm
    model = PARITY[case.name](**kwargs)
    model.load_state_dict(checkpoint_filter_fn(case.state_dict, model), strict=True)
    return model.double()


@pytest.fixture(scope="module")
def manifests():
    return json.loads((Path(__file__).parents[1] / "fixtures" / "moh_transnext_official_manifests.json").read_text())


@pytest.mark.parametrize("name", list(PARITY))
def test_official_logits_eval(parity, name):
    """Float64 eval logits equal the official native code's on its seeded weights."""
    case = parity(name)
    model = _official(case).eval()
    with torch.no_grad():
        logits = model(case.inputs["x"].double())
    torch.testing.assert_close(logits.float(), case.outputs["logits"], rtol=1e-5, atol=1e-6)
    if isinstance(model, MoHTransNeXt):
        assert model.moh_balance_loss().item() == 0.0  # eval forwards route but keep no balancing loss


@pytest.mark.parametrize("name", [n for n in PARITY if n.startswith("moh_")])
def test_official_training_step(parity, name):
    """Training mode: logits, every routed layer's balancing loss, the weighted MoH loss of the official engine.py,
    and the gradients of x and of every attention parameter (gates included) for logits . g + 0.01 * balance."""
    case = parity(name)
    model = _official(case).train()
    x = case.inputs["x"].double().requires_grad_(True)
    logits = model(x)
    torch.testing.assert_close(logits.float(), case.outputs["logits_train"], rtol=1e-5, atol=1e-6)
    per_layer = [m.moh_balance for m in model.modules() if getattr(m, "moh_balance", None) is not None]
    torch.testing.assert_close(torch.stack(per_layer).float(), case.outputs["balance_losses"], rtol=1e-5, atol=1e-6)
    moh_loss = MOH_BALANCE_WEIGHT * model.moh_balance_loss()
    torch.testing.assert_close(moh_loss.float().reshape(1), case.outputs["moh_loss"], rtol=1e-5, atol=1e-7)
    ((logits * case.inputs["grad_logits"].double()).sum() + moh_loss).backward()
    torch.testing.assert_close(x.grad.float(), case.outputs["grad_x"], rtol=1e-5, atol=1e-6)
    params = dict(model.named_parameters())
    grads = {k[len("grad."):]: v for k, v in case.outputs.items() if k.startswith("grad.")}
    assert any(".wg." in k for k in grads) and any(".cpb_fc1." in k for k in grads)
    for key, expected in grads.items():
        torch.testing.assert_close(params[key].grad.float(), expected, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("variant", MOH_NAMES + TRANSNEXT_NAMES)
def test_official_checkpoint_layout_loads_strictly(manifests, variant):
    """Every key and shape of the full-size official model (gates and CPB MLPs included), strict=True; the
    per-stage head fractions of the MoH releases, the README parameter counts of TransNeXt."""
    with torch.device("meta"):
        model = timm.create_model(variant)
    state = {k: torch.zeros(shape, device="meta") for k, shape in manifests[variant].items()}
    result = model.load_state_dict(checkpoint_filter_fn({"model": state}, model), strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    if variant.startswith("moh_"):
        assert any(k.endswith(".wg.weight") for k in state) and any(k.endswith(".wg_1.weight") for k in state)
        assert model.head_fractions() == pytest.approx(HEAD_FRACTIONS[variant])
    else:
        params_m = sum(p.numel() for p in model.parameters()) / 1e6
        assert params_m == pytest.approx(README_PARAMS_M[variant], abs=0.06)


@pytest.fixture(scope="module")
def tiny_moh():
    torch.manual_seed(0)
    return timm.create_model("moh_transnext_base_50", embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1),
                             num_classes=10).eval()


def test_any_input_size_and_features(tiny_moh):
    """Tables are rebuilt per grid: odd, non-square inputs run; features_only and forward_intermediates agree."""
    x = torch.randn(1, 3, 72, 104)
    with torch.no_grad():
        final, inter = tiny_moh.forward_intermediates(x)
        assert [tuple(t.shape[2:]) for t in inter] == [(18, 26), (9, 13), (5, 7), (3, 4)]
        torch.testing.assert_close(final, tiny_moh.forward_features(x))
        assert tiny_moh(x).shape == (1, 10)
    features = timm.create_model("moh_transnext_base_50", embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1),
                                 features_only=True, out_indices=(1, 3))
    weights = {f"model.{k}": v for k, v in tiny_moh.state_dict().items() if not k.startswith("head.")}
    features.load_state_dict(weights, strict=True)  # timm's getter wrapper: the pruned model under .model
    assert features.feature_info.channels() == [32, 128] and features.feature_info.reduction() == [8, 32]
    with torch.no_grad():
        maps = features(x)
    torch.testing.assert_close(maps[0], inter[1])
    torch.testing.assert_close(maps[1], inter[3])


def test_kernel_op_equals_native_math():
    """attnzoo.kernels.aggregated_attention (what the model calls) equals the official native math kept in the skeleton (what
    it calls with attention dropout) on random float64 inputs at an odd, non-square map."""
    gen = torch.Generator().manual_seed(0)
    b, h, hw, d, pool = 2, 3, (7, 5), 4, 6
    n = hw[0] * hw[1]

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    q_norm = torch.nn.functional.normalize(rand(b, h, n, d), dim=-1)
    q_scaled, k, v, k_pool, v_pool = 3 * q_norm + rand(b, h, n, d), rand(b, h, n, d), rand(b, h, n, d), \
        rand(b, h, pool, d), rand(b, h, pool, d)
    local_bias, pool_bias, tokens, token_bias = rand(h, 9), rand(h, n, pool), rand(h, d, 9), rand(h, 1, 9)
    native = skeleton.aggregated_attention_native(q_norm, q_scaled, k, v, k_pool, v_pool, local_bias, pool_bias,
                                                  tokens, token_bias, hw, 3)
    kernel = skeleton.aggregated_attention(q_scaled, k, v, k_pool, v_pool, local_bias, pool_bias,
                                           q_norm @ tokens + token_bias, hw[0], hw[1], 3)
    torch.testing.assert_close(kernel, native, rtol=1e-12, atol=1e-12)


def test_balance_loss_trains_the_router(tiny_moh):
    """The balancing loss reaches the router weights (wg) through backward; eval keeps none."""
    model = timm.create_model("moh_transnext_base_50", embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1),
                              num_classes=10).train()
    model(torch.randn(2, 3, 64, 64))
    loss = model.moh_balance_loss()
    assert loss.item() >= 2.0  # mean(importance * load) * E^2 >= k for top-k routing: the stages' k are 2..8
    loss.backward()
    assert model.block1[0].attn.wg.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert model.moh_balance_loss().item() == 0.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(shared_head=(2, 2, 2, 4), routed_head=(2, 4, 6, 40)), "exceeds the 28 routable heads"),
    (dict(shared_head=(1, 2, 2, 4), routed_head=(0, 4, 6, 8)), "shared_heads >= 2"),
    (dict(shared_head=(2, 2), routed_head=(2, 4)), "for each of the 4 stages"),
    (dict(window_size=(2, 3, 3, None)), "window_size must be odd"),
    (dict(window_size=(3, 3, None, None)), "no window_size"),
])
def test_bad_configurations_say_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message), torch.device("meta"):
        timm.create_model("moh_transnext_base_50", **kwargs)


def test_tiny_pretrain_size_is_refused():
    with pytest.raises(ValueError, match="pretrain_size >= 64"):
        timm.create_model("transnext_micro", img_size=32, pretrain_size=32, **TINY)(torch.randn(1, 3, 32, 32))


def test_training_after_an_inference_mode_forward():
    """The cached size tables built under torch.inference_mode stay usable by autograd afterwards."""
    model = timm.create_model("transnext_micro", embed_dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_classes=10)
    with torch.inference_mode():
        model.eval()(torch.randn(1, 3, 80, 48))  # a grid no other test uses: the tables are built here
    model.train()(torch.randn(1, 3, 80, 48)).sum().backward()
    assert model.block1[0].attn.cpb_fc1.weight.grad is not None


def test_registered_names_keep_the_224_pretraining_scale_at_any_img_size():
    """img_size=384 is the official 384 fine-tune (configs/finetune: pretrain_size 224), so the 224 weights' position
    biases mean the same; an explicit pretrain_size still rescales them, as in the official code."""
    at_384 = timm.create_model("transnext_micro", img_size=384, **TINY)
    at_224 = timm.create_model("transnext_micro", **TINY)
    at_224.load_state_dict(at_384.state_dict())
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(at_384.eval()(x), at_224.eval()(x))
    own = timm.create_model("transnext_micro", img_size=96, pretrain_size=96, **TINY)
    own.load_state_dict(at_384.state_dict())
    with torch.no_grad():
        assert not torch.allclose(own.eval()(x), at_384(x))  # pretrain_size 96 rescales the relative coordinates


def test_measured_head_usage_is_what_the_configuration_promises(tiny_moh):
    """The routers' real selection on random images: shared + top-k heads for every token, in every stage."""
    usage = tiny_moh.measure_head_usage(torch.randn(2, 3, 64, 64))
    assert [u["stage"] for u in usage] == [1, 2, 3, 4]
    assert [u["fraction"] for u in usage] == pytest.approx(tiny_moh.head_fractions())
    assert tiny_moh.head_fractions()[-1] < 1.0  # base_50 routes in stage 4, so the check can fail
    for u in usage:
        assert sum(u["load"]) == pytest.approx(u["fraction"] * len(u["load"]))


def test_routed_aggregated_attention_takes_the_head_sparse_kernel(monkeypatch):
    """A routed aggregated attention (stage 3's kind) in training mode through the head-sparse Triton kernel
    (ZOO_KERNELS=triton, the Triton interpreter here) gives the output, balancing loss and gradients of the official
    dense-then-gate path (every head by the reference op, then the gates), float32; and really takes the kernel's
    sparse path with each token's 2 of 3 heads. One attention at 5 x 7, not a whole model: the interpreter runs a
    tiny model's four stages in ~15 s on a 2-core CPU."""
    torch.manual_seed(0)
    attn = MoHAggregatedAttention(12, num_heads=3, shared_heads=1, routed_heads=1, window_size=3, sr_ratio=2).train()
    x, grad_out = torch.randn(1, 35, 12), torch.randn(1, 35, 12)
    selections = []
    slots = aggregated_kernel._slots
    monkeypatch.setattr(aggregated_kernel, "_slots", lambda heads, *a: selections.append(heads) or slots(heads, *a))

    def step(backend, forward):
        monkeypatch.setenv("ZOO_KERNELS", backend)
        attn.zero_grad(set_to_none=True)
        x_in = x.clone().requires_grad_(True)
        out = forward(attn, x_in, 5, 7)
        balance = attn.moh_balance
        ((out * grad_out).sum() + MOH_BALANCE_WEIGHT * balance).backward()
        grads = {k: p.grad for k, p in attn.named_parameters() if p.grad is not None}
        return out.detach(), balance.detach(), x_in.grad, grads

    sparse = step("triton", MoHAggregatedAttention.forward)
    assert [tuple(h.shape) for h in selections] == [(1, 35, 2)]  # the head-sparse Triton path ran, on 2 of 3 heads
    dense = step("reference", skeleton.AggregatedAttention.forward)  # the official form: combine_heads gates after
    assert len(selections) == 1
    torch.testing.assert_close(sparse[0], dense[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sparse[1], dense[1], rtol=0, atol=0)  # same router, same loss
    torch.testing.assert_close(sparse[2], dense[2], rtol=1e-4, atol=1e-5)
    assert sparse[3].keys() == dense[3].keys() and {"wg.weight", "q.weight", "learnable_tokens"} <= dense[3].keys()
    for key in dense[3]:
        torch.testing.assert_close(sparse[3][key], dense[3][key], rtol=1e-4, atol=1e-5, msg=key)


def test_routed_aggregated_attention_stays_head_sparse_under_compile(monkeypatch):
    """Under torch.compile / torch.export (torch.compiler.is_compiling()) the routed aggregated attention still calls
    the head-sparse op (its data-dependent gathers are inside the op's kernels), as eager does; the same output.
    (tests/kernels/test_compile_graphs.py compiles and exports the model with the op in its graph.)"""
    torch.manual_seed(0)
    attn = MoHAggregatedAttention(12, num_heads=3, shared_heads=1, routed_heads=1, window_size=3, sr_ratio=2).eval()
    x = torch.randn(1, 35, 12)
    sparse_calls = []
    sparse_op = moh_module.head_sparse_aggregated_attention
    monkeypatch.setattr(moh_module, "head_sparse_aggregated_attention",
                        lambda *a: sparse_calls.append(1) or sparse_op(*a))
    with torch.no_grad():
        eager = attn(x, 5, 7)
        assert len(sparse_calls) == 1
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        traced = attn(x, 5, 7)
    assert len(sparse_calls) == 2
    torch.testing.assert_close(traced, eager, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["transnext_micro", "moh_transnext_base_50"])
def test_runs_under_bf16_autocast(name):
    """Autocast hands the attention ops bf16 linear outputs next to float32 biases: the ops take them in the autocast
    dtype (attnzoo.kernels.backend.cast_for_autocast), and the logits stay near the float32 ones."""
    torch.manual_seed(0)
    model = timm.create_model(name, embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), full, rtol=0.1, atol=0.1)
