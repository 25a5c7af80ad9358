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


def detector_fields(name: str = "test_sdanet", **overrides) -> dict:
    """A valid X-ray detector card (no model stats: a detector card need not state them)."""
    fields = {
        "name": name, "task": "xray", "family": "sdanet",
        "paper": {"title": "Towards Real-World Prohibited Item Detection", "arxiv": "2108.07020"},
        "official_repo": "https://github.com/bywang2018/security-dataset", "license": "apache-2.0",
        "detector": {"config": "xray/cascade-mask-rcnn_r101_fpn-sdanet_1x_pidray.py", "architecture": "Cascade",
                     "backbone": "ResNet-101", "backbone_card": None, "dataset": "pidray",
                     "key_mapping": "attnzoo.heads.xray.selective_attention.convert_official_sdanet_checkpoint"},
        "metrics": [{"task": "object-detection", "dataset": "pidray", "split": "easy", "metric": "box_ap",
                     "value": 71.2, "source": "made up for the tests"}],
        "checkpoints": [],
    }
    fields.update(overrides)
    return fields


def forgery_fields(name: str = "test_npr", **overrides) -> dict:
    fields = {
        "name": name, "task": "forgery", "family": "npr",
        "paper": {"title": "Rethinking the Up-Sampling Operations", "arxiv": "2312.10461"},
        "official_repo": "https://github.com/chuangchuangtan/NPR-DeepfakeDetection", "license": "unknown",
        "forgery": {"head": "npr", "encoder_branches": ["ResNet-50 on neighbouring-pixel residuals"],
                    "language_model": None, "training_data": "ProGAN, 4 classes", "key_mapping": None},
        "metrics": [{"task": "forgery-detection", "dataset": "forensynths", "generator": "stylegan",
                     "metric": "accuracy", "value": 99.0, "source": "made up for the tests"}],
        "checkpoints": [],
    }
    fields.update(overrides)
    return fields


def write_card(directory: Path, fields: dict, stem: str | None = None) -> Path:
    path = directory / f"{stem or fields['name']}.yaml"
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path
