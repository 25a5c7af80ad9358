"""attnzoo.shipped: the configs and tools the commands use, found in a clone (here) and named the same way installed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from attnzoo import shipped

REPO = Path(__file__).resolve().parents[2]
SDANET = "xray/cascade-mask-rcnn_r101_fpn-sdanet_1x_pidray.py"


def test_a_clone_uses_the_repository_folders():
    assert shipped.configs_dir() == REPO / "configs" and shipped.tools_dir() == REPO / "tools"


@pytest.mark.parametrize("name", [SDANET, f"configs/{SDANET}", str(REPO / "configs" / SDANET)])
def test_config_path_takes_short_names_repo_paths_and_files(name):
    assert shipped.config_path(name) == REPO / "configs" / SDANET


def test_unknown_config_names_the_folder_and_close_configs():
    with pytest.raises(FileNotFoundError) as info:
        shipped.config_path("xray/cascade-mask-rcnn_r101_fpn-sdanet_2x_pidray.py")
    message = str(info.value)
    assert str(REPO / "configs") in message and SDANET in message


def test_list_configs_leaves_out_bases():
    names = shipped.list_configs("xray/*")
    assert SDANET in names and not any("_base_" in n for n in names)


def test_the_wheel_build_ships_the_tools_the_commands_name():
    """setup.py copies SHIPPED_TOOLS into zoo/.mim/tools; its list must be attnzoo.shipped's, and the files must exist."""
    tree = ast.parse((REPO / "setup.py").read_text())
    listed = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                  and getattr(node.targets[0], "id", "") == "SHIPPED_TOOLS")
    assert tuple(listed) == shipped.SHIPPED_TOOLS
    assert all((REPO / "tools" / name).is_file() for name in listed)
    for name in ("train.py", "make_pidray.py"):
        assert shipped.tool_path(name) == REPO / "tools" / name
