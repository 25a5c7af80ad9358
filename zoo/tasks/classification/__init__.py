"""Image classification end to end, on timm's building blocks: the machinery behind ``zoo validate``,
``zoo train`` and ``zoo predict``.

- ``datasets``: find and check an ImageFolder, map its classes to a model's outputs.
- ``models``: which weights a verb runs (hub folder, card, checkpoint), class names, backbone-only loading.
- ``evaluation``: the top-1 / top-5 loop, exact across ranks.
- ``distributed``: one process or many under torchrun (gloo on the CPU, NCCL on CUDA).
- ``validation`` / ``prediction``: ``zoo validate`` / ``zoo predict`` as functions.
- ``training``: the fine-tuning loop; ``runs``: the classification run folder it writes (``zoo train --out RUN``: a
  hub folder + train_state.pth + metrics.jsonl; not the forgery run folder of ``attnzoo.tasks.forgery``).
"""

from .datasets import (
    DatasetError,
    ImageFolderScan,
    build_dataset,
    class_to_index_for_model,
    find_split,
    scan_image_folder,
)
from .distributed import Processes, start_processes, stop_processes, sum_across_ranks
from .evaluation import AMP_DTYPES, EvalResult, autocast, evaluate, make_eval_loader
from .models import class_names, classifier_prefixes, is_model_folder, load_backbone_weights, load_classifier

__all__ = [
    "AMP_DTYPES",
    "DatasetError",
    "EvalResult",
    "ImageFolderScan",
    "Processes",
    "autocast",
    "build_dataset",
    "class_names",
    "class_to_index_for_model",
    "classifier_prefixes",
    "evaluate",
    "find_split",
    "is_model_folder",
    "load_backbone_weights",
    "load_classifier",
    "make_eval_loader",
    "scan_image_folder",
    "start_processes",
    "stop_processes",
    "sum_across_ranks",
]
