"""Issue 35 (round 2, what was left): the output-path rule (attnzoo.outputs) on ``zoo demo --out`` and the forgery
tools (``tools/forgery_train.py --out``, ``tools/forgery_eval.py --run``'s metrics.json, ``tools/make_forgery_set.py
--out``).

Before, each of them made its folder or wrote its file with a plain ``mkdir`` / ``write_text``: an out path that is a
file, a name too long for the file system or a full disk was a traceback (``zoo demo`` after the whole model-zoo
step), and ``forgery_eval.py --test RUN/metrics.json`` overwrote its own input. Now the path is checked before the
work, and a refusal is one line (``zoo: error:`` / ``<tool>: error:``, exit 2). The tests stop at the check: nothing
they start reaches the work (the demo's steps, training, evaluation).
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from attnzoo.cli import EXIT_USER_ERROR, main

REPO = Path(__file__).resolve().parents[2]
LONG = "n" * 300  # longer than any common file system's 255-byte names


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _one_line(text: str, prefix: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prefix}: error: ") and "Traceback" not in text, lines[-5:]
    return lines[0]


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "file.txt"
    path.write_text("x")
    return path


def _bad_out(case: str, tmp_path: Path, a_file: Path) -> Path:
    return {"a file": a_file, "under a file": a_file / "out", "name too long": tmp_path / LONG}[case]


# -- zoo demo --out ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["a file", "under a file", "name too long", "xray is a file"])
def test_demo_out_is_checked_before_any_step(case, tmp_path, a_file, capsys):
    if case == "xray is a file":
        out = tmp_path / "demo"
        out.mkdir()
        (out / "xray").write_text("x")
    else:
        out = _bad_out(case, tmp_path, a_file)
    # a pattern no model matches keeps the model-zoo step short if the check came after it (as it did before)
    assert main(["demo", "--pattern", "no-such-model-*", "--out", str(out)]) == EXIT_USER_ERROR
    captured = capsys.readouterr()
    line = _one_line(captured.err, "zoo")
    assert "--out" in line and "choose another path" in line and (str(out)[:60] in line), line
    assert "Model zoo" not in captured.out  # no step started
    assert a_file.read_text() == "x"


def test_demo_without_the_xray_step_does_not_check_an_out_it_never_writes(tmp_path, a_file, capsys):
    assert main(["demo", "--pattern", "no-such-model-*", "--xray-minutes", "0", "--out", str(a_file)]) == 0
    assert "X-ray step skipped" in capsys.readouterr().out


def test_demo_full_disk_is_one_line_naming_out(tmp_path, capsys, monkeypatch):
    import attnzoo.tasks.xray.demo as xray_demo

    def full_disk(out_dir, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(out_dir) / "config.py"))

    monkeypatch.setattr(xray_demo, "run_xray_demo", full_disk)
    out = tmp_path / "demo"
    assert main(["demo", "--pattern", "no-such-model-*", "--out", str(out)]) == EXIT_USER_ERROR
    line = _one_line(capsys.readouterr().err, "zoo")
    assert f"--out {out / 'xray'}: cannot write (the disk is full)" in line, line


# -- tools/forgery_train.py --out --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["a file", "under a file", "name too long"])
def test_forgery_train_out_is_checked_before_training(case, tmp_path, a_file, capsys):
    out = _bad_out(case, tmp_path, a_file)
    train_file = tmp_path / "absent.jsonl"  # never read: the check comes first
    with pytest.raises(SystemExit) as exited:
        _tool("forgery_train").main(["--head", "npr", "--train", str(train_file), "--out", str(out)])
    assert exited.value.code == EXIT_USER_ERROR
    line = _one_line(capsys.readouterr().err, "forgery_train.py")
    assert "--out" in line and "choose another path" in line, line
    assert a_file.read_text() == "x"


def test_forgery_train_never_writes_over_its_training_file(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    train_file = out / "run.json"  # the annotations where the run writes run.json
    train_file.write_text('{"image": "x.png", "label": 0}\n')
    with pytest.raises(SystemExit) as exited:
        _tool("forgery_train").main(["--head", "npr", "--train", str(train_file), "--out", str(out)])
    assert exited.value.code == EXIT_USER_ERROR
    assert "it is the input file itself" in _one_line(capsys.readouterr().err, "forgery_train.py")
    assert train_file.read_text() == '{"image": "x.png", "label": 0}\n'


def test_forgery_train_full_disk_is_one_line_and_no_run_json(tmp_path, capsys, monkeypatch):
    tools = _tool("make_forgery_set"), _tool("forgery_train")
    data = tools[0].make_set(tmp_path / "set", train=4, test=0, size=16, seed=0)

    def full_disk(state_dict, path, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(tools[1], "save_safetensors", full_disk)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exited:
        tools[1].main(["--head", "npr", "--train", str(data["train"]), "--out", str(out), "--image-size", "16",
                       "--epochs", "1", "--batch-size", "4", "--no-bn-recalibration"])
    assert exited.value.code == EXIT_USER_ERROR
    line = _one_line(capsys.readouterr().err, "forgery_train.py")
    assert f"--out {out}: cannot write (the disk is full)" in line, line
    assert not (out / "run.json").exists()  # not a finished run


# -- tools/forgery_eval.py: RUN/metrics.json ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def npr_run(tmp_path_factory) -> Path:
    from attnzoo.heads.forgery.baselines import NPR
    from attnzoo.weights import save_safetensors

    folder = tmp_path_factory.mktemp("runs") / "npr"
    folder.mkdir()
    save_safetensors(NPR().state_dict(), folder / "model.safetensors")
    (folder / "run.json").write_text(json.dumps({"args": {"head": "npr", "tiny": False, "image_size": 32},
                                                 "summary": {}}))
    return folder


def test_forgery_eval_checks_its_metrics_file_before_evaluating(npr_run, tmp_path, capsys):
    (npr_run / "metrics.json").mkdir()  # a folder where the metrics file goes
    try:
        with pytest.raises(SystemExit) as exited:
            _tool("forgery_eval").main(["--run", str(npr_run), "--test", str(tmp_path / "absent.jsonl")])
    finally:
        (npr_run / "metrics.json").rmdir()
    assert exited.value.code == EXIT_USER_ERROR
    line = _one_line(capsys.readouterr().err, "forgery_eval.py")
    assert f"--run {npr_run / 'metrics.json'}: it is a folder" in line, line


def test_forgery_eval_never_writes_over_its_test_file(npr_run, capsys):
    test_file = npr_run / "metrics.json"  # the annotations where the metrics go
    test_file.write_text("keep\n")
    try:
        with pytest.raises(SystemExit) as exited:
            _tool("forgery_eval").main(["--run", str(npr_run), "--test", str(test_file)])
        assert exited.value.code == EXIT_USER_ERROR
        assert "it is the input file itself" in _one_line(capsys.readouterr().err, "forgery_eval.py")
        assert test_file.read_text() == "keep\n"
    finally:
        test_file.unlink()


# -- tools/make_forgery_set.py --out -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["a file", "under a file", "name too long"])
def test_make_forgery_set_out_is_checked_before_any_image(case, tmp_path, a_file, capsys):
    out = _bad_out(case, tmp_path, a_file)
    with pytest.raises(SystemExit) as exited:
        _tool("make_forgery_set").main(["--out", str(out), "--train", "2", "--test", "2"])
    assert exited.value.code == EXIT_USER_ERROR
    line = _one_line(capsys.readouterr().err, "make_forgery_set.py")
    assert "--out" in line and "choose another path" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
