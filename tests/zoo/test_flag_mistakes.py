"""Issue 35 items 6 and 7: user mistakes in flags and model folders are one line (exit 2), checked before any work.

``--opt nosuchopt``, ``--sched nosuchsched``, ``--device potato``, ``--model-kwargs num_classes=-3``, ``--img-size
100000`` (a 10-gigapixel input: the limit is checked when the flag is read, before anything is allocated), a model
folder whose config.json asks timm's factory to load weights or wrap the model (nothing is read or run), and ``zoo bench
'nosuch*'`` (an error, not an empty table).
"""

from __future__ import annotations

import json

import pytest
import timm
import torch
from zoo_helpers import SMALL_MODEL

import attnzoo
from attnzoo.cli import EXIT_USER_ERROR, main


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("folder") / "model"
    torch.manual_seed(0)
    attnzoo.save_pretrained(timm.create_model(SMALL_MODEL), path)
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("image") / "one.png"
    Image.new("RGB", (32, 32), (120, 30, 200)).save(path)
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err), err
    return err[-1]


@pytest.mark.parametrize("argv, words", [
    (["train", SMALL_MODEL, "--data", "DATA", "--out", "OUT", "--opt", "nosuchopt"],
     "argument --opt: 'nosuchopt' is not a timm optimizer"),
    (["train", SMALL_MODEL, "--data", "DATA", "--out", "OUT", "--sched", "nosuchsched"],
     "argument --sched: 'nosuchsched' is not a timm scheduler"),
    (["train", SMALL_MODEL, "--data", "DATA", "--out", "OUT", "--img-size", "100000"],
     "argument --img-size: 100000x100000 = 10000.0 megapixels is over the 89.5-megapixel limit"),
    (["validate", SMALL_MODEL, "--data", "DATA", "--img-size", "100000"], "argument --img-size: 100000x100000"),
    (["predict", SMALL_MODEL, "IMAGE", "--img-size", "100000"], "argument --img-size: 100000x100000"),
    (["bench", SMALL_MODEL, "--img-size", "100000"], "argument --img-size: 100000x100000"),
    (["export", SMALL_MODEL, "--input-size", "3", "100000", "100000"], "argument --input-size: 100000x100000"),
])
def test_flag_values_are_refused_when_read(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == EXIT_USER_ERROR
    line = _error_line(capsys)
    assert words in line and line.startswith("zoo "), line


def test_the_largest_accepted_side_is_within_the_pixel_limit():
    from attnzoo.commands.validate import image_side
    from attnzoo.tasks.images import DEFAULT_MAX_PIXELS

    assert image_side("9459") == 9459 and 9459 ** 2 <= DEFAULT_MAX_PIXELS < 9460 ** 2
    with pytest.raises(Exception, match="at most 9459 per side"):
        image_side("9460")


@pytest.mark.parametrize("verb", ["train", "validate", "predict", "bench"])
def test_a_device_that_is_not_one_is_one_line(verb, image, tmp_path, capsys):
    argv = {"train": ["train", SMALL_MODEL, "--data", str(tmp_path), "--out", str(tmp_path / "run")],
            "validate": ["validate", SMALL_MODEL, "--data", str(tmp_path)],
            "predict": ["predict", SMALL_MODEL, str(image)],
            "bench": ["bench", "poolformer_s12", "--out", str(tmp_path / "bench")]}[verb]
    assert main([*argv, "--device", "potato"]) == EXIT_USER_ERROR
    assert _error_line(capsys) == "zoo: error: --device 'potato' is not a device; use cpu, cuda or cuda:N."


@pytest.mark.parametrize("verb", ["predict", "export"])
def test_a_negative_class_count_is_one_line(verb, image, tmp_path, capsys):
    argv = {"predict": ["predict", SMALL_MODEL, str(image)],
            "export": ["export", SMALL_MODEL, "--output", str(tmp_path / "m.onnx")]}[verb]
    assert main([*argv, "--model-kwargs", "num_classes=-3"]) == EXIT_USER_ERROR
    assert _error_line(capsys) == ("zoo: error: --model-kwargs num_classes=-3: num_classes must be at least 0 (0: no "
                                   "classifier, features out).")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("extra", [{"pretrained": True}, {"checkpoint_path": "SELF"},
                                   {"pretrained_cfg_overlay": {"file": "/etc/passwd"}},
                                   {"pretrained_cfg": {"file": "/etc/passwd"}}, {"features_only": True},
                                   {"num_classes": -3}])
def test_a_hostile_config_json_is_one_line_and_nothing_is_read(extra, folder, image, tmp_path, capsys, monkeypatch):
    import shutil

    hostile = tmp_path / "model"
    shutil.copytree(folder, hostile)
    config = json.loads((hostile / "config.json").read_text())
    config["model_args"].update({k: str(hostile / "model.safetensors") if v == "SELF" else v for k, v in extra.items()})
    (hostile / "config.json").write_text(json.dumps(config))
    key = next(iter(extra))

    def no_download(*args, **kwargs):
        raise AssertionError("a hostile config.json made timm fetch weights")

    monkeypatch.setattr(timm.models._builder, "load_pretrained", no_download)
    assert main(["predict", str(hostile), str(image)]) == EXIT_USER_ERROR
    line = _error_line(capsys)
    assert line.startswith(f"zoo: error: {hostile / 'config.json'}: model_args.{key}"), line
    with pytest.raises(attnzoo.ZooError, match=f"model_args.{key}"):
        attnzoo.create_model(str(hostile))


def test_bench_pattern_that_matches_nothing_is_an_error(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "nosuch*", "--out", str(out)]) == EXIT_USER_ERROR
    assert _error_line(capsys) == ("zoo: error: no zoo model matches 'nosuch*' (`zoo list` names them; patterns use * "
                                   "and ?, comma-separated)")
    assert main(["bench", "poolformer_s12,nosuch*", "--out", str(out)]) == EXIT_USER_ERROR  # each pattern counts
    assert not out.exists()
