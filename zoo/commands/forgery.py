"""``zoo forgery check FORGERY_RUN IMAGE_OR_DIR... [--json]``: is this image generated? P(fake) per image from a
trained run.

FORGERY_RUN is the ``--out`` folder of ``tools/forgery_train.py`` (UnivFD, NPR or FakeReasoning: run.json + weights;
``attnzoo.tasks.forgery.runs`` loads it; not the classification verbs' RUN folder). The work is done by
``attnzoo.tasks.forgery.check``; this module parses the arguments and prints. Each image is read as the run's evaluation
reads it (the detectors: centre crop at the training size; FakeReasoning: pad to square and resize), and gets P(fake) =
sigmoid(logit) for the detectors, or for FakeReasoning the generated reasoning text and P(fake) from the
classification probability mapper (the LM's 'real' / 'fake' logits after "This image is", over the temperature).

Output: one line per image, ``path: fake 0.97`` (FakeReasoning adds its reasoning on the next line), then a count;
with ``--json`` one JSON object per image and nothing else on stdout::

    {"image": "photos/cat.png", "p_fake": 0.9731, "verdict": "fake", "head": "npr"}
    {"image": "photos/dog.png", "p_fake": 0.12, "verdict": "real", "head": "fakereasoning",
     "reasoning": "...", "text": "<REASONING>...</REASONING> <CONCLUSION>This image is real.</CONCLUSION>",
     "conclusion_in_text": true}

``verdict`` is ``fake`` when ``p_fake > --threshold`` (0.5, as the evaluation). Inputs follow ``zoo xray detect``'s rule
(``attnzoo.tasks.images``): a folder contributes its image files, not its subfolders; a file that is not an image, does
not decode (truncated, corrupt) or has more than ``--max-pixels`` pixels (checked before decoding) is skipped with a
warning naming it. A folder that is not a run, or whose weights are damaged or do not fit, ends with one
error line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import UserError
from ..tasks.images import display_path
from .predict import add_max_pixels_argument
from .validate import positive_int


def run_check(args: argparse.Namespace) -> int:
    import torch

    from ..tasks.forgery.check import check_images
    from ..tasks.forgery.runs import load_run

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold is a probability in [0, 1], got {args.threshold}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is visible (use --device cpu)")
    run = load_run(args.run_folder, device=args.device)
    counts = {"fake": 0, "real": 0}
    for checked in check_images(run, args.images, threshold=args.threshold, batch_size=args.batch_size,
                                max_new_tokens=args.max_new_tokens, max_pixels=args.max_pixels,
                                warn=lambda message: print(f"zoo: {message}", file=sys.stderr, flush=True)):
        counts[checked.label] += 1
        if args.json:
            print(json.dumps(checked.row()), flush=True)
        else:
            print(f"{display_path(checked.path)}: {checked.label} {checked.p_fake:.4f}", flush=True)
            if run.head == "fakereasoning":
                print(f"    {checked.verdict.reasoning or checked.verdict.text or '(no text)'}", flush=True)
    if not args.json:
        print(f"{sum(counts.values())} image(s): {counts['fake']} fake, {counts['real']} real "
              f"(P(fake) > {args.threshold:g}; {run.head} run {run.folder})")
    return 0


def register(commands) -> None:
    forgery = commands.add_parser("forgery", help="forgery detection with a trained UnivFD / NPR / FakeReasoning run")
    jobs = forgery.add_subparsers(dest="forgery_command", required=True, metavar="JOB")
    check = jobs.add_parser("check", help="P(fake) per image (and FakeReasoning's reasoning)",
                            description="P(fake) per image from a run of tools/forgery_train.py.")
    check.add_argument("run_folder", metavar="FORGERY_RUN",
                       help="forgery run folder written by tools/forgery_train.py (run.json + weights)")
    check.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR",
                       help="image files and folders (a folder's own image files, not its subfolders; other files "
                            "are skipped with a warning)")
    check.add_argument("--json", action="store_true", help="one JSON object per image on stdout, nothing else")
    check.add_argument("--threshold", type=float, default=0.5, help="verdict fake when P(fake) > this (%(default)s)")
    check.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    check.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (%(default)s)")
    check.add_argument("--max-new-tokens", type=positive_int, default=512,
                       help="FakeReasoning: longest reasoning text to generate (%(default)s tokens)")
    add_max_pixels_argument(check)
    check.set_defaults(run=run_check)
