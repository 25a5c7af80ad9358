"""Fixtures for the OpenMMLab tests: the project's small datasets, made once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("mmdet", reason="the OpenMMLab layer needs the 'mm' extra (mmdet, mmsegmentation, full mmcv)")
pytest.importorskip("mmseg", reason="the OpenMMLab layer needs the 'mm' extra (mmdet, mmsegmentation, full mmcv)")

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))
import make_ade_seg  # noqa: E402
import make_coco_det  # noqa: E402


@pytest.fixture(scope="session")
def coco_synth(tmp_path_factory) -> Path:
    """A few 96x64 COCO-format images with boxes and masks."""
    return make_coco_det.make(tmp_path_factory.mktemp("coco_synth"), num_train=4, num_val=2, height=64, width=96,
                              min_size=16, max_size=40, seed=0)


@pytest.fixture(scope="session")
def ade_synth(tmp_path_factory) -> Path:
    """A few 64x64 ADE-format images and label maps."""
    return make_ade_seg.make(tmp_path_factory.mktemp("ade_synth") / "ADEChallengeData2016", num_train=4, num_val=2,
                             height=64, width=64, min_size=14, max_size=36, seed=0)


@pytest.fixture(scope="session", autouse=True)
def _unformatted_config_text():
    """Skip yapf when mmengine pretty-prints configs (each Runner does it several times, ~1 s CPU a call).

    Formatting only: the unformatted text is the same valid Python, so dumped configs load identically.
    """
    from mmengine.config import config as mm_config

    original = mm_config.FormatCode
    mm_config.FormatCode = lambda text, style_config=None, **kwargs: (text, False)
    yield
    mm_config.FormatCode = original
