"""``zoo demo``: the zoo table (params/GFLOPs/CPU latency), then train and evaluate an X-ray detector.

The steps are ``attnzoo.tasks.demo`` (and ``attnzoo.tasks.xray.demo``); this module only parses arguments.
"""

from __future__ import annotations

import argparse

from ..tasks.demo import DEFAULT_BUDGET_S, DEFAULT_MAX_GFLOPS, DEFAULT_OUT_DIR, DEFAULT_XRAY_MINUTES
from ..tasks.xray.demo import DEMO_ITERATIONS
from .validate import positive_int


def run(args: argparse.Namespace) -> int:
    from ..tasks.demo import run_demo

    run_demo(pattern=args.pattern, max_gflops=args.max_gflops, budget_s=args.budget_s,
             xray_minutes=args.xray_minutes, xray_iterations=args.xray_iterations, out_dir=args.out)
    return 0


def register(commands) -> None:
    demo = commands.add_parser("demo", help="the zoo table (params/GFLOPs/CPU latency), then train + evaluate an X-ray detector")
    demo.add_argument("--pattern", default="*", help="only the models matching this pattern")
    demo.add_argument("--max-gflops", type=float, default=DEFAULT_MAX_GFLOPS,
                      help="run models up to this many GFLOPs on the CPU; larger ones are only counted (default %(default)s)")
    demo.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                      help="start no CPU run after this many seconds; cheapest models run first (default %(default)s)")
    demo.add_argument("--xray-minutes", type=float, default=DEFAULT_XRAY_MINUTES,
                      help="time guard of the X-ray step: training stops early, saying so, when the step has used it "
                           "up; 0 skips the step (default %(default)s)")
    demo.add_argument("--xray-iterations", type=positive_int, default=None,
                      help=f"training iterations of the X-ray step (default {DEMO_ITERATIONS}, fixed and seeded)")
    demo.add_argument("--out", default=DEFAULT_OUT_DIR, help="folder for the demo's files (default %(default)s)")
    demo.set_defaults(run=run)
