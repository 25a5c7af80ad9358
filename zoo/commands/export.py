"""``zoo export NAME``: export a model to ONNX and check it against eager in onnxruntime (attnzoo.tasks.export)."""

from __future__ import annotations

import argparse

from .validate import add_model_kwargs_argument, image_side, positive_int


def run(args: argparse.Namespace) -> int:
    from ..models import check_model_kwargs, require_model
    from ..tasks.export import export_model

    size = tuple(args.input_size) if args.input_size else (3, args.img_size, args.img_size) if args.img_size else None
    name = require_model(args.name)
    check_model_kwargs(name, args.model_kwargs, img_size=size[1] if size and size[1] == size[2] else None)
    result = export_model(name, args.output, checkpoint=args.checkpoint, input_size=size, opset=args.opset,
                          exporter=args.exporter, model_kwargs=args.model_kwargs)
    diff = "not checked (onnxruntime missing)" if result.max_abs_diff is None else f"{result.max_abs_diff:.3g}"
    print(f"{result.path}  exporter={result.exporter}  max |onnxruntime - eager| = {diff}")
    return 0


def register(commands) -> None:
    export = commands.add_parser("export", help="export a model to ONNX and check it against eager in onnxruntime")
    export.add_argument("name", help="model name, e.g. biformer_tiny")
    export.add_argument("--format", default="onnx", choices=["onnx"], help="export format (default %(default)s)")
    export.add_argument("--output", "-o", help="file to write (default NAME.onnx)")
    export.add_argument("--checkpoint", help="weights to load first (path or card name, through attnzoo.load_checkpoint)")
    sizes = export.add_mutually_exclusive_group()
    sizes.add_argument("--input-size", type=image_side, nargs=3, metavar=("C", "H", "W"),
                       help="the traced input (default: the model's); the model is built at H x W where it takes img_size")
    sizes.add_argument("--img-size", type=image_side, help="square input size: --input-size 3 N N")
    export.add_argument("--opset", type=positive_int, default=18)
    export.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "torchscript"])
    add_model_kwargs_argument(export, "constructor arguments, e.g. depth='(1,1,1,1)'")
    export.set_defaults(run=run)
