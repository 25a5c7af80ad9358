"""A run folder written by ``tools/forgery_train.py``, read back as a ready model: what ``tools/forgery_eval.py`` and
``zoo forgery check`` load (this module ships with the package; the training tools do not).

A run folder holds ``run.json`` (``{"args": {"head", "tiny", "image_size", ...}, "summary": {...}}``) and the weights:

* UnivFD / NPR: ``model.safetensors``, the whole state dict (a tiny UnivFD's random frozen CLIP included), loaded
  strictly;
* FakeReasoning: ``trainable.safetensors``, the trained part (LoRA, projectors, fusion), loaded over the frozen
  branches and LM it was trained on; for a ``--tiny`` run also ``responses.json`` (the texts its word-level tokenizer is
  built from). The frozen parts of a tiny run are seeded random weights, rebuilt the same way here.

Every problem with a folder raises :class:`RunFolderError` naming the folder, what is wrong and what a good folder has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "HEADS",
    "ForgeryRun",
    "ImageVerdict",
    "RunFolderError",
    "build_detector",
    "build_fakereasoning",
    "load_run",
]

HEADS = ("npr", "univfd", "fakereasoning")
RUN_FILE = "run.json"
DETECTOR_WEIGHTS = "model.safetensors"
FAKEREASONING_WEIGHTS = "trainable.safetensors"
TINY_RESPONSES = "responses.json"
TINY_LORA = {"r": 8, "alpha": 16, "dropout": 0.0}  # a tiny run's LoRA (tools/forgery_train.py --tiny --lm-training lora)
LM_TRAINING = ("lora", "full")


class RunFolderError(ValueError):
    """A run folder that cannot be loaded; the message names the folder and the fix."""


def build_detector(head: str, tiny: bool, image_size: int) -> nn.Module:
    """UnivFD or NPR as ``tools/forgery_train.py`` builds it (weights untrained; a tiny UnivFD's CLIP is seeded)."""
    from .baselines import NPR, UnivFD

    if head == "npr":
        return NPR()
    if head == "univfd":
        if not tiny:
            return UnivFD.from_pretrained(fc_weights=None)  # the linear layer trains from scratch, as in the paper
        import open_clip

        from .tiny import tiny_univfd_clip_config

        torch.manual_seed(0)
        return UnivFD(open_clip.CLIP(**tiny_univfd_clip_config(image_size=image_size)))
    raise ValueError(f"unknown detector {head!r}; choose from {HEADS[:2]}")


def build_fakereasoning(tiny: bool, image_size: int, responses: list[str] | None = None,
                        lm_training: str | None = None):
    """FakeReasoning set up for training as ``tools/forgery_train.py`` does it: the tiny random build (its tokenizer
    covers ``responses``) or the paper's branches and released weights (downloads).

    ``lm_training``: ``lora`` (the paper's recipe for a pretrained LM; the default without ``tiny``) or ``full``
    (every LM weight trains; the default for the tiny build, whose LM weights are random). Runs from before this
    choice was recorded used LoRA; their run.json has no ``lm_training`` and :func:`load_run` passes ``lora``.
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

    model = build_official_fakereasoning().float()
    return model.enable_lora() if lm_training == "lora" else model.enable_full_training()


@dataclass
class ImageVerdict:
    """What a run says about one image: P(fake) and, for FakeReasoning, the generated text and its reasoning part."""

    p_fake: float
    text: str | None = None
    reasoning: str | None = None
    conclusion_in_text: bool | None = None


@dataclass
class ForgeryRun:
    """A loaded run: the head's name, the model (eval mode), and the input size it was trained at."""

    folder: Path
    head: str
    model: nn.Module
    image_size: int
    train_args: dict

    @property
    def min_side(self) -> int:
        """The smallest image side this run reads (FakeReasoning's processor refuses smaller images)."""
        if self.head == "fakereasoning":
            return self.model.processor.image_processor.min_side
        return 16

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 (H, W, 3) -> the tensor the model reads: the detectors' evaluation transform (centre crop at the
        training size, no resampling) or FakeReasoning's processor (pad to square, resize)."""
        if self.head == "fakereasoning":
            return self.model.processor.image_processor(image)
        from .baselines import evaluation_transform

        if not hasattr(self, "_transform"):
            self._transform = evaluation_transform(self.image_size, self.model.mean, self.model.std)
        return self._transform(image)

    @torch.no_grad()
    def check(self, images: list[np.ndarray], max_new_tokens: int = 512) -> list[ImageVerdict]:
        """P(fake) for a batch of RGB uint8 images (and the reasoning text for FakeReasoning)."""
        from .prompt import parse_reasoning

        device = next(self.model.parameters()).device
        batch = torch.stack([self.preprocess(image) for image in images]).to(device)
        if self.head != "fakereasoning":
            return [ImageVerdict(float(p)) for p in torch.sigmoid(self.model(batch)).cpu()]
        verdicts = self.model.generate(batch, max_new_tokens=max_new_tokens)
        return [ImageVerdict(v.probability_fake, v.text, parse_reasoning(v.text), v.conclusion_in_text)
                for v in verdicts]


def _read_run_json(folder: Path) -> dict:
    run_file = folder / RUN_FILE
    if not folder.is_dir():
        raise RunFolderError(f"run folder {folder} does not exist; pass the --out folder of tools/forgery_train.py")
    if not run_file.is_file():
        raise RunFolderError(
            f"{folder} has no {RUN_FILE}: not a run of tools/forgery_train.py (its --out folder holds {RUN_FILE} and "
            "the weights)"
        )
    try:
        args = json.loads(run_file.read_text())["args"]
        head = args["head"]
        args["tiny"], args["image_size"] = bool(args["tiny"]), int(args["image_size"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise RunFolderError(
            f"{run_file} is unreadable ({type(error).__name__}: {error}); it must hold {{'args': {{'head', 'tiny', "
            "'image_size', ...}}}} as tools/forgery_train.py writes it"
        ) from error
    if head not in HEADS:
        raise RunFolderError(f"{run_file}: head {head!r} is not one of {', '.join(HEADS)}")
    return args


def _weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / name
    if not path.is_file():
        raise RunFolderError(f"{folder} has {RUN_FILE} but no {name}: the training run did not finish; train again")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise RunFolderError(f"{path} is truncated or corrupt ({error}); train again") from error


def load_run(folder: str | Path, device: str | torch.device = "cpu") -> ForgeryRun:
    """Rebuild the head a run trained and load its weights (strictly for the detectors; for FakeReasoning every
    trained tensor must find its place). Raises :class:`RunFolderError` on a folder that does not fit."""
    folder = Path(folder)
    args = _read_run_json(folder)
    head, tiny, image_size = args["head"], bool(args["tiny"]), int(args["image_size"])
    if head == "fakereasoning":
        responses = None
        if tiny:
            responses_file = folder / TINY_RESPONSES
            if not responses_file.is_file():
                raise RunFolderError(f"{folder}: a tiny FakeReasoning run needs {TINY_RESPONSES} (its tokenizer's "
                                     "texts), which is missing; train again")
            responses = json.loads(responses_file.read_text())
        lm_training = args.get("lm_training") or "lora"
        model = build_fakereasoning(tiny, image_size, responses, lm_training)
        state = _weights(folder, FAKEREASONING_WEIGHTS)
        try:
            _, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as error:  # a tensor of the wrong shape
            raise RunFolderError(f"{folder / FAKEREASONING_WEIGHTS} does not fit the model {RUN_FILE} describes: "
                                 f"{str(error).splitlines()[-1].strip()}") from error
        not_trainable = set(state) - set(model.trainable_parameter_names())
        if unexpected or not_trainable:
            raise RunFolderError(f"{folder / FAKEREASONING_WEIGHTS} holds weights this FakeReasoning (lm_training "
                                 f"{lm_training}) does not train: {sorted(set(unexpected) | not_trainable)[:5]}; "
                                 f"{RUN_FILE}'s lm_training must be the one the run trained with")
    else:
        model = build_detector(head, tiny, image_size)
        try:
            model.load_state_dict(_weights(folder, DETECTOR_WEIGHTS), strict=True)
        except RuntimeError as error:
            summary = " ".join(line.strip() for line in str(error).splitlines()[:3])
            raise RunFolderError(f"{folder / DETECTOR_WEIGHTS} does not fit the {head} head {RUN_FILE} describes: "
                                 f"{summary[:300]}") from error
    model.to(device).eval()
    return ForgeryRun(folder, head, model, image_size, args)
