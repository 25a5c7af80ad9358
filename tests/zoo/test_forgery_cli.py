"""`zoo forgery check`: one JSON line per image with the run's own P(fake), folders, non-image files skipped with a
warning that names them, and a bad run folder (or damaged, misfitting weights) ending in one error line with exit code
2; attnzoo.tasks.forgery as a library (run folders written by tools/forgery_train.py, the official weights' readers)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnzoo.cli import EXIT_USER_ERROR, main

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("albumentations")
pytest.importorskip("safetensors")


def _write_run(folder, head: str, state: dict, **args):
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = "trainable.safetensors" if head == "fakereasoning" else "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / weights))
    (folder / "run.json").write_text(json.dumps({"args": {"head": head, **args}, "summary": {}}))
    return folder


@pytest.fixture(scope="module")
def npr_run(tmp_path_factory):
    from attnzoo.heads.forgery.baselines import NPR

    torch.manual_seed(0)
    model = NPR().eval()
    folder = _write_run(tmp_path_factory.mktemp("runs") / "npr", "npr", model.state_dict(), tiny=False,
                        image_size=32)
    return folder, model


@pytest.fixture
def image_folder(tmp_path):
    """Three images (one in a subfolder, one larger than the crop), a text file and a truncated PNG."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for name, shape in (("a.png", (32, 32, 3)), ("b.jpg", (40, 48, 3)), ("more/c.png", (36, 36, 3))):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not a picture\n")
    (folder / "broken.png").write_bytes((folder / "a.png").read_bytes()[:80])
    return folder


def test_json_lines_carry_the_runs_own_probability(npr_run, image_folder, capsys):
    from attnzoo.heads.forgery.baselines import evaluation_transform

    folder, model = npr_run
    # a folder gives its image files, not its subfolders; a second argument names the subfolder
    assert main(["forgery", "check", str(folder), str(image_folder), str(image_folder / "more"), "--json"]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [row["image"] for row in rows] == [str(image_folder / n) for n in ("a.png", "b.jpg", "more/c.png")]
    transform = evaluation_transform(32, model.mean, model.std)
    for row in rows:
        assert set(row) == {"image", "p_fake", "verdict", "head"} and row["head"] == "npr"
        image = np.asarray(Image.open(row["image"]).convert("RGB"))
        with torch.no_grad():
            expected = float(torch.sigmoid(model(transform(image)[None]))[0])
        assert row["p_fake"] == pytest.approx(expected, abs=1e-6)
        assert row["verdict"] == ("fake" if row["p_fake"] > 0.5 else "real")
    assert f"zoo: warning: skipping {image_folder / 'notes.txt'}: not an image file" in captured.err
    assert f"zoo: warning: skipping {image_folder / 'broken.png'}: cannot be decoded" in captured.err


def test_plain_output_and_threshold(npr_run, image_folder, capsys):
    folder, _ = npr_run
    assert main(["forgery", "check", str(folder), str(image_folder / "a.png"), str(image_folder / "more"),
                 "--threshold", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{image_folder / 'a.png'}: fake ") and len(lines) == 3
    assert lines[-1].startswith("2 image(s): 2 fake, 0 real (P(fake) > 0;")


def test_fakereasoning_run_gives_text_and_probability(tmp_path, image_folder, capsys):
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from attnzoo.heads.forgery.builders import build_fakereasoning
    from attnzoo.heads.forgery.prompt import build_response

    responses = [build_response("Edges look soft.", 1), build_response("Noise is even.", 0)]
    model = build_fakereasoning(tiny=True, image_size=56, responses=responses)
    trained = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    folder = _write_run(tmp_path / "fr", "fakereasoning", trained, tiny=True, image_size=56, lm_training="full")
    (folder / "responses.json").write_text(json.dumps(responses))
    assert main(["forgery", "check", str(folder), str(image_folder), "--json", "--max-new-tokens", "4"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert set(row) == {"image", "p_fake", "verdict", "head", "reasoning", "text", "conclusion_in_text"}
        assert 0.0 <= row["p_fake"] <= 1.0 and isinstance(row["text"], str)
        assert row["conclusion_in_text"] is False  # 4 tokens cannot reach the conclusion: it was appended
    # the same weights under a run.json that says LoRA (the default of runs made before lm_training was recorded)
    run_json = json.loads((folder / "run.json").read_text())
    run_json["args"]["lm_training"] = "lora"
    (folder / "run.json").write_text(json.dumps(run_json))
    assert main(["forgery", "check", str(folder), str(image_folder)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "trainable.safetensors does not fit the FakeReasoning (lm_training lora) run.json describes" in err
    # the LM's own weights are frozen under LoRA (not expected); its LoRA tensors are expected and absent
    assert "21 unexpected key(s): language_model.lm_head.weight, language_model.model.embed_tokens.weight" in err
    assert "28 missing key(s): language_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A" in err
    assert "only the trainable tensors are expected" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("damage, words", [
    ("no_run_json", "has no run.json: not a run of tools/forgery_train.py"),
    ("unknown_head", "head 'cnn' is not one of npr, univfd, fakereasoning"),
    ("no_weights", "has run.json but no model.safetensors"),
    ("missing_key", "model.safetensors does not fit the npr head run.json describes: 1 missing key(s): fc1.bias."),
    ("corrupt_weights", "model.safetensors: corrupt .safetensors file"),
    ("truncated_weights", "model.safetensors: truncated .safetensors file"),
])
def test_bad_run_folder_is_one_line_and_exit_2(npr_run, image_folder, tmp_path, capsys, damage, words):
    from safetensors.torch import save_file

    source, model = npr_run
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text((source / "run.json").read_text())
    (folder / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes())
    if damage == "no_run_json":
        (folder / "run.json").unlink()
    elif damage == "unknown_head":
        (folder / "run.json").write_text(json.dumps({"args": {"head": "cnn", "tiny": False, "image_size": 32}}))
    elif damage == "no_weights":
        (folder / "model.safetensors").unlink()
    elif damage == "missing_key":
        state = {k: v for k, v in model.state_dict().items() if k != "fc1.bias"}
        save_file(state, str(folder / "model.safetensors"))
    elif damage == "truncated_weights":
        whole = (source / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(whole[: len(whole) // 2])
    else:
        (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    assert main(["forgery", "check", str(folder), str(image_folder)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: ") and words in err and str(folder) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_no_image_at_all_and_missing_path_exit_2(npr_run, tmp_path, capsys):
    folder, _ = npr_run
    (tmp_path / "notes.txt").write_text("text")
    assert main(["forgery", "check", str(folder), str(tmp_path / "notes.txt")]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert f"skipping {tmp_path / 'notes.txt'}" in err and "zoo: error: no readable image" in err
    assert main(["forgery", "check", str(folder), str(tmp_path / "absent")]) == EXIT_USER_ERROR
    assert "absent: no such file or directory" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["name_not_utf8", "huge_png"])
def test_a_bad_file_among_good_ones_is_skipped_or_read_and_the_rest_checked(npr_run, tmp_path, capsys, monkeypatch,
                                                                             kind):
    """Issue 26 rows 1 and 3: a name that is not UTF-8 crashed the process (OpenCV, segmentation fault); a 14000x14000
    PNG of 24 KB was a DecompressionBombError traceback and the images after it were never checked. Now the first is
    read (its name shown with \\xNN escapes), the second skipped from its header with a warning, and every other
    image checked."""
    from image_files import forbid_decoding_huge_images, not_utf8_path, write_huge_png, write_image

    folder, _ = npr_run
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(photos / "a.png")
    write_image(photos / "z.png", seed=1)
    if kind == "name_not_utf8":
        odd = not_utf8_path(photos, "odd")
        write_image(odd, seed=2)
        expected = [str(photos / "a.png"), str(photos / "z.png"), odd]
    else:
        write_huge_png(photos / "b_huge.png")
        forbid_decoding_huge_images(monkeypatch)
        expected = [str(photos / "a.png"), str(photos / "z.png")]
    assert main(["forgery", "check", str(folder), str(photos), "--json"]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["image"] for line in captured.out.splitlines()] == expected
    if kind == "huge_png":
        assert f"zoo: warning: skipping {photos / 'b_huge.png'}: 14000x14000 = 196.0 megapixels, over the limit" in (
            captured.err)
        assert main(["forgery", "check", str(folder), str(photos / "b_huge.png"), "--max-pixels", "1e6"]) == 2
        assert "over the limit of 1.0 megapixels" in capsys.readouterr().err
    else:
        assert not captured.err
        assert main(["forgery", "check", str(folder), str(photos)]) == 0  # plain lines name it with escapes
        lines = capsys.readouterr().out.splitlines()
        assert lines[2].startswith(f"{photos}/\\xff\\xfeodd.png: ") and lines[-1].startswith("3 image(s)")


def test_help_names_the_forgery_run_folder(capsys):
    with pytest.raises(SystemExit):
        main(["forgery", "check", "--help"])
    out = capsys.readouterr().out
    assert "FORGERY_RUN IMAGE_OR_DIR" in out and " RUN " not in out


def test_check_images_is_a_library_generator(npr_run, image_folder):
    from attnzoo.tasks.forgery.check import check_images
    from attnzoo.tasks.forgery.runs import load_run

    folder, _ = npr_run
    run = load_run(folder)
    warnings = []
    results = list(check_images(run, [image_folder], threshold=0.0, batch_size=1, warn=warnings.append))
    assert [r.path.name for r in results] == ["a.png", "b.jpg"] and len(warnings) == 3
    assert "image(s) in sub-folder" in warnings[0] and "more" in warnings[0]  # named, not walked (issue 35)
    assert all(r.label == "fake" and r.row() == {"image": str(r.path), "p_fake": r.p_fake, "verdict": "fake",
                                                   "head": "npr"} for r in results)
    with pytest.raises(ValueError, match="batch_size"):
        next(check_images(run, [image_folder], batch_size=0))


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_a_trained_run_folder_loads_back(tmp_path, image_folder, capsys):
    """tools/forgery_train.py writes the folder (weights through attnzoo.weights.save_safetensors); load_run reads it."""
    from safetensors import safe_open

    from attnzoo.tasks.forgery.runs import load_run

    data = _tool("make_forgery_set").make_set(tmp_path / "set", train=8, test=2, size=32, seed=0)
    out = tmp_path / "run"
    assert _tool("forgery_train").main(["--head", "npr", "--train", str(data["train"]), "--out", str(out),
                                        "--epochs", "1", "--batch-size", "4"]) == 0
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
    run = load_run(out)
    assert run.head == "npr" and run.image_size == 32 and not run.model.training
    capsys.readouterr()
    assert main(["forgery", "check", str(out), str(image_folder / "a.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["head"] == "npr"


def test_official_readers_check_the_file(tmp_path):
    """The official weights are read through attnzoo.weights: sha256 of the published file, the one unwrapping rule
    ('model', 'module.'), and the one misfit message naming the key."""
    from attnzoo.heads.forgery.baselines import NPR, UNIVFD_FC_SHA256
    from attnzoo.tasks.forgery.official import load_official_npr, official_state_dict
    from attnzoo.weights import CheckpointError

    asset = REPO / "tests/heads/assets/univfd_fc_weights.pth"
    state, origin = official_state_dict(asset, UNIVFD_FC_SHA256, "UnivFD fc weights")
    assert state["weight"].shape == (1, 768) and str(asset) in origin
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        official_state_dict(asset, "0" * 64)

    torch.manual_seed(0)
    source = NPR().eval()
    path = tmp_path / "NPR.pth"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = load_official_npr(path)
    torch.testing.assert_close(model.state_dict(), source.state_dict())
    torch.save({k: v for k, v in source.state_dict().items() if k != "fc1.weight"}, path)
    with pytest.raises(CheckpointError, match=r"NPR weights .*NPR.pth does not fit NPR: 1 missing key\(s\): fc1.weight"):
        load_official_npr(path)


def test_official_fakereasoning_state_reads_only_the_projectors(tmp_path):
    """With the shards' index only the projector / fusion tensors are read; without it every shard is filtered."""
    from safetensors.torch import save_file

    from attnzoo.tasks.forgery.official import read_official_fakereasoning_state
    from attnzoo.weights import CheckpointError

    save_file({"model.mm_projector.0.weight": torch.ones(2, 2), "model.embed_tokens.weight": torch.ones(3)},
              str(tmp_path / "a.safetensors"))
    save_file({"model.crossattention.norm.weight": torch.ones(2)}, str(tmp_path / "b.safetensors"))
    assert set(read_official_fakereasoning_state(str(tmp_path))) == {"model.mm_projector.0.weight",
                                                                     "model.crossattention.norm.weight"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "model.mm_projector.0.weight": "a.safetensors", "model.embed_tokens.weight": "a.safetensors"}}))
    assert set(read_official_fakereasoning_state(str(tmp_path))) == {"model.mm_projector.0.weight"}
    (tmp_path / "a.safetensors").write_bytes((tmp_path / "a.safetensors").read_bytes()[:40])
    with pytest.raises(CheckpointError, match="a.safetensors: truncated"):
        read_official_fakereasoning_state(str(tmp_path))
