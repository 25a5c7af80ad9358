"""``zoo forgery check`` as a library: P(fake) and a verdict per image from a forgery run (:mod:`.runs`).

Each image is read as the run's evaluation reads it (the detectors: centre crop at the training size; FakeReasoning:
pad to square and resize), and gets P(fake) = sigmoid(logit) for the detectors, or for FakeReasoning the generated
reasoning text and P(fake) from the classification probability mapper (the LM's 'real' / 'fake' logits after "This
image is", over the temperature). The verdict is ``fake`` when P(fake) > the threshold (0.5, as the evaluation).
Inputs follow ``attnzoo.tasks.images``' rule (a folder contributes its image files, not its subfolders; a file that is not
an image, does not decode, or has more than ``max_pixels`` pixels is skipped with a warning naming it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..images import DEFAULT_MAX_PIXELS, batches, read_rgb_images
from .runs import ForgeryRun, ImageVerdict

__all__ = ["CheckedImage", "check_images"]


@dataclass
class CheckedImage:
    """One image's answer: its path, the run's verdict (P(fake), FakeReasoning's text) and the thresholded label."""

    path: Path
    verdict: ImageVerdict
    label: str  # "fake" or "real"
    head: str

    @property
    def p_fake(self) -> float:
        return self.verdict.p_fake

    def row(self) -> dict[str, Any]:
        """The JSON object ``zoo forgery check --json`` prints for this image."""
        row = {"image": str(self.path), "p_fake": self.verdict.p_fake, "verdict": self.label, "head": self.head}
        if self.head == "fakereasoning":
            row.update(reasoning=self.verdict.reasoning, text=self.verdict.text,
                       conclusion_in_text=self.verdict.conclusion_in_text)
        return row


def check_images(run: ForgeryRun, inputs: Sequence[str | Path], *, threshold: float = 0.5, batch_size: int = 16,
                 max_new_tokens: int = 512, warn: Callable[[str], None] = lambda message: None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Iterator[CheckedImage]:
    """P(fake) and the verdict for every image of ``inputs`` (files and folders), in order, ``batch_size`` images per
    forward pass; yielded as each batch is done. ``warn`` gets one line per skipped input; no readable image at all
    raises ``UserError`` (``attnzoo.tasks.images``). ``max_new_tokens``: FakeReasoning's longest reasoning text;
    ``max_pixels``: the reader's pixel limit (None or 0: none)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a probability in [0, 1], got {threshold}")
    images = read_rgb_images(inputs, warn, min_side=run.min_side, max_pixels=max_pixels)
    for batch in batches(images, batch_size):
        paths, arrays = zip(*batch)
        for path, verdict in zip(paths, run.check(list(arrays), max_new_tokens=max_new_tokens), strict=True):
            yield CheckedImage(path, verdict, "fake" if verdict.p_fake > threshold else "real", run.head)
