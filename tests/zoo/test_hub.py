"""Hub-style folders: save_pretrained -> attnzoo.create_model / timm local-dir: round trips."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import yaml
from zoo_helpers import SMALL_MODEL, card_fields, write_card

import attnzoo
from attnzoo.cards import UnknownModelError


def outputs_equal(a: torch.nn.Module, b: torch.nn.Module, size=(1, 3, 64, 64)) -> bool:
    x = torch.randn(*size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model(SMALL_MODEL, num_classes=7, drop_path_rate=0.1).eval()
    folder = attnzoo.save_pretrained(model, tmp_path / "folder")
    return model, folder


def test_folder_layout_is_timms_hub_format(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == SMALL_MODEL and config["num_classes"] == 7
    assert config["num_features"] == model.num_features
    assert config["pretrained_cfg"]["input_size"] == [3, 160, 160]
    assert config["model_args"]["num_classes"] == 7 and "drop_path_rate" not in config["model_args"]
    readme = (folder / "README.md").read_text()
    assert yaml.safe_load(readme.split("---\n")[1])["library_name"] == "timm"
    assert f"Architecture:** {SMALL_MODEL}" in readme  # generated: the zoo has no card for it


def test_create_model_from_folder_round_trip(saved):
    model, folder = saved
    rebuilt = attnzoo.create_model(folder)
    assert rebuilt.num_classes == 7 and outputs_equal(model, rebuilt)
    assert rebuilt.pretrained_cfg["input_size"] == (3, 160, 160)
    assert outputs_equal(model, attnzoo.create_model(f"local-dir:{folder}"))


def test_timm_local_dir_loads_the_folder(saved):
    model, folder = saved
    rebuilt = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert outputs_equal(model, rebuilt)


def test_folder_with_new_head_or_features_only(saved):
    model, folder = saved
    retargeted = attnzoo.create_model(folder, num_classes=3)
    assert retargeted.num_classes == 3
    assert torch.equal(retargeted.state_dict()["stem.0.weight"], model.state_dict()["stem.0.weight"])
    backbone = attnzoo.create_model(folder, features_only=True, out_indices=(1, 3))
    features = backbone(torch.randn(1, 3, 64, 64))
    assert len(features) == 2
    assert torch.equal(backbone.state_dict()["stem_0.weight"], model.state_dict()["stem.0.weight"])


def test_folder_with_damaged_weights_fails_loudly(saved):
    _, folder = saved
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    with pytest.raises(attnzoo.CheckpointError, match="truncated"):
        attnzoo.create_model(folder)


def test_readme_is_the_card_when_one_exists(card_dir, tmp_path):
    write_card(card_dir, card_fields())
    folder = attnzoo.save_pretrained(timm.create_model(SMALL_MODEL), tmp_path / "carded")
    assert (folder / "README.md").read_text() == attnzoo.render_card(SMALL_MODEL)


def test_create_model_by_name_and_its_errors(tmp_path):
    model = attnzoo.create_model(SMALL_MODEL, num_classes=5)
    assert isinstance(model, torch.nn.Module) and model.num_classes == 5
    with pytest.raises(UnknownModelError, match="Did you mean: test_convnext"):
        attnzoo.create_model("test_convnextt")
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        attnzoo.create_model(str(tmp_path / "absent_folder"))
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        attnzoo.create_model(tmp_path)
    with pytest.raises(ValueError, match="pretrained_cfg"):
        attnzoo.save_pretrained(torch.nn.Linear(2, 2), tmp_path / "plain")
