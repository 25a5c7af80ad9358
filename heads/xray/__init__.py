"""X-ray prohibited-item detection: SDANet (ICCV 2021) and the PIDray benchmark, as OpenMMLab 3.x parts.

Importing this package registers, in mmdet's registries:

* ``SDANetFPN`` (MODELS): FPN + SDANet's selective dense attention on every level;
* ``PIDrayDataset`` (DATASETS): one PIDray split from its COCO json, official class order;
* ``PIDrayMetric`` (METRICS): box and mask AP per split (easy / hard / hidden) and overall, in one table;
* ``TrainTimeBudgetHook`` (HOOKS): ends an iteration-based run after N minutes (the CPU demo).

It imports mmdet, so only configs (``custom_imports=dict(imports=['attnzoo.heads.xray'])``) and the mm tools import it;
``import attnzoo.heads`` does not. The attention itself (``attnzoo.heads.xray.selective_attention``) is plain torch.
"""

from .pidray import PIDRAY_CLASSES, PIDRAY_SPLITS, PIDRAY_TEST_SPLITS, PIDrayDataset
from .pidray_metric import PIDrayMetric
from .sdanet_neck import SDANetFPN
from .selective_attention import (
    SelectiveDenseAttention,
    convert_official_attention_state_dict,
    convert_official_sdanet_checkpoint,
)
from .time_budget import TrainTimeBudgetHook

__all__ = [
    "PIDRAY_CLASSES",
    "PIDRAY_SPLITS",
    "PIDRAY_TEST_SPLITS",
    "PIDrayDataset",
    "PIDrayMetric",
    "SDANetFPN",
    "SelectiveDenseAttention",
    "TrainTimeBudgetHook",
    "convert_official_attention_state_dict",
    "convert_official_sdanet_checkpoint",
]
