"""FakeReasoning's prompt template and the structure of its answers.

From the official code (PRIS-CV/FakeReasoning): the conversation is LLaVA's ``llava_v1`` template
(``llava/conversation.py``), the question is the one in ``forgery_eval/inference.py`` and ``eval.py``, the image is
one ``<image>`` placeholder before the question, and answers are staged as ``<REASONING>...</REASONING>`` and
``<CONCLUSION>This image is real.|fake.</CONCLUSION>`` (eval.py parses exactly these; the training CoT also has
``<SUMMARY>`` and ``<CAPTION>`` stages, kept when present). The probability mapper reads the logits right after the
conclusion prompt ``This image is`` (official ``llava_trainer.ce_loss``: token pattern "<CONCLUSION> This image is").
"""

from __future__ import annotations

import re

__all__ = [
    "ANSWER_WORDS",
    "CONCLUSION_PROMPT",
    "FORGERY_ATTRIBUTES",
    "AUTHENTIC_ATTRIBUTES",
    "IMAGE_PLACEHOLDER",
    "QUESTION",
    "SYSTEM",
    "MissingConclusionError",
    "build_prompt",
    "build_response",
    "parse_conclusion",
    "parse_reasoning",
    "split_at_conclusion",
]

SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
ROLES = ("USER", "ASSISTANT")
IMAGE_PLACEHOLDER = "<image>"
QUESTION = (
    "Is this image real or fake? Please describe the image, reasoning step-by-step and conclude with "
    "'this image is real' or 'this image is fake'."
)
CONCLUSION_OPEN, CONCLUSION_CLOSE = "<CONCLUSION>", "</CONCLUSION>"
REASONING_OPEN, REASONING_CLOSE = "<REASONING>", "</REASONING>"
CONCLUSION_PROMPT = CONCLUSION_OPEN + "This image is"
ANSWER_WORDS = ("real", "fake")  # index = label: 0 real, 1 fake

# The five attribute pairs the MMFR annotations reason over (mmfr_generation/prompt.py), fake and real wording.
FORGERY_ATTRIBUTES = (
    "Inconsistent Lighting and Shadows",
    "Irregular Image Edges",
    "Anomalous Image Texture",
    "Low Image Quality",
    "Semantic Irrationality",
)
AUTHENTIC_ATTRIBUTES = (
    "Consistent Lighting and Shadows",
    "Smooth and Natural Image Edges",
    "Natural and Consistent Image Texture",
    "High Image Quality",
    "Semantic Rationality",
)


class MissingConclusionError(ValueError):
    """A reasoning text has no ``<CONCLUSION>This image is real|fake.</CONCLUSION>``."""


def build_prompt(question: str = QUESTION, system: str = SYSTEM) -> tuple[str, str]:
    """The llava_v1 prompt split at the image: (text before ``<image>``, text after it up to ``ASSISTANT:``)."""
    return f"{system} {ROLES[0]}: ", f"\n{question} {ROLES[1]}:"


def build_response(reasoning: str, label: int, summary: str | None = None, caption: str | None = None) -> str:
    """The staged answer the model is trained to give, ending in the conclusion the mapper reads."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 (real) or 1 (fake); got {label!r}")
    stages = []
    if summary:
        stages.append(f"<SUMMARY>{summary}</SUMMARY>")
    if caption:
        stages.append(f"<CAPTION>{caption}</CAPTION>")
    stages.append(f"{REASONING_OPEN}{reasoning}{REASONING_CLOSE}")
    stages.append(f"{CONCLUSION_PROMPT} {ANSWER_WORDS[label]}.{CONCLUSION_CLOSE}")
    return " ".join(stages)


_CONCLUSION = re.compile(r"<CONCLUSION>(.*?)</CONCLUSION>", re.DOTALL)
_REASONING = re.compile(r"<REASONING>(.*?)</REASONING>", re.DOTALL)


def parse_conclusion(text: str) -> int:
    """0 (real) or 1 (fake) from ``<CONCLUSION>This image is real|fake.</CONCLUSION>``; raises if absent."""
    match = _CONCLUSION.search(text)
    if match is None:
        raise MissingConclusionError(
            f"no {CONCLUSION_OPEN}...{CONCLUSION_CLOSE} in the reasoning text {text[:120]!r}...; every MMFR answer must "
            f"end with '{CONCLUSION_PROMPT} real.{CONCLUSION_CLOSE}' or '... fake.{CONCLUSION_CLOSE}'"
        )
    content = match.group(1).strip().lower()
    found = [label for label, word in enumerate(ANSWER_WORDS) if f"this image is {word}" in content]
    if len(found) != 1:
        raise MissingConclusionError(f"the conclusion {match.group(1)!r} says neither 'This image is real' nor '... fake'")
    return found[0]


def parse_reasoning(text: str) -> str | None:
    """The text inside ``<REASONING>...</REASONING>``, or None."""
    match = _REASONING.search(text)
    return match.group(1).strip() if match else None


def split_at_conclusion(text: str) -> tuple[str, bool]:
    """Text up to and including the conclusion prompt; appends the prompt when the text has none.

    Returns (prefix ending in "This image is", whether the text already contained the prompt).
    """
    index = text.find(CONCLUSION_PROMPT)
    if index >= 0:
        return text[: index + len(CONCLUSION_PROMPT)], True
    stripped = text.rstrip()
    return f"{stripped} {CONCLUSION_PROMPT}" if stripped else CONCLUSION_PROMPT, False
