"""``zoo validate`` as a library: top-1 / top-5 of a classifier on an ImageFolder, in one process or many."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...models.builder import img_size_kwargs
from ..images import DEFAULT_MAX_PIXELS
from .datasets import ImageFolderScan, build_dataset, class_to_index_for_model, find_split, scan_image_folder
from .distributed import Processes
from .evaluation import AMP_DTYPES, EvalResult, evaluate, make_eval_loader
from .models import load_classifier

__all__ = ["Validation", "validate"]


@dataclass
class Validation:
    """What :func:`validate` measured, with what it needs to say how (the data config, the folder, the scan)."""

    result: EvalResult
    folder: Path
    scan: ImageFolderScan
    data_config: dict[str, Any]
    architecture: str | None

    def record(self, **context: Any) -> dict[str, Any]:
        """The JSON record ``zoo validate`` prints last (``context``: the model, checkpoint, batch size, ...)."""
        r, c = self.result, self.data_config
        return {
            "model": context.pop("model"), "architecture": self.architecture, "checkpoint": context.pop("checkpoint"),
            "data": str(self.folder), "top1": round(r.top1, 4), "top5": round(r.top5, 4), "loss": round(r.loss, 6),
            "images": r.images, "skipped": [str(p) for p, _ in self.scan.skipped],
            "images_per_s": round(r.images_per_s, 2), "input_size": list(c["input_size"]),
            "crop_pct": c["crop_pct"], "crop_mode": c.get("crop_mode"), "interpolation": c["interpolation"],
            **context,
        }


def validate(model: str, data: str, processes: Processes, *, checkpoint: str | None = None,
             random_init: bool = False, model_kwargs: dict | None = None, data_overrides: dict | None = None,
             batch_size: int = 64, workers: int = 0, amp: str = "none", check_images: bool = True,
             max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Validation:
    """Top-1 / top-5 of ``model`` (a name, a name + ``checkpoint``, or a hub / run folder) on ``data``'s val split,
    with the model's own evaluation transform unless ``data_overrides`` (timm's img_size / crop_pct / crop_mode)."""
    from timm.data import resolve_model_data_config

    folder = find_split(data, "val")
    scan = scan_image_folder(folder, check_images=check_images, verbose=processes.is_primary, max_pixels=max_pixels)
    model_kwargs = dict(model_kwargs or {})
    # --img-size also builds the model at that size where its constructor takes img_size (position embeddings,
    # windows); the user's own img_size in model_kwargs wins. Other models only get the data override.
    size = (data_overrides or {}).get("img_size")
    if "img_size" not in model_kwargs:
        model_kwargs.update(img_size_kwargs(model, size, **model_kwargs))
    classifier = load_classifier(model, checkpoint, random_init=random_init, **model_kwargs)
    classifier.to(processes.device)
    data_config = resolve_model_data_config(classifier, args=data_overrides or {})
    class_to_idx = class_to_index_for_model(scan, classifier.num_classes, classifier.pretrained_cfg.get("label_names"))
    dataset = build_dataset(scan, class_to_idx, shard=(processes.rank, processes.world_size))
    loader = make_eval_loader(dataset, data_config, batch_size, workers, processes.device)
    result = evaluate(classifier, loader, processes, AMP_DTYPES[amp])
    return Validation(result, folder, scan, data_config, classifier.pretrained_cfg.get("architecture"))
