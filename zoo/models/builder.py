"""The one model builder: every path that makes a model (``attnzoo.create_model``, ``zoo export|bench|validate|train|
predict|demo``, ``ZooBackbone``) calls :func:`build_model`, so the card's ``model_kwargs`` always apply.

Where weights come with the model (``pretrained=True`` with a card, or a hub folder), the zoo reads them itself
(attnzoo.weights: one reader, the card's sha256, the one unwrapping rule), checks on a meta-device twin that they fit
the model as asked (family filter, then timm's ``in_chans`` / ``num_classes`` adaptations; the one misfit message),
and then hands the tensors to timm (``pretrained_cfg['state_dict']``), which loads them and wraps the model as asked
(``features_only``, ``out_indices``, ...). timm never reads a file of ours.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import split_model_name_tag
from timm.models._hub import load_model_config_from_path

from ..cards import Card, get_card, has_card
from ..errors import UserError
from ..weights import CheckpointError, check_fit, checkpoint_filter_fn_for, prepare_state_dict, read_state_dict
from .model_args import check_folder_model_args
from .registry import require_model

__all__ = ["LOCAL_DIR_PREFIX", "build_model", "card_of", "folder_img_size", "img_size_kwargs", "model_kwargs_for"]

LOCAL_DIR_PREFIX = "local-dir:"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# Arguments that wrap the model around its layers: the meta twin that checks a fit is built without them.
_WRAPPING_ARGS = ("features_only", "out_indices", "feature_cls", "feature_cfg", "output_stride", "flatten_sequential")


def card_of(name: str) -> Card | None:
    """The model card of ``name`` (a timm name, with or without a ``.tag``), or None."""
    base, _tag = split_model_name_tag(name)
    return get_card(base) if has_card(base) else None


def model_kwargs_for(name: str, **kwargs: Any) -> dict[str, Any]:
    """The constructor arguments of ``name``: its card's ``model_kwargs``, overridden by ``kwargs``."""
    card = card_of(name)
    return {**(card.model_kwargs if card else {}), **kwargs}


def _build_around_weights(name: str, state_dict: dict[str, torch.Tensor], origin: str, kwargs: dict[str, Any],
                          filter_fn="auto", pretrained_cfg: dict | None = None) -> torch.nn.Module:
    """timm builds ``name`` with ``state_dict`` as its pretrained weights, after the zoo checked that they fit."""
    plain = {k: v for k, v in kwargs.items() if k not in _WRAPPING_ARGS}
    with torch.device("meta"):
        twin = timm.create_model(name, pretrained=False, pretrained_cfg=pretrained_cfg, **plain)
    check_fit(prepare_state_dict(dict(state_dict), twin, filter_fn, adapt=True), twin, origin)
    cfg = dict(pretrained_cfg or timm.get_pretrained_cfg(name).to_dict(), state_dict=state_dict)
    cfg.pop("file", None)
    return timm.create_model(name, pretrained=True, pretrained_cfg=cfg, **kwargs)


def _square(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    return (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)[-2:]


def folder_img_size(folder: str | os.PathLike) -> tuple[int, int] | None:
    """The input size a model folder was built at: config.json's ``model_args.img_size``, else its pretrained_cfg's
    ``input_size``; None when the folder says neither (or is not readable: the builder says why)."""
    try:
        config = json.loads((Path(folder) / CONFIG_NAME).read_text())
        size = (config.get("model_args") or {}).get("img_size") or (config.get("pretrained_cfg") or {}).get("input_size")
        return _square(size)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def img_size_kwargs(source: str | os.PathLike, img_size: int | None, /, **kwargs: Any) -> dict[str, Any]:
    """``{"img_size": img_size}`` when ``source`` (a name or a model folder, built with ``kwargs``) has a constructor
    that takes ``img_size`` (the zoo's families, timm's ViTs and Swins), else ``{}``: a model without one (a conv net
    such as timm's ConvNeXt) runs at any size and only the data transform changes. Judged on a meta-device build."""
    if img_size is None:
        return {}
    text = os.fspath(source)
    if text.startswith(LOCAL_DIR_PREFIX):
        text = text[len(LOCAL_DIR_PREFIX):]
    try:
        if Path(text).is_dir():
            config = json.loads((Path(text) / CONFIG_NAME).read_text())
            name, base = config["architecture"], dict(config.get("model_args") or {})
            base.setdefault("num_classes", config.get("num_classes"))
        else:
            name, base = text, model_kwargs_for(text)
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, **{**base, **kwargs})
    except Exception:  # not ours to judge here: the real build reports what does not fit
        return {}
    if "img_size" not in inspect.signature(type(model).__init__).parameters:
        return {}
    try:  # a size the architecture cannot take is the user's mistake: one line naming the sizes it can take
        with torch.device("meta"):
            timm.create_model(name, pretrained=False, **{**base, **kwargs, "img_size": img_size})
    except ValueError as err:
        raise UserError(f"--img-size {img_size}: {err}") from None
    return {"img_size": img_size}


def _size_filter(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A folder's own layout at another size than ``model``'s: the model's ``resample_state_dict_to_size`` (the
    zoo's families), else its family filter (timm's resample what depends on the size, e.g. ViT position
    embeddings)."""
    resample = getattr(model, "resample_state_dict_to_size", None)
    if resample is not None:
        return resample(state_dict)
    family_filter = checkpoint_filter_fn_for(model)
    return family_filter(state_dict, model) if family_filter is not None else state_dict


def _build_from_folder(folder: Path, **kwargs: Any) -> torch.nn.Module:
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: not a model folder (no {CONFIG_NAME}); save one with attnzoo.save_pretrained.")
    try:
        # timm's own reader of local-dir folders, so both ways in agree on what a folder means.
        pretrained_cfg, architecture, model_args = load_model_config_from_path(folder)
    except (json.JSONDecodeError, KeyError) as err:
        raise CheckpointError(f"{config_path}: unreadable model config ({err!r}).") from err
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME} next to {CONFIG_NAME}.")
    require_model(architecture)
    model_args = check_folder_model_args(config_path, model_args)  # a hostile config.json: one line, nothing run
    # JSON has no tuples; timm's default configs use them (input_size, mean, std, ...).
    pretrained_cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in pretrained_cfg.items()
                      if k not in ("source", "file")}
    pretrained_cfg["architecture"] = architecture
    args = {"num_classes": pretrained_cfg.get("num_classes"), **model_args, **kwargs}
    state_dict, _, origin = read_state_dict(weights)
    # The folder holds the model's own layout: no family filter, unless asked for another input size than the
    # folder's (zoo validate RUN --img-size N), where what depends on the size is resampled.
    resized = "img_size" in kwargs and _square(kwargs["img_size"]) != _square(model_args.get("img_size"))
    return _build_around_weights(architecture, state_dict, origin, args, filter_fn=_size_filter if resized else None,
                                 pretrained_cfg=pretrained_cfg)


def build_model(name_or_dir: str | os.PathLike, pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
    """Build a model from a zoo/timm name or from a folder written by ``save_pretrained``.

    - A folder (or ``"local-dir:<folder>"``): rebuilt from config.json with the weights of model.safetensors
      (the folder is the weights, so ``pretrained`` does not matter).
    - A name with a model card: built with the card's ``model_kwargs``; ``pretrained=True`` loads the card's first
      checkpoint (cached download, sha256 check, official layout converted, strict fit).
    - Any other timm name: ``timm.create_model(name, pretrained=pretrained, **kwargs)``.
    Extra ``kwargs`` go to timm (``num_classes``, ``features_only``, ...) and win over the card's.
    """
    source = os.fspath(name_or_dir)
    if source.startswith(LOCAL_DIR_PREFIX):
        source = source[len(LOCAL_DIR_PREFIX):]
        if not Path(source).is_dir():
            raise FileNotFoundError(f"{source}: no such model folder.")
    if Path(source).is_dir():
        return _build_from_folder(Path(source), **kwargs)
    if source.startswith("hf-hub:"):
        return timm.create_model(source, pretrained=pretrained, **kwargs)
    if isinstance(name_or_dir, os.PathLike) or os.sep in source or "/" in source:
        raise FileNotFoundError(f"{source}: no such model folder.")

    name, _tag = split_model_name_tag(source)
    require_model(name)
    card = card_of(source)
    kwargs = model_kwargs_for(source, **kwargs)
    if not (pretrained and card is not None and card.checkpoints):
        return timm.create_model(source, pretrained=pretrained, **kwargs)
    state_dict, _, origin = read_state_dict(card)
    return _build_around_weights(source, state_dict, origin, kwargs)
