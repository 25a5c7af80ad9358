"""The evaluation loop shared by ``zoo validate`` and the per-epoch validation of ``zoo train``.

Preprocessing is the model's own (timm's ``resolve_model_data_config`` + the eval transform ``create_loader`` builds
from it), top-k by timm's ``accuracy``; counts are summed across ranks, so N processes give the same top-1 as one.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.data import create_loader
from timm.utils import accuracy
from tqdm.auto import tqdm

from .distributed import Processes, sum_across_ranks

__all__ = ["AMP_DTYPES", "EvalResult", "autocast", "evaluate", "make_eval_loader"]

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class EvalResult:
    top1: float  # percent
    top5: float  # percent: top-k with k = top5_k, 5 or the number of classes when there are fewer
    images: int
    loss: float
    seconds: float
    top5_k: int = 5  # what "top-5" is here: min(5, classes); printed as top-<k> (a 3-class model's top-3 is 100 %)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def autocast(device: torch.device, amp_dtype: torch.dtype | None):
    return torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()


def make_eval_loader(dataset, data_config: dict, batch_size: int, workers: int, device: torch.device):
    """timm's eval loader (resize, centre crop by ``crop_pct``, normalise) over ``dataset``, no sampler padding."""
    return create_loader(
        dataset, input_size=data_config["input_size"], batch_size=batch_size, is_training=False,
        interpolation=data_config["interpolation"], mean=data_config["mean"], std=data_config["std"],
        crop_pct=data_config["crop_pct"], crop_mode=data_config.get("crop_mode"), num_workers=workers,
        distributed=False, use_prefetcher=device.type == "cuda", device=device, pin_memory=device.type == "cuda",
        persistent_workers=False)


def _outputs(model: torch.nn.Module, seen: int) -> int:
    """The model's class count (its ``num_classes``), else the logits' width seen in the loop."""
    outputs = getattr(model, "num_classes", None)
    return outputs if isinstance(outputs, int) and outputs > 0 else seen


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, processes: Processes, amp_dtype: torch.dtype | None = None,
             progress: bool = True, desc: str = "validate") -> EvalResult:
    """Top-1 / top-5 (percent), mean cross-entropy and throughput of ``model`` over ``loader`` (this rank's shard),
    summed over all ranks."""
    was_training = model.training
    model.eval()
    device = processes.device
    correct1 = correct5 = images = 0
    k = 5
    loss_sum = 0.0
    start = time.perf_counter()
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=not (progress and processes.is_primary))
    for inputs, targets in bar:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(inputs)
        logits = logits.float()
        n = targets.shape[0]
        k = min(5, logits.shape[1])
        acc1, acc5 = accuracy(logits, targets, topk=(1, k))
        # accuracy() gives percentages of the batch; the counts are what sum exactly across batches and ranks.
        correct1 += round(acc1.item() * n / 100)
        correct5 += round(acc5.item() * n / 100)
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        images += n
        bar.set_postfix(top1=f"{100 * correct1 / images:.2f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    model.train(was_training)
    correct1, correct5, images, loss_sum, seconds = sum_across_ranks(
        [correct1, correct5, images, loss_sum, seconds], processes)
    images = int(images)
    return EvalResult(top1=100 * correct1 / max(images, 1), top5=100 * correct5 / max(images, 1), images=images,
                      loss=loss_sum / max(images, 1), seconds=seconds / processes.world_size,
                      top5_k=min(5, _outputs(model, k)))
