"""Where each family keeps the function that maps its official checkpoint layout onto the timm model's."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

__all__ = ["FilterFn", "checkpoint_filter_fn_for"]

FilterFn = Callable[[dict[str, torch.Tensor], torch.nn.Module], dict[str, torch.Tensor]]


def checkpoint_filter_fn_for(model: torch.nn.Module) -> FilterFn | None:
    """The ``checkpoint_filter_fn(state_dict, model)`` of the family module that defines ``model``, or None.

    timm's poolformer/focalnet and the zoo's families each define one at module level, next to the model class. For a
    wrapper (e.g. a features_only model) whose class lives elsewhere, the module that registers the model's
    ``pretrained_cfg['architecture']`` is asked instead. A filter renames and converts the keys it knows and passes
    the rest through; judging the fit is the loader's job.
    """
    from timm.models import is_model, model_entrypoint

    module = sys.modules.get(type(model).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is None:
        architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
        if architecture and is_model(architecture):
            module = sys.modules.get(model_entrypoint(architecture).__module__)
            filter_fn = getattr(module, "checkpoint_filter_fn", None)
    return filter_fn
