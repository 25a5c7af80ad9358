"""BiFormer: parity with the official code, official checkpoint layouts, the timm feature API, bad inputs.

Fixtures (tests/fixtures, made by rayleizhu/BiFormer with seeded weights, outputs computed in float64 and stored as
float32): biformer_cls_224, biformer_backbone_autopad, bra_c32_k1 / bra_c64_k4 / bra_c64_k16 / bra_c64_k4_pad, and
official_manifests.json (every key/shape of the five released checkpoints), from ../shared/parity; plus
biformer_stl_cls_112 and biformer_stl_nchw_cls_128x144, made the same way by this family's helper (JSON notes). Full-size models are built on the meta
device (no memory, no forward); forwards run on small configurations only.
"""

from __future__ import annotations

import pytest
import timm
import torch

import attnzoo.backbones.biformer as biformer
from attnzoo.backbones.biformer import BiFormer, BiLevelRoutingAttention, checkpoint_filter_fn

VARIANTS = ["biformer_tiny", "biformer_small", "biformer_base", "biformer_stl", "biformer_stl_nchw"]
RTOL, ATOL = 1e-5, 1e-6  # fixtures were computed in float64 and stored as float32

# Small configurations of each layout (the released recipes with fewer, narrower blocks) for forward tests.
SMALL = {
    "biformer_tiny": dict(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), qk_dims=(16, 32, 64, 128), head_dim=16),
    "biformer_stl": dict(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), head_dim=16),
    "biformer_stl_nchw": dict(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), head_dim=16),
}


def _float64_state(state_dict: dict) -> dict:
    return {k: v.double() if v.is_floating_point() else v for k, v in state_dict.items()}


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=RTOL, atol=ATOL, msg=lambda m: f"{what}: {m}")


def _meta_model(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


def _manifest_checkpoint(manifest: dict) -> dict:
    """An official-layout checkpoint with the manifest's keys and shapes (meta tensors: no memory)."""
    return {"model": {key: torch.empty(shape, device="meta") for key, shape in manifest.items()}}


# ----------------------------------------------------------------------------------------------------------------------
# Parity with the official code
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["bra_c32_k1", "bra_c64_k4", "bra_c64_k16", "bra_c64_k4_pad"])
def test_bra_module_matches_official_output_and_gradients(parity, case):
    fixture = parity(case)
    module = BiLevelRoutingAttention(**fixture.meta["official_kwargs"]).double()
    module.load_state_dict(_float64_state(fixture.state_dict), strict=True)
    x = fixture.inputs["x"].double().requires_grad_()

    y = module(x)
    y.backward(fixture.inputs["grad_y"].double())

    _assert_close(y, fixture.outputs["y"], "output")
    _assert_close(x.grad, fixture.outputs["grad_x"], "grad of x")
    parameter_grads = {name: p.grad for name, p in module.named_parameters()}
    assert set(parameter_grads) == {k[len("grad."):] for k in fixture.outputs if k.startswith("grad.")}
    for name, grad in parameter_grads.items():
        _assert_close(grad, fixture.outputs[f"grad.{name}"], f"grad of {name}")


def test_classification_logits_match_official_through_timm_pretrained(parity, tmp_path):
    """An official-format file ({'model': state_dict}) through timm's pretrained path gives the official logits."""
    pytest.importorskip("attnzoo")  # installs the safe loader that pretrained=True (custom_load) calls
    fixture = parity("biformer_cls_224")
    path = tmp_path / "biformer_official.pth"
    torch.save({"model": fixture.state_dict}, path)
    model = timm.create_model(
        "biformer_tiny",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path), num_classes=10),
        **fixture.meta["official_kwargs"],
    ).double().eval()
    with torch.no_grad():
        logits = model(fixture.inputs["x"].double())
    _assert_close(logits, fixture.outputs["logits"], "logits after timm pretrained load")


def test_official_checkpoint_file_loads_through_zoo_load_checkpoint(parity, tmp_path):
    attnzoo = pytest.importorskip("attnzoo")
    fixture = parity("biformer_cls_224")
    path = tmp_path / "biformer_official.pth"
    torch.save({"model": fixture.state_dict}, path)
    model = timm.create_model("biformer_tiny", **fixture.meta["official_kwargs"])
    attnzoo.load_checkpoint(model, path)
    with torch.no_grad():
        logits = model.double().eval()(fixture.inputs["x"].double())
    _assert_close(logits, fixture.outputs["logits"], "logits after attnzoo.load_checkpoint")

    other_depths = dict(fixture.meta["official_kwargs"], depth=[1, 1, 1, 1])  # the checkpoint's: (1, 1, 2, 1)
    with pytest.raises(attnzoo.CheckpointError, match=r"stages\.2\.1\."):
        attnzoo.load_checkpoint(timm.create_model("biformer_tiny", **other_depths), path)


def test_autopad_backbone_stage_features_match_official(parity):
    """n_win=8, auto_pad on 186x250: padding before the qkv projection, unmasked (the official semantics)."""
    fixture = parity("biformer_backbone_autopad")
    kwargs = fixture.meta["official_kwargs"]
    model = timm.create_model("biformer_tiny", features_only=True, **kwargs).double().eval()
    # the filter maps an official (full-model) state dict onto the features_only wrapper, dropping the pruned norm/head
    model.load_state_dict(checkpoint_filter_fn(_float64_state(fixture.state_dict), model), strict=True)
    with torch.no_grad():
        features = model(fixture.inputs["x"].double())
    assert len(features) == 4
    for index, feature in enumerate(features):
        _assert_close(feature, fixture.outputs[f"stage{index}"], f"stage {index}")


@pytest.mark.parametrize(
    ("variant", "case"), [("biformer_stl", "biformer_stl_cls_112"), ("biformer_stl_nchw", "biformer_stl_nchw_cls_128x144")]
)
def test_stl_layouts_match_official_logits(parity, variant, case):
    """STL layouts (fixtures made by this family's helper with the official code, see their JSON note); the nchw case
    uses stage maps that are not multiples of n_win, so nchwBRA's pad-after-projection path is covered."""
    fixture = parity(case)
    kwargs = {k: v for k, v in fixture.meta["official_kwargs"].items() if k != "norm_layer"}  # BatchNorm2d already
    model = timm.create_model(variant, **kwargs).double().eval()
    model.load_state_dict(_float64_state(fixture.state_dict), strict=True)
    with torch.no_grad():
        logits = model(fixture.inputs["x"].double())
    _assert_close(logits, fixture.outputs["logits"], "logits")


# ----------------------------------------------------------------------------------------------------------------------
# Official checkpoint layouts
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_official_key_and_shape_loads_strictly(official_manifests, variant):
    manifest = official_manifests[variant]
    model = _meta_model(variant)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == manifest
    state_dict = checkpoint_filter_fn(_manifest_checkpoint(manifest), model)
    result = model.load_state_dict(state_dict, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_timm_lists_the_five_variants():
    assert timm.list_models("biformer*") == sorted(VARIANTS)
    for variant in VARIANTS:
        cfg = timm.get_pretrained_cfg(variant)
        url, cache_name = cfg.url  # OneDrive URLs all end in /root/content: each gets a cache file name of its own
        assert url.startswith("https://api.onedrive.com/v1.0/shares/") and cache_name == f"{variant}.in1k.pth"
        assert cfg.input_size == (3, 224, 224) and cfg.first_conv == "downsample_layers.0.0"


@pytest.mark.parametrize(
    ("checkpoint_variant", "model_variant"),
    [("biformer_tiny", "biformer_small"), ("biformer_small", "biformer_base"), ("biformer_stl_nchw", "biformer_stl")],
)
def test_filter_passes_another_variants_keys_through(official_manifests, checkpoint_variant, model_variant):
    """Another variant's keys reach the loader unchanged (attnzoo.load_checkpoint names the misfit)."""
    checkpoint = _manifest_checkpoint(official_manifests[checkpoint_variant])
    assert checkpoint_filter_fn(checkpoint, _meta_model(model_variant)) == checkpoint["model"]


def test_detection_checkpoint_needs_extra_norms_and_then_loads_strictly(official_manifests):
    """Official downstream backbones (BiFormer_mm: backbone.* keys, extra_norms, no norm/head)."""
    manifest = official_manifests["biformer_small"]
    downstream = {f"backbone.{k}": torch.empty(s, device="meta") for k, s in manifest.items()
                  if not k.startswith(("norm.", "head."))}
    for i, width in enumerate((64, 128, 256, 512)):
        downstream[f"backbone.extra_norms.{i}.weight"] = torch.empty(width, device="meta")
        downstream[f"backbone.extra_norms.{i}.bias"] = torch.empty(width, device="meta")
    downstream["neck.lateral_convs.0.conv.weight"] = torch.empty(256, 128, 1, 1, device="meta")

    with pytest.raises(ValueError, match="extra_norms=True"):
        checkpoint_filter_fn({"state_dict": downstream}, _meta_model("biformer_small"))

    for features_only in (False, True):  # the features_only wrapper (the OpenMMLab backbone) loads it too
        model = _meta_model("biformer_small", extra_norms=True, n_win=16, auto_pad=True, features_only=features_only)
        state_dict = checkpoint_filter_fn({"state_dict": downstream}, model)
        model.load_state_dict(state_dict, strict=True, assign=True)


def test_imagenet_checkpoint_into_extra_norms_model_keeps_their_init(parity):
    fixture = parity("biformer_cls_224")
    kwargs = dict(fixture.meta["official_kwargs"], extra_norms=True)
    model = timm.create_model("biformer_tiny", **kwargs)
    state_dict = checkpoint_filter_fn({"model": fixture.state_dict}, model)
    model.load_state_dict(state_dict, strict=True)
    for norm in model.extra_norms:
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))


def test_released_parameter_counts_match_the_readme():
    # rayleizhu/BiFormer README.md: 13.1 M, 25.5 M, 56.8 M, 28.4 M, 28.4 M
    readme_millions = {"biformer_tiny": 13.1, "biformer_small": 25.5, "biformer_base": 56.8, "biformer_stl": 28.4,
                       "biformer_stl_nchw": 28.4}
    for variant, millions in readme_millions.items():
        params = sum(p.numel() for p in _meta_model(variant).parameters()) / 1e6
        assert abs(params - millions) < 0.05, (variant, params)


# ----------------------------------------------------------------------------------------------------------------------
# timm feature API (small configurations)
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(SMALL))
def test_features_only_returns_four_maps_at_strides_4_to_32(variant):
    torch.manual_seed(0)
    model = timm.create_model(variant, features_only=True, **SMALL[variant]).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.feature_info.channels() == [16, 32, 64, 128]
    with torch.no_grad():
        features = model(torch.randn(1, 3, 224, 224))
    assert [tuple(f.shape) for f in features] == [(1, c, 224 // s, 224 // s) for c, s in
                                                  zip(model.feature_info.channels(), model.feature_info.reduction())]


@pytest.mark.parametrize("variant", list(SMALL))
def test_forward_intermediates_agrees_with_features_only_and_forward(variant):
    torch.manual_seed(0)
    model = timm.create_model(variant, **SMALL[variant]).eval()
    features_model = timm.create_model(variant, features_only=True, out_indices=(1, 3), **SMALL[variant]).eval()
    features_model.load_state_dict(
        {f"model.{k}": v for k, v in model.state_dict().items() if not k.startswith(("norm.", "head."))}, strict=True
    )
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x, indices=(1, 3))
        features = features_model(x)
        logits = model(x)
    assert len(intermediates) == len(features) == 2
    for intermediate, feature in zip(intermediates, features):
        torch.testing.assert_close(intermediate, feature, rtol=0, atol=0)
    torch.testing.assert_close(model.forward_head(final), logits, rtol=0, atol=0)
    assert len(features_model.model.stages) == 4 and isinstance(features_model.model.head, torch.nn.Identity)


def test_prune_intermediate_layers_drops_later_stages_norm_and_head():
    model = timm.create_model("biformer_tiny", **SMALL["biformer_tiny"]).eval()
    kept = model.prune_intermediate_layers(indices=(0, 1))
    assert kept == [0, 1]
    assert len(model.stages) == len(model.downsample_layers) == 2
    assert isinstance(model.norm, torch.nn.Identity) and isinstance(model.head, torch.nn.Identity)
    with torch.no_grad():
        maps = model.forward_intermediates(torch.randn(1, 3, 112, 112), intermediates_only=True)
    assert [m.shape[1] for m in maps] == [16, 32]


def test_extra_norms_normalise_each_returned_map():
    torch.manual_seed(0)
    model = timm.create_model("biformer_tiny", features_only=True, extra_norms=True, **SMALL["biformer_tiny"]).eval()
    with torch.no_grad():
        for feature in model(torch.randn(1, 3, 112, 112)):
            channel_mean = feature.mean(dim=1)  # LayerNorm2d at init: zero mean over channels at every pixel
            torch.testing.assert_close(channel_mean, torch.zeros_like(channel_mean), rtol=0, atol=1e-5)


def test_auto_pad_accepts_any_size_and_crops_back():
    model = timm.create_model("biformer_tiny", features_only=True, n_win=8, auto_pad=True,
                              **SMALL["biformer_tiny"]).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 100, 75))
    assert [tuple(f.shape[-2:]) for f in features] == [(25, 19), (13, 10), (7, 5), (4, 3)]


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = timm.create_model("biformer_tiny", **SMALL["biformer_tiny"])
    x = torch.randn(1, 3, 112, 112)  # stage maps 28/14/7/4: the routed stages stay multiples of n_win=7
    model(x).sum().backward()
    plain = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[name], msg=name)


# ----------------------------------------------------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------------------------------------------------


def test_one_channel_input_to_three_channel_model_is_named():
    model = timm.create_model("biformer_tiny", **SMALL["biformer_tiny"]).eval()
    with pytest.raises(ValueError, match=r"built for 3-channel input but got 1 channels.*in_chans=1"):
        model(torch.randn(1, 1, 224, 224))
    with pytest.raises(ValueError, match="3-channel"):
        model.forward_intermediates(torch.randn(1, 1, 224, 224))
    one_channel = timm.create_model("biformer_tiny", in_chans=1, **SMALL["biformer_tiny"]).eval()
    with torch.no_grad():
        assert one_channel(torch.randn(1, 1, 112, 112)).shape == (1, 1000)


@pytest.mark.parametrize(("variant", "stage1_size"), [("biformer_tiny", "58x58"), ("biformer_stl", "57x57")])
def test_size_not_divisible_by_n_win_names_n_win_size_and_auto_pad(variant, stage1_size):
    """auto_pad=False (the official classification model's behaviour) refuses such a size, naming the fix."""
    model = timm.create_model(variant, auto_pad=False, **SMALL[variant]).eval()
    with pytest.raises(ValueError, match=r"n_win=7") as info:
        model(torch.randn(1, 3, 230, 230))
    message = str(info.value)
    assert "auto_pad=True" in message and "230x230" in message and stage1_size in message


def test_bra_module_alone_names_n_win_and_auto_pad():
    module = BiLevelRoutingAttention(dim=32, num_heads=2, n_win=7, topk=2)
    with pytest.raises(ValueError, match=r"20x21.*n_win=7.*auto_pad=True"):
        module(torch.randn(1, 20, 21, 32))
    padded = BiLevelRoutingAttention(dim=32, num_heads=2, n_win=7, topk=2, auto_pad=True)
    assert padded(torch.randn(1, 20, 21, 32)).shape == (1, 20, 21, 32)


def test_unsupported_official_options_are_refused_clearly():
    with pytest.raises(NotImplementedError, match="identity"):
        BiFormer(kv_downsample_mode="ada_avgpool", depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128),
                 head_dim=16, topks=(1, 4, 16, -2))
    with pytest.raises(NotImplementedError, match="soft_routing"):
        BiLevelRoutingAttention(dim=32, num_heads=2, soft_routing=True, diff_routing=True)
    with pytest.raises(ValueError, match="topk=0"):
        BiFormer(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), head_dim=16, topks=(0, 4, 16, -2))


def test_module_names_are_the_official_ones():
    """Spot-check the layouts the quirks live in (the manifest test covers every key)."""
    block = biformer.BiFormerBlock(dim=64, num_heads=2, topk=4, qk_dim=64)
    assert block.attn.scale == 64 ** -0.5  # legacy quirk: qk_dim ** -0.5, not head_dim ** -0.5
    last = biformer.BiFormerBlock(dim=512, num_heads=16, topk=-2)
    assert last.attn.num_heads == 8 and last.attn.qkv.bias is None and last.attn.scale == (512 // 8) ** -0.5


# ----------------------------------------------------------------------------------------------------------------------
# Input sizes (issue 22): no weight depends on the size; img_size / set_input_size only record it
# ----------------------------------------------------------------------------------------------------------------------


def test_weights_load_unchanged_at_another_img_size_and_give_the_official_outputs_there(parity):
    """The official auto_pad fixture (n_win=8, a 186x250 input): a model built with img_size=(186, 250) loads the
    checkpoint unchanged and gives the official stage outputs, as one moved there with set_input_size."""
    fixture = parity("biformer_backbone_autopad")
    kwargs = fixture.meta["official_kwargs"]
    size = tuple(fixture.inputs["x"].shape[-2:])
    built = timm.create_model("biformer_tiny", img_size=size, **kwargs).double().eval()
    moved = timm.create_model("biformer_tiny", **kwargs).double().eval()
    moved.set_input_size(img_size=size)
    for model in (built, moved):
        model.load_state_dict(checkpoint_filter_fn(_float64_state(fixture.state_dict), model), strict=True)
        assert model.img_size == size
        with torch.no_grad():
            features = model.forward_intermediates(fixture.inputs["x"].double(), intermediates_only=True)
        for index, feature in enumerate(features):
            _assert_close(feature, fixture.outputs[f"stage{index}"], f"stage {index}")


def test_a_size_auto_pad_false_cannot_take_is_one_error_naming_the_sizes_it_can():
    kwargs = dict(SMALL["biformer_tiny"], auto_pad=False)
    with pytest.raises(ValueError, match=r"img_size \(384, 384\).*n_win=7.*sides 109-112, 221-224, 333-336.*"
                                         r"auto_pad=True"):
        timm.create_model("biformer_tiny", img_size=384, **kwargs)
    model = timm.create_model("biformer_tiny", img_size=448, **kwargs)  # 448 = 4 x 112: every routed map fits
    with pytest.raises(ValueError, match=r"sides 109-112"):
        model.set_input_size(img_size=(448, 300))
    assert model.img_size == (448, 448)  # a refused size leaves the model as it was
    model.set_input_size(img_size=224)
    assert model.img_size == (224, 224) and model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    stl = dict(SMALL["biformer_stl"], auto_pad=False)
    with pytest.raises(ValueError, match=r"sides 112-115, 224-227"):  # patchify stem: floor divisions
        timm.create_model("biformer_stl", img_size=300, **stl)
