"""Drop-in attention layers for anyone's network: ``from attnzoo.layers import BiLevelRoutingAttention2d, ...``.

Conventions (every layer here follows them; a new layer must too):

* 2D layers take and return ``(B, C, H, W)`` maps of the same shape and dtype, for any ``H x W``: a layer that needs a
  grid pads inside and masks what it padded (no crop of the input, no divisibility requirement);
  :class:`FlowAttention1d` is the ``(B, N, C)`` sequence form, with a ``causal`` switch;
* the channel count is the first argument (``dim``); every other argument has a default that works for any channel
  count (``num_heads=None`` -> ``dim // 32`` heads when 32 divides ``dim``, else 1), so ``Layer(dim)`` always builds;
* no residual inside the attention layers (ELA is a gate and returns the input scaled); add ``x + layer(x)`` where
  your architecture wants one;
* wrong inputs (rank-3 tensor to a 2D layer, channels other than ``dim``, ``num_heads`` not dividing ``dim``) raise
  ``ValueError`` with the problem and the fix;
* class docstrings state the cost (parameters, multiply-adds and activation memory in ``H, W, C``);
* each layer compiles with ``torch.compile(fullgraph=True)`` and exports to ONNX; the attention runs on the
  :mod:`kernels` op (Triton on CUDA, the plain-torch reference elsewhere; ``ZOO_KERNELS`` forces a path).

As OpenMMLab plug-ins (mmcv's ``plugins=[dict(cfg=dict(type=...), ...)]`` in mmdet/mmseg ResNets) they are registered
by :mod:`attnzoo.openmmlab`, which only OpenMMLab configs and tools import.

:class:`MixtureOfHeadAttention` is a ``(B, N, C)`` drop-in for timm's ViT ``Attention`` (``block.attn = ...``); in
training it keeps a load-balancing loss: add ``moh_balance_loss(model, 0.01)`` to your loss (``zoo train`` does).

The modules live in :mod:`attnzoo.backbones.layers` (so backbone families can reuse them without importing ``zoo``); this
module is their public name.
"""

from attnzoo.backbones.layers import (
    ELA,
    ELA_PRESETS,
    AgentAttention2d,
    BiLevelRoutingAttention2d,
    FlowAttention1d,
    FlowAttention2d,
    MixtureOfHeadAttention,
    SimplifiedLinearAttention2d,
    default_num_heads,
    moh_balance_loss,
)

__all__ = [
    "AgentAttention2d",
    "BiLevelRoutingAttention2d",
    "ELA",
    "ELA_PRESETS",
    "FlowAttention1d",
    "FlowAttention2d",
    "MixtureOfHeadAttention",
    "SimplifiedLinearAttention2d",
    "default_num_heads",
    "moh_balance_loss",
]
