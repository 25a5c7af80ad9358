"""The :mod:`attnzoo.layers` attentions in the form a framework plugs them into a network with.

A framework that inserts a layer into an existing network (an mmcv plug-in in a ResNet block, a row of a YOLO model
YAML) replaces the feature map with the layer's output, so the attentions come wrapped:

* an attention layer as ``x + gamma * layer(x)`` with ``gamma`` a learned scalar initialised to 0 (the convention of
  mmcv's GeneralizedAttention): at the first step the network computes exactly what it did without the layer, so a
  pretrained network is not disturbed and training decides how much of the attention to use;
* ELA, a gate whose output already is the input rescaled, as the layer itself (no residual).

:class:`PluggedLayer` is that wrapper, with ``residual`` choosing the form; :data:`PLUGGABLE` lists the layers and each
one's default form. The OpenMMLab plug-ins (:mod:`attnzoo.openmmlab.plugins`) and the Ultralytics bridge
(:mod:`attnzoo.integrations.ultralytics`) both build on it; this module imports neither framework. A new 2D layer in
:mod:`attnzoo.layers` becomes available to both by one line in :data:`PLUGGABLE`.
"""

from __future__ import annotations

import torch
from torch import nn

from attnzoo import layers

__all__ = ["PLUGGABLE", "PluggedLayer"]

# name (the class name in attnzoo.layers, also the name configs and YAMLs use) -> (layer class, residual by default)
PLUGGABLE: dict[str, tuple[type[nn.Module], bool]] = {
    "BiLevelRoutingAttention2d": (layers.BiLevelRoutingAttention2d, True),
    "AgentAttention2d": (layers.AgentAttention2d, True),
    "FlowAttention2d": (layers.FlowAttention2d, True),
    "SimplifiedLinearAttention2d": (layers.SimplifiedLinearAttention2d, True),
    "ELA": (layers.ELA, False),
}


class PluggedLayer(nn.Module):
    """``x + gamma * layer(x)`` with ``gamma`` starting at 0 (``residual=True``), or ``layer(x)`` (``residual=False``).

    The wrapped layer is ``self.layer`` and the scalar ``self.gamma`` (present only in the residual form), so the
    state-dict keys are ``<name>.layer.*`` and ``<name>.gamma``.
    """

    def __init__(self, layer: nn.Module, residual: bool):
        super().__init__()
        self.layer = layer
        self.residual = bool(residual)
        if self.residual:
            self.gamma = nn.Parameter(torch.zeros(1))

    def extra_repr(self) -> str:
        return f"residual={self.residual}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(x)
        return x + self.gamma * out if self.residual else out
