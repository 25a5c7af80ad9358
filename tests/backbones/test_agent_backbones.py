"""Agent-DeiT / Agent-PVT / Agent-Swin: official parity, official checkpoint layouts, downstream options, bad inputs."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

import attnzoo.backbones.agent as agent
from attnzoo.backbones.agent import AgentDeiT, AgentPVT, AgentSwinTransformer, checkpoint_filter_fn

PARITY = {
    "agent_pvt_cls_224": AgentPVT,
    "agent_swin_cls_224": AgentSwinTransformer,
    "agent_deit_cls_224": AgentDeiT,
}

# official_manifests.json variant -> our timm name
MANIFEST_MODELS = {
    "agent_pvt_tiny": "agent_pvt_tiny",
    "agent_pvt_small": "agent_pvt_small",
    "agent_pvt_medium": "agent_pvt_medium",
    "agent_pvt_large": "agent_pvt_large",
    "agent_swin_t": "agent_swin_tiny",
    "agent_swin_s": "agent_swin_small",
}

# Parameters (millions) from LeapLabTHU/Agent-Attention agent_transformer/README.md.
README_PARAMS_M = {
    "agent_deit_tiny": 6.0, "agent_deit_small": 22.7, "agent_deit_base": 87.2,
    "agent_pvt_tiny": 11.6, "agent_pvt_small": 20.6, "agent_pvt_medium": 35.9, "agent_pvt_large": 48.7,
    "agent_swin_tiny": 29, "agent_swin_small": 50, "agent_swin_base": 88,
    "agent_cswin_tiny": 21, "agent_cswin_small": 33, "agent_cswin_base": 73,
}


def _official_model(case):
    kwargs = dict(case.meta["official_kwargs"])
    kwargs.pop("norm_layer", None)  # "LayerNorm(eps=1e-6)": Agent-PVT's default here too
    return PARITY[case.name](**kwargs)


def _meta_model(name, **kwargs):
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("name", list(PARITY))
def test_official_logits(parity, name, backend, monkeypatch):
    """Float64 logits equal the official code's on its seeded weights, through both kernel paths."""
    monkeypatch.setenv("ZOO_KERNELS", backend)
    case = parity(name)
    model = _official_model(case)
    model.load_state_dict(checkpoint_filter_fn(case.state_dict, model), strict=True)
    model = model.double().eval()
    with torch.no_grad():
        logits = model(case.inputs["x"].double())
    torch.testing.assert_close(logits.float(), case.outputs["logits"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", list(MANIFEST_MODELS))
def test_official_checkpoint_layout_loads_strictly(official_manifests, variant):
    """Every key and shape of the full-size official checkpoint, through checkpoint_filter_fn, strict=True."""
    manifest = official_manifests[variant]
    model = _meta_model(MANIFEST_MODELS[variant])
    state = {k: torch.zeros(shape, device="meta") for k, shape in manifest.items()}
    result = model.load_state_dict(checkpoint_filter_fn({"model": state}, model), strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize("name", list(README_PARAMS_M))
def test_param_counts_match_readme(name):
    model = _meta_model(name)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    # README values are rounded (to 0.1 M or to 1 M); Agent-CSWin-T is listed as 21M, the official code builds 20.46 M
    # (checked against the official module: same state dict, same outputs).
    assert params_m == pytest.approx(README_PARAMS_M[name], abs=0.6)


def test_stage_layouts():
    """Swin-B 'AAMB2': agent attention in the first 2 blocks of stage 3; DeiT-B: agents (81) in its first 4 blocks."""
    swin = _meta_model("agent_swin_base")
    stage3 = [type(b.attn).__name__ for b in swin.layers[2].blocks]
    assert stage3 == ["SwinAgentAttention"] * 2 + ["WindowAttention"] * 16
    assert [b.window_size for b in swin.layers[2].blocks[2:4]] == [7, 7]
    assert [b.shift_size for b in swin.layers[2].blocks[2:4]] == [0, 3]
    assert type(swin.layers[3].blocks[1].attn).__name__ == "WindowAttention"
    assert swin.layers[3].blocks[1].shift_size == 0  # 7x7 grid, window 7: not shifted (classification)
    deit = _meta_model("agent_deit_base")
    kinds = [type(b).__name__ for b in deit.blocks]
    assert kinds == ["DeitAgentBlock"] * 4 + ["Block"] * 8
    assert deit.blocks[0].attn.agent_num == 81


def _official_downstream_biases(attn, hw, agent_shape):
    """The official downstream formulas, written out: each of the four tables resized on its own, then summed."""
    heads, a0 = attn.an_bias.shape[:2]
    pool = int(a0 ** 0.5)
    n, n_agents = hw[0] * hw[1], agent_shape[0] * agent_shape[1]

    def across_agents(t):  # (heads, a0, H, W) -> (heads, HW, ah, aw)
        t = t.reshape(heads, pool, pool, n).permute(0, 3, 1, 2)
        return F.interpolate(t, size=agent_shape, mode="bilinear")

    pb1 = across_agents(F.interpolate(attn.an_bias, size=hw, mode="bilinear"))
    pb2 = across_agents(F.interpolate((attn.ah_bias + attn.aw_bias).squeeze(0), size=hw, mode="bilinear"))
    position = (pb1.reshape(heads, n, n_agents).permute(0, 2, 1) + pb2.reshape(heads, n, n_agents).permute(0, 2, 1))
    ab1 = across_agents(F.interpolate(attn.na_bias, size=hw, mode="bilinear"))
    ab2 = across_agents(F.interpolate((attn.ha_bias + attn.wa_bias).squeeze(0).permute(0, 3, 1, 2), size=hw,
                                      mode="bilinear"))
    token = ab1.reshape(heads, n, n_agents) + ab2.reshape(heads, n, n_agents)
    return position.unsqueeze(0), token.unsqueeze(0)


@pytest.mark.parametrize("hw,agent_shape", [((14, 14), (7, 7)), ((19, 25), (12, 12)), ((9, 6), (9, 9))])
def test_downstream_bias_interpolation(hw, agent_shape):
    """Spatial and agent-grid interpolation of the biases = the official downstream formulas."""
    attn = agent.SwinAgentAttention(32, (14, 14), 2, agent_num=49, downstream_agent_shape=agent_shape).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_()
    got = attn.agent_biases(hw, hw, agent_shape)
    expected = _official_downstream_biases(attn, hw, agent_shape)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def _small_swin(**kwargs):
    return timm.create_model("agent_swin_tiny", embed_dim=16, depths=(1, 1, 2, 2), num_heads=(1, 2, 2, 4), **kwargs)


def _small_pvt(**kwargs):
    return timm.create_model("agent_pvt_tiny", embed_dims=(16, 32, 32, 64), num_heads=(1, 2, 2, 4),
                             depths=(1, 1, 1, 1), **kwargs)


@pytest.mark.parametrize("size", [(128, 128), (94, 126)])
def test_features_only_downstream_any_size(size):
    """features_only with the official detection/segmentation agent counts, on a non-square odd-sized input."""
    swin = _small_swin(features_only=True, downstream_agent_shapes=[(9, 9), (12, 12), (14, 14), (7, 7)],
                       always_partition=True, out_norms=True).eval()
    pvt = _small_pvt(features_only=True, downstream_agent_shapes=[(12, 12), (16, 16), (28, 28), (28, 28)]).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        swin_feats, pvt_feats = swin(x), pvt(x)
    h, w = -(-size[0] // 4), -(-size[1] // 4)  # Swin pads to the patch size and odd grids when merging
    expected = []
    for chs in [16, 32, 64, 128]:
        expected.append((1, chs, h, w))
        h, w = -(-h // 2), -(-w // 2)
    assert [tuple(f.shape) for f in swin_feats] == expected
    assert [f.shape[1] for f in pvt_feats] == [16, 32, 32, 64]
    assert tuple(pvt_feats[0].shape[2:]) == (size[0] // 4, size[1] // 4)
    assert swin.feature_info.reduction() == [4, 8, 16, 32]
    assert all(torch.isfinite(f).all() for f in swin_feats + pvt_feats)


def test_forward_intermediates_match_forward():
    model = _small_swin().eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(model.forward_head(final), model(x))
    assert len(intermediates) == 4
    pvt = _small_pvt().eval()
    with torch.no_grad():
        final, intermediates = pvt.forward_intermediates(x)
        torch.testing.assert_close(pvt.forward_head(final), pvt(x))
        assert pvt.prune_intermediate_layers([1]) == [1]
        assert [tuple(f.shape) for f in pvt.forward_intermediates(x, indices=[1], intermediates_only=True)] == [(2, 32, 8, 12)]


def test_downstream_swin_checkpoint_loads_with_out_norms():
    """A downstream checkpoint ({'state_dict': {'backbone.*', 'neck.*'}}) loads into out_norms=True."""
    model = _meta_model("agent_swin_tiny", out_norms=True, always_partition=True, num_classes=0)
    state = {f"backbone.{k}": v for k, v in model.state_dict().items() if not k.startswith(("norm.", "head"))}
    state["neck.lateral_convs.0.conv.weight"] = torch.zeros(1)
    filtered = checkpoint_filter_fn({"state_dict": state}, model)
    assert "norm0.weight" in filtered and not any(k.startswith("neck") for k in filtered)


def test_non_square_agent_num_is_a_clear_error():
    with pytest.raises(ValueError, match="perfect square"):
        agent.PvtAgentAttention(32, 49, 2, agent_num=50)
    with pytest.raises(ValueError, match="perfect square"):
        _meta_model("agent_swin_tiny", agent_num=(9, 16, 48, 49))


def test_token_count_not_the_told_grid_is_a_clear_error():
    pvt_attn = agent.PvtAgentAttention(32, 49, 2, agent_num=9)
    with pytest.raises(ValueError, match="told the grid is 7x7"):
        pvt_attn(torch.randn(1, 48, 32), 7, 7)
    swin_attn = agent.SwinAgentAttention(32, (7, 7), 2, agent_num=9)
    with pytest.raises(ValueError, match="told the grid is 6x8"):
        swin_attn(torch.randn(1, 49, 32), (6, 8))
    with pytest.raises(ValueError, match="1 \\+ 14x14 tokens"):
        agent.DeitAgentAttention(32, 2, window=14)(torch.randn(1, 196, 32))


def test_filter_passes_another_variants_keys_through_for_the_loader_to_name():
    """The filter only maps keys (drops the rebuilt buffers): another variant's keys reach the loader unchanged."""
    state = dict(_meta_model("agent_swin_small").state_dict())  # stage 3: 18 blocks, the tiny model's 6
    rebuilt = {"layers.0.blocks.0.attn.relative_position_index": torch.zeros(49, 49, dtype=torch.long)}
    filtered = checkpoint_filter_fn({"model": {**state, **rebuilt}}, _meta_model("agent_swin_tiny"))
    assert list(filtered) == list(state) and all(filtered[k] is v for k, v in state.items())


def test_agent_blocks_must_be_global():
    with pytest.raises(ValueError, match="global"):
        _meta_model("agent_swin_tiny", window_size=7)


@pytest.mark.parametrize("make", [_small_pvt, _small_swin], ids=["pvt", "swin"])
def test_fused_path_trains_like_the_reference(make, monkeypatch):
    """One training step's loss and every parameter gradient (agent biases included) agree across kernel paths."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = make(downstream_agent_shapes=[(4, 4), (5, 5), (7, 7), (7, 7)], drop_path_rate=0.0).to(device)
    images = torch.randn(2, 3, 72, 88, device=device)
    results = {}
    for path in ("reference", "triton"):
        monkeypatch.setenv("ZOO_KERNELS", path)
        model.zero_grad()
        loss = model(images).logsumexp(-1).mean()
        loss.backward()
        results[path] = (loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(results["triton"][0], results["reference"][0], rtol=1e-5, atol=1e-6)
    for name, grad in results["reference"][1].items():
        torch.testing.assert_close(results["triton"][1][name], grad, rtol=1e-3, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    assert results["reference"][1]["block1.0.attn.ah_bias" if make is _small_pvt else "layers.0.blocks.0.attn.ah_bias"].abs().sum() > 0


def test_imagenet_checkpoint_initialises_downstream_swin(official_manifests):
    """The official ImageNet layout into the downstream layout (out_norms): head and final norm dropped, the
    per-stage norms keep their initialisation (official downstream init_weights: load_state_dict(strict=False))."""
    model = _meta_model("agent_swin_tiny", out_norms=True, always_partition=True,
                        downstream_agent_shapes=[(9, 9), (12, 12), (14, 14), (7, 7)])
    state = {k: torch.zeros(shape, device="meta") for k, shape in official_manifests["agent_swin_t"].items()}
    filtered = checkpoint_filter_fn({"model": state}, model)
    assert not any(k.startswith(("head.", "norm.")) for k in filtered)
    model.load_state_dict(filtered, strict=True, assign=True)


@pytest.mark.parametrize("grid,shift,always_partition",
                         [((14, 14), 3, False), ((7, 7), 3, False), ((7, 7), 3, True), ((14, 21), 3, True)])
def test_window_blocks_equal_timm_swin(grid, shift, always_partition):
    """The 'B' blocks are Swin blocks: same parameter names and outputs as timm's SwinTransformerBlock, shifted window
    masks included (classification: a 7x7 grid is neither partitioned nor shifted; downstream, always_partition: it
    is). Grids that need padding are left out: the official downstream code pads before the cyclic shift, timm after."""
    from timm.models.swin_transformer import SwinTransformerBlock

    torch.manual_seed(0)
    ours = agent.SwinBlock(32, grid, 2, window_size=7, shift_size=shift, attn_type="B",
                           always_partition=always_partition).double().eval()
    theirs = SwinTransformerBlock(32, grid, 2, window_size=7, shift_size=shift, always_partition=always_partition,
                                  dynamic_mask=always_partition).double().eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.5)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, grid[0], grid[1], 32, dtype=torch.float64)
    with torch.no_grad():
        expected = theirs(x)
        got = ours(x.reshape(2, -1, 32), grid).reshape(expected.shape)
    torch.testing.assert_close(got, expected)


def test_agent_cswin_small_config_runs_and_checks_its_input():
    """Agent-CSWin: global agent strips at the official split sizes, CSWin strips elsewhere; fixed input size."""
    model = timm.create_model("agent_cswin_tiny", embed_dim=16, depth=(1, 1, 1, 1), num_heads=(2, 4, 8, 16),
                              attn_type="ABBB", num_classes=5).eval()
    first = model.stage1[0].attns
    assert len(first) == 1 and first[0].strip == (56, 56)  # global agent attention: one branch, whole map
    assert [a.strip for a in model.stage2[0].attns] == [(28, 2), (2, 28)]  # CSWin: columns and rows of width 2
    assert [a.strip for a in model.stage3[0].attns] == [(14, 7), (7, 14)]
    assert [a.strip for a in model.stage4[0].attns] == [(7, 7)]  # last stage: one branch
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 5)
    with pytest.raises(ValueError, match="tokens"):
        model.stage1[0](torch.randn(1, 55 * 56, 16))


@pytest.mark.parametrize("name", ["agent_deit_tiny", "agent_pvt_tiny", "agent_swin_tiny", "agent_cswin_tiny"])
def test_eval_transform_is_the_official_squash_then_centre_crop(name):
    """agent_transformer/data/build.py resizes every image to a 256x256 square, then centre-crops 224."""
    from timm.data import create_transform, resolve_model_data_config
    from torchvision import transforms as T

    with torch.device("meta"):
        model = timm.create_model(name)
    config = resolve_model_data_config(model)
    assert (config["crop_pct"], config["crop_mode"]) == (0.875, "squash")
    resize, crop = create_transform(**config, is_training=False).transforms[:2]
    assert isinstance(resize, T.Resize) and tuple(resize.size) == (256, 256)
    assert isinstance(crop, T.CenterCrop) and tuple(crop.size) == (224, 224)


@pytest.mark.parametrize("ckpt_name,model_name,named", [
    ("agent_pvt_small", "agent_pvt_tiny", "unexpected key"),  # more blocks: the extra ones are named
    ("agent_swin_small", "agent_swin_tiny", "unexpected key"),
    ("agent_deit_small", "agent_deit_tiny", "shape mismatch"),  # same depth, other width
])
def test_checkpoint_of_another_variant_is_a_clear_error_from_the_loader(ckpt_name, model_name, named):
    """What the filter passes through, the zoo's loader judges (attnzoo.weights.check_fit, as load_checkpoint calls it)."""
    zoo_weights = pytest.importorskip("attnzoo.weights")
    model = _meta_model(model_name)
    state = zoo_weights.prepare_state_dict({"model": dict(_meta_model(ckpt_name).state_dict())}, model)
    with pytest.raises(zoo_weights.CheckpointError, match=rf"does not fit {model_name}: .*{named}"):
        zoo_weights.check_fit(state, model, f"checkpoint {ckpt_name}")
