"""Pieces every skeleton uses: the official initialisation and the multi-head reshapes."""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import trunc_normal_

__all__ = ["init_weights", "merge_heads", "split_heads"]


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
