"""Hub-style model folders (config.json + model.safetensors + README.md) and the zoo's ``create_model``.

A folder written by ``save_pretrained`` uses timm's own hub format, so ``timm.create_model("local-dir:" + folder)``
reads it as well as ``zoo.create_model(folder)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import get_pretrained_cfg_value, split_model_name_tag
from timm.models._hub import load_model_config_from_path, save_config_for_hf

from .cards import get_card, has_card, render_card
from .checkpoint import CheckpointError, _verify_sha256, cached_download, load_checkpoint, save_safetensors
from .pretrained import cache_filename
from .registry import family_of, require_model

__all__ = ["create_model", "save_pretrained"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
README_NAME = "README.md"
LOCAL_DIR_PREFIX = "local-dir:"
# Arguments that change the classifier or wrap the model: timm then adapts the saved weights while loading them.
_ADAPTING_ARGS = ("features_only", "num_classes", "out_indices", "feature_cls")


def _architecture(model: torch.nn.Module) -> str:
    architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    if not architecture:
        raise ValueError(
            f"save_pretrained needs a model built by timm.create_model or zoo.create_model "
            f"(a {type(model).__name__} without pretrained_cfg['architecture'] cannot be rebuilt from a folder)."
        )
    return architecture


def _generated_readme(model: torch.nn.Module, architecture: str, config: dict) -> str:
    """A minimal model card for a model the zoo has no card for (e.g. fine-tuned or a new variant)."""
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    cfg = config.get("pretrained_cfg", {})
    license_id = cfg.get("license", "other")
    h, w = cfg.get("input_size", (3, 224, 224))[1:]
    lines = [
        "---", "library_name: timm", f"license: {license_id}", "tags:", "- image-classification", "- timm",
        "- attnzoo", f"- {family_of(architecture)}", "---", "",
        f"# Model card for a {architecture} folder", "",
        f"Weights saved by `zoo.save_pretrained`. The zoo has no card for `{architecture}`, so this one is generated",
        "from the model itself; no reported metrics.", "",
        "## Model Details",
        f"- **Architecture:** {architecture}",
        f"- **Params (M):** {params_m:.2f}",
        f"- **Classes:** {config.get('num_classes')}",
        f"- **Image size:** {h} x {w}",
        f"- **Preprocessing:** mean {cfg.get('mean')}, std {cfg.get('std')}", "",
        "## Model Usage", "```python", "import zoo", "",
        "model = zoo.create_model('path/to/this/folder').eval()",
        "# or: timm.create_model('local-dir:path/to/this/folder', pretrained=True) after `import zoo`",
        "```", "",
    ]
    return "\n".join(lines)


def save_pretrained(model: torch.nn.Module, directory: str | os.PathLike, *, label_names: list[str] | None = None,
                    data_config: dict | None = None, readme: str | None = None) -> Path:
    """Write ``model`` as a hub-style folder: config.json (timm format), model.safetensors, README.md.

    config.json carries timm's ``architecture``, ``num_classes``, ``num_features``, ``pretrained_cfg`` and the
    ``model_args`` needed to rebuild the model, plus ``label_names`` (one per output) when given; ``data_config``
    (timm's ``input_size``/``crop_pct``/... keys) records the preprocessing the weights were trained and measured with.
    README.md is ``readme`` when given (e.g. a fine-tuning run's own card), else the zoo's card for the architecture,
    else one generated from the model. Returns the folder.
    """
    architecture = _architecture(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if label_names is not None and len(label_names) != model.num_classes:
        raise ValueError(f"{len(label_names)} label_names for a model with {model.num_classes} outputs.")
    save_safetensors(model.state_dict(), directory / WEIGHTS_NAME, metadata={"architecture": architecture})
    model_config = {"label_names": list(label_names)} if label_names else None
    save_config_for_hf(model, str(directory / CONFIG_NAME), model_config=model_config, data_config=data_config)
    config = json.loads((directory / CONFIG_NAME).read_text())
    if readme is None:
        readme = render_card(architecture) if has_card(architecture) else _generated_readme(model, architecture, config)
    (directory / README_NAME).write_text(readme, encoding="utf-8")
    return directory


def _adapts_weights(kwargs: dict[str, Any], saved_num_classes: int | None) -> bool:
    if kwargs.get("features_only"):
        return True
    return "num_classes" in kwargs and kwargs["num_classes"] != saved_num_classes


def _create_from_folder(folder: Path, **kwargs: Any) -> torch.nn.Module:
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: not a model folder (no {CONFIG_NAME}); save one with zoo.save_pretrained.")
    try:
        # timm's own reader of local-dir folders, so both ways in agree on what a folder means.
        pretrained_cfg, architecture, model_args = load_model_config_from_path(folder)
    except (json.JSONDecodeError, KeyError) as err:
        raise CheckpointError(f"{config_path}: unreadable model config ({err!r}).") from err
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME} next to {CONFIG_NAME}.")
    require_model(architecture)
    # JSON has no tuples; timm's default configs use them (input_size, mean, std, ...).
    pretrained_cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in pretrained_cfg.items()
                      if k not in ("source", "file")}
    pretrained_cfg["architecture"] = architecture
    saved_num_classes = pretrained_cfg.get("num_classes")
    args = {"num_classes": saved_num_classes, **model_args, **kwargs}
    if _adapts_weights(kwargs, saved_num_classes):
        # timm drops a classifier of another size and wraps features_only models while it loads the file.
        return timm.create_model(
            architecture, pretrained=True, pretrained_cfg=dict(pretrained_cfg, file=str(weights)), **args
        )
    model = timm.create_model(architecture, pretrained=False, pretrained_cfg=pretrained_cfg, **args)
    # The folder holds the model's own state dict: no family filter, every key must match.
    load_checkpoint(model, weights, strict=True, filter_fn=None)
    return model


def create_model(name_or_dir: str | os.PathLike, pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
    """Build a model from a zoo/timm name or from a folder written by ``save_pretrained``.

    - A folder (or ``"local-dir:<folder>"``): rebuilt from config.json and loaded strictly from model.safetensors
      (the folder is the weights, so ``pretrained`` does not matter).
    - A name with a model card: built with the card's ``model_kwargs``; ``pretrained=True`` loads the card's
      checkpoint through ``zoo.load_checkpoint`` (cached download, sha256 check, official layout converted).
    - Any other timm name: ``timm.create_model(name, pretrained=pretrained, **kwargs)``.
    Extra ``kwargs`` go to timm (``num_classes``, ``features_only``, ...).
    """
    source = os.fspath(name_or_dir)
    if source.startswith(LOCAL_DIR_PREFIX):
        source = source[len(LOCAL_DIR_PREFIX):]
        if not Path(source).is_dir():
            raise FileNotFoundError(f"{source}: no such model folder.")
    if Path(source).is_dir():
        return _create_from_folder(Path(source), **kwargs)
    if source.startswith("hf-hub:"):
        return timm.create_model(source, pretrained=pretrained, **kwargs)
    if isinstance(name_or_dir, os.PathLike) or os.sep in source or "/" in source:
        raise FileNotFoundError(f"{source}: no such model folder.")

    name, _tag = split_model_name_tag(source)
    require_model(name)
    card = get_card(name) if has_card(name) else None
    if card is None:
        return timm.create_model(source, pretrained=pretrained, **kwargs)
    kwargs = {**card.model_kwargs, **kwargs}
    if not (pretrained and card.checkpoints):
        return timm.create_model(source, pretrained=pretrained, **kwargs)
    checkpoint = card.checkpoints[0]
    if _adapts_weights(kwargs, get_pretrained_cfg_value(name, "num_classes")):
        path = cached_download(checkpoint.url, filename=cache_filename(card.name, checkpoint.url))
        if checkpoint.sha256:
            _verify_sha256(path, checkpoint.sha256, f"model card '{card.name}'")
        # timm applies the family filter, drops a resized classifier and wraps features_only after loading.
        return timm.create_model(source, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    model = timm.create_model(source, pretrained=False, **kwargs)
    load_checkpoint(model, card, strict=True)
    return model
