"""``zoo xray detect``: one JSON + one picture per image, directory input, non-images skipped with a warning, a
checkpoint that does not fit the config refused with both names, labels that never overlap.

The detector is the CPU demo's (configs/xray/...synthetic-demo.py) at its seeded initialisation, saved without
``dataset_meta`` by the demo's own ``save_untrained_checkpoint``: an untrained head scores every class about equally,
so ``--score-thr 0`` keeps its full quota of detections (boxes and masks) for the schema checks.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("mmdet")
mask_utils = pytest.importorskip("pycocotools.mask")

from attnzoo.cli import EXIT_USER_ERROR, main  # noqa: E402
from attnzoo.tasks.images import collect_images  # noqa: E402
from attnzoo.tasks.xray import drawing  # noqa: E402
from attnzoo.tasks.xray.demo import save_untrained_checkpoint  # noqa: E402
from attnzoo.weights import read_checkpoint, save_pickle  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = "xray/cascade-mask-rcnn_biformer-tiny_fpn-sdanet_synthetic-demo.py"
PIDRAY_CLASSES = ("Baton", "Pliers", "Hammer", "Powerbank", "Scissors", "Wrench", "Gun", "Bullet", "Sprayer",
                  "HandCuffs", "Knife", "Lighter")


def _make_pidray():
    spec = importlib.util.spec_from_file_location("make_pidray", REPO / "tools" / "make_pidray.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_pidray", module)  # dataclasses look their module up while the file executes
    spec.loader.exec_module(sys.modules["make_pidray"])
    return sys.modules["make_pidray"]


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    """Two folders of synthetic scans (96 px) with a text file among them, and the untrained demo detector."""
    root = tmp_path_factory.mktemp("bags")
    _make_pidray().make_pidray(root / "set", num_train=0, num_test=2, image_size=96, seed=5,
                               splits=("easy", "hard"))
    (root / "set" / "hard" / "packing_list.txt").write_text("not an image")
    from attnzoo.shipped import config_path

    save_untrained_checkpoint(config_path(DEMO_CONFIG), root / "untrained.pth", seed=0)
    return root


@pytest.fixture(scope="module")
def detected(bags, tmp_path_factory):
    """One in-process run on a folder (with a non-image in it) plus a single file; returns (out dir, stdout, stderr)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("detected")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["xray", "detect", DEMO_CONFIG, str(bags / "untrained.pth"), str(bags / "set" / "hard"),
                     str(bags / "set" / "easy" / "easy_00001.png"), "--out", str(out), "--score-thr", "0"])
    assert code == 0, stderr.getvalue()[-2000:]
    return out, stdout.getvalue(), stderr.getvalue()


def test_one_json_and_one_picture_per_image(detected):
    out, stdout, _ = detected
    assert sorted(p.name for p in out.iterdir()) == ["easy_00001.json", "easy_00001.png", "hard_00000.json",
                                                     "hard_00000.png", "hard_00001.json", "hard_00001.png"]
    import cv2

    for path in out.glob("*.json"):
        result = json.loads(path.read_text())
        assert set(result) == {"image", "width", "height", "config", "checkpoint", "score_thr", "instances"}
        assert (result["width"], result["height"]) == (96, 96) and result["score_thr"] == 0.0
        assert Path(result["image"]).name == path.stem + ".png"
        instances = result["instances"]
        assert instances, f"{path}: an untrained detector at threshold 0 still returns its detections"
        scores = [r["score"] for r in instances]
        assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
        for record in instances:
            assert set(record) == {"class", "label", "score", "box", "mask"}
            assert record["class"] == PIDRAY_CLASSES[record["label"]]  # the config's classes, not COCO's
            x1, y1, x2, y2 = record["box"]
            assert 0 <= x1 <= x2 <= 96 and 0 <= y1 <= y2 <= 96
            mask = mask_utils.decode({"size": record["mask"]["size"], "counts": record["mask"]["counts"].encode()})
            assert mask.shape == (96, 96)
        picture = cv2.imread(str(path.with_suffix(".png")))
        assert picture.shape[0] >= 96 * 5 and picture.shape[1] == 96 * 5  # enlarged to about 512 px for the labels
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["images"] == 3 and summary["instances"] == sum(
        len(json.loads(p.read_text())["instances"]) for p in out.glob("*.json"))


def test_summary_line_per_image_names_classes_and_scores(detected):
    out, stdout, _ = detected
    lines = stdout.strip().splitlines()[:-1]
    assert [line.split(":")[0] for line in lines] == ["hard_00000.png", "hard_00001.png", "easy_00001.png"]
    first = json.loads((out / "hard_00000.json").read_text())["instances"]
    assert lines[0] == "hard_00000.png: " + ", ".join(f"{r['class']} {r['score']:.2f}" for r in first)


def test_non_image_in_a_folder_is_skipped_with_a_warning_naming_it(detected):
    _, stdout, stderr = detected
    warnings = [line for line in stderr.splitlines() if "skipping" in line]
    assert len(warnings) == 1 and "packing_list.txt" in warnings[0] and "not an image" in warnings[0]
    assert "packing_list" not in stdout


def test_checkpoint_that_does_not_fit_the_config_names_both(bags, tmp_path, capsys):
    state = read_checkpoint(bags / "untrained.pth")["state_dict"]
    state.pop("neck.selective_attentions.0.channel_attention.squeeze.0.weight")
    state["roi_head.bbox_head.0.fc_cls.weight"] = torch.zeros(81, 128)  # a COCO-sized class head
    bad = tmp_path / "other_detector.pth"
    save_pickle({"state_dict": state}, bad)
    code = main(["xray", "detect", DEMO_CONFIG, str(bad), str(bags / "set" / "easy"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    message = [line for line in err.splitlines() if line.startswith("zoo: error:")]
    assert code == EXIT_USER_ERROR and len(message) == 1
    assert str(bad) in message[0] and DEMO_CONFIG.split("/")[-1] in message[0]
    assert "neck.selective_attentions.0.channel_attention.squeeze.0.weight" in message[0]
    assert "roi_head.bbox_head.0.fc_cls.weight checkpoint [81, 128] vs model [13, 128]" in message[0]
    assert "Pass the config the checkpoint was trained with" in message[0]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("argv, words", [
    (["sdanet_r101_pidray", "{ckpt}", "{dir}/nowhere"], "nowhere: no such file or directory"),
    (["biformer_small", "{ckpt}", "{dir}"], "is a classification card, not a detector"),
    (["xray/no_such_config.py", "{ckpt}", "{dir}"], "no shipped config of that name"),
    ([DEMO_CONFIG, "{dir}/absent.pth", "{dir}"], "absent.pth: no such checkpoint file"),
])
def test_user_mistakes_exit_2_with_one_line(bags, tmp_path, capsys, argv, words):
    argv = [a.format(ckpt=bags / "untrained.pth", dir=bags / "set" / "easy") for a in argv]
    assert main(["xray", "detect", *argv, "--out", str(tmp_path)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("zoo: error: ") and words in err[-1]


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_unreadable_checkpoint_is_one_error_line_naming_it(bags, tmp_path, capsys, damage):
    """mmengine reads the file through the zoo's reader (``import attnzoo.openmmlab``): no traceback, no pre-read."""
    data = (bags / "untrained.pth").read_bytes()
    bad = tmp_path / f"{damage}.pth"
    bad.write_bytes(b"" if damage == "empty" else data[:len(data) // 2])
    code = main(["xray", "detect", DEMO_CONFIG, str(bad), str(bags / "set" / "easy"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("zoo: error:")]
    assert code == EXIT_USER_ERROR and len(errors) == 1 and "Traceback" not in err
    assert str(bad) in errors[0] and "not a readable PyTorch checkpoint" in errors[0]


def test_bad_files_in_a_folder_are_skipped_or_read_and_the_others_detected(bags, tmp_path, monkeypatch):
    """Issue 26 rows 1-3: a name that is not UTF-8 crashed the process in the collector (OpenCV, segmentation fault);
    a truncated JPEG passed the collector and mmcv's loader asserted (traceback, later images never processed); a
    14000x14000 PNG of 24 KB was decoded in full (10.5 GB). Now the images reach mmdet as decoded arrays: the first
    is read (shown with \\xNN escapes, its outputs keep its name), the other two are skipped with a warning naming
    them, the huge one from its header, and every other image is detected."""
    import contextlib
    import io
    import os
    import shutil

    from image_files import forbid_decoding_huge_images, not_utf8_path, write_huge_png, write_truncated_jpeg

    folder = tmp_path / "bags"
    folder.mkdir()
    shutil.copy(bags / "set" / "easy" / "easy_00000.png", folder / "easy_00000.png")
    shutil.copy(bags / "set" / "hard" / "hard_00000.png", not_utf8_path(folder, "bag"))
    write_truncated_jpeg(folder / "easy_00001.jpg", size=(96, 96))
    write_huge_png(folder / "easy_00002.png")
    forbid_decoding_huge_images(monkeypatch)
    out = tmp_path / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["xray", "detect", DEMO_CONFIG, str(bags / "untrained.pth"), str(folder), "--out", str(out),
                     "--score-thr", "1"])
    assert code == 0, stderr.getvalue()[-2000:]
    lines = stdout.getvalue().strip().splitlines()
    assert lines[:-1] == ["easy_00000.png: nothing at or above 1", "\\xff\\xfebag.png: nothing at or above 1"]
    summary = json.loads(lines[-1])
    assert summary["images"] == 2 and summary["skipped"] == 2
    warnings = [line for line in stderr.getvalue().splitlines() if "skipping" in line]
    assert len(warnings) == 2  # the huge one while collecting (its header), the truncated one while decoding
    assert warnings[0].startswith(f"warning: skipping {folder / 'easy_00002.png'}: 14000x14000 = 196.0 megapixels")
    assert warnings[1].startswith(f"warning: skipping {folder / 'easy_00001.jpg'}: cannot be decoded as an image")
    assert "truncated" in warnings[1]
    assert sorted(os.listdir(os.fsencode(out))) == [b"easy_00000.json", b"easy_00000.png", b"\xff\xfebag.json",
                                                     b"\xff\xfebag.png"]
    result = json.loads((out / os.fsdecode(b"\xff\xfebag.json")).read_text())
    assert result["image"] == not_utf8_path(folder, "bag") and (result["width"], result["height"]) == (96, 96)


def test_collect_images_keeps_order_and_warns_per_skipped_file(tmp_path):
    import cv2

    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("b.png", "a.jpg"):
        cv2.imwrite(str(folder / name), np.zeros((8, 8, 3), np.uint8))
    (folder / "c.png").write_bytes(b"not really a png")
    (folder / "notes.md").write_text("x")
    (folder / "sub").mkdir()
    warnings = []
    found = collect_images([folder, folder / "b.png"], warnings.append)
    assert [p.name for p in found] == ["a.jpg", "b.png"]  # sorted, no repeat, no subfolder
    assert len(warnings) == 2 and "c.png" in warnings[0] and "cannot be decoded" in warnings[0]
    assert "notes.md" in warnings[1] and "not an image" in warnings[1]


def test_labels_never_overlap_each_other():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 25))
        corners = rng.uniform(0, 400, (n, 2))
        boxes = [(x, y, x + w, y + h) for (x, y), (w, h) in zip(corners, rng.uniform(5, 200, (n, 2)))]
        sizes = [(int(w), 19) for w in rng.integers(60, 110, n)]
        labels = drawing.place_labels(boxes, sizes, 512, 512)
        for i, a in enumerate(labels):
            assert a[2] - a[0] == sizes[i][0] and a[3] - a[1] == sizes[i][1] and a[0] >= 0 and a[1] >= 0
            assert a[2] <= 512
            for b in labels[i + 1:]:
                assert not drawing._overlaps(a, b), (a, b)
