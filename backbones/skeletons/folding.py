"""Folding norms that are affine at inference into the layers next to them (timm's ``reparameterize_model``).

A norm qualifies when it exposes ``inference_affine() -> (scale, shift)``: at inference it computes
``y = scale * x + shift`` per channel (a BatchNorm with running statistics, SLAB's RepBN). LayerNorm does not
qualify (its statistics depend on the input), so for LayerNorm families every ``reparameterize()`` here is a no-op.

The skeletons call these helpers from their ``reparameterize()`` methods; the family supplies the norm and, for its
own attention modules, a ``fold_input_affine(scale, shift)`` that absorbs the norm in its input projections.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ChannelAffine", "fold_into_attention_input", "fold_into_conv_input", "fold_into_linear_input",
           "fold_into_output", "fold_norm", "inference_affine"]


def inference_affine(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) of a norm that is affine at inference, else None (LayerNorm, Identity, ...)."""
    affine = getattr(norm, "inference_affine", None)
    return affine() if callable(affine) else None


class ChannelAffine(nn.Module):
    """``scale * x + shift`` over the last dim: what an affine-at-inference norm becomes when no neighbouring layer
    can absorb it (e.g. the final norm, whose output is itself a model output via ``forward_features``)."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.scale = nn.Parameter(scale.detach().clone())
        self.shift = nn.Parameter(shift.detach().clone())

    def forward(self, x):
        return x * self.scale + self.shift


@torch.no_grad()
def fold_into_linear_input(linear: nn.Linear, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """``linear(scale * x + shift)`` -> ``linear'(x)``: W' = W diag(scale), b' = b + W shift."""
    bias = linear.weight @ shift.to(linear.weight.dtype)
    if linear.bias is None:
        linear.bias = nn.Parameter(bias)
    else:
        linear.bias.add_(bias)
    linear.weight.mul_(scale.to(linear.weight.dtype)[None, :])


@torch.no_grad()
def fold_into_conv_input(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """``conv(scale * x + shift)`` -> ``conv'(x)`` for an unpadded, ungrouped conv (every output sees every tap)."""
    if conv.groups != 1 or any(p != 0 for p in conv.padding):
        raise ValueError("only an unpadded, ungrouped conv can absorb a norm on its input (padding would see 0, "
                         "not the shifted value)")
    w = conv.weight
    bias = (w * shift.to(w.dtype)[None, :, None, None]).sum(dim=(1, 2, 3))
    if conv.bias is None:
        conv.bias = nn.Parameter(bias)
    else:
        conv.bias.add_(bias)
    w.mul_(scale.to(w.dtype)[None, :, None, None])


@torch.no_grad()
def fold_into_output(layer: nn.Linear | nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """``scale * layer(x) + shift`` -> ``layer'(x)``: rows of W scaled, b' = scale * b + shift."""
    w = layer.weight
    scale, shift = scale.to(w.dtype), shift.to(w.dtype)
    w.mul_(scale.reshape(-1, *([1] * (w.dim() - 1))))
    if layer.bias is None:
        layer.bias = nn.Parameter(shift.clone())
    else:
        layer.bias.mul_(scale).add_(shift)


def fold_into_attention_input(attn: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """The norm before an attention into its input projections: the attention's own ``fold_input_affine`` when it
    has one (several projections, e.g. PVT's q + kv / sr), else its ``qkv`` Linear (ViT / Swin convention)."""
    fold = getattr(attn, "fold_input_affine", None)
    if callable(fold):
        fold(scale, shift)
    elif isinstance(getattr(attn, "qkv", None), nn.Linear):
        fold_into_linear_input(attn.qkv, scale, shift)
    else:
        raise TypeError(f"{type(attn).__name__} has neither fold_input_affine() nor a qkv Linear: cannot absorb the "
                        "norm before it")


def fold_norm(owner: nn.Module, name: str, fold) -> tuple[torch.Tensor, torch.Tensor] | None:
    """If ``owner.<name>`` is affine at inference: ``fold(scale, shift)`` absorbs it, and it becomes an Identity.
    Returns (scale, shift), or None when the norm does not qualify (left as it is)."""
    affine = inference_affine(getattr(owner, name))
    if affine is None:
        return None
    fold(*affine)
    setattr(owner, name, nn.Identity())
    return affine
