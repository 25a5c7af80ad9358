"""Benchmarks: attention ops (our kernels vs our reference vs the official algorithm) and whole models vs timm peers.

    python tools/benchmark.py --op bra                       # CUDA: issue 4's 8 anchor shapes; CPU: BiFormer-T stages at 224
    python tools/benchmark.py --op bra --preset tiny --device cpu --repeats 1
    python tools/benchmark.py --models                       # BiFormer-T/S (kernel + reference path) vs Swin-T, ConvNeXt-T, PoolFormer-S12
    python tools/benchmark.py --op bra --models --out bench_out/gpu
    python tools/benchmark.py --reparameterize               # SLAB / PRepBN: folded (reparameterize_model) vs unfolded
    python tools/benchmark.py --list

Writes ``<out>/op_<name>.{json,md,png}`` and ``<out>/models.{json,md,png}``; every comparison is taken within one run
on one machine (ratios), and absolute numbers carry the device they came from. Ops are pluggable: see
tools/benchmarks/__init__.py. Timing, peak memory, tables and plots: attnzoo.tasks.measure, the harness ``zoo bench`` uses
too (docs/ARCHITECTURE.md, "Measuring").
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
from _clone_import import make_attnzoo_importable  # noqa: E402

make_attnzoo_importable()  # run from a checkout without `pip install -e .`

import torch  # noqa: E402
from benchmarks import OP_BENCHMARKS, load_op_benchmark  # noqa: E402
from benchmarks.harness import op_markdown, plot_op, run_op_benchmark  # noqa: E402

from attnzoo.tasks.measure import device_label, environment, write_json  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--op", action="append", default=[], help=f"op benchmark to run (repeatable): {sorted(OP_BENCHMARKS)}")
    parser.add_argument("--preset", help="op shape preset (default: the op's choice for the device; see --list)")
    parser.add_argument("--impls", help="comma-separated op implementations (default: all that run on the device)")
    parser.add_argument("--models", nargs="?", const="default", help="comma-separated timm names, or none for the default set")
    parser.add_argument("--reparameterize", nargs="?", const="default",
                        help="comma-separated timm names, or none for the SLAB/PRepBN set: inference of the "
                             "re-parameterised model next to the unfolded one")
    parser.add_argument("--batch-size", type=int, help="model batch size (default: 128 on CUDA, 2 on CPU)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--modes", default="train,infer", help="model modes: train,infer")
    parser.add_argument("--paths", default="reference,triton", help="kernel paths for models with Triton kernels")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available)")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="op dtype (auto: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--warmup", type=int, help="warm-up calls (default: 5 on CUDA, 1 on CPU)")
    parser.add_argument("--repeats", type=int, help="timed calls, median reported (default: 20 on CUDA, 3 on CPU)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default on CPU: 1, since on a shared machine OpenMP contention swamps "
                        "the timings; CUDA runs keep torch's default)")
    parser.add_argument("--cpu-clock", default="process", choices=["process", "wall"],
                        help="CPU timing clock: process CPU time (default; robust when other jobs share the cores) or wall")
    parser.add_argument("--out", default="bench_out", help="output folder")
    parser.add_argument("--list", action="store_true", help="list op benchmarks, their presets and implementations")
    return parser.parse_args(argv)


def list_benchmarks() -> None:
    for name in sorted(OP_BENCHMARKS):
        bench = load_op_benchmark(name)
        print(f"{name}: {bench.description}")
        impls = ", ".join(f"{impl} ({'/'.join(devices)})" for impl, (_, devices) in bench.implementations.items())
        print(f"  implementations: {impls}")
        for preset, cases in bench.presets.items():
            print(f"  preset {preset}: {'; '.join(case.label for case in cases)}")
    from benchmarks.models import DEFAULT_MODELS

    print(f"models (default set): {', '.join(DEFAULT_MODELS)}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        list_benchmarks()
        return 0
    if not args.op and not args.models and not args.reparameterize:
        print("nothing to do: give --op NAME, --models and/or --reparameterize (see --help, --list)", file=sys.stderr)
        return 2
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    on_cuda = device.startswith("cuda")
    if args.threads or not on_cuda:
        torch.set_num_threads(args.threads or 1)
    warmup = args.warmup if args.warmup is not None else (5 if on_cuda else 1)
    repeats = args.repeats if args.repeats is not None else (20 if on_cuda else 3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment(device)
    label = device_label(env, device)
    print(f"device: {label}; torch {env['torch']}, triton {env['triton']}; writing to {out}")
    summary = []

    for op_name in args.op:
        bench = load_op_benchmark(op_name)
        preset = args.preset or bench.default_preset(device)
        if preset not in bench.presets:
            print(f"unknown preset {preset!r} for {op_name}; presets: {', '.join(bench.presets)}", file=sys.stderr)
            return 2
        dtype_name = args.dtype if args.dtype != "auto" else ("bf16" if on_cuda else "fp32")
        impls = args.impls.split(",") if args.impls else list(bench.implementations)
        unknown = [i for i in impls if i not in bench.implementations]
        if unknown:
            print(f"unknown implementations {unknown} for {op_name}: {list(bench.implementations)}", file=sys.stderr)
            return 2
        print(f"[op {op_name}] preset {preset}, {dtype_name}, implementations {impls}")
        records = run_op_benchmark(bench, bench.presets[preset], device, DTYPES[dtype_name], impls, warmup, repeats,
                                   cpu_clock=args.cpu_clock)
        meta = dict(op=op_name, preset=preset, device=device, device_label=label, dtype=dtype_name,
                    warmup=warmup, repeats=repeats, cpu_clock=args.cpu_clock, environment=env)  # fmt: skip
        stem = out / f"op_{op_name}"
        write_json(stem.with_suffix(".json"), {"meta": meta, "records": records})
        markdown = op_markdown(bench, records, meta)
        stem.with_suffix(".md").write_text(markdown)
        plot_op(stem.with_suffix(".png"), bench, records, meta)
        summary.append(markdown)

    if args.models:
        from benchmarks.models import DEFAULT_MODELS, models_markdown, plot_models, run_model_benchmark

        names = DEFAULT_MODELS if args.models == "default" else args.models.split(",")
        batch_size = args.batch_size or (128 if on_cuda else 2)
        modes = args.modes.split(",")
        paths = args.paths.split(",")
        print(f"[models] {names}, batch {batch_size}, {args.img_size}px, modes {modes}, kernel paths {paths}")
        records = run_model_benchmark(names, device, batch_size, args.img_size, modes, paths, warmup, repeats,
                                      cpu_clock=args.cpu_clock)
        meta = dict(device=device, device_label=label, batch_size=batch_size, img_size=args.img_size,
                    warmup=warmup, repeats=repeats, cpu_clock=args.cpu_clock, environment=env)  # fmt: skip
        write_json(out / "models.json", {"meta": meta, "records": records})
        markdown = models_markdown(records, meta)
        (out / "models.md").write_text(markdown)
        plot_models(out / "models.png", records, meta)
        summary.append(markdown)

    if args.reparameterize:
        from benchmarks.reparameterize import (
            DEFAULT_MODELS as REPARAM_MODELS,
        )
        from benchmarks.reparameterize import (
            plot_reparameterize,
            reparameterize_markdown,
            run_reparameterize_benchmark,
        )

        names = REPARAM_MODELS if args.reparameterize == "default" else args.reparameterize.split(",")
        batch_size = args.batch_size or (64 if on_cuda else 8)
        print(f"[reparameterize] {names}, batch {batch_size}, {args.img_size}px")
        import attnzoo.backbones  # noqa: F401  (registers the families with timm)

        records = run_reparameterize_benchmark(names, device, batch_size, args.img_size, warmup, repeats,
                                               cpu_clock=args.cpu_clock)
        meta = dict(device=device, device_label=label, batch_size=batch_size, img_size=args.img_size,
                    warmup=warmup, repeats=repeats, cpu_clock=args.cpu_clock, environment=env)  # fmt: skip
        write_json(out / "reparameterize.json", {"meta": meta, "records": records})
        markdown = reparameterize_markdown(records, meta)
        (out / "reparameterize.md").write_text(markdown)
        plot_reparameterize(out / "reparameterize.png", records, meta)
        summary.append(markdown)

    (out / "README.md").write_text("# benchmark results\n\n" + "\n".join(summary))
    print("\n" + "\n".join(summary))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
