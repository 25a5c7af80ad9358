"""attnzoo.layers.MixtureOfHeadAttention: MoH as a drop-in for timm's ViT attention, its routing, the balancing loss."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from attnzoo.layers import MixtureOfHeadAttention, moh_balance_loss
from attnzoo.tasks.export import compile_check, export_onnx

BALANCE_WEIGHT = 0.01  # SkyworkAI/MoH MoH-ViT/engine.py


def _moh_vit():
    """timm's vit_tiny (depth 2, 32 px, patch 8) with every block's Attention replaced by MoH, weights carried over."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", depth=2, img_size=32, patch_size=8, num_classes=5)
    for block in model.blocks:
        moh = MixtureOfHeadAttention(192, num_heads=3, shared_heads=1, routed_heads=1, qkv_bias=True)
        missing = moh.load_state_dict(block.attn.state_dict(), strict=False).missing_keys
        assert sorted(missing) == ["wg.weight", "wg_0.weight"]  # qkv / proj carried over; only the gates are new
        block.attn = moh
    return model


def test_drop_in_for_timm_vit_trains_with_the_balancing_loss():
    model = _moh_vit().train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    logits = model(x)
    balance = moh_balance_loss(model, BALANCE_WEIGHT)
    assert balance is not None and balance.item() >= BALANCE_WEIGHT * 1.0  # >= weight * top-k (k = 1)
    (F.cross_entropy(logits, y) + balance).backward()
    router = model.blocks[0].attn.wg.weight.grad
    assert router is not None and router.abs().sum() > 0  # the router learns (through the gates and the balance)
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        model(x)
    assert moh_balance_loss(model) is None  # eval forwards keep no loss


def test_routing_selects_top_k_and_matches_dense_heads():
    """Unselected routed heads weigh exactly 0: the output equals attention over only the selected heads."""
    torch.manual_seed(0)
    layer = MixtureOfHeadAttention(32, num_heads=4, shared_heads=1, routed_heads=2).eval()
    x = torch.randn(2, 10, 32)
    from attnzoo.backbones.layers import moh_head_gates

    gates, balance = moh_head_gates(layer, x)
    assert balance is None and gates.shape == (2, 10, 4)
    assert ((gates[..., 1:] > 0).sum(-1) == 2).all()  # each token: its top-2 of the 3 routed heads
    q, k, v = layer.qkv(x).reshape(2, 10, 3, 4, 8).permute(2, 0, 3, 1, 4)
    heads = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)  # (B, N, h, d)
    expected = layer.proj((heads * gates.unsqueeze(-1)).reshape(2, 10, 32))
    torch.testing.assert_close(layer(x), expected)
    assert layer.head_fraction == 0.75


def test_defaults_and_bad_arguments():
    layer = MixtureOfHeadAttention(256)  # 8 heads of 32: 2 shared, top-3 of 6 routed
    assert (layer.num_heads, layer.shared_head, layer.routed_head) == (8, 2, 3)
    with pytest.raises(ValueError, match="exceeds the 6 routable heads"):
        MixtureOfHeadAttention(256, shared_heads=2, routed_heads=7)
    with pytest.raises(ValueError, match="shared_heads >= 2"):
        MixtureOfHeadAttention(256, shared_heads=1, routed_heads=0)
    with pytest.raises(ValueError, match="build it with dim=64"):
        layer(torch.randn(1, 4, 64))
    with pytest.raises(ValueError, match=r"\(B, N, C\)"):
        layer(torch.randn(1, 256, 4, 4))


def test_compile_fullgraph_and_onnx(tmp_path):
    torch.manual_seed(0)
    layer = MixtureOfHeadAttention(64, num_heads=4).eval()

    class Wrap(torch.nn.Module):  # export_onnx takes image-shaped inputs: (1, 16, 64) as a (1, 1, 16, 64) "image"
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x[:, 0])

    x = torch.randn(1, 1, 16, 64)
    assert compile_check(Wrap(), x) < 1e-5
    result = export_onnx(Wrap(), tmp_path / "moh.onnx", input_size=(1, 16, 64), exporter="dynamo")
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4


def test_zoo_train_adds_the_official_balance_weight():
    """zoo train's loss: task loss + 0.01 * mean layer balance loss for MoH models, the task loss alone otherwise."""
    from attnzoo.tasks.classification.auxiliary_losses import MOH_BALANCE_WEIGHT, add_auxiliary_losses

    assert MOH_BALANCE_WEIGHT == BALANCE_WEIGHT
    model = _moh_vit().train()
    model(torch.randn(2, 3, 32, 32))
    layer_losses = torch.stack([block.attn.moh_balance for block in model.blocks])
    task = torch.tensor(1.5)
    torch.testing.assert_close(add_auxiliary_losses(task, model), task + 0.01 * layer_losses.mean())
    plain = timm.create_model("vit_tiny_patch16_224", depth=1, img_size=32, patch_size=8, num_classes=5).train()
    plain(torch.randn(1, 3, 32, 32))
    assert add_auxiliary_losses(task, plain) is task
