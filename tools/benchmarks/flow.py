"""Flow-Attention benchmark: the op's paths, and (``__main__``) Flowformer training per kernel path.

    python tools/benchmark.py --op flow                               # CPU: Flowformer stages + causal up to L=64k
    python tools/benchmark.py --op flow --preset flowformer-224       # CUDA default: the model's 4 stages, batch 128
    python tools/benchmark.py --op flow --preset causal-long          # CUDA: causal L=1k..64k, and L=16k at B8 h16
    python tools/benchmarks/flow.py --device cuda                     # Flowformer training, reference vs Triton path

Op rows (q, k, v before the sigmoid feature map, forward and forward+backward):

- ``official``: the official formulas (thuml/Flowformer ``Flow_Attention.py``). Non-causal, that is the reference
  itself (already linear: sums and one d x dv state). Causal, it is ``flow_attention_causal_naive``, whose
  ``causal_dot_product`` builds the cumulative (B, h, L, d, dv) state; on the CPU it is refused (recorded as an
  error) when that state alone would pass ``FLOW_BENCH_CPU_STATE_CAP_GIB`` (default 0.5) rather than swap the
  shared machine to death; on CUDA it runs until it runs out of memory (also recorded).
- ``reference``: ``attnzoo.kernels.flow.flow_attention_reference`` (causal form chunked, linear memory).
- ``triton``: the fused kernel (CUDA only: the CPU interpreter would measure the interpreter).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` and the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _clone_import import make_attnzoo_importable

    make_attnzoo_importable()
    __package__ = "benchmarks"

from attnzoo.kernels.flow import (  # noqa: E402
    FlowAttentionFunction,
    flow_attention_causal_naive,
    flow_attention_reference,
)

from .harness import Case, OpBenchmark  # noqa: E402

GIB = 1024**3


def _case(batch, heads, length, head_dim, causal, label):
    kind = "causal" if causal else "full"
    return Case(f"{label} {kind} B{batch} h{heads} L{length} d{head_dim}",
                dict(batch=batch, heads=heads, length=length, head_dim=head_dim, causal=causal))  # fmt: skip


def flowformer_stages(batch):
    """Flowformer at 224: 12 heads in every stage, L 3136/784/196/49, head dims 8/16/32/64 (non-causal)."""
    return [_case(batch, 12, length, dim, False, f"stage{i + 1}")
            for i, (length, dim) in enumerate([(3136, 8), (784, 16), (196, 32), (49, 64)])]  # fmt: skip


PRESETS = {
    "cpu": flowformer_stages(4)
    + [_case(1, 4, length, 64, True, "long") for length in (1024, 4096, 16384, 65536)],
    "flowformer-224": flowformer_stages(128),
    "causal-long": [_case(1, 8, length, 64, True, "long") for length in (1024, 4096, 16384, 65536)]
    + [_case(8, 16, 16384, 64, True, "wide")],
    "tiny": [_case(2, 2, 100, 8, False, "tiny"), _case(1, 2, 300, 16, True, "tiny")],
}


def make_inputs(case: Case, device: str, dtype: torch.dtype, requires_grad: bool) -> dict:
    p = case.params
    generator = torch.Generator().manual_seed(0)
    shape = (p["batch"], p["heads"], p["length"], p["head_dim"])
    q, k, v = (torch.randn(shape, generator=generator).to(device=device, dtype=dtype).requires_grad_(requires_grad)
               for _ in range(3))  # fmt: skip
    grad_out = torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
    return dict(q=q, k=k, v=v, causal=p["causal"], grad_out=grad_out)


def _official(x):
    if not x["causal"]:
        return flow_attention_reference(x["q"], x["k"], x["v"])
    q = x["q"]
    if q.device.type == "cpu":
        cap = float(os.environ.get("FLOW_BENCH_CPU_STATE_CAP_GIB", "0.5"))
        batch, heads, length, dim = q.shape
        state_gib = batch * heads * length * dim * x["v"].shape[3] * 4 / GIB  # fp32 (B, h, L, d, dv)
        if state_gib > cap:
            raise MemoryError(f"refused on the CPU: the (B, h, L, d, dv) cumulative state alone is {state_gib:.1f} GiB "
                              f"(cap {cap} GiB, FLOW_BENCH_CPU_STATE_CAP_GIB)")  # fmt: skip
    return flow_attention_causal_naive(q, x["k"], x["v"])


def _reference(x):
    return flow_attention_reference(x["q"], x["k"], x["v"], causal=x["causal"])


def _triton(x):
    return FlowAttentionFunction.apply(x["q"], x["k"], x["v"], x["causal"], 1e-6, 0.0)


BENCHMARK = OpBenchmark(
    name="flow",
    description="Flow-Attention (Flowformer), (batch, heads, tokens, head_dim), non-causal and causal",
    make_inputs=make_inputs,
    implementations={
        "official": (_official, ("cpu", "cuda")),
        "reference": (_reference, ("cpu", "cuda")),
        "triton": (_triton, ("cuda",)),
    },
    presets=PRESETS,
    default_preset=lambda device: "flowformer-224" if device.startswith("cuda") else "cpu",
    baseline="official",
    notes=[
        "official = thuml/Flowformer Flow_Attention.py formulas; non-causal that is the reference itself, causal it "
        "builds the (B, h, L, d, dv) cumsum (flow_attention_causal_naive).",
        "reference = attnzoo.kernels.flow.flow_attention_reference (causal form chunked by 64 tokens, linear memory).",
        "triton = attnzoo.kernels.flow.FlowAttentionFunction (one program per (batch, head), d x dv state on chip).",
    ],
)


def main(argv=None) -> int:
    """Flowformer training (and inference) per kernel path, in one run on one machine."""
    from .models import kernel_path_table

    return kernel_path_table(argv, "flowformer", main.__doc__)


if __name__ == "__main__":
    sys.exit(main())
