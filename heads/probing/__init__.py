"""Probes for frozen backbones (``zoo probe``): linear, multi-head attentive, efficient (EP) and moment (MP) probing.

Each probe is an ``nn.Module`` taking a backbone's token map (batch x tokens x channels) and an optional pooled vector;
``attnzoo.tasks.probing`` extracts and caches the features and trains them. Plain torch: no OpenMMLab needed.
"""

from .probes import (
                     PROBES,
                     AttentiveProbe,
                     EfficientPooling,
                     EfficientProbe,
                     LinearProbe,
                     MomentProbe,
                     build_probe,
                     convert_official_ep_state_dict,
                     count_parameters,
)

__all__ = ["PROBES", "AttentiveProbe", "EfficientPooling", "EfficientProbe", "LinearProbe", "MomentProbe",
           "build_probe", "convert_official_ep_state_dict", "count_parameters"]
