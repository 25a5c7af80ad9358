"""Pieces every skeleton uses: the official initialisation, the multi-head reshapes and the per-block
``attn_type`` letters."""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import trunc_normal_

__all__ = ["init_weights", "merge_heads", "split_heads", "stage_letters"]


def init_weights(m: nn.Module) -> None:
    """The official models' initialisation (all four skeletons): truncated-normal Linear, unit LayerNorm."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.zeros_(m.bias)
        nn.init.ones_(m.weight)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, heads * d) -> (B, heads, N, d)."""
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def stage_letters(attn_type: str, stage: int, num_stages: int, depth: int, family: str, *, mixed: tuple[str, str],
                  mixed_count: str, letters: dict[str, str] | None = None) -> list[str]:
    """Per-block letters of stage ``stage`` from a family's ``attn_type`` (one letter per stage, official convention).

    A stage's letter holds for all its ``depth`` blocks, except 'M' (mixed): ``mixed[0]`` in the first k blocks (k =
    the number after the ``num_stages`` stage letters, e.g. 'AAMB2'), ``mixed[1]`` after; ``mixed_count`` names what
    k counts in the error for a missing k. With ``letters`` (letter -> meaning), a stage letter that is neither one
    of them nor 'M' raises, naming them; without, the family checks the letters itself.
    """
    letter = attn_type[stage]
    if letter == "M":
        tail = attn_type[num_stages:]
        if not tail.isdigit():
            example = f"{mixed[0] * 2}M{mixed[1]}2"
            raise ValueError(f"{family} attn_type {attn_type!r}: an 'M' stage needs its {mixed_count} block count after "
                             f"the {num_stages} stage letters (e.g. {example!r})")
        return [mixed[0] if i < int(tail) else mixed[1] for i in range(depth)]
    if letters is not None and letter not in letters:
        known = ", ".join(f"{k!r} ({meaning})" for k, meaning in letters.items())
        raise ValueError(f"{family} attn_type letters are {known} or 'M' (mixed), got {letter!r}")
    return [letter] * depth
