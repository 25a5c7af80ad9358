"""What is inside a checkpoint, and how it fits a model: the one unwrapping rule and the one misfit message.

**Unwrapping rule** (every path of the zoo uses it: ``pretrained=True``, ``attnzoo.create_model``, hub folders,
``zoo validate|train|predict|export|convert``, ``ZooBackbone``, the forgery runs, ``zoo xray detect``): a checkpoint's
model weights are the first of ``state_dict``, ``model`` that holds a mapping, unwrapped repeatedly (mmengine writes
``{"state_dict": ...}``, DeiT-style scripts ``{"model": ...}``). The EMA weights (``state_dict_ema``, ``model_ema``) are
taken only when asked for (``use_ema=True``, which then requires them), or when the file holds nothing else. This is
the official evaluation scripts' choice (they load ``checkpoint["model"]``); timm's own file loader prefers the EMA,
which is why no zoo path lets timm read a file. A ``module.`` prefix on every key (DataParallel, DDP, timm's EMA
wrapper) is removed.

**Misfit message**: :func:`describe_misfit` names every missing, unexpected and misshapen key (up to a dozen of each,
then a count) and what the shapes say (another variant); ``allowed`` says which misfits a caller accepts (a classifier
that is replaced, layers a downstream variant adds).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .files import CheckpointError

__all__ = [
    "EMA_KEYS",
    "WEIGHTS_KEYS",
    "KeyAllowance",
    "Misfit",
    "adapt_to_model",
    "compare_state_dicts",
    "describe_misfit",
    "unwrap_state_dict",
]

# Containers that training scripts wrap around the weights, in the order they are looked for.
WEIGHTS_KEYS = ("state_dict", "model")
EMA_KEYS = ("state_dict_ema", "model_ema")
_LISTED = 12  # keys named in an error before "... and N more"

# Keys a caller accepts as missing or unexpected: exact names, prefixes ending in "." (a whole submodule), or a test.
KeyAllowance = Collection[str] | Callable[[str], bool]


def unwrap_state_dict(obj: Any, use_ema: bool = False, origin: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint object, by the module's unwrapping rule (see the module docstring)."""
    if use_ema:
        if not (isinstance(obj, Mapping) and any(isinstance(obj.get(k), Mapping) for k in EMA_KEYS)):
            found = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise CheckpointError(f"{origin}: use_ema=True but it holds no EMA weights (top-level keys: {found}).")
        order = EMA_KEYS + WEIGHTS_KEYS
    else:
        order = WEIGHTS_KEYS + EMA_KEYS  # the EMA only when nothing else is there
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in order if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{origin}: expected a dict of tensors, found {type(obj).__name__}.")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{origin}: no tensors found (top-level keys: {sorted(map(str, obj))[:_LISTED]}).")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _allows(allowance: KeyAllowance | None) -> Callable[[str], bool]:
    if allowance is None:
        return lambda key: False
    if callable(allowance):
        return allowance
    exact = {a for a in allowance if not a.endswith(".")}
    prefixes = tuple(a for a in allowance if a.endswith("."))
    return lambda key: key in exact or key.startswith(prefixes)


@dataclass
class Misfit:
    """The keys of a checkpoint that do not fit a model: missing from it, unexpected in it, or of another shape."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # key, ckpt, model

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def without(self, allow_missing: KeyAllowance | None = None,
                allow_unexpected: KeyAllowance | None = None) -> Misfit:
        """The misfit left after the allowed missing / unexpected keys (shapes are never allowed to differ)."""
        missing_ok, unexpected_ok = _allows(allow_missing), _allows(allow_unexpected)
        return Misfit([k for k in self.missing if not missing_ok(k)],
                      [k for k in self.unexpected if not unexpected_ok(k)], list(self.mismatched))


def compare_state_dicts(checkpoint: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> Misfit:
    """How ``checkpoint`` misfits ``expected`` (a model's state dict); mismatches in the model's (top-down) order."""
    return Misfit(
        missing=[k for k in expected if k not in checkpoint],
        unexpected=[k for k in checkpoint if k not in expected],
        mismatched=[(k, tuple(checkpoint[k].shape), tuple(v.shape)) for k, v in expected.items()
                    if k in checkpoint and tuple(checkpoint[k].shape) != tuple(v.shape)],
    )


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f", ... and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


def describe_misfit(origin: str, target: str, misfit: Misfit, *, strict: bool = True, allowed: str = "",
                    fix: str = "") -> str:
    """One message naming every kind of misfit between a checkpoint (``origin``) and a model (``target``).

    ``allowed`` names what the caller already accepted (e.g. "the classifier may be missing"); ``fix`` replaces the
    default advice (build the variant the checkpoint belongs to; strict=False).
    """
    parts = []
    if misfit.missing:
        parts.append(f"{len(misfit.missing)} missing key(s): {_listing(misfit.missing)}")
    if misfit.unexpected:
        parts.append(f"{len(misfit.unexpected)} unexpected key(s): {_listing(misfit.unexpected)}")
    if misfit.mismatched:
        shapes = [f"{k} checkpoint {list(a)} vs model {list(b)}" for k, a, b in misfit.mismatched]
        parts.append(f"{len(misfit.mismatched)} shape mismatch(es): {_listing(shapes)}")
    message = f"{origin} does not fit {target}: " + "; ".join(parts) + "."
    if allowed:
        message += f" (Allowed, and not counted: {allowed}.)"
    if fix:
        return f"{message} {fix}"
    if misfit.mismatched:
        message += (" Tensors with the same names but other shapes mean the checkpoint was saved from another variant"
                    " (or with other model arguments): build the variant it belongs to.")
    if strict:
        message += " Pass strict=False to load only the tensors that fit."
    return message


def adapt_to_model(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's adaptations of pretrained weights to the model as built, applied to a state dict in the model's layout.

    - ``in_chans`` other than the checkpoint's: the stem conv (``pretrained_cfg['first_conv']``) is adapted with
      timm's ``adapt_input_conv`` (summed / repeated channels);
    - another ``num_classes`` (or none): the checkpoint's classifier (``pretrained_cfg['classifier']``) is replaced
      by the model's own freshly initialised one, or dropped when the model has no classifier.
    Everything else must then fit the model exactly (the caller loads strictly).
    """
    from timm.models._manipulate import adapt_input_conv

    cfg = getattr(model, "pretrained_cfg", None) or {}
    own = model.state_dict()
    state_dict = dict(state_dict)
    first_convs = cfg.get("first_conv") or ()
    for conv in (first_convs,) if isinstance(first_convs, str) else first_convs:
        key = f"{conv}.weight"
        if key in state_dict and key in own and state_dict[key].dim() == 4 \
                and state_dict[key].shape[1] != own[key].shape[1]:
            state_dict[key] = adapt_input_conv(own[key].shape[1], state_dict[key])
    classifiers = cfg.get("classifier") or ()
    for classifier in (classifiers,) if isinstance(classifiers, str) else classifiers:
        for key in (f"{classifier}.weight", f"{classifier}.bias"):
            if key not in state_dict:
                continue
            if key not in own:
                del state_dict[key]  # num_classes=0 (or features_only): no classifier to load
            elif state_dict[key].shape != own[key].shape:
                state_dict[key] = own[key]  # another num_classes: a new classifier, as timm does
    return state_dict
