"""MoH-ViT: TransNeXt with Mixture-of-Head attention.

Paper: "MoH: Multi-Head Attention as Mixture-of-Head Attention" (Jin, Zhu, Yuan, Yan; 2024),
https://arxiv.org/abs/2410.11842. Official code: https://github.com/SkyworkAI/MoH (``MoH-ViT/transnext.py``,
``attention.py``, ``attention_native.py``; the loss weight in ``engine.py``). The architecture is TransNeXt
(``backbones/skeletons/transnext.py``); this file supplies what is MoH's own: the attentions with the head gates
(``wg`` router over the routed heads, ``wg_0`` shared-vs-routed share, ``wg_1`` weights of the shared heads; built and
applied by :func:`attnzoo.backbones.layers.build_moh_gates` / :func:`attnzoo.backbones.layers.moh_head_gates`), the per-stage
``shared_head`` / ``routed_head`` counts of the four releases, the checkpoint filter, default cfgs and registrations.

The load-balancing loss: in training mode every routed attention keeps its loss of the last forward in
``moh_balance``; :meth:`MoHTransNeXt.moh_balance_loss` is their mean (the official ``sum / len``). The official
training adds ``0.01 *`` that (:data:`attnzoo.backbones.layers.MOH_BALANCE_WEIGHT`) to the task loss; ``zoo train`` does::

    loss = criterion(model(x), y) + MOH_BALANCE_WEIGHT * model.moh_balance_loss()

The official code computes every head and weights the unselected routed heads 0. Here every routed attention
passes the router's selection to a head-sparse op: stage 4 (full attention) to :func:`attnzoo.kernels.moh.head_sparse_attention`,
the routed aggregated-attention stages (stage 3 of every release, stages 1-3 of base_50) to
:func:`attnzoo.kernels.aggregated_attention.head_sparse_aggregated_attention`, whose Triton path (CUDA) computes only the
selected (token, head) pairs; its CPU path attends the pooled keys for the routed pairs only where that is cheaper
than the official dense-then-gate form (chosen by shape and load), as the stage-4 op's does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model, register_notrace_function, register_notrace_module

from attnzoo.kernels.aggregated_attention import head_sparse_aggregated_attention
from attnzoo.kernels.moh import head_sparse_attention

from .layers import build_moh_gates, check_moh_heads, moh_balance_loss, moh_head_gates
from .pretrained import PretrainedFromLoader, build_with_official_weights, official_weights
from .skeletons import transnext

__all__ = ["MoHAggregatedAttention", "MoHFullAttention", "MoHTransNeXt", "checkpoint_filter_fn"]

# The kernel op validates and dispatches on sizes and devices: an opaque call in FX graphs (timm's notrace registry).
register_notrace_function(head_sparse_attention)
register_notrace_function(head_sparse_aggregated_attention)


class _HeadGates:
    """Mixin over a TransNeXt attention: the heads are summed with the MoH gates instead of concatenated equally."""

    moh_balance: torch.Tensor | None = None

    def _build_gates(self, dim, shared_heads, routed_heads):
        check_moh_heads(self.num_heads, shared_heads, routed_heads, type(self).__name__)
        build_moh_gates(self, dim, self.num_heads, shared_heads, routed_heads)

    def combine_heads(self, x, heads):
        gates, self.moh_balance = moh_head_gates(self, x)
        b, h, n, d = heads.shape
        return (heads.transpose(1, 2) * gates.unsqueeze(-1).to(heads.dtype)).reshape(b, n, h * d)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, shared_heads={self.shared_head}, routed_heads={self.routed_head}"


class MoHAggregatedAttention(_HeadGates, transnext.AggregatedAttention):
    """Stages 1-3: aggregated attention with MoH head gates (official ``attention_native.AggregatedAttention``).

    With routed heads (and no attention dropout) it passes the router's selection to
    :func:`attnzoo.kernels.aggregated_attention.head_sparse_aggregated_attention` (a torch.library op: eager,
    torch.compile and torch.export all call it), which attends only the selected (token, head) pairs where that pays;
    the official form (every head, then the gates: the path taken with attention dropout or an empty batch) gives the
    same output and gradients."""

    def __init__(self, dim, num_heads=8, shared_heads=0, routed_heads=0, **kwargs):
        super().__init__(dim, num_heads, **kwargs)
        self._build_gates(dim, shared_heads, routed_heads)

    def forward(self, x, H, W):
        if not self.routed_head or not x.numel() or (self.attn_drop > 0 and self.training):
            # dense-then-gate (the official form): the op has no attention dropout; an empty batch gives empty out.
            # (The selection's data-dependent sizes live inside the op's kernels, so compile and export trace the op.)
            return super().forward(x, H, W)
        b, n, c = x.shape
        gates, self.moh_balance, heads = moh_head_gates(self, x, return_heads=True)
        q_norm, q_scaled, k, v, k_pool, v_pool, pool_bias = self.attention_inputs(x, H, W)
        out = head_sparse_aggregated_attention(
            q_scaled, k, v, k_pool, v_pool, self.relative_pos_bias_local, pool_bias,
            q_norm @ self.learnable_tokens + self.learnable_bias, H, W, self.window_size, heads,
            gates.gather(2, heads).to(q_scaled.dtype))
        return self.proj_drop(self.proj(out.reshape(b, n, c)))


class MoHFullAttention(_HeadGates, transnext.FullAttention):
    """Stage 4: full attention with MoH head gates (official ``attention.Attention``).

    With routed heads (and no attention dropout) it attends only the (token, head) pairs the router selected,
    through :func:`attnzoo.kernels.moh.head_sparse_attention` (a torch.library op, also under torch.compile and
    torch.export); the official code computes every head and zeroes the unselected ones (the path taken with
    attention dropout or an empty batch), which gives the same output and gradients."""

    def __init__(self, dim, num_heads=8, shared_heads=0, routed_heads=0, **kwargs):
        super().__init__(dim, num_heads, **kwargs)
        self._build_gates(dim, shared_heads, routed_heads)

    def forward(self, x, H, W):
        if not self.routed_head or not x.numel() or (self.attn_drop > 0 and self.training):
            # dense-then-mask (the official form): the op has no attention dropout; an empty batch gives empty out
            return super().forward(x, H, W)
        b, n, c = x.shape
        gates, self.moh_balance, heads = moh_head_gates(self, x, return_heads=True)
        q, k, v = self.qkv(x).reshape(b, n, 3 * self.num_heads, self.head_dim).permute(0, 2, 1, 3).chunk(3, dim=1)
        q_scaled = self.scaled_queries(F.normalize(q, dim=-1), math.log(n))
        out = head_sparse_attention(q_scaled, F.normalize(k, dim=-1), v, heads, gates.gather(2, heads),
                                    self.grid_bias((H, W), (H, W), device=x.device), 1.0)
        return self.proj_drop(self.proj(out.reshape(b, n, c)))


# Size-dependent attentions: leaf modules in torch.fx graphs, as the skeleton's (timm's notrace registry).
register_notrace_module(MoHAggregatedAttention)
register_notrace_module(MoHFullAttention)


class MoHTransNeXt(PretrainedFromLoader, transnext.TransNeXt):
    """MoH-ViT: :class:`~attnzoo.backbones.skeletons.transnext.TransNeXt` whose stage ``i`` attentions keep
    ``shared_head[i]`` heads always on and route each token to its top ``routed_head[i]`` of the other heads
    (official argument names; ``routed_head[i] == 0``: all heads shared, weighted per token by ``wg_1``)."""

    def __init__(self, shared_head=(1, 2, 4, 8), routed_head=(0, 0, 0, 0), **kwargs):
        shared_head, routed_head = tuple(shared_head), tuple(routed_head)
        num_stages = kwargs.get("num_stages", 4)
        if len(shared_head) < num_stages or len(routed_head) < num_stages:
            raise ValueError(f"MoHTransNeXt needs shared_head and routed_head for each of the {num_stages} stages, "
                             f"got {shared_head} and {routed_head}")

        def attn_fn(stage, **attn_kwargs):
            gates = dict(shared_heads=shared_head[stage], routed_heads=routed_head[stage])
            return transnext.standard_attention(stage, **attn_kwargs, attention_classes=(
                lambda *a, **k: MoHAggregatedAttention(*a, **gates, **k),
                lambda *a, **k: MoHFullAttention(*a, **gates, **k)))

        super().__init__(attn_fn, **kwargs)
        self.shared_head, self.routed_head = shared_head, routed_head

    def moh_balance_loss(self) -> torch.Tensor:
        """Mean load-balancing loss of the routed attentions over the last training-mode forward (0 when none routed:
        an eval forward, or a model without routed heads), unweighted; the official training adds
        ``0.01 *`` this to the loss."""
        loss = moh_balance_loss(self)
        return loss if loss is not None else next(self.parameters()).new_zeros(())

    def head_fractions(self) -> list[float]:
        """Per stage, the fraction of heads each token uses ((shared + routed) / heads; 1 where all are shared)."""
        fractions = []
        for i in range(self.num_stages):
            blocks = getattr(self, f"block{i + 1}")
            attn = blocks[0].attn if len(blocks) else None
            if attn is not None:
                used = attn.shared_head + attn.routed_head if attn.routed_head else attn.num_heads
                fractions.append(used / attn.num_heads)
        return fractions

    @torch.no_grad()
    def measure_head_usage(self, x: torch.Tensor) -> list[dict]:
        """What the routers select on ``x``, per stage: ``fraction`` (the share of (token, head) pairs with a non-zero
        gate, over every block and token) and ``load`` (per head, the share of tokens that use it). Runs one forward;
        compare ``fraction`` with :meth:`head_fractions`, the share the configuration promises."""
        counts: dict[int, list[torch.Tensor]] = {}
        hooks = []
        for i in range(self.num_stages):
            for block in getattr(self, f"block{i + 1}"):
                def record(module, args, stage=i):
                    gates = moh_head_gates(module, args[0])[0]  # the gates the forward computes from this input
                    counts.setdefault(stage, []).append((gates != 0).reshape(-1, gates.shape[-1]).float())
                hooks.append(block.attn.register_forward_pre_hook(record))
        try:
            self(x)
        finally:
            for hook in hooks:
                hook.remove()
        usage = []
        for stage in sorted(counts):
            used = torch.cat(counts[stage])
            usage.append(dict(stage=stage + 1, fraction=used.mean().item(), load=used.mean(0).tolist()))
        return usage


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------


def checkpoint_filter_fn(state_dict, model):
    """Official checkpoint (``{'model': ...}`` from the official main.py, or a bare state dict) -> this model's
    state dict. Only unwraps and strips ``module.``; the official size-dependent tables are non-persistent buffers
    (rebuilt here per input size), so every key passes unchanged and the loader names what does not fit."""
    for wrapper in ("model", "state_dict"):
        if isinstance(state_dict, dict) and wrapper in state_dict and isinstance(state_dict[wrapper], dict):
            state_dict = state_dict[wrapper]
            break
    out = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(("relative_pos_index", "relative_coords_table")) or key.endswith(
                ("seq_length_scale", "padding_mask")):
            continue  # rebuilt from the configuration (non-persistent in the official code; dropped if present)
        out[key] = value
    if not any(k.startswith("head.") for k in model.state_dict()):
        out = {k: v for k, v in out.items() if not k.startswith("head.")}  # num_classes=0: no classifier to load
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------------------------------


def _create(variant, pretrained=False, **kwargs):
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    # Every release was pre-trained at 224, so the relative coordinates stay scaled by 224 at any img_size: building at
    # 384 (or `zoo train --img-size 384`) is the official 384 fine-tune (pretrain_size 224), not a 384 pre-training.
    kwargs.setdefault("pretrain_size", 224)
    return build_with_official_weights(MoHTransNeXt, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                       feature_cfg=dict(out_indices=out_indices, feature_cls="getter"), **kwargs)


def _cfg(variant, hf_repo, **kwargs):
    """Official checkpoint on the Hugging Face hub (MoH-ViT/README.md "Download URL": the repositories
    Chat-UniVi/MoH-ViT-{S-80,S-75,B-75,B-50}); the file name inside them (``<variant>.pth``, the name the official
    README's ``--resume ./checkpoints/${MODEL_TYPE}.pth`` uses) could not be checked from here.

    Evaluation transform of the official ``datasets.build_transform`` at 224: resize the short side to 256 (bicubic),
    centre-crop 224 -> crop_pct 0.875, ImageNet mean/std."""
    return {
        **official_weights(f"https://huggingface.co/{hf_repo}/resolve/main/{variant}.pth", f"{variant}.in1k.pth"),
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.875,
        "interpolation": "bicubic", "fixed_input_size": False, "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD, "first_conv": "patch_embed1.proj", "classifier": "head",
        "license": "apache-2.0", **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "moh_transnext_small_80.in1k": _cfg("moh_transnext_small_80", "Chat-UniVi/MoH-ViT-S-80"),
    "moh_transnext_small_75.in1k": _cfg("moh_transnext_small_75", "Chat-UniVi/MoH-ViT-S-75"),
    "moh_transnext_base_75.in1k": _cfg("moh_transnext_base_75", "Chat-UniVi/MoH-ViT-B-75"),
    "moh_transnext_base_50.in1k": _cfg("moh_transnext_base_50", "Chat-UniVi/MoH-ViT-B-50"),
})

# The official factories (SkyworkAI/MoH MoH-ViT/transnext.py): TransNeXt-Small / -Base widths and depths.
_SMALL = dict(window_size=(3, 3, 3, None), patch_size=4, embed_dims=(72, 144, 288, 576), num_heads=(3, 6, 12, 24),
              mlp_ratios=(8, 8, 4, 4), qkv_bias=True, depths=(5, 5, 22, 5), sr_ratios=(8, 4, 2, 1))
_BASE = dict(_SMALL, embed_dims=(96, 192, 384, 768), num_heads=(4, 8, 16, 32), depths=(5, 5, 23, 5))


@register_model
def moh_transnext_small_80(pretrained=False, **kwargs):
    args = dict(_SMALL, shared_head=(3, 6, 3, 8), routed_head=(0, 0, 6, 12))
    return _create("moh_transnext_small_80", pretrained, **{**args, **kwargs})


@register_model
def moh_transnext_small_75(pretrained=False, **kwargs):
    args = dict(_SMALL, shared_head=(3, 6, 3, 4), routed_head=(0, 0, 6, 12))
    return _create("moh_transnext_small_75", pretrained, **{**args, **kwargs})


@register_model
def moh_transnext_base_75(pretrained=False, **kwargs):
    args = dict(_BASE, shared_head=(4, 8, 4, 5), routed_head=(0, 0, 8, 16))
    return _create("moh_transnext_base_75", pretrained, **{**args, **kwargs})


@register_model
def moh_transnext_base_50(pretrained=False, **kwargs):
    args = dict(_BASE, shared_head=(2, 2, 2, 4), routed_head=(2, 4, 6, 8))
    return _create("moh_transnext_base_50", pretrained, **{**args, **kwargs})
