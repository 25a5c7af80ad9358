"""SDANet's selective dense attention for one pyramid level, in plain torch.

Reproduces the official computation (lutao2021/PIDray ``mmdet/models/necks/attfpn.py``, ``selective_attention``;
the ICCV'21 code bywang2018/security-dataset ``mmdet/models/detectors/cascade_rcnn.py`` computes the same thing inside
the detector). For the pyramid level being refined:

1. every level is brought to its size: finer levels by adaptive max pooling, coarser ones (and itself) by nearest
   interpolation;
2. channel-wise dense attention: the levels are summed, globally average-pooled, squeezed (1x1 conv, BN, ReLU), then
   expanded once per level; a softmax across levels gives one weight per level and channel;
3. spatial dense attention: the levels are summed, reduced to their channel mean and max, and one 7x7 conv per level
   gives one map per level; a softmax across levels gives one weight per level and position;
4. the two attended sums are added, passed through the dependency refinement module (a global-context block, ratio
   1/16, which keeps its own residual) and added to the level's input.

The official code hard-codes 5 levels, 256 channels and a squeeze width of 128; here they are arguments with those
defaults. Our module names differ from the official ones; ``convert_official_attention_state_dict`` maps them.

This module needs only torch, so it can be used and tested without OpenMMLab; the mmdet neck lives in ``sdanet_neck``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ChannelDenseAttention",
    "DependencyRefinement",
    "SelectiveDenseAttention",
    "SpatialDenseAttention",
    "convert_official_attention_state_dict",
    "convert_official_sdanet_checkpoint",
    "gather_levels",
]


def gather_levels(levels: Sequence[torch.Tensor], target_level: int) -> torch.Tensor:
    """Bring every pyramid level to the size of ``levels[target_level]``; returns (N, L, C, H, W).

    Finer levels (index below the target) are adaptively max-pooled, the target and coarser levels are nearest-
    interpolated, as the official code does.
    """
    size = levels[target_level].shape[2:]
    gathered = []
    for index, level in enumerate(levels):
        if index < target_level:
            gathered.append(F.adaptive_max_pool2d(level, output_size=size))
        else:
            gathered.append(F.interpolate(level, size=size, mode="nearest"))
    return torch.stack(gathered, dim=1)


class ChannelDenseAttention(nn.Module):
    """One weight per (level, channel), softmax-normalised across levels (official ``channel_attention``)."""

    def __init__(self, num_levels: int = 5, channels: int = 256, squeeze_channels: int = 128,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.num_levels = num_levels
        self.channels = channels
        # official ``fc``: 1x1 conv without bias, BN, ReLU
        self.squeeze = nn.Sequential(
            nn.Conv2d(channels, squeeze_channels, kernel_size=1, bias=False),
            norm_layer(squeeze_channels),
            nn.ReLU(inplace=False),
        )
        # official ``fcs``: one expansion per level
        self.expansions = nn.ModuleList(
            nn.Conv2d(squeeze_channels, channels, kernel_size=1) for _ in range(num_levels)
        )

    def forward(self, gathered: torch.Tensor) -> torch.Tensor:
        """(N, L, C, H, W) -> weights (N, L, C, 1, 1) that sum to one over L."""
        pooled = gathered.sum(dim=1).mean(dim=(2, 3), keepdim=True)
        if self.training and pooled.shape[0] == 1 and isinstance(self.squeeze[1], nn.modules.batchnorm._BatchNorm):
            raise ValueError(
                "SDANet's channel attention normalises a globally pooled (N, C, 1, 1) tensor with BatchNorm, which "
                "needs at least 2 images per GPU while training (the official setups used 2-4). Raise the train "
                "batch size, or build the neck with attention_norm_cfg=dict(type='GN', num_groups=...)."
            )
        squeezed = self.squeeze(pooled)
        logits = torch.stack([expand(squeezed) for expand in self.expansions], dim=1)
        return logits.softmax(dim=1)


class SpatialDenseAttention(nn.Module):
    """One weight per (level, position), softmax-normalised across levels (official ``spatial_attention``)."""

    def __init__(self, num_levels: int = 5, kernel_size: int = 7):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"spatial attention kernel_size must be odd to keep the map size, got {kernel_size}")
        # official ``conv``: one (mean, max) -> 1 conv per level, no bias
        self.level_convs = nn.ModuleList(
            nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False) for _ in range(num_levels)
        )

    def forward(self, gathered: torch.Tensor) -> torch.Tensor:
        """(N, L, C, H, W) -> weights (N, L, 1, H, W) that sum to one over L."""
        fused = gathered.sum(dim=1)
        descriptor = torch.cat([fused.mean(dim=1, keepdim=True), fused.amax(dim=1, keepdim=True)], dim=1)
        logits = torch.cat([conv(descriptor) for conv in self.level_convs], dim=1)
        return logits.softmax(dim=1).unsqueeze(2)


class DependencyRefinement(nn.Module):
    """SDANet's dependency refinement: a global-context block (GCNet; attention pooling, channel-add fusion).

    Same computation and parameter layout as mmcv's ``ContextBlock(channels, ratio)`` with its defaults
    (pooling 'att', fusion 'channel_add'); its output already includes the input (``x + transform(context)``).
    """

    def __init__(self, channels: int = 256, ratio: float = 1.0 / 16):
        super().__init__()
        hidden = int(channels * ratio)
        if hidden < 1:
            raise ValueError(f"context ratio {ratio} leaves no hidden channels for {channels} channels")
        self.context_logits = nn.Conv2d(channels, 1, kernel_size=1)  # official ``conv_mask``
        self.transform = nn.Sequential(  # official ``channel_add_conv`` (indices 0, 1, 3 hold weights)
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # GCNet's own init; a neck-level init_cfg (Xavier on every Conv2d, as the official AttFPN.init_weights did)
        # overrides it.
        nn.init.kaiming_normal_(self.context_logits.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.context_logits.bias)
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        weights = self.context_logits(x).view(n, 1, h * w).softmax(dim=2)
        context = torch.bmm(x.view(n, c, h * w), weights.transpose(1, 2)).view(n, c, 1, 1)
        return x + self.transform(context)


class SelectiveDenseAttention(nn.Module):
    """Dense attention over all pyramid levels, refined, added to one level (official ``selective_attention``)."""

    def __init__(self, target_level: int, num_levels: int = 5, channels: int = 256, squeeze_channels: int = 128,
                 spatial_kernel_size: int = 7, context_ratio: float = 1.0 / 16,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        if not 0 <= target_level < num_levels:
            raise ValueError(f"target_level {target_level} outside the {num_levels} pyramid levels")
        self.target_level = target_level
        self.num_levels = num_levels
        self.channels = channels
        self.channel_attention = ChannelDenseAttention(num_levels, channels, squeeze_channels, norm_layer)
        self.spatial_attention = SpatialDenseAttention(num_levels, spatial_kernel_size)
        self.refinement = DependencyRefinement(channels, context_ratio)

    def attention_weights(self, levels: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gathered levels (N, L, C, H, W), channel weights (N, L, C, 1, 1), spatial weights (N, L, 1, H, W))."""
        self._check_levels(levels)
        gathered = gather_levels(levels, self.target_level)
        return gathered, self.channel_attention(gathered), self.spatial_attention(gathered)

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        gathered, channel_weights, spatial_weights = self.attention_weights(levels)
        attended = (gathered * channel_weights).sum(dim=1) + (gathered * spatial_weights).sum(dim=1)
        # The official code adaptive-max-pools the refined map to the target size here; it already has that size,
        # so the pooling is the identity and is left out.
        return self.refinement(attended) + levels[self.target_level]

    def _check_levels(self, levels: Sequence[torch.Tensor]) -> None:
        if len(levels) != self.num_levels:
            raise ValueError(
                f"SDANet attention was built for {self.num_levels} pyramid levels but got {len(levels)}; set "
                f"num_levels to the neck's num_outs"
            )
        for index, level in enumerate(levels):
            if level.shape[1] != self.channels:
                raise ValueError(
                    f"pyramid level {index} has {level.shape[1]} channels, SDANet attention expects {self.channels}"
                )


# Official name -> ours, inside one ``selective_attention`` module. Applied to the key's tail after the prefix.
_OFFICIAL_ATTENTION_RENAMES = (
    (r"^channel_att\.fc\.", "channel_attention.squeeze."),
    (r"^channel_att\.fcs\.", "channel_attention.expansions."),
    (r"^spatial_att\.conv\.", "spatial_attention.level_convs."),
    (r"^refine\.conv_mask\.", "refinement.context_logits."),
    (r"^refine\.channel_add_conv\.", "refinement.transform."),
)


def convert_official_attention_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename one official ``selective_attention`` module's state dict to ``SelectiveDenseAttention``'s names.

    channel_att.fc.*             -> channel_attention.squeeze.*
    channel_att.fcs.{l}.*        -> channel_attention.expansions.{l}.*
    spatial_att.conv.{l}.*       -> spatial_attention.level_convs.{l}.*
    refine.conv_mask.*           -> refinement.context_logits.*
    refine.channel_add_conv.*    -> refinement.transform.*
    Keys already in our naming pass through; anything else is an error (it would be silently dropped otherwise).
    """
    converted = {}
    for key, value in state_dict.items():
        new_key = _rename_attention_key(key)
        if new_key is None:
            raise KeyError(f"unexpected key {key!r} in an official SDANet selective_attention state dict")
        converted[new_key] = value
    return converted


def _rename_attention_key(key: str) -> str | None:
    for pattern, replacement in _OFFICIAL_ATTENTION_RENAMES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    if key.startswith(("channel_attention.", "spatial_attention.", "refinement.")):
        return key
    return None


# Where the official code keeps the five ``selective_attention_{l}`` modules: inside the neck (lutao2021/PIDray,
# ``AttFPN``, mmdet 2.25) or at the top of the detector (bywang2018/security-dataset, mmdet 1.x CascadeRCNN).
_OFFICIAL_ATTENTION_PREFIX = re.compile(r"^(?:neck\.)?selective_attention_(\d+)\.(.+)$")


def convert_official_sdanet_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official SDANet detector state dict's attention keys to ``SDANetFPN``'s layout.

    ``neck.selective_attention_{l}.<official>`` and ``selective_attention_{l}.<official>`` both become
    ``neck.selective_attentions.{l}.<ours>`` (see ``convert_official_attention_state_dict`` for ``<official>`` ->
    ``<ours>``). The FPN keys (``neck.lateral_convs.*``, ``neck.fpn_convs.*``) already match mmdet 3.x's FPN and pass
    through, as do all other keys (mmdet 2.x Cascade Mask R-CNN keys are unchanged in 3.x; mmdet 1.x checkpoints need
    mmdet's own ``upgrade_model_version`` for the rest of the detector first).
    """
    converted = {}
    for key, value in state_dict.items():
        match = _OFFICIAL_ATTENTION_PREFIX.match(key)
        if match is None:
            converted[key] = value
            continue
        level, tail = match.groups()
        new_tail = _rename_attention_key(tail)
        if new_tail is None:
            raise KeyError(f"unexpected key {key!r} in an official SDANet checkpoint")
        converted[f"neck.selective_attentions.{level}.{new_tail}"] = value
    return converted
