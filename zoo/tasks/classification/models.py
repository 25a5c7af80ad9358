"""Which classifier a verb runs: a hub folder, a name with its card's weights, or a name with a checkpoint file.

Also what the classes are called (the run's own names, or ImageNet-1k's from timm's ImageNetInfo) and how
``zoo train --pretrained`` loads a backbone under a head of another size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from timm.data import ImageNetInfo

from ...models import WEIGHTS_NAME, build_model
from ...weights import CheckpointError, checkpoint_filter_fn_for, load_checkpoint

__all__ = ["class_names", "classifier_prefixes", "is_model_folder", "load_backbone_weights", "load_classifier"]


def is_model_folder(source: str | os.PathLike) -> bool:
    return Path(source).is_dir()


def load_classifier(source: str, checkpoint: str | None = None, random_init: bool = False,
                    **model_kwargs: Any) -> torch.nn.Module:
    """The model a classification verb evaluates, in eval mode.

    - ``source`` a hub folder (``attnzoo.save_pretrained`` / ``zoo train --out``): rebuilt and loaded strictly from it.
    - a zoo/timm name with ``checkpoint`` (a file, URL or card name): loaded through ``attnzoo.load_checkpoint`` (safe
      loading, sha256 from the card, official layouts converted).
    - a name alone: the card's checkpoint (``attnzoo.create_model(name, pretrained=True)``), or random weights with
      ``random_init`` (only good for speed measurements).
    """
    if is_model_folder(source):
        if checkpoint:
            raise CheckpointError(f"{source} is a model folder (it holds its weights); drop --checkpoint.")
        return build_model(source, **model_kwargs).eval()
    if checkpoint:
        model = build_model(source, pretrained=False, **model_kwargs)
        load_checkpoint(model, checkpoint, strict=True)
        return model.eval()
    return build_model(source, pretrained=not random_init, **model_kwargs).eval()


def class_names(model: torch.nn.Module) -> list[str] | None:
    """Human names of the model's outputs: the run's own (config.json ``label_names``), ImageNet-1k's for a
    1000-class head, else None (outputs are then named by index)."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    if names:
        return list(names)
    if getattr(model, "num_classes", None) == 1000:
        info = ImageNetInfo("imagenet-1k")
        return [info.index_to_description(i) for i in range(1000)]
    return None


def classifier_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the classifier (timm's ``pretrained_cfg['classifier']``, e.g. 'head' or 'head.fc')."""
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "head"
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return tuple(f"{name}." for name in names)


def load_backbone_weights(model: torch.nn.Module, source: str | os.PathLike) -> None:
    """Load ``source`` (file, URL, card name or hub folder) into ``model`` except its classifier, which keeps its
    fresh initialisation (the folder's classes). Every other tensor must fit, else CheckpointError names them."""
    heads = classifier_prefixes(model)
    if Path(source).is_dir():
        source, family_filter = Path(source) / WEIGHTS_NAME, None  # a hub folder holds the zoo's own layout
        if not source.is_file():
            raise CheckpointError(f"{source.parent}: no {WEIGHTS_NAME}; --pretrained takes a model folder, a "
                                  "checkpoint file or a card name.")
    else:
        family_filter = checkpoint_filter_fn_for(model)

    def without_classifier(state_dict, target):
        if family_filter is not None:
            state_dict = family_filter(state_dict, target)
        return {k: v for k, v in state_dict.items() if not k.startswith(heads)}

    load_checkpoint(model, source, strict=True, filter_fn=without_classifier, allow_missing=heads,
                    allowed="the classifier is missing: it keeps its fresh initialisation",
                    origin=f"--pretrained {source}")
