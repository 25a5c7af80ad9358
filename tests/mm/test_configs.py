"""Every config in configs/det and configs/seg loads and builds its model (no silent bit-rot).

Models are built on the meta device (shapes only, no memory, no initialisation cost) without pretrained weights;
the backbone's channels must match what the neck / decode head expect, and ``pretrained`` must name a model card.
"""

from __future__ import annotations

import pytest
import torch
from mm_cycle import CONFIGS
from mmengine.config import Config
from mmengine.registry import init_default_scope

CONFIG_FILES = sorted(p.relative_to(CONFIGS).as_posix() for d in ("det", "seg") for p in (CONFIGS / d).glob("*.py"))


def test_configs_exist():
    assert len([c for c in CONFIG_FILES if c.startswith("det/")]) >= 10
    assert len([c for c in CONFIG_FILES if c.startswith("seg/")]) >= 10


@pytest.mark.parametrize("config", CONFIG_FILES)
def test_config_builds(config):
    import attnzoo.openmmlab  # noqa: F401  (registers ZooBackbone; configs import it through custom_imports)

    text = (CONFIGS / config).read_text()
    first_comment = text.split("\n", 3)[:3]
    assert "Paper:" in "".join(first_comment) or "Not a setup of" in "".join(first_comment), (
        f"{config}: the header must carry the paper's number ('Paper: ...') or say it is not a paper setup")
    cfg = Config.fromfile(str(CONFIGS / config))
    assert cfg.custom_imports.imports == ["attnzoo.openmmlab"]
    backbone = cfg.model.backbone
    plugin_resnet = backbone.type != "ZooBackbone"
    if plugin_resnet:  # an OpenMMLab ResNet with attnzoo.layers plug-ins (e.g. det/faster-rcnn_r50-bra-c3-c5_*)
        assert backbone.type.startswith("ResNet") and backbone.plugins, config
        assert all(p.cfg.type in attnzoo.openmmlab.PLUGIN_LAYERS for p in backbone.plugins), config
    else:
        if backbone.pretrained is not None:  # the card the config loads from exists (the synthetic demo has none)
            assert attnzoo.get_card(backbone.pretrained).name == backbone.pretrained
        cfg.model.backbone.pretrained = None
    scope = cfg.default_scope
    init_default_scope(scope)
    registry = __import__(f"{scope}.registry", fromlist=["MODELS"]).MODELS
    with torch.device("meta"):
        model = registry.build(cfg.model)
    built = model.backbone
    if plugin_resnet:  # the plug-ins are in the built blocks, with the channels of their position
        plugin_layers = [m for m in built.modules() if isinstance(m, tuple(attnzoo.openmmlab.PLUGIN_LAYERS.values()))]
        assert plugin_layers, config
        return
    assert built.out_channels == [int(c) for c in _consumer_channels(cfg.model)], config


def _consumer_channels(model_cfg):
    """The channels the first module after the backbone expects, per returned level."""
    if model_cfg.get("neck") is not None:
        channels = model_cfg.neck.in_channels
    else:  # UperNet reads the backbone directly
        channels = model_cfg.decode_head.in_channels
    return channels
