"""Which models the zoo offers, and where each family keeps its checkpoint filter.

The zoo's models are the timm models registered by ``backbones`` (our own families) plus the timm models that have a
card in ``zoo/cards`` (timm's PoolFormer and FocalNet, which this project documents but does not re-implement).
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Callable

import timm
import torch
from timm.models import is_model, model_entrypoint

import backbones  # noqa: F401  (registers our families with timm)

from .cards import UnknownModelError, get_card, has_card, list_cards, suggest_names

__all__ = ["checkpoint_filter_fn_for", "family_of", "list_models", "require_model"]

OWN_MODULE_PREFIX = "backbones."

FilterFn = Callable[[dict[str, torch.Tensor], torch.nn.Module], dict[str, torch.Tensor]]


def _own_models() -> list[str]:
    return [name for name in timm.list_models() if model_entrypoint(name).__module__.startswith(OWN_MODULE_PREFIX)]


def list_models(pattern: str = "*") -> list[str]:
    """The zoo's model names matching the shell-style ``pattern``: our registered families + carded timm models."""
    names = set(_own_models()) | {name for name in list_cards() if is_model(name)}
    return sorted(name for name in names if fnmatch.fnmatchcase(name, pattern))


def require_model(name: str) -> str:
    """``name`` if timm can build it, else UnknownModelError suggesting close zoo (then timm) names."""
    if is_model(name):
        return name
    zoo_names = list_models()
    # Prefer the zoo's own names; fall back to all of timm's when none of ours is close.
    candidates = zoo_names if suggest_names(name, zoo_names) else timm.list_models()
    raise UnknownModelError("model", name, candidates)


def family_of(name: str) -> str:
    """The card's family, else the name of the module that registers the model (e.g. 'biformer')."""
    if has_card(name):
        return get_card(name).family
    return model_entrypoint(name).__module__.rsplit(".", 1)[-1]


def checkpoint_filter_fn_for(model: torch.nn.Module) -> FilterFn | None:
    """The ``checkpoint_filter_fn(state_dict, model)`` of the family module that defines ``model``, or None.

    timm's poolformer/focalnet and our families each define one at module level, next to the model class. For a
    wrapper (e.g. a features_only model) whose class lives elsewhere, the module that registers the model's
    ``pretrained_cfg['architecture']`` is asked instead.
    """
    module = sys.modules.get(type(model).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is None:
        architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
        if architecture and is_model(architecture):
            module = sys.modules.get(model_entrypoint(architecture).__module__)
            filter_fn = getattr(module, "checkpoint_filter_fn", None)
    return filter_fn
