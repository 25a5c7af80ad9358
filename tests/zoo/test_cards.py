"""Card schema, lookup, rendering, and every shipped card checked against the live model."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import timm
import torch
import yaml
from zoo_helpers import SMALL_MODEL, card_fields, detector_fields, forgery_fields, write_card

import attnzoo
from attnzoo.cards import (
    DETECTOR_TASKS,
    PACKAGE_CARD_DIR,
    TASK_SPECS,
    TASKS,
    CardError,
    TaskSpec,
    UnknownModelError,
    load_card_file,
    register_task,
    render,
)
from attnzoo.cli import main
from attnzoo.errors import ZooError

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
    card = attnzoo.get_card(name)
    assert timm.is_model(name), f"{card.path}: '{name}' is not a timm model name (import attnzoo registers ours)"
    check_params(card)
    attnzoo.render_card(name)  # every card renders


def test_params_check_accepts_the_right_count_and_rejects_one_percent_off(card_dir):
    write_card(card_dir, card_fields())
    check_params(attnzoo.get_card(SMALL_MODEL))
    write_card(card_dir, card_fields(params_m=0.272128 * 1.01))
    with pytest.raises(AssertionError, match="params_m"):
        check_params(attnzoo.get_card(SMALL_MODEL))


def test_get_and_list_cards(card_dir):
    write_card(card_dir, card_fields())
    card = attnzoo.get_card(SMALL_MODEL)
    assert card.family == "convnext" and card.input_size == (3, 160, 160) and card.top1 == 12.5
    assert card.paper.url == "https://arxiv.org/abs/2201.03545"
    assert attnzoo.list_cards("test_conv*") == [SMALL_MODEL]
    assert attnzoo.list_cards("nothing_like_this*") == []
    assert SMALL_MODEL in attnzoo.list_models("test_*")  # carded timm models join the zoo


def test_unknown_card_suggests_close_names(card_dir):
    write_card(card_dir, card_fields())
    with pytest.raises(UnknownModelError) as info:
        attnzoo.get_card("test_convnxt")
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
        attnzoo.list_cards()


def test_render_card_is_hub_style_markdown(card_dir):
    sha = "ab" * 32
    write_card(card_dir, card_fields(checkpoints=[{"url": "https://example.org/w.pth", "sha256": sha, "note": "n"}]))
    text = attnzoo.render_card(SMALL_MODEL)
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
    assert attnzoo.list_cards("test_*", task="classification") == [SMALL_MODEL]
    assert attnzoo.list_cards("test_*", task="xray") == ["test_sdanet"]
    assert attnzoo.list_cards("test_*", task="forgery") == ["test_npr"]
    assert attnzoo.list_cards("test_*") == sorted([SMALL_MODEL, "test_sdanet", "test_npr"])
    assert "test_sdanet" not in attnzoo.list_models() and "test_npr" not in attnzoo.list_models()  # not timm models
    with pytest.raises(ValueError, match="unknown task"):
        attnzoo.list_cards(task="vision")


def test_task_cards_render(card_dir):
    write_card(card_dir, detector_fields())
    write_card(card_dir, forgery_fields())
    detector = attnzoo.render_card("test_sdanet")
    assert detector.startswith("---\nlibrary_name: mmdet") and "| easy | box_ap | 71.2 |" in detector
    assert "zoo xray detect test_sdanet" in detector and "convert_official_sdanet_checkpoint(state_dict)" in detector
    forgery = attnzoo.render_card("test_npr")
    assert "| stylegan | accuracy | 99.0 |" in forgery and "ResNet-50 on neighbouring-pixel residuals" in forgery
    assert "**Language model:** none" in forgery


@pytest.mark.parametrize("name", SHIPPED_TASK_CARDS)
def test_shipped_task_card_is_consistent(name):
    """Config present, backbone card real, key mapping importable, paper numbers per split complete, renders."""
    import importlib

    card = attnzoo.get_card(name)
    assert not timm.is_model(name), f"{card.path}: a task card must not shadow the timm model '{name}'"
    spec = card.detector or card.forgery
    if card.detector is not None:
        assert card.detector.config_file.is_file()
        if card.detector.backbone_card:
            assert attnzoo.get_card(card.detector.backbone_card).task == "classification"
        splits = {}
        for m in card.metrics:
            splits.setdefault(m.metric, set()).add(m.split)
        if card.task == "xray":  # PIDray's per-split table is the paper's whole row, not a pick
            for metric, seen in splits.items():
                assert seen == {"easy", "hard", "hidden", "overall"}, f"{card.path}: {metric} splits {seen}"
        else:  # a COCO / ADE card gives one number per metric
            assert all(seen == {None} for seen in splits.values()), f"{card.path}: splits {splits}"
    if spec.key_mapping:
        module, _, function = spec.key_mapping.rpartition(".")
        assert callable(getattr(importlib.import_module(module), function))
    rendered = attnzoo.render_card(name)
    assert f"# Model card for {name}" in rendered
    if not card.metrics:  # the cards without paper numbers say so
        assert "No published numbers" in rendered and "No paper numbers" in card.notes


# ------------------------------------------------------------------------------------------- the task spec table


def test_task_names_and_errors_derive_from_the_table():
    assert tuple(TASKS) == tuple(TASK_SPECS) == ("classification", "xray", "detection", "segmentation", "forgery")
    assert tuple(DETECTOR_TASKS) == ("xray", "detection", "segmentation")
    assert issubclass(CardError, ValueError) and issubclass(CardError, ZooError)
    assert issubclass(UnknownModelError, KeyError) and issubclass(UnknownModelError, ZooError)


@dataclass(frozen=True)
class KeypointsSection:
    dataset: str
    num_keypoints: int


def _parse_keypoints(check, raw) -> KeypointsSection:
    raw = check.mapping(raw, "keypoints", {"dataset", "num_keypoints"})
    count = check.number(raw["num_keypoints"], "keypoints.num_keypoints", positive=True)
    return KeypointsSection(dataset=check.text(raw["dataset"], "keypoints.dataset"), num_keypoints=int(count))


def _render_keypoints(card, spec) -> str:
    lines = render.header_lines(card, spec) + [
        f"- **Model Type:** {spec.kind}",
        f"- **Keypoints:** {card.section.num_keypoints} ({card.section.dataset})",
        *render.source_lines(card),
        "",
        "```bash",
        *render.command_lines(card, spec),
        "```",
        "",
    ]
    return "\n".join(lines + render.results_lines(card) + render.notes_lines(card))


@pytest.fixture
def keypoints_task():
    """A made-up "keypoints" task, registered for one test: one TaskSpec, no other code edited."""
    spec = register_task(TaskSpec(
        name="keypoints", section="keypoints", parse=_parse_keypoints, model_stats_required=False,
        render=_render_keypoints, library="mmpose", tags=("keypoint-detection", "openmmlab"), kind="Pose estimator",
        summary="A {card.family} pose estimator", commands=("zoo pose {card.name} images/",),
        built_from=lambda card: f"{card.section.num_keypoints} keypoints; {card.section.dataset}",
    ))
    try:
        yield spec
    finally:
        TASK_SPECS.pop(spec.name)
    assert "keypoints" not in TASKS


def keypoints_fields(name: str = "test_pose", **overrides) -> dict:
    fields = {**forgery_fields(name), "task": "keypoints", "family": "hrnet",
              "keypoints": {"dataset": "coco", "num_keypoints": 17},
              "metrics": [{"task": "pose-estimation", "dataset": "coco", "metric": "ap", "value": 75.1,
                           "source": "made up for the tests"}]}
    del fields["forgery"]
    fields.update(overrides)
    return fields


def test_a_task_registered_at_run_time_loads_renders_and_lists(keypoints_task, card_dir, capsys):
    assert "keypoints" in TASKS and "keypoints" not in DETECTOR_TASKS
    write_card(card_dir, keypoints_fields())
    write_card(card_dir, card_fields())

    card = attnzoo.get_card("test_pose")
    assert card.task == "keypoints" and card.spec is keypoints_task
    assert card.section == KeypointsSection("coco", 17) and card.detector is None and card.forgery is None
    assert card.params_m is None  # model stats optional, as the spec says

    text = attnzoo.render_card("test_pose")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["library_name"] == "mmpose" and meta["tags"] == ["keypoint-detection", "openmmlab", "attnzoo", "hrnet"]
    assert "A hrnet pose estimator, from" in text and "**Keypoints:** 17 (coco)" in text
    assert "zoo pose test_pose images/" in text and "| pose-estimation | coco | ap | 75.1 |" in text
    assert main(["card", "test_pose"]) == 0 and capsys.readouterr().out.strip() == text.strip()

    assert attnzoo.list_cards("test_*", task="keypoints") == ["test_pose"]
    assert main(["list", "test_*", "--task", "keypoints"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "test_pose" in line)
    assert "keypoints" in row and "hrnet" in row and "17 keypoints; coco" in row and "ap 75.1" in row
    assert main(["list", "test_*"]) == 0  # both tables: the timm model and the new task's card
    out = capsys.readouterr().out
    assert SMALL_MODEL in out and "17 keypoints; coco" in out


@pytest.mark.parametrize("fields, field, words", [
    (card_fields(keypoints={"dataset": "coco", "num_keypoints": 17}), "keypoints", "unknown field"),
    ({k: v for k, v in keypoints_fields().items() if k != "keypoints"}, "keypoints", "missing"),
    (keypoints_fields(keypoints={"dataset": "coco", "num_keypoints": 0}), "keypoints.num_keypoints", "positive"),
    (keypoints_fields(detector=detector_fields()["detector"]), "detector", "unknown field"),
])
def test_a_registered_task_section_is_checked(keypoints_task, tmp_path, fields, field, words):
    path = write_card(tmp_path, fields)
    with pytest.raises(CardError) as info:
        load_card_file(path)
    assert str(path) in str(info.value) and f"field '{field}'" in str(info.value) and words in str(info.value)


def test_register_task_refuses_a_taken_name_and_a_common_field():
    with pytest.raises(ValueError, match="already registered"):
        register_task(TASK_SPECS["xray"])
    with pytest.raises(ValueError, match="common card field"):
        TaskSpec(name="bad", section="metrics", parse=_parse_keypoints, model_stats_required=False,
                 render=_render_keypoints, library="x", tags=(), kind="x", summary="x", built_from=str)
