"""The shared PVT / Swin / CSWin / DeiT skeletons: no family imports, families found through their own modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import timm
import torch

import attnzoo.backbones
import attnzoo.backbones.agent as agent
from attnzoo.weights import checkpoint_filter_fn_for

SKELETON_DIR = Path(attnzoo.backbones.__file__).parent / "skeletons"
FAMILY_MODULES = {p.stem for p in Path(attnzoo.backbones.__file__).parent.glob("*.py") if p.stem != "__init__"}


@pytest.mark.parametrize("path", sorted(SKELETON_DIR.glob("*.py")), ids=lambda p: p.name)
def test_skeletons_import_no_family_module(path):
    """A skeleton that imported a family's attention would be a cycle, not a layout."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = [module] if node.level == 0 else [f"..{module}"] + [f"..{a.name}" for a in node.names]
            imported.update(names)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    offending = {name for name in imported
                 if name.split(".")[0] == "backbones" and name.split(".")[1:2] != ["skeletons"]
                 or name.startswith("..") and name.lstrip(".") in FAMILY_MODULES
                 or name.split(".")[0] in {"zoo", "heads"}}
    assert not offending, f"{path.name} imports {offending}"


@pytest.mark.parametrize("name,features_only", [("agent_pvt_tiny", False), ("agent_swin_tiny", True),
                                                ("agent_deit_tiny", False), ("agent_cswin_tiny", False)])
def test_agent_models_find_their_checkpoint_filter(name, features_only):
    """The model classes live in attnzoo.backbones.agent (on skeleton bases), so the registry finds the Agent filter for the
    models and for timm's features_only wrappers of them."""
    kwargs = dict(features_only=True) if features_only else {}
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
    assert checkpoint_filter_fn_for(model) is agent.checkpoint_filter_fn
