"""Loading weights into a model: where the file comes from, its sha256, the family's layout, the fit, the load.

:func:`load_checkpoint` is the one loader. Every path of the zoo that puts weights into a model calls it (or
:func:`read_state_dict` + :func:`check_fit` where timm builds the model around the weights, see attnzoo.models.builder):
``pretrained=True`` (:func:`load_pretrained_file`, which ``import attnzoo`` installs behind timm's ``custom_load``), hub
folders, the classification verbs, ``zoo export``, ``ZooBackbone`` and the X-ray and forgery tasks.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..cards import Card, get_card, has_card
from .download import cache_filename, cached_download
from .files import CheckpointError, read_checkpoint, verify_sha256
from .filters import checkpoint_filter_fn_for
from .state_dicts import KeyAllowance, Misfit, adapt_to_model, compare_state_dicts, describe_misfit, unwrap_state_dict

__all__ = [
    "LoadResult",
    "check_fit",
    "load_checkpoint",
    "load_pretrained_file",
    "prepare_state_dict",
    "read_state_dict",
    "resolve_source",
]


@dataclass
class LoadResult:
    """What ``load_checkpoint`` did: the file, its sha256 (when checked) and the keys that did not fit (before any
    allowance: an allowed missing classifier is listed here too)."""

    path: Path
    sha256: str | None = None
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    mismatched_shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not (self.missing_keys or self.unexpected_keys or self.mismatched_shapes)


def resolve_source(source: str | os.PathLike | Card) -> tuple[Path, Card | None]:
    """The local file behind ``source`` (a Card, an http(s)/file URL, a file, or a card name) and its card, if any.
    A URL or a card's checkpoint is fetched into the torch hub cache when it is not there yet."""
    if isinstance(source, Card):
        card = source
    elif isinstance(source, str) and "://" in source:
        return cached_download(source), None
    elif Path(source).is_file():
        return Path(source), None
    elif isinstance(source, str) and has_card(source):
        card = get_card(source)
    else:
        raise CheckpointError(f"{source}: no such checkpoint file, and no model card of that name.")
    if not card.checkpoints:
        raise CheckpointError(f"model card '{card.name}' lists no checkpoint; pass a file path instead.")
    url = card.checkpoints[0].url
    return cached_download(url, filename=cache_filename(card.name, url)), card


def read_state_dict(source: str | os.PathLike | Card, *, use_ema: bool = False, expected_sha256: str | None = None,
                    map_location: Any = "cpu", extra_globals=()) -> tuple[dict[str, torch.Tensor], LoadResult, str]:
    """(tensors, LoadResult with path and checked sha256, origin text) of a checkpoint, by the one unwrapping rule.

    The sha256 is verified when the caller (``expected_sha256``: full digest or a prefix of >= 8 hex digits) or the
    card knows it.
    """
    path, card = resolve_source(source)
    result = LoadResult(path=path)
    if expected_sha256:
        result.sha256 = verify_sha256(path, expected_sha256, "given by the caller")
    elif card is not None and card.checkpoints[0].sha256:
        result.sha256 = verify_sha256(path, card.checkpoints[0].sha256, f"model card '{card.name}'")
    origin = f"checkpoint {path}" + (f" (card '{card.name}')" if card else "")
    raw = read_checkpoint(path, map_location, extra_globals=extra_globals)
    return unwrap_state_dict(raw, use_ema=use_ema, origin=origin), result, origin


def prepare_state_dict(state_dict: dict[str, torch.Tensor], model: torch.nn.Module,
                       filter_fn: str | Callable | None = "auto", adapt: bool = False) -> dict[str, torch.Tensor]:
    """The family's layout conversion (``filter_fn="auto"``: the model's family filter; a callable; or None), then,
    with ``adapt``, timm's adaptations to the model as built (another ``in_chans`` or ``num_classes``)."""
    if filter_fn == "auto":
        filter_fn = checkpoint_filter_fn_for(model)
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    if adapt:
        state_dict = adapt_to_model(state_dict, model)
    return state_dict


def _target(model: torch.nn.Module) -> str:
    return (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__


def check_fit(state_dict: dict[str, torch.Tensor], model: torch.nn.Module, origin: str, *, strict: bool = True,
              allow_missing: KeyAllowance | None = None, allow_unexpected: KeyAllowance | None = None,
              allowed: str = "", fix: str = "") -> Misfit:
    """The raw misfit of a prepared ``state_dict`` against ``model``; raises CheckpointError (strict) or warns when
    something beyond the allowances does not fit."""
    misfit = compare_state_dicts(state_dict, model.state_dict())
    remaining = misfit.without(allow_missing, allow_unexpected)
    if not remaining.fits:
        message = describe_misfit(origin, _target(model), remaining, strict=strict, allowed=allowed, fix=fix)
        if strict:
            raise CheckpointError(message)
        warnings.warn(message + " (strict=False: loaded the tensors that fit; the rest keep their values.)",
                      stacklevel=3)
    return misfit


def load_checkpoint(
    model: torch.nn.Module,
    source: str | os.PathLike | Card,
    *,
    strict: bool = True,
    filter_fn: str | Callable | None = "auto",
    map_location: Any = "cpu",
    expected_sha256: str | None = None,
    use_ema: bool = False,
    adapt: bool = False,
    allow_missing: KeyAllowance | None = None,
    allow_unexpected: KeyAllowance | None = None,
    allowed: str = "",
    fix: str = "",
    origin: str | None = None,
) -> LoadResult:
    """Load weights into ``model`` safely and say exactly what did not fit.

    ``source``: a .safetensors/.pth/.pt/.bin file, an http(s)/file URL, a Card or a model card name (its first
    checkpoint, fetched into the torch hub cache if not there yet). The sha256 is verified when the caller or the card
    knows it; the weights are unwrapped by the one rule (attnzoo.weights.state_dicts: ``model``/``state_dict``, the EMA
    only with ``use_ema``); the family's ``checkpoint_filter_fn`` maps official layouts to ours (``filter_fn``);
    ``adapt`` applies timm's adaptations (another ``in_chans`` / ``num_classes``). Keys the caller expects not to fit
    (``allow_missing`` / ``allow_unexpected``: names, ``"prefix."``es or a test; ``allowed`` says which in words) keep
    the model's values / are dropped. Anything else that does not fit raises CheckpointError naming every key; with
    ``strict=False`` the tensors that fit are loaded and the rest reported in a warning and the returned LoadResult.
    ``origin`` names the weights in that message (default: "checkpoint <file>").
    """
    state_dict, result, read_origin = read_state_dict(source, use_ema=use_ema, expected_sha256=expected_sha256,
                                                 map_location=map_location)
    state_dict = prepare_state_dict(state_dict, model, filter_fn, adapt)
    misfit = check_fit(state_dict, model, origin or read_origin, strict=strict, allow_missing=allow_missing,
                       allow_unexpected=allow_unexpected, allowed=allowed, fix=fix)
    result.missing_keys, result.unexpected_keys = misfit.missing, misfit.unexpected
    result.mismatched_shapes = misfit.mismatched
    skip = set(misfit.unexpected) | {k for k, _, _ in misfit.mismatched}
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in skip}, strict=False)
    return result


def load_pretrained_file(model: torch.nn.Module, path: str) -> None:
    """The loader behind ``pretrained=True`` (timm's ``custom_load``): :func:`load_checkpoint` with the family filter,
    timm's adaptations and a strict fit; the card's sha256 for the downloaded official file."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("architecture") or type(model).__name__
    url = cfg.get("url")
    official_url = url[0] if isinstance(url, (tuple, list)) else url
    expected_sha256 = None
    if not cfg.get("file") and has_card(name):
        expected_sha256 = next((c.sha256 for c in get_card(name).checkpoints if c.url == official_url), None)
    load_checkpoint(model, path, adapt=True, expected_sha256=expected_sha256, strict=True)
