"""Every kernel-using family trains under mixed precision on the Triton path, as a GPU user trains it.

One forward + backward of each family (tiny widths, 64x64 images; TransNeXt 32x32) under ``torch.autocast`` in bf16 and in fp16 with
``ZOO_KERNELS=triton`` (the Triton interpreter on the CPU, the kernels on a GPU): no error (under autocast the
modules hand the ops linear outputs in low precision next to float32 positional terms, which is how SLAB's
``q, k, v must share a dtype`` slipped past the fp32 tests), finite logits and gradients, and logits close to the
reference path under the same autocast.
"""

from __future__ import annotations

import pytest
import timm
import torch

import attnzoo.backbones  # noqa: F401  (registers the families with timm)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# one member of each kernel-using family, shrunk so the interpreter stays quick (one block per stage, narrow)
FAMILIES = {
    "biformer_tiny": dict(depth=(1, 1, 1, 1), embed_dim=(32, 64, 64, 64), n_win=2, topks=(1, 2, 4, -2),
                          qk_dims=(32, 64, 64, 64)),
    "agent_pvt_tiny": dict(embed_dims=(16, 32, 32, 64), num_heads=(1, 2, 2, 4), depths=(1, 1, 1, 1), img_size=64),
    "agent_swin_tiny": dict(embed_dim=16, depths=(1, 1, 2, 2), num_heads=(1, 2, 2, 4), img_size=64),
    "flowformer": dict(embed_dim=(12, 24, 48, 96), depth=(1, 1, 1, 1), num_heads=2, img_size=64),
    "slab_pvt_tiny": dict(embed_dims=(16, 32, 32, 64), num_heads=(1, 2, 2, 4), depths=(1, 1, 1, 1), img_size=64),
    "slab_swin_tiny": dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), img_size=64),
    "transnext_micro": dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), img_size=32),
    "moh_transnext_base_50": dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), img_size=32),
}  # fmt: skip
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# logits of the two paths, relative to the largest reference logit (both paths round their inputs to the autocast
# dtype; the kernels accumulate in fp32, the reference in its own order)
TOLERANCE = {"bf16": 5e-2, "fp16": 1e-2}


@pytest.fixture(scope="module")
def models():
    built = {}
    for name, kwargs in FAMILIES.items():
        torch.manual_seed(0)
        built[name] = timm.create_model(name, num_classes=5, drop_path_rate=0.0, **kwargs).to(DEVICE).eval()
    return built


def _step(model, images, dtype):
    model.zero_grad(set_to_none=True)
    x = images.clone().requires_grad_(True)
    with torch.autocast(DEVICE, dtype=dtype):
        logits = model(x)
    logits.float().logsumexp(-1).sum().backward()
    return logits.detach().float(), x.grad


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_trains_under_autocast_on_the_triton_path(monkeypatch, models, name, dtype):
    model = models[name]
    torch.manual_seed(1)
    size = FAMILIES[name].get("img_size", 64)
    images = torch.randn(1, 3, size, size, device=DEVICE)
    monkeypatch.setenv("ZOO_KERNELS", "triton")
    logits, grad = _step(model, images, DTYPES[dtype])
    assert torch.isfinite(logits).all(), f"{name} {dtype}: non-finite logits on the Triton path"
    assert grad is not None and torch.isfinite(grad).all(), f"{name} {dtype}: non-finite input gradient"
    assert grad.abs().sum() > 0
    monkeypatch.setenv("ZOO_KERNELS", "reference")
    reference, _ = _step(model, images, DTYPES[dtype])
    err = ((logits - reference).abs().max() / reference.abs().max().clamp_min(1e-6)).item()
    assert err <= TOLERANCE[dtype], f"{name} {dtype}: Triton path logits differ from the reference by {err:.2e}"
