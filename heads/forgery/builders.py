"""The forgery heads as ``tools/forgery_train.py`` builds them, before any weights are loaded: the models a run folder
(``attnzoo.tasks.forgery.runs``, which reads the folder and its weights) is rebuilt from.

* UnivFD / NPR (:func:`build_detector`): untrained; a tiny UnivFD's frozen CLIP is seeded random weights;
* FakeReasoning (:func:`build_fakereasoning`): the tiny random build (its word-level tokenizer built from the training
  responses; seeded, so its frozen parts are the same at training and loading time) or the paper's branches and LM,
  with LoRA on the LM or the whole LM trainable.

No file is read here: the released weights a build starts from (FakeReasoning's projectors and fusion) are passed in
as a state dict; ``attnzoo.tasks.forgery.official`` reads them.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HEADS", "LM_TRAINING", "TINY_LORA", "build_detector", "build_fakereasoning"]

HEADS = ("npr", "univfd", "fakereasoning")
TINY_LORA = {"r": 8, "alpha": 16, "dropout": 0.0}  # a tiny run's LoRA (tools/forgery_train.py --tiny --lm-training lora)
LM_TRAINING = ("lora", "full")


def build_detector(head: str, tiny: bool, image_size: int) -> nn.Module:
    """UnivFD or NPR as ``tools/forgery_train.py`` builds it (weights untrained; a tiny UnivFD's CLIP is seeded)."""
    from .baselines import NPR, UnivFD

    if head == "npr":
        return NPR()
    if head == "univfd":
        if not tiny:
            return UnivFD.from_pretrained(fc_state=None)  # the linear layer trains from scratch, as in the paper
        import open_clip

        from .tiny import tiny_univfd_clip_config

        torch.manual_seed(0)
        return UnivFD(open_clip.CLIP(**tiny_univfd_clip_config(image_size=image_size)))
    raise ValueError(f"unknown detector {head!r}; choose from {HEADS[:2]}")


def build_fakereasoning(tiny: bool, image_size: int, responses: list[str] | None = None,
                        lm_training: str | None = None, projector_state: dict[str, torch.Tensor] | None = None):
    """FakeReasoning set up for training as ``tools/forgery_train.py`` does it: the tiny random build (its tokenizer
    covers ``responses``) or the paper's branches and LM (downloads through open_clip, timm and transformers).

    ``lm_training``: ``lora`` (the paper's recipe for a pretrained LM; the default without ``tiny``) or ``full``
    (every LM weight trains; the default for the tiny build, whose LM weights are random). Runs from before this
    choice was recorded used LoRA; their run.json has no ``lm_training`` and ``attnzoo.tasks.forgery.runs.load_run``
    passes ``lora``. ``projector_state`` (paper build only): the released projectors and fusion in the official
    checkpoint's keys (``attnzoo.tasks.forgery.official.read_official_fakereasoning_state``) to start from; without it
    they keep their random initialisation (enough when a run's trained weights replace them).
    """
    lm_training = lm_training or ("full" if tiny else "lora")
    if lm_training not in LM_TRAINING:
        raise ValueError(f"lm_training {lm_training!r} is not one of {', '.join(LM_TRAINING)}")
    if tiny:
        from .tiny import tiny_fakereasoning

        if responses is None:
            raise ValueError("a tiny FakeReasoning needs the responses its tokenizer is built from")
        model = tiny_fakereasoning(responses, image_size=image_size)
        return model.enable_lora(**TINY_LORA) if lm_training == "lora" else model.enable_full_training()
    from .mllm import build_official_fakereasoning

    model = build_official_fakereasoning(projector_state=projector_state).float()
    return model.enable_lora() if lm_training == "lora" else model.enable_full_training()
