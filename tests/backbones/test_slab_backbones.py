"""SLAB (and the PRepBN baselines) on the shared skeletons: official parity in eval and training mode (LinearNorm
schedule included), official checkpoint layouts, re-parameterisation, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from timm.models import reparameterize_model

import attnzoo.backbones.slab as slab
from attnzoo.backbones.slab import (
    LinearNorm,
    RepBN,
    SlabCSWin,
    SlabDeiT,
    SlabPVT,
    SlabSwinTransformer,
    checkpoint_filter_fn,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"

# fixture -> (our class, constructor arguments beyond the official kwargs recorded in the fixture)
PARITY = {
    "slab_swin_cls_224": (SlabSwinTransformer, {}),
    "prepbn_swin_cls_224": (SlabSwinTransformer, dict(attn_type="SSSS", norm_layer=RepBN)),
    "slab_pvt_cls_224": (SlabPVT, {}),  # official norm_layer: slab_pvt.linearnorm = SlabPVT's default
    "slab_deit_cls_224": (SlabDeiT, dict(linear=True)),
    "prepbn_deit_cls_224": (SlabDeiT, dict(linear=False, norm_layer=RepBN)),
    "slab_cswin_cls_224": (SlabCSWin, {}),
}


def _model(case):
    cls, extra = PARITY[case.name]
    kwargs = {k: v for k, v in case.meta["official_kwargs"].items() if k != "norm_layer"}
    model = cls(**kwargs, **extra)
    model.load_state_dict(checkpoint_filter_fn(case.state_dict, model), strict=True)
    return model.double()


def _meta_model(name, **kwargs):
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


@pytest.mark.parametrize("name", list(PARITY))
def test_official_logits_eval(parity, name):
    """Float64 eval logits equal the official code's (seeded weights, random BN statistics)."""
    case = parity(name)
    model = _model(case).eval()
    with torch.no_grad():
        logits = model(case.inputs["x"].double())
    torch.testing.assert_close(logits.float(), case.outputs["logits"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(PARITY))
def test_official_training_mode(parity, name):
    """Two training-mode forwards (LinearNorm blend + warm/iter countdown from the checkpoint's schedule, BN batch
    statistics) equal the official ones, and so do the buffers and the eval logits after them."""
    case = parity(name)
    model = _model(case).train()
    x = case.inputs["x"].double()
    with torch.no_grad():
        for step in ("logits_train_step1", "logits_train_step2"):
            torch.testing.assert_close(model(x).float(), case.outputs[step], rtol=1e-5, atol=1e-6, msg=step)
        model.eval()
        torch.testing.assert_close(model(x).float(), case.outputs["logits_after_train"], rtol=1e-5, atol=1e-6)
    state = model.state_dict()
    for key, value in case.meta["buffers_after_train"].items():
        assert state[key].tolist() == value, key
    after = {k[len("after_train."):]: v for k, v in _tensors(name).items() if k.startswith("after_train.")}
    assert after
    for key, value in after.items():
        torch.testing.assert_close(state[key].float(), value, rtol=1e-5, atol=1e-6, msg=key)


def _tensors(name):
    from safetensors.torch import load_file

    return load_file(str(FIXTURES / f"{name}.safetensors"))


@pytest.fixture(scope="module")
def slab_manifests():
    return json.loads((FIXTURES / "slab_official_manifests.json").read_text())


RELEASED = ["slab_deit_tiny", "slab_deit_small", "slab_pvt_tiny", "slab_swin_tiny", "slab_swin_small",
            "slab_cswin_tiny", "prepbn_deit_tiny", "prepbn_deit_small", "prepbn_pvt_tiny", "prepbn_pvt_small",
            "prepbn_pvt_medium", "prepbn_swin_tiny"]


@pytest.mark.parametrize("name", RELEASED)
def test_official_layout_loads_strictly(slab_manifests, name):
    """Every key and shape of each released official model, through checkpoint_filter_fn, strict=True."""
    model = _meta_model(name)
    state = {k: torch.zeros(shape, device="meta") for k, shape in slab_manifests[name].items()}
    model.load_state_dict(checkpoint_filter_fn({"model": state}, model), strict=True, assign=True)


def test_filter_passes_another_variants_keys_through_for_the_loader_to_name(slab_manifests):
    """A SLAB checkpoint into a PRepBN baseline: its positional_encoding keys reach the loader unchanged."""
    state = {k: torch.zeros(shape, device="meta") for k, shape in slab_manifests["slab_pvt_tiny"].items()}
    filtered = checkpoint_filter_fn({"model": state}, _meta_model("prepbn_pvt_tiny"))
    assert filtered == state and any("positional_encoding" in k for k in filtered)
    zoo_weights = pytest.importorskip("attnzoo.weights")  # the loader then names them (as load_checkpoint calls it)
    with pytest.raises(zoo_weights.CheckpointError, match=r"does not fit prepbn_pvt_tiny: .*unexpected key.*"
                                                          r"positional_encoding"):
        zoo_weights.check_fit(filtered, _meta_model("prepbn_pvt_tiny"), "checkpoint slab_pvt_tiny")


def _norms(model):
    return [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, RepBN, LinearNorm))]


@pytest.mark.parametrize("name", list(PARITY))
def test_reparameterize_folds_every_repbn(parity, name):
    """timm.models.reparameterize_model: no BatchNorm left, float64 outputs equal to the unfolded model's."""
    case = parity(name)
    model = _model(case).eval()
    folded = reparameterize_model(model)
    assert _norms(model) and not _norms(folded)
    x = case.inputs["x"].double()
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x))
        if hasattr(model, "feature_info"):
            for ours, ref in zip(folded.forward_intermediates(x)[1], model.forward_intermediates(x)[1]):
                torch.testing.assert_close(ours, ref)


def test_reparameterize_keeps_padded_windows_exact():
    """Downstream SLAB-Swin pads maps to its windows; after folding, padded tokens get the value norm1 maps to 0."""
    torch.manual_seed(0)
    model = SlabSwinTransformer(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), stage_window_sizes=(56, 28, 7, 7),
                                always_partition=True, out_norms=True, drop_path_rate=0.0, num_classes=0).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0, 0.1)
    model.eval()
    x = torch.randn(1, 3, 100, 140, dtype=torch.float64)  # 25x35 tokens: every stage is padded
    folded = reparameterize_model(model)
    with torch.no_grad():
        for ours, ref in zip(folded.forward_intermediates(x, intermediates_only=True),
                             model.forward_intermediates(x, intermediates_only=True)):
            torch.testing.assert_close(ours, ref)


def test_linear_norm_schedule():
    """warm counts down first (LayerNorm only), then lambda = iter / total_step blends and iter counts down to 0."""
    norm = LinearNorm(4, nn.LayerNorm, RepBN, warm=1, step=2).double().train()
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(norm(x), norm.norm1(x))
    assert (int(norm.warm), int(norm.iter)) == (0, 2)
    with torch.no_grad():
        norm.norm2.eval()
        expected = [lam * norm.norm1(x) + (1 - lam) * norm.norm2(x) for lam in (1.0, 0.5, 0.0, 0.0)]
        norm.norm2.train()
    for step, want in enumerate(expected):
        norm.norm2.bn.eval()  # compare the blend itself, with fixed BN statistics
        torch.testing.assert_close(norm(x), want, msg=f"step {step}")
    assert int(norm.iter) == 0
    norm.eval()
    torch.testing.assert_close(norm(x), norm.norm2(x))


def test_bad_attn_type_is_a_clear_error():
    with pytest.raises(ValueError, match="'L' \\(linear\\), 'S' \\(softmax\\)"):
        _meta_model("slab_swin_tiny", attn_type="LASS")
    with pytest.raises(ValueError, match="needs its linear block count"):
        _meta_model("slab_cswin_tiny", attn_type="LLMS")


def test_released_models_find_their_filter():
    from attnzoo.weights import checkpoint_filter_fn_for

    assert checkpoint_filter_fn_for(_meta_model("slab_swin_tiny", features_only=True)) is slab.checkpoint_filter_fn


def test_fused_path_trains_like_the_reference(monkeypatch):
    """One training step of a small SLAB-Swin through the Triton linear-attention kernel (interpreted on CPU) and
    through the reference: same loss, same gradients (positional encodings and depth-wise convs included)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = timm.create_model("slab_swin_tiny", img_size=64, embed_dim=16, depths=(1, 1, 1, 1),
                              num_heads=(1, 2, 4, 8), num_classes=5, drop_path_rate=0.0).to(device)
    images = torch.randn(2, 3, 64, 64, device=device)
    # a training forward moves the LinearNorm countdown and the BN statistics: both paths start from the same state
    start = {k: v.clone() for k, v in model.state_dict().items()}
    results = {}
    for path in ("reference", "triton"):
        monkeypatch.setenv("ZOO_KERNELS", path)
        model.load_state_dict(start)
        model.zero_grad()
        loss = model(images).logsumexp(-1).mean()
        loss.backward()
        results[path] = (loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(results["triton"][0], results["reference"][0], rtol=1e-5, atol=1e-6)
    for name, grad in results["reference"][1].items():
        torch.testing.assert_close(results["triton"][1][name], grad, rtol=1e-3, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    assert results["reference"][1]["layers.0.blocks.0.attn.positional_encoding"].abs().sum() > 0


def test_imagenet_checkpoint_initialises_downstream_swin(slab_manifests):
    """The released ImageNet layout into the official detection layout (windows 56/28/7/7 kept at any size, LayerNorm
    outputs): final norm and head dropped, positional encodings fit, per-stage norms keep their initialisation."""
    model = _meta_model("slab_swin_tiny", stage_window_sizes=(56, 28, 7, 7), always_partition=True, out_norms=True)
    state = {k: torch.zeros(shape, device="meta") for k, shape in slab_manifests["slab_swin_tiny"].items()}
    filtered = checkpoint_filter_fn({"model": state}, model)
    assert not any(k.startswith(("head.", "norm.")) for k in filtered) and "norm3.weight" in filtered
    model.load_state_dict(filtered, strict=True, assign=True)


class _Call(nn.Module):
    """Calls the wrapped SLAB module with the extra arguments its skeleton passes (PVT: H, W; CSWin: q, k, v)."""

    def __init__(self, module, kind):
        super().__init__()
        self.module, self.kind = module, kind

    def forward(self, x):
        if self.kind == "pvt":
            return self.module(x, 14, 14)
        if self.kind == "qkv":
            return self.module(x, x * 2, x * 3)
        return self.module(x)


@pytest.mark.parametrize("kind", ["window", "pvt", "qkv", "linear_norm", "repbn"])
@pytest.mark.parametrize("train", [False, True])
def test_slab_modules_trace_with_torch_fx(kind, train):
    """SLAB's own modules trace with timm's FX registry (size checks and the op are opaque calls, the norms leaves),
    in eval and training mode, and the traced module computes what the module does."""
    from timm.models import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    torch.manual_seed(0)
    module, x = {
        "window": (slab.SimplifiedLinearAttention(16, (7, 7), 2), torch.randn(2, 49, 16)),
        "pvt": (slab.PvtLinearAttention(16, 196, 2, sr_ratio=2, norm_layer=slab.slab_norm(10)), torch.randn(2, 196, 16)),
        "qkv": (slab.CSWinLinearAttention(16, 14, -1, 14, 2), torch.randn(2, 196, 16)),
        "linear_norm": (slab.slab_norm(100)(16), torch.randn(2, 49, 16)),
        "repbn": (RepBN(16), torch.randn(2, 49, 16)),
    }[kind]
    wrapped = _Call(module, kind).train(train)
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    train_nodes, eval_nodes = get_graph_node_names(wrapped, tracer_kwargs=tracer_kwargs, suppress_diff_warning=True)
    last = (train_nodes if train else eval_nodes)[-1]
    traced = create_feature_extractor(wrapped, return_nodes=[last], tracer_kwargs=tracer_kwargs,
                                      suppress_diff_warning=True)
    wrapped.eval()
    traced.eval()
    with torch.no_grad():
        torch.testing.assert_close(traced(x)[last], wrapped(x))


def test_official_file_loads_through_timm_pretrained(tmp_path, slab_manifests):
    """An official-layout file ({'model': ...} with SLAB-DeiT's unused cls_token) through timm's pretrained=True."""
    import attnzoo  # noqa: F401  (installs the safe checkpoint loader)

    torch.manual_seed(0)
    reference = timm.create_model("slab_deit_tiny").eval()
    state = dict(reference.state_dict(), cls_token=torch.zeros(1, 1, 192))
    assert set(state) == set(slab_manifests["slab_deit_tiny"])
    torch.save({"model": state}, tmp_path / "slab_deit_tiny.pth")
    model = timm.create_model("slab_deit_tiny", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "slab_deit_tiny.pth"))).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


@pytest.mark.parametrize("size", [(128, 128), (94, 126)])
def test_features_only_any_size(size):
    """features_only (timm's FeatureGetterNet over forward_intermediates): the downstream SLAB-Swin (windows
    56/28/7/7, maps padded to them) and SLAB-PVT (positional encodings resized) on square and odd inputs."""
    swin = timm.create_model("slab_swin_tiny", features_only=True, embed_dim=16, depths=(1, 1, 2, 1),
                             num_heads=(1, 2, 4, 8), stage_window_sizes=(56, 28, 7, 7), always_partition=True,
                             out_norms=True).eval()
    pvt = timm.create_model("slab_pvt_tiny", features_only=True, embed_dims=(16, 32, 40, 64),
                            depths=(1, 1, 1, 1)).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        swin_feats, pvt_feats = swin(x), pvt(x)
    h, w = -(-size[0] // 4), -(-size[1] // 4)
    expected = []
    for chs in (16, 32, 64, 128):
        expected.append((1, chs, h, w))
        h, w = -(-h // 2), -(-w // 2)
    assert [tuple(f.shape) for f in swin_feats] == expected
    assert [f.shape[1] for f in pvt_feats] == [16, 32, 40, 64]
    assert tuple(pvt_feats[0].shape[2:]) == (size[0] // 4, size[1] // 4)
    assert swin.feature_info.reduction() == [4, 8, 16, 32]
    assert all(torch.isfinite(f).all() for f in swin_feats + pvt_feats)
