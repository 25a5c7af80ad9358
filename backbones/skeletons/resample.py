"""Input-size changes: resampling a state dict saved at one input size to a model built at another, and the
in-place ``set_input_size`` of the skeleton models.

Two rules, picked per family:
- :data:`AGENT_RULES`, the official Agent-Attention rule (LeapLabTHU/Agent-Attention
  ``agent_transformer/utils.py: load_pretrained``): agent biases ``ah/aw/ha/wa_bias`` linearly interpolated along
  their grid axis, patch-embedding kernels and relative-position bias tables bicubic (``F.interpolate`` defaults).
- :data:`TIMM_RULES`, timm's helpers for families without an official rule (SLAB): ``resize_rel_pos_bias_table`` for
  relative-position bias tables, ``resample_abs_pos_embed`` for the square positional encodings.

A rule resamples a tensor only when the two shapes differ in their size-dependent axes alone; any other mismatch
(another variant) passes through unchanged, so the loader still names it. Only shapes are read from the model, so
this works on a meta-device model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed, resize_rel_pos_bias_table
from timm.models import register_notrace_function

__all__ = ["AGENT_RULES", "TIMM_RULES", "adopt_size_dependent_modules", "agent_bias_linear", "init_arguments",
           "kernel_bicubic", "rel_pos_table_bicubic", "rel_pos_table_timm", "resample_state_dict",
           "square_pos_embed_timm",
           # PVT / DeiT position embeddings
           "AGENT_POS_EMBED_RULES", "TIMM_POS_EMBED_RULES", "abs_pos_embed_agent", "abs_pos_embed_timm",
           "resample_grid_embed", "resample_to_model"]


class Rule(NamedTuple):
    """``fits(name, old_shape, new_shape)``: whether the tensor is this rule's to resample (only its size-dependent
    axes differ); ``apply(name, tensor, new_shape)``: the resampled tensor."""

    fits: Callable[[str, torch.Size, torch.Size], bool]
    apply: Callable[[str, torch.Tensor, torch.Size], torch.Tensor]


# Agent bias -> (grid axis of the 5-d parameter, whether the official code moves the agent axis before the grid axis).
_AGENT_BIAS_AXES = {"ah_bias": (3, False), "aw_bias": (4, False), "ha_bias": (2, True), "wa_bias": (3, True)}


def _differs_only_at(old: torch.Size, new: torch.Size, axes) -> bool:
    return len(old) == len(new) and all(o == n for i, (o, n) in enumerate(zip(old, new)) if i not in axes)


def _agent_bias_fits(name, old, new):
    return len(old) == 5 and _differs_only_at(old, new, {_AGENT_BIAS_AXES[name][0]})


def agent_bias_linear(name: str, tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Official rule for ``ah/aw/ha/wa_bias`` (1, heads, ..., agents): 1-D linear interpolation of the grid axis."""
    axis, agents_last = _AGENT_BIAS_AXES[name]
    if not _agent_bias_fits(name, tensor.shape, shape):
        return tensor
    heads, size = tensor.shape[1], shape[axis]
    if agents_last:  # (1, heads, th, 1, A) / (1, heads, 1, tw, A) -> (heads, A, grid)
        line = tensor.reshape(heads, tensor.shape[axis], tensor.shape[-1]).transpose(1, 2)
    else:  # (1, heads, A, kh, 1) / (1, heads, A, 1, kw) -> (heads, A, grid)
        line = tensor.reshape(heads, tensor.shape[2], tensor.shape[axis])
    line = F.interpolate(line, size=size, mode="linear")
    return (line.transpose(1, 2) if agents_last else line).reshape(shape)


def _is_square(n: int) -> bool:
    return math.isqrt(n) ** 2 == n


def _square_table_fits(name, old, new):
    return len(old) == 2 and _differs_only_at(old, new, {0}) and _is_square(old[0]) and _is_square(new[0])


def rel_pos_table_bicubic(name: str, tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Official Swin / Agent rule for a ((2w-1)^2, heads) table: bicubic on the square (2w-1) grid."""
    if not _square_table_fits(name, tensor.shape, shape):
        return tensor
    s1, s2 = math.isqrt(tensor.shape[0]), math.isqrt(shape[0])
    heads = tensor.shape[1]
    grid = tensor.permute(1, 0).reshape(1, heads, s1, s1)
    return F.interpolate(grid, size=(s2, s2), mode="bicubic").reshape(heads, -1).permute(1, 0)


def _kernel_fits(name, old, new):
    return len(old) == 4 and _differs_only_at(old, new, {2, 3})


def kernel_bicubic(name: str, tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Official Agent rule for patch-embedding kernels (out, in, kh, kw): bicubic on the kernel."""
    if not _kernel_fits(name, tensor.shape, shape):
        return tensor
    return F.interpolate(tensor, size=tuple(shape[2:]), mode="bicubic")


def _odd_square_table_fits(name, old, new):
    return _square_table_fits(name, old, new) and math.isqrt(old[0]) % 2 == 1 and math.isqrt(new[0]) % 2 == 1


def rel_pos_table_timm(name: str, tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """timm's ``resize_rel_pos_bias_table`` for a ((2w-1)^2, heads) table of a square window."""
    if not _odd_square_table_fits(name, tensor.shape, shape):
        return tensor
    w1, w2 = (math.isqrt(tensor.shape[0]) + 1) // 2, (math.isqrt(shape[0]) + 1) // 2
    return resize_rel_pos_bias_table(tensor, new_window_size=(w2, w2), new_bias_shape=tuple(shape),
                                     old_window_size=(w1, w1))


def _pos_embed_fits(name, old, new):
    return len(old) == 3 and _differs_only_at(old, new, {1}) and _is_square(old[1]) and _is_square(new[1])


def square_pos_embed_timm(name: str, tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """timm's ``resample_abs_pos_embed`` for a (1, side*side, C) encoding without prefix tokens (square grids only:
    the size-dependent encodings of the official models are square)."""
    if not _pos_embed_fits(name, tensor.shape, shape):
        return tensor
    s1, s2 = math.isqrt(tensor.shape[1]), math.isqrt(shape[1])
    return resample_abs_pos_embed(tensor, new_size=[s2, s2], old_size=[s1, s1], num_prefix_tokens=0)


# Rules by the last component of a key (and, for kernels, the module the key sits in).
AGENT_RULES: dict[str, Rule] = {
    **{name: Rule(_agent_bias_fits, agent_bias_linear) for name in _AGENT_BIAS_AXES},
    "relative_position_bias_table": Rule(_square_table_fits, rel_pos_table_bicubic),
    "patch_embed.proj.weight": Rule(_kernel_fits, kernel_bicubic),
}
TIMM_RULES: dict[str, Rule] = {
    "relative_position_bias_table": Rule(_odd_square_table_fits, rel_pos_table_timm),
    "positional_encoding": Rule(_pos_embed_fits, square_pos_embed_timm),
}


def _rule_for(key: str, rules: Mapping[str, Rule]) -> tuple[str, Rule] | tuple[None, None]:
    leaf = key.rsplit(".", 1)[-1]
    if leaf in rules:
        return leaf, rules[leaf]
    for suffix, rule in rules.items():
        if "." in suffix and key.endswith(suffix):
            return leaf, rule
    return None, None


def resample_state_dict(state_dict: Mapping[str, torch.Tensor], target_shapes: Mapping[str, torch.Size],
                        rules: Mapping[str, Rule]) -> dict[str, torch.Tensor]:
    """``state_dict`` with each size-dependent tensor whose shape differs from ``target_shapes[key]`` resampled by
    its rule; every other entry unchanged. Meta tensors (a fit check without values) get an empty meta tensor of the
    target shape."""
    out = {}
    for key, value in state_dict.items():
        target = target_shapes.get(key)
        leaf, rule = _rule_for(key, rules)
        if rule is not None and target is not None and tuple(value.shape) != tuple(target):
            target = torch.Size(target)
            if rule.fits(leaf, value.shape, target):
                value = (torch.empty(target, dtype=value.dtype, device="meta") if value.is_meta
                         else rule.apply(leaf, value, target))
        out[key] = value
    return out


def init_arguments(frame_locals: Mapping[str, object]) -> dict[str, object]:
    """A constructor's arguments from its ``locals()`` (called first thing in ``__init__``), kept so that
    ``set_input_size`` can build the same model at another size."""
    return {k: v for k, v in frame_locals.items() if k not in ("self", "__class__")}


def resample_to_model(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` resampled to ``model``'s shapes by ``model.resample_rules`` (the body of every skeleton's
    ``resample_state_dict_to_size``); reads only shapes from the model, so it works on a meta-device model."""
    return resample_state_dict(state_dict, {k: v.shape for k, v in model.state_dict().items()}, model.resample_rules)


def adopt_size_dependent_modules(model: nn.Module, overrides: Mapping[str, object], module_names: Iterable[str],
                                 param_names: Iterable[str] = ()) -> nn.Module:
    """In-place input-size change shared by the skeletons: builds the model again with ``overrides`` (the new size,
    and what the model was built with), swaps in the rebuilt modules ``module_names`` and, for size-dependent
    parameters on the model itself (PVT's ``pos_embed1..4``, DeiT's ``pos_embed``), parameters ``param_names`` of the
    rebuilt shapes, then loads the model's own weights, resampled by ``resample_state_dict_to_size``. On a misfit the
    model is left as it was; frozen parameters stay frozen. Returns the rebuilt model (the twin)."""
    config = getattr(model, "_init_config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__}.set_input_size needs a model built by a family class "
                         "(e.g. timm.create_model('agent_swin_tiny'))")
    param = next(model.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), None)
    state = model.state_dict()
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    twin = type(model)(**{**config, **overrides})
    resampled = twin.resample_state_dict_to_size(state)
    originals = []
    for name in module_names:
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        originals.append((owner, leaf, getattr(owner, leaf)))
        replacement = twin.get_submodule(name).to(device=device, dtype=dtype)
        replacement.train(model.training)
        setattr(owner, leaf, replacement)
    for name in param_names:
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        old = getattr(owner, leaf)
        originals.append((owner, leaf, old))
        shape = twin.get_parameter(name).shape
        setattr(owner, leaf, nn.Parameter(torch.empty(shape, device=device, dtype=old.dtype)))
    try:
        model.load_state_dict(resampled, strict=True)
    except RuntimeError as err:
        for owner, leaf, original in originals:  # the model as it was
            setattr(owner, leaf, original)
        raise ValueError(f"{type(model).__name__}.set_input_size: the model's weights do not fit the model rebuilt at "
                         f"the new size (call set_input_size before reparameterize()): {err}") from err
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)  # frozen stays frozen
    model._init_config = twin._init_config
    return twin


# ---------------------------------------------------------------------------------------------------------------------
# Absolute position embeddings (PVT / DeiT skeletons)
# ---------------------------------------------------------------------------------------------------------------------


@register_notrace_function  # branches on the grids: an opaque call in torch.fx graphs
def resample_grid_embed(tensor: torch.Tensor, old_grid, new_grid, num_prefix_tokens: int, rule: str) -> torch.Tensor:
    """A (1, prefix + H*W, C) embedding laid out on ``old_grid`` resampled to ``new_grid`` (the prefix tokens kept).

    ``rule='agent'``: the official Agent-Attention ``load_pretrained`` (``F.interpolate`` bicubic, no antialias);
    ``rule='timm'``: timm's ``resample_abs_pos_embed`` (bicubic, antialias). Identity when the grids agree.
    """
    old, new = (int(old_grid[0]), int(old_grid[1])), (int(new_grid[0]), int(new_grid[1]))
    if old == new:
        return tensor
    if rule not in ("agent", "timm"):
        raise ValueError(f"resample_grid_embed: rule is 'agent' or 'timm', got {rule!r}")
    if tensor.is_meta:  # shapes only (the meta-device fit check): skip the slow decomposed meta interpolation
        return tensor.new_empty((tensor.shape[0], num_prefix_tokens + new[0] * new[1], tensor.shape[2]))
    if rule == "timm":
        return resample_abs_pos_embed(tensor, new_size=list(new), old_size=list(old),
                                      num_prefix_tokens=num_prefix_tokens)
    prefix, grid = tensor[:, :num_prefix_tokens], tensor[:, num_prefix_tokens:]
    grid = grid.reshape(1, old[0], old[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new, mode="bicubic").permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat([prefix, grid], dim=1)


def _square_tokens(count: int) -> tuple[int, int]:
    """(prefix tokens, side) of ``count`` = prefix + side**2, as the official rule reads it (side = floor sqrt)."""
    side = math.isqrt(count)
    return count - side * side, side


def _abs_pos_embed_fits(name, old, new):
    """Only the token axis of a (1, prefix + S*S, C) embedding differs, with the same prefix (a non-square grid or
    another token count is not this rule's: the loader names it)."""
    return (len(new) == 3 and _differs_only_at(old, new, {1})
            and _square_tokens(old[1])[0] == _square_tokens(new[1])[0])


def _abs_pos_embed(rule: str) -> Rule:
    def resample(name: str, tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        (prefix, s1), (_, s2) = _square_tokens(tensor.shape[1]), _square_tokens(shape[1])
        return resample_grid_embed(tensor, (s1, s1), (s2, s2), prefix, rule)

    resample.__doc__ = (f"Rule '{rule}' of :func:`resample_grid_embed` for a (1, prefix + S*S, C) position embedding "
                        "saved on a square grid (the prefix read as the tokens beyond the largest square).")
    return Rule(_abs_pos_embed_fits, resample)


abs_pos_embed_agent = _abs_pos_embed("agent")
abs_pos_embed_timm = _abs_pos_embed("timm")

# DeiT's ``pos_embed`` and PVT's per-stage ``pos_embed1..4``.
_POS_EMBED_KEYS = ("pos_embed", "pos_embed1", "pos_embed2", "pos_embed3", "pos_embed4")
AGENT_POS_EMBED_RULES: dict[str, Rule] = {key: abs_pos_embed_agent for key in _POS_EMBED_KEYS}
TIMM_POS_EMBED_RULES: dict[str, Rule] = {key: abs_pos_embed_timm for key in _POS_EMBED_KEYS}
