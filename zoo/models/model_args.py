"""What a model's arguments may be, checked before anything is built: the value ranges of timm's shared arguments
(``--model-kwargs`` and a folder's config.json alike) and what a model folder's ``config.json`` may hold.

Used by ``attnzoo.models.arguments`` (``--model-kwargs``) and ``attnzoo.models.builder`` (reading a folder).
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import timm

from ..errors import ZooError

__all__ = ["ModelArgumentError", "check_folder_model_args", "check_ranges"]


class ModelArgumentError(ZooError, ValueError):
    """A ``--model-kwargs`` argument the model does not take; the message names it and what the model accepts."""


def _value_text(key: str, value: Any) -> str:
    return f"{key}={value!r}"


# timm's shared arguments whose out-of-range values build without complaint and go wrong later: a negative
# num_classes builds no classifier at all (timm: ``Linear if num_classes > 0 else Identity``), so the "logits" are the
# features and a class index runs past the class names.
_LOWEST = {"num_classes": 0, "in_chans": 1, "img_size": 1}


def check_ranges(kwargs: dict[str, Any]) -> None:
    for key, lowest in _LOWEST.items():
        if key not in kwargs:
            continue
        value = kwargs[key]
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, int) and not isinstance(v, bool) and v < lowest for v in values):
            meaning = " (0: no classifier, features out)" if key == "num_classes" else ""
            raise ModelArgumentError(f"--model-kwargs {_value_text(key, value)}: {key} must be at least {lowest}"
                                     f"{meaning}.")



# What timm's factory takes besides the constructor's arguments: where weights come from and what wraps the model.
# A folder's config.json describes the model; its weights are model.safetensors, so none of these belongs there.
_FACTORY_ARGUMENTS = frozenset(
    {p for p in inspect.signature(timm.create_model).parameters if p not in ("model_name", "kwargs")}
    | {"features_only", "feature_cfg", "feature_cls", "pretrained_strict", "kwargs_filter"})


def check_folder_model_args(config_path: str | os.PathLike, model_args: Any) -> dict[str, Any]:
    """A model folder's ``config.json`` ``model_args`` as constructor arguments, or one :class:`ModelArgumentError`
    naming the file: a mapping, none of timm's factory arguments (``pretrained``, ``checkpoint_path``,
    ``pretrained_cfg``, ``features_only``, ...: the folder's weights are its model.safetensors, nothing else is read
    or run), values in the range of timm's shared arguments."""
    if model_args is None:
        return {}
    if not isinstance(model_args, dict):
        raise ModelArgumentError(f"{config_path}: model_args is a {type(model_args).__name__}, not a mapping of "
                                 "constructor arguments; save the folder again with attnzoo.save_pretrained.")
    wrong = sorted(k for k in model_args if k in _FACTORY_ARGUMENTS)
    if wrong:
        raise ModelArgumentError(
            f"{config_path}: model_args.{wrong[0]} is not a constructor argument (a folder's weights are its "
            f"model.safetensors; {', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not read from "
            "config.json); remove it, or save the folder again with attnzoo.save_pretrained.")
    try:
        check_ranges(model_args)
    except ModelArgumentError as err:
        raise ModelArgumentError(f"{config_path}: {str(err).replace('--model-kwargs ', 'model_args.', 1)}") from None
    return dict(model_args)
