"""Forgery detection and reasoning: FakeReasoning (dual-branch encoder, forgery-aware fusion, probability mapper,
MLLM glue), the UnivFD and NPR baselines, the MMFR annotation format and the metrics table.

Importing this package pulls in torch only; transformers, peft, open_clip, timm, torchmetrics and albumentations are
imported inside the functions that need them.

* ``heads.forgery.fusion``   ForgeryAwareFusion (+ official key conversion)
* ``heads.forgery.encoder``  DualBranchEncoder, branch adapters (open_clip, timm ViT, any features_only backbone)
* ``heads.forgery.mapper``   ClassificationProbabilityMapper
* ``heads.forgery.mllm``     FakeReasoning, FakeReasoningProcessor, official checkpoint loading
* ``heads.forgery.prompt``   the llava_v1 prompt, the staged answer format, conclusion parsing
* ``heads.forgery.data``     MMFR annotations, image folders, the synthetic real-vs-generated set reader
* ``heads.forgery.baselines`` UnivFD, NPR, training augmentation
* ``heads.forgery.metrics``  accuracy (real / fake / all), AP, BLEU-1, ROUGE-L, CSS per generator and overall
* ``heads.forgery.tiny``     download-free tiny builds for tests and the CPU demo
"""

from .encoder import DualBranchEncoder, FakeReasoningImageProcessor, OpenCLIPTokens, TimmFeatureTokens, TimmViTTokens
from .fusion import ForgeryAwareFusion, convert_official_fusion_state_dict
from .mapper import ClassificationProbabilityMapper
from .mllm import FakeReasoning, FakeReasoningProcessor, ForgeryVerdict

__all__ = [
    "ClassificationProbabilityMapper",
    "DualBranchEncoder",
    "FakeReasoning",
    "FakeReasoningImageProcessor",
    "FakeReasoningProcessor",
    "ForgeryAwareFusion",
    "ForgeryVerdict",
    "OpenCLIPTokens",
    "TimmFeatureTokens",
    "TimmViTTokens",
    "convert_official_fusion_state_dict",
]
