"""Flowformer (vision) fidelity: official thuml/Flowformer Flowformer_CV checkpoints load strictly and give its logits.

The fixture ``flowformer_cls_224`` is the official ``Flowformer`` scaled down (embed_dim 12/24/48/96, depth 1/1/1/1,
10 classes; the hard-coded 12 heads make head dims 1/2/4/8) with seeded weights, its logits computed in float64.
The ``flowformer`` manifest lists every key and shape of the full-size official checkpoint.
"""

import pytest
import timm
import torch

from attnzoo.backbones.flowformer import Flowformer, checkpoint_filter_fn

SMALL = dict(embed_dim=(12, 24, 48, 96), depth=(1, 1, 1, 1))


@pytest.fixture(scope="module")
def case(parity):
    return parity("flowformer_cls_224")


def _small_from_fixture(case, **kwargs) -> Flowformer:
    kw = case.meta["official_kwargs"]
    model = timm.create_model("flowformer", embed_dim=tuple(kw["embed_dim"]), depth=tuple(kw["depth"]),
                              num_classes=kw["num_classes"], **kwargs)  # fmt: skip
    model.load_state_dict(checkpoint_filter_fn(case.state_dict, model), strict=True)
    return model


def test_official_logits_float64(case):
    model = _small_from_fixture(case).double().eval()
    with torch.no_grad():
        logits = model(case.inputs["x"].double())
    torch.testing.assert_close(logits, case.outputs["logits"].double(), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def full_size():
    # on the meta device: the full-size model's keys and shapes without 43M parameters of random init
    with torch.device("meta"):
        return timm.create_model("flowformer")


def test_full_size_official_checkpoint_loads_strictly(official_manifests, full_size):
    manifest = official_manifests["flowformer"]
    official = {"model": {key: torch.zeros(shape, device="meta") for key, shape in manifest.items()}}  # DeiT-style
    result = full_size.load_state_dict(checkpoint_filter_fn(official, full_size), strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert set(full_size.state_dict()) == set(manifest)


def test_published_config_is_43_3m_parameters(full_size):
    # Flowformer_CV/main.py's config builds 43.3M parameters; the paper's table says 41M
    model = full_size
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 43.3
    # the official quirk: 12 heads in every stage, head dims 8/16/32/64
    assert [stage[0].attn.num_heads for stage in model.blocks] == [12, 12, 12, 12]


def test_official_state_dict_keys_are_ours(case):
    model = timm.create_model("flowformer", num_classes=10, **SMALL)
    assert set(model.state_dict()) == set(case.state_dict)


def test_features_only_and_intermediates(case):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    features = timm.create_model("flowformer", features_only=True, **SMALL).eval()
    assert features.feature_info.channels() == [12, 24, 48, 96]
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        maps = features(x)
    assert [tuple(m.shape) for m in maps] == [(1, 12, 56, 56), (1, 24, 28, 28), (1, 48, 14, 14), (1, 96, 7, 7)]

    model = _small_from_fixture(case).eval()
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        torch.testing.assert_close(model.forward_head(final), model(x))
        only = model.forward_intermediates(x, indices=[1, 3], intermediates_only=True)
    assert [m.shape[1] for m in inter] == [12, 24, 48, 96]
    torch.testing.assert_close(only[0], inter[1])
    torch.testing.assert_close(only[1], inter[3])

    partial = timm.create_model("flowformer", features_only=True, out_indices=(0, 1), **SMALL)
    assert len(partial.model.blocks) == 2 and len(partial.model.patch_embed) == 2  # later stages pruned away
    with torch.no_grad():
        assert [m.shape[1] for m in partial(x)] == [12, 24]


def test_other_head_counts_are_an_option():
    model = timm.create_model("flowformer", num_heads=(1, 2, 4, 8), num_classes=5, **SMALL)
    assert [stage[0].attn.num_heads for stage in model.blocks] == [1, 2, 4, 8]
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 5)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        timm.create_model("flowformer", embed_dim=(16, 32, 64, 128), depth=(1, 1, 1, 1))


def test_checkpoint_for_another_image_size_resamples_the_position_embedding(case):
    model = timm.create_model("flowformer", img_size=256, num_classes=10, **SMALL)
    state = checkpoint_filter_fn(case.state_dict, model)
    assert state["pos_embed"].shape == (1, 64 * 64, 12)
    model.load_state_dict(state, strict=True)


def test_set_input_size_equals_building_at_the_size_and_loading_through_the_filter(case):
    """The official 224 weights moved to 256 in place == built at 256 + filter == dynamic_img_size at 256."""
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    moved = timm.create_model("flowformer", num_classes=10, **SMALL).eval()
    moved.load_state_dict(checkpoint_filter_fn(case.state_dict, moved), strict=True)
    moved.set_input_size(img_size=256)
    built = timm.create_model("flowformer", img_size=256, num_classes=10, **SMALL).eval()
    built.load_state_dict(checkpoint_filter_fn(case.state_dict, built), strict=True)
    dynamic = timm.create_model("flowformer", dynamic_img_size=True, num_classes=10, **SMALL).eval()
    dynamic.load_state_dict(checkpoint_filter_fn(case.state_dict, dynamic), strict=True)
    assert torch.equal(moved.pos_embed, built.pos_embed) and moved.pos_embed_grid == (64, 64)
    with torch.no_grad():
        logits = moved(x)
        assert torch.equal(logits, built(x))
        torch.testing.assert_close(dynamic(x), logits, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least 32"):
        moved.set_input_size(img_size=16)


def test_dynamic_img_size():
    model = timm.create_model("flowformer", dynamic_img_size=True, num_classes=3, **SMALL).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 256, 192)).shape == (1, 3)


def test_bad_inputs_raise_clear_errors():
    model = timm.create_model("flowformer", num_classes=10, **SMALL)
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 3, H, W\).*in_chans=1"):
        model(torch.randn(1, 1, 224, 224))
    with pytest.raises(ValueError, match="built for 224x224.*dynamic_img_size=True"):
        model(torch.randn(1, 3, 256, 256))


def test_checkpoint_of_another_variant_is_named_by_the_loader(case, tmp_path):
    """The filter passes another variant's keys through unchanged; attnzoo.load_checkpoint names them."""
    attnzoo = pytest.importorskip("attnzoo")
    deeper = {**case.state_dict, **{k.replace("blocks.0.0.", "blocks.0.1."): v
                                    for k, v in case.state_dict.items() if k.startswith("blocks.0.0.")}}  # fmt: skip
    model = timm.create_model("flowformer", num_classes=10, **SMALL)
    assert checkpoint_filter_fn(deeper, model) == deeper
    torch.save({"model": deeper}, tmp_path / "deeper.pth")
    with pytest.raises(attnzoo.CheckpointError, match=r"blocks\.0\.1\."):
        attnzoo.load_checkpoint(model, tmp_path / "deeper.pth")


def test_triton_path_trains_like_the_reference(monkeypatch):
    """The whole model through the fused kernel (on CUDA, or interpreted on the CPU) against the reference path, fp32."""
    torch.manual_seed(0)
    # 2 heads instead of 12 keep the interpreted programs few; the layout (packed qkv views) is the model's own
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = timm.create_model("flowformer", img_size=64, num_classes=4, num_heads=2, **SMALL).to(device)
    x = torch.randn(1, 3, 64, 64, device=device)
    results = {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("ZOO_KERNELS", backend)
        model.zero_grad()
        logits = model(x)
        logits.square().sum().backward()
        results[backend] = (logits.detach(), model.blocks[0][0].attn.qkv.weight.grad.clone())
    torch.testing.assert_close(results["triton"][0], results["reference"][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results["triton"][1], results["reference"][1], rtol=1e-3, atol=1e-5)


def test_eval_transform_is_the_official_short_side_256_centre_crop_224():
    """Flowformer_CV/datasets.py: Resize(256) on the short side, CenterCrop(224), bicubic."""
    from timm.data import create_transform, resolve_model_data_config
    from torchvision import transforms as T

    with torch.device("meta"):
        model = timm.create_model("flowformer")
    resize, crop = create_transform(**resolve_model_data_config(model), is_training=False).transforms[:2]
    assert isinstance(resize, T.Resize) and resize.size == 256
    assert isinstance(crop, T.CenterCrop) and tuple(crop.size) == (224, 224)
