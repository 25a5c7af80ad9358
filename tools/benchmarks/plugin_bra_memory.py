"""Peak memory and time of forward+backward: attnzoo.layers.BiLevelRoutingAttention2d vs the official nchwBRA, CPU.

BiFormer issue #21 reports ~100 GB for one 600x500 map through the official ``nchwBRA``; this measures both modules at
1x32x{150x125, 300x250, 600x500} (batch 1, 32 channels, one head of 32 channels, top-4 routing):

* ``zoo``: ``BiLevelRoutingAttention2d(32)``: 8x8-token regions (more regions on a larger map), the chunked CPU path;
* ``official n_win=7``: ``nchwBRA(32, num_heads=1, n_win=7, topk=4)``, its default grid: 7x7 regions whose size grows
  with the map (what the issue's user ran);
* ``official ~8x8 regions``: ``nchwBRA`` with ``n_win = H // 8``, so its regions are 8 x (W // n_win) tokens, the
  closest it gets to the zoo layer's fixed region size (its regions must come from one n_win for both sides).

Every (module, size) runs in a fresh Python process (``--one``): the peak is that process's peak resident set
(``ru_maxrss``) minus its resident set just before the first forward (module, input and libraries excluded), so the two
sides never share an allocator. Each child gets an address-space limit (``--limit-gib``, default 6): a module that
needs more fails its allocation ("out of memory at the limit") instead of taking the machine down. Time: median of
``--repeats`` forward+backward calls after one warm-up, wall clock, ``--threads`` torch threads (timing, table and
JSON: attnzoo.tasks.measure through benchmarks.load_measure, which does not import the zoo into the processes it measures).

The official code is not part of this repository: fetch rayleizhu/BiFormer and pass its root, e.g.
    python tools/benchmarks/plugin_bra_memory.py --official /work/ext/BiFormer --out docs/bench_plugin_bra
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(1, str(REPO / "tools"))
from benchmarks import load_measure  # noqa: E402

measure = load_measure()
SIZES = [(150, 125), (300, 250), (600, 500)]
CHANNELS = 32
TOPK = 4
IMPLEMENTATIONS = ("zoo", "official n_win=7", "official ~8x8 regions")


def _build(implementation: str, height: int, official_root: str | None):
    import torch

    if implementation == "zoo":
        sys.path.insert(0, str(REPO / "tools"))
        from _clone_import import make_attnzoo_importable

        make_attnzoo_importable()
        from attnzoo.layers import BiLevelRoutingAttention2d

        return BiLevelRoutingAttention2d(CHANNELS, num_heads=1, topk=TOPK), {}
    if official_root is None:
        raise SystemExit("--official PATH (a checkout of rayleizhu/BiFormer) is needed for the official module")
    sys.path.insert(0, official_root)
    from ops.bra_nchw import nchwBRA

    n_win = 7 if implementation == "official n_win=7" else height // 8
    torch.manual_seed(0)
    return nchwBRA(CHANNELS, num_heads=1, n_win=n_win, topk=TOPK), {"n_win": n_win}


def run_one(implementation: str, height: int, width: int, repeats: int, threads: int, official_root: str | None,
            limit_gib: float) -> dict:
    """Measured in this process (the parent starts one process per case)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    module, extra = _build(implementation, height, official_root)
    x = torch.randn(1, CHANNELS, height, width, requires_grad=True)
    limit = int(limit_gib * 1024**3)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    before = measure.process_peak_rss_mib()
    result = dict(implementation=implementation, height=height, width=width, **extra)

    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).square().mean().backward()

    try:  # one warm-up (and the first peak), then the median of the timed calls
        milliseconds = measure.time_call(step, "cpu", 1, repeats, cpu_clock="wall")
    except (RuntimeError, MemoryError) as err:  # the allocation over the limit
        result.update(status=f"out of memory at the {limit_gib:g} GiB limit", error=str(err).splitlines()[0][:200])
        return result
    result.update(status="ok", peak_mib=round(measure.process_peak_rss_mib() - before, 1),
                  seconds=round(milliseconds / 1e3, 3))
    return result


def official_logits_gib(height: int, width: int, n_win: int) -> float:
    """What nchwBRA's (regions x region tokens x topk*region tokens) fp32 logits alone take, in GiB (one head)."""
    region_h, region_w = height // n_win, width // n_win
    regions = -(-height // region_h) * -(-width // region_w)
    tokens = region_h * region_w
    return regions * tokens * TOPK * tokens * 4 / 1024**3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", help="root of a rayleizhu/BiFormer checkout (holds ops/bra_nchw.py)")
    parser.add_argument("--out", type=Path, help="folder for results.json, results.md and bra_memory.png")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit-gib", type=float, default=6.0)
    parser.add_argument("--one", nargs=3, metavar=("IMPL", "H", "W"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        implementation, height, width = args.one[0], int(args.one[1]), int(args.one[2])
        print(json.dumps(run_one(implementation, height, width, args.repeats, args.threads, args.official,
                                 args.limit_gib)))
        return 0

    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), ZOO_KERNELS="reference")
    for height, width in SIZES:
        for implementation in IMPLEMENTATIONS:
            if implementation != "zoo" and not args.official:
                continue
            command = [sys.executable, __file__, "--one", implementation, str(height), str(width),
                       "--repeats", str(args.repeats), "--threads", str(args.threads), "--limit-gib",
                       str(args.limit_gib)] + (["--official", args.official] if args.official else [])
            done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                row = dict(implementation=implementation, height=height, width=width,
                           status=f"process died (rc {done.returncode})", error=done.stderr.strip()[-300:])
            else:
                row = json.loads(lines[-1])
            if implementation != "zoo":
                row["logits_gib"] = round(official_logits_gib(height, width, row.get("n_win", 7)), 2)
            rows.append(row)
            print(json.dumps(row), flush=True)

    table = _markdown(rows, args)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        measure.write_json(args.out / "results.json", dict(rows=rows, threads=args.threads, limit_gib=args.limit_gib),
                           indent=2)
        (args.out / "results.md").write_text(table)
        _plot(rows, args.out / "bra_memory.png", args.limit_gib)
    return 0


def _markdown(rows: list[dict], args) -> str:
    import torch

    lines = [
        f"CPU {os.uname().machine}, {args.threads} torch threads, torch {torch.__version__}; batch 1, 32 channels, "
        f"1 head, top-4; forward+backward; peak = process RSS growth; each case in its own process with a "
        f"{args.limit_gib:g} GiB address-space limit; time = median of {args.repeats} after a warm-up (wall clock, "
        f"shared machine).",
    ]
    cells = []
    for row in rows:
        height, width = row["height"], row["width"]
        if row["implementation"] == "zoo":
            regions = f"{-(-height // 8) * -(-width // 8)} (8x8)"
        else:
            n_win = row.get("n_win", 7)
            region_h, region_w = height // n_win, width // n_win
            regions = f"{-(-height // region_h) * -(-width // region_w)} ({region_h}x{region_w})"
        status = row["status"]
        if row.get("logits_gib") is not None and status != "ok":
            status += f" (its fp32 logits alone: {row['logits_gib']:.1f} GiB)"
        cells.append((f"{height}x{width}", row["implementation"], regions, measure.fmt(row.get("peak_mib"), 0, "–"),
                      measure.fmt(row.get("seconds"), 2, "–"), status))
    lines += ["", measure.markdown_table(["map", "implementation", "regions (tokens each)", "peak MiB", "fwd+bwd s",
                                          "status"], cells)]
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path, limit_gib: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    limit_mib = limit_gib * 1024
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for implementation, marker, color, nudge in zip(IMPLEMENTATIONS, ("o", "s", "^"), ("C0", "C1", "C2"),
                                                    (1.0, 0.92, 1.08)):
        mine = [r for r in rows if r["implementation"] == implementation]
        points = [(r["height"] * r["width"], r["peak_mib"]) for r in mine if r.get("peak_mib") is not None]
        failed = [r["height"] * r["width"] for r in mine if r.get("peak_mib") is None]
        if points:
            ax.plot(*zip(*points), marker=marker, color=color, label=implementation)
        if failed:  # out of memory: drawn at the cap it ran into
            ax.scatter([t * nudge for t in failed], [limit_mib] * len(failed), marker="x", s=60, color=color,
                       label=f"{implementation}: out of memory")
    ax.axhline(limit_mib, color="grey", linestyle="--", linewidth=0.8)
    ax.text(0.02, 0.9, f"x: out of memory at the {limit_gib:g} GiB address-space cap per process (dashed)",
            transform=ax.transAxes, fontsize=7, color="grey", va="top")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("H x W tokens (1x32x150x125, 300x250, 600x500)")
    ax.set_ylabel("peak memory of forward+backward (MiB, RSS growth)")
    ax.set_title("BRA plug-in (attnzoo.layers) vs official nchwBRA, CPU")
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
