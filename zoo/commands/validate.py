"""``zoo validate MODEL_OR_FOLDER --data DIR``: top-1 / top-5 of a classifier on an ImageFolder, e.g. ImageNet val.

With an official checkpoint and ImageNet-1k val this is the command that reproduces a card's top-1 (see the README's
classification section); with a ``zoo train`` run folder it reproduces the run's last reported top-1.
"""

from __future__ import annotations

import argparse
import json
import os

from ..errors import UserError

DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


def add_model_source_args(parser: argparse.ArgumentParser) -> None:
    """The flags that say which weights a classification verb runs (shared by validate and predict)."""
    from timm.utils import ParseKwargs

    parser.add_argument("model", metavar="MODEL_OR_FOLDER",
                        help="a zoo/timm model name, or a folder written by zoo train / zoo.save_pretrained")
    parser.add_argument("--checkpoint", metavar="FILE_OR_CARD",
                        help="weights for a model name: a file, URL or card name (default: the card's checkpoint)")
    parser.add_argument("--random-init", action="store_true",
                        help="random weights instead of the card's checkpoint (for speed measurements only)")
    parser.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs, metavar="KEY=VALUE",
                        help="constructor arguments for a model name, e.g. depth='(1,1,1,1)'")


def check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} but no CUDA device is visible; use --device cpu.")


def data_config_overrides(args: argparse.Namespace) -> dict:
    """--img-size / --crop-pct / --crop-mode as timm's resolve_model_data_config arguments (unset ones keep the model's)."""
    overrides = {}
    if args.img_size is not None:
        overrides["img_size"] = args.img_size
    if getattr(args, "crop_pct", None) is not None:
        overrides["crop_pct"] = args.crop_pct
    if getattr(args, "crop_mode", None) is not None:
        overrides["crop_mode"] = args.crop_mode
    return overrides


def run(args: argparse.Namespace) -> int:
    from ..tasks.classification import start_processes, stop_processes
    from ..tasks.classification.validation import validate

    check_device(args.device)
    if args.random_init and args.checkpoint:
        raise UserError("--random-init and --checkpoint contradict each other; pass one of them.")
    processes = start_processes(args.device)
    done = validate(args.model, args.data, processes, checkpoint=args.checkpoint, random_init=args.random_init,
                    model_kwargs=args.model_kwargs, data_overrides=data_config_overrides(args),
                    batch_size=args.batch_size, workers=args.workers, amp=args.amp,
                    check_images=not args.no_image_check)
    stop_processes(processes)
    if not processes.is_primary:
        return 0
    result = done.result
    print(f"{args.model} on {done.folder}: top-1 {result.top1:.3f}  top-5 {result.top5:.3f}  loss {result.loss:.4f}  "
          f"({result.images} images, {result.images_per_s:.1f} images/s, {len(done.scan.skipped)} skipped)")
    print(json.dumps(done.record(model=args.model, checkpoint=args.checkpoint, batch_size=args.batch_size,
                                 amp=args.amp, device=str(processes.device), world_size=processes.world_size)))
    return 0


def register(commands) -> None:
    validate = commands.add_parser("validate", help="top-1 / top-5 of a classifier on an ImageFolder (e.g. ImageNet val)")
    add_model_source_args(validate)
    validate.add_argument("--data", required=True, metavar="DIR",
                          help="an ImageFolder (DIR/<class>/<image>), a folder with val/ in it, or ImageNet val "
                               "(DIR/n01440764/*.JPEG, ...)")
    validate.add_argument("--img-size", type=int, default=None, help="input size (default: the model's)")
    validate.add_argument("--crop-pct", type=float, default=None, help="centre-crop fraction (default: the model's)")
    validate.add_argument("--crop-mode", default=None, choices=["center", "squash", "border"],
                          help="resize the short side then crop (center), or resize to a square first (squash, as the "
                               "official Agent-Attention eval); default: the model's")
    validate.add_argument("--batch-size", type=int, default=64)
    validate.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    validate.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    validate.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="data loading processes")
    validate.add_argument("--no-image-check", action="store_true",
                          help="skip reading every image header first (unreadable images then stop the run)")
    validate.set_defaults(run=run)
