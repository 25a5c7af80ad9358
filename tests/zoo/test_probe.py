"""``zoo probe`` on real data: the UCI handwritten digits bundled with scikit-learn (tools/make_digits.py), two small
zoo backbones with random weights (a ViT with a class token, a hierarchical PVT map), every method; the feature cache
(a second run extracts nothing; a cache for another version or folder is refused and rebuilt); the one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attnzoo.cli import EXIT_USER_ERROR, main
from attnzoo.tasks.probing import Features, ProbeError, token_map, train_probe
from attnzoo.tasks.probing.leaderboard import ModelSpec, leaderboard_markdown, run_probe, write_leaderboard
from attnzoo.tasks.probing.training import recipe_record

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import make_digits  # noqa: E402

VIT_KWARGS = {"patch_size": 8, "embed_dim": 64, "depth": 1, "num_heads": 2}
VIT_FLAGS = ["--model-kwargs", "patch_size=8", "embed_dim=64", "depth=1", "num_heads=2"]
MODELS = [
    ModelSpec("agent_deit_tiny", random_init=True, model_kwargs=VIT_KWARGS),  # 16 patch tokens + class token, 64 ch
    ModelSpec("agent_pvt_tiny", random_init=True,  # its last stage at 32 px: 1x1; built at 64 px below for 2x2
              model_kwargs={"embed_dims": [16, 32, 32, 32], "num_heads": [1, 2, 2, 2], "depths": [1, 1, 1, 1]}),
]
METHODS = ["linear", "attentive", "ep", "mp", "knn"]
CHANCE = 10.0
EPOCHS = 30


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    counts = make_digits.write_digits(root, per_class=40, seed=0)
    assert counts == {"train": 320, "val": 80}  # 40 real scans of each digit, 8 of them to val
    return root


def _run(models, data, cache, methods=METHODS, img_size=32, **kwargs):
    messages: list[str] = []
    board = run_probe(models, str(data), methods, cache_dir=cache, img_size=img_size, epochs=EPOCHS,
                      progress=False, log=messages.append, **kwargs)
    return board, messages


@pytest.fixture(scope="module")
def first_run(digits, tmp_path_factory):
    cache = tmp_path_factory.mktemp("probe_cache")
    vit, messages_vit = _run(MODELS[:1], digits, cache)
    pvt, messages_pvt = _run(MODELS[1:], digits, cache, img_size=64)
    return cache, vit, pvt, messages_vit + messages_pvt


def test_every_method_beats_chance_on_the_digits(first_run):
    """Random-weight backbones, frozen: every probe and k-NN is far above the 10% of guessing (at least 2.5x; with
    80 val scans chance would reach 16% at three standard deviations)."""
    _, vit, pvt, _ = first_run
    rows = vit.rows + pvt.rows
    assert {(r.model, r.method) for r in rows} == {(m.source, method) for m in MODELS for method in METHODS}
    low = [(r.model, r.method, round(r.top1, 1)) for r in rows if r.top1 < 2.5 * CHANCE]
    assert not low, f"probes not far above chance: {low}"
    assert vit.rows[0].feature_shape == [16, 64] and pvt.rows[0].feature_shape == [4, 32]
    params = {r.method: r.params for r in vit.rows}
    assert params["knn"] == 0 and params["linear"] == 64 * 10 + 10
    assert params["linear"] < params["ep"] < params["attentive"]  # EP drops the attentive probe's projections
    assert vit.extracted == {"agent_deit_tiny": 400} and pvt.extracted == {"agent_pvt_tiny": 400}


def test_second_run_extracts_nothing_and_gives_the_same_numbers(first_run, digits):
    cache, vit, _, _ = first_run
    again, messages = _run(MODELS[:1], digits, cache, methods=["knn", "linear"])
    assert again.extracted == {"agent_deit_tiny": 0}
    assert any("from the cache" in m and "nothing extracted" in m for m in messages)
    before = {r.method: (r.top1, r.top5) for r in vit.rows}
    assert {r.method: (r.top1, r.top5) for r in again.rows} == {m: before[m] for m in ("knn", "linear")}
    assert all(r.cached for r in again.rows) and not any(r.cached for r in vit.rows)


def test_a_cache_of_another_version_or_folder_is_refused_and_rebuilt(first_run, digits, tmp_path):
    cache, _, _, _ = first_run
    entry = next(p for p in cache.iterdir() if p.name.startswith("agent_deit_tiny-"))
    meta = json.loads((entry / "meta.json").read_text())
    meta["key"]["attnzoo"] = "0.0.1"
    (entry / "meta.json").write_text(json.dumps(meta))
    board, messages = _run(MODELS[:1], digits, cache, methods=["knn"])
    assert board.extracted == {"agent_deit_tiny": 400}
    assert any("written for another attnzoo; refused, rebuilding it" in m for m in messages), messages
    assert json.loads((entry / "meta.json").read_text())["key"]["attnzoo"] != "0.0.1"
    # a changed folder (one more scan in val/) is another key too: refused, and the new features cover it
    changed = tmp_path / "digits"
    make_digits.write_digits(changed, per_class=40, seed=0)
    other = tmp_path / "cache"
    _run(MODELS[:1], changed, other, methods=["knn"])
    extra = changed / "val" / "3" / "extra.png"
    extra.write_bytes(next((changed / "val" / "3").iterdir()).read_bytes())
    board, messages = _run(MODELS[:1], changed, other, methods=["knn"])
    assert board.extracted == {"agent_deit_tiny": 401} and board.num_val == 81
    assert any("written for another folder; refused" in m for m in messages), messages


def test_two_weights_of_one_model_in_one_run_each_get_their_own_features(digits, tmp_path):
    """Two specs of one model and input size share a cache entry's folder: the second (other weights, another key)
    replaces the entry, and the first still trains on its own features (every model is extracted before any probe
    trains, so the first's features are held memory-mapped)."""
    import attnzoo

    torch.manual_seed(1)
    weights = tmp_path / "other.pth"
    torch.save(attnzoo.create_model("agent_deit_tiny", img_size=32, **VIT_KWARGS).state_dict(), weights)
    specs = [ModelSpec("agent_deit_tiny", random_init=True, model_kwargs=VIT_KWARGS, label="random"),
             ModelSpec("agent_deit_tiny", checkpoint=str(weights), model_kwargs=VIT_KWARGS, label="other")]
    cache = tmp_path / "cache"
    board, messages = _run(specs, digits, cache, methods=["knn"])
    assert board.extracted == {"random": 400, "other": 400}
    assert any("written for another weights; refused, rebuilding it" in m for m in messages), messages
    alone = {spec.name: _run([spec], digits, tmp_path / spec.name, methods=["knn"])[0].rows[0] for spec in specs}
    alone = {name: (row.top1, row.top5) for name, row in alone.items()}  # each from a cache of its own
    assert {r.model: (r.top1, r.top5) for r in board.rows} == alone and alone["random"] != alone["other"]


def test_cli_prints_the_leaderboard_and_writes_markdown_json_and_plot(first_run, digits, tmp_path, capsys):
    cache, vit, _, _ = first_run
    out = tmp_path / "out"
    code = main(["probe", "agent_deit_tiny", "--data", str(digits), "--random-init", "--img-size", "32", "--cache",
                 str(cache), "--method", "knn", "--out", str(out), "--quiet", *VIT_FLAGS])
    assert code == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["extracted"] == {"agent_deit_tiny": 0}  # the library runs' cache, read by the command
    knn = next(r for r in vit.rows if r.method == "knn")
    assert summary["best"] == {"model": "agent_deit_tiny", "method": "knn", "top1": round(knn.top1, 2)}
    assert "| agent_deit_tiny | knn |" in captured.out
    assert (out / "probe.md").read_text().count("| agent_deit_tiny |") == 1
    assert json.loads((out / "probe.json").read_text())["rows"][0]["top1"] == knn.top1
    assert (out / "probe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("case", ["empty_class", "class_mismatch", "no_val", "bad_method", "one_folder_no_split"])
def test_bad_input_is_one_line(case, digits, tmp_path, capsys):
    data = tmp_path / "data"
    for split in ("train", "val"):
        for label in ("0", "1"):
            (data / split / label).mkdir(parents=True)
            source = next((digits / split / label).iterdir())
            (data / split / label / source.name).write_bytes(source.read_bytes())
    method, expected = "knn", None
    if case == "empty_class":
        (data / "train" / "2").mkdir()
        expected = "class folder '2' has no images"
    elif case == "class_mismatch":
        (data / "val" / "1").rename(data / "val" / "7")
        expected = "train/ and val/ have different classes (only in train/: 1; only in val/: 7)"
    elif case == "no_val":
        for path in (data / "val").rglob("*.png"):
            path.unlink()
        for folder in (data / "val" / "0", data / "val" / "1"):
            folder.rmdir()
        expected = "a train/ folder but no val/ folder"
    elif case == "bad_method":
        method, expected = "linear,svm", "unknown method(s) svm"
    elif case == "one_folder_no_split":
        data = data / "train"
        expected = "no train/ folder with class sub-folders"
    code = main(["probe", "agent_deit_tiny", "--data", str(data), "--random-init", "--img-size", "32", "--cache",
                 str(tmp_path / "cache"), "--method", method, "--quiet", *VIT_FLAGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USER_ERROR
    assert len(err) == 1 and err[0].startswith("zoo: error: ") and expected in err[0], err


def test_one_folder_splits_by_a_seeded_fraction(digits, tmp_path):
    board, _ = _run(MODELS[:1], digits / "train", tmp_path / "cache", methods=["knn"], val_fraction=0.25)
    assert (board.num_train, board.num_val) == (240, 80)  # 32 scans of each digit: 8 to val
    assert board.rows[0].top1 > 2.5 * CHANCE


def test_token_map_reads_vit_tokens_and_both_map_layouts():
    vit = torch.nn.Module()
    vit.num_features, vit.num_prefix_tokens = 8, 1
    tokens, pooled = token_map(vit, torch.arange(2 * 5 * 8.0).reshape(2, 5, 8))
    assert tokens.shape == (2, 4, 8) and torch.equal(pooled, torch.arange(2 * 5 * 8.0).reshape(2, 5, 8)[:, 0])
    cnn = torch.nn.Module()
    cnn.num_features = 8
    nchw = torch.randn(2, 8, 3, 4)
    tokens, pooled = token_map(cnn, nchw)
    assert torch.equal(tokens, nchw.flatten(2).transpose(1, 2)) and torch.allclose(pooled, nchw.mean((2, 3)))
    tokens, _ = token_map(cnn, nchw.permute(0, 2, 3, 1))  # NHWC, as timm's Swin gives it
    assert torch.equal(tokens, nchw.flatten(2).transpose(1, 2))
    with pytest.raises(ProbeError, match="not a token map"):
        token_map(cnn, torch.randn(2, 8), name="pooled_only")
    with pytest.raises(ProbeError, match="only its 1 class/register token"):
        token_map(vit, torch.randn(2, 1, 8))


def test_the_recipes_follow_the_stated_rule_and_are_recorded(first_run, tmp_path):
    """The batch is the official one capped at a tenth of the training images (at least 16, at most all); the lr is
    the official run's, unscaled; warm-up keeps its share of the epochs. What trained is what is recorded/printed."""
    _, vit, _, _ = first_run  # 320 training scans, --epochs 30
    recipes = {r.method: r.recipe for r in vit.rows}
    assert recipes["knn"] == {}
    for method in ("linear", "attentive", "ep"):
        r = recipes[method]
        assert (r["optimizer"], r["lr"], r["official_lr"], r["weight_decay"]) == ("lars", 1.6, 0.1 * 4096 / 256, 0.0)
        assert (r["batch_size"], r["official_batch_size"], r["epochs"], r["warmup_epochs"]) == (32, 4096, 30, 3)
    r = recipes["mp"]
    assert (r["optimizer"], r["lr"], r["weight_decay"], r["batch_size"], r["official_batch_size"]) == (
        "adamw", 1e-3, 0.05, 32, 256)
    assert (r["epochs"], r["warmup_epochs"], r["train_images"], r["official_lr"]) == (30, 5, 320, 1e-4)
    for row in vit.rows:  # the row's own columns are the recipe's
        assert (row.batch_size, row.lr, row.epochs) == ((row.recipe["batch_size"], row.recipe["lr"],
                                                         row.recipe["epochs"]) if row.recipe else (0, 0.0, 0))
    text = leaderboard_markdown(vit)
    assert ("Probe recipes on the 320 training images (batch: the official batch capped at a tenth of the training "
            "images, at least 16 (at most all of them); lr: not scaled with the batch):") in text
    assert ("- linear, attentive, ep: LARS, lr 1.6 (official), weight decay 0, batch 32 (official 4096), 30 epochs "
            "(3 warm-up; official 90 / 10)") in text
    assert ("- mp: AdamW, lr 0.001 (official 0.0001), weight decay 0.05, batch 32 (official 256), 30 epochs (5 "
            "warm-up; official 30 / 5)") in text
    paths = write_leaderboard(vit, tmp_path / "out")
    assert {r["method"]: r["recipe"] for r in json.loads(paths["json"].read_text())["rows"]} == recipes
    # the rule at other sizes, and without --epochs
    batches = {n: (recipe_record("ep", n)["batch_size"], recipe_record("mp", n)["batch_size"])
               for n in (10, 100, 1438, 20_000, 100_000)}
    assert batches == {10: (10, 10), 100: (16, 16), 1438: (143, 143), 20_000: (2000, 256), 100_000: (4096, 256)}
    assert [(recipe_record(m, 1438)["epochs"], recipe_record(m, 1438)["warmup_epochs"]) for m in ("ep", "mp")] == [
        (90, 10), (30, 5)]
    assert {recipe_record(m, n)["lr"] for m in ("linear", "ep") for n in (10, 100_000)} == {1.6}
    given = recipe_record("ep", 320, batch_size=8)
    assert (given["batch_size"], given["batch_rule"]) == (8, "given")


def test_probe_training_is_seeded():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    tokens = (rng.normal(size=(60, 4, 8)) + labels[:, None, None]).astype(np.float16)
    features = Features(tokens, tokens.astype(np.float32).mean(1), labels)
    first = train_probe("ep", features, features, 3, seed=1, epochs=3)
    second = train_probe("ep", features, features, 3, seed=1, epochs=3)
    assert (first.top1, first.top5) == (second.top1, second.top5) and first.params == second.params


@pytest.mark.parametrize("flag", ["--out", "--cache"])
def test_an_output_path_that_is_a_file_is_one_line_before_any_work(flag, tmp_path, capsys):
    """attnzoo.outputs' rule for `zoo probe`: checked before the folder is read (the data folder does not even
    exist here, so an error about it would mean the work had started)."""
    taken = tmp_path / "notes.txt"
    taken.write_text("mine\n")
    paths = {"--out": str(tmp_path / "out"), "--cache": str(tmp_path / "cache"), flag: str(taken)}
    code = main(["probe", "agent_deit_tiny", "--data", str(tmp_path / "no_such_folder"), "--random-init",
                 "--img-size", "32", "--out", paths["--out"], "--cache", paths["--cache"], "--quiet", *VIT_FLAGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USER_ERROR
    assert len(err) == 1 and err[0].startswith(f"zoo: error: {flag} ") and "it is a file, not a folder" in err[0], err
    assert taken.read_text() == "mine\n"
