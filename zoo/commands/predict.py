"""``zoo predict MODEL_OR_FOLDER IMAGE...``: the top-k classes of each image with their probabilities.

Class names come from the model: a ``zoo train`` run's folder names, ImageNet-1k's descriptions (timm's ImageNetInfo)
for a 1000-class head, else output indices.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import UserError
from .validate import add_model_source_args, check_device, data_config_overrides


def run(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_model_data_config

    from ..classification import class_names, load_classifier

    check_device(args.device)
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        raise UserError(f"no such image file: {', '.join(missing)}; pass paths of image files.")
    model = load_classifier(args.model, args.checkpoint, random_init=args.random_init, **args.model_kwargs)
    model.to(args.device)
    data_config = resolve_model_data_config(model, args=data_config_overrides(args))
    transform = create_transform(**data_config, is_training=False)
    names = class_names(model)
    k = min(args.top_k, model.num_classes)
    for path in args.images:
        try:
            with Image.open(path) as image:
                tensor = transform(image.convert("RGB"))
        except OSError as err:
            raise UserError(f"{path}: not a readable image ({err}); pass an image file (.png, .jpg, ...).") from err
        with torch.no_grad():
            probs = model(tensor.unsqueeze(0).to(args.device)).float().softmax(-1)[0]
        top = torch.topk(probs, k)
        classes = [{"index": int(i), "label": names[i] if names else str(int(i)), "prob": round(float(p), 6)}
                   for p, i in zip(top.values, top.indices)]
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
