"""``zoo validate MODEL_OR_FOLDER --data DIR``: top-1 / top-5 of a classifier on an ImageFolder, e.g. ImageNet val.

With an official checkpoint and ImageNet-1k val this is the command that reproduces a card's top-1 (see the README's
classification section); with a ``zoo train`` run folder it reproduces the run's last reported top-1.
"""

from __future__ import annotations

import argparse
import json
import math
import os

from ..errors import UserError
from ..tasks.folders import printable
from ..tasks.images import DEFAULT_MAX_PIXELS, display_path, parse_pixel_limit

WORKERS_HELP = ("data loading processes per process (default: min(4, CPUs - 1) of the CPUs this process may use; "
                "torch's threads take the rest unless OMP_NUM_THREADS is set)")


# ------------------------------------------------------------------------------------------------ flag types


def int_at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum`` (argparse then names the flag in its one error line)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def image_side(text: str) -> int:
    """``--img-size`` / ``--input-size``: a whole number of pixels whose square is within the image reader's pixel
    limit (``attnzoo.tasks.images.DEFAULT_MAX_PIXELS``), checked when the flag is read, before anything is allocated
    (``--img-size 100000`` would ask for a 10-gigapixel input: tens of GB before the first step)."""
    side = positive_int(text)
    if side * side > DEFAULT_MAX_PIXELS:
        raise argparse.ArgumentTypeError(
            f"{side}x{side} = {side * side / 1e6:.1f} megapixels is over the {DEFAULT_MAX_PIXELS / 1e6:.1f}-megapixel "
            f"limit of an input (at most {math.isqrt(DEFAULT_MAX_PIXELS)} per side)")
    return side


def float_in(low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False):
    """An argparse type: a finite number in the range (``low_open``/``high_open``: the bound itself excluded)."""
    left, right = ("(" if low_open else "["), (")" if high_open else "]")
    if high is None:
        wanted = f"> {low}" if low_open else f">= {low}"
    else:
        wanted = f"in {left}{low}, {high}{right}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {wanted}, got {text!r}") from None
        if (not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low))
                or (high is not None and (value >= high if high_open else value > high))):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    parse.__name__ = f"number {wanted}"
    return parse


positive_float = float_in(0.0, low_open=True)
non_negative_float = float_in(0.0)


class ModelKwargs(argparse.Action):
    """``--model-kwargs KEY=VALUE ...``: each value read as timm's ParseKwargs does (a Python literal, else a
    string; ``attnzoo.models.parse_kwarg_value``). A word without ``=`` is refused here, naming it: ``nargs='*'`` takes
    every word up to the next flag, so a positional argument given after it (``zoo predict MODEL --model-kwargs
    a=1 image.png``) lands here, and the error says to give ``--model-kwargs`` last."""

    def __call__(self, parser, namespace, values, option_string=None):
        from ..models import parse_kwarg_value

        kwargs = dict(getattr(namespace, self.dest, None) or {})
        for word in values:
            key, sep, text = word.partition("=")
            if sep and key.isidentifier():
                kwargs[key] = parse_kwarg_value(text)
                continue
            positionals = " ".join(a.metavar or a.dest.upper() for a in parser._actions
                                   if not a.option_strings and a.dest != "help")
            usage = f"{parser.prog} {positionals} [flags] {option_string} KEY=VALUE ..."
            if not sep and os.path.exists(word):
                raise argparse.ArgumentError(
                    self, f"'{word}' is a file, not KEY=VALUE: {option_string} takes every word after it up to the "
                          f"next flag, so give it after the files: {usage}")
            raise argparse.ArgumentError(
                self, f"expected KEY=VALUE words (KEY a Python name), got '{word}'; {option_string} takes every "
                      f"word after it up to the next flag, so give it last: {usage}")
        setattr(namespace, self.dest, kwargs)


def add_model_kwargs_argument(parser, help_text: str) -> None:
    parser.add_argument("--model-kwargs", nargs="*", default={}, action=ModelKwargs, metavar="KEY=VALUE",
                        help=help_text + "; checked against the model's constructor before it is built")


# ------------------------------------------------------------------------------------------------ shared flags


def add_model_source_args(parser: argparse.ArgumentParser) -> None:
    """The flags that say which weights a classification verb runs (shared by validate and predict)."""
    parser.add_argument("model", metavar="MODEL_OR_FOLDER",
                        help="a zoo/timm model name, or a folder written by zoo train / attnzoo.save_pretrained")
    parser.add_argument("--checkpoint", metavar="FILE_OR_CARD",
                        help="weights for a model name: a file, URL or card name (default: the card's checkpoint)")
    parser.add_argument("--random-init", action="store_true",
                        help="random weights instead of the card's checkpoint (for speed measurements only)")
    add_model_kwargs_argument(parser, "constructor arguments for a model name, e.g. depth='(1,1,1,1)' (give it "
                                      "after the positional arguments)")


def check_model_kwargs(args: argparse.Namespace) -> None:
    """--model-kwargs against the model, before anything is built or downloaded (one ``zoo: error:`` line)."""
    from ..models import check_model_kwargs as check

    check(args.model, args.model_kwargs, img_size=getattr(args, "img_size", None))


def check_device(device: str) -> None:
    import torch

    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N.") from None
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


def add_max_pixels_argument(parser: argparse.ArgumentParser) -> None:
    """``--max-pixels``: the pixel limit of the zoo's image reader (shared by the verbs that read images)."""
    parser.add_argument("--max-pixels", type=parse_pixel_limit, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help="skip images with more than N pixels, checked from the file's header before decoding "
                             "(default %(default)s, Pillow's own limit, about 9459x9459; 0: no limit)")


def run(args: argparse.Namespace) -> int:
    from ..tasks.classification import start_processes, stop_processes
    from ..tasks.classification.validation import validate

    check_device(args.device)
    if args.random_init and args.checkpoint:
        raise UserError("--random-init and --checkpoint contradict each other; pass one of them.")
    check_model_kwargs(args)
    processes = start_processes(args.device, args.workers)
    done = validate(args.model, args.data, processes, checkpoint=args.checkpoint, random_init=args.random_init,
                    model_kwargs=args.model_kwargs, data_overrides=data_config_overrides(args),
                    batch_size=args.batch_size, workers=processes.workers, amp=args.amp,
                    check_images=not args.no_image_check, max_pixels=args.max_pixels)
    stop_processes(processes)
    if not processes.is_primary:
        return 0
    result = done.result
    print(f"{printable(args.model)} on {display_path(done.folder)}: top-1 {result.top1:.3f}  "
          f"top-{result.top5_k} {result.top5:.3f}  loss {result.loss:.4f}  "
          f"({result.images} images, {result.images_per_s:.1f} images/s, {len(done.scan.skipped)} skipped)")
    print(json.dumps(done.record(model=args.model, checkpoint=args.checkpoint, batch_size=args.batch_size,
                                 amp=args.amp, device=str(processes.device), world_size=processes.world_size,
                                 top5_k=result.top5_k)))
    return 0


def register(commands) -> None:
    validate = commands.add_parser("validate", help="top-1 / top-5 of a classifier on an ImageFolder (e.g. ImageNet val)")
    add_model_source_args(validate)
    validate.add_argument("--data", required=True, metavar="DIR",
                          help="an ImageFolder (DIR/<class>/<image>), a folder with val/ in it, or ImageNet val "
                               "(DIR/n01440764/*.JPEG, ...)")
    validate.add_argument("--img-size", type=image_side, default=None,
                          help="input size (default: the model's); a model whose constructor takes img_size is built "
                               "at it, its weights resampled")
    validate.add_argument("--crop-pct", type=positive_float, default=None,
                          help="centre-crop fraction (default: the model's)")
    validate.add_argument("--crop-mode", default=None, choices=["center", "squash", "border"],
                          help="resize the short side then crop (center), or resize to a square first (squash, as the "
                               "official Agent-Attention eval); default: the model's")
    validate.add_argument("--batch-size", type=positive_int, default=64)
    validate.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    validate.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    validate.add_argument("--workers", type=non_negative_int, default=None, help=WORKERS_HELP)
    validate.add_argument("--no-image-check", action="store_true",
                          help="skip reading every image header first (unreadable images then stop the run)")
    add_max_pixels_argument(validate)
    validate.set_defaults(run=run)
