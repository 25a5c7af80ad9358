"""The :mod:`zoo.layers` attentions as mmcv plug-ins (ResNet's ``plugins=[dict(cfg=dict(type=...), stages=...,
position=...)]``); registered by ``import zoo.openmmlab``."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PLUGIN_LAYERS"]


class _ResidualPlugin(nn.Module):
    """An attention layer as an mmcv plug-in: ``x + gamma * layer(x)`` with ``gamma`` initialised to 0.

    mmcv's ``build_plugin_layer`` passes ``in_channels`` and the plug-in's output replaces the block's feature map
    (mmdet/mmseg ResNet ``forward_plugin``), so an attention plug-in carries its own residual; the zero ``gamma`` (the
    convention of mmcv's GeneralizedAttention) leaves a pretrained ResNet's function unchanged at the first step.
    """

    layer_class: type[nn.Module]

    def __init__(self, in_channels: int, **layer_kwargs):
        super().__init__()
        self.layer = self.layer_class(in_channels, **layer_kwargs)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.layer(x)


class _GatePlugin(nn.Module):
    """A gating layer (ELA) as an mmcv plug-in: its output already is the input rescaled, so no residual is added."""

    layer_class: type[nn.Module]

    def __init__(self, in_channels: int, **layer_kwargs):
        super().__init__()
        self.layer = self.layer_class(in_channels, **layer_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _plugin_classes() -> dict[str, type[nn.Module]]:
    """Registered name -> plug-in class; ``_abbr_`` names the plug-in's attribute in the ResNet block."""
    from zoo import layers

    plugins = {}
    for name, layer, base, abbr in (
        ("BiLevelRoutingAttention2d", layers.BiLevelRoutingAttention2d, _ResidualPlugin, "bra"),
        ("AgentAttention2d", layers.AgentAttention2d, _ResidualPlugin, "agent_attention"),
        ("FlowAttention2d", layers.FlowAttention2d, _ResidualPlugin, "flow_attention"),
        ("SimplifiedLinearAttention2d", layers.SimplifiedLinearAttention2d, _ResidualPlugin, "slab_attention"),
        ("ELA", layers.ELA, _GatePlugin, "ela"),
    ):
        doc = f"mmcv plug-in form of :class:`zoo.layers.{name}` (built with ``in_channels``; see {base.__name__})."
        plugins[name] = type(f"{name}Plugin", (base,), {"layer_class": layer, "_abbr_": abbr, "__doc__": doc,
                                                        "__module__": __name__})
    return plugins


PLUGIN_LAYERS = _plugin_classes()
