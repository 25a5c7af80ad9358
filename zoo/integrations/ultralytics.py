"""The :mod:`attnzoo.layers` attentions in Ultralytics YOLO model YAMLs: call :func:`register` once, then name them.

    from attnzoo.integrations.ultralytics import register
    register()

    from ultralytics import YOLO
    model = YOLO("yolo11n-bra-neck.yaml")          # a shipped YAML (`zoo configs 'yolo/*'`) or your own

A YAML row names a layer without a channel count; the channels are those of the row it reads from, after the
n/s/m/l/x width scaling, so every scale of a YAML builds::

    - [-1, 1, BiLevelRoutingAttention2d, []]                         # all defaults
    - [-1, 1, BiLevelRoutingAttention2d, [8, 4]]                     # num_heads=8, topk=4 (the layer's order)
    - [-1, 1, BiLevelRoutingAttention2d, [{topk: 8, residual: false}]]  # keywords: one mapping, last
    - [4, 1, ELA, [{preset: S}]]

A row's arguments are checked against the layer's signature when the YAML is read (a word where a number belongs,
``[eight]``, is one line naming the argument), and a head count must leave each head at least
:data:`MIN_HEAD_CHANNELS` (8) channels: a YOLO row usually starts with a channel count, so ``[256]`` read as
``num_heads=256`` would silently build one-channel heads; it is refused with a line saying to leave the channel count
out.

Names: ``BiLevelRoutingAttention2d``, ``AgentAttention2d``, ``FlowAttention2d``, ``SimplifiedLinearAttention2d``,
``ELA`` (every 2D layer of :data:`attnzoo.integrations.forms.PLUGGABLE`). The arguments are the layer's own (see
:mod:`attnzoo.layers`) plus ``residual``: an attention is placed as ``x + gamma * layer(x)`` with ``gamma`` starting at 0
(``residual: true``, the default, as the mmcv plug-ins), ELA as the gate it is (``residual: false``, its default);
``residual: false`` makes an attention replace the map, ``residual: true`` puts ELA on a zero-initialised branch.

How it works. Ultralytics has no API for custom modules: ``ultralytics.nn.tasks.parse_model`` resolves a row's module
name with ``globals()[name]`` inside ``ultralytics.nn.tasks`` and hands the input channels only to its own closed set
of modules. :func:`register` (idempotent) therefore

1. puts the YOLO form of each layer (:class:`BiLevelRoutingAttention2d` etc. of this module: ``(c1, *args)``, the
   layer wrapped by :class:`~attnzoo.integrations.forms.PluggedLayer`) into that namespace, and
2. wraps ``parse_model``: when a YAML names a zoo layer, a first, silent pass builds the YAML with ``nn.BatchNorm2d``
   in the zoo layers' places (``parse_model`` gives ``BatchNorm2d`` the channels of the row it reads from) and reads
   those channel counts; the real pass then gets them as each zoo row's first argument. YAMLs without zoo layers go
   straight to Ultralytics' own ``parse_model``.

Everything else (training, validation, saving, prediction, export) is Ultralytics' own code.

Saved ``.pt`` files: Ultralytics pickles whole modules (``torch.save`` of the model object; it reads them back with
full unpickling, so load only files you trust). The layers are pickled as ``attnzoo.integrations.ultralytics.<Name>``
(holding ``attnzoo.backbones.layers.<Name>``), so a ``.pt`` reloads wherever attnzoo is installed and :func:`register` has
been called (:func:`register` also wraps Ultralytics' ``torch_safe_load`` so that a ``.pt`` saved by attnzoo 0.1, which
names ``zoo.integrations.ultralytics`` and ``backbones.layers``, loads too: :mod:`attnzoo.legacy`); loading it before raises :class:`NotRegisteredError` naming the call (fine-tuning from a ``.pt`` also
re-parses its YAML, which needs the registration). Ultralytics' opt-in restricted loading
(``ULTRALYTICS_SAFE_LOAD=1``) accepts only Ultralytics' and torch's classes and refuses such a ``.pt``.

Importing this module changes no behaviour of Ultralytics: it only puts placeholders under the layer names into
``ultralytics.nn.tasks`` that raise :class:`NotRegisteredError` (a YAML naming a zoo layer before :func:`register`
then fails with that one line instead of ``KeyError``). A process that never imports attnzoo gets Ultralytics'
``KeyError: 'BiLevelRoutingAttention2d'``.

Supported: Ultralytics :data:`SUPPORTED_VERSIONS` (the ``yolo`` extra pins it); :func:`register` refuses any other
version with :class:`UnsupportedUltralyticsError`, one line. Not covered: Ultralytics' multi-GPU training, which
re-runs the trainer in fresh processes that do not call :func:`register`.

Licence: Ultralytics is AGPL-3.0; attnzoo (Apache-2.0) does not include it, and only this module imports it.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import re
from typing import Any

from torch import nn

from ..errors import ZooError
from ..legacy import old_module_names
from .forms import PLUGGABLE, PluggedLayer

__all__ = [
    "LAYER_NAMES",
    "SUPPORTED_VERSIONS",
    "LayerArgumentError",
    "NotRegisteredError",
    "UltralyticsBridgeError",
    "UnsupportedUltralyticsError",
    "is_registered",
    "register",
]

SUPPORTED_VERSIONS = ">=8.3.20,<8.5"  # = the `yolo` extra's pin in pyproject.toml
_OLDEST, _FIRST_UNSUPPORTED = (8, 3, 20), (8, 5, 0)  # tested: 8.3.20, 8.3.253, 8.4.0, 8.4.190 (YOLO11 came in 8.3.0)
LAYER_NAMES = tuple(PLUGGABLE)
_REGISTER_CALL = "attnzoo.integrations.ultralytics.register()"


class UltralyticsBridgeError(ZooError):
    """A mistake in using the zoo layers with Ultralytics; the message names the fix."""


class MissingUltralyticsError(UltralyticsBridgeError, ImportError):
    """Ultralytics is not installed (the ``yolo`` extra)."""


class UnsupportedUltralyticsError(UltralyticsBridgeError):
    """The installed Ultralytics is not a version the bridge supports."""


class NotRegisteredError(UltralyticsBridgeError):
    """A zoo layer is built or loaded before :func:`register` was called."""


class LayerArgumentError(UltralyticsBridgeError, ValueError):
    """A YAML row gives a zoo layer arguments it does not take, or values it refuses."""


_state = {"registered": False}


def _tasks():
    try:
        from ultralytics.nn import tasks
    except ImportError as err:
        raise MissingUltralyticsError(f"attnzoo.integrations.ultralytics needs Ultralytics ({err}): pip install "
                                      f"'attnzoo[yolo]' (Ultralytics is AGPL-3.0)") from err
    return tasks


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def _check_version() -> str:
    import ultralytics

    version = getattr(ultralytics, "__version__", "unknown")
    if not (_OLDEST <= _version_tuple(version)[:3] < _FIRST_UNSUPPORTED):
        raise UnsupportedUltralyticsError(
            f"ultralytics {version} is not supported by attnzoo.integrations.ultralytics (supported: ultralytics"
            f"{SUPPORTED_VERSIONS}); install a supported one: pip install 'attnzoo[yolo]'")
    return version


def is_registered() -> bool:
    """Whether :func:`register` has run in this process."""
    return _state["registered"]


def register() -> tuple[str, ...]:
    """Make the zoo layers usable by name in Ultralytics model YAMLs and ``.pt`` files; returns the names.

    Idempotent. Raises :class:`UnsupportedUltralyticsError` on an Ultralytics outside :data:`SUPPORTED_VERSIONS`
    (one line) and :class:`MissingUltralyticsError` when Ultralytics is not installed.
    """
    tasks = _tasks()
    _check_version()
    if not callable(getattr(tasks, "parse_model", None)):
        raise UnsupportedUltralyticsError("this Ultralytics has no ultralytics.nn.tasks.parse_model to extend; "
                                          f"install a supported one (ultralytics{SUPPORTED_VERSIONS})")
    if not getattr(tasks.parse_model, "_zoo_bridge", False):
        tasks.parse_model = _parse_model_with_zoo_layers(tasks.parse_model)
    if callable(getattr(tasks, "torch_safe_load", None)) and not getattr(tasks.torch_safe_load, "_zoo_bridge", False):
        tasks.torch_safe_load = _load_with_old_module_names(tasks.torch_safe_load)
    for name, cls in YOLO_LAYERS.items():
        setattr(tasks, name, cls)
    _state["registered"] = True
    return LAYER_NAMES


def _load_with_old_module_names(torch_safe_load):
    """Ultralytics' ``.pt`` reader, with the module paths of attnzoo 0.1 (``zoo.integrations.ultralytics.<Name>``,
    ``backbones.layers.<Name>``) resolving during the read (:func:`attnzoo.legacy.old_module_names`)."""

    @functools.wraps(torch_safe_load)
    def load(*args, **kwargs):
        with old_module_names():
            return torch_safe_load(*args, **kwargs)

    load._zoo_bridge = True
    return load


# ----------------------------------------------------------------------------------------------------------------------
# The YOLO form of each layer: (c1, *args), args as a YAML row gives them
# ----------------------------------------------------------------------------------------------------------------------


MIN_HEAD_CHANNELS = 8  # a row's num_heads must leave each head at least this many channels (see _check_head_count)


def _layer_parameters(layer_class: type[nn.Module]) -> list[str]:
    """The layer's arguments after the channel count, in order."""
    return list(inspect.signature(layer_class).parameters)[1:]


def _split_arguments(name: str, args: tuple, kwargs: dict) -> tuple[list, dict]:
    """A YAML row's ``[positional..., {keywords}]`` -> (positional, keywords)."""
    positional = list(args)
    keywords = dict(kwargs)
    if positional and isinstance(positional[-1], dict):
        keywords = {**positional.pop(), **keywords}
    if any(isinstance(a, dict) for a in positional):
        raise LayerArgumentError(f"{name}: keyword arguments go in one mapping at the end of the row's arguments, "
                                 f"e.g. [{{topk: 8, residual: false}}]")
    return positional, keywords


def _check_arguments(name: str, layer_class: type[nn.Module], positional: list, keywords: dict, where: str = "") -> None:
    """Raise :class:`LayerArgumentError` (one line, naming the fix) for arguments the layer does not take."""
    accepted = _layer_parameters(layer_class)
    takes = f"{name} takes {', '.join(accepted)} (in that order, or as a mapping) and residual"
    unknown = [key for key in keywords if key not in accepted and key != "residual"]
    if unknown:
        close = difflib.get_close_matches(unknown[0], [*accepted, "residual"], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise LayerArgumentError(f"{where}{name} takes no argument '{unknown[0]}'{hint}; {takes}; the channel "
                                 f"count comes from the row it reads from")
    if len(positional) > len(accepted):
        raise LayerArgumentError(f"{where}{name} got {len(positional)} positional arguments {positional}, it takes "
                                 f"at most {len(accepted)}: {takes}; the channel count comes from the row it reads "
                                 f"from, do not give it")
    doubled = [key for key in accepted[:len(positional)] if key in keywords]
    if doubled:
        raise LayerArgumentError(f"{where}{name} got '{doubled[0]}' both by position and in the mapping; give it once")
    given = {**dict(zip(accepted, positional)), **keywords}
    signature = inspect.signature(layer_class).parameters
    for key, value in given.items():
        wanted = _wanted_type(signature[key]) if key in signature else None
        if wanted is not None and not _is_a(value, wanted):
            kind = {int: "a whole number", bool: "true or false", float: "a number"}[wanted]
            raise LayerArgumentError(f"{where}{name}'s {key} takes {kind}, got {value!r}; {takes}")


def _wanted_type(parameter: inspect.Parameter) -> type | None:
    """int, float or bool when the layer's signature asks for one (its annotation, as text: ``'int | None'``)."""
    annotation = str(parameter.annotation).replace("None", "").replace("|", " ").split()
    for kind in (bool, int, float):
        if kind.__name__ in annotation:
            return kind
    return None


def _is_a(value: Any, wanted: type) -> bool:
    if value is None:
        return True  # the layer's own default
    if wanted is bool:
        return isinstance(value, bool)
    if wanted is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_head_count(name: str, c1: int, num_heads: Any) -> None:
    """The rule for a row's head count: each head keeps at least :data:`MIN_HEAD_CHANNELS` channels. A YOLO row
    usually starts with a channel count (``[256]``), which a zoo layer does not take (its channels are those of the row
    it reads from); read as ``num_heads`` it would silently build 256 one-channel heads, so it is refused."""
    if isinstance(num_heads, int) and num_heads > 0 and c1 // num_heads < MIN_HEAD_CHANNELS:
        raise LayerArgumentError(
            f"{name}: num_heads={num_heads} on {c1} channels leaves {c1 // num_heads} channel(s) per head (at least "
            f"{MIN_HEAD_CHANNELS} are needed); if {num_heads} is meant as a channel count, leave it out: a zoo layer "
            "takes its channels from the row it reads from ([] or [{num_heads: 8}])")


class _YoloLayer(PluggedLayer):
    """A zoo layer as a YOLO model-YAML module: ``(c1, *args)``; see the module docstring."""

    layer_class: type[nn.Module]
    default_residual: bool

    def __init__(self, c1: int, *args: Any, **kwargs: Any):
        name = type(self).__name__
        positional, keywords = _split_arguments(name, args, kwargs)
        _check_arguments(name, self.layer_class, positional, keywords)
        residual = keywords.pop("residual", self.default_residual)
        if not isinstance(residual, bool):
            raise LayerArgumentError(f"{name}: residual must be true or false, got {residual!r}")
        try:
            layer = self.layer_class(c1, *positional, **keywords)
        except ValueError as err:  # the layer's own check, e.g. num_heads not dividing the channels
            order = f"{name}({c1} channels from the input row, {', '.join(_layer_parameters(self.layer_class))})"
            hint = f" (a row's positional arguments follow the channel count, which the bridge adds: {order})"
            raise LayerArgumentError(f"{err}{hint if positional else ''}") from err
        if "num_heads" in _layer_parameters(self.layer_class):  # after the layer's own checks (e.g. dividing)
            _check_head_count(name, c1, {**dict(zip(_layer_parameters(self.layer_class), positional)),
                                         **keywords}.get("num_heads"))
        super().__init__(layer, residual=residual)

    def __setstate__(self, state: dict) -> None:
        # Unpickling (loading a .pt) or deep-copying: only after register(), so that everything Ultralytics does next
        # with the model (fine-tuning re-parses its YAML) works.
        if not _state["registered"]:
            raise NotRegisteredError(
                f"this Ultralytics model holds attnzoo layers ({type(self).__name__}): call {_REGISTER_CALL} before "
                f"loading it (from attnzoo.integrations.ultralytics import register; register())")
        super().__setstate__(state)


def _yolo_layer_classes() -> dict[str, type[_YoloLayer]]:
    classes = {}
    for name, (layer_class, residual) in PLUGGABLE.items():
        doc = (f"YOLO model-YAML form of :class:`attnzoo.layers.{name}`: ``{name}(c1, *args)``, c1 injected by the "
               f"bridge; {'x + gamma * layer(x), gamma starting at 0' if residual else 'the gate itself'} by "
               f"default (``residual``).")
        # pickled by this path in Ultralytics' .pt files: keep the name and the module
        classes[name] = type(name, (_YoloLayer,), {"layer_class": layer_class, "default_residual": residual,
                                                   "__doc__": doc, "__module__": __name__, "__qualname__": name})
    return classes


YOLO_LAYERS = _yolo_layer_classes()
globals().update(YOLO_LAYERS)  # BiLevelRoutingAttention2d, ..., ELA: the class paths Ultralytics' .pt files hold


# ----------------------------------------------------------------------------------------------------------------------
# parse_model: the channels of the row each zoo layer reads from
# ----------------------------------------------------------------------------------------------------------------------


def _rows(d: dict) -> list[list]:
    return [*d.get("backbone", []), *d.get("head", [])]


def _set_row(d: dict, index: int, row: list) -> None:
    backbone = d.get("backbone", [])
    if index < len(backbone):
        backbone[index] = row
    else:
        d["head"][index - len(backbone)] = row


def _zoo_rows(d: dict) -> dict[int, list]:
    """Row index -> row, for the rows naming a zoo layer; their arguments checked (one line naming the fix)."""
    found = {}
    for index, row in enumerate(_rows(d)):
        if len(row) != 4 or not isinstance(row[2], str) or row[2] not in YOLO_LAYERS:
            continue
        source, _, name, args = row
        where = f"model YAML row {index}: "
        if not isinstance(source, int):
            raise LayerArgumentError(f"{where}{name} reads one feature map: its 'from' must be one row index (e.g. "
                                     f"-1), got {source}")
        if not isinstance(args, list):
            raise LayerArgumentError(f"{where}{name}'s arguments must be a list, e.g. [] or [{{topk: 8}}], got {args!r}")
        positional, keywords = _split_arguments(name, tuple(args), {})
        _check_arguments(name, YOLO_LAYERS[name].layer_class, positional, keywords, where)
        found[index] = row
    return found


def _input_channels(parse_model, d: dict, ch, zoo_rows: dict[int, list]) -> dict[int, int]:
    """Row index -> channels of the map it reads, as Ultralytics' own parse_model computes them (width scaling and all).

    A probe pass builds the YAML with ``nn.BatchNorm2d`` (which ``parse_model`` builds with ``ch[f]``) in a zoo row's
    place. ``parse_model`` does not update its running output count for a BatchNorm2d row, which is right only when
    the row reads the previous row, so a zoo row reading another row is measured last in its pass and the rows after
    it wait for the next pass; rows not measured in a pass become ``Concat`` of their one input (channels unchanged).
    """
    found: dict[int, int] = {}
    while len(found) < len(zoo_rows):
        probe = copy.deepcopy(d)
        if probe.get("scales") and not probe.get("scale"):
            probe["scale"] = next(iter(probe["scales"]))  # parse_model's own default, without its second warning
        measured, stop = [], False
        for index, (source, repeats, _, _) in zoo_rows.items():
            if index not in found and not stop:
                _set_row(probe, index, [source, repeats, "nn.BatchNorm2d", []])
                measured.append(index)
                stop = source not in (-1, index - 1)
            else:
                _set_row(probe, index, [[source], repeats, "Concat", [1]])
        network, _ = parse_model(probe, ch, verbose=False)
        for index in measured:
            module = network[index]
            module = module[0] if isinstance(module, nn.Sequential) else module
            if not isinstance(module, nn.BatchNorm2d):
                raise UnsupportedUltralyticsError(
                    f"this Ultralytics' parse_model built {type(module).__name__} for an nn.BatchNorm2d row, so the "
                    f"bridge cannot read the input channels; install a supported one (ultralytics{SUPPORTED_VERSIONS})")
            found[index] = module.num_features
    return found


def _parse_model_with_zoo_layers(parse_model):
    @functools.wraps(parse_model)
    def parse_model_with_zoo_layers(d, ch, verbose=True):
        zoo_rows = _zoo_rows(d)
        if not zoo_rows:
            return parse_model(d, ch, verbose)
        channels = _input_channels(parse_model, d, ch, zoo_rows)
        d = copy.deepcopy(d)
        for index, (source, repeats, name, args) in zoo_rows.items():
            _set_row(d, index, [source, repeats, name, [channels[index], *copy.deepcopy(args)]])
        return parse_model(d, ch, verbose)

    parse_model_with_zoo_layers._zoo_bridge = True
    return parse_model_with_zoo_layers


# ----------------------------------------------------------------------------------------------------------------------
# Placeholders until register(): a YAML naming a zoo layer fails with one line naming the call, not a KeyError
# ----------------------------------------------------------------------------------------------------------------------


def _placeholder(name: str) -> type[nn.Module]:
    def __init__(self, *args, **kwargs):
        raise NotRegisteredError(f"the model YAML names the attnzoo layer {name}: call {_REGISTER_CALL} before "
                                 f"building the model (from attnzoo.integrations.ultralytics import register; register())")

    return type(f"{name}NotRegistered", (nn.Module,), {"__init__": __init__, "__module__": __name__})


def _install_placeholders() -> None:
    tasks = _tasks()
    for name in LAYER_NAMES:
        if name not in vars(tasks):
            setattr(tasks, name, _placeholder(name))


_install_placeholders()
