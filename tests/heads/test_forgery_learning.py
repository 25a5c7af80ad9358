"""The detection heads learn the synthetic real-vs-generated set (tools/make_forgery_set.py) on the CPU: evidence that
data, training and evaluation code work end to end. UnivFD uses a tiny CLIP with random frozen weights (a linear
probe on it), NPR trains from scratch; both are measured by AP on the held-out split."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("albumentations")
pytest.importorskip("torchmetrics")

REPO = Path(__file__).resolve().parents[2]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("forgery_synth")
    return _tool("make_forgery_set").make_set(out, train=600, test=200, size=32, seed=0)


def _subset(path: Path, count: int) -> Path:
    lines = path.read_text().splitlines()[:count]
    subset = path.with_name(f"{path.stem}_{count}.jsonl")
    subset.write_text("\n".join(lines) + "\n")
    return subset


def test_set_layout_and_generators(synthetic_set):
    from attnzoo.heads.forgery.data import read_annotations

    records = read_annotations(synthetic_set["test"])
    assert len(records) == 200 and sum(r.label for r in records) == 100
    assert {r.generator for r in records} == {"nearest", "bilinear", "transposed_conv"}
    assert all(r.image_path.is_file() for r in records[:10])
    fakes = [r for r in records if r.label == 1]
    assert "Irregular Image Edges" in fakes[0].reasoning
    assert json.loads(synthetic_set["train"].read_text().splitlines()[0])["label"] == "real"


def test_univfd_linear_probe_reaches_high_ap(synthetic_set):
    train = _tool("forgery_train")
    from attnzoo.heads.forgery.metrics import average_precision

    model = train.build_detector("univfd", tiny=True, image_size=32)
    train_loader, test_loader = train.detector_loaders(model, synthetic_set["train"], 32, 64, False,
                                                       synthetic_set["test"])
    summary = train.train_linear_probe(model, train_loader, epochs=30, lr=1e-2, batch_size=16, log=lambda _: None)
    labels, scores = train.predict_detector(model, test_loader)
    ap = average_precision(labels, scores)
    print(f"UnivFD (tiny random CLIP) AP {ap:.4f} after {summary['steps']} steps, {summary['seconds']:.1f} s")
    assert ap > 0.85
    assert all(not p.requires_grad for p in model.clip.parameters())


def test_npr_reaches_high_ap_and_accuracy_at_one_half(synthetic_set):
    """AP ranks; accuracy needs calibrated scores. After 10 steps BatchNorm's running statistics are still mostly
    their initial values, so the README's run scored 50% at 0.5 (every real image called fake) with AP 99; the
    recalibration tools/forgery_train.py runs after training settles them."""
    train = _tool("forgery_train")
    from attnzoo.heads.forgery.baselines import recalibrate_batchnorm
    from attnzoo.heads.forgery.metrics import accuracy_split, average_precision

    torch.manual_seed(0)
    model = train.build_detector("npr", tiny=True, image_size=32)
    train_loader, test_loader = train.detector_loaders(model, _subset(synthetic_set["train"], 320), 32, 32, False,
                                                       synthetic_set["test"])
    summary = train.train_detector(model, train_loader, epochs=1, lr=2e-4, log=lambda _: None)
    assert recalibrate_batchnorm(model, train_loader) == 320
    labels, scores = train.predict_detector(model, test_loader)
    ap = average_precision(labels, scores)
    acc_real, acc_fake, acc = accuracy_split(labels, scores, 0.5)
    print(f"NPR AP {ap:.4f}, accuracy at 0.5 {acc:.4f} (real {acc_real:.2f}, fake {acc_fake:.2f}) after "
          f"{summary['steps']} steps, {summary['seconds']:.1f} s")
    assert ap > 0.95
    assert acc >= 0.9 and min(acc_real, acc_fake) >= 0.8


def test_batchnorm_recalibration_gives_the_average_batch_statistics():
    """After recalibration each BatchNorm holds the equal-weight average of its input's per-batch mean and unbiased
    variance under the current weights (not the exponential average from mean 0 / variance 1), the momenta and the
    train/eval mode are restored, and the weights are untouched."""
    from attnzoo.heads.forgery.baselines import NPR, recalibrate_batchnorm

    torch.manual_seed(0)
    model = NPR().eval()
    batches = [torch.randn(4, 3, 16, 16) * 0.3 + 0.1 for _ in range(3)]
    seen = []
    hook = model.bn1.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().clone()))
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    assert recalibrate_batchnorm(model, [(batch, torch.zeros(4)) for batch in batches]) == 12
    hook.remove()
    assert len(seen) == 3 and not model.training and model.bn1.momentum == 0.1
    expected_mean = torch.stack([x.mean(dim=(0, 2, 3)) for x in seen]).mean(0)
    expected_var = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x in seen]).mean(0)
    torch.testing.assert_close(model.bn1.running_mean, expected_mean)
    torch.testing.assert_close(model.bn1.running_var, expected_var)
    assert float(expected_var.mean()) < 0.5  # far from the initial 1: a calibration that did nothing would fail
    for key, value in weights.items():
        assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(ValueError, match="empty loader"):
        recalibrate_batchnorm(model, [])
    torch.testing.assert_close(model.bn1.running_var, expected_var)  # a failed call leaves them as they were


def test_augmentation_and_npr_input_checks():
    from attnzoo.heads.forgery.baselines import NPR, neighbouring_pixel_relationships, training_augmentation

    augment = training_augmentation(32, blur_prob=1.0, jpeg_prob=1.0, resize_prob=1.0)
    image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    out = augment(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    blocks = torch.arange(16.0).view(1, 1, 4, 4)
    residual = neighbouring_pixel_relationships(blocks)
    assert torch.equal(residual[..., ::2, ::2], torch.zeros(1, 1, 2, 2))  # top-left of each 2x2 block is its sample
    assert residual[0, 0, 1, 1] == blocks[0, 0, 1, 1] - blocks[0, 0, 0, 0]
    with pytest.raises(ValueError, match="even height and width"):
        NPR()(torch.randn(1, 3, 33, 32))
    with pytest.raises(ValueError, match="3 channels"):
        NPR()(torch.randn(1, 4, 32, 32))


def test_official_univfd_linear_layer_loads_strictly():
    """The released UniversalFakeDetect ``fc_weights.pth`` (4 KB, MIT; copied from the official repository at
    pretrained_weights/fc_weights.pth, sha256 4771007457...) fits a UnivFD head whose CLIP embeds to 768."""
    open_clip = pytest.importorskip("open_clip")
    from attnzoo.heads.forgery.baselines import UnivFD
    from attnzoo.heads.forgery.tiny import tiny_open_clip_config

    state = torch.load(REPO / "tests/heads/assets/univfd_fc_weights.pth", map_location="cpu", weights_only=True)
    model = UnivFD(open_clip.CLIP(**tiny_open_clip_config(embed_dim=768)))
    model.load_official_fc(state)
    images = torch.randn(2, 3, 56, 56)
    expected = model.clip.encode_image(images) @ state["weight"].T + state["bias"]
    torch.testing.assert_close(model(images), expected.squeeze(-1).detach())
    with pytest.raises(ValueError, match="768"):
        UnivFD(open_clip.CLIP(**tiny_open_clip_config(embed_dim=32))).load_official_fc(state)


def test_npr_matches_the_official_network():
    """State and float64 output of the official NPR resnet50(num_classes=1) (networks/resnet.py, seeded random
    weights, eval mode, a 32x32 input): our NPR takes the official keys strictly and gives the same logit."""
    from safetensors.torch import load_file

    from attnzoo.heads.forgery.baselines import NPR

    tensors = load_file(str(REPO / "tests/heads/assets/npr_official_r50_32.safetensors"))
    meta = json.loads((REPO / "tests/heads/assets/npr_official_r50_32.json").read_text())
    state = {k[len("state_dict."):]: v for k, v in tensors.items() if k.startswith("state_dict.")}
    state.update({k: torch.tensor(v) for k, v in meta["non_float_state"].items()})
    model = NPR().double().eval()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        logits = model(tensors["input.x"].double())
    torch.testing.assert_close(logits, tensors["output.logits"].double().squeeze(-1), rtol=1e-5, atol=1e-6)
