"""SLAB simplified linear attention benchmark: the official algorithm vs the fused Triton kernel.

    python tools/benchmark.py --op slab                               # CPU: SLAB-Swin-T and SLAB-PVT-T stages, batch 4
    python tools/benchmark.py --op slab --preset slab-224             # CUDA default: Swin-T, PVT-T, DeiT-S shapes, batch 128
    python tools/benchmark.py --op slab --preset tiny --device cpu --repeats 1

Rows (q and k after the ReLU feature map, forward and forward+backward):

- ``official``: ``attnzoo.kernels.slab.simplified_linear_attention_reference``, which *is* the official algorithm
  (xinghaochen/SLAB ``SimplifiedLinearAttention``: einsums in fp32, the product order picked by the same flop rule:
  the d x dv state first everywhere here except at 49 tokens and head dim 64, PVT-T stage 4, where the 49 x 49 scores
  are cheaper).
- ``triton``: ``attnzoo.kernels.slab.SimplifiedLinearAttentionFunction`` (one program per (batch, head), the d x dv state
  and the key sum on chip; CUDA only: the CPU interpreter would measure the interpreter).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` and the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _clone_import import make_attnzoo_importable

    make_attnzoo_importable()
    __package__ = "benchmarks"

from attnzoo.kernels.slab import (  # noqa: E402
    OFFICIAL_EPS,
    SimplifiedLinearAttentionFunction,
    simplified_linear_attention_reference,
)

from .harness import Case, OpBenchmark  # noqa: E402


def _case(label, batch, heads, n_queries, n_keys, head_dim):
    return Case(f"{label} B{batch} h{heads} N{n_queries}" + (f" M{n_keys}" if n_keys != n_queries else "") + f" d{head_dim}",
                dict(batch=batch, heads=heads, n_queries=n_queries, n_keys=n_keys, head_dim=head_dim))  # fmt: skip


def swin_t_stages(batch):
    """SLAB-Swin-T at 224 (official cfg: window 56, so one window per image in every stage), head dim 32."""
    return [_case(f"swin-t s{i + 1}", batch, heads, tokens, tokens, 32)
            for i, (tokens, heads) in enumerate([(3136, 3), (784, 6), (196, 12), (49, 24)])]  # fmt: skip


def pvt_t_stages(batch):
    """SLAB-PVT-T at 224: keys spatially reduced to 7x7 (sr 8/4/2/1), head dim 64."""
    return [_case(f"pvt-t s{i + 1}", batch, heads, tokens, 49, 64)
            for i, (tokens, heads) in enumerate([(3136, 1), (784, 2), (196, 5), (49, 8)])]  # fmt: skip


PRESETS = {
    "cpu": swin_t_stages(4) + pvt_t_stages(4),
    "slab-224": swin_t_stages(128) + pvt_t_stages(128) + [_case("deit-s", 128, 6, 196, 196, 64)],
    "tiny": [_case("tiny", 2, 2, 100, 100, 16), _case("tiny", 1, 2, 300, 49, 32)],
}


def make_inputs(case: Case, device: str, dtype: torch.dtype, requires_grad: bool) -> dict:
    p = case.params
    generator = torch.Generator().manual_seed(0)

    def leaf(tokens, non_negative):
        x = torch.randn(p["batch"], p["heads"], tokens, p["head_dim"], generator=generator)
        x = x.relu() if non_negative else x  # q and k arrive after the ReLU feature map
        return x.to(device=device, dtype=dtype).requires_grad_(requires_grad)

    q, k, v = leaf(p["n_queries"], True), leaf(p["n_keys"], True), leaf(p["n_keys"], False)
    grad_out = torch.randn(q.shape, generator=generator).to(device=device, dtype=dtype)
    return dict(q=q, k=k, v=v, grad_out=grad_out)


def _official(x):
    return simplified_linear_attention_reference(x["q"], x["k"], x["v"])


def _triton(x):
    return SimplifiedLinearAttentionFunction.apply(x["q"], x["k"], x["v"], OFFICIAL_EPS)


BENCHMARK = OpBenchmark(
    name="slab",
    description="SLAB simplified linear attention, (batch, heads, tokens, head_dim), q/k after ReLU",
    make_inputs=make_inputs,
    implementations={
        "official": (_official, ("cpu", "cuda")),
        "triton": (_triton, ("cuda",)),
    },
    presets=PRESETS,
    default_preset=lambda device: "slab-224" if device.startswith("cuda") else "cpu",
    baseline="official",
    notes=[
        "official = attnzoo.kernels.slab.simplified_linear_attention_reference: the official SLAB einsums (fp32 core, "
        "product order by the official flop rule).",
        "triton = attnzoo.kernels.slab.SimplifiedLinearAttentionFunction (one program per (batch, head), d x dv state on chip).",
    ],
)
