"""``zoo train MODEL --data DIR --out RUN``: fine-tune (or train from scratch) a zoo or timm classifier on an
ImageFolder, in one process or many (``torchrun --nproc_per_node N -m attnzoo.cli train ...``).

DIR/train/<class>/<image> is trained on; DIR/val/<class>/<image>, when present, is validated after every epoch. RUN
becomes a hub folder (config.json with the class names, model.safetensors, a card with the measured top-1 and this
command) plus the resume state; ``zoo validate RUN --data DIR/val`` gives the top-1 of the last epoch again.
"""

from __future__ import annotations

import argparse
import json

from ..errors import UserError
from ..outputs import output_folder
from .validate import (
    WORKERS_HELP,
    add_max_pixels_argument,
    add_model_kwargs_argument,
    check_device,
    check_model_kwargs,
    float_in,
    image_side,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)


def given_flags(argv: list[str] | None) -> set[str] | None:
    """The argument names the command line ``argv`` (``["train", ...]``) gives, defaults aside; None without it."""
    if not argv:
        return None
    parser = argparse.ArgumentParser(prog="zoo", add_help=False)
    commands = parser.add_subparsers(dest="command")
    register(commands)
    train = commands.choices["train"]
    for action in train._actions:
        action.default = argparse.SUPPRESS
    train._defaults.clear()
    return set(vars(parser.parse_args(argv))) - {"command"}


def timm_optimizer(name: str) -> str:
    """``--opt``: a name timm's optimizer factory knows (checked when the flag is read, not after the data scan)."""
    from timm.optim import list_optimizers

    known = list_optimizers()
    if name.lower() not in known:
        raise argparse.ArgumentTypeError(f"{name!r} is not a timm optimizer (e.g. {', '.join(known[:8])}, ...; "
                                         "timm.optim.list_optimizers() names them all)")
    return name


def timm_scheduler(name: str) -> str:
    """``--sched``: a name timm's scheduler factory knows (asked of the factory itself, on a throw-away optimizer)."""
    import torch
    from timm.scheduler import create_scheduler_v2

    try:
        create_scheduler_v2(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), sched=name, num_epochs=2)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name!r} is not a timm scheduler (cosine, tanh, step, multistep, plateau, "
                                         "poly)") from None
    return name


def run(args: argparse.Namespace) -> int:
    from ..tasks.classification import start_processes, stop_processes
    from ..tasks.classification.training import train

    check_device(args.device)
    if args.pretrained and args.resume:
        raise UserError("--pretrained starts a run, --resume continues one; pass one of them.")
    if args.scale[0] > args.scale[1]:
        raise UserError(f"--scale {args.scale[0]} {args.scale[1]}: MIN is above MAX; pass the smaller area first.")
    check_model_kwargs(args)
    output_folder(args.out, "--out", create=False)  # attnzoo.outputs: the one output-path rule, before any work
    if args.resume:  # --resume keeps the run's recipe for every flag not typed (see runs.resume_recipe)
        args.given = given_flags(getattr(args, "argv", None))
    processes = start_processes(args.device, args.workers)
    args.workers = processes.workers  # the loaders read it from args
    summary = train(args, processes)
    stop_processes(processes)
    if processes.is_primary:
        # Percentages to 4 decimals, as zoo validate prints them (so the two compare equal); the lr to 4 digits.
        rounded = {k: round(v, 4) if isinstance(v, float) and k != "lr" else v for k, v in summary.items()}
        rounded["lr"] = float(f"{summary['lr']:.4g}")
        print(json.dumps({"model": args.model, "out": args.out, **rounded, "world_size": processes.world_size,
                          "device": str(processes.device)}))
    return 0


def register(commands) -> None:
    p = commands.add_parser("train", help="fine-tune a classifier on an ImageFolder (torchrun for several processes)")
    p.add_argument("model", help="a zoo or timm model name, e.g. poolformer_s12 or biformer_tiny")
    p.add_argument("--data", required=True, metavar="DIR", help="folder with train/<class>/ (and val/<class>/)")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder (hub folder + resume state)")
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--batch-size", type=positive_int, default=32, help="per process")
    p.add_argument("--img-size", type=image_side, default=None,
                   help="input size (default: the model's); a model whose constructor takes img_size is built at it "
                        "and --pretrained weights of another size are resampled to it")
    p.add_argument("--crop-pct", type=positive_float, default=None,
                   help="validation centre-crop fraction, saved with the run (default: the model's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s; torchrun: one per process)")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--workers", type=non_negative_int, default=None, help=WORKERS_HELP)
    p.add_argument("--seed", type=int, default=0)
    start = p.add_argument_group("where to start")
    start.add_argument("--pretrained", metavar="FILE_OR_CARD",
                       help="backbone weights (a file, URL, card name or model folder); the head is re-initialised "
                            "for the folder's classes")
    start.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    add_model_kwargs_argument(start, "constructor arguments, e.g. depth='(1,1,1,1)' (saved in config.json)")
    start.add_argument("--drop-path", type=float_in(0.0, 1.0, high_open=True), default=None,
                       help="stochastic depth rate (default: the model's)")
    start.add_argument("--grad-checkpointing", action="store_true", help="recompute activations to save memory")
    opt = p.add_argument_group("optimizer and schedule (timm's factories)")
    opt.add_argument("--opt", type=timm_optimizer, default="adamw", help="any timm optimizer name (default %(default)s)")
    opt.add_argument("--lr", type=non_negative_float, default=1e-3, help="0 keeps the weights (e.g. to test loading)")
    opt.add_argument("--weight-decay", type=non_negative_float, default=0.05)
    opt.add_argument("--layer-decay", type=float_in(0.0, 1.0, low_open=True), default=None,
                     help="layer-wise lr decay, e.g. 0.75 (models with group_matcher)")
    opt.add_argument("--clip-grad", type=positive_float, default=None, help="clip the gradient norm to this")
    opt.add_argument("--sched", type=timm_scheduler, default="cosine", help="any timm scheduler name (default %(default)s)")
    opt.add_argument("--warmup-epochs", type=non_negative_int, default=1)
    opt.add_argument("--warmup-lr", type=non_negative_float, default=1e-5)
    opt.add_argument("--min-lr", type=non_negative_float, default=1e-6)
    aug = p.add_argument_group("augmentation and regularisation")
    aug.add_argument("--no-aug", action="store_true", help="train on resized centre crops, no augmentation")
    aug.add_argument("--scale", type=float_in(0.0, 1.0, low_open=True), nargs=2, default=(0.08, 1.0),
                     metavar=("MIN", "MAX"), help="random-resized-crop area range (default 0.08 1.0)")
    aug.add_argument("--color-jitter", type=non_negative_float, default=0.4)
    aug.add_argument("--smoothing", type=float_in(0.0, 1.0, high_open=True), default=0.1, help="label smoothing")
    aug.add_argument("--mixup", type=non_negative_float, default=0.0, help="mixup alpha (0 = off)")
    aug.add_argument("--cutmix", type=non_negative_float, default=0.0, help="cutmix alpha (0 = off)")
    aug.add_argument("--model-ema", action="store_true", help="keep an EMA of the weights; validate and save it")
    aug.add_argument("--model-ema-decay", type=float_in(0.0, 1.0, high_open=True), default=0.999)
    p.add_argument("--no-image-check", action="store_true", help="skip reading every image header first")
    add_max_pixels_argument(p)
    p.set_defaults(run=run)
