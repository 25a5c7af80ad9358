"""`zoo train | validate | predict` on the project's ImageFolder maker: the JSON last line, the run folder, resume,
--pretrained under a head of another size, bad inputs (exit 2 or a warning naming the file), and a 2-process torchrun.

The model is a BiFormer shrunk through --model-kwargs (one block per stage, 0.5 M parameters) at 32x32 pixels, so a
training epoch over 36 images takes about a second.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attnzoo.cli import EXIT_USER_ERROR, main
from attnzoo.tasks.classification import build_dataset, class_to_index_for_model, scan_image_folder

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import make_imagefolder  # noqa: E402

TINY_BIFORMER = ["--model-kwargs", "depth=(1,1,1,1)", "embed_dim=(32,64,96,128)", "qk_dims=(32,64,96,128)", "n_win=2",
                 "topks=(1,2,4,-2)"]
FAST = ["--img-size", "32", "--batch-size", "8", "--workers", "0", "--no-aug"]
CLASSES = ["cross", "diamond", "ellipse", "hexagon", "rectangle", "triangle"]  # natural sort of the shape names


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on a shared 2-core box are slower than 1
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_imagefolder.make(tmp_path_factory.mktemp("shapes"), num_train=6, num_val=2, size=32, seed=0)


@pytest.fixture(scope="module")
def trained_run(shapes, tmp_path_factory):
    """Two epochs of `zoo train`; returns (run folder, the JSON it printed, its stdout)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    buffer = io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with redirect_stdout(buffer):
        code = main(["train", "biformer_tiny", "--data", str(shapes), "--out", str(out), "--epochs", "2", *FAST,
                     *TINY_BIFORMER])
    torch.set_num_threads(threads)
    assert code == 0
    return out, _last_json(buffer.getvalue()), buffer.getvalue()


def test_maker_is_deterministic(tmp_path):
    a = make_imagefolder.make(tmp_path / "a", num_train=2, num_val=1, size=24, seed=3)
    b = make_imagefolder.make(tmp_path / "b", num_train=2, num_val=1, size=24, seed=3)
    c = make_imagefolder.make(tmp_path / "c", num_train=2, num_val=1, size=24, seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 6 * 3 and [p.parts[:2] for p in files[:1]] == [("train", "cross")]
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)


def test_train_writes_a_hub_folder_that_validate_and_predict_read(trained_run, shapes, capsys):
    out, summary, stdout = trained_run
    assert summary["epoch"] == 2 and summary["val_images"] == 12 and summary["world_size"] == 1
    assert [line.split("  ")[0] for line in stdout.splitlines() if line.startswith("epoch")] == ["epoch 1/2",
                                                                                                "epoch 2/2"]
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "README.md", "train_state.pth",
                                              "metrics.jsonl"}
    config = json.loads((out / "config.json").read_text())
    assert config["label_names"] == CLASSES and config["num_classes"] == 6
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    card = (out / "README.md").read_text()
    assert f"| {summary['top1']:.2f} |" in card and "zoo train biformer_tiny" in card

    # The run's number again, from the folder alone.
    assert main(["validate", str(out), "--data", str(shapes / "val"), "--workers", "0", "--batch-size", "5"]) == 0
    result = _last_json(capsys.readouterr().out)
    assert result["images"] == 12 and result["top1"] == summary["top1"] and result["top5"] == summary["top5"]
    assert result["input_size"] == [3, 32, 32] and result["architecture"] == "biformer_tiny"
    assert result["crop_pct"] == 0.875 and result["crop_mode"] == "center"
    # The transform flags reach timm's eval transform (the official Agent evaluation squashes, then crops).
    assert main(["validate", str(out), "--data", str(shapes / "val"), "--workers", "0", "--crop-pct", "1.0",
                 "--crop-mode", "squash"]) == 0
    squashed = _last_json(capsys.readouterr().out)
    assert squashed["crop_pct"] == 1.0 and squashed["crop_mode"] == "squash" and squashed["images"] == 12
    assert squashed["loss"] != result["loss"]  # other pixels went in

    images = [str(shapes / "val" / "cross" / "00000.png"), str(shapes / "val" / "triangle" / "00001.png")]
    assert main(["predict", str(out), *images, "--json", "--top-k", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in lines] == images
    for line in lines:
        probs = [c["prob"] for c in line["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
        assert all(c["label"] == CLASSES[c["index"]] for c in line["top"])


def test_resume_continues_from_the_saved_epoch(trained_run, shapes, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)
    assert main(["train", "biformer_tiny", "--data", str(shapes), "--out", str(run), "--epochs", "3", "--resume",
                 *FAST, *TINY_BIFORMER]) == 0
    stdout = capsys.readouterr().out
    assert [line.split("  ")[0] for line in stdout.splitlines() if line.startswith("epoch")] == ["epoch 3/3"]
    assert _last_json(stdout)["epoch"] == 3
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    state = torch.load(run / "train_state.pth", weights_only=True)
    updates_per_epoch = 36 // 8  # drop_last
    # AdamW's step counters went on from the saved optimizer state (they would read 1 epoch's worth if restarted).
    steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert state["epoch"] == 3 and steps == {3 * updates_per_epoch}

    # Nothing left to do is a user mistake, not a silent no-op.
    assert main(["train", "biformer_tiny", "--data", str(shapes), "--out", str(run), "--epochs", "3", "--resume",
                 *FAST, *TINY_BIFORMER]) == EXIT_USER_ERROR
    assert "already trained 3 epochs" in capsys.readouterr().err


def test_pretrained_loads_the_backbone_under_a_head_of_another_size(trained_run, tmp_path, capsys):
    three = make_imagefolder.make(tmp_path / "three", num_train=3, num_val=1, size=32, num_classes=3, seed=1)
    out = tmp_path / "finetuned"
    # lr 0 throughout: the saved weights are exactly what --pretrained loaded plus the fresh 3-class head.
    assert main(["train", "biformer_tiny", "--data", str(three), "--out", str(out), "--epochs", "1",
                 "--pretrained", str(trained_run[0]), "--lr", "0", "--warmup-lr", "0", "--min-lr", "0",
                 "--warmup-epochs", "0", *FAST, *TINY_BIFORMER]) == 0
    assert _last_json(capsys.readouterr().out)["val_images"] == 3
    source = load_file(str(trained_run[0] / "model.safetensors"))
    tuned = load_file(str(out / "model.safetensors"))
    assert tuned["head.weight"].shape == (3, 128) and source["head.weight"].shape == (6, 128)
    # BatchNorm statistics move in a train-mode forward even at lr 0; every learned tensor must be as loaded.
    body = [k for k in source if not k.startswith("head.") and not k.endswith(("running_mean", "running_var",
                                                                                 "num_batches_tracked"))]
    assert body and all(torch.equal(source[k], tuned[k]) for k in body)
    assert json.loads((out / "config.json").read_text())["label_names"] == ["ellipse", "rectangle", "triangle"]

    # Weights of another shape than the model are refused with the keys named, exit 2.
    wider = [*TINY_BIFORMER[:2], "embed_dim=(48,64,96,128)", "qk_dims=(48,64,96,128)", *TINY_BIFORMER[4:]]
    assert main(["train", "biformer_tiny", "--data", str(three), "--out", str(tmp_path / "bad"), "--epochs", "1",
                 "--pretrained", str(trained_run[0]), *FAST, *wider]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: --pretrained") and "shape mismatch" in err and len(err.splitlines()) == 1


def test_bad_inputs_exit_2_with_the_fix(trained_run, shapes, tmp_path, capsys):
    run = str(trained_run[0])
    empty_class = make_imagefolder.make(tmp_path / "empty", num_train=2, num_val=1, size=32, num_classes=2)
    (empty_class / "train" / "zebra").mkdir()
    foreign = tmp_path / "foreign"
    shutil.copytree(shapes / "val" / "cross", foreign / "zebra")
    cases = [
        (["validate", run, "--data", str(tmp_path / "missing")], "no such folder"),
        (["train", "biformer_tiny", "--data", str(empty_class), "--out", str(tmp_path / "r1"), *FAST],
         "class folder 'zebra' has no images"),
        (["train", "biformer_tiny", "--data", str(shapes / "val"), "--out", str(tmp_path / "r2"), *FAST],
         "no train/ folder"),
        (["train", "biformer_tiny", "--data", str(shapes), "--out", run, *FAST], "pass --resume"),
        (["train", "biformer_tiny", "--data", str(shapes), "--out", str(tmp_path / "r3"), "--resume", *FAST],
         "nothing to resume"),
        (["validate", run, "--data", str(foreign), "--workers", "0"], "zebra are not classes of the model"),
        (["predict", run, str(tmp_path / "nope.png")], "no such image file"),
    ]
    for argv, words in cases:
        assert main(argv) == EXIT_USER_ERROR, argv
        err = capsys.readouterr().err
        assert err.startswith("zoo: error: ") and words in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_a_corrupt_image_is_skipped_with_a_warning_naming_it(trained_run, shapes, tmp_path, capsys):
    val = tmp_path / "val"
    shutil.copytree(shapes / "val", val)
    corrupt = val / "ellipse" / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    assert main(["validate", str(trained_run[0]), "--data", str(val), "--workers", "0"]) == 0
    captured = capsys.readouterr()
    assert f"skipped unreadable image {corrupt}" in captured.err
    result = _last_json(captured.out)
    assert result["images"] == 12 and result["skipped"] == [str(corrupt)]


def test_a_truncated_jpeg_is_counted_out_never_replaced_by_another_image(trained_run, shapes, tmp_path, capsys):
    """Issue 26 row 8: the header check let a truncated JPEG through and timm's loader replaced it by the next sample:
    13 images counted, one of them twice. Now it is left out with a warning, and the numbers are the clean folder's."""
    from image_files import write_truncated_jpeg

    run = str(trained_run[0])
    assert main(["validate", run, "--data", str(shapes / "val"), "--workers", "0"]) == 0
    clean = _last_json(capsys.readouterr().out)
    val = tmp_path / "val"
    shutil.copytree(shapes / "val", val)
    truncated = val / "ellipse" / "00000b.jpg"
    write_truncated_jpeg(truncated, size=(32, 32))
    assert main(["validate", run, "--data", str(val), "--workers", "0"]) == 0
    captured = capsys.readouterr()
    assert f"zoo: warning: skipped unreadable image {truncated} (cannot be decoded as an image" in captured.err
    assert "truncated" in captured.err and "12 images" in captured.out and "1 skipped" in captured.out
    result = _last_json(captured.out)
    assert result["images"] == 12 and result["skipped"] == [str(truncated)]
    assert (result["top1"], result["top5"], result["loss"]) == (clean["top1"], clean["top5"], clean["loss"])


def test_the_dataset_reads_through_the_zoo_reader_and_never_replaces_an_image(trained_run, shapes, tmp_path, capsys):
    """Unchecked (--no-image-check), a truncated image stops the run with one line naming it, also from a loader
    worker process, where timm's dataset silently returned the next sample; a 16-bit image is scaled, not clipped."""
    import numpy as np
    from image_files import write_truncated_jpeg
    from PIL import Image

    from attnzoo.tasks.classification.datasets import UnreadableImageError

    val = tmp_path / "val"
    shutil.copytree(shapes / "val", val)
    truncated = val / "ellipse" / "00000b.jpg"
    write_truncated_jpeg(truncated, size=(32, 32))
    ramp = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(ramp).save(val / "cross" / "gray16.png")
    scan = scan_image_folder(val, check_images=False)
    dataset = build_dataset(scan, {c: i for i, c in enumerate(scan.classes)})
    paths = [p for p, _ in dataset.reader.samples]
    image, target = dataset[paths.index(str(val / "cross" / "gray16.png"))]
    assert target == 0 and image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image)[..., 1], np.rint(ramp / 65535 * 255).astype(np.uint8))
    bad = paths.index(str(truncated))
    with pytest.raises(UnreadableImageError, match=f"^{truncated}: cannot be decoded as an image .*truncated"):
        dataset[bad]
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, sampler=[bad], num_workers=1)
    with pytest.raises(UnreadableImageError) as raised:
        next(iter(loader))
    assert str(raised.value).startswith(f"{truncated}: cannot be decoded") and "\n" not in str(raised.value)

    assert main(["validate", str(trained_run[0]), "--data", str(val), "--workers", "0", "--no-image-check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"zoo: error: {truncated}: cannot be decoded") and "Traceback" not in "".join(err)


def test_predict_skips_an_oversized_image_and_shows_names_that_are_not_utf8(trained_run, shapes, tmp_path, capsys,
                                                                           monkeypatch):
    """Issue 26 row 3 for zoo predict: a 24 KB PNG of 14000x14000 pixels was a DecompressionBombError traceback and
    the images after it were never classified; a name that is not UTF-8 could not be printed (UnicodeEncodeError)."""
    from image_files import forbid_decoding_huge_images, not_utf8_path, write_huge_png

    huge = tmp_path / "huge.png"
    write_huge_png(huge)
    odd = not_utf8_path(tmp_path, "cross")
    shutil.copy(shapes / "val" / "cross" / "00000.png", odd)
    good = shapes / "val" / "triangle" / "00001.png"
    forbid_decoding_huge_images(monkeypatch)
    assert main(["predict", str(trained_run[0]), str(huge), odd, str(good), "--top-k", "1"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{tmp_path}/\\xff\\xfecross.png: ")
    assert lines[1].startswith(f"{good}: ")
    assert f"zoo: warning: skipping {huge}: 14000x14000 = 196.0 megapixels, over the limit" in captured.err
    assert main(["predict", str(trained_run[0]), str(huge)]) == EXIT_USER_ERROR
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("zoo: error: no readable image among")


def test_shards_cover_every_image_once_and_imagenet_synsets_keep_their_index(shapes, tmp_path):
    scan = scan_image_folder(shapes / "val")
    mapping = {c: i for i, c in enumerate(scan.classes)}
    shards = [build_dataset(scan, mapping, shard=(rank, 3)).reader.samples for rank in range(3)]
    paths = [s[0] for shard in shards for s in shard]
    assert sorted(paths) == sorted(str(p) for files in scan.images.values() for p in files) and len(set(paths)) == 12

    for synset in ("n01443537", "n01440764"):  # ImageNet-1k classes 1 and 0
        shutil.copytree(shapes / "val" / "cross", tmp_path / "imagenet" / synset)
    imagenet = scan_image_folder(tmp_path / "imagenet")
    assert class_to_index_for_model(imagenet, 1000, None) == {"n01440764": 0, "n01443537": 1}
    with pytest.raises(ValueError, match="2 class folders, but the model's head has 5 outputs"):
        class_to_index_for_model(imagenet, 5, None)


def test_two_processes_under_torchrun_train_like_one(shapes, tmp_path, capsys):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "attnzoo.cli",
               "train", "biformer_tiny", "--data", str(shapes), "--out", str(out), "--epochs", "1",
               "--batch-size", "4", *FAST[:2], "--workers", "0", "--no-aug", *TINY_BIFORMER]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)  # ends a hang only
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    # Only rank 0 logs and writes: one epoch line, one JSON line, one set of files.
    assert summary["world_size"] == 2 and summary["val_images"] == 12
    assert sum(line.startswith("epoch 1/1") for line in lines) == 1 and sum(line.startswith("{") for line in lines) == 1
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "README.md", "train_state.pth",
                                              "metrics.jsonl"}
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert "2 process(es)" in (out / "README.md").read_text()
    # The top-1 summed across the two ranks is the single-process top-1 of the saved weights.
    assert main(["validate", str(out), "--data", str(shapes / "val"), "--workers", "0"]) == 0
    assert _last_json(capsys.readouterr().out)["top1"] == summary["top1"]


def test_predict_names_imagenet_classes_for_a_1000_class_head(shapes, capsys):
    from timm.data import ImageNetInfo

    image = str(shapes / "val" / "ellipse" / "00000.png")
    assert main(["predict", "test_convnext", image, "--random-init", "--json", "--top-k", "2"]) == 0
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    info = ImageNetInfo("imagenet-1k")
    assert [c["label"] for c in line["top"]] == [info.index_to_description(c["index"]) for c in line["top"]]
    assert line["top"][0]["prob"] >= line["top"][1]["prob"]
