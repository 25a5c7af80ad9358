"""biformer_tiny CPU training step: the zoo model vs the official model (same weights) vs timm's swin_tiny.

Each side runs in its own Python process so that peak resident memory is that side's alone: batch ``--batch`` (8)
at 224x224, ``--threads`` (2) torch threads, SGD steps on random images and labels (cross-entropy). The processes
are started together and their steps are interleaved (one step of each side in turn, ``--iters`` rounds after
``--warmup``), so that a machine shared with other jobs slows every side alike; the step time is the median over the
rounds, as wall-clock and as process CPU time (the CPU seconds the process itself used: robust to other jobs taking
the cores). Peak = the process's ``ru_maxrss`` at the end (absolute, MiB) and its growth over the resident set just
before the first step (attnzoo.tasks.measure.process_peak_rss_mib, loaded by benchmarks.load_measure, which does not
import the zoo into the timm and official processes).

``--profile`` adds a torch.profiler table of one training step of the zoo model: the ops by self CPU time, grouped as
routing (region means, topk), gathers (index, index_add_), attention (the batched matmuls and softmax of the BRA
blocks and of the dense last stage), linear layers, depthwise convs (positional conv, LePE), norms and the rest.

The official code is not part of this repository: pass a checkout of rayleizhu/BiFormer with ``--official`` (and,
if einops is not installed, ``--extra-path`` to a folder that holds it)::

    python tools/benchmarks/biformer_cpu_train.py --official /work/ext/BiFormer --extra-path /work/ext/pydeps
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(1, str(REPO / "tools"))
from benchmarks import load_measure  # noqa: E402

measure = load_measure()
SIDES = ("zoo biformer_tiny", "official biformer_tiny", "timm swin_tiny")

CATEGORIES = [  # (category, predicate on the op name); first match wins
    ("routing (topk, region means)", lambda n: n in ("aten::topk", "aten::mean", "aten::sum")),
    ("gathers (index, index_add_)", lambda n: n in ("aten::index", "aten::index_add_", "aten::gather",
                                                     "aten::index_select", "aten::scatter_add_",
                                                     "aten::index_put_", "aten::_index_put_impl_")),
    ("attention matmuls (bmm)", lambda n: n in ("aten::bmm", "aten::baddbmm")),
    ("softmax / exp / logsumexp", lambda n: any(k in n for k in ("softmax", "logsumexp", "aten::exp", "_safe_softmax",
                                                                 "scaled_dot_product", "flash_attention"))),
    ("linear layers (mm/addmm)", lambda n: n in ("aten::addmm", "aten::mm")),
    ("convs (depthwise pos-embed, LePE, MLP dwconv; stem)", lambda n: "conv" in n),
    ("norms", lambda n: "norm" in n),
    ("gelu", lambda n: "gelu" in n),
    ("copies / layout (copy_, cat, clone, contiguous)", lambda n: n in ("aten::copy_", "aten::cat", "aten::clone",
                                                                         "aten::contiguous", "aten::_to_copy")),
    ("element-wise (add, mul, ...)", lambda n: n in ("aten::add", "aten::add_", "aten::mul", "aten::mul_",
                                                     "aten::sub", "aten::div", "aten::addcmul_", "aten::addcdiv_",
                                                     "aten::fill_", "aten::zero_", "aten::lerp_", "aten::sqrt")),
]


def _model(side: str, official: str | None, weights: str | None):
    import timm
    import torch

    if side == "timm swin_tiny":
        return timm.create_model("swin_tiny_patch4_window7_224")
    if side == "zoo biformer_tiny":
        sys.path.insert(0, str(REPO / "tools"))
        from _clone_import import make_attnzoo_importable

        make_attnzoo_importable()
        import attnzoo  # noqa: F401

        model = timm.create_model("biformer_tiny")
    else:
        # the official models/ folder is a namespace package, which a plain module named "models" anywhere on the path
        # (this script's own folder holds one) would shadow: drop this folder and put the official root first
        here = Path(__file__).resolve().parent
        sys.path[:] = [official] + [p for p in sys.path if Path(p or ".").resolve() != here]
        from models.biformer import biformer_tiny

        model = biformer_tiny(pretrained=False)
    if weights:  # read here, not through attnzoo.weights: the official side's process must not import the zoo
        model.load_state_dict(torch.load(weights, weights_only=True), strict=True)
    return model


def serve(side: str, args) -> None:
    """Child process: build the side, warm up, then run one step per "step" line on stdin; "done" ends it."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = _model(side, args.official, args.weights).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = torch.randn(args.batch, 3, 224, 224)
    labels = torch.randint(0, 1000, (args.batch,))
    before = measure.process_peak_rss_mib()

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    print(json.dumps(dict(ready=side)), flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        print(json.dumps(dict(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu)), flush=True)
    peak = measure.process_peak_rss_mib()
    result = dict(side=side, peak_rss_mib=round(peak), peak_growth_mib=round(peak - before))
    if args.profile and side == "zoo biformer_tiny":
        result["profile"] = profile_step(step)
    print(json.dumps(result), flush=True)


def profile_step(step) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    averages = prof.key_averages()
    total = sum(event.self_cpu_time_total for event in averages)
    grouped: dict[str, float] = {}
    top = []
    for event in sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True):
        category = next((name for name, match in CATEGORIES if match(event.key)), "other")
        grouped[category] = grouped.get(category, 0.0) + event.self_cpu_time_total
        if len(top) < 15:
            top.append((event.key, round(100 * event.self_cpu_time_total / total, 1), event.count))
    return dict(total_ms=round(total / 1e3), categories={k: round(100 * v / total, 1) for k, v in
                                                          sorted(grouped.items(), key=lambda kv: -kv[1])},
                top_ops=top)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", help="root of a rayleizhu/BiFormer checkout (models/biformer.py)")
    parser.add_argument("--extra-path", help="a folder prepended to PYTHONPATH of the official side (einops)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--out", type=Path, help="write results.json here")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args)
        return 0

    sides = [s.strip() for s in args.sides.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        weights = None
        if "official biformer_tiny" in sides:  # the same weights on both BiFormer sides (the keys are the official ones)
            import timm
            import torch

            sys.path.insert(0, str(REPO / "tools"))
            from _clone_import import make_attnzoo_importable

            make_attnzoo_importable()
            import attnzoo  # noqa: F401

            torch.manual_seed(0)
            weights = str(Path(tmp) / "biformer_tiny.pt")
            torch.save(timm.create_model("biformer_tiny").state_dict(), weights)
        children = {}
        for side in sides:
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            if side.startswith("official") and args.extra_path:
                env["PYTHONPATH"] = os.pathsep.join(p for p in (args.extra_path, env.get("PYTHONPATH")) if p)
            command = [sys.executable, __file__, "--serve", side, "--batch", str(args.batch), "--threads",
                       str(args.threads), "--warmup", str(args.warmup)]
            if side != "timm swin_tiny" and weights:
                command += ["--weights", weights]
            if args.official:
                command += ["--official", args.official]
            if args.profile:
                command.append("--profile")
            children[side] = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                              env=env, cwd=REPO)
        for child in children.values():  # every side built and warmed up before the timed rounds
            json.loads(child.stdout.readline())
        samples = {side: [] for side in sides}
        for _ in range(args.iters):
            for side, child in children.items():
                child.stdin.write("step\n")
                child.stdin.flush()
                samples[side].append(json.loads(child.stdout.readline()))
        results = []
        for side, child in children.items():
            child.stdin.write("done\n")
            child.stdin.flush()
            result = json.loads(child.stdout.readline())
            child.wait()
            wall = statistics.median(s["wall"] for s in samples[side])
            cpu = statistics.median(s["cpu"] for s in samples[side])
            result.update(train_img_s=round(args.batch / wall, 2), step_wall_s=round(wall, 2),
                          step_cpu_s=round(cpu, 2), train_img_per_cpu_s=round(args.batch / cpu, 2))
            results.append(result)
            print(json.dumps(result), flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        measure.write_json(args.out / "results.json", results, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
