"""Head-sparse MoH attention benchmark: the official dense-then-mask form vs computing only the selected heads.

    python tools/benchmark.py --op moh                               # CPU: MoH-TransNeXt-B stage 4 + a plug-in map
    python tools/benchmark.py --op moh --preset moh-224 --dtype bf16  # CUDA default: the same shapes at batch 64/8
    python tools/benchmark.py --op moh --preset tiny --device cpu --repeats 1

Each shape runs at 100/80/75/50% of the heads per token (``K`` of ``h``; a random router: each token's top-K of
random scores, gates softmax-normalised over them, as MoH's renormalised top-k), so the table reads in one run how
the time of each form follows the fraction. Rows (forward, and forward+backward with gradients for q, k, v, the
gates and the bias):

- ``dense``: ``attnzoo.kernels.moh.head_sparse_attention_reference``, the official MoH order (SkyworkAI/MoH
  ``MoH-ViT/attention.py``: every head for every token, then ``einsum("bne,bned->bned", masked_gates, x)``), the
  baseline.
- ``sparse``: ``attnzoo.kernels.moh.head_sparse_attention_gather``, the plain-torch CPU path: per head, only the tokens
  that picked it (batch padded to its most-loaded element).
- ``triton``: ``attnzoo.kernels.moh.head_sparse_attention_triton`` (the kernels plus the gate product; CUDA only: the CPU
  interpreter would measure the interpreter).
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

from attnzoo.kernels.moh import (  # noqa: E402
    head_sparse_attention_gather,
    head_sparse_attention_reference,
    head_sparse_attention_triton,
)

from .harness import Case, OpBenchmark  # noqa: E402

FRACTIONS = (1.0, 0.8, 0.75, 0.5)


def _cases(label, batch, heads, tokens, head_dim, bias):
    cases = []
    for fraction in FRACTIONS:
        used = max(1, round(fraction * heads))
        cases.append(
            Case(
                f"{label} B{batch} h{heads} N{tokens} d{head_dim} K{used} ({100 * used / heads:.0f}%)",
                dict(batch=batch, heads=heads, tokens=tokens, head_dim=head_dim, used=used, bias=bias),
            )
        )
    return cases


def presets_for(small_batch, large_batch):
    # MoH-TransNeXt-B stage 4 at 224: 7x7 tokens, 32 heads of 24, full attention with the CPB bias; and a plug-in
    # MoH attention on a 28x28 map with 20 heads of 32 (20 heads: 80% and 75% are whole head counts)
    return _cases("transnext-b s4", small_batch, 32, 49, 24, True) + _cases("plug-in", large_batch, 20, 784, 32, False)


PRESETS = {
    "cpu": presets_for(16, 1),
    "moh-224": presets_for(256, 16),
    "tiny": _cases("tiny", 2, 4, 50, 16, True)[::3],
}


def make_inputs(case: Case, device: str, dtype: torch.dtype, requires_grad: bool) -> dict:
    p = case.params
    b, h, n, d, used = p["batch"], p["heads"], p["tokens"], p["head_dim"], p["used"]
    generator = torch.Generator().manual_seed(0)

    def leaf(*shape):
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype).requires_grad_(requires_grad)

    q, k, v = leaf(b, h, n, d), leaf(b, h, n, d), leaf(b, h, n, d)
    scores = torch.randn(b, n, h, generator=generator)
    top, heads = scores.topk(used, dim=-1)
    gates = top.softmax(-1).mul(used).to(device=device, dtype=dtype).requires_grad_(requires_grad)
    bias = leaf(h, n, n) if p["bias"] else None
    grad_out = torch.randn(b, n, h, d, generator=generator).to(device=device, dtype=dtype)
    return dict(q=q, k=k, v=v, heads=heads.to(device), gates=gates, bias=bias, scale=d**-0.5, grad_out=grad_out)


def _call(fn):
    return lambda x: fn(x["q"], x["k"], x["v"], x["heads"], x["gates"], x["bias"], x["scale"])


BENCHMARK = OpBenchmark(
    name="moh",
    description="head-sparse MoH attention, (batch, heads, tokens, head_dim), K of h heads per token",
    make_inputs=make_inputs,
    implementations={
        "dense": (_call(head_sparse_attention_reference), ("cpu", "cuda")),
        "sparse": (_call(head_sparse_attention_gather), ("cpu", "cuda")),
        "triton": (_call(head_sparse_attention_triton), ("cuda",)),
    },
    presets=PRESETS,
    default_preset=lambda device: "moh-224" if device.startswith("cuda") else "cpu",
    baseline="dense",
    notes=[
        "dense = attnzoo.kernels.moh.head_sparse_attention_reference: the official MoH form (all heads, then the gates).",
        "sparse = attnzoo.kernels.moh.head_sparse_attention_gather: plain torch, only the (token, head) pairs selected.",
        "triton = attnzoo.kernels.moh.head_sparse_attention_triton: flash-style, one program per (slot block, batch x head); "
        "slot blocks past a head's token count run no key steps.",
        "Compare a form's time across the K rows of one shape: the dense form's stays flat, a sparse form's should "
        "fall with K.",
    ],
)
