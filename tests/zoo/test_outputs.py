"""Issue 35 items 3 and 6: one rule for output paths (attnzoo.outputs), on every verb that writes.

- No output overwrites an input and two inputs never share an output name (``zoo xray detect FOLDER --out FOLDER``
  with bag.png and bag.jpg overwrote bag.png).
- An output path that is a file where a folder is needed, a folder where a file is needed, a name too long for the file
  system or a folder that cannot be written is one ``zoo: error:`` line before any work (train, convert, export,
  bench, xray detect); a write the file system refuses (a full disk, read-only) is one line too, and a run folder keeps
  one consistent epoch.
- A class folder whose name is not UTF-8 is written into the run's README.md (shown as \\xNN).
"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from zoo_helpers import SMALL_MODEL

from attnzoo.cli import EXIT_USER_ERROR, main
from attnzoo.outputs import OutputError, output_file, output_folder, per_input_names, writing

REPO = Path(__file__).resolve().parents[2]
LONG = "n" * 300  # longer than any common file system's 255-byte names
TINY_TRAIN = ["--model-kwargs", "depth=(1,1,1,1)", "embed_dim=(32,64,96,128)", "qk_dims=(32,64,96,128)", "n_win=2",
              "topks=(1,2,4,-2)", "--img-size", "32", "--batch-size", "4", "--workers", "0", "--no-aug"]


def _one_error_line(capsys) -> str:
    """The one error line (after a training run's progress bars, which also go to stderr)."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("zoo: error: ")]
    assert len(errors) == 1 and err[-1] == errors[0] and "Traceback" not in "".join(err), err[-5:]
    return errors[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A small model's weights as a .safetensors file (what convert / export read)."""
    import timm

    from attnzoo.weights import save_safetensors

    path = tmp_path_factory.mktemp("weights") / "small.safetensors"
    save_safetensors(timm.create_model(SMALL_MODEL).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    sys.path.insert(0, str(REPO / "tools"))
    import make_imagefolder

    return make_imagefolder.make(tmp_path_factory.mktemp("shapes"), num_train=4, num_val=1, size=32, num_classes=3,
                                 seed=0)


# -- rule 2: per-input names -----------------------------------------------------------------------------------------


def test_two_inputs_never_share_an_output_and_none_lands_on_an_input(tmp_path):
    for name in ("bag.png", "bag.jpg", "Bag.webp", "case.png", "bag_png.png"):
        (tmp_path / name).write_bytes(b"x")
    inputs = [tmp_path / n for n in ("bag.png", "bag.jpg", "Bag.webp", "case.png", "bag_png.png")]
    names = per_input_names(inputs, tmp_path, (".json", ".png"))
    # one stem (case ignored): stem and suffix; bag.png's bag_png.png would be the input bag_png.png: _2
    assert names[:3] == ["bag_png_2", "bag_jpg", "Bag_webp"]
    assert names[3:] == ["case_png", "bag_png_png"]  # out is the input folder: case.png would be the input itself
    outputs = {(tmp_path / f"{n}{s}").name.casefold() for n in names for s in (".json", ".png")}
    assert len(outputs) == 2 * len(inputs)
    assert not outputs & {p.name.casefold() for p in inputs}
    # elsewhere, unique stems keep their plain names (predictions/bag_0012.json as the README shows)
    assert per_input_names(inputs[3:4], tmp_path / "out", (".json", ".png")) == ["case"]
    # another input of the verb (a checkpoint) is never written over either
    (tmp_path / "ckpt.png").write_bytes(b"x")
    assert per_input_names([tmp_path / "a" / "ckpt.jpg"], tmp_path, (".png",), keep=[tmp_path / "ckpt.png"]) == [
        "ckpt_jpg"]


# -- rule 1: checked before the work ---------------------------------------------------------------------------------


def test_output_paths_that_cannot_be_written_are_named(tmp_path, monkeypatch):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(OutputError, match=r"--out .*file.txt: it is a file, not a folder"):
        output_folder(a_file, "--out")
    with pytest.raises(OutputError, match=r"file.txt is a file, not a folder"):
        output_folder(a_file / "sub", "--out")
    with pytest.raises(OutputError, match=r"DST .*: it is a folder; name the file to write"):
        output_file(tmp_path, "DST")
    with pytest.raises(OutputError, match=r"file.txt is a file, not a folder"):
        output_file(a_file / "x.onnx", "--output")
    with pytest.raises(OutputError, match=r"longer than the \d+ bytes the file system takes"):
        output_file(tmp_path / f"{LONG}.onnx", "--output")
    with pytest.raises(OutputError, match=r"it is the input file itself"):
        output_file(a_file, "DST", inputs=[tmp_path / "." / "file.txt"])
    assert not (tmp_path / "sub").exists()
    # a folder the user cannot write (simulated: the tests may run as root, whom permissions do not stop)
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False)
    with pytest.raises(OutputError, match=r"is not writable|read-only"):
        output_folder(tmp_path / "new", "--out")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.ENAMETOOLONG, errno.EACCES])
def test_a_refused_write_is_one_error_naming_the_path(tmp_path, code):
    with pytest.raises(OutputError, match=rf"--out {tmp_path}: cannot write \(") as info:
        with writing(tmp_path, "--out"):
            raise OSError(code, os.strerror(code), str(tmp_path / ".x.tmp"))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError), writing(tmp_path):  # not the file system's answer: unchanged
        raise ValueError("a bug")


def _verb(kind: str, out: str, weights: Path, shapes: Path) -> list[str]:
    return {
        "convert": ["convert", str(weights), out],
        "export": ["export", SMALL_MODEL, "--output", out],
        "bench": ["bench", "poolformer_s12", "--no-peers", "--iters", "1", "--warmup", "0", "--out", out],
        "train": ["train", "biformer_tiny", "--data", str(shapes), "--out", out, *TINY_TRAIN, "--epochs", "1"],
        "xray": ["xray", "detect", "xray/cascade-mask-rcnn_biformer-tiny_fpn-sdanet_synthetic-demo.py", str(weights),
                 str(shapes / "val"), "--out", out],
    }[kind]


FILE_VERBS = ("convert", "export")
FOLDER_VERBS = ("bench", "train", "xray")


@pytest.mark.parametrize("kind", FILE_VERBS + FOLDER_VERBS)
@pytest.mark.parametrize("case", ["under a file", "name too long", "wrong kind"])
def test_every_verb_names_a_bad_output_path_in_one_line(kind, case, tmp_path, weights, shapes, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    suffix = ".safetensors" if kind == "convert" else ".onnx" if kind == "export" else ""
    a_folder = tmp_path / f"folder{suffix}"
    a_folder.mkdir()
    out = {"under a file": a_file / f"out{suffix}",
           "name too long": tmp_path / (LONG + suffix),
           "wrong kind": a_file if kind in FOLDER_VERBS else a_folder}[case]
    assert main(_verb(kind, str(out), weights, shapes)) == EXIT_USER_ERROR
    line = _one_error_line(capsys)
    assert str(out) in line or str(out)[:60] in line, line
    assert "choose another path" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", a_folder.name]  # nothing written
    assert not list(a_folder.iterdir())
    assert a_file.read_text() == "x"


# -- rule 3: while writing -------------------------------------------------------------------------------------------


def test_convert_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, weights, capsys, monkeypatch):
    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    dst = tmp_path / "out.safetensors"
    assert main(["convert", str(weights), str(dst)]) == EXIT_USER_ERROR
    assert "cannot write (the disk is full)" in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on a shared 2-core box are slower than 1
    yield
    torch.set_num_threads(threads)


def test_a_full_disk_while_training_keeps_one_consistent_epoch(tmp_path, shapes, capsys, monkeypatch, one_thread):
    """Also: a class folder whose name is not UTF-8 is written into the run's card (it crashed zoo train's README),
    and metrics.jsonl records the lr each epoch trained with (it recorded the next epoch's)."""
    import shutil

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from attnzoo.weights import read_checkpoint

    data = tmp_path / "data"
    shutil.copytree(shapes, data)
    for split in ("train", "val"):
        sorted((data / split).iterdir())[0].rename(data / split / os.fsdecode(b"\xff\xfeodd"))
    run = tmp_path / "run"
    used = []  # the lr of every optimizer step (item 7: metrics.jsonl recorded the next epoch's lr)
    hook = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: used.append(optimizer.param_groups[0]["lr"]))
    try:
        assert main(["train", "biformer_tiny", "--data", str(data), "--out", str(run), *TINY_TRAIN,
                     "--epochs", "2"]) == 0
    finally:
        hook.remove()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = len(used) // 2
    assert [m["lr"] for m in metrics] == [used[0], used[steps]] and used[0] != used[steps]
    assert set(used[:steps]) == {used[0]} and set(used[steps:]) == {used[steps]}
    assert "\\xff\\xfeodd" in (run / "README.md").read_text(encoding="utf-8")
    labels = json.loads((run / "config.json").read_text())["label_names"]
    assert os.fsdecode(b"\xff\xfeodd") in labels  # config.json keeps the name itself, as the folder is named

    before = {name: (run / name).read_bytes() for name in ("config.json", "model.safetensors", "README.md",
                                                           "train_state.pth")}
    capsys.readouterr()
    real_save = torch.save

    def full(obj, f, *args, **kwargs):  # the disk fills up while epoch 3's resume state is written
        if isinstance(obj, dict) and "epoch" in obj:
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full)
    code = main(["train", "biformer_tiny", "--data", str(data), "--out", str(run), *TINY_TRAIN, "--epochs", "3",
                 "--resume"])
    assert code == EXIT_USER_ERROR
    assert "cannot write (the disk is full)" in _one_error_line(capsys)
    for name, data_before in before.items():  # epoch 2 as it was: hub files and state agree
        assert (run / name).read_bytes() == data_before, name
    assert read_checkpoint(run / "train_state.pth")["epoch"] == 2
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]


# -- rule 2 on the verb: zoo xray detect FOLDER --out FOLDER ---------------------------------------------------------


def test_xray_detect_into_its_input_folder_overwrites_no_input(tmp_path, capsys):
    """bag.png and bag.jpg in one folder, --out that folder: bag.png was overwritten by bag.jpg's picture."""
    pytest.importorskip("mmdet")
    import numpy as np
    from PIL import Image

    from attnzoo.shipped import config_path
    from attnzoo.tasks.xray.demo import save_untrained_checkpoint

    config = "xray/cascade-mask-rcnn_biformer-tiny_fpn-sdanet_synthetic-demo.py"
    checkpoint = tmp_path / "untrained.pth"
    save_untrained_checkpoint(config_path(config), checkpoint, seed=0)
    bags = tmp_path / "bags"
    bags.mkdir()
    rng = np.random.default_rng(0)
    for name in ("bag.png", "bag.jpg", "case.png"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(bags / name)
    before = {p.name: p.read_bytes() for p in bags.iterdir()}
    assert main(["xray", "detect", config, str(checkpoint), str(bags), "--out", str(bags), "--score-thr", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["images"] == 3
    for name, data in before.items():
        assert (bags / name).read_bytes() == data, f"input {name} was overwritten"
    assert sorted(p.name for p in bags.iterdir()) == sorted([*before, "bag_jpg.json", "bag_jpg.png", "bag_png.json",
                                                             "bag_png.png", "case_png.json", "case_png.png"])
    assert json.loads((bags / "bag_jpg.json").read_text())["image"] == str(bags / "bag.jpg")
    assert json.loads((bags / "bag_png.json").read_text())["image"] == str(bags / "bag.png")
