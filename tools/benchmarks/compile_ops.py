"""What the CPU loses or gains from an opaque op under torch.compile (issue 31): the op, eager and compiled, next to
the reference path compiled inline (what torch.compile captured on the CPU before the ops were the one entry point).

    python tools/benchmark.py --op compile --device cpu                 # BiFormer-T / Flowformer / SLAB-Swin-T stage 1
    python tools/benchmark.py --op compile --device cpu --preset tiny --repeats 1

Implementations, per case (one op at its family's stage-1 shape, batch 4):

* ``eager``: the public function (the ``attnzoo::`` op; on the CPU its kernel runs the reference path);
* ``compiled op``: ``torch.compile`` (inductor) of the same function: the op stays one opaque node, so inductor
  compiles what surrounds it and runs the op's kernel as it is (the BRA chunks, the flow / SLAB reference); its
  backward is the op's registered one (flow / SLAB: the reference recomputed and differentiated, BRA: the chunked
  backward from the saved log-sum-exp);
* ``compiled inline``: ``torch.compile`` (inductor) of the plain-torch path itself, traced op by op and fused by
  inductor, with the backward autograd derives (what compile produced on the CPU when the dispatcher chose the
  reference before any op).

Baseline: ``eager``. Compile time is not counted (the warm-up compiles).
"""

from __future__ import annotations

import torch

from attnzoo.kernels.bra import bra_attention, bra_attention_chunked
from attnzoo.kernels.flow import flow_attention, flow_attention_reference
from attnzoo.kernels.slab import simplified_linear_attention, simplified_linear_attention_reference

from . import bra as bra_bench
from . import flow as flow_bench
from . import slab as slab_bench
from .harness import Case, OpBenchmark

OPS = {
    # op -> (input maker, the public function (the op), the plain-torch CPU path, call)
    "bra": (bra_bench.make_inputs, bra_attention, bra_attention_chunked,
            lambda fn, x: fn(x["q"], x["k"], x["v"], x["r_idx"], x["heads"], x["scale"])),
    "flow": (flow_bench.make_inputs, flow_attention, flow_attention_reference,
             lambda fn, x: fn(x["q"], x["k"], x["v"], x["causal"], 1e-6, 1e-6)),
    "slab": (slab_bench.make_inputs, simplified_linear_attention, simplified_linear_attention_reference,
             lambda fn, x: fn(x["q"], x["k"], x["v"], 1e-6)),
}  # fmt: skip


def _case(op: str, label: str, **params) -> Case:
    return Case(f"{op} {label}", dict(op=op, **params))


def stage1(batch: int) -> list[Case]:
    return [
        _case("bra", f"BiFormer-T s1 B{batch}", batch=batch, height=56, width=56, channels=64, n_win=7, topk=1),
        _case("flow", f"Flowformer s1 B{batch}", batch=batch, heads=12, length=3136, head_dim=8, causal=False),
        _case("slab", f"SLAB-Swin-T s1 B{batch}", batch=batch, heads=3, n_queries=3136, n_keys=3136, head_dim=32),
    ]


PRESETS = {
    "stage1": stage1(4),
    "tiny": [
        _case("bra", "tiny", batch=1, height=14, width=14, channels=32, n_win=7, topk=2),
        _case("flow", "tiny", batch=1, heads=2, length=100, head_dim=8, causal=False),
        _case("slab", "tiny", batch=1, heads=2, n_queries=100, n_keys=100, head_dim=16),
    ],
}


def make_inputs(case: Case, device: str, dtype: torch.dtype, requires_grad: bool) -> dict:
    maker = OPS[case.params["op"]][0]
    return dict(maker(case, device, dtype, requires_grad), op=case.params["op"])


_COMPILED: dict[tuple[str, str], object] = {}


def _compiled(op: str, which: str):
    key = (op, which)
    if key not in _COMPILED:
        _, public, plain, _ = OPS[op]
        _COMPILED[key] = torch.compile(public if which == "op" else plain, backend="inductor")
    return _COMPILED[key]


def _eager(x):
    _, public, _, call = OPS[x["op"]]
    return call(public, x)


def _compiled_op(x):
    return OPS[x["op"]][3](_compiled(x["op"], "op"), x)


def _compiled_inline(x):
    return OPS[x["op"]][3](_compiled(x["op"], "inline"), x)


BENCHMARK = OpBenchmark(
    name="compile",
    description="the attnzoo ops under torch.compile on the CPU: opaque op vs the reference compiled inline",
    make_inputs=make_inputs,
    implementations={
        "eager": (_eager, ("cpu", "cuda")),
        "compiled op": (_compiled_op, ("cpu", "cuda")),
        "compiled inline": (_compiled_inline, ("cpu",)),
    },
    presets=PRESETS,
    default_preset=lambda device: "stage1",
    baseline="eager",
    notes=[
        "compiled op: the attnzoo:: op is one opaque node (its kernel: the reference path on the CPU, Triton on CUDA).",
        "compiled inline: the plain-torch path traced and fused by inductor (the CPU graph before issue 31).",
    ],
)
