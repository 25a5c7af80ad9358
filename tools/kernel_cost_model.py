"""The kernels' cost model on paper (issue 31, part 5): FLOPs, minimum HBM bytes and the H100 lower bound per op.

    python tools/kernel_cost_model.py              # Markdown tables (the ones in docs/kernels/cost_model.md)
    python tools/kernel_cost_model.py --compact    # the README's table (training step only)
    python tools/kernel_cost_model.py --json       # the same numbers as JSON

For each op at its family's anchor shapes (BiFormer-T stage 1 at 224 with batch 64 and the 800x1216 detection map
with batch 2; TransNeXt-T stage 1 at 224 and at 800x1216 for the aggregated attention; the same anchors for the other
families' stage 1, and MoH-TransNeXt-S-75's first head-sparse stage), forward and forward + backward:

* **FLOPs**: the multiply-adds of the op's matrix products (x2), i.e. the work tensor cores can take; the backward is
  the minimum one (flash-attention style: the softmax recomputed once, 5 products per attention instead of the
  forward's 2; linear attentions: 4 products). Element-wise work (softmax exponentials, flows, normalisers) is listed
  as its count of exponentials where it has them (MUFU work, not tensor-core work).
* **minimum HBM bytes**: every input read once, every output written once, nothing else (bf16 tensors, fp32 softmax
  statistics); the backward reads the inputs, the output, its gradient and the statistics, and writes the inputs'
  gradients. No kernel can move less.
* **H100 lower bound** = max(FLOPs / 989 TFLOP/s (dense bf16), bytes / 3.35 TB/s) (H100 SXM), and which of the two
  binds; the exponentials' time at the SFU rate (132 SMs x 16 per clock x 1.83 GHz = 3.9 T/s) is shown beside it.
* **design bytes / FLOPs**: what the zoo's Triton kernels move and compute as designed (re-reads included, assuming
  nothing stays in L2 between programs), hence the bound the design can reach.

Nothing here runs a kernel; the formulas are per op below, next to the op's shapes. The measured numbers are the ones
quoted in issue 31 (official code on an H100).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

PEAK_FLOPS = 989e12  # H100 SXM dense bf16 tensor-core FLOP/s
PEAK_BYTES = 3.35e12  # H100 SXM HBM3 bytes/s
PEAK_EXP = 132 * 16 * 1.83e9  # MUFU exp2 per second (16 per SM per clock)
BF16, FP32 = 2, 4


@dataclass
class Cost:
    op: str
    anchor: str
    shape: str
    flops_fwd: float
    flops_bwd: float
    exps_fwd: float
    exps_bwd: float
    bytes_fwd: float
    bytes_bwd: float
    design_bytes_fwd: float
    design_bytes_bwd: float
    design_flops_bwd: float
    min_memory: float = 0.0
    measured: str = ""
    note: str = ""

    def bound(self, flops: float, nbytes: float) -> tuple[float, str]:
        compute, memory = flops / PEAK_FLOPS, nbytes / PEAK_BYTES
        return max(compute, memory), "compute" if compute >= memory else "memory"

    def row(self) -> dict:
        fwd, fwd_by = self.bound(self.flops_fwd, self.bytes_fwd)
        both, both_by = self.bound(self.flops_fwd + self.flops_bwd, self.bytes_fwd + self.bytes_bwd)
        design, design_by = self.bound(self.flops_fwd + self.design_flops_bwd,
                                       self.design_bytes_fwd + self.design_bytes_bwd)  # fmt: skip
        return dict(
            asdict(self),
            bound_fwd_us=fwd * 1e6, bound_fwd_by=fwd_by, bound_train_us=both * 1e6, bound_train_by=both_by,
            exp_train_us=(self.exps_fwd + self.exps_bwd) / PEAK_EXP * 1e6,
            design_train_us=design * 1e6, design_train_by=design_by,
            intensity=(self.flops_fwd + self.flops_bwd) / (self.bytes_fwd + self.bytes_bwd),
        )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# softmax attention of n_q queries over n_k keys per (batch, head): the pieces BRA, Agent, aggregated and MoH share
# ----------------------------------------------------------------------------------------------------------------------


def _softmax_flops(pairs: float, d: int, dv: int) -> tuple[float, float]:
    """(forward, minimal backward) product FLOPs for ``pairs`` query-key pairs: QK^T + PV; QK^T again, dP = dO V^T,
    dV = P^T dO, dQ = dS K, dK = dS^T Q."""
    fwd = 2 * pairs * (d + dv)
    bwd = 2 * pairs * (d + dv) + 2 * pairs * (dv + dv) + 2 * pairs * (d + d)
    return fwd, bwd


def bra(anchor, batch, height, width, channels, n_win, topk, head_dim=32, measured=""):
    """BRA: R = n_win^2 regions of T tokens, each query region attends to topk routed regions (topk * T keys)."""
    heads = channels // head_dim
    regions, tokens = n_win * n_win, (height // n_win) * (width // n_win)
    n = batch * regions * tokens  # query (and key) tokens of the whole batch
    pairs = n * heads * topk * tokens
    fwd, bwd = _softmax_flops(pairs, head_dim, head_dim)
    act = n * channels * BF16  # one (B, N, C) bf16 tensor
    stats = n * heads * FP32
    routes = batch * regions * topk * 8
    bytes_fwd = 3 * act + act + stats + routes  # q, k, v in; out, lse out
    bytes_bwd = 5 * act + stats + routes + 3 * act  # q, k, v, out, dO, lse in; dq, dk, dv out (delta stays on chip)
    # the design: every query tile reads its topk routed K/V regions (topk-fold K/V reads); the backward's dQ kernel
    # reads q, dO, out and topk-fold K/V, writes dQ and delta; the dK/dV kernel reads K/V once and topk-fold q, dO,
    # lse, delta (the query regions routed to it: topk per key region on average)
    design_fwd = act + topk * 2 * act + act + stats + routes
    design_bwd = (3 * act + stats + topk * 2 * act + act + stats) + (2 * act + topk * (2 * act + 2 * stats) + 2 * act)
    # the two backward kernels both recompute P: 7 products instead of 5
    design_flops_bwd = bwd + 2 * pairs * (head_dim + head_dim)
    memory = 8 * act + stats + routes  # q, k, v, out, lse, dO, dq, dk, dv: what must exist at the backward
    return Cost("bra", anchor, f"B{batch} {height}x{width} C{channels} h{heads} R{regions} T{tokens} topk{topk}",
                fwd, bwd, pairs, pairs, bytes_fwd, bytes_bwd, design_fwd, design_bwd, design_flops_bwd, memory, measured,
                "memory-bound at topk 1-4: intensity far below the H100's 295 FLOP/B ridge")  # fmt: skip


def dense_attention(anchor, batch, tokens, channels, head_dim=32, measured=""):
    """Dense softmax attention over the same tokens (the FlashAttention baseline the issue quotes)."""
    heads = channels // head_dim
    pairs = batch * heads * tokens * tokens
    fwd, bwd = _softmax_flops(pairs, head_dim, head_dim)
    act = batch * tokens * channels * BF16
    stats = batch * heads * tokens * FP32
    return Cost("dense (FlashAttention)", anchor, f"B{batch} N{tokens} C{channels} h{heads}", fwd, bwd, pairs, pairs,
                4 * act + stats, 8 * act + stats, 4 * act + stats, 8 * act + stats, bwd, 8 * act + stats, measured,
                "compute-bound: N x N pairs")  # fmt: skip


def agent(anchor, batch, heads, hw, agents, head_dim, measured=""):
    """Agent attention: agents -> tokens softmax (n x N) then tokens -> agents softmax (N x n), two SDPA calls."""
    n, n_agents = hw[0] * hw[1], agents[0] * agents[1]
    pairs = 2 * batch * heads * n * n_agents
    fwd, bwd = _softmax_flops(pairs, head_dim, head_dim)
    act = batch * heads * n * head_dim * BF16
    small = batch * heads * n_agents * head_dim * BF16  # agent tokens, agent_v
    biases = 2 * heads * n * n_agents * BF16  # broadcast over the batch: read once
    stats = batch * heads * (n + n_agents) * FP32
    bytes_fwd = 3 * act + small + biases + act + stats
    bytes_bwd = (3 * act + small + biases + 2 * act + stats) + (3 * act + small + biases)  # + bias gradients
    # SDPA's memory-efficient kernels: agent_v makes a round trip; the bias is read once per batch element
    design_fwd = bytes_fwd + 2 * small + (batch - 1) * biases
    design_bwd = bytes_bwd + 4 * small + 2 * (batch - 1) * biases
    return Cost("agent (SDPA)", anchor, f"B{batch} h{heads} {hw[0]}x{hw[1]} agents{n_agents} d{head_dim}", fwd, bwd,
                pairs, pairs, bytes_fwd, bytes_bwd, design_fwd, design_bwd, bwd,
                8 * act + 4 * small + 4 * biases + stats, measured,
                "memory-bound: 9-144 agents per token; the bias re-read per batch element is L2-resident")  # fmt: skip


def flow(anchor, batch, heads, length, head_dim, measured=""):
    """Flow-Attention (non-causal): the d x dv state k^T (v * competition), then q @ state; the flows are d-vectors."""
    per_head = batch * heads
    fwd = per_head * (2 * length * head_dim * head_dim * 2)  # state + output products
    bwd = per_head * (4 * 2 * length * head_dim * head_dim)  # dO S^T, q^T dO', dS for k and v
    act = per_head * length * head_dim * BF16
    bytes_fwd = 4 * act
    bytes_bwd = 7 * act
    # the design: four sweeps forward (q, k read twice, v once), four backward (q, dO, k, v read twice each)
    design_fwd = 5 * act + act
    design_bwd = 8 * act + 3 * act
    exps = per_head * (2 * length * head_dim + length)  # the sigmoid feature map of q and k, the competition softmax
    return Cost("flow", anchor, f"B{batch} h{heads} L{length} d{head_dim}", fwd, bwd, exps, exps, bytes_fwd, bytes_bwd,
                design_fwd, design_bwd, bwd, 8 * act, measured, "memory-bound: linear in L, d = 8 at stage 1")  # fmt: skip


def slab(anchor, batch, heads, tokens, head_dim, measured=""):
    """SLAB's linear attention: state k^T v (d x dv) and key sum, then q @ state / (q . key sum)."""
    per_head = batch * heads
    fwd = per_head * (2 * tokens * head_dim * head_dim * 2)
    bwd = per_head * (4 * 2 * tokens * head_dim * head_dim)
    act = per_head * tokens * head_dim * BF16
    state = per_head * (head_dim * head_dim + head_dim) * FP32
    bytes_fwd = 4 * act
    bytes_bwd = 7 * act
    # the design reads every input once per pass and keeps the fp32 state (written forward, read backward)
    design_fwd = 4 * act + state
    design_bwd = 7 * act + state
    return Cost("slab", anchor, f"B{batch} h{heads} N{tokens} d{head_dim}", fwd, bwd, 0, 0, bytes_fwd, bytes_bwd,
                design_fwd, design_bwd, bwd, 8 * act, measured, "memory-bound: linear in N")  # fmt: skip


def aggregated(anchor, batch, heads, hw, head_dim, pool, window=3, active=1.0, name="aggregated", measured=""):
    """TransNeXt's aggregated attention: each query attends to its window x window neighbours and the P pooled keys
    (one softmax); inputs also hold the (h, N, P) pool bias (broadcast over the batch) and the per-query local
    weights. ``active``: the fraction of (token, head) pairs computed (MoH's head-sparse form)."""
    n, local = hw[0] * hw[1], window * window
    pairs = batch * heads * n * (local + pool) * active
    fwd, bwd = _softmax_flops(pairs, head_dim, head_dim)
    act = batch * heads * n * head_dim * BF16
    pooled = batch * heads * pool * head_dim * BF16
    pool_bias = heads * n * pool * BF16
    local_weights = batch * heads * n * local * BF16
    stats = batch * heads * n * FP32
    q_side = active * (act + local_weights)  # queries, their local weights, the output
    bytes_fwd = q_side + 2 * act + 2 * pooled + pool_bias + active * act + stats * active
    bytes_bwd = (q_side + 2 * act + 2 * pooled + pool_bias + 2 * active * act + stats * active) + (
        q_side + 2 * act + 2 * pooled + pool_bias
    )  # in: q, k, v (local + pooled), biases, out, dO, lse; out: their gradients (the pool bias's included)
    # the design: the pool bias is read as an (h, N, P) tensor once per batch element (forward, and by the query and
    # pooled-key backward kernels); the local K/V tile and pooled K/V are re-read per query tile (L2-resident)
    design_fwd = bytes_fwd + (batch - 1) * pool_bias
    design_bwd = bytes_bwd + 2 * (batch - 1) * pool_bias + pool_bias * (2 if active < 1 else 1)
    shape = f"B{batch} h{heads} {hw[0]}x{hw[1]} window{local} pool{pool} d{head_dim}"
    if active < 1:
        shape += f" active{active:.0%}"
    memory = 2 * (q_side + 2 * act + 2 * pooled + pool_bias) + 2 * active * act + stats * active
    return Cost(name, anchor, shape, fwd, bwd, pairs, pairs, bytes_fwd, bytes_bwd, design_fwd, design_bwd, bwd, memory,
                measured, "memory-bound; at detection the (h, N, P) pool bias is most of the traffic")  # fmt: skip


def head_sparse(anchor, batch, heads, tokens, head_dim, active, measured=""):
    """MoH's head-sparse full attention (TransNeXt stage 4): the selected (token, head) pairs attend to all tokens,
    with the (h, N, N) position bias."""
    pairs = batch * heads * tokens * tokens * active
    fwd, bwd = _softmax_flops(pairs, head_dim, head_dim)
    act = batch * heads * tokens * head_dim * BF16
    bias = heads * tokens * tokens * BF16
    stats = batch * heads * tokens * FP32
    bytes_fwd = active * act + 2 * act + bias + active * act + stats
    bytes_bwd = (active * act + 2 * act + bias + 2 * active * act + stats) + (active * act + 2 * act + bias)
    design_fwd = bytes_fwd + (batch - 1) * bias
    design_bwd = bytes_bwd + 2 * (batch - 1) * bias
    return Cost("head_sparse (MoH)", anchor, f"B{batch} h{heads} N{tokens} d{head_dim} active{active:.0%}", fwd, bwd,
                pairs, pairs, bytes_fwd, bytes_bwd, design_fwd, design_bwd, bwd,
                2 * (active * act + 2 * act + bias) + 2 * active * act + stats, measured, "memory-bound at 49 tokens")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# the anchors
# ----------------------------------------------------------------------------------------------------------------------

CLS = "224, batch 64"
DET = "800x1216, batch 2"


def costs() -> list[Cost]:
    det_hw = (200, 304)  # stride-4 stage-1 map of an 800x1216 image
    return [
        bra(CLS, 64, 56, 56, 64, 7, 1, measured="official: 5.68 ms fwd+bwd, 2788 MiB"),
        dense_attention(CLS, 64, 56 * 56, 64, measured="FlashAttention: 2.78 ms fwd+bwd"),
        # detection: the stage-1 map padded to a multiple of n_win 16 (208x304), as the official detector pads it
        bra(DET, 2, 208, 304, 64, 16, 1, measured="official: 9.79 ms fwd+bwd, 8106 MiB"),
        agent(CLS, 64, 1, (56, 56), (3, 3), 64),  # Agent-PVT-T stage 1
        agent(DET, 2, 1, det_hw, (12, 12), 64),  # its downstream agent count (12x12)
        flow(CLS, 64, 12, 56 * 56, 8),  # Flowformer stage 1: 12 heads of 8
        flow(DET, 2, 12, det_hw[0] * det_hw[1], 8),
        slab(CLS, 64, 3, 56 * 56, 32),  # SLAB-Swin-T stage 1 (official window 56: one window per image)
        slab(DET, 2, 3, det_hw[0] * det_hw[1], 32),  # one window over the whole map
        aggregated(CLS, 64, 3, (56, 56), 24, 7 * 7),  # TransNeXt-T stage 1: 3 heads of 24, sr 8
        aggregated(DET, 2, 3, det_hw, 24, (det_hw[0] // 8) * (det_hw[1] // 8)),
        # MoH-TransNeXt-S-75: stage 3 (12 heads, 9 used per token), stage 4 (24 heads, 16 used)
        aggregated(CLS, 64, 12, (14, 14), 24, 7 * 7, active=9 / 12, name="head_sparse aggregated (MoH)"),
        aggregated(DET, 2, 12, (50, 76), 24, 25 * 38, active=9 / 12, name="head_sparse aggregated (MoH)"),
        head_sparse(CLS, 64, 24, 49, 24, 16 / 24),
    ]


def training_bound(gmacs: float, measured_img_s: float) -> dict:
    """A whole model's training step per image: forward + backward = 3x the forward's multiply-adds (x2 FLOPs),
    at the dense bf16 peak (every layer, not only the attention: a ceiling no model reaches, for scale)."""
    flops = 3 * 2 * gmacs * 1e9
    return dict(gflop_per_image=flops / 1e9, bound_img_s=PEAK_FLOPS / flops, measured_img_s=measured_img_s,
                fraction=measured_img_s * flops / PEAK_FLOPS)  # fmt: skip


def _fmt_time(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.1f} µs"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| op | anchor | shape | GFLOP fwd / fwd+bwd | min HBM MB fwd / fwd+bwd | H100 bound fwd | H100 bound fwd+bwd "
        "(binds) | exp time fwd+bwd | design bound fwd+bwd (binds) | min memory MB | measured on an H100 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['op']} | {r['anchor']} | {r['shape']} | {r['flops_fwd'] / 1e9:.2f} / "
            f"{(r['flops_fwd'] + r['flops_bwd']) / 1e9:.2f} | {r['bytes_fwd'] / 1e6:.0f} / "
            f"{(r['bytes_fwd'] + r['bytes_bwd']) / 1e6:.0f} | {_fmt_time(r['bound_fwd_us'])} | "
            f"{_fmt_time(r['bound_train_us'])} ({r['bound_train_by']}) | {_fmt_time(r['exp_train_us'])} | "
            f"{_fmt_time(r['design_train_us'])} ({r['design_train_by']}) | {r['min_memory'] / 2**20:.0f} | "
            f"{r['measured'] or '-'} |"
        )
    return "\n".join(lines)


def compact_markdown(rows: list[dict]) -> str:
    """The README's table: training step (forward + backward) only."""
    lines = ["| op | anchor | GFLOP | min HBM MB | H100 bound (binds) | design bound | measured on an H100 |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['op']} | {r['anchor']} | {(r['flops_fwd'] + r['flops_bwd']) / 1e9:.1f} | "
            f"{(r['bytes_fwd'] + r['bytes_bwd']) / 1e6:.0f} | {_fmt_time(r['bound_train_us'])} ({r['bound_train_by']}) "
            f"| {_fmt_time(r['design_train_us'])} | {r['measured'] or '-'} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--compact", action="store_true", help="the README's table (forward + backward only)")
    args = parser.parse_args(argv)
    rows = [c.row() for c in costs()]
    biformer = training_bound(2.22, 1178.0)  # zoo/flops.py on biformer_tiny at 224; official training, batch 128 bf16
    if args.json:
        print(json.dumps(dict(ops=rows, biformer_tiny_training=biformer), indent=1))
        return
    print(compact_markdown(rows) if args.compact else markdown(rows))
    print()
    print(f"BiFormer-T training at 224 (2.22 GMACs per image): {biformer['gflop_per_image']:.1f} GFLOP per image "
          f"forward + backward, at most {biformer['bound_img_s']:,.0f} img/s at the bf16 peak; the official code "
          f"measured {biformer['measured_img_s']:,.0f} img/s (batch 128, bf16) = {biformer['fraction']:.1%} of it.")
    print(f"H100 SXM: {PEAK_FLOPS / 1e12:.0f} TFLOP/s dense bf16, {PEAK_BYTES / 1e12:.2f} TB/s, ridge "
          f"{PEAK_FLOPS / PEAK_BYTES:.0f} FLOP/B; exponentials at {PEAK_EXP / 1e12:.1f} T/s.")  # fmt: skip


if __name__ == "__main__":
    main()
