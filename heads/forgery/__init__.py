"""Forgery detection and reasoning: FakeReasoning (dual-branch encoder, forgery-aware fusion, probability mapper,
MLLM glue), the UnivFD and NPR baselines, the MMFR annotation format and the metrics table.

Importing this package pulls in torch only; transformers, peft, open_clip, timm, torchmetrics and albumentations are
imported inside the functions that need them.

* ``attnzoo.heads.forgery.fusion``   ForgeryAwareFusion (+ official key conversion)
* ``attnzoo.heads.forgery.encoder``  DualBranchEncoder, branch adapters (open_clip, timm ViT, any features_only backbone)
* ``attnzoo.heads.forgery.mapper``   ClassificationProbabilityMapper
* ``attnzoo.heads.forgery.mllm``     FakeReasoning, FakeReasoningProcessor, official checkpoint loading
* ``attnzoo.heads.forgery.prompt``   the llava_v1 prompt, the staged answer format, conclusion parsing
* ``attnzoo.heads.forgery.data``     MMFR annotations, image folders, the synthetic real-vs-generated set reader
* ``attnzoo.heads.forgery.baselines`` UnivFD, NPR, training augmentation
* ``attnzoo.heads.forgery.metrics``  accuracy (real / fake / all), AP, BLEU-1, ROUGE-L, CSS per generator and overall
* ``attnzoo.heads.forgery.tiny``     download-free tiny builds for tests and the CPU demo
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
