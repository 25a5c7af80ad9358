"""PoolFormer v1 fidelity: timm's MetaFormer with the official sail-sg checkpoint layout and head order.

The fixture ``poolformer_cls_224`` is the official ``poolformer.PoolFormer`` (sail-sg/poolformer) with seeded weights,
its outputs computed in float64. timm's own poolformer_* share every stage with it but not the head order;
backbones/poolformer_official.py gives the official head.
"""

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import GroupNorm1
from timm.models import metaformer as timm_metaformer
from torch import nn

from attnzoo.backbones.poolformer_official import PoolFormerV1Official, checkpoint_filter_fn

V1_SIZES = ("s12", "s24", "s36", "m36", "m48")


def _official_kwargs_to_timm(official_kwargs: dict) -> dict:
    # Official PoolFormer(layers, embed_dims, mlp_ratios, downsamples, num_classes): timm's MetaFormer fixes
    # mlp_ratio 4 and downsamples between every stage, so only those values can be built.
    assert all(r == 4 for r in official_kwargs["mlp_ratios"]), official_kwargs
    assert all(official_kwargs["downsamples"]), official_kwargs
    return dict(
        depths=official_kwargs["layers"],
        dims=official_kwargs["embed_dims"],
        num_classes=official_kwargs["num_classes"],
    )


def _timm_v1_metaformer(**kwargs) -> nn.Module:
    """timm's own PoolFormer v1 (timm.models.metaformer.poolformer_s12's arguments), at any depth/width."""
    return timm_metaformer.MetaFormer(
        downsample_norm=None,
        mlp_act=nn.GELU,
        mlp_bias=True,
        norm_layers=GroupNorm1,
        layer_scale_init_values=1e-5,
        res_scale_init_values=None,
        use_mlp_head=False,
        **kwargs,
    )


def _load_strict(model: nn.Module, official_state: dict) -> nn.Module:
    model.load_state_dict(checkpoint_filter_fn(official_state, model), strict=True)
    return model.double().eval()


@pytest.fixture(scope="module")
def case(parity):
    return parity("poolformer_cls_224")


def test_official_head_matches_official_logits(case):
    kwargs = _official_kwargs_to_timm(case.meta["official_kwargs"])
    model = _load_strict(PoolFormerV1Official(**kwargs), case.state_dict)
    with torch.no_grad():
        logits = model(case.inputs["x"].double())
    torch.testing.assert_close(logits, case.outputs["logits"].double(), rtol=1e-5, atol=1e-6)


def test_timm_default_head_gives_different_logits(case):
    """Why the official variant exists: timm's pool-then-norm head does not reproduce the official logits."""
    timm_model = _load_strict(
        _timm_v1_metaformer(**_official_kwargs_to_timm(case.meta["official_kwargs"])), case.state_dict)
    with torch.no_grad():
        logits = timm_model(case.inputs["x"].double())
    max_abs = (logits - case.outputs["logits"].double()).abs().max().item()
    assert max_abs > 1e-2, f"timm's v1 head now matches the official one (max abs {max_abs:.3g}); revisit the cards"


def test_stage_features_identical_to_timm(case):
    """Only the head differs: every stage output equals timm's poolformer for the same official weights."""
    kwargs = _official_kwargs_to_timm(case.meta["official_kwargs"])
    ours = _load_strict(PoolFormerV1Official(**kwargs), case.state_dict)
    theirs = _load_strict(_timm_v1_metaformer(**kwargs), case.state_dict)
    x = case.inputs["x"].double()
    with torch.no_grad():
        ours_feats = ours.forward_intermediates(x, intermediates_only=True)
        theirs_feats = theirs.forward_intermediates(x, intermediates_only=True)
    assert len(ours_feats) == 4
    for a, b in zip(ours_feats, theirs_feats):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("size", V1_SIZES)
def test_official_variant_is_timm_poolformer_except_head_norm(size, monkeypatch):
    """The *_official variants repeat timm's poolformer_<size> arguments: same modules, keys, shapes and
    layer-scale init; only head.norm differs (GroupNorm1 eps 1e-5 instead of LayerNorm2d eps 1e-6)."""
    theirs = timm.create_model(f"poolformer_{size}", device="meta")
    ours = timm.create_model(f"poolformer_{size}_official", device="meta")
    assert isinstance(ours, PoolFormerV1Official)
    theirs_lines, ours_lines = repr(theirs).splitlines(), repr(ours).splitlines()
    assert len(theirs_lines) == len(ours_lines)
    differing = [(a.strip(), b.strip()) for a, b in zip(theirs_lines, ours_lines) if a != b]
    assert differing == [
        ("MetaFormer(", "PoolFormerV1Official("),
        (
            f"(norm): LayerNorm2d(({theirs.num_features},), eps=1e-06, elementwise_affine=True, bias=True)",
            f"(norm): GroupNorm1(1, {theirs.num_features}, eps=1e-05, affine=True, bias=True)",
        ),
    ]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    # Layer-scale init values live only in the parameters: build both on the CPU (random init skipped for speed).
    monkeypatch.setattr(timm_metaformer, "trunc_normal_", lambda *args, **kwargs: None)
    theirs_scales = {n: p for n, p in timm.create_model(f"poolformer_{size}").named_parameters() if "scale" in n}
    ours_scales = {n: p for n, p in timm.create_model(f"poolformer_{size}_official").named_parameters() if "scale" in n}
    assert theirs_scales.keys() == ours_scales.keys() and len(ours_scales) > 0
    for name, value in theirs_scales.items():
        torch.testing.assert_close(ours_scales[name], value, rtol=0, atol=0)
    url, cache_name = ours.pretrained_cfg["url"]  # the official file, cached under a name of its own
    assert url == f"https://github.com/sail-sg/poolformer/releases/download/v1.0/poolformer_{size}.pth.tar"
    assert cache_name == f"poolformer_{size}_official.sail_in1k.pth.tar"
    assert ours.pretrained_cfg["crop_pct"] == theirs.pretrained_cfg["crop_pct"]


@pytest.mark.parametrize("variant", ["poolformer_s12", "poolformer_m36"])
@pytest.mark.parametrize("official_head", [True, False], ids=["official", "timm"])
def test_official_manifest_loads_strictly(official_manifests, variant, official_head):
    """Every key/shape of the full-size official checkpoint maps onto the model, none left over, none missing."""
    name = f"{variant}_official" if official_head else variant
    model = timm.create_model(name, device="meta")
    zeros = {key: torch.zeros(shape) for key, shape in official_manifests[variant].items()}
    filtered = checkpoint_filter_fn(zeros, model)
    assert len(filtered) == len(zeros)
    model.load_state_dict(filtered, strict=True, assign=True)


def test_filter_reports_unknown_keys_instead_of_raising(case):
    """timm's filter raises a bare KeyError on a key the model lacks; ours passes it through so that the strict
    load (or attnzoo.load_checkpoint) names it."""
    model = PoolFormerV1Official(**_official_kwargs_to_timm(case.meta["official_kwargs"]))
    state = dict(case.state_dict, **{"dist_head.weight": torch.zeros(10, 128)})
    filtered = checkpoint_filter_fn(state, model)
    assert "dist_head.weight" in filtered
    with pytest.raises(RuntimeError, match="dist_head.weight"):
        model.load_state_dict(filtered, strict=True)


def test_filter_unwraps_model_container_and_passes_timm_layout_through(case):
    model = PoolFormerV1Official(**_official_kwargs_to_timm(case.meta["official_kwargs"]))
    from_wrapped = checkpoint_filter_fn({"model": case.state_dict}, model)
    assert from_wrapped.keys() == model.state_dict().keys()
    timm_layout = model.state_dict()
    assert checkpoint_filter_fn(timm_layout, model) is timm_layout


def test_features_only_and_pruning():
    model = timm.create_model("poolformer_s12_official", features_only=True, pretrained=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model(x)
    assert [f.shape[1] for f in feats] == [64, 128, 320, 512]
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]

    model = timm.create_model("poolformer_s12_official", num_classes=7).eval()
    with torch.no_grad():
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (1, 512)
        model.prune_intermediate_layers(indices=[0, 1, 2])
        feats = model.forward_intermediates(x, intermediates_only=True)
    assert [f.shape[1] for f in feats] == [64, 128, 320]


# ------------------------------------------------------------------------------ the user's path: attnzoo.load_checkpoint


@pytest.fixture
def hub_checkpoints(tmp_path):
    """torch.hub's cache pointed at a temporary folder (where pretrained=True and card names look for files)."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    yield folder
    torch.hub.set_dir(previous)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth.tar"])
def test_zoo_load_checkpoint_gives_official_logits(case, tmp_path, suffix):
    import attnzoo

    path = tmp_path / f"poolformer_official_layout{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in case.state_dict.items()}, str(path))
    else:  # the sail-sg release files are raw state dicts pickled by torch.save
        torch.save(dict(case.state_dict), path)
    model = PoolFormerV1Official(**_official_kwargs_to_timm(case.meta["official_kwargs"]))
    attnzoo.load_checkpoint(model, path)
    with torch.no_grad():
        logits = model.double().eval()(case.inputs["x"].double())
    torch.testing.assert_close(logits, case.outputs["logits"].double(), rtol=1e-5, atol=1e-6)


def test_zoo_load_checkpoint_names_a_foreign_key(case, tmp_path):
    import attnzoo
    from attnzoo import CheckpointError

    path = tmp_path / "with_extra_key.safetensors"
    save_file(dict(case.state_dict, **{"dist_head.weight": torch.zeros(10, 128)}), str(path))
    model = PoolFormerV1Official(**_official_kwargs_to_timm(case.meta["official_kwargs"]))
    with pytest.raises(CheckpointError, match="unexpected key.*dist_head.weight"):
        attnzoo.load_checkpoint(model, path)


def test_card_and_pretrained_paths_load_the_official_release_layout(official_manifests, hub_checkpoints, monkeypatch):
    """The full-size official s12 layout, placed where the release URL is cached (under the cfg's own file name), loads
    strictly both through attnzoo.load_checkpoint(model, "<card name>") and timm.create_model(..., pretrained=True)."""
    import attnzoo

    monkeypatch.setattr(timm_metaformer, "trunc_normal_", lambda *args, **kwargs: None)  # init is overwritten anyway
    card = attnzoo.get_card("poolformer_s12_official")
    model = timm.create_model("poolformer_s12_official")
    url, cache_name = model.pretrained_cfg["url"]
    assert card.checkpoints[0].url == url
    release = {key: torch.full(shape, 0.5) for key, shape in official_manifests["poolformer_s12"].items()}
    torch.save(release, hub_checkpoints / cache_name)

    attnzoo.load_checkpoint(model, "poolformer_s12_official")
    assert all(bool((p == 0.5).all()) for p in model.parameters())
    pretrained = timm.create_model("poolformer_s12_official", pretrained=True)
    assert all(bool((p == 0.5).all()) for p in pretrained.parameters())
