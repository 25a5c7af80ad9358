"""Probes for frozen backbones: linear, multi-head attentive, efficient (EP) and moment (MP) probing.

Every probe takes the token map a backbone gives (``tokens``: batch x tokens x channels; a ViT's patch tokens, or a
hierarchical model's last feature map flattened) and, where it uses one, a ``pooled`` vector (batch x channels: the
class token where the model has one, else the mean token; the mean token when left out), and returns class logits.

- :class:`LinearProbe`: MAE's linear probing: ``BatchNorm1d(affine=False, eps=1e-6)`` then a linear classifier on the
  pooled vector (the weight drawn from a truncated normal, std 0.01, bias zero, as MAE's ``main_linprobe.py``).
- :class:`AttentiveProbe`: the multi-head attentive probe of MAE-style / V-JEPA evaluation (V-JEPA's
  ``AttentivePooler``): learned query tokens cross-attend to the layer-normed tokens (query, key/value and output
  projections), a residual MLP block, then (as the EP paper's protocol puts after every pooling) a non-affine
  BatchNorm and the linear classifier on the mean of the queries.
- :class:`EfficientProbe`: "Attention, Please! Revisiting Attentive Probing for Masked Image Modeling"
  (billpsomas/efficient-probing ``poolings/ep.py`` + ``probe_heads.py``): ``num_queries`` learned queries attend to the
  raw tokens (no query or key projection), each query pools its own slice of one value projection, the slices are
  concatenated (``channels // d_out`` wide), then the non-affine BatchNorm and a linear classifier. One head, as every
  published EP result (the official forward squeezes the head axis, so it only runs with one).
- :class:`MomentProbe`: "Tuning Pre-trained Model via Moment Probing" (mingzeG/Moment-Probing,
  ``models/representation/MP.py``, ``Moment_Probing_ViT``): a linear classifier on the first-order moment (the pooled
  vector) averaged with one on the second-order moments: the tokens projected to ``hidden_dim``, split into
  ``num_heads`` groups, each group layer-normed (one shared LayerNorm), the cross-covariance of neighbouring groups
  (MHC3, ``cross_type='near'``; also ``'n/2'`` and ``'cn2'`` as the official code), each covariance L2-normalised
  over its first axis (each column), then two stride-2 3x3 convolutions with a GELU between them, flattened into the second classifier.
  The official code fixes the convolution to 3 channels and the classifier to 2883 inputs (4 heads, hidden 512); here
  both follow from ``num_heads``, ``hidden_dim`` and ``cross_type`` and equal the official ones at its defaults.
  PSRP (the official MP+ partial re-parameterisation of the backbone's MLP blocks) is left out: it changes the
  backbone's own forward, so it cannot run on cached frozen features.

Parameter names follow the official code where there is one (MP: ``proj``, ``ln``, ``classifier1``,
``classifier2``, ``downblocks``; EP's value projection ``v``), so official states map across by a plain rename.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PROBES", "AttentiveProbe", "EfficientPooling", "EfficientProbe", "LinearProbe", "MomentProbe", "build_probe",
           "convert_official_ep_state_dict", "count_parameters"]

BN_EPS = 1e-6  # MAE's and EP's non-affine BatchNorm before the classifier


def _pooled(tokens: torch.Tensor, pooled: torch.Tensor | None) -> torch.Tensor:
    return tokens.mean(dim=1) if pooled is None else pooled


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of a probe (BatchNorm's running statistics are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class LinearProbe(nn.Module):
    """MAE's linear probe: non-affine BatchNorm, then a linear classifier, on the pooled vector."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=BN_EPS)
        self.classifier = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, tokens: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.norm(_pooled(tokens, pooled)))


class _CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, q_len, dim = queries.shape
        n = tokens.shape[1]
        head_dim = dim // self.num_heads
        q = self.q(queries).reshape(b, q_len, self.num_heads, head_dim).transpose(1, 2)
        k, v = self.kv(tokens).reshape(b, n, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, q_len, dim))


class AttentiveProbe(nn.Module):
    """Multi-head attentive probe (V-JEPA's attentive pooler, one cross-attention block) + BN + linear classifier."""

    def __init__(self, dim: int, num_classes: int, num_heads: int = 16, num_queries: int = 1, mlp_ratio: float = 4.0):
        super().__init__()
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, dim))
        nn.init.trunc_normal_(self.query_tokens, std=0.02)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=BN_EPS)
        self.classifier = nn.Linear(dim, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        q = self.query_tokens.expand(tokens.shape[0], -1, -1)
        q = q + self.attn(q, self.norm1(tokens))
        q = q + self.mlp(self.norm2(q))
        return self.classifier(self.norm(q.mean(dim=1)))


class EfficientPooling(nn.Module):
    """EP's pooling: ``num_queries`` learned queries over the raw tokens, each pooling its slice of one value
    projection (official ``EfficientProbing`` with one head); output ``dim // d_out`` wide."""

    def __init__(self, dim: int, num_queries: int = 32, d_out: int = 1, qkv_bias: bool = False,
                 qk_scale: float | None = None):
        super().__init__()
        if dim % d_out or (dim // d_out) % num_queries:
            raise ValueError(f"EP needs dim // d_out divisible by num_queries; got dim {dim}, d_out {d_out}, "
                             f"num_queries {num_queries}")
        self.num_queries = num_queries
        self.d_out = d_out
        self.scale = qk_scale or dim ** -0.5
        self.v = nn.Linear(dim, dim // d_out, bias=qkv_bias)
        self.queries = nn.Parameter(torch.randn(1, num_queries, dim) * 0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, _ = tokens.shape
        attn = ((self.queries * self.scale) @ tokens.transpose(1, 2)).softmax(dim=-1)  # (B, Q, N)
        v = self.v(tokens).reshape(b, n, self.num_queries, -1).transpose(1, 2)  # (B, Q, N, C' / Q)
        return (attn.unsqueeze(2) @ v).reshape(b, -1)  # query q's weights pool slice q; slices concatenated


class EfficientProbe(nn.Module):
    """EP: efficient pooling, non-affine BatchNorm, linear classifier (the official probe head)."""

    def __init__(self, dim: int, num_classes: int, num_queries: int = 32, d_out: int = 1):
        super().__init__()
        self.pool = EfficientPooling(dim, num_queries=num_queries, d_out=d_out)
        self.norm = nn.BatchNorm1d(dim // d_out, affine=False, eps=BN_EPS)
        self.classifier = nn.Linear(dim // d_out, num_classes)

    def forward(self, tokens: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.norm(self.pool(tokens)))


def _cross_pairs(cross_type: str, num_heads: int) -> tuple[list[tuple[int, int]], bool]:
    """The head pairs whose cross-covariances MP takes, and whether each is L2-normalised (official ViT variant)."""
    if cross_type == "near":
        return [(i, i + 1) for i in range(num_heads - 1)], True
    if cross_type == "n/2":
        half = num_heads // 2
        return [(i, i + half) for i in range(half)], True
    if cross_type == "cn2":
        return [(i, j) for i in range(num_heads - 1) for j in range(i + 1, num_heads)], False
    raise ValueError(f"cross_type {cross_type!r}: choose from 'near', 'n/2', 'cn2'")


def _conv_out(size: int) -> int:
    return (size - 3) // 2 + 1  # 3x3, stride 2, no padding


class MomentProbe(nn.Module):
    """MP: first-order (pooled vector) and second-order (MHC3 cross-covariance) classifiers, averaged."""

    def __init__(self, dim: int, num_classes: int, hidden_dim: int = 512, num_heads: int = 4,
                 cross_type: str = "near"):
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        self.pairs, self.l2norm = _cross_pairs(cross_type, num_heads)
        self.num_heads = num_heads
        head_dim = hidden_dim // num_heads
        if _conv_out(_conv_out(head_dim)) < 1:
            raise ValueError(f"hidden_dim // num_heads = {head_dim} is too small for MP's two stride-2 convolutions")
        channels = len(self.pairs)
        self.proj = nn.Linear(dim, hidden_dim)
        self.ln = nn.LayerNorm(head_dim)
        self.classifier1 = nn.Linear(dim, num_classes)
        self.classifier2 = nn.Linear(channels * _conv_out(_conv_out(head_dim)) ** 2, num_classes)
        self.downblocks = nn.ModuleList([nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0, bias=False),
            nn.GELU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0, bias=False),
        )])

    @staticmethod
    def _cross_covariance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # the official Covariance(remove_mean=True): each input's mean over all its entries removed, then a^T b / N
        a = a - a.mean(dim=(1, 2), keepdim=True)
        b = b - b.mean(dim=(1, 2), keepdim=True)
        return a.transpose(1, 2) @ b / a.shape[1]

    def second_order(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.proj(tokens)
        b, n, d = x.shape
        heads = self.ln(x.reshape(b, n, self.num_heads, d // self.num_heads).permute(2, 0, 1, 3))
        covs = []
        for i, j in self.pairs:
            cov = self._cross_covariance(heads[i], heads[j])
            covs.append(F.normalize(cov, dim=1) if self.l2norm else cov)
        x = torch.stack(covs, dim=1)
        for block in self.downblocks:
            x = block(x)
        return x.reshape(b, -1)

    def forward(self, tokens: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        first = self.classifier1(_pooled(tokens, pooled))
        second = self.classifier2(self.second_order(tokens))
        return (first + second) / 2


_EP_OFFICIAL_NAMES = {"0.cls_token": "pool.queries", "0.v.": "pool.v.", "1.": "norm.", "2.": "classifier."}


def convert_official_ep_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official EP probe head's state (``Sequential(EfficientProbing, BatchNorm1d, Linear)``: ``0.cls_token``,
    ``0.v.weight``, ``1.running_mean``, ..., ``2.weight``; a ``head.`` prefix removed) in :class:`EfficientProbe`'s
    names. MP's official names are :class:`MomentProbe`'s own."""
    converted = {}
    for key, value in state_dict.items():
        key = key[len("head."):] if key.startswith("head.") else key
        for old, new in _EP_OFFICIAL_NAMES.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        converted[key] = value
    return converted


PROBES = {"linear": LinearProbe, "attentive": AttentiveProbe, "ep": EfficientProbe, "mp": MomentProbe}


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def build_probe(method: str, dim: int, num_classes: int, **kwargs) -> nn.Module:
    """The probe ``method`` (``linear``, ``attentive``, ``ep``, ``mp``) for ``dim``-channel tokens, with the official
    defaults; where a default does not divide ``dim`` (EP's 32 queries, the attentive probe's 16 heads) the largest
    divisor below it is taken, and MP's ``hidden_dim`` (512, for ViT-B's 768 channels) is at most ``dim`` (at least
    16 per head, so its two convolutions have a map to run on)."""
    if method not in PROBES:
        raise ValueError(f"unknown probe {method!r}; choose from {', '.join(PROBES)}")
    if method == "ep":
        d_out = kwargs.get("d_out", 1)
        kwargs.setdefault("num_queries", _largest_divisor_at_most(dim // d_out, 32))
    if method == "attentive":
        kwargs.setdefault("num_heads", _largest_divisor_at_most(dim, 16))
    if method == "mp":  # the official 512 projects ViT-B's 768 channels down; narrower tokens are not widened
        heads = kwargs.get("num_heads", 4)
        kwargs.setdefault("hidden_dim", min(512, max(heads * 16, dim // heads * heads)))
    return PROBES[method](dim, num_classes, **kwargs)
