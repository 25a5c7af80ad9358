"""``zoo predict`` as a library: the top-k classes of images, with their probabilities and names."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from ...errors import UserError
from ..images import DEFAULT_MAX_PIXELS, UnreadableImage, display_path, read_image
from .models import class_names

__all__ = ["predict"]


def predict(model: torch.nn.Module, images: Sequence[str | Path], top_k: int = 5, data_overrides: dict | None = None,
            device: str = "cpu", *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
            warn: Callable[[str], None] = lambda message: None) -> Iterator[tuple[str, list[dict]]]:
    """(image, [{"index", "label", "prob"}, ...] best first) per image, through the model's evaluation transform.

    Images are read by the zoo's reader (``attnzoo.tasks.images``): one it does not read (not an image, truncated,
    corrupt, more than ``max_pixels`` pixels) is skipped with a warning naming it (``warn``) and the next is read; no
    readable image at all is a ``UserError``.
    """
    from timm.data import create_transform, resolve_model_data_config

    missing = [display_path(p) for p in images if not Path(p).is_file()]
    if missing:
        raise UserError(f"no such image file: {', '.join(missing)}; pass paths of image files.")
    model.to(device)
    data_config = resolve_model_data_config(model, args=data_overrides or {})
    transform = create_transform(**data_config, is_training=False)
    names = class_names(model)
    k = min(top_k, model.num_classes)
    read = 0
    for path in images:
        try:
            tensor = transform(read_image(path, max_pixels))
        except UnreadableImage as err:
            warn(f"warning: skipping {err}")
            continue
        read += 1
        with torch.no_grad():
            probs = model(tensor.unsqueeze(0).to(device)).float().softmax(-1)[0]
        top = torch.topk(probs, k)
        yield str(path), [{"index": int(i), "label": names[i] if names else str(int(i)), "prob": round(float(p), 6)}
                          for p, i in zip(top.values, top.indices)]
    if read == 0:
        raise UserError(f"no readable image among {', '.join(map(display_path, images))}; pass image files "
                        "(.png, .jpg, ...).")
