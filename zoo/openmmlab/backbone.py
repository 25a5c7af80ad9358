"""``ZooBackbone``: any zoo or timm model as an mmdet / mmseg backbone, built by the zoo's one builder and loaded by
its one loader."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

import timm
import torch
from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..models import build_model, family_of
from ..weights import CheckpointError, checkpoint_filter_fn_for, load_checkpoint

__all__ = ["PRETRAINED_ADAPTERS", "ZooBackbone"]


def _out_norm_layer(kind: str | None, channels: int) -> nn.Module:
    """One per-output norm, as the families' official downstream backbones add them."""
    if kind is None:
        return nn.Identity()
    if kind == "LN2d":  # Swin / FocalNet / Agent-Swin style: LayerNorm over channels, torch's default eps
        return timm.layers.LayerNorm2d(channels, eps=1e-5)
    if kind == "GN1":  # PoolFormer style: GroupNorm with one group (sail-sg/poolformer detection/..., fork_feat)
        return nn.GroupNorm(1, channels, eps=1e-5)
    if kind == "BN":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"out_norm={kind!r} is not one of None, 'LN2d', 'GN1', 'BN'")


class ZooBackbone(BaseModule):
    """Any timm-registered model (zoo families included) as a multi-scale backbone for mmdet and mmseg.

    Args:
        model_name: timm name, e.g. ``'biformer_small'``, ``'poolformer_s12'``, ``'focalnet_tiny_srf'``.
        out_indices: which feature levels (``model.feature_info`` indices) to return, in order.
        pretrained: ``None``, a checkpoint path, or a model-card name; loaded through ``attnzoo.load_checkpoint`` (the
            family's checkpoint filter applies). Every checkpoint key must land in the model and every model key must
            be in the checkpoint, except the keys of layers the downstream options add (``model_kwargs`` /
            ``out_norm``); anything else is an error at build time.
        frozen_stages: -1 trains everything; 0 freezes the stem; k freezes the stem and stages ``0..k-1``
            (their parameters stop requiring grad and their modules stay in eval mode).
        norm_eval: keep BatchNorm layers in eval mode while training (their statistics frozen).
        drop_path_rate: stochastic depth, passed to the model constructor.
        out_norm: a norm added on each returned level: ``None``, ``'LN2d'`` (Swin, FocalNet, Agent-Swin downstream),
            ``'GN1'`` (PoolFormer downstream) or ``'BN'``. Families that build their own output norms (BiFormer:
            ``model_kwargs``) leave this ``None``.
        model_kwargs: extra constructor arguments for the family's downstream variant (e.g. BiFormer
            ``n_win=16, auto_pad=True``; Agent downstream agent counts).
        init_cfg: mmengine init config. ``dict(type='Pretrained', checkpoint=...)`` is routed through the same strict
            loader as ``pretrained`` (mmengine's own loader is non-strict and silently loads nothing on a name mismatch).
    """

    def __init__(
        self,
        model_name: str,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        pretrained: str | None = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        drop_path_rate: float = 0.0,
        out_norm: str | None = None,
        model_kwargs: dict | None = None,
        init_cfg: dict | list | None = None,
    ):
        init_cfg, pretrained = _take_pretrained_init_cfg(init_cfg, pretrained)
        super().__init__(init_cfg=init_cfg)
        model_kwargs = dict(model_kwargs or {})
        for reserved in ("pretrained", "features_only", "drop_path_rate"):
            if reserved in model_kwargs:
                raise ValueError(f"ZooBackbone: pass {reserved!r} as a ZooBackbone argument, not inside model_kwargs")
        _check_model_name(model_name)

        self.model_name = model_name
        # The card's model_kwargs apply first (e.g. FocalNet-L/XL/H's normalize_modulator), the downstream ones win.
        self.model = build_model(model_name, pretrained=False, drop_path_rate=drop_path_rate, **model_kwargs)
        if not hasattr(self.model, "forward_intermediates") or not getattr(self.model, "feature_info", None):
            raise TypeError(f"ZooBackbone: {model_name} has no forward_intermediates/feature_info, so it cannot give "
                            "multi-scale features")
        feature_info = list(self.model.feature_info)
        self.out_indices = _check_out_indices(out_indices, len(feature_info), model_name)
        self.out_channels = [int(feature_info[i]["num_chs"]) for i in self.out_indices]
        self.out_strides = [int(feature_info[i]["reduction"]) for i in self.out_indices]
        self._stage_modules = [info["module"] for info in feature_info]

        self.pretrained = pretrained
        if pretrained is not None:
            _load_pretrained(self.model, pretrained, model_name, model_kwargs)
        # The classifier head and final norm are not used by a dense-prediction backbone; drop them (and any stage
        # after the last requested level) so DDP finds no unused parameters.
        self.model.prune_intermediate_layers(indices=list(self.out_indices), prune_norm=True, prune_head=True)

        self.out_norm = out_norm
        self.out_norms = nn.ModuleList(_out_norm_layer(out_norm, c) for c in self.out_channels)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self._frozen_module_names: list[str] = []
        self._freeze_stages()

    # -- stages and freezing -----------------------------------------------------------------------------------------
    def parameter_stage(self) -> dict[str, int]:
        """Stage index of every model parameter: -1 for the stem, k for stage k (as in ``feature_info``)."""
        return _assign_stages([n for n, _ in self.model.named_parameters()], self._stage_modules)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        if self.frozen_stages > len(self._stage_modules):
            raise ValueError(f"frozen_stages={self.frozen_stages} but {self.model_name} has "
                             f"{len(self._stage_modules)} stages")
        stages = self.parameter_stage()
        frozen = {name for name, stage in stages.items() if stage < self.frozen_stages}
        for name, param in self.model.named_parameters():
            if name in frozen:
                param.requires_grad_(False)
        # Modules whose parameters are all frozen run in eval mode (their norms' statistics and dropouts too).
        for name, module in self.model.named_modules():
            params = [n for n, _ in module.named_parameters(prefix=name)] if name else []
            if params and all(p in frozen for p in params):
                if not any(name.startswith(f + ".") for f in self._frozen_module_names):
                    self._frozen_module_names.append(name)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            modules = dict(self.model.named_modules())
            for name in self._frozen_module_names:
                modules[name].eval()
            if self.norm_eval:
                for module in self.modules():
                    if isinstance(module, _BatchNorm):
                        module.eval()
        return self

    # -- weights -----------------------------------------------------------------------------------------------------
    def init_weights(self):
        """Initialise only what this wrapper adds; never re-initialise the wrapped model.

        mmengine's BaseModule.init_weights would call the timm model's own ``init_weights`` (ViT-style models have
        one), wiping pretrained weights; the timm model is initialised by its constructor and by ``pretrained``.
        """
        if self.init_cfg:
            super().init_weights()  # non-Pretrained init_cfg applies to the whole wrapper, as the user asked
        self._is_init = True

    # -- forward -----------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.forward_intermediates(x, indices=list(self.out_indices), intermediates_only=True)
        outs = []
        for feature, norm, channels in zip(features, self.out_norms, self.out_channels):
            if feature.ndim != 4 or feature.shape[1] != channels:
                raise RuntimeError(f"{self.model_name}.forward_intermediates returned {tuple(feature.shape)}, "
                                   f"expected NCHW with {channels} channels")
            outs.append(norm(feature))
        return tuple(outs)


# --------------------------------------------------------------------------------------------------------------------
# Build-time checks and loading
# --------------------------------------------------------------------------------------------------------------------
def _check_model_name(model_name: str) -> None:
    if timm.is_model(model_name):
        return
    close = difflib.get_close_matches(model_name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"ZooBackbone: unknown model_name {model_name!r}.{hint} "
                     "List names with `python -c \"import attnzoo, timm; print(timm.list_models('*former*'))\"`.")


def _check_out_indices(out_indices: Sequence[int], num_levels: int, model_name: str) -> tuple[int, ...]:
    if isinstance(out_indices, int):
        out_indices = (out_indices,)
    normalised = []
    for index in out_indices:
        if not -num_levels <= index < num_levels:
            raise ValueError(f"ZooBackbone: out_indices {tuple(out_indices)} out of range: {model_name} has "
                             f"{num_levels} feature levels (0..{num_levels - 1})")
        normalised.append(index % num_levels)
    if sorted(set(normalised)) != normalised:
        raise ValueError(f"ZooBackbone: out_indices must be increasing and unique, got {tuple(out_indices)}")
    return tuple(normalised)


def _take_pretrained_init_cfg(init_cfg, pretrained):
    """Turn ``init_cfg=dict(type='Pretrained', checkpoint=...)`` into ``pretrained`` (strict loading)."""
    if init_cfg is None:
        return None, pretrained
    cfgs = [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg)
    rest = []
    for cfg in cfgs:
        if cfg.get("type") == "Pretrained":
            if pretrained is not None and pretrained != cfg.get("checkpoint"):
                raise ValueError("ZooBackbone: both pretrained and init_cfg=dict(type='Pretrained') are set; keep one")
            if cfg.get("prefix"):
                raise ValueError("ZooBackbone: init_cfg Pretrained with a prefix is not supported; pass the "
                                 "backbone-only checkpoint as pretrained=")
            pretrained = cfg["checkpoint"]
        else:
            rest.append(cfg)
    return (rest or None), pretrained


_INDEXED = re.compile(r"^([A-Za-z_]\w*?)\.?(\d+)(?:\.|$)")  # "downsample_layers.1.x", "norm2.weight", "pos_embed3"


def _assign_stages(param_names: list[str], stage_modules: list[str]) -> dict[str, int]:
    """Map each parameter (in registration order) to -1 (stem) or its stage, from the ``feature_info`` modules.

    A parameter inside a stage module belongs to that stage. Outside them, a container indexed once per stage belongs
    to the indexed stage: numbered 1..n (PVT's ``patch_embed1`` / ``pos_embed1``): stage k-1; numbered 0..n-1 and
    registered after the stages (per-stage output norms: Swin's ``norm0``, BiFormer's ``extra_norms.0``): stage k;
    numbered 0..n-1 and registered before them (BiFormer's ``downsample_layers``): index 0 is the stem, k the
    downsampling in front of stage k. Anything else before the first stage is stem; after the stages, it is never
    frozen (stage n).
    """
    num_stages = len(stage_modules)

    def stage_of_module(name):
        return next((k for k, module in enumerate(stage_modules) if name.startswith(module + ".")), None)

    first_stage_position = next((i for i, n in enumerate(param_names) if stage_of_module(n) is not None),
                                len(param_names))
    containers: dict[str, tuple[set[int], int]] = {}
    for position, name in enumerate(param_names):
        match = _INDEXED.match(name)
        if match and stage_of_module(name) is None:
            indices, first = containers.get(match.group(1), (set(), position))
            containers[match.group(1)] = (indices | {int(match.group(2))}, first)

    stages: dict[str, int] = {}
    for position, name in enumerate(param_names):
        stage = stage_of_module(name)
        match = _INDEXED.match(name)
        if stage is None and match and match.group(1) in containers:
            indices, first = containers[match.group(1)]
            index = int(match.group(2))
            if indices == set(range(1, num_stages + 1)):
                stage = index - 1
            elif indices == set(range(num_stages)):
                stage = index if first > first_stage_position or index > 0 else -1
        if stage is None:
            stage = -1 if position < first_stage_position else num_stages
        stages[name] = stage
    return stages


def _pad_focal_kernels(state_dict: dict, model: nn.Module) -> dict:
    """FocalNet's dense-prediction models use larger focal kernels than the ImageNet ones (``focal_windows=9``:
    9/11/13 instead of 3/5/7); the pretrained depthwise kernels are zero-padded around the centre (or centre-cropped),
    as microsoft/FocalNet detection/mmcv_custom/checkpoint.py does."""
    target = model.state_dict()
    adapted = dict(state_dict)
    for key, value in state_dict.items():
        want = target.get(key)
        if "focal_layers" not in key or value.ndim != 4 or want is None or want.shape == value.shape:
            continue
        if want.shape[:2] != value.shape[:2]:
            continue  # a real mismatch; reported by the strict check
        size, new_size = value.shape[-1], want.shape[-1]
        if new_size > size:
            offset = (new_size - size) // 2
            padded = value.new_zeros(want.shape)
            padded[..., offset:offset + size, offset:offset + size] = value
            adapted[key] = padded
        else:
            offset = (size - new_size) // 2
            adapted[key] = value[..., offset:offset + new_size, offset:offset + new_size].clone()
    return adapted


# Per-family changes to ImageNet weights for the downstream variant (keyed by attnzoo.models.family_of).
PRETRAINED_ADAPTERS = {"focalnet": _pad_focal_kernels}


def _load_pretrained(model: nn.Module, pretrained: str, model_name: str, model_kwargs: dict) -> None:
    """Load classification weights strictly: every checkpoint tensor must fit, and only the layers the downstream
    options add may be missing (and only the layers they remove, e.g. a head, may be left over)."""
    # Keys the model has as its card builds it; the difference to `model` is what the downstream options changed.
    with torch.device("meta"):
        plain = build_model(model_name, pretrained=False)
    plain_keys, model_keys = set(plain.state_dict()), set(model.state_dict())
    added, removed = model_keys - plain_keys, plain_keys - model_keys
    family = family_of(model_name)
    adapter = PRETRAINED_ADAPTERS.get(family)
    where = f"ZooBackbone({model_name}): pretrained={pretrained!r}"

    def filter_fn(state_dict, target):
        family_filter = checkpoint_filter_fn_for(target)
        if family_filter is not None:
            try:
                state_dict = family_filter(state_dict, target)
            except (KeyError, IndexError, RuntimeError, ValueError) as err:  # e.g. timm's filters on foreign keys
                raise CheckpointError(
                    f"{where} does not match the model: the {family} checkpoint filter failed on it "
                    f"({type(err).__name__}: {err}). Is it a checkpoint of another family? Use this model's own "
                    "checkpoint or card (`zoo card <name>`).") from err
        return adapter(state_dict, target) if adapter is not None else state_dict

    load_checkpoint(model, pretrained, strict=True, filter_fn=filter_fn, allow_missing=added,
                    allow_unexpected=removed,
                    allowed="the layers the downstream options add may be missing, those they remove may be left over",
                    fix="Is it a checkpoint of another family or variant? Use this model's own checkpoint or card "
                        "(`zoo card <name>`).")

