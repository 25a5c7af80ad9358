"""Bi-level routing attention benchmark: the Triton kernel, our reference (the spec) and the official gather.

Shapes are feature maps (B, H, W, C, n_win, topk) as issue 4 gives them: R = n_win^2 regions of (H/n_win)(W/n_win)
tokens, C channels for q, k and v, heads = C / 32 (BiFormer's head_dim), scale = C^-0.5 (the legacy qk_dim^-0.5).
The routing comes from ``region_routing`` on the random q, k (every implementation gets the same r_idx).
``sdpa_dense`` (CUDA) is F.scaled_dot_product_attention over all H*W tokens, the dense attention BRA should beat.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attnzoo.kernels.bra import bra_attention_gather, bra_attention_reference, bra_attention_triton, region_routing

from .harness import Case, OpBenchmark

HEAD_DIM = 32


def _case(batch, height, width, channels, n_win, topk, stage=""):
    label = f"{stage}B{batch} {height}x{width} C{channels} w{n_win} k{topk}".strip()
    return Case(label, dict(batch=batch, height=height, width=width, channels=channels, n_win=n_win, topk=topk))


# issue 4's anchors: BiFormer-T stages at 224 (bs 64), at 512 (bs 8, n_win 8) and at detection size (bs 2, n_win 16)
ANCHORS = [
    _case(64, 56, 56, 64, 7, 1),
    _case(64, 28, 28, 128, 7, 4),
    _case(64, 14, 14, 256, 7, 16),
    _case(8, 128, 128, 64, 8, 1),
    _case(8, 64, 64, 128, 8, 4),
    _case(8, 32, 32, 256, 8, 16),
    _case(2, 208, 304, 64, 16, 1),
    _case(2, 64, 80, 256, 16, 16),
]


def biformer_t_224(batch: int) -> list[Case]:
    """The three BRA stages of BiFormer-T at 224x224 (n_win 7, topks 1/4/16, dims 64/128/256; stage 4 is dense)."""
    return [
        _case(batch, 56, 56, 64, 7, 1, "s1 "),
        _case(batch, 28, 28, 128, 7, 4, "s2 "),
        _case(batch, 14, 14, 256, 7, 16, "s3 "),
    ]


PRESETS = {
    "anchors": ANCHORS,
    "biformer-t-224": biformer_t_224(8),
    "biformer-t-224-bs64": biformer_t_224(64),
    "tiny": [_case(2, 14, 14, 64, 7, 4), _case(1, 26, 38, 64, 2, 2)],
}


def make_inputs(case: Case, device: str, dtype: torch.dtype, requires_grad: bool) -> dict:
    p = case.params
    batch, height, width, channels, n_win, topk = (p[k] for k in ("batch", "height", "width", "channels", "n_win", "topk"))
    if height % n_win or width % n_win:
        raise ValueError(f"{height}x{width} is not divisible by n_win={n_win}")
    regions, tokens = n_win * n_win, (height // n_win) * (width // n_win)
    generator = torch.Generator(device="cpu").manual_seed(0)

    def tensor(*shape):
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype).requires_grad_(requires_grad)

    q, k, v = (tensor(batch, regions, tokens, channels) for _ in range(3))
    scale = channels**-0.5
    r_idx = region_routing(q, k, topk, scale)
    grad_out = torch.randn(batch, regions, tokens, channels, generator=generator).to(device=device, dtype=dtype)
    return dict(q=q, k=k, v=v, r_idx=r_idx, heads=channels // HEAD_DIM, scale=scale, grad_out=grad_out)


def _bra(fn):
    return lambda x: fn(x["q"], x["k"], x["v"], x["r_idx"], x["heads"], x["scale"])


def _sdpa_dense(x):
    """Dense attention over all tokens with the same q/k/v (layout changes excluded from what it is asked to beat)."""
    batch, regions, tokens, channels = x["q"].shape
    heads = x["heads"]

    def to_heads(t):
        return t.reshape(batch, regions * tokens, heads, channels // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(to_heads(x["q"]), to_heads(x["k"]), to_heads(x["v"]), scale=x["scale"])
    return out.transpose(1, 2).reshape(batch, regions, tokens, channels)


BENCHMARK = OpBenchmark(
    name="bra",
    description="bi-level routing attention, (B, H, W, C, n_win, topk), heads = C/32",
    make_inputs=make_inputs,
    implementations={
        "triton": (_bra(bra_attention_triton), ("cuda",)),
        "reference": (_bra(bra_attention_reference), ("cpu", "cuda")),
        "gather": (_bra(bra_attention_gather), ("cpu", "cuda")),
        "sdpa_dense": (_sdpa_dense, ("cuda",)),
    },
    presets=PRESETS,
    default_preset=lambda device: "anchors" if device.startswith("cuda") else "biformer-t-224",
    baseline="gather",
    notes=[
        "gather = the official algorithm (rayleizhu/BiFormer ops/bra_legacy.py: topk-fold KV gather + dense matmuls).",
        "reference = attnzoo.kernels.bra's spec: a loop over the routed slots (one routed region per query region at a time).",
        "triton = the fused kernel (routed regions read in place; backward recomputes from the fp32 logsumexp).",
        "sdpa_dense = F.scaled_dot_product_attention over all H*W tokens (no routing), for scale.",
    ],
)
