"""``zoo bench [PATTERN]``: params, GFLOPs, throughput and peak memory of zoo models next to timm peers (attnzoo.tasks.bench)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .validate import check_device, image_side, non_negative_int, positive_int


def run(args: argparse.Namespace) -> int:
    from ..tasks.bench import run_bench

    check_device(args.device)
    rows = run_bench(args.pattern, device=args.device, batch=args.batch, img_size=args.img_size, amp=args.amp,
                     train=args.train, peers=not args.no_peers, out=args.out, warmup=args.warmup, iters=args.iters)
    print((Path(args.out) / "bench.md").read_text())
    failed = [r.name for r in rows if r.error]
    if failed:
        print(f"zoo: {len(failed)} model(s) failed: {', '.join(failed)} (see bench.json)", file=sys.stderr)
    return 1 if failed else 0


def register(commands) -> None:
    bench = commands.add_parser("bench", help="params, GFLOPs, throughput and peak memory, with timm peers")
    bench.add_argument("pattern", nargs="?", default=None, help="zoo models matching this pattern (comma-separate several)")
    bench.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    bench.add_argument("--train", action="store_true", help="also time a training step (forward+backward+SGD)")
    bench.add_argument("--batch", type=positive_int, default=8)
    bench.add_argument("--img-size", type=image_side, default=224,
                       help="input size; models that take img_size are built at it (default %(default)s)")
    bench.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    bench.add_argument("--no-peers", action="store_true", help="leave out the timm peers (Swin-T, ConvNeXt-T, ...)")
    bench.add_argument("--warmup", type=non_negative_int, default=2)
    bench.add_argument("--iters", type=positive_int, default=5)
    bench.add_argument("--out", default="bench_out", help="folder for bench.json, bench.md, bench.png")
    bench.set_defaults(run=run)
