"""FakeReasoning's Forgery-Aware Feature Fusion: one cross-attention layer whose logits are biased by DINO's attention.

Queries are the projected CLIP patch tokens (high-level semantics), keys and values the projected DINO patch tokens
(low-level artefacts). The bias is made from DINO's own last-block self-attention map: ``log(A + 1e-6)`` through a
1x1 conv -> GELU -> 1x1 conv over the head axis, added to the cross-attention logits before the softmax. Then the
usual post-norm transformer layer: residual + LayerNorm, FFN (ReLU, hidden = 4x in the paper), residual + LayerNorm.
The output replaces the image tokens spliced into the language model.

Facts from the official code (PRIS-CV/FakeReasoning, ``LLaVA/llava/model/attention/crossattention.py`` and
``net_utils.py``, itself from MCAN): one layer; 16 heads; the bias MLP is 16 -> 32 -> 16 channels; the map's CLS
row and column are dropped before the log; the LayerNorm is ``a * (x - mean) / sqrt(var + eps) + b`` with the biased
variance and eps=1e-6, which is exactly ``nn.LayerNorm(eps=1e-6)``; dropout 0.1 on the attention probabilities and on
both residual branches (and inside the FFN after the ReLU). For LLaVA-1.5-13B the width is 5120, head size 320,
FFN 20480.

Without an attention map (a low-level branch that has none, e.g. a CNN or a BiFormer) the layer runs unbiased: the
official forward does the same when it is called with ``attn_map=None``.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

__all__ = [
    "AttentionBias",
    "ForgeryAwareFusion",
    "convert_official_fusion_state_dict",
]

ATTENTION_LOG_EPS = 1e-6  # official: torch.log(attn_map + 1e-6)


class AttentionBias(nn.Module):
    """Per-head logit bias from an attention map: ``conv1x1(GELU(conv1x1(log(A + 1e-6))))`` over the head axis."""

    def __init__(self, map_heads: int = 16, hidden_channels: int = 32, out_heads: int | None = None):
        super().__init__()
        self.map_heads = map_heads
        self.expand = nn.Conv2d(map_heads, hidden_channels, kernel_size=1)
        self.act = nn.GELU()
        self.reduce = nn.Conv2d(hidden_channels, out_heads or map_heads, kernel_size=1)

    def forward(self, attn_map: torch.Tensor, has_cls_token: bool = True) -> torch.Tensor:
        if attn_map.ndim != 4 or attn_map.shape[1] != self.map_heads or attn_map.shape[-1] != attn_map.shape[-2]:
            raise ValueError(
                f"attention map must be (batch, {self.map_heads} heads, tokens, tokens); got {tuple(attn_map.shape)}. "
                "Pass the low-level branch's last-block self-attention (softmax probabilities), or build the fusion "
                "with map_heads equal to that branch's head count."
            )
        if has_cls_token:
            # The DINO map includes the CLS token; the image tokens the fusion sees do not.
            attn_map = attn_map[:, :, 1:, 1:]
        return self.reduce(self.act(self.expand(torch.log(attn_map + ATTENTION_LOG_EPS))))


class ForgeryAwareFusion(nn.Module):
    """Cross-attention (queries: high-level tokens, keys/values: low-level tokens) + FFN, biased by an attention map.

    Args:
        dim: token width (the language model's hidden size; both branches are projected to it first).
        num_heads: cross-attention heads (16 in the paper).
        ffn_dim: FFN hidden width (4 * dim in the paper).
        dropout: dropout on attention probabilities, residual branches and inside the FFN (0.1 in the paper).
        map_heads: heads of the attention map that makes the bias (DINOv2 ViT-L: 16).
        bias_hidden: hidden channels of the bias MLP (32 in the official code).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 16,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        map_heads: int = 16,
        bias_hidden: int = 32,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"fusion width {dim} is not divisible by its {num_heads} heads")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attention_bias = AttentionBias(map_heads, bias_hidden, out_heads=num_heads)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(dropout)
        self.drop1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        ffn_dim = ffn_dim or 4 * dim
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.drop2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def attention_probs(
        self, queries: torch.Tensor, keys: torch.Tensor, attn_map: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross-attention probabilities (batch, heads, n_queries, n_keys), with the map's bias when given."""
        q = self._heads(self.q_proj(queries))
        k = self._heads(self.k_proj(keys))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        if attn_map is not None:
            bias = self.attention_bias(attn_map)
            if bias.shape[-2:] != scores.shape[-2:]:
                raise ValueError(
                    f"the attention-map bias covers {tuple(bias.shape[-2:])} token pairs but the cross-attention has "
                    f"{tuple(scores.shape[-2:])} (queries x keys): both branches must give the same number of patch "
                    "tokens (same input size and patch size, e.g. 336 px with patch 14 -> 576), or run without a map."
                )
            scores = scores + bias
        return scores.softmax(dim=-1)

    def forward(
        self, queries: torch.Tensor, keys_values: torch.Tensor, attn_map: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``queries`` (B, Nq, dim), ``keys_values`` (B, Nk, dim), ``attn_map`` (B, map_heads, Nk+1, Nk+1) or None."""
        if queries.shape[-1] != self.dim or keys_values.shape[-1] != self.dim:
            raise ValueError(
                f"fusion expects tokens of width {self.dim}; got queries {tuple(queries.shape)} and keys/values "
                f"{tuple(keys_values.shape)}. Project both branches to the language model width first."
            )
        probs = self.attn_drop(self.attention_probs(queries, keys_values, attn_map))
        attended = (probs @ self._heads(self.v_proj(keys_values))).transpose(1, 2).flatten(2)
        x = self.norm1(queries + self.drop1(self.out_proj(attended)))
        return self.norm2(x + self.drop2(self.ffn(x)))


# Official name -> ours. The official module is ``CrossAttention`` (one layer in ModuleLists) with MCAN's MHAtt/FFN/LN.
_OFFICIAL_KEY_RULES = (
    (r"^attention_mlp\.mlp\.0\.", "attention_bias.expand."),
    (r"^attention_mlp\.mlp\.2\.", "attention_bias.reduce."),
    (r"^mhatt\.0\.linear_q\.", "q_proj."),
    (r"^mhatt\.0\.linear_k\.", "k_proj."),
    (r"^mhatt\.0\.linear_v\.", "v_proj."),
    (r"^mhatt\.0\.linear_merge\.", "out_proj."),
    (r"^ffn\.0\.mlp\.fc\.linear\.", "ffn.0."),
    (r"^ffn\.0\.mlp\.linear\.", "ffn.3."),
    (r"^norm\.0\.a_2$", "norm1.weight"),
    (r"^norm\.0\.b_2$", "norm1.bias"),
    (r"^norm\.1\.a_2$", "norm2.weight"),
    (r"^norm\.1\.b_2$", "norm2.bias"),
)


def convert_official_fusion_state_dict(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Official ``CrossAttention`` state (keys after ``prefix``, e.g. ``model.crossattention.``) -> ForgeryAwareFusion.

    Raises on keys it does not know, so a checkpoint from a different module cannot load half-silently.
    """
    converted = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        short = key[len(prefix):]
        for pattern, replacement in _OFFICIAL_KEY_RULES:
            if re.search(pattern, short):
                converted[re.sub(pattern, replacement, short)] = value
                break
        else:
            raise KeyError(
                f"unexpected key {key!r} in an official FakeReasoning fusion state dict (only one layer, "
                "attention_mlp/mhatt/ffn/norm, is known); is this the CrossAttention module's state?"
            )
    if not converted:
        raise KeyError(f"no keys start with {prefix!r}; pass the prefix under which the CrossAttention state lives")
    return converted
