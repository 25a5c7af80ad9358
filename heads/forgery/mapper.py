"""Classification Probability Mapper: the language model's own next-token logits for 'real' and 'fake', read right
after the conclusion prompt ("... This image is"), divided by a temperature, give P(fake).

Official (PRIS-CV/FakeReasoning ``llava/train/llava_trainer.py``, ``ce_loss``): temperature 10, cross-entropy on
the two-way logits, added to the LM loss with weight 1 each. The official code finds the position by matching the
*predicted* (argmax) tokens against the prompt's ids and drops samples whose prediction does not match; here the
position comes from the ground-truth tokens (teacher forcing), so every sample with a conclusion contributes, and
inference also returns the probability (the official evaluation parses the generated text instead).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .prompt import ANSWER_WORDS, CONCLUSION_PROMPT

__all__ = ["ClassificationProbabilityMapper", "answer_token_ids", "token_at_char"]

PAPER_TEMPERATURE = 10.0


def token_at_char(offsets: list[tuple[int, int]], char_index: int) -> int:
    """Index of the token whose character span covers ``char_index`` (fast-tokenizer offsets)."""
    for index, (start, end) in enumerate(offsets):
        if start <= char_index < end:
            return index
    raise ValueError(f"no token covers character {char_index}")


def answer_token_ids(tokenizer) -> tuple[int, int]:
    """Ids of the 'real' and 'fake' tokens as they follow the conclusion prompt in this tokenizer.

    Each word must be one token there (true for LLaMA/Vicuna: '▁real', '▁fake'); otherwise the mapper's two-way
    softmax would compare word pieces, so this raises.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("the probability mapper needs a fast tokenizer (character offsets); load it with use_fast=True")
    ids = []
    for word in ANSWER_WORDS:
        text = f"{CONCLUSION_PROMPT} {word}."
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        index = token_at_char(encoded["offset_mapping"], len(CONCLUSION_PROMPT) + 1)
        token_id = encoded["input_ids"][index]
        piece = tokenizer.decode([token_id]).strip()
        if piece != word:
            raise ValueError(
                f"in this tokenizer {word!r} after the conclusion prompt is not one token (got piece {piece!r}); "
                "the mapper needs single-token answer words"
            )
        ids.append(token_id)
    if ids[0] == ids[1]:
        raise ValueError("'real' and 'fake' map to the same token id")
    return ids[0], ids[1]


class ClassificationProbabilityMapper:
    """Two-way logits (real, fake) / T at given positions of the LM logits; P(fake) and the cross-entropy on it."""

    def __init__(self, real_token_id: int, fake_token_id: int, temperature: float = PAPER_TEMPERATURE):
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.token_ids = (int(real_token_id), int(fake_token_id))
        self.temperature = float(temperature)

    @classmethod
    def from_tokenizer(cls, tokenizer, temperature: float = PAPER_TEMPERATURE) -> ClassificationProbabilityMapper:
        return cls(*answer_token_ids(tokenizer), temperature=temperature)

    def binary_logits(self, lm_logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``lm_logits`` (B, L, V), ``positions`` (B,) index of the logits that predict the answer word -> (B, 2)."""
        batch = torch.arange(lm_logits.shape[0], device=lm_logits.device)
        at_answer = lm_logits[batch, positions.to(lm_logits.device)]
        return at_answer[:, list(self.token_ids)] / self.temperature

    def probability_fake(self, binary_logits: torch.Tensor) -> torch.Tensor:
        return binary_logits.float().softmax(dim=-1)[:, 1]

    def loss(self, binary_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(binary_logits.float(), labels.to(binary_logits.device).long())
