"""Fixtures for the zoo tests: a throw-away card directory, a small timm model, an isolated torch hub cache.

Test cards live only in pytest's tmp directories (``ZOO_CARD_PATH``), never in zoo/cards.
"""

from __future__ import annotations

import pytest
import timm
import torch
from zoo_helpers import SMALL_MODEL


@pytest.fixture
def card_dir(tmp_path, monkeypatch):
    """An empty extra card directory on ZOO_CARD_PATH."""
    directory = tmp_path / "cards"
    directory.mkdir()
    monkeypatch.setenv("ZOO_CARD_PATH", str(directory))
    return directory


@pytest.fixture
def hub_cache(tmp_path):
    """torch.hub's directory pointed at a temporary folder; returns its checkpoints/ folder."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(previous)


@pytest.fixture
def small_model():
    torch.manual_seed(0)
    return timm.create_model(SMALL_MODEL).eval()
