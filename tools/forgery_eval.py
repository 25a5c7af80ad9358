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
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from heads.forgery.data import read_annotations  # noqa: E402
from heads.forgery.metrics import ForgeryRecord, forgery_metrics_table, format_table  # noqa: E402


def _load_train_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("forgery_train", Path(__file__).with_name("forgery_train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def css_model(kind: str):
    from heads.forgery.metrics import CLIPTextSimilarity

    if kind == "none":
        return None
    if kind == "openai":
        return CLIPTextSimilarity.from_pretrained()
    import open_clip

    from heads.forgery.tiny import tiny_open_clip_config

    torch.manual_seed(0)
    return CLIPTextSimilarity(open_clip.CLIP(**tiny_open_clip_config()), open_clip.get_tokenizer("ViT-L-14-336"))


def evaluate_detector(run: Path, test_file: str, train_args: dict) -> list[ForgeryRecord]:
    from safetensors.torch import load_file

    train = _load_train_module()
    model = train.build_detector(train_args["head"], train_args["tiny"], train_args["image_size"])
    model.load_state_dict(load_file(str(run / "model.safetensors")), strict=True)
    _, loader = train.detector_loaders(model, test_file, train_args["image_size"], 64, False, test_file)
    labels, scores = train.predict_detector(model, loader)
    records = read_annotations(test_file)
    return [ForgeryRecord(r.generator, label, score) for r, label, score in zip(records, labels, scores, strict=True)]


def evaluate_fakereasoning(run: Path, test_file: str, train_args: dict, max_new_tokens: int) -> list[ForgeryRecord]:
    from safetensors.torch import load_file

    from heads.forgery.data import load_rgb
    from heads.forgery.prompt import parse_reasoning
    from heads.forgery.tiny import tiny_fakereasoning

    if not train_args["tiny"]:
        from heads.forgery.mllm import build_official_fakereasoning

        model = build_official_fakereasoning().float()
        model.enable_lora()
    else:
        responses = json.loads((run / "responses.json").read_text())
        model = tiny_fakereasoning(responses, image_size=train_args["image_size"])
        model.enable_lora(r=8, alpha=16, dropout=0.0)
    missing, unexpected = model.load_state_dict(load_file(str(run / "trainable.safetensors")), strict=False)
    if unexpected:
        raise RuntimeError(f"weights that this model does not have: {unexpected[:5]}")
    model.eval()
    records = []
    for annotation in read_annotations(test_file):
        image = model.processor.image_processor(load_rgb(annotation.image_path))[None]
        verdict = model.generate(image, max_new_tokens=max_new_tokens)[0]
        records.append(ForgeryRecord(annotation.generator, annotation.label, verdict.probability_fake,
                                     parse_reasoning(verdict.text), annotation.reasoning_text or None))
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="folder written by tools/forgery_train.py")
    parser.add_argument("--test", required=True, help="annotations (.jsonl) to evaluate on")
    parser.add_argument("--css", choices=("none", "tiny", "openai"), default="none")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args(argv)
    run = Path(args.run)
    train_args = json.loads((run / "run.json").read_text())["args"]
    if train_args["head"] == "fakereasoning":
        records = evaluate_fakereasoning(run, args.test, train_args, args.max_new_tokens)
    else:
        records = evaluate_detector(run, args.test, train_args)
    table = forgery_metrics_table(records, css_model(args.css), args.threshold)
    (run / "metrics.json").write_text(json.dumps(table, indent=2))
    print(format_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
