"""Auxiliary losses a model leaves behind in a training forward, added to the task loss by ``zoo train``.

One today: the load-balancing loss of Mixture-of-Head attention (MoH-TransNeXt, and any network with
:class:`attnzoo.layers.MixtureOfHeadAttention` swapped in), weighted 0.01 as the official MoH training does
(SkyworkAI/MoH ``MoH-ViT/engine.py``: ``loss + 0.01 * mean(layer losses)``). A model without such layers adds
nothing.
"""

from __future__ import annotations

import torch

from attnzoo.layers import moh_balance_loss

__all__ = ["MOH_BALANCE_WEIGHT", "add_auxiliary_losses", "auxiliary_loss"]

MOH_BALANCE_WEIGHT = 0.01


def auxiliary_loss(model: torch.nn.Module) -> torch.Tensor | None:
    """The weighted auxiliary loss of ``model``'s last training forward (a DDP or compiled wrapper is fine: its
    modules are searched), or None when it left none."""
    return moh_balance_loss(model, MOH_BALANCE_WEIGHT)


def add_auxiliary_losses(loss: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    """``loss`` plus :func:`auxiliary_loss` (``loss`` itself when the model left none)."""
    extra = auxiliary_loss(model)
    return loss if extra is None else loss + extra.to(loss.dtype)
