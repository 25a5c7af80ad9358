#!/usr/bin/env python
"""Evaluate a run of tools/forgery_train.py: accuracy (real / fake / all), AP and, for FakeReasoning, BLEU-1, ROUGE-L
and CSS, per generator and overall, in one Markdown table (also written to ``<run>/metrics.json``).

    python tools/forgery_eval.py --run runs/npr --test data/forgery_synth/test.jsonl
    python tools/forgery_eval.py --run runs/fr --test data/forgery_synth/test.jsonl --css none --max-new-tokens 64

``--css openai`` computes CSS with CLIP ViT-L/14-336 (downloads, as the paper); ``--css tiny`` with a random tiny CLIP
(a smoke test of the code path only: its numbers mean nothing); ``--css none`` leaves the column empty.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tools") not in sys.path:
    sys.path.insert(0, str(REPO / "tools"))
from _clone_import import make_attnzoo_importable  # noqa: E402

make_attnzoo_importable()

from attnzoo.errors import EXIT_USER_ERROR, ZooError  # noqa: E402
from attnzoo.heads.forgery.data import read_annotations  # noqa: E402
from attnzoo.heads.forgery.metrics import ForgeryRecord, forgery_metrics_table, format_table  # noqa: E402
from attnzoo.outputs import output_file, writing  # noqa: E402
from attnzoo.tasks.forgery.runs import ForgeryRun, load_run  # noqa: E402
from attnzoo.weights import atomic_write  # noqa: E402


def css_model(kind: str):
    from attnzoo.heads.forgery.metrics import CLIPTextSimilarity

    if kind == "none":
        return None
    if kind == "openai":
        return CLIPTextSimilarity.from_pretrained()
    import open_clip

    from attnzoo.heads.forgery.tiny import tiny_open_clip_config

    torch.manual_seed(0)
    return CLIPTextSimilarity(open_clip.CLIP(**tiny_open_clip_config()), open_clip.get_tokenizer("ViT-L-14-336"))


def evaluate_detector(run: ForgeryRun, test_file: str, batch_size: int = 64) -> list[ForgeryRecord]:
    from attnzoo.heads.forgery.data import ForgeryImageDataset

    annotations = read_annotations(test_file)
    dataset = ForgeryImageDataset(annotations, run.preprocess)
    scores = []
    with torch.no_grad():
        for images, _ in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
            scores += torch.sigmoid(run.model(images)).tolist()
    return [ForgeryRecord(a.generator, a.label, score) for a, score in zip(annotations, scores, strict=True)]


def evaluate_fakereasoning(run: ForgeryRun, test_file: str, max_new_tokens: int,
                           batch_size: int = 16) -> list[ForgeryRecord]:
    from attnzoo.heads.forgery.data import load_rgb

    annotations = read_annotations(test_file)
    records = []
    for start in range(0, len(annotations), batch_size):
        batch = annotations[start:start + batch_size]
        verdicts = run.check([load_rgb(a.image_path) for a in batch], max_new_tokens=max_new_tokens)
        records += [ForgeryRecord(a.generator, a.label, v.p_fake, v.reasoning, a.reasoning_text or None)
                    for a, v in zip(batch, verdicts, strict=True)]
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="forgery_eval.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="folder written by tools/forgery_train.py")
    parser.add_argument("--test", required=True, help="annotations (.jsonl) to evaluate on")
    parser.add_argument("--css", choices=("none", "tiny", "openai"), default="none")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args(argv)
    try:
        return evaluate(args)
    except ZooError as err:  # a run folder that is not one, a metrics file the rule refuses, a refused write
        parser.exit(EXIT_USER_ERROR, f"{parser.prog}: error: {err}\n")


def evaluate(args: argparse.Namespace) -> int:
    run = load_run(args.run)
    # the zoo's output-path rule (attnzoo.outputs), before the evaluation: the file can be written, and is not --test
    metrics_file = output_file(run.folder / "metrics.json", "--run", inputs=[args.test])
    if run.head == "fakereasoning":
        records = evaluate_fakereasoning(run, args.test, args.max_new_tokens)
    else:
        records = evaluate_detector(run, args.test)
    table = forgery_metrics_table(records, css_model(args.css), args.threshold)
    text = json.dumps(table, indent=2)
    with writing(metrics_file, "--run"):
        atomic_write(metrics_file, lambda tmp: Path(tmp).write_text(text))
    print(format_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
