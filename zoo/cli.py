"""The ``zoo`` command: list models, print a model card, convert checkpoints, export, benchmark, run the demo.

User mistakes (an unknown model, a missing or corrupt file, a bad card) end with one line on stderr and exit code 2,
never a traceback; bugs still raise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from .demo import DEFAULT_BUDGET_S, DEFAULT_MAX_GFLOPS, DEFAULT_OUT_DIR, DEFAULT_XRAY_MINUTES

__all__ = ["main"]

EXIT_USER_ERROR = 2


def _live_params_m(name: str, model_kwargs: dict) -> float:
    import timm

    # The meta device allocates nothing, so counting a large model's parameters is instant.
    with torch.device("meta"):
        model = timm.create_model(name, **model_kwargs)
    return sum(p.numel() for p in model.parameters()) / 1e6


def cmd_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .cards import get_card, has_card
    from .demo import wide_console
    from .registry import family_of, list_models

    names = list_models(args.pattern)
    if not names:
        print(f"zoo: error: no model matches '{args.pattern}' (`zoo list` shows every model)", file=sys.stderr)
        return EXIT_USER_ERROR
    table = Table(title=f"attnzoo models matching '{args.pattern}'")
    table.add_column("name", no_wrap=True, min_width=max(map(len, names)))
    table.add_column("family", no_wrap=True)
    for column in ("params (M)", "GFLOPs (card)", "top-1 (card)"):
        table.add_column(column, justify="right")
    for name in names:
        card = get_card(name) if has_card(name) else None
        params = _live_params_m(name, card.model_kwargs if card else {})
        gflops = f"{card.gflops:g}" if card else "-"
        top1 = f"{card.top1:g}" if card and card.top1 is not None else "-"
        table.add_row(name, family_of(name), f"{params:.2f}", gflops, top1)
    wide_console().print(table)
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from .cards import render_card

    print(render_card(args.name))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .checkpoint import convert_checkpoint

    sha256 = convert_checkpoint(args.src, args.dst, args.model, trust_pickle=args.trust_pickle, use_ema=args.use_ema)
    print(f"{sha256}  {args.dst}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(pattern=args.pattern, max_gflops=args.max_gflops, budget_s=args.budget_s,
             xray_minutes=args.xray_minutes, out_dir=args.out)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import timm

    from .export import export_onnx
    from .registry import require_model

    model = timm.create_model(require_model(args.name), pretrained=False)
    if args.checkpoint:
        from .checkpoint import load_checkpoint

        load_checkpoint(model, args.checkpoint)
    size = tuple(args.input_size) if args.input_size else None
    result = export_onnx(model, args.output or f"{args.name}.onnx", input_size=size, opset=args.opset,
                         exporter=args.exporter)
    diff = "not checked (onnxruntime missing)" if result.max_abs_diff is None else f"{result.max_abs_diff:.3g}"
    print(f"{result.path}  exporter={result.exporter}  max |onnxruntime - eager| = {diff}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("zoo: error: --device cuda but no CUDA device is visible (use --device cpu)", file=sys.stderr)
        return EXIT_USER_ERROR
    rows = run_bench(args.pattern, device=args.device, batch=args.batch, img_size=args.img_size, amp=args.amp,
                     train=args.train, peers=not args.no_peers, out=args.out, warmup=args.warmup, iters=args.iters)
    print((Path(args.out) / "bench.md").read_text())
    failed = [r.name for r in rows if r.error]
    if failed:
        print(f"zoo: {len(failed)} model(s) failed: {', '.join(failed)} (see bench.json)", file=sys.stderr)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="attnzoo: models, model cards and safe checkpoints.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="table of the zoo's models (name, family, params, GFLOPs, top-1)")
    listing.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern, e.g. 'focalnet*'")
    listing.set_defaults(run=cmd_list)

    card = commands.add_parser("card", help="print a model card as Markdown")
    card.add_argument("name", help="model name, e.g. poolformer_s12")
    card.set_defaults(run=cmd_card)

    convert = commands.add_parser("convert", help="write a checkpoint as a cleaned .safetensors; prints its sha256")
    convert.add_argument("src", help="a .safetensors/.pth/.pt/.bin checkpoint")
    convert.add_argument("dst", help="the .safetensors file to write")
    convert.add_argument("--model", help="timm name: map the official layout to it and check that it fits exactly")
    convert.add_argument("--trust-pickle", action="store_true",
                         help="read a pickle that needs code to load (this RUNS that code: only for files you trust)")
    convert.add_argument("--use-ema", action="store_true", help="take the EMA weights of a training checkpoint")
    convert.set_defaults(run=cmd_convert)

    demo = commands.add_parser("demo", help="the zoo table (params/GFLOPs/CPU latency), then train + evaluate an X-ray detector")
    demo.add_argument("--pattern", default="*", help="only the models matching this pattern")
    demo.add_argument("--max-gflops", type=float, default=DEFAULT_MAX_GFLOPS,
                      help="run models up to this many GFLOPs on the CPU; larger ones are only counted (default %(default)s)")
    demo.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                      help="start no CPU run after this many seconds; cheapest models run first (default %(default)s)")
    demo.add_argument("--xray-minutes", type=float, default=DEFAULT_XRAY_MINUTES,
                      help="budget of the X-ray detector step (train + per-split test); 0 skips it (default %(default)s)")
    demo.add_argument("--out", default=DEFAULT_OUT_DIR, help="folder for the demo's files (default %(default)s)")
    demo.set_defaults(run=cmd_demo)

    export = commands.add_parser("export", help="export a model to ONNX and check it against eager in onnxruntime")
    export.add_argument("name", help="model name, e.g. biformer_tiny")
    export.add_argument("--format", default="onnx", choices=["onnx"], help="export format (default %(default)s)")
    export.add_argument("--output", "-o", help="file to write (default NAME.onnx)")
    export.add_argument("--checkpoint", help="weights to load first (path or card name, through zoo.load_checkpoint)")
    export.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), help="default: the model's")
    export.add_argument("--opset", type=int, default=18)
    export.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "torchscript"])
    export.set_defaults(run=cmd_export)

    bench = commands.add_parser("bench", help="params, GFLOPs, throughput and peak memory, with timm peers")
    bench.add_argument("pattern", nargs="?", default=None, help="zoo models matching this pattern (comma-separate several)")
    bench.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    bench.add_argument("--train", action="store_true", help="also time a training step (forward+backward+SGD)")
    bench.add_argument("--batch", type=int, default=8)
    bench.add_argument("--img-size", type=int, default=224)
    bench.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    bench.add_argument("--no-peers", action="store_true", help="leave out the timm peers (Swin-T, ConvNeXt-T, ...)")
    bench.add_argument("--warmup", type=int, default=2)
    bench.add_argument("--iters", type=int, default=5)
    bench.add_argument("--out", default="bench_out", help="folder for bench.json, bench.md, bench.png")
    bench.set_defaults(run=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zoo`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    from .cards import CardError, UnknownModelError
    from .checkpoint import CheckpointError

    try:
        return args.run(args)
    except (UnknownModelError, CheckpointError, CardError, FileNotFoundError) as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
