"""Flowformer for vision (Wu et al., "Flowformer: Linearizing Transformers with Conservation Flows", ICML 2022).

A four-stage hierarchical transformer whose every block uses Flow-Attention (linear in the number of tokens, no
locality bias): a 4x4 patch stem, then a 2x2 strided conv (``DownLayer``) between stages, an absolute position
embedding on stage 1 only, global Flow-Attention in every block, mean pooling and a linear head.

Reproduces thuml/Flowformer ``Flowformer_CV/flowformer.py`` (class ``Flowformer``) with its ImageNet configuration
from ``Flowformer_CV/main.py``: patch 4, embed_dim 96/192/384/768, depth 3/3/10/3, mlp_ratio 4, LayerNorm eps 1e-6,
init_values 1e-5, drop_path 0.2 for training. Parameter and module names are the official ones, so official
checkpoints load strictly. Quirks kept for checkpoint fidelity (and marked where they live):

- ``Flow_Attention(dim)`` is built without a head count, so every stage has the class default of **12 heads**
  (head dims 8/16/32/64); ``num_heads`` here keeps 12 by default and accepts another int or one per stage.
- LayerScale (``gamma``) multiplies the MLP branch only; the attention branch has none.
- The attention's flow sums carry the vision copy's extra ``+ 1e-6`` (``sum_eps`` in ``attnzoo.kernels.flow``).
- The official ``PatchEmbed`` asserts the training image size and ``DownLayer`` reshapes to a fixed grid; here the
  grid is followed from the input, and sizes other than the built ``img_size`` need ``dynamic_img_size=True``
  (the stage-1 position embedding is then resampled, bicubic, as timm does for ViTs).

Input sizes as timm's ViTs: ``img_size=`` at construction, ``set_input_size(img_size=...)`` afterwards (the stage-1
position embedding, the only size-dependent tensor, resampled in place), and a checkpoint saved at another size
resampled the same way by ``checkpoint_filter_fn`` (``resample_state_dict_to_size``), so the two agree exactly.

Attention runs through ``attnzoo.kernels.flow.flow_attention``: the fused Triton kernel on CUDA, the reference elsewhere.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, resample_abs_pos_embed, to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, register_notrace_function
from timm.models._features import feature_take_indices
from timm.models._input import update_model_input_size

from attnzoo.kernels.flow import flow_attention

from .skeletons.heads import ClassifierHead

# torch.fx (timm's FX feature extraction and tests) cannot trace Python branches on tensor shapes: the kernel op
# (which validates and dispatches on the device) and the two size checks below are opaque calls in an FX graph. FX
# only wraps functions whose module-level names do not start with an underscore.
register_notrace_function(flow_attention)

__all__ = ["Flowformer", "FlowAttention", "FlowformerBlock", "DownLayer", "checkpoint_filter_fn"]

OFFICIAL_NUM_HEADS = 12  # Flow_Attention's default, never overridden by the official blocks
OFFICIAL_FLOW_EPS = 1e-6


class FlowAttention(nn.Module):
    """Multi-head Flow-Attention over all tokens (official ``Flow_Attention`` of Flowformer_CV)."""

    def __init__(self, dim: int, num_heads: int = OFFICIAL_NUM_HEADS):
        super().__init__()
        if dim % num_heads:
            raise ValueError(
                f"Flow attention: dim {dim} is not divisible by num_heads {num_heads}; the official model uses 12 "
                "heads in every stage, so its embed dims are multiples of 12 (pass num_heads to change that)"
            )
        self.dim = dim
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, channels = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, channels // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, head_dim) each; the op applies the sigmoid feature map
        # quirk kept for fidelity: the vision copy adds eps once more after each flow sum (sum_eps)
        x = flow_attention(q, k, v, causal=False, eps=OFFICIAL_FLOW_EPS, sum_eps=OFFICIAL_FLOW_EPS)
        x = x.transpose(1, 2).reshape(batch, tokens, channels)
        return self.proj(x)


class FlowformerBlock(nn.Module):
    """Pre-norm block (official ``My_BlockLayerScale``): LayerScale ``gamma`` on the MLP branch only (quirk)."""

    def __init__(self, dim, num_heads=OFFICIAL_NUM_HEADS, mlp_ratio=4.0, drop=0.0, drop_path=0.0,
                 act_layer=nn.GELU, norm_layer=nn.LayerNorm, init_values=1e-5):  # fmt: skip
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = FlowAttention(dim, num_heads=num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.gamma * self.mlp(self.norm2(x)))
        return x


class PatchStem(nn.Module):
    """Non-overlapping patch_size x patch_size conv (official ``PatchEmbed``): image -> (B, N, C) tokens."""

    def __init__(self, patch_size=4, in_chans=3, embed_dim=96):
        super().__init__()
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(checked_image_batch(x, self.in_chans))
        hw = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), hw


@register_notrace_function
def checked_image_batch(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Returns ``x`` when it is a (B, in_chans, H, W) batch, else raises naming the fix (kept in FX graphs)."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(
            f"Flowformer expects images of shape (B, {in_chans}, H, W); got {tuple(x.shape)} "
            f"(build the model with in_chans={x.shape[1] if x.dim() == 4 else '?'} for other channel counts)"
        )
    return x


@register_notrace_function
def stage1_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], built_grid: tuple[int, int], patch_size: int,
                     dynamic_img_size: bool) -> torch.Tensor:
    """The stage-1 position embedding for a ``grid`` of patches: as built, or resampled (bicubic) when dynamic."""
    grid = (int(grid[0]), int(grid[1]))
    if grid == tuple(built_grid):
        return pos_embed
    if not dynamic_img_size:
        size = (built_grid[0] * patch_size, built_grid[1] * patch_size)
        raise ValueError(
            f"Flowformer was built for {size[0]}x{size[1]} images (a {tuple(built_grid)} stage-1 grid), got a "
            f"{grid} grid; build it with img_size=... or dynamic_img_size=True to resample the position embedding"
        )
    return resample_abs_pos_embed(pos_embed, new_size=grid, old_size=built_grid, num_prefix_tokens=0)


class DownLayer(nn.Module):
    """2x2 stride-2 conv between stages (official ``DownLayer``): (B, H*W, C_in) -> (B, H/2*W/2, C_out)."""

    def __init__(self, dim_in=64, dim_out=128):
        super().__init__()
        self.dim_in = dim_in
        self.dim_out = dim_out
        self.proj = nn.Conv2d(dim_in, dim_out, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        batch, _, channels = x.shape
        x = self.proj(x.view(batch, hw[0], hw[1], channels).permute(0, 3, 1, 2))
        hw = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), hw


class Flowformer(ClassifierHead, nn.Module):
    """Official Flowformer_CV model. Argument names follow the official constructor (``embed_dim``, ``depth``,
    ``mlp_ratio`` are per-stage lists there too)."""

    global_pools = ("avg", "")  # reset_classifier's choices (and the constructor's)

    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, embed_dim=(64, 128, 256, 512),
                 depth=(2, 2, 10, 4), mlp_ratio=(4, 4, 4, 4), num_heads=OFFICIAL_NUM_HEADS, drop_rate=0.0,
                 drop_path_rate=0.0, norm_layer=None, init_values=0.001, dropcls=0.0, global_pool="avg",
                 dynamic_img_size=False):  # fmt: skip
        super().__init__()
        num_stages = len(embed_dim)
        if not (len(depth) == len(mlp_ratio) == num_stages):
            raise ValueError(f"embed_dim {embed_dim}, depth {depth} and mlp_ratio {mlp_ratio} need one entry per stage")
        heads = (num_heads,) * num_stages if isinstance(num_heads, int) else tuple(num_heads)
        if len(heads) != num_stages:
            raise ValueError(f"num_heads {num_heads} must be an int or one value per stage ({num_stages})")
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '' (no pooling); got {global_pool!r}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_stages = num_stages
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim[-1]
        self.output_fmt = "NHWC"  # forward_features' layout (timm's attribute for channels-last maps)
        self.dynamic_img_size = dynamic_img_size
        self.patch_size = patch_size
        self.pos_embed_grid = _patch_grid(img_size, patch_size, num_stages)
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)

        self.patch_embed = nn.ModuleList([PatchStem(patch_size, in_chans, embed_dim[0])])
        self.patch_embed.extend(DownLayer(embed_dim[i], embed_dim[i + 1]) for i in range(num_stages - 1))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pos_embed_grid[0] * self.pos_embed_grid[1], embed_dim[0]))
        self.pos_drop = nn.Dropout(p=drop_rate)  # built but unused, as officially (see _stage)

        # stochastic depth decay rule (on the CPU, so the model also builds under torch.device("meta"))
        dpr = torch.linspace(0, drop_path_rate, sum(depth), device="cpu").tolist()
        self.blocks = nn.ModuleList()
        self.feature_info = []
        cur = 0
        for i in range(num_stages):
            self.blocks.append(nn.Sequential(*[
                FlowformerBlock(embed_dim[i], num_heads=heads[i], mlp_ratio=mlp_ratio[i], drop=drop_rate,
                                drop_path=dpr[cur + j], norm_layer=norm_layer, init_values=init_values)
                for j in range(depth[i])
            ]))  # fmt: skip
            cur += depth[i]
            self.feature_info.append(dict(num_chs=embed_dim[i], reduction=patch_size * 2**i, module=f"blocks.{i}"))

        self.norm = norm_layer(embed_dim[-1])
        self.final_dropout = nn.Dropout(p=dropcls) if dropcls > 0 else nn.Identity()
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {"pos_embed"}

    @torch.jit.ignore
    def group_matcher(self, coarse=False):
        return dict(stem=r"^pos_embed|^patch_embed\.0", blocks=[(r"^patch_embed\.(\d+)", None),
                                                                (r"^blocks\.(\d+)\.(\d+)", None)])  # fmt: skip

    @torch.jit.ignore
    def set_input_size(self, img_size: int | tuple[int, int] | None = None) -> None:
        """timm's ``set_input_size``: build-time size becomes ``img_size`` (None: unchanged), in place, keeping the
        weights; the stage-1 position embedding is resampled (bicubic, timm's ``resample_abs_pos_embed``)."""
        if img_size is None:
            return
        grid = _patch_grid(img_size, self.patch_size, self.num_stages)
        if grid != self.pos_embed_grid:
            resampled = resample_abs_pos_embed(self.pos_embed.detach(), new_size=grid, old_size=self.pos_embed_grid,
                                               num_prefix_tokens=0)  # fmt: skip
            self.pos_embed = nn.Parameter(resampled, requires_grad=self.pos_embed.requires_grad)
            self.pos_embed_grid = grid
        update_model_input_size(self, (grid[0] * self.patch_size, grid[1] * self.patch_size))

    def resample_state_dict_to_size(self, state_dict: dict) -> dict:
        """A state dict of this architecture saved at another size -> this model's size: a square stage-1 position
        embedding of another length is resampled as :meth:`set_input_size` does. Reads only shapes (works on meta)."""
        pos = state_dict.get("pos_embed")
        if pos is None or pos.dim() != 3 or pos.shape[1] == self.pos_embed.shape[1] \
                or pos.shape[2] != self.pos_embed.shape[2]:
            return state_dict
        side = int(round(pos.shape[1] ** 0.5))
        if side * side != pos.shape[1]:
            return state_dict  # not a square grid: left for the loader to name as misshapen
        out = dict(state_dict)
        out["pos_embed"] = resample_abs_pos_embed(pos, new_size=self.pos_embed_grid, old_size=(side, side),
                                                  num_prefix_tokens=0)  # fmt: skip
        return out

    def _stage1_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        return stage1_pos_embed(self.pos_embed, hw, self.pos_embed_grid, self.patch_size, self.dynamic_img_size)

    def _stage(self, index: int, x: torch.Tensor, hw):
        """Stage ``index`` on the image (index 0) or the previous stage's tokens; returns tokens and grid."""
        if index == 0:
            x, hw = self.patch_embed[0](x)
            # quirk kept: the official forward never applies its pos_drop (drop_rate only reaches the MLPs)
            x = x + self._stage1_pos_embed(hw)
        else:
            x, hw = self.patch_embed[index](x, hw)
        return self.blocks[index](x), hw

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The normed last-stage map, (B, H/32, W/32, C): NHWC (``output_fmt``), as timm's Swin returns its map."""
        hw = None
        for i in range(self.num_stages):
            x, hw = self._stage(i, x, hw)
        return _tokens_to_nhwc(self.norm(x), hw)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(1, 2))  # the official token mean
        x = self.final_dropout(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):  # fmt: skip
        """Per-stage feature maps (NCHW, NHWC, or NLC tokens) and, unless intermediates_only, the final normed map
        (NHWC, as :meth:`forward_features`).

        ``norm=True`` applies the final LayerNorm to the last stage's map (the only norm the model has).
        """
        if output_fmt not in ("NCHW", "NHWC", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW', 'NHWC' or 'NLC'; got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        last = max_index if (stop_early or intermediates_only) else self.num_stages - 1
        intermediates = []
        hw = None
        for i in range(last + 1):
            x, hw = self._stage(i, x, hw)
            if i in take_indices:
                feat = self.norm(x) if (norm and i == self.num_stages - 1) else x
                if output_fmt == "NCHW":
                    feat = _tokens_to_nhwc(feat, hw).permute(0, 3, 1, 2).contiguous()
                elif output_fmt == "NHWC":
                    feat = _tokens_to_nhwc(feat, hw)
                intermediates.append(feat)
        if intermediates_only:
            return intermediates
        return _tokens_to_nhwc(self.norm(x), hw), intermediates

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        """Drops the stages after the last one taken (their DownLayers too); returns the taken indices."""
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        if max_index + 1 < self.num_stages:
            self.blocks = self.blocks[: max_index + 1]
            self.patch_embed = self.patch_embed[: max_index + 1]
            self.num_stages = max_index + 1
            prune_norm = prune_head = True  # the final norm and head are sized for the dropped last stage
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices


def _patch_grid(img_size, patch_size: int, num_stages: int) -> tuple[int, int]:
    """The stage-1 grid of an ``img_size`` input, or a ValueError naming the sizes the model takes."""
    size = tuple(int(s) for s in to_2tuple(img_size))
    smallest = patch_size * 2 ** (num_stages - 1)  # one token in the last stage
    if len(size) != 2 or min(size) < smallest:
        raise ValueError(f"Flowformer: img_size must be an int or (height, width) of at least {smallest} (one token "
                         f"in the last stage), got {img_size!r}")
    return size[0] // patch_size, size[1] // patch_size


def _tokens_to_nhwc(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) row-major tokens -> (B, H, W, C)."""
    return x.reshape(x.shape[0], hw[0], hw[1], x.shape[-1])


def checkpoint_filter_fn(state_dict, model: Flowformer):
    """Official checkpoint (DeiT-style ``{'model': ...}``, possibly ``module.``-prefixed) -> this model's keys.

    The official names are ours, so this only unwraps and resamples the stage-1 position embedding when the model was
    built for another image size; every other key passes unchanged, and the loader names what does not fit the model
    (e.g. a checkpoint of another variant).
    """
    for wrapper in ("model", "state_dict", "model_ema"):
        if isinstance(state_dict, dict) and isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
            break
    out = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}

    return model.resample_state_dict_to_size(out)


def _create_flowformer(variant: str, pretrained: bool = False, **kwargs) -> Flowformer:
    num_stages = len(kwargs.get("embed_dim", (0, 0, 0, 0)))
    out_indices = kwargs.pop("out_indices", tuple(range(num_stages)))
    return build_model_with_cfg(
        Flowformer, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"), **kwargs,
    )  # fmt: skip


def _cfg(url="", **kwargs):
    # crop_pct 0.875: the official eval (Flowformer_CV/datasets.py) resizes the short side to 256, crops 224.
    return {
        "url": url, "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.875,
        "interpolation": "bicubic", "fixed_input_size": True, "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD, "first_conv": "patch_embed.0.proj", "classifier": "head", **kwargs,
    }  # fmt: skip


# Weights: Flowformer_CV/README.md links a Tsinghua cloud *folder* share (no direct file URL, no checksum), so the
# cfg names it as origin_url and pretrained=True has nothing to fetch; load a downloaded file with attnzoo.load_checkpoint.
default_cfgs = generate_default_cfgs({
    "flowformer.in1k": _cfg(
        origin_url="https://cloud.tsinghua.edu.cn/d/82d93375f97f4ca58886/", paper_ids="arXiv:2202.06258",
        license="mit",
    ),
})  # fmt: skip


@register_model
def flowformer(pretrained=False, **kwargs) -> Flowformer:
    """Flowformer, ImageNet-1k configuration of Flowformer_CV/main.py (43.3M parameters as built)."""
    args = dict(patch_size=4, embed_dim=(96, 192, 384, 768), depth=(3, 3, 10, 3), mlp_ratio=(4, 4, 4, 4),
                init_values=1e-5)  # fmt: skip
    return _create_flowformer("flowformer", pretrained, **dict(args, **kwargs))
