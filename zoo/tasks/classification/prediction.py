"""``zoo predict`` as a library: the top-k classes of images, with their probabilities and names."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from ...errors import UserError
from .models import class_names

__all__ = ["predict"]


def predict(model: torch.nn.Module, images: Sequence[str | Path], top_k: int = 5, data_overrides: dict | None = None,
            device: str = "cpu") -> Iterator[tuple[str, list[dict]]]:
    """(image, [{"index", "label", "prob"}, ...] best first) per image, through the model's evaluation transform."""
    from PIL import Image
    from timm.data import create_transform, resolve_model_data_config

    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        raise UserError(f"no such image file: {', '.join(missing)}; pass paths of image files.")
    model.to(device)
    data_config = resolve_model_data_config(model, args=data_overrides or {})
    transform = create_transform(**data_config, is_training=False)
    names = class_names(model)
    k = min(top_k, model.num_classes)
    for path in images:
        try:
            with Image.open(path) as image:
                tensor = transform(image.convert("RGB"))
        except OSError as err:
            raise UserError(f"{path}: not a readable image ({err}); pass an image file (.png, .jpg, ...).") from err
        with torch.no_grad():
            probs = model(tensor.unsqueeze(0).to(device)).float().softmax(-1)[0]
        top = torch.topk(probs, k)
        yield str(path), [{"index": int(i), "label": names[i] if names else str(int(i)), "prob": round(float(p), 6)}
                          for p, i in zip(top.values, top.indices)]
