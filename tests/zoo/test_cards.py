"""Card schema, lookup, rendering, and every shipped card checked against the live model."""

from __future__ import annotations

import pytest
import timm
import torch
import yaml
from zoo_helpers import SMALL_MODEL, card_fields, detector_fields, forgery_fields, write_card

import zoo
from zoo.cards import PACKAGE_CARD_DIR, CardError, UnknownModelError, load_card_file

PARAMS_TOLERANCE = 0.005  # the bound: params within 0.5% of the card


def live_params_m(name: str, model_kwargs: dict) -> float:
    """Parameters of the model as the card builds it, counted on the meta device (nothing allocated or run)."""
    try:
        with torch.device("meta"):
            model = timm.create_model(name, **model_kwargs)
    except (NotImplementedError, RuntimeError):  # a family whose constructor needs real tensor values
        model = timm.create_model(name, **model_kwargs)
    return sum(p.numel() for p in model.parameters()) / 1e6


def check_params(card) -> None:
    live = live_params_m(card.name, card.model_kwargs)
    assert abs(live - card.params_m) <= PARAMS_TOLERANCE * live, (
        f"{card.path}: params_m {card.params_m} but {card.name} has {live:.4f} M parameters"
    )


def _task_of(path) -> str:
    return (yaml.safe_load(path.read_text()) or {}).get("task", "classification")


# Collected when pytest collects this module: one test per card shipped in zoo/cards.
SHIPPED_CARDS = sorted(p.stem for p in PACKAGE_CARD_DIR.glob("*.yaml") if _task_of(p) == "classification")
SHIPPED_TASK_CARDS = sorted(p.stem for p in PACKAGE_CARD_DIR.glob("*.yaml") if _task_of(p) != "classification")


@pytest.mark.parametrize("name", SHIPPED_CARDS)
def test_shipped_card_matches_live_model(name):
    card = zoo.get_card(name)
    assert timm.is_model(name), f"{card.path}: '{name}' is not a timm model name (import zoo registers ours)"
    check_params(card)
    zoo.render_card(name)  # every card renders


def test_params_check_accepts_the_right_count_and_rejects_one_percent_off(card_dir):
    write_card(card_dir, card_fields())
    check_params(zoo.get_card(SMALL_MODEL))
    write_card(card_dir, card_fields(params_m=0.272128 * 1.01))
    with pytest.raises(AssertionError, match="params_m"):
        check_params(zoo.get_card(SMALL_MODEL))


def test_get_and_list_cards(card_dir):
    write_card(card_dir, card_fields())
    card = zoo.get_card(SMALL_MODEL)
    assert card.family == "convnext" and card.input_size == (3, 160, 160) and card.top1 == 12.5
    assert card.paper.url == "https://arxiv.org/abs/2201.03545"
    assert zoo.list_cards("test_conv*") == [SMALL_MODEL]
    assert zoo.list_cards("nothing_like_this*") == []
    assert SMALL_MODEL in zoo.list_models("test_*")  # carded timm models join the zoo


def test_unknown_card_suggests_close_names(card_dir):
    write_card(card_dir, card_fields())
    with pytest.raises(UnknownModelError) as info:
        zoo.get_card("test_convnxt")
    assert isinstance(info.value, KeyError)
    assert SMALL_MODEL in info.value.suggestions
    assert f"Did you mean: {SMALL_MODEL}" in str(info.value)


BAD_CARDS = [
    # (overrides, field named in the error, words in the error)
    ({"params_m": "eleven"}, "params_m", "expected a number"),
    ({"gflops": -1.0}, "gflops", "positive"),
    ({"paper": {"title": "x"}}, "paper.arxiv", "missing"),
    ({"paper": {"title": "x", "arxiv": "arxiv.org/abs/2201.03545"}}, "paper.arxiv", "arXiv id"),
    ({"input_size": [3, 160]}, "input_size", "3 numbers"),
    ({"mean": [0.5, 0.5]}, "mean", "3 numbers"),
    ({"std": [0.2, 0.0, 0.2]}, "std", "positive"),
    ({"official_repo": "github.com/x/y"}, "official_repo", "URL"),
    ({"metrics": [{"task": "image-classification", "dataset": "imagenet-1k", "metric": "top1", "value": "high",
                   "source": "paper"}]}, "metrics[0].value", "expected a number"),
    ({"metrics": [{"task": "cls", "dataset": "in1k", "metric": "top1", "value": 1.0}]}, "metrics[0].source", "missing"),
    ({"checkpoints": [{"url": "https://x/y.pth", "sha256": "abc", "note": "n"}]}, "checkpoints[0].sha256", "64"),
    ({"checkpoints": [{"url": "ftp://x/y.pth", "sha256": None, "note": "n"}]}, "checkpoints[0].url", "URL"),
    ({"top_1": 80.0}, "top_1", "unknown field"),
    ({"model_kwargs": ["num_classes"]}, "model_kwargs", "mapping"),
]


@pytest.mark.parametrize("overrides, field, words", BAD_CARDS, ids=[b[1] + "-" + b[2] for b in BAD_CARDS])
def test_schema_errors_name_file_and_field(tmp_path, overrides, field, words):
    path = write_card(tmp_path, card_fields(**overrides))
    with pytest.raises(CardError) as info:
        load_card_file(path)
    message = str(info.value)
    assert str(path) in message and f"field '{field}'" in message and words in message


def test_missing_field_and_name_mismatch_and_bad_yaml(tmp_path):
    fields = card_fields()
    del fields["license"]
    with pytest.raises(CardError, match="field 'license': missing"):
        load_card_file(write_card(tmp_path, fields))
    with pytest.raises(CardError, match="must equal the file name 'other_name'"):
        load_card_file(write_card(tmp_path, card_fields(), stem="other_name"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(CardError, match="not valid YAML"):
        load_card_file(broken)


def test_a_bad_card_on_the_path_is_reported_not_skipped(card_dir):
    write_card(card_dir, card_fields(gflops="lots"))
    with pytest.raises(CardError, match="gflops"):
        zoo.list_cards()


def test_render_card_is_hub_style_markdown(card_dir):
    sha = "ab" * 32
    write_card(card_dir, card_fields(checkpoints=[{"url": "https://example.org/w.pth", "sha256": sha, "note": "n"}]))
    text = zoo.render_card(SMALL_MODEL)
    front, body = text.split("---\n")[1], text.split("---\n", 2)[2]
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "timm" and meta["license"] == "apache-2.0"
    assert {"timm", "image-classification", "convnext"} <= set(meta["tags"]) and meta["datasets"] == ["imagenet-1k"]
    assert f"# Model card for {SMALL_MODEL}" in body
    assert "| image-classification | imagenet-1k | top1 | 12.5 | made up for the tests |" in body
    assert sha in body and "https://arxiv.org/abs/2201.03545" in body and "## Notes" in body


# ------------------------------------------------------------------------------------ task-head cards (issue 17)


def test_task_cards_load_with_their_sections(tmp_path):
    detector = load_card_file(write_card(tmp_path, detector_fields()))
    assert detector.task == "xray" and detector.params_m is None and detector.input_size is None
    assert detector.detector.config_file.name == "cascade-mask-rcnn_r101_fpn-sdanet_1x_pidray.py"
    assert detector.detector.config_file.is_file() and detector.metrics[0].split == "easy"
    forgery = load_card_file(write_card(tmp_path, forgery_fields()))
    assert forgery.task == "forgery" and forgery.forgery.head == "npr" and forgery.detector is None
    assert forgery.metrics[0].generator == "stylegan" and forgery.forgery.language_model is None


def _without(fields: dict, section: str, key: str) -> dict:
    return {**fields, section: {k: v for k, v in fields[section].items() if k != key}}


BAD_TASK_CARDS = [
    # (fields, field named in the error, words in the error)
    (card_fields(task="vision"), "task", "not one of"),
    (detector_fields(detector=None), "detector", "expected a mapping"),
    (_without(detector_fields(), "detector", "config"), "detector.config", "missing"),
    (detector_fields(detector={**detector_fields()["detector"], "config": "xray/no_such_config.py"}),
     "detector.config", "no such config"),
    (detector_fields(detector={**detector_fields()["detector"], "key_mapping": "convert official keys"}),
     "detector.key_mapping", "dotted"),
    (detector_fields(forgery=forgery_fields()["forgery"]), "forgery", "unknown field"),
    (card_fields(detector=detector_fields()["detector"]), "detector", "unknown field"),
    ({k: v for k, v in forgery_fields().items() if k != "forgery"}, "forgery", "missing"),
    (forgery_fields(forgery={**forgery_fields()["forgery"], "head": "cnnspot"}), "forgery.head", "not one of"),
    (forgery_fields(forgery={**forgery_fields()["forgery"], "encoder_branches": []}), "forgery.encoder_branches",
     "at least one"),
    (forgery_fields(metrics=[{**forgery_fields()["metrics"][0], "generator": ""}]), "metrics[0].generator",
     "non-empty"),
    (detector_fields(metrics=[{**detector_fields()["metrics"][0], "subset": "easy"}]), "metrics[0].subset",
     "unknown field"),
]


@pytest.mark.parametrize("fields, field, words", BAD_TASK_CARDS, ids=[b[1] + "-" + b[2] for b in BAD_TASK_CARDS])
def test_task_card_schema_errors_name_file_and_field(tmp_path, fields, field, words):
    path = write_card(tmp_path, fields)
    with pytest.raises(CardError) as info:
        load_card_file(path)
    message = str(info.value)
    assert str(path) in message and f"field '{field}'" in message and words in message


def test_list_cards_filters_by_task(card_dir):
    write_card(card_dir, card_fields())
    write_card(card_dir, detector_fields())
    write_card(card_dir, forgery_fields())
    assert zoo.list_cards("test_*", task="classification") == [SMALL_MODEL]
    assert zoo.list_cards("test_*", task="xray") == ["test_sdanet"]
    assert zoo.list_cards("test_*", task="forgery") == ["test_npr"]
    assert zoo.list_cards("test_*") == sorted([SMALL_MODEL, "test_sdanet", "test_npr"])
    assert "test_sdanet" not in zoo.list_models() and "test_npr" not in zoo.list_models()  # not timm models
    with pytest.raises(ValueError, match="unknown task"):
        zoo.list_cards(task="vision")


def test_task_cards_render(card_dir):
    write_card(card_dir, detector_fields())
    write_card(card_dir, forgery_fields())
    detector = zoo.render_card("test_sdanet")
    assert detector.startswith("---\nlibrary_name: mmdet") and "| easy | box_ap | 71.2 |" in detector
    assert "zoo xray detect test_sdanet" in detector and "convert_official_sdanet_checkpoint(state_dict)" in detector
    forgery = zoo.render_card("test_npr")
    assert "| stylegan | accuracy | 99.0 |" in forgery and "ResNet-50 on neighbouring-pixel residuals" in forgery
    assert "**Language model:** none" in forgery


@pytest.mark.parametrize("name", SHIPPED_TASK_CARDS)
def test_shipped_task_card_is_consistent(name):
    """Config present, backbone card real, key mapping importable, paper numbers per split complete, renders."""
    import importlib

    card = zoo.get_card(name)
    assert not timm.is_model(name), f"{card.path}: a task card must not shadow the timm model '{name}'"
    spec = card.detector or card.forgery
    if card.detector is not None:
        assert card.detector.config_file.is_file()
        if card.detector.backbone_card:
            assert zoo.get_card(card.detector.backbone_card).task == "classification"
        splits = {}
        for m in card.metrics:
            splits.setdefault(m.metric, set()).add(m.split)
        for metric, seen in splits.items():  # a per-split table is the paper's whole row, not a pick
            assert seen == {"easy", "hard", "hidden", "overall"}, f"{card.path}: {metric} splits {seen}"
    if spec.key_mapping:
        module, _, function = spec.key_mapping.rpartition(".")
        assert callable(getattr(importlib.import_module(module), function))
    rendered = zoo.render_card(name)
    assert f"# Model card for {name}" in rendered
    if not card.metrics:  # the cards without paper numbers say so
        assert "No published numbers" in rendered and "No paper numbers" in card.notes
