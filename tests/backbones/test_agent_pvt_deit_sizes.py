"""Input sizes of the PVT- and DeiT-shaped families (Agent-PVT, Agent-DeiT, SLAB-PVT, SLAB-DeiT, PRepBN-DeiT):
``img_size``, ``set_input_size``, checkpoints saved at another size, ``dynamic_img_size``, and the two released
high-resolution Agent models (agent_deit_small_448, agent_pvt_medium_256) against the official code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

import attnzoo.backbones.agent as agent
import attnzoo.backbones.slab as slab
from attnzoo.backbones.agent import AgentDeiT, AgentPVT

FIXTURES = Path(__file__).parents[1] / "fixtures"

# official-code fixture -> our class (tests/fixtures/PARITY_README.md, "Agent-Attention at other sizes")
PARITY = {"agent_deit_cls_448": AgentDeiT, "agent_pvt_cls_256": AgentPVT}

# agent_hr_official_manifests.json entry -> our timm name; parameters (millions) from agent_transformer/README.md
MANIFEST_MODELS = {"agent_deit_small_448": 23.1, "agent_pvt_medium_256": 36.1}

# name -> (checkpoint filter, small constructor arguments, built size, other size)
_PVT = dict(embed_dims=(16, 32, 32, 64), num_heads=(1, 2, 2, 4), depths=(1, 1, 1, 1), num_classes=5)
_DEIT = dict(embed_dim=32, depth=2, num_heads=2, num_classes=5)
FAMILIES = {
    "agent_pvt_tiny": (agent.checkpoint_filter_fn, _PVT, 64, 96),
    "agent_deit_tiny": (agent.checkpoint_filter_fn, _DEIT, 64, 96),
    # 'LLSS' with a reduced-key linear stage: the key encodings of the linear stages are size-dependent too
    "slab_pvt_tiny": (slab.checkpoint_filter_fn, dict(_PVT, attn_type="LLSS", la_sr_ratios="2111"), 64, 96),
    "slab_deit_tiny": (slab.checkpoint_filter_fn, _DEIT, 64, 96),
    "prepbn_deit_tiny": (slab.checkpoint_filter_fn, _DEIT, 64, 96),
}


def _meta_model(name, **kwargs):
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


def _randomized(model, seed=0):
    """Every float parameter and buffer random (a fresh model's zeros / ones would hide a missed resample)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if key.endswith("running_var"):  # RepBN's BatchNorm: a variance stays positive
                t.copy_(0.5 + torch.rand(t.shape, generator=gen, dtype=t.dtype))
            elif t.is_floating_point():
                t.copy_(0.2 * torch.randn(t.shape, generator=gen, dtype=t.dtype))
    return model


@pytest.fixture(scope="module")
def full_size():
    """The full-size released models on the meta device, built once (shapes only)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = _meta_model(name)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def hr_manifests():
    return json.loads((FIXTURES / "agent_hr_official_manifests.json").read_text())


@pytest.mark.parametrize("name", list(PARITY))
def test_official_logits(parity, name):
    """Float64 logits equal the official code's at the high-resolution configs' options (seeded weights)."""
    case = parity(name)
    kwargs = {k: v for k, v in case.meta["official_kwargs"].items() if k != "norm_layer"}  # LayerNorm(eps=1e-6)
    model = PARITY[name](**kwargs)
    model.load_state_dict(agent.checkpoint_filter_fn(case.state_dict, model), strict=True)
    with torch.no_grad():
        logits = model.double().eval()(case.inputs["x"].double())
    torch.testing.assert_close(logits.float(), case.outputs["logits"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(MANIFEST_MODELS))
def test_official_layout_loads_strictly(hr_manifests, full_size, name):
    """Every key and shape of the released full-size model (built by the official code at its size), strict=True."""
    model = full_size(name)
    state = {k: torch.zeros(shape, device="meta") for k, shape in hr_manifests[name].items()}
    filtered = agent.checkpoint_filter_fn({"model": state}, model)
    assert {k: tuple(v.shape) for k, v in filtered.items()} == {k: tuple(s) for k, s in hr_manifests[name].items()}
    result = model.load_state_dict(filtered, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    assert params_m == pytest.approx(MANIFEST_MODELS[name], abs=0.05)


def test_224_layout_loads_into_the_256_model(official_manifests, full_size):
    """agent_pvt_medium's 224 checkpoint layout goes into agent_pvt_medium_256 through the filter (on the meta
    device, as attnzoo.create_model checks the fit): the size-dependent tensors come out in the 256 shapes."""
    model = full_size("agent_pvt_medium_256")
    state = {k: torch.zeros(shape, device="meta") for k, shape in official_manifests["agent_pvt_medium"].items()}
    filtered = agent.checkpoint_filter_fn({"model": state}, model)
    assert tuple(filtered["pos_embed1"].shape) == (1, 64 * 64, 64)
    assert tuple(filtered["block1.0.attn.ha_bias"].shape) == (1, 1, 64, 1, 9)
    assert model.load_state_dict(filtered, strict=True, assign=True) is not None


def test_filter_equals_official_load_pretrained(parity):
    """A 224 state dict through the zoo filter into the 256 model = the official utils.load_pretrained result,
    tensor by tensor (position embeddings bicubic, agent biases linear, the rest unchanged)."""
    case = parity("agent_pvt_load_224_to_256")
    kwargs = {k: v for k, v in case.meta["official_kwargs"].items() if k not in ("norm_layer", "img_size")}
    model = AgentPVT(img_size=case.meta["target_img_size"], **kwargs).double()
    source = {k: v.double() for k, v in case.state_dict.items()}
    filtered = agent.checkpoint_filter_fn({"model": source}, model)
    expected = {k[len("loaded."):]: v for k, v in case.outputs.items()}
    assert set(filtered) == set(expected)
    resampled = [k for k in expected if expected[k].shape != source[k].shape]
    assert {k.rsplit(".", 1)[-1] for k in resampled} == {"pos_embed1", "pos_embed2", "pos_embed3", "pos_embed4",
                                                          "ah_bias", "aw_bias", "ha_bias", "wa_bias"}
    for key, value in expected.items():
        torch.testing.assert_close(filtered[key].float(), value, rtol=1e-5, atol=1e-6, msg=key)
    model.load_state_dict(filtered, strict=True)


@pytest.fixture(scope="module")
def resized():
    """Per family: a small model at its built size with random weights, the same model built at the other size with
    the first one's state through the family filter, the first one after set_input_size(other), and a
    dynamic_img_size twin of the first one (float64, eval)."""
    cache = {}

    def get(name):
        if name not in cache:
            filt, kwargs, size, other = FAMILIES[name]
            base = _randomized(timm.create_model(name, img_size=size, **kwargs)).double().eval()
            state = {k: v.clone() for k, v in base.state_dict().items()}
            built = timm.create_model(name, img_size=other, **kwargs).double().eval()
            built.load_state_dict(filt(state, built), strict=True)
            dynamic = timm.create_model(name, img_size=size, dynamic_img_size=True, **kwargs).double().eval()
            dynamic.load_state_dict(state, strict=True)
            base.set_input_size(img_size=other)
            cache[name] = dict(state=state, built=built, moved=base, dynamic=dynamic, size=size, other=other)
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(FAMILIES))
def test_set_input_size_equals_build_and_filter(resized, name):
    r = resized(name)
    moved, built = r["moved"].state_dict(), r["built"].state_dict()
    assert list(moved) == list(built)
    changed = [k for k in moved if moved[k].shape != r["state"][k].shape]
    assert changed, "nothing depends on the size?"
    for key in moved:
        torch.testing.assert_close(moved[key], built[key], rtol=0, atol=0, msg=key)
    x = torch.randn(2, 3, r["other"], r["other"], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(r["moved"](x), r["built"](x), rtol=0, atol=0)
    assert r["moved"].img_size == (r["other"], r["other"])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_dynamic_img_size_equals_set_input_size(resized, name):
    """dynamic_img_size=True at another size = set_input_size at that size; at the built size = the plain model."""
    r = resized(name)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, r["other"], r["other"], dtype=torch.float64, generator=gen)
    x0 = torch.randn(2, 3, r["size"], r["size"], dtype=torch.float64, generator=gen)
    plain = timm.create_model(name, img_size=r["size"], **FAMILIES[name][1]).double().eval()
    plain.load_state_dict(r["state"], strict=True)
    with torch.no_grad():
        torch.testing.assert_close(r["dynamic"](x), r["moved"](x), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(r["dynamic"](x0), plain(x0), rtol=0, atol=0)
        # non-square input (DeiT: the biases / encodings resized to the actual patch grid)
        out = r["dynamic"](torch.randn(1, 3, r["size"], r["other"], dtype=torch.float64, generator=gen))
    assert out.shape == (1, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["agent_pvt_tiny", "agent_deit_tiny", "slab_pvt_tiny"])
def test_sizes_a_model_cannot_take_are_a_clear_error(resized, name):
    _, kwargs, size, _ = FAMILIES[name]
    multiple = 32 if "pvt" in name else 16
    with pytest.raises(ValueError, match=rf"img_size=72: sizes are multiples of {multiple} from {multiple}"):
        _meta_model(name, img_size=72, **kwargs)
    with pytest.raises(ValueError, match=rf"multiples of {multiple}"):
        resized(name)["moved"].set_input_size(img_size=(size, size + 8))
    with pytest.raises(ValueError, match=rf"cannot take a {size}x{size + 8} input: sizes are multiples of {multiple}"):
        resized(name)["dynamic"](torch.randn(1, 3, size, size + 8, dtype=torch.float64))


def test_features_only_at_the_new_size():
    pvt = timm.create_model("agent_pvt_tiny", img_size=96, features_only=True, **_PVT).eval()
    deit = timm.create_model("agent_deit_tiny", img_size=96, features_only=True, out_indices=(1,), **_DEIT).eval()
    deit_dynamic = timm.create_model("agent_deit_tiny", dynamic_img_size=True, features_only=True, out_indices=(1,),
                                     **_DEIT).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert [tuple(f.shape) for f in pvt(x)] == [(1, 16, 24, 24), (1, 32, 12, 12), (1, 32, 6, 6), (1, 64, 3, 3)]
        assert [tuple(f.shape) for f in deit(x)] == [(1, 32, 6, 6)]
        assert [tuple(f.shape) for f in deit_dynamic(torch.randn(1, 3, 96, 128))] == [(1, 32, 6, 8)]


@pytest.mark.parametrize("name,resize,crop", [("agent_deit_small_448", 512, 448), ("agent_pvt_medium_256", 292, 256)])
def test_eval_transform_is_the_official_one_at_that_size(full_size, name, resize, crop):
    """agent_transformer/data/build.py (TEST.CROP): resize to an int(256 / 224 * size) square, centre-crop size."""
    from timm.data import create_transform, resolve_model_data_config
    from torchvision import transforms as T

    from attnzoo.cards import get_card

    model = full_size(name)
    config = resolve_model_data_config(model)
    assert config["input_size"] == (3, crop, crop) and config["crop_mode"] == "squash"
    resize_t, crop_t = create_transform(**config, is_training=False).transforms[:2]
    assert isinstance(resize_t, T.Resize) and tuple(resize_t.size) == (resize, resize)
    assert isinstance(crop_t, T.CenterCrop) and tuple(crop_t.size) == (crop, crop)
    card = get_card(name)
    assert tuple(card.input_size) == (3, crop, crop)
    assert card.params_m == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6, abs=0.005)


def test_set_input_size_keeps_frozen_parameters_frozen():
    """The rebuilt patch embeddings, blocks and position embeddings keep what the user froze before the resize."""
    model = timm.create_model("agent_pvt_tiny", depths=(1, 1, 1, 1), num_classes=3)
    model.pos_embed1.requires_grad_(False)
    model.patch_embed1.proj.weight.requires_grad_(False)
    model.set_input_size(img_size=256)
    assert model.pos_embed1.shape[1] == 64 * 64
    assert not model.pos_embed1.requires_grad and not model.patch_embed1.proj.weight.requires_grad
    assert model.pos_embed2.requires_grad and model.block1[0].attn.q.weight.requires_grad
