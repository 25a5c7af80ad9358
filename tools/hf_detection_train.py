"""RT-DETR (Hugging Face transformers) on zoo backbones next to a ResNet-18 RT-DETR: trained the same way, COCO mAP.

Every detector here is transformers' ``RTDetrForObjectDetection`` built by :func:`attnzoo.integrations.transformers.
rt_detr_config` (the backbone's channels and strides filled in), trained by transformers' ``Trainer`` from scratch (no
weights are downloaded: the run needs no network), evaluated through ``RTDetrImageProcessor``'s
``post_process_object_detection`` and pycocotools' COCOeval on the val split of a COCO-format set:

    python tools/make_coco_det.py data/coco_synth --num-train 192 --num-val 48 --height 128 --width 128
    python tools/hf_detection_train.py data/coco_synth --backbones biformer_tiny resnet18   # README's numbers

The defaults are the README's run (the tiny detector, 480 steps of 4 images at 96x96, AdamW 5e-4); ``--size small``
and more steps make a longer one.

The test (tests/integrations/test_transformers.py) imports the pieces: :class:`CocoDetectionSet`, :func:`collate`,
:func:`detector`, :func:`train`, :func:`coco_map`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The detector's widths (RT-DETR's defaults are d_model 256, 6 decoder layers, 300 queries).
DETECTOR_SIZES = {
    "tiny": dict(d_model=32, encoder_hidden_dim=32, encoder_ffn_dim=64, decoder_ffn_dim=64, decoder_layers=1,
                 encoder_attention_heads=2, decoder_attention_heads=2, num_queries=30, num_denoising=20),
    "small": dict(d_model=128, encoder_hidden_dim=128, encoder_ffn_dim=512, decoder_ffn_dim=512, decoder_layers=3,
                  encoder_attention_heads=4, decoder_attention_heads=4, num_queries=100, num_denoising=50),
}


def read_coco(root: str | Path, split: str) -> dict:
    return json.loads((Path(root) / "annotations" / f"instances_{split}2017.json").read_text())


def used_categories(coco: dict) -> list[int]:
    """The category ids the set's annotations use, in order: label i of the detector is the i-th of them."""
    return sorted({a["category_id"] for a in coco["annotations"]})


class CocoDetectionSet(torch.utils.data.Dataset):
    """One split of a COCO-format folder (tools/make_coco_det.py), each image through the image processor:
    ``{"pixel_values": (3, H, W), "labels": {"class_labels", "boxes" (normalised cx, cy, w, h), ...}}``."""

    def __init__(self, root: str | Path, split: str, processor, categories: list[int] | None = None):
        from attnzoo.tasks.images import read_image

        self.root, self.split, self.processor, self.read = Path(root), split, processor, read_image
        self.coco = read_coco(root, split)
        self.categories = categories or used_categories(self.coco)
        self.label_of = {c: i for i, c in enumerate(self.categories)}
        self.images = self.coco["images"]
        self.by_image: dict[int, list[dict]] = {image["id"]: [] for image in self.images}
        for a in self.coco["annotations"]:
            self.by_image[a["image_id"]].append(dict(a, category_id=self.label_of[a["category_id"]]))

    def __len__(self) -> int:
        return len(self.images)

    def image(self, index: int):
        return self.read(self.root / f"{self.split}2017" / self.images[index]["file_name"])

    def __getitem__(self, index: int) -> dict:
        image_id = self.images[index]["id"]
        target = {"image_id": image_id, "annotations": self.by_image[image_id]}
        encoded = self.processor(images=self.image(index), annotations=target, return_tensors="pt")
        return {"pixel_values": encoded["pixel_values"][0], "labels": encoded["labels"][0]}


def collate(batch: list[dict]) -> dict:
    return {"pixel_values": torch.stack([item["pixel_values"] for item in batch]),
            "labels": [item["labels"] for item in batch]}


def processor_for(backbone: str, size: int):
    """RT-DETR's image processor at ``size`` x ``size``, normalising as the backbone was trained (zoo and timm
    models: their ImageNet mean and std)."""
    from transformers import RTDetrImageProcessor

    from attnzoo.integrations.transformers import image_processor_kwargs

    return RTDetrImageProcessor(size={"height": size, "width": size}, **image_processor_kwargs(backbone))


def detector(backbone: str, num_labels: int, size: str | dict = "tiny", model_kwargs: dict | None = None,
             seed: int = 0):
    """``RTDetrForObjectDetection`` on ``backbone`` (a zoo name, or a timm name such as resnet18), randomly
    initialised with ``seed``."""
    from transformers import RTDetrForObjectDetection

    from attnzoo.integrations.transformers import rt_detr_config

    widths = DETECTOR_SIZES[size] if isinstance(size, str) else size
    config = rt_detr_config(backbone, model_kwargs=model_kwargs, num_labels=num_labels, **widths)
    torch.manual_seed(seed)
    return RTDetrForObjectDetection(config)


class _LossLog:
    """The training loss of every step, as the Trainer logs it (``logging_steps=1``)."""

    def __init__(self):
        from transformers import TrainerCallback

        log = self.losses = []

        class Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    log.append(float(logs["loss"]))

        self.callback = Callback()


def train(model, train_set, out: str | Path, steps: int, batch_size: int = 4, learning_rate: float = 1e-3,
          seed: int = 0, warmup_steps: int = 0) -> list[float]:
    """Train ``model`` with transformers' ``Trainer`` for ``steps`` steps on the CPU; the loss of every step."""
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=learning_rate,
        weight_decay=1e-4, warmup_steps=warmup_steps, lr_scheduler_type="constant_with_warmup" if warmup_steps
        else "constant", logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=seed,
        data_seed=seed, remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True, max_grad_norm=0.1)
    log = _LossLog()
    Trainer(model=model, args=args, train_dataset=train_set, data_collator=collate, callbacks=[log.callback]).train()
    return log.losses


@torch.no_grad()
def predict(model, data: CocoDetectionSet, batch_size: int = 8) -> list[dict]:
    """COCO-format detections (image_id, category_id, bbox x, y, w, h in pixels, score) of ``model`` on ``data``,
    through the image processor's ``post_process_object_detection`` (every query kept: threshold 0)."""
    model.eval()
    detections = []
    for start in range(0, len(data), batch_size):
        indices = range(start, min(start + batch_size, len(data)))
        pixels = torch.stack([data[i]["pixel_values"] for i in indices])
        sizes = [(data.images[i]["height"], data.images[i]["width"]) for i in indices]
        outputs = model(pixel_values=pixels)
        results = data.processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=sizes)
        for i, result in zip(indices, results):
            for score, label, box in zip(result["scores"].tolist(), result["labels"].tolist(),
                                         result["boxes"].tolist()):
                x0, y0, x1, y1 = box
                detections.append(dict(image_id=data.images[i]["id"], category_id=data.categories[label],
                                       bbox=[x0, y0, x1 - x0, y1 - y0], score=score))
    return detections


def coco_map(data: CocoDetectionSet, detections: list[dict]) -> dict[str, float]:
    """pycocotools' COCOeval (bbox) of ``detections`` against ``data``'s annotations: AP (0.5:0.95), AP50, AP75."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not detections:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = data.coco
        truth.createIndex()
        found = truth.loadRes(detections)
        evaluation = COCOeval(truth, found, "bbox")
        evaluation.params.catIds = data.categories
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    ap, ap50, ap75 = (float(v) for v in evaluation.stats[:3])
    return {"AP": max(ap, 0.0), "AP50": max(ap50, 0.0), "AP75": max(ap75, 0.0)}


def parameters_m(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def run(data: str | Path, backbones: list[str], steps: int, img_size: int, size: str, batch_size: int,
        learning_rate: float, seed: int, out: str | Path) -> list[dict[str, Any]]:
    rows = []
    for name in backbones:
        processor = processor_for(name, img_size)
        train_set = CocoDetectionSet(data, "train", processor)
        val_set = CocoDetectionSet(data, "val", processor, train_set.categories)
        model = detector(name, len(train_set.categories), size, seed=seed)
        start = time.perf_counter()
        losses = train(model, train_set, Path(out) / name, steps, batch_size, learning_rate, seed,
                       warmup_steps=min(50, steps // 10))
        seconds = time.perf_counter() - start
        scores = coco_map(val_set, predict(model, val_set))
        k = max(1, min(20, len(losses) // 5))
        rows.append(dict(backbone=name, params_m=parameters_m(model),
                         backbone_params_m=parameters_m(model.model.backbone), steps=steps,
                         loss_first=float(np.mean(losses[:k])), loss_last=float(np.mean(losses[-k:])),
                         train_s=seconds, **scores))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| backbone | parameters (backbone) | loss, first -> last steps | AP | AP50 | AP75 | train time |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['params_m']:.2f} M ({r['backbone_params_m']:.2f} M) | "
                     f"{r['loss_first']:.2f} -> {r['loss_last']:.2f} | {r['AP']:.3f} | {r['AP50']:.3f} | "
                     f"{r['AP75']:.3f} | {r['train_s'] / 60:.1f} min |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="a COCO-format folder (tools/make_coco_det.py)")
    parser.add_argument("--backbones", nargs="+", default=["biformer_tiny", "resnet18"])
    parser.add_argument("--steps", type=int, default=480)
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--size", choices=sorted(DETECTOR_SIZES), default="tiny", help="the detector's widths")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/hf_detection")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    rows = run(args.data, args.backbones, args.steps, args.img_size, args.size, args.batch_size, args.lr,
               args.seed, args.out)
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if any(math.isnan(r["loss_last"]) for r in rows):
        raise SystemExit("a loss became NaN")


if __name__ == "__main__":
    main()
