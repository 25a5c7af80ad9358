"""Constructor arguments from users (``--model-kwargs KEY=VALUE``), checked against the model before it is built.

A value is parsed as timm's ``ParseKwargs`` does (a Python literal, else the text as a string). The check
(:func:`check_model_kwargs`) raises one :class:`ModelArgumentError` naming the argument for

- an unknown name: the names the model's constructor takes, close matches first;
- a wrong type: the type the constructor's signature (or, without an annotation, its default) asks for;
- a value below the range of timm's shared arguments (``num_classes`` >= 0, ``in_chans`` >= 1, ``img_size`` >= 1),
  which would otherwise build silently (a negative ``num_classes`` builds no classifier at all);
- a value the model cannot take: the model is built and run once on the meta device (no memory, no compute; shapes
  only) with the card's arguments plus the user's, and the exception becomes one line naming the argument. A model
  that fails there without the user's arguments too (an op without a meta kernel, e.g. ``.item()``) is not judged:
  the real build then reports what it reports.
"""

from __future__ import annotations

import ast
import collections.abc
import inspect
import json
import os
import types
import typing
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import resolve_model_data_config

from ..cards import suggest_names
from .builder import CONFIG_NAME, LOCAL_DIR_PREFIX, build_model, card_of
from .model_args import ModelArgumentError, check_folder_model_args, check_ranges
from .registry import require_model

__all__ = ["ModelArgumentError", "check_folder_model_args", "check_model_kwargs", "parse_kwarg_value"]

_SEQUENCES = (collections.abc.Sequence, list, tuple)  # typing.Sequence / List / Tuple have these as origin


def parse_kwarg_value(text: str) -> Any:
    """``KEY=VALUE``'s value as timm's ParseKwargs reads it: a Python literal (``(1,2)``, ``0.5``, ``True``,
    ``None``, ``'avg'``), else the text itself as a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


# ------------------------------------------------------------------------------------------------ what the model is


def _target(source: str | os.PathLike) -> tuple[str, dict[str, Any], dict | None]:
    """(architecture, the arguments it is built with before the user's, the folder's pretrained_cfg or None)."""
    text = os.fspath(source)
    if text.startswith(LOCAL_DIR_PREFIX):
        text = text[len(LOCAL_DIR_PREFIX):]
    if Path(text).is_dir():
        try:
            config = json.loads((Path(text) / CONFIG_NAME).read_text())
            architecture = config["architecture"]
        except (OSError, ValueError, KeyError, TypeError):
            return "", {}, None  # not a readable model folder: the builder says so
        # as attnzoo.models.builder reads a folder: JSON lists back to tuples, no file of its own
        pretrained_cfg = {k: tuple(v) if isinstance(v, list) else v
                          for k, v in (config.get("pretrained_cfg") or {}).items() if k not in ("source", "file")}
        pretrained_cfg["architecture"] = architecture
        base = {"num_classes": config.get("num_classes", pretrained_cfg.get("num_classes")),
                **(config.get("model_args") or {})}
        return architecture, {k: v for k, v in base.items() if v is not None}, pretrained_cfg
    require_model(timm.models.split_model_name_tag(text)[0])
    card = card_of(text)
    return text, dict(card.model_kwargs) if card else {}, None


def _meta_build(name: str, kwargs: dict[str, Any], pretrained_cfg: dict | None) -> tuple[Any, BaseException | None]:
    try:
        with torch.device("meta"):
            if pretrained_cfg is None:
                return build_model(name, pretrained=False, **kwargs), None
            return timm.create_model(name, pretrained=False, pretrained_cfg=pretrained_cfg, **kwargs), None
    except Exception as err:  # the user's value may break the constructor in any way
        return None, err


def _meta_forward(model: torch.nn.Module, img_size: int | None) -> BaseException | None:
    try:
        overrides = {"img_size": img_size} if img_size else {}
        channels, height, width = resolve_model_data_config(model, args=overrides)["input_size"]
        with torch.no_grad():
            model.eval()(torch.empty(2, channels, height, width, device="meta"))
    except Exception as err:
        return err
    return None


def _meta_run(name: str, kwargs: dict[str, Any], pretrained_cfg: dict | None,
              img_size: int | None) -> tuple[Any, BaseException | None]:
    """(the meta model or None, the exception of its build or forward pass or None)."""
    model, err = _meta_build(name, kwargs, pretrained_cfg)
    if model is None:
        return None, err
    return model, _meta_forward(model, img_size)


# ------------------------------------------------------------------------------------------------ the signature


def _parameters(model_cls: type) -> tuple[dict[str, inspect.Parameter], bool]:
    """The constructor's named parameters (annotations evaluated where possible) and whether it takes **kwargs."""
    init = model_cls.__init__
    try:
        signature = inspect.signature(init, eval_str=True)
    except Exception:  # an annotation that only resolves under TYPE_CHECKING: keep them all as text
        signature = inspect.signature(init)
    params = {}
    var_keyword = False
    for pname, param in list(signature.parameters.items())[1:]:  # drop self
        if param.kind is param.VAR_KEYWORD:
            var_keyword = True
        elif param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            params[pname] = param
    return params, var_keyword


def _matches(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` fits the type ``hint``: True, False, or None when the hint says nothing checkable."""
    if hint is inspect.Parameter.empty or hint is Any or isinstance(hint, str):
        return None
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        results = [_matches(value, arg) for arg in typing.get_args(hint)]
        return True if True in results else (None if None in results else False)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in _SEQUENCES or origin in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(hint)
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                return False
            results = [_matches(v, a) for v, a in zip(value, args)]
        else:
            results = [_matches(v, args[0]) for v in value]
        return False if False in results else (None if None in results else True)
    if hint in (dict, collections.abc.Mapping) or origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    return None


def _expected(model_cls: type, key: str, param: inspect.Parameter) -> str:
    """The parameter's type as its source writes it (or its default's type)."""
    raw = inspect.signature(model_cls.__init__).parameters[key].annotation
    if raw is not inspect.Parameter.empty:
        return raw if isinstance(raw, str) else inspect.formatannotation(raw)
    return f"a {type(param.default).__name__}"


def _type_fits(param: inspect.Parameter, value: Any) -> bool:
    """False only when the value clearly is not what the parameter takes (the meta build judges the rest)."""
    if param.annotation is not inspect.Parameter.empty:
        return _matches(value, param.annotation) is not False
    default = param.default
    # Without an annotation only a string for a parameter whose default is a number, a bool or a sequence is
    # clearly wrong (a word that is not a Python literal, such as depth=banana, arrives as a string).
    return not (isinstance(value, str) and isinstance(default, (int, float, bool, list, tuple)))


def _value_text(key: str, value: Any) -> str:
    return f"{key}={value!r}"


def _accepted(params: dict[str, inspect.Parameter], key: str) -> str:
    close = suggest_names(key, params, limit=3)
    rest = [p for p in params if p not in close]
    return ", ".join(close + rest)


# ------------------------------------------------------------------------------------------------ the check


def check_model_kwargs(source: str | os.PathLike, kwargs: dict[str, Any], img_size: int | None = None) -> None:
    """Raise :class:`ModelArgumentError` for the first argument of ``kwargs`` (``--model-kwargs``) that the model
    ``source`` (a zoo/timm name or a model folder) cannot take; see the module doc. ``img_size`` is the input size
    the command will run at (default: the model's), for the meta forward pass."""
    if not kwargs:
        return
    check_ranges(kwargs)
    name, base, pretrained_cfg = _target(source)
    if not name:
        return
    shown = f"{os.fspath(source)} ({name})" if name != os.fspath(source) else name
    model, err = _meta_run(name, {**base, **kwargs}, pretrained_cfg, img_size)
    if model is None:  # the constructor failed: learn the class from a build without the user's arguments
        model, base_err = _meta_build(name, base, pretrained_cfg)
        if model is None:
            return  # the model does not build on the meta device even as it ships: nothing to judge here
    params, var_keyword = _parameters(type(model))

    for key, value in kwargs.items():
        param = params.get(key)
        if param is not None and not _type_fits(param, value):
            expected = _expected(type(model), key, param)
            default = "" if param.default is inspect.Parameter.empty else f" (its default: {param.default!r})"
            raise ModelArgumentError(
                f"--model-kwargs {_value_text(key, value)}: {shown}'s {key} takes {expected}{default}, not a "
                f"{type(value).__name__}; values are Python literals (e.g. {key}='(1,2)', 0.5, True, None), other "
                "text arrives as a string."
            )
    if err is None:
        return
    if _meta_run(name, base, pretrained_cfg, img_size)[1] is not None:
        return  # fails without the user's arguments too (e.g. an op without a meta kernel): not theirs to fix

    key = _culprit(name, base, kwargs, pretrained_cfg, img_size, err)
    if key is None:
        together = " ".join(_value_text(k, v) for k, v in kwargs.items())
        raise ModelArgumentError(
            f"--model-kwargs {together}: {shown} cannot be built or run with these values together "
            f"({_describe(err)}); change the one that does not fit the others."
        ) from err
    value = kwargs[key]
    text = str(err)
    if key not in params and (not var_keyword or (isinstance(err, TypeError) and f"'{key}'" in text
                                                   and "unexpected keyword" in text)):
        close = suggest_names(key, params, limit=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ModelArgumentError(
            f"--model-kwargs {_value_text(key, value)}: {shown} takes no argument '{key}'.{hint} It takes "
            f"({type(model).__name__}'s constructor): {_accepted(params, key)}."
        ) from err
    if isinstance(err, TypeError) and "multiple values for keyword argument" in text and f"'{key}'" in text:
        raise ModelArgumentError(
            f"--model-kwargs {_value_text(key, value)}: {name} sets {key} itself (its timm entry point passes it "
            f"to {type(model).__name__}), so --model-kwargs cannot change it; choose the variant with the {key} "
            "you want."
        ) from err
    default = (f"; its default is {params[key].default!r}"
               if key in params and params[key].default is not inspect.Parameter.empty else "")
    raise ModelArgumentError(
        f"--model-kwargs {_value_text(key, value)}: {shown} cannot be built or run with this value "
        f"({_describe(err)}){default}."
    ) from err


def _culprit(name: str, base: dict, kwargs: dict, pretrained_cfg: dict | None, img_size: int | None,
             err: BaseException) -> str | None:
    """The argument to blame for ``err`` (the failure with all of ``kwargs``), or None when only the combination can
    be blamed. Arguments often only make sense together (embed_dim with qk_dims, n_win with topks), so an argument is
    tried by leaving it out, not alone: the one named by a TypeError, else the first whose removal lets the model
    build and run, else the only one whose removal changes the error."""
    text = str(err)
    for key in kwargs:
        if isinstance(err, TypeError) and f"keyword argument '{key}'" in text:
            return key
    changed = []
    for key in kwargs:
        rest = {k: v for k, v in kwargs.items() if k != key}
        rest_err = _meta_run(name, {**base, **rest}, pretrained_cfg, img_size)[1]
        if rest_err is None:
            return key
        if _describe(rest_err) != _describe(err):
            changed.append(key)
    return changed[0] if len(changed) == 1 else None


def _describe(err: BaseException) -> str:
    text = (str(err).splitlines() or [""])[0][:200]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
