#!/usr/bin/env python
"""Train a forgery head: the UnivFD / NPR detectors or FakeReasoning, on annotations in attnzoo.heads.forgery.data's format.

    # the synthetic set (tools/make_forgery_set.py, 32 px), CPU; UnivFD on a tiny random frozen CLIP
    python tools/forgery_train.py --head npr --train data/forgery_synth/train.jsonl --out runs/npr --epochs 1 --batch-size 32
    python tools/forgery_train.py --head univfd --tiny --train data/forgery_synth/train.jsonl --out runs/univfd \
        --epochs 30 --lr 1e-2
    python tools/forgery_train.py --head fakereasoning --tiny --image-size 56 --train data/forgery_synth/train.jsonl \
        --out runs/fr --epochs 1 --batch-size 4 --lr 1e-3

Without ``--tiny`` UnivFD uses CLIP ViT-L/14 (openai weights) with a new linear layer, and
FakeReasoning the paper's branches and released weights (downloads; ``attnzoo.heads.forgery.mllm.build_official_fakereasoning``,
its projectors and fusion read by ``attnzoo.tasks.forgery.official.read_official_fakereasoning_state``).
UnivFD without ``--augment`` trains its linear layer on features computed once (the backbone is frozen). After
training, NPR's BatchNorm running statistics are recomputed in one pass over the training images with the final
weights (``attnzoo.heads.forgery.baselines.recalibrate_batchnorm``; ``--no-bn-recalibration`` skips it): a short run leaves
them near their initial values, which puts every image on one side of the 0.5 threshold. The run
folder gets the weights (``model.safetensors`` for the detectors, the trainable part ``trainable.safetensors`` for
FakeReasoning), written by ``attnzoo.weights.save_safetensors``, and ``run.json`` (the arguments, so
``tools/forgery_eval.py`` and ``zoo forgery check`` rebuild the same head: ``attnzoo.tasks.forgery.runs.load_run``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tools") not in sys.path:
    sys.path.insert(0, str(REPO / "tools"))
from _clone_import import make_attnzoo_importable  # noqa: E402

make_attnzoo_importable()  # a clone that is not installed

from attnzoo.errors import EXIT_USER_ERROR, ZooError  # noqa: E402
from attnzoo.heads.forgery.baselines import (  # noqa: E402
    UnivFD,
    evaluation_transform,
    recalibrate_batchnorm,
    training_augmentation,
)
from attnzoo.heads.forgery.builders import HEADS, build_detector, build_fakereasoning  # noqa: E402
from attnzoo.heads.forgery.data import ForgeryImageDataset, read_annotations  # noqa: E402
from attnzoo.outputs import output_file, output_folder, writing  # noqa: E402
from attnzoo.tasks.forgery.runs import DETECTOR_WEIGHTS, FAKEREASONING_WEIGHTS, RUN_FILE, TINY_RESPONSES  # noqa: E402
from attnzoo.weights import atomic_write, save_safetensors  # noqa: E402

RUN_FILES = (RUN_FILE, DETECTOR_WEIGHTS, FAKEREASONING_WEIGHTS, TINY_RESPONSES)


def detector_loaders(model, train_file, crop: int, batch_size: int, augment: bool, test_file=None):
    train_records = read_annotations(train_file)
    if augment:
        transform = training_augmentation(crop, model.mean, model.std)
    else:
        transform = evaluation_transform(crop, model.mean, model.std)
    generator = torch.Generator().manual_seed(0)
    train = torch.utils.data.DataLoader(ForgeryImageDataset(train_records, transform), batch_size=batch_size,
                                        shuffle=True, generator=generator)
    if test_file is None:
        return train, None
    test_records = read_annotations(test_file)
    test = torch.utils.data.DataLoader(ForgeryImageDataset(test_records, evaluation_transform(crop, model.mean,
                                                                                              model.std)),
                                       batch_size=batch_size)
    return train, test


def train_detector(model, loader, epochs: int, lr: float, time_budget_s: float | None = None, log=print) -> dict:
    """BCE-with-logits on the trainable parameters (official UnivFD/NPR trainers: AdamW / Adam, BCEWithLogits)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    start, steps, last = time.time(), 0, float("nan")
    for epoch in range(epochs):
        model.train()
        for images, labels in loader:
            loss = loss_fn(model(images), labels.float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps, last = steps + 1, float(loss.detach())
            if time_budget_s is not None and time.time() - start > time_budget_s:
                log(f"time budget reached at epoch {epoch} step {steps}")
                return {"steps": steps, "loss": last, "seconds": time.time() - start}
        log(f"epoch {epoch}: loss {last:.4f} ({time.time() - start:.1f} s)")
    return {"steps": steps, "loss": last, "seconds": time.time() - start}


def train_linear_probe(model: UnivFD, loader, epochs: int, lr: float, batch_size: int = 32, log=print) -> dict:
    """UnivFD without augmentation: the frozen CLIP features are computed once, then only ``fc`` trains on them
    (the same optimisation as recomputing them every step, which the official trainer does)."""
    start = time.time()
    model.eval()
    features, labels = [], []
    with torch.no_grad():
        for images, batch_labels in loader:
            features.append(model.clip.encode_image(images))
            labels.append(batch_labels)
    features, labels = torch.cat(features), torch.cat(labels).float()
    optimizer = torch.optim.AdamW(model.fc.parameters(), lr=lr, weight_decay=0.0)
    order = torch.Generator().manual_seed(0)
    steps, last = 0, float("nan")
    for epoch in range(epochs):
        for batch in torch.randperm(len(labels), generator=order).split(batch_size):
            logits = model.fc(features[batch]).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps, last = steps + 1, float(loss.detach())
        if epoch % 10 == 9 or epoch == epochs - 1:
            log(f"epoch {epoch}: loss {last:.4f} ({time.time() - start:.1f} s)")
    return {"steps": steps, "loss": last, "seconds": time.time() - start}


@torch.no_grad()
def predict_detector(model, loader) -> tuple[list[int], list[float]]:
    model.eval()
    labels, scores = [], []
    for images, batch_labels in loader:
        scores += torch.sigmoid(model(images)).tolist()
        labels += batch_labels.tolist()
    return labels, scores


def train_fakereasoning(args, log=print) -> dict:
    """Projectors + fusion + the LM (LoRA, or every weight with ``--lm-training full``) on the staged answers;
    loss = LM + mapper CE (weights 1 and 1, temperature 10, as the official trainer). ``args.steps`` (when set) fixes
    the number of steps, cycling through the shuffled set; otherwise ``args.epochs`` passes."""
    from attnzoo.heads.forgery.data import load_rgb

    records = read_annotations(args.train)
    responses = [r.target_response() for r in records]
    projector_state = None
    if not args.tiny:  # the paper's recipe starts from the released projectors and fusion
        from attnzoo.tasks.forgery.official import read_official_fakereasoning_state

        projector_state = read_official_fakereasoning_state()
    model = build_fakereasoning(args.tiny, args.image_size, responses, args.lm_training, projector_state)
    processor = model.processor
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    total = args.steps or args.epochs * -(-len(records) // args.batch_size)
    start, steps, last = time.time(), 0, float("nan")
    order = torch.Generator().manual_seed(0)
    model.train()
    while steps < total:
        for batch in torch.randperm(len(records), generator=order).split(args.batch_size):
            chosen = [records[int(i)] for i in batch]
            images = torch.stack([processor.image_processor(load_rgb(r.image_path)) for r in chosen])
            samples = [processor.encode_training(r.target_response()) for r in chosen]
            out = model(images, samples)
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            steps, last = steps + 1, float(out.loss.detach())
            if steps % args.log_every == 0 or steps == total:
                log(f"step {steps}/{total}: loss {last:.4f} (lm {out.lm_loss.item():.4f}, cls {out.cls_loss.item():.4f})"
                    f" {time.time() - start:.0f} s")
            if steps == total or (args.time_budget and time.time() - start > args.time_budget):
                break
        if args.time_budget and time.time() - start > args.time_budget:
            log(f"time budget reached at step {steps} of {total}")
            break
    out_dir = Path(args.out)  # checked and made by main before training
    trainable = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    with writing(out_dir, "--out"):
        save_safetensors(trainable, out_dir / FAKEREASONING_WEIGHTS)
        # the tiny tokenizer is built from these
        atomic_write(out_dir / TINY_RESPONSES, lambda tmp: Path(tmp).write_text(json.dumps(responses)))
    return {"steps": steps, "loss": last, "seconds": time.time() - start}


def output_run_folder(out: str, train_file: str) -> Path:
    """``--out`` checked by the zoo's output-path rule (``attnzoo.outputs``) before any work, then made: a folder, no
    name too long, writable, and none of the files a run writes is the ``--train`` file."""
    out_dir = output_folder(out, "--out", create=False)
    for name in RUN_FILES:
        output_file(out_dir / name, "--out", inputs=[train_file])
    return output_folder(out_dir, "--out")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="forgery_train.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--head", choices=HEADS, required=True)
    parser.add_argument("--train", required=True, help="annotations (.jsonl) to train on")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--tiny", action="store_true", help="random-weight tiny backbones (no downloads)")
    parser.add_argument("--image-size", type=int, default=32, help="crop (detectors) / input size (tiny MLLM)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="FakeReasoning: train exactly this many steps")
    parser.add_argument("--lm-training", choices=("lora", "full"), default=None,
                        help="FakeReasoning's LM: LoRA (default; the paper) or every weight (default with --tiny: "
                             "its LM is random, see README)")
    parser.add_argument("--log-every", type=int, default=25, help="FakeReasoning: steps between loss lines")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=None, help="default: NPR 2e-4, UnivFD 1e-3 (linear probe), MLLM 2e-4")
    parser.add_argument("--augment", action="store_true", help="blur + JPEG augmentation (CNNDetection/UnivFD)")
    parser.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--no-bn-recalibration", action="store_true",
                        help="keep BatchNorm's running statistics as training left them (NPR; see README)")
    args = parser.parse_args(argv)
    try:
        return run_training(args)
    except ZooError as err:  # an output path the rule refuses, a write the file system refuses: one line
        parser.exit(EXIT_USER_ERROR, f"{parser.prog}: error: {err}\n")


def run_training(args: argparse.Namespace) -> int:
    torch.manual_seed(0)
    if args.head == "fakereasoning" and args.lm_training is None:
        args.lm_training = "full" if args.tiny else "lora"
    if args.lr is None:
        args.lr = {"npr": 2e-4, "univfd": 1e-3, "fakereasoning": 2e-4}[args.head]
    out_dir = output_run_folder(args.out, args.train)
    if args.head == "fakereasoning":
        summary = train_fakereasoning(args)
    else:
        model = build_detector(args.head, args.tiny, args.image_size)
        loader, _ = detector_loaders(model, args.train, args.image_size, args.batch_size, args.augment)
        if args.head == "univfd" and not args.augment:
            summary = train_linear_probe(model, loader, args.epochs, args.lr, args.batch_size)
        else:
            summary = train_detector(model, loader, args.epochs, args.lr, args.time_budget)
        if not args.no_bn_recalibration:
            # the training images as evaluation sees them (no augmentation), with the final weights
            plain, _ = detector_loaders(model, args.train, args.image_size, args.batch_size, False)
            summary["bn_recalibration_images"] = recalibrate_batchnorm(model, plain)
        with writing(out_dir, "--out"):
            save_safetensors(model.state_dict(), out_dir / DETECTOR_WEIGHTS)
    run_text = json.dumps({"args": vars(args), "summary": summary}, indent=2)
    with writing(out_dir, "--out"):  # run.json last and whole: a folder with one is a finished run
        atomic_write(out_dir / RUN_FILE, lambda tmp: Path(tmp).write_text(run_text))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
