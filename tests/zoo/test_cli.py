"""The `zoo` command, run in-process: tables, cards, convert, demo, and exit code 2 for user mistakes."""

from __future__ import annotations

import hashlib

import pytest
import timm
import torch
from zoo_helpers import SMALL_MODEL, card_fields, detector_fields, forgery_fields, write_card

from attnzoo.cli import EXIT_USER_ERROR, main


@pytest.fixture
def carded(card_dir):
    write_card(card_dir, card_fields())
    return card_dir


def test_list_shows_live_params_and_card_numbers(carded, capsys):
    assert main(["list", "test_conv*"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if SMALL_MODEL in line)
    assert "convnext" in row and "0.27" in row and "0.02" in row and "12.5" in row


def test_list_filters_by_task(carded, capsys):
    write_card(carded, detector_fields())
    write_card(carded, forgery_fields())

    def rows(*argv):
        assert main(["list", "test_*", *argv]) == 0
        out = capsys.readouterr().out
        return {name for name in (SMALL_MODEL, "test_sdanet", "test_npr") if name in out}

    assert rows("--task", "classification") == {SMALL_MODEL}
    assert rows("--task", "xray") == {"test_sdanet"}
    assert rows("--task", "forgery") == {"test_npr"}
    assert rows() == {SMALL_MODEL, "test_sdanet", "test_npr"}
    assert main(["list", "test_*", "--task", "segmentation"]) == EXIT_USER_ERROR
    assert "no segmentation model matches 'test_*'" in capsys.readouterr().err


def test_card_prints_markdown(carded, capsys):
    assert main(["card", SMALL_MODEL]) == 0
    out = capsys.readouterr().out
    assert out.startswith("---\nlibrary_name: timm") and f"# Model card for {SMALL_MODEL}" in out


@pytest.mark.parametrize("argv, words", [
    (["card", "test_convnxt"], "Did you mean: test_convnext"),
    (["list", "no_such_model*"], "no model matches"),
    (["convert", "absent.pth", "out.safetensors"], "no such checkpoint file"),
    (["convert", "{corrupt}", "out.safetensors"], "truncated or corrupt"),
    (["convert", "{ok}", "out.safetensors", "--model", "test_convnxt"], "Did you mean: test_convnext"),
])
def test_user_mistakes_are_one_line_and_exit_2(carded, tmp_path, monkeypatch, capsys, argv, words):
    monkeypatch.chdir(tmp_path)
    torch.save({"x": torch.zeros(2)}, tmp_path / "ok.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"PK\x03\x04 not really a zip")
    argv = [a.format(corrupt=tmp_path / "corrupt.pth", ok=tmp_path / "ok.pth") for a in argv]
    assert main(argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: ") and words in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["convert", "only_one_argument"])
    assert info.value.code == EXIT_USER_ERROR


def test_convert_prints_the_sha256(tmp_path, capsys):
    model = timm.create_model(SMALL_MODEL)
    src, dst = tmp_path / "w.pth", tmp_path / "w.safetensors"
    torch.save({"state_dict": model.state_dict()}, src)
    assert main(["convert", str(src), str(dst), "--model", SMALL_MODEL]) == 0
    out = capsys.readouterr().out
    assert out.split()[0] == hashlib.sha256(dst.read_bytes()).hexdigest()


def test_convert_refuses_code_without_trust(tmp_path, capsys):
    import zoo_helpers

    src = tmp_path / "w.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "config": zoo_helpers.card_fields}, src)  # a function: needs code
    assert main(["convert", str(src), str(tmp_path / "o.safetensors")]) == EXIT_USER_ERROR
    assert "--trust-pickle" in capsys.readouterr().err
    assert main(["convert", str(src), str(tmp_path / "o.safetensors"), "--trust-pickle"]) == 0


def test_demo_prints_the_zoo_table(carded, capsys):
    assert main(["demo", "--pattern", SMALL_MODEL, "--xray-minutes", "0"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if SMALL_MODEL in line and "convnext" in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    name, family, params, gflops, size, latency, top1 = cells
    assert (name, family, params, size) == (SMALL_MODEL, "convnext", "0.27", "160x160")
    assert float(gflops) > 0 and float(latency) > 0 and 0 <= int(top1) < 1000


def test_demo_counts_but_does_not_run_models_above_the_limits(carded, capsys):
    assert main(["demo", "--pattern", SMALL_MODEL, "--max-gflops", "0.001", "--xray-minutes", "0"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if SMALL_MODEL in line and "convnext" in line)
    assert "not run" in row and "> 0.001 GFLOPs" in row and "0.27" in row
    assert "Not run: above 0.001 GFLOPs" in out
    assert main(["demo", "--pattern", SMALL_MODEL, "--budget-s", "-1", "--xray-minutes", "0"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if SMALL_MODEL in line and "convnext" in line)
    assert "not run" in row and "time budget" in row


def test_a_closed_pipe_ends_the_command_quietly():
    """`zoo card NAME | true`: the reader is gone before the first write; no BrokenPipeError traceback on stderr.
    The pipe's read end is closed before the command starts (as `true` would, but without racing it)."""
    import os
    import subprocess
    import sys

    script = "import sys; from attnzoo.cli import main; sys.exit(main(['card', 'biformer_tiny']))"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-c", script], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=900)  # a hang guard only: a loaded CI machine took over 120 s
    finally:
        os.close(write_end)
    assert proc.returncode == 141  # 128 + SIGPIPE, as `cat` or `grep` would end
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_configs_prints_existing_shipped_config_paths(capsys):
    assert main(["configs", "xray/*sdanet*"]) == 0
    paths = capsys.readouterr().out.split()
    assert any(p.endswith("xray/cascade-mask-rcnn_r101_fpn-sdanet_1x_pidray.py") for p in paths)
    assert all(p.endswith(".py") and "_base_" not in p and "sdanet" in p for p in paths)
    from pathlib import Path

    assert all(Path(p).is_file() for p in paths)
    assert main(["configs", "no_such/*"]) == EXIT_USER_ERROR
