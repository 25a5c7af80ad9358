"""The folder ``zoo train --out RUN`` writes: a hub folder plus what it takes to resume.

    RUN/config.json        timm hub config: architecture, model_args, label_names (the class folder names),
                           pretrained_cfg with the input size and crop the run was measured with
    RUN/model.safetensors  the weights that were validated (the EMA's with --model-ema)
    RUN/README.md          this run's card: measured val top-1 / top-5, the command, the recipe
    RUN/train_state.pth    resume state: epoch, raw model, optimizer, EMA, AMP scaler (weights-only pickle)
    RUN/metrics.jsonl      one JSON line per epoch

``zoo.create_model(RUN)`` / ``zoo validate RUN`` / ``timm.create_model("local-dir:RUN", pretrained=True)`` read it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import torch

from ...errors import ZooError
from ...models import CONFIG_NAME, family_of, save_pretrained
from ...weights import read_checkpoint, save_pickle

__all__ = ["METRICS_NAME", "STATE_NAME", "RunError", "RunRecord", "has_run", "read_state", "write_epoch"]

STATE_NAME = "train_state.pth"
METRICS_NAME = "metrics.jsonl"


class RunError(ZooError, ValueError):
    """A run folder that does not fit the request (occupied, nothing to resume, another model); names the fix."""


def has_run(out: Path) -> bool:
    return (out / STATE_NAME).is_file() or (out / CONFIG_NAME).is_file()


def read_state(out: Path) -> dict:
    """The resume state of a run folder (read weights-only: nothing in it runs code)."""
    return read_checkpoint(out / STATE_NAME)


class RunRecord:
    """What the card says about a run: where it came from and how it was trained (filled in by the trainer)."""

    def __init__(self, architecture: str, command: list[str], data: str, classes: list[str], recipe: dict,
                 start: str):
        self.architecture = architecture
        self.command = "zoo " + shlex.join(command)
        self.data = data
        self.classes = classes
        self.recipe = recipe
        self.start = start

    def card(self, out: Path, model: torch.nn.Module, epoch: int, epochs: int, val: dict | None,
             data_config: dict) -> str:
        params_m = sum(p.numel() for p in model.parameters()) / 1e6
        size = "x".join(str(s) for s in data_config["input_size"][1:])
        lines = [
            "---", "library_name: timm", "tags:", "- image-classification", "- timm", "- attnzoo",
            f"- {family_of(self.architecture)}", "---", "",
            f"# {out.name}: {self.architecture} trained on {self.data}", "",
            f"Trained with `zoo train` ({self.start}); epoch {epoch} of {epochs}.", "",
            "## Results", "",
        ]
        if val is None:
            lines += ["No val/ split next to train/, so nothing was measured.", ""]
        else:
            lines += [
                "| split | images | top-1 | top-5 |", "|---|---|---|---|",
                f"| {val['data']} | {val['images']} | {val['top1']:.2f} | {val['top5']:.2f} |", "",
                f"Measured by `zoo train` after epoch {epoch} on the weights in this folder"
                f"{' (the EMA)' if self.recipe.get('model_ema') else ''}, at {size} pixels, crop_pct "
                f"{data_config['crop_pct']}. The same number again:", "",
                "```bash", f"zoo validate {shlex.quote(str(out))} --data {shlex.quote(val['data'])}", "```", "",
            ]
        lines += [
            "## Training", "",
            "```bash", self.command, "```", "",
            f"- **Architecture:** {self.architecture} ({params_m:.2f} M parameters)",
            f"- **Classes ({len(self.classes)}):** {', '.join(self.classes)}",
            f"- **Input:** {size}, mean {list(data_config['mean'])}, std {list(data_config['std'])}",
        ]
        lines += [f"- **{key}:** {value}" for key, value in self.recipe.items()]
        lines += ["", "## Usage", "", "```python", "import zoo", "",
                  f"model = zoo.create_model({str(out)!r}).eval()", "```",
                  "", "```bash", f"zoo predict {shlex.quote(str(out))} image.png", "```", ""]
        return "\n".join(lines)


def write_epoch(out: Path, record: RunRecord, eval_model: torch.nn.Module, state: dict, metrics: dict,
                data_config: dict, val: dict | None) -> None:
    """After an epoch (rank 0 only): the hub folder of the validated weights, the resume state, one metrics line."""
    out.mkdir(parents=True, exist_ok=True)
    card = record.card(out, eval_model, state["epoch"], state["epochs"], val, data_config)
    save_pretrained(eval_model, out, label_names=record.classes, data_config=data_config, readme=card)
    save_pickle(state, out / STATE_NAME)  # atomic: a run killed mid-write keeps the previous epoch's state
    with (out / METRICS_NAME).open("a", encoding="utf-8") as f:
        f.write(json.dumps(metrics) + "\n")
