"""The BVR transformer of RelationNet++ (Chi et al., NeurIPS 2020): one attention layer per keypoint type.

Queries are the detector's own per-location features (anchor / point positions of one FPN level); keys and values are
the features of a few keypoints (corners, centres) picked by the keypoint head. The attention logits are the
appearance term q.k plus a geometry term: a learned embedding of the key-minus-query offset. The embedding is computed
once per forward on a fixed (2B+1) x (2B+1) grid of integer offsets (the *shared location embedding*) and bilinearly
read at every query-key offset, so its cost does not grow with the number of pairs.

Written from microsoft/RelationNet2 (`code/models/utils/bvr_transformer/`, commit 0930752); state-dict names follow
it, so its checkpoints load unchanged. Tensors are batch-first here; the official code is sequence-first.

Cost, per FPN level with Q = H*W query locations, K keys per keypoint type (the cross-level top-k, 50 in the released
configs), T keypoint types, C channels, h heads, B the half-size of the embedding grid:

* keys per query: K per type, T*K in all (independent of the image size: key sampling keeps it fixed);
* FLOPs: projections 2*C^2*(2Q + 2K) per type (q, out; k, v), attention 2*2*Q*K*C per type, the embedding lookup
  about 4*h*Q*K per type (bilinear), plus, once per forward, the embedding grid's 1x1 conv, 2*C*h*(2B+1)^2;
* memory: the logits / embedding maps h*Q*K per type and image (the dominant term: at P3 of an 800x1333 image
  Q = 100*167, h = 8, K = 50: 6.7M values per type), the grid's embedding (2B+1)^2*C (a buffer: 41M values for
  B = 200, the r50 config; 23M for B = 150) and its projected h*(2B+1)^2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import normal_init
from torch import nn

__all__ = [
    "BVRMultiheadAttention",
    "PositionalEncodingLearned",
    "PositionalEncodingSine",
    "PositionalEncodingSineLearned",
    "SimpleBVRTransformer",
]


# ----------------------------------------------------------------------------------------------- positional encodings


class _PositionalEncoding(nn.Module):
    """Positions [N, *, P] -> embeddings [N, *, C]; with ``base_size`` read off a precomputed grid (approximate mode).

    ``base_size`` = (w, h): the grid covers integer offsets -w//2..w//2, -h//2..h//2 (its embedding is the buffer
    ``base_embedding``, kept in checkpoints as the official code keeps it). Positions are scaled by 2/base_size so the
    grid spans [-1, 1], and positions outside it read the border (``grid_sample``'s border padding).
    """

    def __init__(self, input_channels: int, embedding_dim: int = 256, base_size: Sequence[int] | None = None,
                 log_scale: bool = False, align_corners: bool = False, normalized_interpolation: bool = True):
        super().__init__()
        self.input_channels = input_channels
        self.embedding_dim = embedding_dim
        self.base_size = None if base_size is None else tuple(base_size)
        self.approximate_mode = base_size is not None
        self.log_scale = log_scale
        self.align_corners = align_corners
        self.normalized_interpolation = normalized_interpolation
        if self.approximate_mode:
            if input_channels < 2:
                raise ValueError(f"the approximated positional encoding needs (x, y) positions; got input_channels="
                                 f"{input_channels}")
            self.register_buffer("base_embedding", self._grid_embedding(*self.base_size))

    def _grid_embedding(self, w: int, h: int) -> torch.Tensor:
        xs = torch.arange(-(w // 2), w // 2 + 1)
        ys = torch.arange(-(h // 2), h // 2 + 1)
        grid = torch.stack((xs.repeat(len(ys), 1), ys[:, None].repeat(1, len(xs))), dim=2)  # [h', w', 2] as (x, y)
        if self.input_channels > 2:  # extra position channels are zero on the grid
            grid = torch.cat([grid, grid.new_zeros(*grid.shape[:2], self.input_channels - 2)], dim=-1)
        return self.preprocess_embedding(grid[None].to(torch.get_default_dtype()))

    def pre_compute(self) -> torch.Tensor | None:
        """The grid's final embedding [1, C, h', w'] (once per forward), or None without a grid."""
        if not self.approximate_mode:
            return None
        return self.postprocess_embedding(self.base_embedding).permute(0, 3, 1, 2)

    def forward(self, positions: torch.Tensor, base_embedding: torch.Tensor | None = None) -> torch.Tensor:
        if self.approximate_mode:
            if base_embedding is None:
                base_embedding = self.pre_compute()
            if self.normalized_interpolation:
                positions = positions / (0.5 * positions.new_tensor(self.base_size).reshape(1, 1, 1, 2))
            embedding = F.grid_sample(base_embedding.expand(positions.size(0), *base_embedding.shape[1:]), positions,
                                      padding_mode="border", align_corners=self.align_corners)
            embedding = embedding.permute(0, 2, 3, 1)
        else:
            embedding = self.postprocess_embedding(self.preprocess_embedding(positions))
        if self.log_scale:
            embedding = torch.log(embedding.clamp(min=1e-6))
        return embedding

    def preprocess_embedding(self, positions: torch.Tensor) -> torch.Tensor:
        return positions

    def postprocess_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        return embedding


class PositionalEncodingSine(_PositionalEncoding):
    """Sine / cosine of each position channel at ``embedding_dim // (2 * P)`` frequencies (temperature 1000)."""

    def __init__(self, input_channels: int, temperature: float = 1000, scale: float = 1.0, normalize: bool = False,
                 **kwargs):
        self.temperature = temperature
        self.scale = scale
        self.normalize = normalize
        super().__init__(input_channels, **kwargs)

    def preprocess_embedding(self, positions: torch.Tensor) -> torch.Tensor:
        if self.normalize:  # by the batch's position range (x, y only), as the official code
            span = positions.max() - positions.min()
            if self.input_channels > 2:
                positions = torch.cat([positions[..., :2] / span, positions[..., 2:]], dim=-1)
            else:
                positions = positions / span
        num_freqs = self.embedding_dim // (2 * self.input_channels)
        freqs = torch.arange(num_freqs, device=positions.device)
        # the official exponent is 4/C (not 2*2/C per channel pair): kept for its checkpoints
        periods = torch.pow(1.0 * self.temperature, (4.0 / self.embedding_dim) * freqs)
        angles = torch.div(self.scale * positions.unsqueeze(-1), periods)  # [N, *, P, F]
        embedding = torch.cat((torch.sin(angles), torch.cos(angles)), dim=-1)
        return embedding.reshape(*embedding.shape[:-2], self.embedding_dim)


class PositionalEncodingSineLearned(PositionalEncodingSine):
    """Sine embedding followed by 1x1 convs (``num_layers``, the last without norm / activation): C -> out_channels.

    In BVR ``out_channels`` is the number of heads: the embedding *is* the per-head geometry logit.
    """

    def __init__(self, input_channels: int, out_channels: int | None = None, conv_dim: int = 2, num_layers: int = 1,
                 out_relu: bool = False, norm_cfg: dict | None = None, **kwargs):
        super().__init__(input_channels, **kwargs)
        self.use_conv2d = conv_dim == 2
        conv_cfg = dict(type="Conv2d" if self.use_conv2d else "Conv1d")
        self.out_channels = out_channels if out_channels is not None else self.embedding_dim
        layers: list[nn.Module] = [ConvModule(self.embedding_dim, self.embedding_dim, 1, conv_cfg=conv_cfg,
                                              norm_cfg=norm_cfg) for _ in range(num_layers - 1)]
        layers.append(ConvModule(self.embedding_dim, self.out_channels, 1, conv_cfg=conv_cfg, act_cfg=None))
        if out_relu:
            layers.append(nn.ReLU())
        self.embedding_transform = nn.Sequential(*layers)
        for layer in self.embedding_transform:
            if isinstance(layer, ConvModule):
                normal_init(layer.conv, std=0.01)

    def postprocess_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        if self.use_conv2d:
            if embedding.dim() != 4:
                raise ValueError(f"conv_dim=2 needs positions [N, H, W, P]; got shape {tuple(embedding.shape)}")
            return self.embedding_transform(embedding.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1)
        shape = list(embedding.shape)
        flat = embedding.reshape(shape[0], -1, shape[-1]).permute(0, 2, 1)
        return self.embedding_transform(flat).permute(0, 2, 1).reshape(*shape[:-1], self.out_channels)


class PositionalEncodingLearned(_PositionalEncoding):
    """Raw positions through a 1x1 ConvModule (P -> C) and a 1x1 conv (C -> C), optionally a sigmoid.

    The official class builds its second conv with P input channels, which only runs when P == C; here it takes C,
    which is the same module whenever the official one runs (no released model uses this encoding).
    """

    def __init__(self, input_channels: int, with_sigmoid: bool = False, conv_dim: int = 2,
                 norm_cfg: dict | None = None, **kwargs):
        super().__init__(input_channels, **kwargs)
        self.use_conv2d = conv_dim == 2
        self.with_sigmoid = with_sigmoid
        conv = nn.Conv2d if self.use_conv2d else nn.Conv1d
        conv_cfg = dict(type="Conv2d" if self.use_conv2d else "Conv1d")
        self.embedding_transform = nn.Sequential(
            ConvModule(input_channels, self.embedding_dim, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg),
            conv(self.embedding_dim, self.embedding_dim, kernel_size=1))
        normal_init(self.embedding_transform[0].conv, std=0.01)
        normal_init(self.embedding_transform[1], std=0.01)

    def postprocess_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        if self.use_conv2d and embedding.dim() != 4:
            raise ValueError(f"conv_dim=2 needs positions [N, H, W, P]; got shape {tuple(embedding.shape)}")
        # the official layout: channels moved to dim 1 by swapping with the last dim (so H and W trade places)
        embedding = self.embedding_transform(embedding.transpose(1, -1).contiguous())
        if self.with_sigmoid:
            embedding = embedding.sigmoid()
        return embedding.transpose(1, -1).contiguous()


# --------------------------------------------------------------------------------------------------------- attention


class BVRMultiheadAttention(nn.Module):
    """Multi-head attention whose logits are q.k / sqrt(d) (``app_relation``) plus per-head geometry logits.

    Parameters as ``nn.MultiheadAttention`` (``in_proj_weight`` = [W_q; W_k; W_v], ``out_proj``). Batch-first:
    query [N, L, C], key / value [N, S, C], ``relative_weights`` [N, h, L, S]. Returns the output [N, L, C] and the
    attention averaged over heads [N, L, S].
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 app_relation: bool = True):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.app_relation = app_relation
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        nn.init.xavier_uniform_(self.in_proj_weight)
        if bias:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def _project(self, x: torch.Tensor, index: int) -> torch.Tensor:
        rows = slice(index * self.embed_dim, (index + 1) * self.embed_dim)
        bias = None if self.in_proj_bias is None else self.in_proj_bias[rows]
        out = F.linear(x, self.in_proj_weight[rows], bias)
        return out.reshape(*x.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)  # [N, h, len, d]

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                relative_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.app_relation and relative_weights is None:
            raise ValueError("BVR attention needs the appearance relation, relative weights, or both")
        n, length, _ = query.shape
        v = self._project(value, 2)
        logits = 0
        if self.app_relation:
            q = self._project(query, 0) * (self.head_dim ** -0.5)
            logits = q @ self._project(key, 1).transpose(-2, -1)
        if relative_weights is not None:
            logits = logits + relative_weights
        weights = F.dropout(torch.softmax(logits, dim=-1), p=self.dropout, training=self.training)
        out = (weights @ v).transpose(1, 2).reshape(n, length, self.embed_dim)
        return self.out_proj(out), weights.mean(dim=1)


# ------------------------------------------------------------------------------------------------------- transformer


class SimpleBVRTransformer(nn.Module):
    """One attention layer per keypoint type ("outer head"), summed into the query, then ReLU.

    ``shared_positional_encoding``: one location embedding for all types (else one per type);
    ``relative_positional_encoding``: an embedding module shared with another transformer (ATSS's cls / reg).
    ``cat_pos``: the official option (no released model) that appends the attention-weighted key offsets.
    """

    def __init__(self, position_dim: int, embedding_dim: int, num_heads: int, num_outer_heads: int = 1,
                 outer_agg_type: str = "add", positional_cfg: dict | None = None,
                 with_relative_positional_encoding: bool = True, with_appearance_relation: bool = True,
                 shared_positional_encoding: bool = True, relative_positional_encoding: nn.Module | None = None,
                 cat_pos: bool = False):
        super().__init__()
        if outer_agg_type != "add":
            raise ValueError(f"outer_agg_type {outer_agg_type!r} is not supported: the official code has 'add' only")
        positional_cfg = dict(base_size=[300, 300]) if positional_cfg is None else dict(positional_cfg)
        self.with_relative_positional_encoding = with_relative_positional_encoding
        self.num_outer_heads = num_outer_heads
        self.outer_agg_type = outer_agg_type

        def encoding():
            return PositionalEncodingSineLearned(position_dim, out_channels=num_heads, conv_dim=2,
                                                 embedding_dim=embedding_dim, **positional_cfg)

        self.decoder = nn.ModuleList(
            BVRMultiheadAttention(embedding_dim, num_heads, dropout=0.0, app_relation=with_appearance_relation)
            for _ in range(num_outer_heads))
        if with_relative_positional_encoding:
            if relative_positional_encoding is not None:
                self.relative_positional_encoding = relative_positional_encoding
            elif shared_positional_encoding:
                self.relative_positional_encoding = encoding()
            else:
                self.relative_positional_encoding = nn.ModuleList(encoding() for _ in range(num_outer_heads))
        self.cat_pos = cat_pos
        if cat_pos:
            self.embed_trans = nn.Sequential(nn.Linear(embedding_dim + num_outer_heads * position_dim, embedding_dim),
                                             nn.ReLU())
            self.pos_trans = nn.Linear(position_dim, position_dim, bias=False)
            nn.init.normal_(self.embed_trans[0].weight, 0.01)  # official: mean 0.01, std 1
        self.out_act = nn.ReLU()

    def _encodings(self) -> list[nn.Module]:
        if isinstance(self.relative_positional_encoding, nn.ModuleList):
            return list(self.relative_positional_encoding)
        return [self.relative_positional_encoding] * self.num_outer_heads

    def forward(self, query_features: Sequence[torch.Tensor], query_positions: Sequence[torch.Tensor],
                key_features: Sequence[Sequence[torch.Tensor]], key_positions: Sequence[Sequence[torch.Tensor]],
                scale_terms: Sequence[float] | float | None = None) -> list[torch.Tensor]:
        """Per level: query features [N, H, W, C] and positions [N, H, W, 2]; per level and type: key features
        [N, K, C] and positions [N, K, 2]; positions are divided by the level's scale term. Returns [N, H, W, C]."""
        if scale_terms is None:
            scale_terms = [1.0] * len(query_features)
        elif isinstance(scale_terms, (int, float)):
            scale_terms = [float(scale_terms)] * len(query_features)
        elif len(scale_terms) != len(query_features):
            raise ValueError(f"{len(scale_terms)} scale terms for {len(query_features)} levels")
        encodings = self._encodings() if self.with_relative_positional_encoding else []
        grids = [e.pre_compute() for e in encodings]  # the shared location embedding: once per forward
        return [self._forward_level(*args, encodings, grids)
                for args in zip(query_features, query_positions, key_features, key_positions, scale_terms)]

    def _forward_level(self, query, query_position, keys, key_positions, scale, encodings, grids):
        shape = query.shape
        n, channels = shape[0], shape[-1]
        query = query.reshape(n, -1, channels)
        query_position = query_position.reshape(n, -1, 2) / scale
        refined, new_positions = [], []
        for group in range(self.num_outer_heads):
            key = keys[group].reshape(n, -1, channels)
            rel_pos = key_positions[group].reshape(n, -1, 2)[:, None] / scale - query_position[:, :, None]  # N,Q,K,2
            relative = None
            if self.with_relative_positional_encoding:
                relative = encodings[group](rel_pos, grids[group]).permute(0, 3, 1, 2)  # N, h, Q, K
            out, attention = self.decoder[group](query, key, key, relative)
            if self.cat_pos:
                new_positions.append(self.pos_trans((attention[..., None] * rel_pos.detach()).sum(dim=-2)))
            refined.append(out)
        query = self.out_act(query + torch.stack(refined).sum(dim=0))
        if self.cat_pos:
            query = self.embed_trans(torch.cat([query, *new_positions], dim=-1))
        return query.reshape(shape)


def attention_cost(num_queries: int, num_keys: int, channels: int = 256, heads: int = 8, types: int = 1,
                   grid_half_size: int | None = None) -> dict[str, float]:
    """The docstring's cost model for one level and image: keys per query, multiply-adds and logit-map values."""
    macs = types * (channels * channels * (2 * num_queries + 2 * num_keys) + 2 * num_queries * num_keys * channels
                    + 4 * heads * num_queries * num_keys)
    grid = 0 if grid_half_size is None else (2 * grid_half_size + 1) ** 2
    return dict(keys_per_query=types * num_keys, macs=float(macs + channels * heads * grid),
                logit_values=float(types * heads * num_queries * num_keys), grid_values=float(grid * channels),
                grid_mb_fp32=grid * channels * 4 / 2 ** 20)
