"""The zoo's backbones in Hugging Face transformers' detectors and segmenters: RT-DETR, Mask2Former, UperNet.

    from attnzoo.integrations.transformers import rt_detr_config
    from transformers import RTDetrForObjectDetection

    config = rt_detr_config("biformer_tiny", num_labels=4)  # the backbone's channels and strides filled in
    model = RTDetrForObjectDetection(config)                # Trainer, save_pretrained, ... are transformers' own

    # in another process: this import first, then transformers' from_pretrained
    import attnzoo.integrations.transformers  # noqa: F401
    model = RTDetrForObjectDetection.from_pretrained("my-detector")

transformers builds any timm model as a backbone through ``TimmBackboneConfig``; this module gives that config for a
zoo name, with three differences that are the traps of the plain route:

* **No network call.** :func:`backbone_config` builds nothing on the Hub's word: the config names the model and the
  feature levels, which are read from timm's ``feature_info`` on a meta-device build (no weights, no download). (The
  plain ``RTDetrConfig(backbone="biformer_tiny")`` asks the Hub whether a repository of that name exists.)
* **The channel lists come from the backbone.** :func:`rt_detr_config` fills in RT-DETR's ``encoder_in_channels``
  and ``feat_strides``, :func:`mask2former_config` its ``feature_strides`` and ``common_stride``, :func:`upernet_config`
  the levels; a value given by hand that disagrees with the backbone is one :class:`BackboneMismatchError`.
* **The zoo's builder.** The config is a :class:`ZooBackboneConfig` (a ``TimmBackboneConfig`` of model type
  ``attnzoo_backbone``) that also keeps the constructor arguments (``model_kwargs``: widths, depths, ``img_size``,
  ...); :class:`ZooBackbone` builds it as :func:`attnzoo.create_model` does (the card's ``model_kwargs`` under the
  config's, as everywhere in the zoo) and restores the buffers a model computes in its constructor (Swin skeletons' ``pad_value``)
  after transformers' ``from_pretrained``, which builds models on the meta device and keeps only saved tensors.

Loading a saved model: transformers learns the model type ``attnzoo_backbone`` when this module is imported (it
calls :func:`register`). In a process that has not imported it, transformers' ``from_pretrained`` fails with
``KeyError: 'attnzoo_backbone'`` (its table of model types lacks it); ``import attnzoo`` alone is not enough, because
it never imports transformers.

Only this module imports transformers (the ``hf`` extra: ``pip install 'attnzoo[hf]'``); ``import attnzoo`` does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import timm
import torch
from huggingface_hub.dataclasses import strict
from transformers import (
    AutoBackbone,
    AutoConfig,
    Mask2FormerConfig,
    RTDetrConfig,
    TimmBackboneConfig,
    UperNetConfig,
)
from transformers.models.timm_backbone.modeling_timm_backbone import TimmBackbone

from ..errors import ZooError
from ..models.arguments import check_model_kwargs
from ..models.builder import model_kwargs_for
from ..models.registry import require_model

__all__ = [
    "MODEL_TYPE",
    "BackboneMismatchError",
    "FeatureLevel",
    "OutIndicesError",
    "TransformersBridgeError",
    "ZooBackbone",
    "ZooBackboneConfig",
    "backbone_channels",
    "backbone_config",
    "backbone_strides",
    "feature_levels",
    "image_processor_kwargs",
    "mask2former_config",
    "register",
    "rt_detr_config",
    "upernet_config",
]

MODEL_TYPE = "attnzoo_backbone"


class TransformersBridgeError(ZooError, ValueError):
    """A request the transformers bridge cannot fulfil; the message names the fix."""


class OutIndicesError(TransformersBridgeError):
    """``out_indices`` that the backbone's feature levels do not have (or not in order)."""


class BackboneMismatchError(TransformersBridgeError):
    """A detector / segmenter setting given by hand that disagrees with the backbone's feature levels."""


class FeatureLevel(NamedTuple):
    """One of a backbone's feature levels, from timm's ``feature_info``."""

    index: int
    module: str
    channels: int
    reduction: int


def _tuples(value: Any) -> Any:
    """JSON keeps lists where the constructors were given tuples: both builds (fresh and reloaded) get tuples."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _lists(value: Any) -> Any:
    """The JSON form of ``model_kwargs`` (what config.json holds), so a config equals its reloaded self."""
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value


def _build(name: str, **kwargs: Any) -> torch.nn.Module:
    """The zoo model ``name`` without weights, with its card's ``model_kwargs`` under ``kwargs`` (as
    :func:`attnzoo.create_model`, which would read a folder of that name in the working directory instead: the bridge
    names models, never folders)."""
    require_model(name)
    return timm.create_model(name, pretrained=False, **model_kwargs_for(name, **kwargs))


_LEVELS: dict[tuple[str, str], tuple[FeatureLevel, ...]] = {}


def feature_levels(name: str, **model_kwargs: Any) -> list[FeatureLevel]:
    """The feature levels of zoo model ``name`` built with ``model_kwargs`` (and its card's): index, module, channels,
    reduction, read from timm's ``feature_info`` on a meta-device build (no weights, no download)."""
    require_model(name)
    key = (name, repr(sorted(_lists(model_kwargs).items())))
    if key not in _LEVELS:
        with torch.device("meta"):  # no weights are made, none are read
            model = _build(name, **_tuples(model_kwargs))
        info = getattr(model, "feature_info", None)
        if not info:
            raise TransformersBridgeError(f"{name} has no feature levels (timm's feature_info): it cannot be a "
                                          "backbone.")
        _LEVELS[key] = tuple(FeatureLevel(i, level["module"], int(level["num_chs"]), int(level["reduction"]))
                             for i, level in enumerate(info))
    return list(_LEVELS[key])


def _out_indices(name: str, levels: Sequence[FeatureLevel], out_indices: Sequence[int] | None,
                 default_count: int | None) -> list[int]:
    count = len(levels)
    if out_indices is None:
        start = 0 if default_count is None else max(0, count - default_count)
        return list(range(start, count))
    indices = [int(i) for i in out_indices]
    positive = [i % count if -count <= i < count else None for i in indices]
    if None in positive or not positive or positive != sorted(set(positive)):
        raise OutIndicesError(
            f"out_indices {tuple(indices)} for {name}: it has feature levels 0..{count - 1} "
            f"({', '.join(f'{lv.index}: {lv.channels} channels at 1/{lv.reduction}' for lv in levels)}); "
            "give distinct levels in increasing order.")
    return positive


@strict
class ZooBackboneConfig(TimmBackboneConfig):
    r"""
    A ``TimmBackboneConfig`` for a zoo model, built with its card's ``model_kwargs`` under these.

    model_kwargs (`dict`, *optional*):
        The constructor arguments of the model (widths, depths, ``img_size``, ...) on top of its card's.
    """

    model_type = MODEL_TYPE

    model_kwargs: dict | None = None


def _non_persistent_buffers(module: torch.nn.Module):
    for prefix, sub in module.named_modules():
        for name in getattr(sub, "_non_persistent_buffers_set", ()):
            buffer = sub._buffers.get(name)
            if buffer is not None:
                yield f"{prefix}.{name}" if prefix else name, sub, name, buffer


def _build_features(config: ZooBackboneConfig, **kwargs: Any) -> torch.nn.Module:
    out_indices = config.out_indices if config.out_indices is not None else (-1,)
    extra = {"output_stride": config.output_stride} if config.output_stride is not None else {}
    return _build(config.backbone, features_only=config.features_only, out_indices=tuple(out_indices),
                  in_chans=kwargs.pop("in_chans", config.num_channels), **_tuples(config.model_kwargs or {}),
                  **extra, **kwargs)


class ZooBackbone(TimmBackbone):
    """transformers' ``TimmBackbone`` around a zoo model built with its card's and ``config.model_kwargs``, whose
    constructor-made buffers survive ``from_pretrained``."""

    config_class = ZooBackboneConfig
    config: ZooBackboneConfig

    def __init__(self, config: ZooBackboneConfig, **kwargs):
        if config.backbone is None:
            raise ValueError("backbone is not set in the config: set it to a zoo model name.")
        if kwargs.pop("pretrained", False):
            raise TransformersBridgeError("ZooBackbone builds without weights (pretrained=True is not supported); a "
                                          "saved model loads with from_pretrained")
        backbone = _build_features(config, **kwargs)
        # Buffers the constructor computes and no file holds (persistent=False): on the meta device (transformers'
        # from_pretrained) they would be left as empty memory, so their values come from a CPU twin.
        buffers = {key: buf for key, _, _, buf in _non_persistent_buffers(backbone)}
        if any(buf.is_meta for buf in buffers.values()):
            with torch.device("cpu"):
                twin = _build_features(config)
            values = {key: buf.detach().clone() for key, _, _, buf in _non_persistent_buffers(twin)}
        else:
            values = {key: buf.detach().clone() for key, buf in buffers.items()}
        # Same steps as TimmBackbone.__init__, with the zoo's builder.
        super(TimmBackbone, self).__init__(config, timm_backbone=backbone)
        self._backbone = backbone
        self._zoo_buffer_values = {id(sub): {} for _, sub, _, _ in _non_persistent_buffers(backbone)}
        for key, sub, name, _ in _non_persistent_buffers(backbone):
            self._zoo_buffer_values[id(sub)][name] = values[key]
        if getattr(config, "freeze_batch_norm_2d", False):
            self.freeze_batch_norm_2d()
        self._return_layers = {layer["module"]: str(layer["index"]) for layer in backbone.feature_info.get_dicts()}
        self._all_layers = {layer["module"]: str(i) for i, layer in enumerate(backbone.feature_info.info)}
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):  # TimmBackbone's builds timm's own config from a name
        return super(TimmBackbone, cls).from_pretrained(*args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        values = getattr(self, "_zoo_buffer_values", {}).get(id(module))
        for name, value in (values or {}).items():
            buffer = module._buffers.get(name)
            if buffer is not None and not buffer.is_meta:
                buffer.copy_(value.to(buffer.device, buffer.dtype))


def register() -> None:
    """Teach transformers' Auto classes the model type ``attnzoo_backbone`` (idempotent; importing this module
    calls it). ``from_pretrained`` of a model with a zoo backbone needs it first."""
    AutoConfig.register(MODEL_TYPE, ZooBackboneConfig, exist_ok=True)
    AutoBackbone.register(ZooBackboneConfig, ZooBackbone, exist_ok=True)


register()


def backbone_config(name: str, out_indices: Sequence[int] | None = None, *, num_channels: int = 3,
                    freeze_batch_norm_2d: bool = False, **model_kwargs: Any) -> ZooBackboneConfig:
    """The transformers backbone config of zoo model ``name``: its feature levels ``out_indices`` (timm's
    ``feature_info`` indices; all levels by default), built with ``model_kwargs`` on top of its card's.

    No network call and no weights: the name and the arguments are checked on a meta-device build
    (:class:`~attnzoo.cards.UnknownModelError`, :class:`~attnzoo.models.arguments.ModelArgumentError`,
    :class:`OutIndicesError`, all :class:`~attnzoo.errors.ZooError`). The channels of the chosen levels are
    :func:`backbone_channels`, their reductions :func:`backbone_strides`.
    """
    return _backbone_config(name, out_indices, None, num_channels, freeze_batch_norm_2d, model_kwargs)


def _backbone_config(name, out_indices, default_count, num_channels, freeze_batch_norm_2d, model_kwargs):
    require_model(name)
    if model_kwargs:
        check_model_kwargs(name, model_kwargs)
    levels = feature_levels(name, **model_kwargs)
    indices = _out_indices(name, levels, out_indices, default_count)
    return ZooBackboneConfig(backbone=name, out_indices=indices, num_channels=num_channels,
                             freeze_batch_norm_2d=freeze_batch_norm_2d, model_kwargs=_lists(model_kwargs) or None)


def _selected_levels(config: TimmBackboneConfig) -> list[FeatureLevel]:
    kwargs = _tuples(getattr(config, "model_kwargs", None) or {})
    levels = feature_levels(config.backbone, **kwargs)
    indices = config.out_indices if config.out_indices is not None else [-1]
    return [levels[i] for i in indices]


def backbone_channels(config: TimmBackboneConfig) -> list[int]:
    """The channels of the levels ``config`` outputs (what the detector's input projections take)."""
    return [level.channels for level in _selected_levels(config)]


def backbone_strides(config: TimmBackboneConfig) -> list[int]:
    """The reductions (strides) of the levels ``config`` outputs."""
    return [level.reduction for level in _selected_levels(config)]


def _resolve(backbone: str | TimmBackboneConfig, out_indices, model_kwargs, default_count) -> TimmBackboneConfig:
    if isinstance(backbone, TimmBackboneConfig):
        if out_indices is not None or model_kwargs:
            raise TransformersBridgeError("give out_indices and model_kwargs to backbone_config, not next to a "
                                          "backbone config")
        return backbone
    return _backbone_config(backbone, out_indices, default_count, 3, False, dict(model_kwargs or {}))


def _check_given(kwargs: dict, key: str, value: list[int], what: str) -> None:
    given = kwargs.get(key)
    if given is not None and [int(v) for v in given] != list(value):
        raise BackboneMismatchError(f"{key}={list(given)} but the backbone's levels have {what} {value}; leave "
                                    f"{key} out and the bridge fills it in")


def rt_detr_config(backbone: str | TimmBackboneConfig, out_indices: Sequence[int] | None = None,
                   model_kwargs: dict | None = None, **config_kwargs: Any) -> RTDetrConfig:
    """``RTDetrConfig`` on a zoo backbone: ``encoder_in_channels`` and ``feat_strides`` from the backbone's levels
    (by default its last three, strides 8, 16, 32 on the zoo's four-level families), ``config_kwargs`` as
    RTDetrConfig's own (``num_labels``, ``d_model``, ``num_queries``, ...)."""
    config = _resolve(backbone, out_indices, model_kwargs, 3)
    channels, strides = backbone_channels(config), backbone_strides(config)
    _check_given(config_kwargs, "encoder_in_channels", channels, "channels")
    _check_given(config_kwargs, "feat_strides", strides, "strides")
    hidden = config_kwargs.get("encoder_hidden_dim", 256)
    config_kwargs.setdefault("decoder_in_channels", [hidden] * len(channels))
    config_kwargs.setdefault("num_feature_levels", len(channels))
    return RTDetrConfig(backbone_config=config, encoder_in_channels=channels, feat_strides=strides,
                        encode_proj_layers=config_kwargs.pop("encode_proj_layers", [len(channels) - 1]),
                        **config_kwargs)


def mask2former_config(backbone: str | TimmBackboneConfig, out_indices: Sequence[int] | None = None,
                       model_kwargs: dict | None = None, **config_kwargs: Any) -> Mask2FormerConfig:
    """``Mask2FormerConfig`` on a zoo backbone: ``feature_strides`` and ``common_stride`` from the backbone's levels
    (by default all four: the first makes the mask features, the last three feed the pixel decoder's transformer)."""
    config = _resolve(backbone, out_indices, model_kwargs, 4)
    strides = backbone_strides(config)
    if len(strides) < 2:
        raise OutIndicesError("Mask2Former needs at least two feature levels (mask features + one for the decoder)")
    _check_given(config_kwargs, "feature_strides", strides, "strides")
    config_kwargs.setdefault("common_stride", strides[0])
    return Mask2FormerConfig(backbone_config=config, feature_strides=strides, **config_kwargs)


def upernet_config(backbone: str | TimmBackboneConfig, out_indices: Sequence[int] | None = None,
                   model_kwargs: dict | None = None, **config_kwargs: Any) -> UperNetConfig:
    """``UperNetConfig`` on a zoo backbone (by default all four levels; the auxiliary head reads the third, as
    UperNet's)."""
    config = _resolve(backbone, out_indices, model_kwargs, 4)
    if len(backbone_channels(config)) < 3 and config_kwargs.get("use_auxiliary_head", True):
        raise OutIndicesError("UperNet's auxiliary head reads the third level: give three levels or more, or "
                              "use_auxiliary_head=False")
    return UperNetConfig(backbone_config=config, **config_kwargs)


def image_processor_kwargs(name: str) -> dict[str, Any]:
    """The normalisation the zoo model ``name`` was trained with (its timm ``pretrained_cfg``: mean and std), as
    image-processor arguments: ``RTDetrImageProcessor(**image_processor_kwargs(name), size=...)``. (RT-DETR's own
    processor does not normalise by default: its ResNet was trained on 0..1 inputs.)"""
    require_model(name)
    cfg = timm.get_pretrained_cfg(name)
    mean = tuple(cfg.mean) if cfg is not None else (0.485, 0.456, 0.406)
    std = tuple(cfg.std) if cfg is not None else (0.229, 0.224, 0.225)
    return {"do_normalize": True, "image_mean": list(mean), "image_std": list(std)}
