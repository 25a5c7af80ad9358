"""A run folder written by ``tools/forgery_train.py``, read back as a ready model: what ``tools/forgery_eval.py`` and
``zoo forgery check`` load.

A run folder (``FORGERY_RUN``) holds ``run.json`` (``{"args": {"head", "tiny", "image_size", ...}, "summary": {...}}``)
and the weights:

* UnivFD / NPR: ``model.safetensors``, the whole state dict (a tiny UnivFD's random frozen CLIP included), loaded
  strictly;
* FakeReasoning: ``trainable.safetensors``, the trained part (LoRA or the whole LM, projectors, fusion), loaded over
  the frozen branches and LM it was trained on: every trainable tensor must be in the file, and nothing else (the
  frozen parts are not in it); for a ``--tiny`` run also ``responses.json`` (the texts its word-level tokenizer is built
  from). The frozen parts of a tiny run are seeded random weights, rebuilt the same way here.

The models are built by ``attnzoo.heads.forgery.builders``; the weights are read by ``attnzoo.weights`` (``read_safetensors``: a
truncated or corrupt file raises its ``CheckpointError`` naming the file) and a misfit is reported by its one message
(``describe_misfit``: every missing, unexpected and misshapen key). Every other problem with a folder raises
:class:`ForgeryRunError` naming the folder, what is wrong and what a good folder has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...errors import ZooError
from ...weights import compare_state_dicts, describe_misfit, read_safetensors

__all__ = [
    "DETECTOR_WEIGHTS",
    "FAKEREASONING_WEIGHTS",
    "RUN_FILE",
    "TINY_RESPONSES",
    "ForgeryRun",
    "ForgeryRunError",
    "ImageVerdict",
    "load_run",
]

RUN_FILE = "run.json"
DETECTOR_WEIGHTS = "model.safetensors"
FAKEREASONING_WEIGHTS = "trainable.safetensors"
TINY_RESPONSES = "responses.json"


class ForgeryRunError(ZooError):
    """A forgery run folder that cannot be loaded; the message names the folder and the fix."""


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
        from attnzoo.heads.forgery.baselines import evaluation_transform

        if not hasattr(self, "_transform"):
            self._transform = evaluation_transform(self.image_size, self.model.mean, self.model.std)
        return self._transform(image)

    @torch.no_grad()
    def check(self, images: list[np.ndarray], max_new_tokens: int = 512) -> list[ImageVerdict]:
        """P(fake) for a batch of RGB uint8 images (and the reasoning text for FakeReasoning)."""
        from attnzoo.heads.forgery.prompt import parse_reasoning

        device = next(self.model.parameters()).device
        batch = torch.stack([self.preprocess(image) for image in images]).to(device)
        if self.head != "fakereasoning":
            return [ImageVerdict(float(p)) for p in torch.sigmoid(self.model(batch)).cpu()]
        verdicts = self.model.generate(batch, max_new_tokens=max_new_tokens)
        return [ImageVerdict(v.probability_fake, v.text, parse_reasoning(v.text), v.conclusion_in_text)
                for v in verdicts]


def _read_run_json(folder: Path) -> dict:
    from attnzoo.heads.forgery.builders import HEADS

    run_file = folder / RUN_FILE
    if not folder.is_dir():
        raise ForgeryRunError(f"run folder {folder} does not exist; pass the --out folder of tools/forgery_train.py")
    if not run_file.is_file():
        raise ForgeryRunError(
            f"{folder} has no {RUN_FILE}: not a run of tools/forgery_train.py (its --out folder holds {RUN_FILE} and "
            "the weights)"
        )
    try:
        args = json.loads(run_file.read_text())["args"]
        head = args["head"]
        args["tiny"], args["image_size"] = bool(args["tiny"]), int(args["image_size"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ForgeryRunError(
            f"{run_file} is unreadable ({type(error).__name__}: {error}); it must hold {{'args': {{'head', 'tiny', "
            "'image_size', ...}}}} as tools/forgery_train.py writes it"
        ) from error
    if head not in HEADS:
        raise ForgeryRunError(f"{run_file}: head {head!r} is not one of {', '.join(HEADS)}")
    return args


def _weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    path = folder / name
    if not path.is_file():
        raise ForgeryRunError(f"{folder} has {RUN_FILE} but no {name}: the training run did not finish; train again")
    return read_safetensors(path)  # CheckpointError (a ZooError) naming the file when it is truncated or corrupt


def _tiny_responses(folder: Path) -> list[str]:
    responses_file = folder / TINY_RESPONSES
    if not responses_file.is_file():
        raise ForgeryRunError(f"{folder}: a tiny FakeReasoning run needs {TINY_RESPONSES} (its tokenizer's texts), "
                              "which is missing; train again")
    try:
        responses = json.loads(responses_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ForgeryRunError(f"{responses_file} is unreadable ({error}); train again") from error
    if not (isinstance(responses, list) and all(isinstance(r, str) for r in responses)):
        raise ForgeryRunError(f"{responses_file} must hold a list of texts (the training responses); train again")
    return responses


def _load_fakereasoning(folder: Path, args: dict) -> nn.Module:
    from attnzoo.heads.forgery.builders import build_fakereasoning

    tiny, image_size = args["tiny"], args["image_size"]
    responses = _tiny_responses(folder) if tiny else None
    lm_training = args.get("lm_training") or "lora"
    model = build_fakereasoning(tiny, image_size, responses, lm_training)
    path = folder / FAKEREASONING_WEIGHTS
    state = _weights(folder, FAKEREASONING_WEIGHTS)
    trainable = set(model.trainable_parameter_names())
    # Only the trained tensors are expected: the frozen parts are rebuilt, not stored.
    expected = {k: v for k, v in model.state_dict().items() if k in trainable}
    misfit = compare_state_dicts(state, expected)
    if not misfit.fits:
        raise ForgeryRunError(describe_misfit(
            str(path), f"the FakeReasoning (lm_training {lm_training}) {RUN_FILE} describes", misfit,
            allowed="the frozen parts are not in the file: only the trainable tensors are expected",
            fix=f"{RUN_FILE}'s lm_training must be the one the run trained with; otherwise train again.",
        ))
    model.load_state_dict(state, strict=False)
    return model


def _load_detector(folder: Path, args: dict) -> nn.Module:
    from attnzoo.heads.forgery.builders import build_detector

    head = args["head"]
    model = build_detector(head, args["tiny"], args["image_size"])
    state = _weights(folder, DETECTOR_WEIGHTS)
    misfit = compare_state_dicts(state, model.state_dict())
    if not misfit.fits:
        raise ForgeryRunError(describe_misfit(
            str(folder / DETECTOR_WEIGHTS), f"the {head} head {RUN_FILE} describes", misfit,
            fix=f"The weights and {RUN_FILE} must come from the same run of tools/forgery_train.py; train again.",
        ))
    model.load_state_dict(state, strict=True)
    return model


def load_run(folder: str | Path, device: str | torch.device = "cpu") -> ForgeryRun:
    """Rebuild the head a run trained and load its weights (strictly for the detectors; for FakeReasoning exactly the
    trainable tensors). Raises :class:`ForgeryRunError` on a folder that does not fit (a misfit names every key), and
    ``attnzoo.weights.CheckpointError`` on a weights file that is truncated or corrupt (both subclass ``ZooError``)."""
    folder = Path(folder)
    args = _read_run_json(folder)
    if args["head"] == "fakereasoning":
        model = _load_fakereasoning(folder, args)
    else:
        model = _load_detector(folder, args)
    model.to(device).eval()
    return ForgeryRun(folder, args["head"], model, args["image_size"], args)
