"""``zoo probe MODELS --data DIR``: which frozen backbone fits a folder of images (attnzoo.tasks.probing).

For each model the frozen features are extracted once and cached (a second run, and other probes, reuse them); each
probe named by ``--method`` is trained on them; one leaderboard is printed (top-1 / top-5, probe parameters,
extraction and training time), and with ``--out`` written as probe.md, probe.json and probe.png. The last stdout
line is one JSON object.

Under torchrun (``torchrun --nproc_per_node N -m attnzoo.cli probe ...``: gloo on the CPU, NCCL on CUDA) the
extraction is sharded across the processes into the same cache entry one process writes; rank 0 alone trains the
probes and prints; the other ranks print nothing but errors.
"""

from __future__ import annotations

import argparse
import json

from ..errors import UserError
from .validate import (
    add_max_pixels_argument,
    add_model_kwargs_argument,
    check_device,
    float_in,
    non_negative_int,
    positive_float,
    positive_int,
)


def run(args: argparse.Namespace) -> int:
    from ..models import check_model_kwargs
    from ..outputs import output_folder
    from ..tasks.classification import start_processes, stop_processes
    from ..tasks.probing import default_cache_dir
    from ..tasks.probing.leaderboard import ModelSpec, leaderboard_markdown, parse_methods, run_probe, write_leaderboard

    check_device(args.device)
    # the output paths before any work (attnzoo.outputs: a file where a folder belongs, a name too long, read-only)
    if args.out:
        output_folder(args.out, "--out", create=False)
    cache_dir = output_folder(args.cache or default_cache_dir(), "--cache", create=False)
    if args.random_init and args.pretrained:
        raise UserError("--random-init and --pretrained contradict each other; pass one of them.")
    methods = parse_methods(args.method)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if not names:
        raise UserError("MODELS is empty; name one or more models, comma-separated.")
    for name in names:
        check_model_kwargs(name, args.model_kwargs, img_size=args.img_size)
    specs = [ModelSpec(name, checkpoint=args.pretrained, random_init=args.random_init, model_kwargs=args.model_kwargs)
             for name in names]
    processes = start_processes(args.device, args.workers)  # torchrun's process group, or this one process
    board = run_probe(specs, args.data, methods, cache_dir=cache_dir, img_size=args.img_size,
                      crop_pct=args.crop_pct, batch_size=args.batch_size, workers=processes.workers,
                      device=args.device, seed=args.seed, epochs=args.epochs, val_fraction=args.val_fraction,
                      probe_threads=args.probe_threads or None, progress=not args.quiet, max_pixels=args.max_pixels,
                      processes=processes)
    stop_processes(processes)  # run_probe left the group already; a no-op then
    if board is None:  # not rank 0: its shards are in the cache, and it prints nothing
        return 0
    print(leaderboard_markdown(board))
    summary = {"data": board.data, "models": names, "methods": methods, "extracted": board.extracted,
               "best": None if board.best() is None else {"model": board.best().model, "method": board.best().method,
                                                          "top1": round(board.best().top1, 2)}}
    if args.out:
        paths = write_leaderboard(board, args.out)
        summary["out"] = {k: str(v) for k, v in paths.items()}
    print(json.dumps(summary))
    return 0


def register(commands) -> None:
    probe = commands.add_parser("probe", help="which frozen backbone fits my data: linear, attentive, EP, MP and k-NN "
                                              "probes on cached features, one leaderboard")
    probe.add_argument("models", metavar="MODELS",
                       help="comma-separated zoo/timm names, card names or zoo train run folders")
    probe.add_argument("--data", required=True, metavar="DIR",
                       help="an ImageFolder with train/ and val/ (DIR/train/<class>/<image>), or one folder of class "
                            "sub-folders with --val-fraction")
    probe.add_argument("--method", default="linear,attentive,ep,mp,knn",
                       help="comma-separated probes: linear, attentive, ep, mp, knn (default %(default)s)")
    probe.add_argument("--out", metavar="DIR", help="write probe.md, probe.json and probe.png here")
    probe.add_argument("--pretrained", metavar="FILE_OR_RUN",
                       help="weights for every model: a file, URL or card name (default: each card's checkpoint)")
    probe.add_argument("--random-init", action="store_true",
                       help="seeded random weights instead of the cards' checkpoints")
    probe.add_argument("--cache", metavar="DIR",
                       help="feature cache folder (default $ZOO_PROBE_CACHE, else ~/.cache/attnzoo/probe)")
    probe.add_argument("--img-size", type=positive_int, default=None,
                       help="input size (default: the model's); a model whose constructor takes img_size is built at it")
    probe.add_argument("--crop-pct", type=positive_float, default=None, help="centre-crop fraction (default: the model's)")
    probe.add_argument("--val-fraction", type=float_in(0.0, 1.0, low_open=True, high_open=True), default=None,
                       help="split a folder without train/ and val/: this fraction of each class to val (seeded)")
    probe.add_argument("--epochs", type=positive_int, default=None,
                       help="epochs of every trained probe (default: each official recipe's: 90, MP 30)")
    probe.add_argument("--seed", type=non_negative_int, default=0)
    probe.add_argument("--batch-size", type=positive_int, default=64,
                       help="extraction batch per process (default %(default)s)")
    probe.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    probe.add_argument("--workers", type=non_negative_int, default=0,
                       help="data loading processes per process (default 0)")
    probe.add_argument("--probe-threads", type=non_negative_int, default=1,
                       help="torch CPU threads while the probes train (default 1: small probes train fastest on one; "
                            "0: torch's default)")
    probe.add_argument("--quiet", action="store_true", help="no progress bars")
    add_max_pixels_argument(probe)
    add_model_kwargs_argument(probe, "constructor arguments for every model, e.g. depth=2 (give it last)")
    probe.set_defaults(run=run)
