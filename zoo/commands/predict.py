"""``zoo predict MODEL_OR_FOLDER IMAGE...``: the top-k classes of each image with their probabilities.

Class names come from the model: a ``zoo train`` run's folder names, ImageNet-1k's descriptions (timm's ImageNetInfo)
for a 1000-class head, else output indices. Images are read by the zoo's one reader (``attnzoo.tasks.images``): an image
it does not read (not an image, truncated, corrupt, over ``--max-pixels``) is skipped with a warning naming it; a
folder gives its own image files (``attnzoo.tasks.images.collect_images``, as ``zoo xray detect``). ``--top-k``
defaults to 5, or to the model's class count when it has fewer; an explicit value above it is one error line. Image
and class names are printed through ``attnzoo.tasks.folders.printable`` (no control character reaches the terminal).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import UserError
from ..tasks.folders import printable
from ..tasks.images import collect_images, display_path
from .validate import (
    add_max_pixels_argument,
    add_model_source_args,
    check_device,
    check_model_kwargs,
    data_config_overrides,
    image_side,
    positive_int,
)


def default_top_k(num_classes: int | None) -> int:
    """``--top-k``'s default: 5, or every class of a model with fewer (a binary or 3-class fine-tune)."""
    return min(5, num_classes) if isinstance(num_classes, int) and num_classes > 0 else 5


def run(args: argparse.Namespace) -> int:
    from ..models.builder import img_size_kwargs
    from ..tasks.classification import load_classifier
    from ..tasks.classification.prediction import predict

    check_device(args.device)
    missing = [display_path(p) for p in args.images if not (Path(p).is_file() or Path(p).is_dir())]
    if missing:  # before the model is built: a typo should not cost a download
        raise UserError(f"no such image file: {', '.join(missing)}; pass paths of image files (or folders of them).")
    warn = lambda message: print(f"zoo: {message}", file=sys.stderr, flush=True)  # noqa: E731
    images = []  # a folder gives its own image files, as for zoo xray detect (attnzoo.tasks.images.collect_images)
    for item in args.images:
        images += map(str, collect_images([item], warn, args.max_pixels)) if Path(item).is_dir() else [item]
    if not images:
        raise UserError(f"no image in {', '.join(map(display_path, args.images))}; pass image files or folders of "
                        "them.")
    check_model_kwargs(args)
    kwargs = dict(args.model_kwargs)
    # --img-size builds the model at that size where its constructor takes img_size (as zoo validate; the weights
    # are resampled on load); the user's own img_size in --model-kwargs wins. Other models only get the data override.
    if "img_size" not in kwargs:
        kwargs.update(img_size_kwargs(args.model, args.img_size, **kwargs))
    model = load_classifier(args.model, args.checkpoint, random_init=args.random_init, **kwargs)
    outputs = getattr(model, "num_classes", None)
    top_k = args.top_k if args.top_k is not None else default_top_k(outputs)
    if isinstance(outputs, int) and outputs > 0 and top_k > outputs:
        raise UserError(f"--top-k {top_k}: the model has {outputs} classes; pass --top-k {outputs} or less.")
    for path, classes in predict(model, images, top_k, data_config_overrides(args), args.device,
                                 max_pixels=args.max_pixels, warn=warn):
        if args.json:
            print(json.dumps({"image": path, "top": classes}))
        else:
            print(f"{display_path(path)}: " + ", ".join(f"{printable(c['label'])} {c['prob']:.3f}" for c in classes))
    return 0


def register(commands) -> None:
    p = commands.add_parser("predict", help="top-k classes of images with their probabilities")
    add_model_source_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders (their own image files)")
    p.add_argument("--top-k", type=positive_int, default=None,
                   help="classes per image (default: 5, or the model's class count when it has fewer)")
    p.add_argument("--img-size", type=image_side, default=None,
                   help="input size (default: the model's); the model is built at it where it takes img_size")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    add_max_pixels_argument(p)
    p.set_defaults(run=run)
