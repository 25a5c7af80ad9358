"""count_gflops: GMACs of matmuls/convs (attention included), the same on meta and CPU."""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.flops import count_gflops


class ConvAttentionNet(nn.Module):
    """A conv stem, one SDPA attention and a linear head: every counted op, with MACs computable by hand."""

    def __init__(self, channels=8, heads=2):
        super().__init__()
        self.heads = heads
        self.stem = nn.Conv2d(3, channels, kernel_size=4, stride=4)
        self.norm = nn.LayerNorm(channels)  # not counted
        self.qkv = nn.Linear(channels, 3 * channels)
        self.head = nn.Linear(channels, 10)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)  # (B, N, C)
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        return self.head(x.softmax(-1).mean(1))  # softmax and mean not counted


def expected_macs(h=32, w=32, c=8, batch=1):
    n = (h // 4) * (w // 4)
    stem = n * c * 3 * 4 * 4
    qkv = n * c * 3 * c
    attention = 2 * n * n * c  # q k^T and attn v, summed over heads (heads * head_dim = c)
    head = c * 10
    return batch * (stem + qkv + attention + head)


def test_counts_convs_linears_and_attention_matmuls():
    model = ConvAttentionNet()
    assert count_gflops(model, (3, 32, 32)) * 1e9 == expected_macs()
    assert count_gflops(model, (3, 32, 32), batch_size=2) * 1e9 == expected_macs(batch=2)


def test_meta_and_cpu_agree_on_a_fused_attention_model():
    cpu = timm.create_model("test_vit")  # timm's ViT attention runs fused SDPA on the CPU
    with torch.device("meta"):
        meta = timm.create_model("test_vit")
    assert count_gflops(cpu) == count_gflops(meta) > 0
    assert cpu.training is True  # restored after counting


def test_matches_a_published_number():
    with torch.device("meta"):
        model = timm.create_model("deit_tiny_patch16_224")
    assert abs(count_gflops(model) - 1.3) < 0.06  # DeiT paper (arXiv 2012.12877), Table 1: DeiT-Ti 1.3 GFLOPs


def test_default_input_size_is_the_models():
    with torch.device("meta"):
        model = timm.create_model("test_convnext")
    assert count_gflops(model) == count_gflops(model, (3, 160, 160)) != count_gflops(model, (3, 224, 224))
