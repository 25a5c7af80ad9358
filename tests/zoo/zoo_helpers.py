"""Helpers shared by the zoo tests (cards written into tmp directories, never into zoo/cards)."""

from __future__ import annotations

from pathlib import Path

import yaml

SMALL_MODEL = "test_convnext"  # timm's tiny ConvNeXt (0.27 M params, 160x160): real family code, fast on a CPU


def card_fields(name: str = SMALL_MODEL, **overrides) -> dict:
    """A valid card as a dict (numbers for timm's test_convnext), with ``overrides`` applied."""
    fields = {
        "name": name,
        "family": "convnext",
        "paper": {"title": "A ConvNet for the 2020s", "arxiv": "2201.03545"},
        "official_repo": "https://github.com/facebookresearch/ConvNeXt",
        "license": "apache-2.0",
        "params_m": 0.272,
        "gflops": 0.02,
        "input_size": [3, 160, 160],
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "metrics": [{"task": "image-classification", "dataset": "imagenet-1k", "metric": "top1", "value": 12.5,
                     "source": "made up for the tests"}],
        "checkpoints": [],
        "notes": "A test card.",
    }
    fields.update(overrides)
    return fields


def write_card(directory: Path, fields: dict, stem: str | None = None) -> Path:
    path = directory / f"{stem or fields['name']}.yaml"
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path
