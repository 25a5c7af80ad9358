"""SDANet as an mmdet 3.x neck: FPN followed by selective dense attention on every output level.

The official ``AttFPN`` (lutao2021/PIDray, mmdet 2.25) is mmdet's FPN plus five ``selective_attention`` modules,
one per output level, each of which sees all five FPN outputs. ``SDANetFPN`` subclasses mmdet 3.x's FPN (so the
lateral/output convs keep mmdet's names and checkpoints) and adds ``selective_attentions``, one per output level.
Its default ``init_cfg`` (Xavier-uniform on every Conv2d, attention included) is what the official
``AttFPN.init_weights`` did.
"""

from __future__ import annotations

from mmcv.cnn import build_norm_layer
from mmdet.models.necks import FPN
from mmdet.registry import MODELS
from torch import nn

from .selective_attention import SelectiveDenseAttention


@MODELS.register_module()
class SDANetFPN(FPN):
    """FPN + SDANet selective dense attention (dense channel/spatial attention + dependency refinement per level).

    Args beyond mmdet's FPN:
        attention_squeeze_channels: width of the channel attention's squeeze; the official 128 for 256 channels,
            ``out_channels // 2`` by default.
        attention_norm_cfg: norm after the squeeze (official: BN; it needs >= 2 images per GPU in training).
        spatial_kernel_size: the spatial attention's conv size (official 7).
        context_ratio: hidden width of the dependency refinement's global-context block (official 1/16).
    """

    def __init__(self, *args, attention_squeeze_channels: int | None = None,
                 attention_norm_cfg: dict | None = None, spatial_kernel_size: int = 7,
                 context_ratio: float = 1.0 / 16, **kwargs):
        super().__init__(*args, **kwargs)
        norm_cfg = dict(type="BN", requires_grad=True) if attention_norm_cfg is None else attention_norm_cfg
        squeeze = attention_squeeze_channels or self.out_channels // 2

        def norm_layer(channels: int) -> nn.Module:
            return build_norm_layer(norm_cfg, channels)[1]

        self.selective_attentions = nn.ModuleList(
            SelectiveDenseAttention(level, self.num_outs, self.out_channels, squeeze, spatial_kernel_size,
                                    context_ratio, norm_layer)
            for level in range(self.num_outs)
        )

    def forward(self, inputs):
        pyramid = super().forward(inputs)
        return tuple(attention(pyramid) for attention in self.selective_attentions)
