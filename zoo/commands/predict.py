"""``zoo predict MODEL_OR_FOLDER IMAGE...``: the top-k classes of each image with their probabilities.

Class names come from the model: a ``zoo train`` run's folder names, ImageNet-1k's descriptions (timm's ImageNetInfo)
for a 1000-class head, else output indices. Images are read by the zoo's one reader (``attnzoo.tasks.images``): an image
it does not read (not an image, truncated, corrupt, over ``--max-pixels``) is skipped with a warning naming it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import UserError
from ..tasks.images import display_path
from .validate import (
    add_max_pixels_argument,
    add_model_source_args,
    check_device,
    check_model_kwargs,
    data_config_overrides,
    positive_int,
)


def run(args: argparse.Namespace) -> int:
    from ..models.builder import img_size_kwargs
    from ..tasks.classification import load_classifier
    from ..tasks.classification.prediction import predict

    check_device(args.device)
    missing = [display_path(p) for p in args.images if not Path(p).is_file()]
    if missing:  # before the model is built: a typo should not cost a download
        raise UserError(f"no such image file: {', '.join(missing)}; pass paths of image files.")
    check_model_kwargs(args)
    kwargs = dict(args.model_kwargs)
    # --img-size builds the model at that size where its constructor takes img_size (as zoo validate; the weights
    # are resampled on load); the user's own img_size in --model-kwargs wins. Other models only get the data override.
    if "img_size" not in kwargs:
        kwargs.update(img_size_kwargs(args.model, args.img_size, **kwargs))
    model = load_classifier(args.model, args.checkpoint, random_init=args.random_init, **kwargs)
    outputs = getattr(model, "num_classes", None)
    if isinstance(outputs, int) and outputs > 0 and args.top_k > outputs:
        raise UserError(f"--top-k {args.top_k}: the model has {outputs} classes; pass --top-k {outputs} or less.")
    for path, classes in predict(model, args.images, args.top_k, data_config_overrides(args), args.device,
                                 max_pixels=args.max_pixels,
                                 warn=lambda message: print(f"zoo: {message}", file=sys.stderr, flush=True)):
        if args.json:
            print(json.dumps({"image": path, "top": classes}))
        else:
            print(f"{display_path(path)}: " + ", ".join(f"{c['label']} {c['prob']:.3f}" for c in classes))
    return 0


def register(commands) -> None:
    p = commands.add_parser("predict", help="top-k classes of images with their probabilities")
    add_model_source_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--top-k", type=positive_int, default=5, help="classes per image (default %(default)s)")
    p.add_argument("--img-size", type=positive_int, default=None,
                   help="input size (default: the model's); the model is built at it where it takes img_size")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    add_max_pixels_argument(p)
    p.set_defaults(run=run)
