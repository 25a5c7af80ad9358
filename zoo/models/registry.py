"""Which models the zoo offers: names, families, and the error for a name nothing knows.

The zoo's models are the timm models registered by ``backbones`` (our own families) plus the timm models that have a
card in ``zoo/cards`` (timm's PoolFormer and FocalNet, which this project documents but does not re-implement).
"""

from __future__ import annotations

import fnmatch

import timm
from timm.models import is_model, model_entrypoint

import attnzoo.backbones  # noqa: F401  (registers our families with timm)

from ..cards import UnknownModelError, get_card, has_card, list_cards, suggest_names

__all__ = ["family_of", "list_models", "require_model"]

OWN_MODULE_PREFIX = "attnzoo.backbones."


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

