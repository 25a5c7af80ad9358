"""General object detection heads, as OpenMMLab 3.x parts: RelationNet++ (BVR, NeurIPS 2020).

Importing this package registers, in mmdet's registries:

* ``BVRHead`` (MODELS): RetinaHead / FCOSHead / ATSSHead whose tower features attend to predicted keypoints;
* ``KeypointHead`` (MODELS): corner and centre heat maps with offsets, Gaussian focal loss;
* ``BVR`` (MODELS): the official detector name (a SingleStageDetector);
* ``PointKptAssigner`` (TASK_UTILS): the keypoint targets.

It imports mmdet, so only configs (``custom_imports=dict(imports=['attnzoo.heads.detection'])``) and the mm tools import it;
``import attnzoo.heads`` does not.
"""

from .bvr_head import BVR, SUPPORTED_HEADS, BVRHead, checkpoint_head_type, convert_official_bvr_checkpoint
from .bvr_transformer import (
    BVRMultiheadAttention,
    PositionalEncodingLearned,
    PositionalEncodingSine,
    PositionalEncodingSineLearned,
    SimpleBVRTransformer,
    attention_cost,
)
from .keypoint_head import KEYPOINT_TYPES, KeypointHead, PointKptAssigner, gaussian_radius

__all__ = [
    "BVR",
    "KEYPOINT_TYPES",
    "SUPPORTED_HEADS",
    "BVRHead",
    "BVRMultiheadAttention",
    "KeypointHead",
    "PointKptAssigner",
    "PositionalEncodingLearned",
    "PositionalEncodingSine",
    "PositionalEncodingSineLearned",
    "SimpleBVRTransformer",
    "attention_cost",
    "checkpoint_head_type",
    "convert_official_bvr_checkpoint",
    "gaussian_radius",
]
