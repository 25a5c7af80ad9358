"""Issue 35, items 1, 2, 4 and 11: how a folder becomes classes (nested sub-folders count under their class folder,
nothing is relabelled or dropped without a word), folder walks that end on any link structure, `zoo predict`'s
default --top-k and `zoo validate`'s top-k on a model with fewer than five classes, and names that never reach the
terminal raw.

The model is timm's tiny ConvNeXt (test_convnext) with a 3-class head saved as a hub folder (class names cross, diamond,
ellipse), run at 32 px: each verb call takes well under a second.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import attnzoo
from attnzoo.cli import EXIT_USER_ERROR, main
from attnzoo.tasks.classification import build_dataset, scan_image_folder
from attnzoo.tasks.folders import printable, walk_files

CLASSES = ["cross", "diamond", "ellipse"]
FAST = ["--img-size", "32", "--workers", "0"]
ESCAPE = "\x1b[31m"  # an ANSI colour sequence
NOT_UTF8 = "\udcff\udcfe"  # the bytes ff fe, as os.fsdecode gives them in a str


def _image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def _no_raw_control(out: str, err: str = "") -> None:
    """No escape sequence, carriage return or other control character but the line ends, and no undecodable byte, in
    stdout and in the zoo's lines of stderr (tqdm's progress bars there end with carriage returns)."""
    zoo_lines = "\n".join(part for line in err.splitlines() for part in line.split("\r") if part.startswith("zoo"))
    text = out + zoo_lines
    assert "\x1b" not in err and not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F
                                         or 0xD800 <= ord(c) <= 0xDFFF for c in text), repr(text)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = timm.create_model("test_convnext", num_classes=3)
    return attnzoo.save_pretrained(model, tmp_path_factory.mktemp("model") / "three", label_names=CLASSES)


@pytest.fixture
def nested(tmp_path) -> Path:
    """The probe's folder: an image in a sub-folder of a class folder named like another class, a nested sub-folder
    and an image in no class folder."""
    val = tmp_path / "val"
    _image(val / "cross" / "a.png", 1)
    _image(val / "cross" / "diamond" / "x.png", 2)
    _image(val / "diamond" / "b.png", 3)
    _image(val / "ellipse" / "c.png", 4)
    _image(val / "ellipse" / "sub" / "d.png", 5)
    _image(val / "loose.png", 6)
    return val


def _loop(folder: Path) -> None:
    """The probe's hang: two links in a class folder that loop (`ln -s . l1; ln -s . l2`)."""
    os.symlink(".", folder / "l1")
    os.symlink(".", folder / "l2")


# --------------------------------------------------------------------------------- item 1 and 2: the folder rule


def test_every_image_is_labelled_by_its_class_folder_or_reported(nested, capsys):
    _loop(nested / "ellipse")
    scan = scan_image_folder(nested)
    dataset = build_dataset(scan, {c: i for i, c in enumerate(scan.classes)})
    labels = {Path(path).relative_to(nested).as_posix(): target for path, target in dataset.reader.samples}
    # timm's reader gave x.png the label "diamond" (its innermost folder) and dropped ellipse/sub/d.png.
    assert labels == {"cross/a.png": 0, "cross/diamond/x.png": 0, "diamond/b.png": 1, "ellipse/c.png": 2,
                      "ellipse/sub/d.png": 2}
    assert [dataset[i][1] for i in range(len(dataset))] == list(labels.values())
    assert scan.skipped == [(nested / "loose.png", f"in no class folder (images go in {nested}/<class>/); not counted")]
    notes = dict(scan.notes)
    assert "its images count as 'cross'" in notes[nested / "cross" / "diamond"]
    assert "a loop" in notes[nested / "ellipse" / "l1"] and "a loop" in notes[nested / "ellipse" / "l2"]
    err = capsys.readouterr().err
    assert f"zoo: warning: skipped {nested / 'loose.png'}: in no class folder" in err
    assert f"zoo: warning: {nested / 'ellipse' / 'l1'}: a link to a folder already walked (a loop)" in err


def test_nested_images_count_under_their_class_folder_in_the_dataset(nested, capsys):
    """The labels alone (no links): the folder check and the dataset agree on every image."""
    scan = scan_image_folder(nested, verbose=False)
    dataset = build_dataset(scan, {c: i for i, c in enumerate(scan.classes)})
    assert sorted((Path(p).relative_to(nested).as_posix(), t) for p, t in dataset.reader.samples) == [
        ("cross/a.png", 0), ("cross/diamond/x.png", 0), ("diamond/b.png", 1), ("ellipse/c.png", 2),
        ("ellipse/sub/d.png", 2)]
    assert len(dataset) == scan.num_images == 5


def test_walks_end_on_any_link_structure_and_follow_links_to_real_folders(tmp_path):
    top = tmp_path / "top"
    _image(top / "a" / "1.png")
    _image(tmp_path / "elsewhere" / "2.png")
    os.symlink(tmp_path / "elsewhere", top / "a" / "linked")  # a dataset of links: followed
    os.symlink(top, top / "a" / "up")  # a link to an ancestor
    os.symlink("b2", top / "b1")  # two links to each other: neither is a folder
    os.symlink("b1", top / "b2")
    os.symlink(top / "a", top / "a2")  # a second way into a folder already walked
    os.symlink("nothing.png", top / "a" / "dangling.png")
    walk = walk_files(top, {".png"})
    assert sorted(p.relative_to(top).as_posix() for p in walk.files) == ["a/1.png", "a/linked/2.png"]
    problems = {p.relative_to(top).as_posix(): reason for p, reason in walk.problems}
    assert set(problems) == {"a/up", "a2", "a/dangling.png"}
    assert problems["a/dangling.png"] == "a link to nothing"


def test_validate_counts_every_image_and_ends_on_link_loops(model_folder, nested, capsys):
    _loop(nested / "ellipse")
    assert main(["validate", str(model_folder), "--data", str(nested), *FAST]) == 0
    captured = capsys.readouterr()
    result = _last_json(captured.out)
    assert result["images"] == 5 and result["skipped"] == [str(nested / "loose.png")]
    # Fewer than five classes: "top-5" is the top-3, and says so.
    assert result["top5_k"] == 3 and result["top5"] == 100.0
    assert " top-3 100.000 " in captured.out.splitlines()[-2]


def test_train_walks_with_the_same_rule(nested, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    nested.rename(data / "train")
    _loop(data / "train" / "ellipse")
    out = tmp_path / "run"
    assert main(["train", "test_convnext", "--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size",
                 "5", "--img-size", "32", "--workers", "0", "--no-aug"]) == 0
    err = capsys.readouterr().err
    assert "in no class folder" in err and "a loop" in err
    assert json.loads((out / "config.json").read_text())["label_names"] == CLASSES  # 5 images: one full batch


# --------------------------------------------------------------------------------------------- item 4: top-k


def test_predict_default_top_k_fits_a_model_with_fewer_than_five_classes(model_folder, tmp_path, capsys):
    image = _image(tmp_path / "img.png")
    assert main(["predict", str(model_folder), str(image), "--img-size", "32", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["top"]
    assert sorted(c["label"] for c in top) == CLASSES
    assert main(["predict", str(model_folder), str(image), "--img-size", "32", "--top-k", "4"]) == EXIT_USER_ERROR
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "zoo: error: --top-k 4: the model has 3 classes; pass --top-k 3 or less."


def test_predict_on_a_folder_reads_its_own_images_and_names_a_sub_folder(model_folder, tmp_path, capsys):
    _image(tmp_path / "in" / "a.png")
    _image(tmp_path / "in" / "b.png")
    _image(tmp_path / "in" / "deeper" / "c.png")
    assert main(["predict", str(model_folder), str(tmp_path / "in"), "--img-size", "32", "--top-k", "1"]) == 0
    captured = capsys.readouterr()
    assert [line.split(":")[0] for line in captured.out.splitlines()] == [str(tmp_path / "in" / n)
                                                                          for n in ("a.png", "b.png")]
    assert f"skipping the 1 image(s) in sub-folder {tmp_path / 'in' / 'deeper'}" in captured.err


# --------------------------------------------------------------------------------------- item 11: names on screen


def test_printable_escapes_control_characters_and_bytes_that_are_not_utf8():
    assert printable("plain name-é.png") == "plain name-é.png"
    assert printable(f"{ESCAPE}red\r\nfake") == "\\x1b[31mred\\x0d\\x0afake"
    assert printable(f"a{NOT_UTF8}b") == "a\\xff\\xfeb" == printable(b"a\xff\xfeb")
    assert printable("\u202etxt.png\x7f\x85") == "\\u202etxt.png\\x7f\\x85"
    assert printable(Path("/x") / f"{ESCAPE}.png") == "/x/\\x1b[31m.png"


def test_names_from_files_and_classes_never_reach_the_terminal_raw(tmp_path, capsys):
    torch.manual_seed(0)
    model = timm.create_model("test_convnext", num_classes=2)
    names = [f"{ESCAPE}red", f"bad{NOT_UTF8}"]
    folder = attnzoo.save_pretrained(model, tmp_path / "odd", label_names=names)
    image = _image(tmp_path / f"{ESCAPE}x\nzoo: fake line.png")
    assert main(["predict", str(folder), str(image), "--img-size", "32", "--top-k", "2"]) == 0
    captured = capsys.readouterr()
    (line,) = captured.out.splitlines()
    _no_raw_control(captured.out, captured.err)
    assert line.startswith(f"{tmp_path}/\\x1b[31mx\\x0azoo: fake line.png: ")
    assert "\\x1b[31mred " in line and "bad\\xff\\xfe " in line

    val = tmp_path / "val"
    _image(val / names[0] / f"{ESCAPE}1.png")
    _image(val / names[1] / "2.png")
    (val / names[1] / f"{ESCAPE}broken.png").write_bytes(b"not an image")
    assert main(["validate", str(folder), "--data", str(val), *FAST]) == 0
    captured = capsys.readouterr()
    _no_raw_control(captured.out, captured.err)
    assert "\\x1b[31mbroken.png" in captured.err

    assert main(["validate", str(folder), "--data", str(tmp_path / f"no{ESCAPE}such\nfolder"), *FAST]) == 2
    err = capsys.readouterr().err
    _no_raw_control("", err)
    assert len(err.strip().splitlines()) == 1 and "no\\x1b[31msuch\\x0afolder" in err
