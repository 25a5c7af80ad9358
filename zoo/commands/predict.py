"""``zoo predict MODEL_OR_FOLDER IMAGE...``: the top-k classes of each image with their probabilities.

Class names come from the model: a ``zoo train`` run's folder names, ImageNet-1k's descriptions (timm's ImageNetInfo)
for a 1000-class head, else output indices.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UserError
from .validate import add_model_source_args, check_device, data_config_overrides


def run(args: argparse.Namespace) -> int:
    from ..tasks.classification import load_classifier
    from ..tasks.classification.prediction import predict

    check_device(args.device)
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:  # before the model is built: a typo should not cost a download
        raise UserError(f"no such image file: {', '.join(missing)}; pass paths of image files.")
    model = load_classifier(args.model, args.checkpoint, random_init=args.random_init, **args.model_kwargs)
    for path, classes in predict(model, args.images, args.top_k, data_config_overrides(args), args.device):
        if args.json:
            print(json.dumps({"image": path, "top": classes}))
        else:
            print(f"{path}: " + ", ".join(f"{c['label']} {c['prob']:.3f}" for c in classes))
    return 0


def register(commands) -> None:
    p = commands.add_parser("predict", help="top-k classes of images with their probabilities")
    add_model_source_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the model's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.set_defaults(run=run)
