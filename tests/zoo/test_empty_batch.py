"""Issue 35 item 9: an empty batch gives an empty output (``cannot reshape tensor of 0 elements`` before).

The README promises it for the plug-in layers (and a backward that gives every parameter a zero gradient); the models
whose attention or skeleton reshaped with ``-1`` (TransNeXt, MoH-TransNeXt, Agent-PVT / Swin / CSWin, the Swin, PVT
and CSWin skeletons the SLAB and PrepBN families share) give one too, whole and as feature extractors.
"""

from __future__ import annotations

import pytest
import timm
import torch

import attnzoo
from attnzoo.layers import MixtureOfHeadAttention, moh_balance_loss


@pytest.mark.parametrize("heads", [dict(), dict(num_heads=4, shared_heads=2, routed_heads=1),
                                   dict(num_heads=4, shared_heads=4, routed_heads=0),
                                   dict(num_heads=4, shared_heads=0, routed_heads=2)])
@pytest.mark.parametrize("shape", [(0, 16, 64), (2, 0, 64)])
def test_moh_layer_empty_in_empty_out_with_zero_gradients(heads, shape):
    layer = MixtureOfHeadAttention(64, **heads).train()
    x = torch.randn(*shape, requires_grad=True)
    out = layer(x)
    assert out.shape == shape
    loss = out.sum()
    if layer.routed_head:
        assert layer.moh_balance is not None and layer.moh_balance.item() == 0.0  # nothing routed, not NaN
        loss = loss + moh_balance_loss(layer, 0.01)
    loss.backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and not parameter.grad.any(), name


# the smallest variant of every family / skeleton that failed, at reduced depth where the constructor takes it
MODELS = {
    "transnext_micro": dict(depths=(1, 1, 1, 1)),
    "moh_transnext_small_75": dict(depths=(1, 1, 1, 1)),
    "agent_pvt_tiny": dict(depths=(1, 1, 1, 1)),
    "agent_swin_tiny": dict(depths=(1, 1, 2, 1)),
    "agent_cswin_tiny": dict(depth=(1, 1, 1, 1)),
    "agent_deit_tiny": dict(depth=3),
    "slab_swin_tiny": dict(depths=(1, 1, 1, 1)),
    "slab_pvt_tiny": dict(depths=(1, 1, 1, 1)),
    "slab_cswin_tiny": dict(depth=(1, 1, 1, 1)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_empty_in_empty_out(name):
    torch.manual_seed(0)
    model = attnzoo.create_model(name, pretrained=False, **MODELS[name])
    size = model.pretrained_cfg["input_size"]
    for training in (False, True):
        model.train(training)
        out = model(torch.randn(0, *size))
        assert out.shape == (0, model.num_classes)
    out.sum().backward()
    features = timm.create_model(name, pretrained=False, features_only=True, **MODELS[name]).eval()
    maps = features(torch.randn(0, *size))
    assert maps and all(m.shape[0] == 0 and m.dim() == 4 for m in maps)
    assert [m.shape[1] for m in maps] == features.feature_info.channels()
