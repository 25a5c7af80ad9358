"""Input sizes of the Swin- and CSWin-shaped Agent and SLAB models: the released high-resolution Agent-Swin /
Agent-CSWin layouts (official parity at 288 / 384, strict loads), img_size setting the window / strips as the official
configs do, 224 -> N checkpoints by the official load_pretrained rule, set_input_size, sizes a model cannot take."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

import attnzoo.backbones.agent as agent
import attnzoo.backbones.slab as slab
from attnzoo.backbones.agent import AgentCSWin, AgentSwinTransformer

FIXTURES = Path(__file__).parents[1] / "fixtures"

PARITY = {
    "agent_swin_cls_288": AgentSwinTransformer,
    "agent_swin_cls_384_aamb2": AgentSwinTransformer,
    "agent_cswin_cls_384": AgentCSWin,
}

# agent_hr_official_manifests.json entry (official cfgs/*.yaml name) -> our timm name
HR_MANIFESTS = {
    "agent_swin_s_288": "agent_swin_small_288",
    "agent_swin_b_384": "agent_swin_base_384",
    "agent_cswin_b_384": "agent_cswin_base_384",
}

SWIN = dict(embed_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), num_classes=5)
CSWIN = dict(embed_dim=8, depth=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), num_classes=5)


@pytest.fixture(scope="module")
def hr_manifests():
    return json.loads((FIXTURES / "agent_hr_official_manifests.json").read_text())


def _meta_model(name, **kwargs):
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


@pytest.mark.parametrize("name", list(PARITY))
def test_official_logits_at_released_sizes(parity, name):
    """Float64 logits equal the official code's, with the window / strips left to img_size (the official configs set
    them explicitly: window 72 / 96, strips 96-48-24-12, split 1-2-12-12)."""
    case = parity(name)
    kwargs = {k: v for k, v in case.meta["official_kwargs"].items()
              if k not in ("window_size", "split_size", "la_split_size", "patch_size")}
    model = PARITY[name](**kwargs)
    model.load_state_dict(agent.checkpoint_filter_fn(case.state_dict, model), strict=True)
    model = model.double().eval()
    with torch.no_grad():
        logits = model(case.inputs["x"].double())
    torch.testing.assert_close(logits.float(), case.outputs["logits"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", list(HR_MANIFESTS))
def test_released_layouts_load_strictly(hr_manifests, variant):
    """Every key and shape of the full-size released high-resolution model, through checkpoint_filter_fn, strict."""
    model = _meta_model(HR_MANIFESTS[variant])
    state = {k: torch.zeros(shape, device="meta") for k, shape in hr_manifests[variant].items()}
    result = model.load_state_dict(agent.checkpoint_filter_fn({"model": state}, model), strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_released_layouts_derive_window_and_strips():
    """img_size sets what the official configs set: Swin-S-288 window 72 (window blocks 9), Swin-B-384 'AAMB2' with
    window 96 (window blocks 12, shift 6), CSWin-B-384 agent strips 96-48-24-12 and split 12 in stage 3."""
    small = dict(embed_dim=8, num_heads=(1, 2, 4, 8))
    s288 = _meta_model("agent_swin_small_288", depths=(2, 2, 2, 2), **small)
    assert [b.attn.ah_bias.shape[3] for b in s288.layers[0].blocks] == [72, 72]
    assert [(b.window_size, b.shift_size) for b in s288.layers[2].blocks] == [(9, 0), (9, 4)]
    b384 = _meta_model("agent_swin_base_384", depths=(1, 1, 4, 1), **small)
    kinds = [type(b.attn).__name__ for b in b384.layers[2].blocks]
    assert kinds == ["SwinAgentAttention"] * 2 + ["WindowAttention"] * 2
    assert [(b.window_size, b.shift_size) for b in b384.layers[2].blocks[2:]] == [(12, 0), (12, 6)]
    assert b384.layers[0].blocks[0].attn.ah_bias.shape[3] == 96
    c384 = _meta_model("agent_cswin_base_384", **CSWIN)
    assert [c384.get_submodule(f"stage{i + 1}")[0].attns[0].strip for i in range(2)] == [(96, 96), (48, 48)]
    assert [a.strip for a in c384.stage3[0].attns] == [(24, 12), (12, 24)]  # 'B': CSWin strips, split 12
    assert [a.strip for a in c384.stage4[0].attns] == [(12, 12)]
    cfg = timm.models.get_pretrained_cfg("agent_swin_small_288").to_dict()
    assert (cfg["input_size"], cfg["crop_pct"], cfg["crop_mode"]) == ((3, 288, 288), 1.0, "squash")


def test_224_checkpoint_into_288_equals_official_load_pretrained(parity, tmp_path):
    """A 224 Agent-Swin checkpoint (window 56) loaded through timm's pretrained=True into the model built at 288
    (window 72) gives, tensor by tensor, what the official utils.load_pretrained gives."""
    import attnzoo  # noqa: F401  (installs the safe checkpoint loader)

    case = parity("agent_swin_load_224_to_288")
    torch.save({"model": case.state_dict}, tmp_path / "agent_swin_small_224.pth")
    arch = case.meta["official_kwargs_288"]
    model = timm.create_model("agent_swin_small_288", pretrained=True, embed_dim=arch["embed_dim"],
                              depths=arch["depths"], num_heads=arch["num_heads"], num_classes=arch["num_classes"],
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "agent_swin_small_224.pth")))
    expected = {k[len("state_dict_288."):]: v for k, v in case.outputs.items()}
    state = model.state_dict()
    assert set(state) == set(expected)
    resized = [k for k in state if tuple(case.state_dict[k].shape) != tuple(state[k].shape)]
    assert any(k.endswith("ha_bias") for k in resized) and any(k.endswith("bias_table") for k in resized)
    for key, value in state.items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)


def test_224_release_loads_into_288_layout(official_manifests):
    """The released Agent-Swin-S 224 layout fits agent_swin_small_288 through the filter (its size-dependent tensors
    resampled), as the official 288 fine-tuning starts from it."""
    model = _meta_model("agent_swin_small_288")
    state = {k: torch.zeros(shape, device="meta") for k, shape in official_manifests["agent_swin_s"].items()}
    result = model.load_state_dict(agent.checkpoint_filter_fn({"model": state}, model), strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_another_variant_is_not_resampled():
    """Only the size-dependent axes are resampled: a checkpoint of another width (other head counts) at 224 passes
    the filter with its shapes, so the loader still refuses it."""
    other = _meta_model("agent_swin_tiny", embed_dim=16, depths=(1, 1, 2, 1), num_heads=(2, 4, 8, 16))
    model = _meta_model("agent_swin_tiny", img_size=288, **SWIN)
    state = agent.checkpoint_filter_fn(dict(other.state_dict()), model)
    for key in ("layers.0.blocks.0.attn.ha_bias", "layers.3.blocks.0.attn.relative_position_bias_table"):
        assert state[key].shape == other.state_dict()[key].shape != model.state_dict()[key].shape
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.load_state_dict(state, strict=True, assign=True)


SET_SIZE_CASES = {
    "agent_swin_tiny": (agent, SWIN, 288),
    "slab_swin_tiny": (slab, SWIN, 288),
    "agent_cswin_tiny": (agent, CSWIN, 256),
    "slab_cswin_tiny": (slab, CSWIN, 256),
}


@pytest.mark.parametrize("name", list(SET_SIZE_CASES))
def test_set_input_size_equals_build_at_size_plus_filter(name):
    """set_input_size(N) on a 224 model == the model built at N loading the 224 state dict through the family filter:
    same state, same outputs."""
    family, kwargs, size = SET_SIZE_CASES[name]
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs).eval()
    built = timm.create_model(name, img_size=size, **kwargs).eval()
    built.load_state_dict(family.checkpoint_filter_fn(model.state_dict(), built), strict=True)
    model.set_input_size(img_size=size)
    expected = built.state_dict()
    assert set(model.state_dict()) == set(expected)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), built(x), rtol=0, atol=0)


def test_img_size_sets_agent_swin_window():
    """The issue's case: agent_swin_tiny at img_size=384 (was 'window_size 56 must cover the stage grid (96, 96)')
    takes window 96; an explicit window_size still wins, and a too-small one gets the error naming the fix."""
    small = dict(embed_dim=8, num_heads=(1, 2, 4, 8), depths=(1, 1, 1, 1))
    model = _meta_model("agent_swin_tiny", img_size=384, **small)
    assert model.layers[0].blocks[0].attn.ah_bias.shape[3] == 96 and model.layers[3].blocks[0].window_size == 12
    assert _meta_model("agent_swin_small", **small).layers[2].blocks[0].window_size == 7  # 56 // 8
    explicit = _meta_model("agent_swin_small", window_size=64, **small)
    assert explicit.layers[2].blocks[0].window_size == 8  # 64 // 8: the explicit window, not img_size's
    with pytest.raises(ValueError, match=r"window_size 56 must cover the stage grid \(96, 96\).*img_size // 4"):
        _meta_model("agent_swin_tiny", img_size=384, window_size=56, **small)


@pytest.mark.parametrize("name, kwargs", [("agent_swin_tiny", dict(img_size=300)),
                                          ("slab_swin_tiny", dict(img_size=(224, 240))),
                                          ("agent_cswin_tiny", dict(img_size=(224, 256))),
                                          ("slab_cswin_tiny", dict(img_size=200))])
def test_size_a_model_cannot_take(name, kwargs):
    with pytest.raises(ValueError, match="cannot take img_size=.*multiples of 32"):
        _meta_model(name, **kwargs)


def test_set_input_size_refuses_a_size_and_keeps_the_model():
    torch.manual_seed(0)
    model = timm.create_model("agent_swin_tiny", **SWIN).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="multiples of 32"):
        model.set_input_size(img_size=300)
    assert model.img_size == (224, 224)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name, kwargs", [("agent_swin_small_288", SWIN), ("agent_cswin_tiny", CSWIN)])
def test_features_only_at_288(name, kwargs):
    extra = {} if name == "agent_swin_small_288" else dict(img_size=288)
    kwargs = {k: v for k, v in kwargs.items() if k != "num_classes"}
    model = timm.create_model(name, features_only=True, **kwargs, **extra).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 288, 288))
    assert [tuple(f.shape[-2:]) for f in feats] == [(72, 72), (36, 36), (18, 18), (9, 9)]
    assert [f.shape[1] for f in feats] == model.feature_info.channels()
