"""``zoo export NAME``: export a model to ONNX and check it against eager in onnxruntime (zoo.tasks.export)."""

from __future__ import annotations

import argparse

from .validate import positive_int


def run(args: argparse.Namespace) -> int:
    from ..models import require_model
    from ..tasks.export import export_model

    size = tuple(args.input_size) if args.input_size else None
    result = export_model(require_model(args.name), args.output, checkpoint=args.checkpoint, input_size=size,
                          opset=args.opset, exporter=args.exporter)
    diff = "not checked (onnxruntime missing)" if result.max_abs_diff is None else f"{result.max_abs_diff:.3g}"
    print(f"{result.path}  exporter={result.exporter}  max |onnxruntime - eager| = {diff}")
    return 0


def register(commands) -> None:
    export = commands.add_parser("export", help="export a model to ONNX and check it against eager in onnxruntime")
    export.add_argument("name", help="model name, e.g. biformer_tiny")
    export.add_argument("--format", default="onnx", choices=["onnx"], help="export format (default %(default)s)")
    export.add_argument("--output", "-o", help="file to write (default NAME.onnx)")
    export.add_argument("--checkpoint", help="weights to load first (path or card name, through zoo.load_checkpoint)")
    export.add_argument("--input-size", type=positive_int, nargs=3, metavar=("C", "H", "W"), help="default: the model's")
    export.add_argument("--opset", type=positive_int, default=18)
    export.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "torchscript"])
    export.set_defaults(run=run)
