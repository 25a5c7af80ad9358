"""Writing hub-style model folders (config.json + model.safetensors + README.md); attnzoo.models.builder reads them.

A folder written by ``save_pretrained`` uses timm's own hub format, so ``timm.create_model("local-dir:" + folder)``
reads it as well as ``attnzoo.create_model(folder)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from timm.models._hub import save_config_for_hf

from ..cards import has_card, render_card
from ..weights import atomic_write, save_safetensors
from .builder import CONFIG_NAME, WEIGHTS_NAME
from .registry import family_of

__all__ = ["CONFIG_NAME", "README_NAME", "WEIGHTS_NAME", "save_pretrained"]

README_NAME = "README.md"


def _architecture(model: torch.nn.Module) -> str:
    architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    if not architecture:
        raise ValueError(
            f"save_pretrained needs a model built by timm.create_model or attnzoo.create_model "
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
        f"Weights saved by `attnzoo.save_pretrained`. The zoo has no card for `{architecture}`, so this one is generated",
        "from the model itself; no reported metrics.", "",
        "## Model Details",
        f"- **Architecture:** {architecture}",
        f"- **Params (M):** {params_m:.2f}",
        f"- **Classes:** {config.get('num_classes')}",
        f"- **Image size:** {h} x {w}",
        f"- **Preprocessing:** mean {cfg.get('mean')}, std {cfg.get('std')}", "",
        "## Model Usage", "```python", "import attnzoo", "",
        "model = attnzoo.create_model('path/to/this/folder').eval()",
        "# or: timm.create_model('local-dir:path/to/this/folder', pretrained=True) after `import attnzoo`",
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
    else one generated from the model. Each file is written atomically (a hidden temporary file renamed over it), so a
    process killed while saving leaves every file either as it was or complete. Returns the folder.
    """
    architecture = _architecture(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if label_names is not None and len(label_names) != model.num_classes:
        raise ValueError(f"{len(label_names)} label_names for a model with {model.num_classes} outputs.")
    save_safetensors(model.state_dict(), directory / WEIGHTS_NAME, metadata={"architecture": architecture})
    model_config = {"label_names": list(label_names)} if label_names else None
    atomic_write(directory / CONFIG_NAME,
                 lambda tmp: save_config_for_hf(model, tmp, model_config=model_config, data_config=data_config))
    config = json.loads((directory / CONFIG_NAME).read_text())
    if readme is None:
        readme = render_card(architecture) if has_card(architecture) else _generated_readme(model, architecture, config)
    # names from the file system (class folders) may hold bytes that are not UTF-8 (surrogate escapes): shown as \xNN
    readme = readme.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    atomic_write(directory / README_NAME, lambda tmp: Path(tmp).write_text(readme, encoding="utf-8"))
    return directory
