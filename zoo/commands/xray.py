"""``zoo xray detect CONFIG CHECKPOINT IMAGE_OR_DIR... --out DIR``: what is in these bags?

Runs a trained detector through mmdet's own ``DetInferencer`` (config -> model, checkpoint loading, test pipeline,
batching) and writes, for every image, ``<stem>.json`` (one record per instance at or above ``--score-thr``: class,
score, box ``[x1, y1, x2, y2]`` in image pixels, mask as compressed COCO RLE when the model predicts masks) and
``<stem>.png`` (boxes, tinted masks, and "class score" labels placed so that no two overlap). One summary line per
image goes to stdout (``bag_0012.png: Gun 0.91, Knife 0.44``), and the last line is one JSON object for the run.
No output overwrites an input: when two inputs share a stem (``bag.png``, ``bag.jpg``) or ``--out`` is an input
folder, the outputs are named by stem and suffix (``bag_png.json``, ``bag_jpg.png``; ``attnzoo.outputs``' rule).

CONFIG is a config file, a shipped config's path below the configs folder (``xray/<file>.py``; ``zoo configs``
lists them), or a model card's name (``sdanet_r101_pidray``). A directory input contributes its image files (not its
subdirectories); other files in it, and images that do not decode (truncated, corrupt) or have more than
``--max-pixels`` pixels (checked before decoding), are skipped with a warning naming them. A checkpoint whose weights
do not fit the config's model (missing, unexpected or misshapen keys) is an error naming both files, never a silently
half-loaded detector. OpenMMLab is imported only when the command runs.

The work is done by ``attnzoo.tasks.xray``; this module only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import json

from ..tasks.xray.detect import DEFAULT_SCORE_THR
from .predict import add_max_pixels_argument
from .validate import positive_int


def run(args: argparse.Namespace) -> int:
    from ..tasks.xray.detect import detect

    summary = detect(args.config, args.checkpoint, args.inputs, args.out, score_thr=args.score_thr,
                     device=args.device, batch_size=args.batch_size, max_pixels=args.max_pixels)
    print(json.dumps(summary))
    return 0


def register(commands) -> None:
    xray = commands.add_parser("xray", help="X-ray prohibited-item detection on your own images")
    verbs = xray.add_subparsers(dest="xray_command", required=True, metavar="COMMAND")
    detect_parser = verbs.add_parser(
        "detect", help="run a trained detector on images or folders: one JSON + one picture per image",
        description=__doc__.split("\n\n")[1])
    detect_parser.add_argument("config", help="config file, shipped config (xray/<file>.py) or detector card name")
    detect_parser.add_argument("checkpoint", help="trained checkpoint (.pth) for that config")
    detect_parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    detect_parser.add_argument("--out", required=True, help="folder for <image>.json and <image>.png")
    detect_parser.add_argument("--score-thr", type=float, default=DEFAULT_SCORE_THR,
                               help="keep instances scoring at least this (default %(default)s)")
    detect_parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    detect_parser.add_argument("--batch-size", type=positive_int, default=1, help="images per forward pass (default 1)")
    add_max_pixels_argument(detect_parser)
    detect_parser.set_defaults(run=run)
