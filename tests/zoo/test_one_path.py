"""One path per job: every way of making a model gets the same weights rule and the card's model arguments.

Each test here failed on main before the redesign (5b58531, issue 21):
1. a checkpoint holding both ``model`` and ``model_ema`` gave the ``model`` weights to ``attnzoo.create_model(name,
   pretrained=True)`` and the EMA weights to the same call with ``num_classes=10`` (timm's file loader prefers EMA);
2. ``ZooBackbone`` (and ``zoo export``, tests/zoo/test_bench_export_cli.py) built the model without the card's
   ``model_kwargs``;
3. ``import attnzoo.openmmlab`` allow-listed the Runner checkpoint globals for the whole process.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from zoo_helpers import SMALL_MODEL, card_fields, write_card

import attnzoo
from attnzoo import CheckpointError


def _stem_mean(model: torch.nn.Module) -> float:
    # "stem.0.weight" in the model, "stem_0.weight" in timm's features_only wrapper
    return float(next(p for n, p in model.named_parameters() if n.replace("_", ".") == "stem.0.weight").detach().mean())


@pytest.fixture
def card_with_model_and_ema(card_dir, hub_cache, tmp_path):
    """A private card for timm's test_convnext whose checkpoint holds 'model' (all 0) and 'model_ema' (all 1)."""
    state = timm.create_model(SMALL_MODEL).state_dict()
    checkpoint = {"model": {k: torch.zeros_like(v) for k, v in state.items()},
                  "model_ema": {k: torch.ones_like(v) for k, v in state.items()}, "epoch": 300}
    path = tmp_path / "served" / "test_convnext_both.pth"
    path.parent.mkdir()
    torch.save(checkpoint, path)
    write_card(card_dir, card_fields(checkpoints=[{"url": path.as_uri(), "sha256": None, "note": "model + EMA"}]))
    return path


def test_the_unwrapping_rule_is_the_same_on_every_create_path(card_with_model_and_ema):
    as_published = attnzoo.create_model(SMALL_MODEL, pretrained=True)
    new_head = attnzoo.create_model(SMALL_MODEL, pretrained=True, num_classes=10)
    features = attnzoo.create_model(SMALL_MODEL, pretrained=True, features_only=True)
    assert _stem_mean(as_published) == 0.0
    assert _stem_mean(new_head) == 0.0  # was 1.0: timm's loader took model_ema
    assert _stem_mean(features) == 0.0
    assert new_head.get_classifier().out_features == 10


def test_a_file_given_to_timm_goes_through_the_zoo_rule_too(tmp_path):
    """timm.create_model(<zoo family>, pretrained_cfg_overlay=dict(file=...)) no longer lets timm read the file."""
    kwargs = dict(embed_dim=[8, 16, 32, 64], depth=[1, 1, 1, 1], head_dim=8)  # a small BiFormer
    state = timm.create_model("biformer_tiny", **kwargs).state_dict()
    torch.save({"model": {k: torch.zeros_like(v) for k, v in state.items()},
                "model_ema": {k: torch.ones_like(v) for k, v in state.items()}}, tmp_path / "both.pth")
    model = timm.create_model("biformer_tiny", pretrained=True, num_classes=10,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "both.pth")), **kwargs)
    assert float(model.downsample_layers[0][0].weight.abs().max()) == 0.0


def test_zoo_backbone_builds_the_cards_model(card_dir):
    """A card's model_kwargs (here a parameter-free one: the activation) reach the detector's backbone."""
    from attnzoo.openmmlab import ZooBackbone

    write_card(card_dir, card_fields(model_kwargs={"act_layer": "relu"}))
    torch.manual_seed(0)
    card_model = attnzoo.create_model(SMALL_MODEL).eval()
    with torch.no_grad():  # test_convnext's layer scale starts at 1e-6, which would hide the blocks' activation
        for parameter in card_model.parameters():
            parameter.normal_(0.0, 0.5)
    backbone = ZooBackbone(SMALL_MODEL, out_indices=(0, 1, 2, 3)).eval()
    backbone.model.load_state_dict(card_model.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = card_model.forward_intermediates(x, intermediates_only=True)
        got = backbone(x)
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(a, b)


def test_runner_globals_are_allowed_only_inside_the_runners_own_read(tmp_path):
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner.checkpoint import _load_checkpoint

    import attnzoo.openmmlab  # noqa: F401  (what `zoo xray detect` and every config import)

    model = torch.nn.Linear(2, 2)
    history = HistoryBuffer()
    history.update(1.0)
    path = tmp_path / "iter_10.pth"
    torch.save({"state_dict": model.state_dict(), "message_hub": {"log_scalars": {"loss": history}},
                "meta": {"seed": np.int64(0), "lr": np.float32(0.1)}}, path)
    with pytest.raises(CheckpointError, match="refused: the file is a pickle that needs Python code"):
        attnzoo.load_checkpoint(model, path)  # was accepted after `import attnzoo.openmmlab`
    with pytest.raises(Exception, match="Unsupported global"):
        torch.load(path, weights_only=True)  # nothing process-wide was allowed
    restored = _load_checkpoint(str(path), map_location="cpu")  # the Runner's own read: its globals, weights-only
    assert isinstance(restored["message_hub"]["log_scalars"]["loss"], HistoryBuffer)
    assert restored["meta"]["lr"] == np.float32(0.1)
