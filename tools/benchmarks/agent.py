"""Agent attention benchmark: the op's paths, and (``__main__``) Agent-PVT-T / Agent-Swin-T training per kernel path.

    python tools/benchmark.py --op agent                          # CPU: Agent-PVT-T + Agent-Swin-T stages at 224, bs 4
    python tools/benchmark.py --op agent --preset detection --device cuda --dtype bf16
    python tools/benchmarks/agent.py --device cuda                # whole-model training, reference vs fused path

Op rows (each takes the same q, k, v, agent tokens and (1, h, ., .) biases; the biases get gradients too):

- ``official``: the official order of operations *with* the official ``.repeat`` of both biases over the batch
  (LeapLabTHU/Agent-Attention agent_transformer/models/agent_*.py), the baseline.
- ``reference``: attnzoo.kernels.agent.agent_attention_reference: the same maths with batch-broadcast biases.
- ``fused``: attnzoo.kernels.agent.agent_attention_fused: two F.scaled_dot_product_attention calls with the bias as mask.

Shapes are the agent-attention layers of the real models: (batch, heads, token grid, agent grid, head_dim).
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

from attnzoo.kernels.agent import agent_attention_fused, agent_attention_reference, pool_agent_tokens  # noqa: E402

from .harness import Case, OpBenchmark  # noqa: E402


def _case(batch, heads, hw, agents, head_dim, label):
    return Case(f"{label} B{batch} h{heads} {hw[0]}x{hw[1]} a{agents[0] * agents[1]} d{head_dim}",
                dict(batch=batch, heads=heads, hw=hw, agents=agents, head_dim=head_dim))


def agent_pvt_t_224(batch):
    """Agent-PVT-T at 224: widths 64/128/320/512, heads 1/2/5/8 (head_dim 64), agents 9/16/49/49."""
    return [_case(batch, 1, (56, 56), (3, 3), 64, "pvt-s1"), _case(batch, 2, (28, 28), (4, 4), 64, "pvt-s2"),
            _case(batch, 5, (14, 14), (7, 7), 64, "pvt-s3"), _case(batch, 8, (7, 7), (7, 7), 64, "pvt-s4")]


def agent_swin_t_224(batch):
    """Agent-Swin-T at 224: widths 96/192/384, heads 3/6/12 (head_dim 32), agents 9/16/49 (stage 4 is windowed)."""
    return [_case(batch, 3, (56, 56), (3, 3), 32, "swin-s1"), _case(batch, 6, (28, 28), (4, 4), 32, "swin-s2"),
            _case(batch, 12, (14, 14), (7, 7), 32, "swin-s3")]


PRESETS = {
    "cpu": agent_pvt_t_224(4)[:3] + agent_swin_t_224(4),
    "agent-t-224": agent_pvt_t_224(64) + agent_swin_t_224(64),
    # detection at 800x1216: stage-1 grid 200x304 with the official downstream agent counts (PVT 12x12, Swin 9x9)
    "detection": [_case(2, 1, (200, 304), (12, 12), 64, "pvt-det-s1"), _case(2, 3, (200, 304), (9, 9), 32, "swin-det-s1"),
                  _case(2, 5, (50, 76), (28, 28), 64, "pvt-det-s3")],
    "tiny": [_case(2, 2, (9, 7), (3, 3), 16, "tiny")],
}


def make_inputs(case: Case, device: str, dtype: torch.dtype, requires_grad: bool) -> dict:
    p = case.params
    batch, heads, hw, agent_shape, head_dim = (p[k] for k in ("batch", "heads", "hw", "agents", "head_dim"))
    n, n_agents = hw[0] * hw[1], agent_shape[0] * agent_shape[1]
    generator = torch.Generator().manual_seed(0)

    def tensor(*shape, base=None):
        t = torch.randn(*shape, generator=generator) if base is None else base
        return t.to(device=device, dtype=dtype).requires_grad_(requires_grad)

    q, k, v = (torch.randn(batch, heads, n, head_dim, generator=generator) for _ in range(3))
    agents = pool_agent_tokens(q, hw, agent_shape)
    return dict(
        q=tensor(base=q), k=tensor(base=k), v=tensor(base=v), agents=tensor(base=agents),
        agent_bias=tensor(1, heads, n_agents, n), token_bias=tensor(1, heads, n, n_agents),
        scale=head_dim**-0.5, grad_out=torch.randn(batch, heads, n, head_dim, generator=generator).to(device, dtype),
    )


def _official(x):
    batch = x["q"].shape[0]
    return agent_attention_reference(x["q"], x["k"], x["v"], x["agents"], x["agent_bias"].repeat(batch, 1, 1, 1),
                                     x["token_bias"].repeat(batch, 1, 1, 1), x["scale"])


def _op(fn):
    return lambda x: fn(x["q"], x["k"], x["v"], x["agents"], x["agent_bias"], x["token_bias"], x["scale"])


BENCHMARK = OpBenchmark(
    name="agent",
    description="agent attention, (batch, heads, token grid, agent grid, head_dim)",
    make_inputs=make_inputs,
    implementations={
        "official": (_official, ("cpu", "cuda")),
        "reference": (_op(agent_attention_reference), ("cpu", "cuda")),
        "fused": (_op(agent_attention_fused), ("cpu", "cuda")),
    },
    presets=PRESETS,
    default_preset=lambda device: "agent-t-224" if device.startswith("cuda") else "cpu",
    baseline="official",
    notes=[
        "official = the official order of operations with the biases .repeat-ed over the batch (agent_*.py).",
        "reference = attnzoo.kernels.agent.agent_attention_reference (same maths, biases broadcast over the batch).",
        "fused = attnzoo.kernels.agent.agent_attention_fused (two SDPA calls, bias as attn_mask; SDPA's fused backward).",
    ],
)


def main(argv=None) -> int:
    """Agent-PVT-T and Agent-Swin-T training (and inference) per kernel path, in one run on one machine."""
    from .models import kernel_path_table

    # The fused path is SDPA, so it runs on the CPU as well (ZOO_KERNELS=triton selects it).
    return kernel_path_table(argv, "agent_pvt_tiny,agent_swin_tiny", main.__doc__,
                             cpu_paths=("reference", "triton"), path_labels={"triton": "fused"})


if __name__ == "__main__":
    raise SystemExit(main())
