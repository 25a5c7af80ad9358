"""OpenMMLab glue: any zoo or timm model as an mmdet / mmseg backbone, and Runner checkpoints that load on torch >= 2.6.

Only configs (``custom_imports=dict(imports=['zoo.openmmlab'])``) and ``tools/train.py`` / ``tools/test.py`` import this
module; ``import zoo`` never does, so the zoo works without mmdet / mmseg installed.

What importing it does:

* registers :class:`ZooBackbone` in mmdet's and mmseg's ``MODELS`` (whichever of the two is installed);
* registers the :mod:`zoo.layers` attentions as mmcv plug-ins under their class names (``BiLevelRoutingAttention2d``,
  ``AgentAttention2d``, ``FlowAttention2d``, ``SimplifiedLinearAttention2d``: ``x + gamma * layer(x)`` with ``gamma``
  starting at 0; ``ELA``: the gate itself), so ``plugins=[dict(cfg=dict(type='BiLevelRoutingAttention2d'), stages=(False, True, True, True),
  position='after_conv2')]`` builds in mmdet's and mmseg's ResNets;
* allow-lists, with ``torch.serialization.add_safe_globals``, exactly the non-tensor objects an mmengine Runner
  checkpoint holds (mmengine 0.10.7 calls ``torch.load`` without ``weights_only``, which torch >= 2.6 treats as
  ``weights_only=True``; without the list, ``--resume``, ``load_from`` and ``tools/test.py`` fail with
  "Unsupported global: mmengine.logging.history_buffer.HistoryBuffer"). ``weights_only`` stays on.
"""

from __future__ import annotations

import difflib
import pickle
import re
import warnings
from collections.abc import Sequence

import numpy as np
import timm
import torch
from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import zoo  # noqa: F401  (registers every zoo family with timm)

__all__ = ["ZooBackbone", "PLUGIN_LAYERS", "RUNNER_CHECKPOINT_GLOBALS", "register_runner_checkpoint_globals"]


# --------------------------------------------------------------------------------------------------------------------
# Runner checkpoints under torch.load(weights_only=True)
# --------------------------------------------------------------------------------------------------------------------
def _history_buffer_method(owner, name: str):
    """Stands in for ``builtins.getattr`` while torch.load(weights_only=True) unpickles a Runner checkpoint.

    ``HistoryBuffer.__getstate__`` stores its statistics methods (``HistoryBuffer.min``, ...) by reference, which
    pickle writes as ``getattr(HistoryBuffer, 'min')``. Allowing ``getattr`` itself would let a checkpoint reach any
    attribute of any allowed object, so only this one lookup is honoured.
    """
    from mmengine.logging.history_buffer import HistoryBuffer

    if owner is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f"checkpoint asks for getattr({owner!r}, {name!r}); only HistoryBuffer's statistics "
                                 f"methods {sorted(_HISTORY_BUFFER_METHODS)} are allowed")


_HISTORY_BUFFER_METHODS = frozenset({"min", "max", "current", "mean"})


def _runner_checkpoint_globals() -> list:
    """The classes and functions a Runner checkpoint pickles besides tensors and plain containers.

    Found with ``torch.serialization.get_unsafe_globals_in_checkpoint`` on checkpoints of the configs in configs/:
    ``message_hub`` holds ``HistoryBuffer`` objects (numpy arrays, and their statistics methods through
    ``getattr``, see :func:`_history_buffer_method`); ``runtime_info`` holds numpy scalars.
    """
    from mmengine.logging.history_buffer import HistoryBuffer

    try:  # numpy >= 2 moved the pickling helpers to numpy._core
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar

    allowed = [HistoryBuffer, _reconstruct, scalar, np.ndarray, np.dtype, (_history_buffer_method, "builtins.getattr")]
    # numpy >= 1.25 rebuilds a dtype as an instance of its class (numpy.dtypes.Float64DType, ...): the dtypes that
    # logged values and counts take (harmless data types).
    dtype_classes = getattr(np, "dtypes", None)
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        if hasattr(dtype_classes, name):
            allowed.append(getattr(dtype_classes, name))
    return allowed


RUNNER_CHECKPOINT_GLOBALS = _runner_checkpoint_globals()


def register_runner_checkpoint_globals() -> None:
    """Allow-list what a Runner checkpoint needs for ``torch.load(weights_only=True)``; idempotent."""
    torch.serialization.add_safe_globals(RUNNER_CHECKPOINT_GLOBALS)


register_runner_checkpoint_globals()


# --------------------------------------------------------------------------------------------------------------------
# The backbone
# --------------------------------------------------------------------------------------------------------------------
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
        pretrained: ``None``, a checkpoint path, or a model-card name; loaded through ``zoo.load_checkpoint`` (the
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
        self.model = timm.create_model(model_name, pretrained=False, drop_path_rate=drop_path_rate, **model_kwargs)
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
                     "List names with `python -c \"import zoo, timm; print(timm.list_models('*former*'))\"`.")


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


# Per-family changes to ImageNet weights for the downstream variant (keyed by zoo.registry.family_of).
PRETRAINED_ADAPTERS = {"focalnet": _pad_focal_kernels}


def _load_pretrained(model: nn.Module, pretrained: str, model_name: str, model_kwargs: dict) -> None:
    """Load classification weights strictly: every checkpoint tensor must fit, and only the layers the downstream
    options add may be missing (and only the layers they remove, e.g. a head, may be left over)."""
    from zoo.checkpoint import CheckpointError, load_checkpoint
    from zoo.registry import checkpoint_filter_fn_for, family_of

    # Keys the plain classification model has; the difference to `model` is what the downstream options changed.
    with torch.device("meta"):
        plain = timm.create_model(model_name, pretrained=False)
    plain_keys, model_keys = set(plain.state_dict()), set(model.state_dict())
    added, removed = model_keys - plain_keys, plain_keys - model_keys

    family_filter = checkpoint_filter_fn_for(model)
    adapter = PRETRAINED_ADAPTERS.get(family_of(model_name))

    def filter_fn(state_dict, target):
        if family_filter is not None:
            try:
                state_dict = family_filter(state_dict, target)
            except (KeyError, IndexError, RuntimeError, ValueError) as err:  # e.g. timm's filters on foreign keys
                raise ValueError(
                    f"ZooBackbone({model_name}): pretrained={pretrained!r} does not match the model: the "
                    f"{family_of(model_name)} checkpoint filter failed on it ({type(err).__name__}: {err}). Is it a "
                    "checkpoint of another family? Use this model's own checkpoint or card (`zoo card <name>`).") from err
        return adapter(state_dict, target) if adapter is not None else state_dict

    try:
        with warnings.catch_warnings():  # the misfit is judged below, with the downstream keys allowed
            warnings.simplefilter("ignore")
            result = load_checkpoint(model, pretrained, strict=False, filter_fn=filter_fn)
    except CheckpointError as err:
        raise ValueError(f"ZooBackbone({model_name}): pretrained={pretrained!r} cannot be loaded: {err}") from err
    missing = sorted(set(result.missing_keys) - added)
    unexpected = sorted(set(result.unexpected_keys) - removed)
    mismatched = [key for key, *_ in result.mismatched_shapes]
    if missing or unexpected or mismatched:
        fit = len(model_keys) - len(missing) - len(mismatched) - len(added)
        raise ValueError(
            f"ZooBackbone({model_name}): pretrained={pretrained!r} does not match the model "
            f"({fit}/{len(model_keys - added)} weights fit; missing {_few(missing)}, unexpected {_few(unexpected)}, "
            f"wrong shape {_few(mismatched)}). Is it a checkpoint of another family or variant? "
            "Use this model's own checkpoint or card (`zoo card <name>`).")


def _few(keys) -> str:
    keys = sorted(keys)
    return "[" + ", ".join(keys[:4]) + (f", ... {len(keys) - 4} more" if len(keys) > 4 else "") + "]"


# --------------------------------------------------------------------------------------------------------------------
# zoo.layers as mmcv plug-ins (ResNet's ``plugins=[dict(cfg=dict(type=...), stages=..., position=...)]``)
# --------------------------------------------------------------------------------------------------------------------
class _ResidualPlugin(nn.Module):
    """An attention layer as an mmcv plug-in: ``x + gamma * layer(x)`` with ``gamma`` initialised to 0.

    mmcv's ``build_plugin_layer`` passes ``in_channels`` and the plug-in's output replaces the block's feature map
    (mmdet/mmseg ResNet ``forward_plugin``), so an attention plug-in carries its own residual; the zero ``gamma`` (the
    convention of mmcv's GeneralizedAttention) leaves a pretrained ResNet's function unchanged at the first step.
    """

    layer_class: type[nn.Module]

    def __init__(self, in_channels: int, **layer_kwargs):
        super().__init__()
        self.layer = self.layer_class(in_channels, **layer_kwargs)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.layer(x)


class _GatePlugin(nn.Module):
    """A gating layer (ELA) as an mmcv plug-in: its output already is the input rescaled, so no residual is added."""

    layer_class: type[nn.Module]

    def __init__(self, in_channels: int, **layer_kwargs):
        super().__init__()
        self.layer = self.layer_class(in_channels, **layer_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _plugin_classes() -> dict[str, type[nn.Module]]:
    """Registered name -> plug-in class; ``_abbr_`` names the plug-in's attribute in the ResNet block."""
    from zoo import layers

    plugins = {}
    for name, layer, base, abbr in (
        ("BiLevelRoutingAttention2d", layers.BiLevelRoutingAttention2d, _ResidualPlugin, "bra"),
        ("AgentAttention2d", layers.AgentAttention2d, _ResidualPlugin, "agent_attention"),
        ("FlowAttention2d", layers.FlowAttention2d, _ResidualPlugin, "flow_attention"),
        ("SimplifiedLinearAttention2d", layers.SimplifiedLinearAttention2d, _ResidualPlugin, "slab_attention"),
        ("ELA", layers.ELA, _GatePlugin, "ela"),
    ):
        doc = f"mmcv plug-in form of :class:`zoo.layers.{name}` (built with ``in_channels``; see {base.__name__})."
        plugins[name] = type(f"{name}Plugin", (base,), {"layer_class": layer, "_abbr_": abbr, "__doc__": doc,
                                                        "__module__": __name__})
    return plugins


PLUGIN_LAYERS = _plugin_classes()


def _register() -> None:
    # mmcv's build_plugin_layer looks plug-ins up in the current scope's MODELS and then its parents, so the root
    # registry serves mmdet and mmseg configs alike.
    from mmengine.registry import MODELS as ROOT_MODELS

    for name, plugin in PLUGIN_LAYERS.items():
        ROOT_MODELS.register_module(name, module=plugin, force=True)

    registered = False
    errors = []
    for package in ("mmdet", "mmseg"):
        try:
            registry = __import__(f"{package}.registry", fromlist=["MODELS"]).MODELS
        except ImportError as err:  # e.g. mmcv-lite (no compiled ops) cannot import mmdet/mmseg
            errors.append(f"{package}: {err}")
            continue
        registry.register_module("ZooBackbone", module=ZooBackbone, force=True)
        registered = True
    if not registered:
        raise ImportError("zoo.openmmlab needs mmdet and/or mmsegmentation with full mmcv (not mmcv-lite): "
                          "`pip install 'attnzoo[mm]'` (see tools/install.sh). " + "; ".join(errors))


_register()
