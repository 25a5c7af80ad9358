"""Issue 35 item 7: a YOLO row's arguments are never silently misread (attnzoo.integrations.ultralytics' rule).

``[-1, 1, BiLevelRoutingAttention2d, [256]]`` (a channel count first, as Ultralytics rows usually start) built 256
one-channel heads; ``[eight]`` was a TypeError. A head count must leave each head at least 8 channels, and every
argument is checked against the layer's signature when the YAML is read.
"""

from __future__ import annotations

import pytest

pytest.importorskip("ultralytics")


@pytest.fixture(scope="module")
def yolo():
    from attnzoo.integrations import ultralytics as bridge

    bridge.register()
    return bridge


def _build(tmp_path, row: str, width: int):
    from ultralytics import YOLO

    path = tmp_path / "rows.yaml"
    path.write_text(f"nc: 1\nbackbone:\n  - [-1, 1, Conv, [{width}, 3, 2]]\n  - {row}\nhead:\n"
                    "  - [[1], 1, Detect, [nc]]\n")
    return YOLO(str(path))


@pytest.mark.parametrize("row, message", [
    ("[-1, 1, BiLevelRoutingAttention2d, [256]]",
     "BiLevelRoutingAttention2d: num_heads=256 on 256 channels leaves 1 channel(s) per head (at least 8 are needed); "
     "if 256 is meant as a channel count, leave it out"),
    ("[-1, 1, AgentAttention2d, [{num_heads: 64}]]", "num_heads=64 on 256 channels leaves 4 channel(s) per head"),
    ("[-1, 1, BiLevelRoutingAttention2d, [eight]]",
     "model YAML row 1: BiLevelRoutingAttention2d's num_heads takes a whole number, got 'eight'"),
    ("[-1, 1, FlowAttention2d, [{eps: small}]]", "FlowAttention2d's eps takes a number, got 'small'"),
    ("[-1, 1, SimplifiedLinearAttention2d, [{qkv_bias: 1}]]", "qkv_bias takes true or false, got 1"),
])
def test_misreadable_rows_are_one_line(yolo, tmp_path, row, message):
    from attnzoo.errors import ZooError

    with pytest.raises(yolo.LayerArgumentError) as info:
        _build(tmp_path, row, 256)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ZooError)


def test_head_counts_that_leave_8_channels_build(yolo, tmp_path):
    model = _build(tmp_path, "[-1, 1, BiLevelRoutingAttention2d, [32, 2]]", 256)  # 8 channels per head
    layer = model.model.model[1].layer
    assert layer.num_heads == 32
