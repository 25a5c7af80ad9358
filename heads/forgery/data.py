"""Forgery data: the MMFR annotation formats and an image dataset for the detection heads.

One record per image (:class:`ForgeryAnnotation`): image path, label (0 real / 1 fake), generator, and reasoning over
the five MMFR attributes (lighting and shadows, edges, texture, image quality, semantic rationality), as a dict
``{attribute: text or None}`` like the official annotation files.

Readers:

* :func:`read_annotations`: this project's JSON-lines format (written by ``tools/make_forgery_set.py``)::

      {"image": "fake/bilinear/000.png", "label": "fake", "generator": "bilinear",
       "reasoning": {"Irregular Image Edges": "...", ...}}

  ``label`` is "real"/"fake" or 0/1; ``image`` is relative to the file's folder (or absolute).
* :func:`read_mmfr_evaluation_set`: an official MMFR evaluation folder (``<generator>/0_real``, ``1_fake`` and
  ``<generator>_reasoning.json`` mapping ``"<generator>/1_fake/x.png"`` to its attribute dict; official eval.py).
* :func:`read_mmfr_cot`: the official training file ``forgery_reasoning_cot.json`` (LLaVA conversations; the label
  comes from the answer's ``<CONCLUSION>``, as official train.py does).

Bad records raise :class:`AnnotationError` naming the file, the record and the missing field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .prompt import build_response, parse_conclusion

__all__ = [
    "AnnotationError",
    "ForgeryAnnotation",
    "ForgeryImageDataset",
    "load_rgb",
    "read_annotations",
    "read_mmfr_cot",
    "read_mmfr_evaluation_set",
    "write_annotations",
]

LABELS = {"real": 0, "fake": 1, 0: 0, 1: 1}


class AnnotationError(ValueError):
    """A forgery annotation is unusable; the message names the file, the record and the field."""


@dataclass
class ForgeryAnnotation:
    image_path: Path
    label: int
    generator: str
    reasoning: dict[str, str | None] = field(default_factory=dict)
    response: str | None = None  # a full staged answer, when the source has one (CoT training file)

    @property
    def reasoning_text(self) -> str:
        """Attribute texts joined in sorted attribute order, None skipped (official eval.py ground truth)."""
        return " ".join(self.reasoning[key] for key in sorted(self.reasoning) if self.reasoning[key] is not None)

    def target_response(self) -> str:
        """The answer to train on: the source's own, or one built from the reasoning and the label."""
        if self.response is not None:
            return self.response
        if not self.reasoning_text:
            raise AnnotationError(f"{self.image_path}: no reasoning text to build an answer from")
        return build_response(self.reasoning_text, self.label)


def _label(value, where: str) -> int:
    if value is None:
        raise AnnotationError(f"{where}: missing 'label' (expected 'real' / 'fake' or 0 / 1)")
    key = value.lower() if isinstance(value, str) else value
    if isinstance(key, bool) or key not in LABELS:
        raise AnnotationError(f"{where}: label {value!r} is not 'real' / 'fake' / 0 / 1")
    return LABELS[key]


def read_annotations(path: str | Path) -> list[ForgeryAnnotation]:
    """This project's JSON-lines annotations; image paths resolved against the file's folder."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as error:
            raise AnnotationError(f"{where}: not valid JSON ({error})") from error
        if "image" not in raw:
            raise AnnotationError(f"{where}: missing 'image' (the image path)")
        reasoning = raw.get("reasoning") or {}
        if not isinstance(reasoning, dict):
            raise AnnotationError(f"{where}: 'reasoning' must be an {{attribute: text}} object")
        response = raw.get("response")
        if response is not None:
            parse_conclusion(response)  # a staged answer must end with its conclusion
        records.append(ForgeryAnnotation(path.parent / raw["image"], _label(raw.get("label"), where),
                                         str(raw.get("generator", "unknown")), reasoning, response))
    if not records:
        raise AnnotationError(f"{path}: no annotations")
    return records


def write_annotations(path: str | Path, annotations: list[ForgeryAnnotation]) -> None:
    path = Path(path)
    with path.open("w") as handle:
        for record in annotations:
            image = record.image_path
            try:
                image = image.relative_to(path.parent)
            except ValueError:
                pass
            row = {"image": str(image), "label": ("real", "fake")[record.label], "generator": record.generator,
                   "reasoning": record.reasoning}
            if record.response is not None:
                row["response"] = record.response
            handle.write(json.dumps(row) + "\n")


def read_mmfr_evaluation_set(folder: str | Path) -> list[ForgeryAnnotation]:
    """One official MMFR evaluation set: ``<folder>/<name>_reasoning.json`` + ``0_real`` / ``1_fake`` images."""
    folder = Path(folder)
    generator = folder.name
    annotation_file = folder / f"{generator}_reasoning.json"
    if not annotation_file.is_file():
        raise AnnotationError(f"{annotation_file} not found; an MMFR evaluation set holds <name>_reasoning.json")
    records = []
    for image_name, attributes in json.loads(annotation_file.read_text()).items():
        if "0_real" in image_name:
            label = 0
        elif "1_fake" in image_name:
            label = 1
        else:
            raise AnnotationError(f"{annotation_file}: {image_name!r} has no label (neither '0_real' nor '1_fake')")
        records.append(ForgeryAnnotation(folder.parent / image_name, label, generator, dict(attributes or {})))
    return records


def read_mmfr_cot(path: str | Path, image_folder: str | Path) -> list[ForgeryAnnotation]:
    """The official CoT training file (LLaVA conversations); label parsed from the answer's conclusion."""
    path = Path(path)
    records = []
    for index, item in enumerate(json.loads(path.read_text())):
        where = f"{path}[{index}]"
        if "image" not in item or len(item.get("conversations", [])) < 2:
            raise AnnotationError(f"{where}: needs 'image' and a human/gpt 'conversations' pair")
        answer = item["conversations"][1]["value"]
        try:
            label = parse_conclusion(answer)
        except ValueError as error:
            raise AnnotationError(f"{where}: {error}") from error
        records.append(ForgeryAnnotation(Path(image_folder) / item["image"], label, "train", {}, answer))
    return records


def load_rgb(path: str | Path, min_side: int = 16) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3); files in other modes are decoded to RGB as the official
    loaders do (``Image.open(p).convert('RGB')``); images smaller than ``min_side`` are refused."""
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))
    if min(array.shape[:2]) < min_side:
        raise ValueError(f"{path}: {array.shape[1]}x{array.shape[0]} px is below min_side={min_side}")
    return array


class ForgeryImageDataset(torch.utils.data.Dataset):
    """(image tensor, label) pairs for the detection heads; ``transform`` maps an RGB uint8 array to a tensor."""

    def __init__(self, annotations: list[ForgeryAnnotation], transform, min_side: int = 16):
        self.annotations = annotations
        self.transform = transform
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int):
        record = self.annotations[index]
        return self.transform(load_rgb(record.image_path, self.min_side)), record.label
