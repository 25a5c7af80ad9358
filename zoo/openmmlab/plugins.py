"""The :mod:`attnzoo.layers` attentions as mmcv plug-ins (ResNet's ``plugins=[dict(cfg=dict(type=...), stages=...,
position=...)]``); registered by ``import attnzoo.openmmlab``.

The wrapping (``x + gamma * layer(x)`` with ``gamma`` starting at 0; ELA as the gate) is
:class:`attnzoo.integrations.forms.PluggedLayer`, shared with the Ultralytics bridge.
"""

from __future__ import annotations

from torch import nn

from ..integrations.forms import PLUGGABLE, PluggedLayer

__all__ = ["PLUGIN_LAYERS"]

# The plug-in's attribute name in the ResNet block (mmcv's `_abbr_`): `<block>.<abbr>.layer.*` in state dicts.
_ABBREVIATIONS = {
    "BiLevelRoutingAttention2d": "bra",
    "AgentAttention2d": "agent_attention",
    "FlowAttention2d": "flow_attention",
    "SimplifiedLinearAttention2d": "slab_attention",
    "ELA": "ela",
}


class _ResidualPlugin(PluggedLayer):
    """An attention layer as an mmcv plug-in: ``x + gamma * layer(x)`` with ``gamma`` initialised to 0.

    mmcv's ``build_plugin_layer`` passes ``in_channels`` and the plug-in's output replaces the block's feature map
    (mmdet/mmseg ResNet ``forward_plugin``), so an attention plug-in carries its own residual; the zero ``gamma`` (the
    convention of mmcv's GeneralizedAttention) leaves a pretrained ResNet's function unchanged at the first step.
    """

    layer_class: type[nn.Module]

    def __init__(self, in_channels: int, **layer_kwargs):
        super().__init__(self.layer_class(in_channels, **layer_kwargs), residual=True)


class _GatePlugin(PluggedLayer):
    """A gating layer (ELA) as an mmcv plug-in: its output already is the input rescaled, so no residual is added."""

    layer_class: type[nn.Module]

    def __init__(self, in_channels: int, **layer_kwargs):
        super().__init__(self.layer_class(in_channels, **layer_kwargs), residual=False)


def _plugin_classes() -> dict[str, type[nn.Module]]:
    """Registered name -> plug-in class; ``_abbr_`` names the plug-in's attribute in the ResNet block."""
    plugins = {}
    for name, (layer, residual) in PLUGGABLE.items():
        base = _ResidualPlugin if residual else _GatePlugin
        abbr = _ABBREVIATIONS.get(name, name.lower())
        doc = f"mmcv plug-in form of :class:`attnzoo.layers.{name}` (built with ``in_channels``; see {base.__name__})."
        plugins[name] = type(f"{name}Plugin", (base,), {"layer_class": layer, "_abbr_": abbr, "__doc__": doc,
                                                        "__module__": __name__})
    return plugins


PLUGIN_LAYERS = _plugin_classes()
