"""``zoo probe`` under torchrun (2 CPU processes, gloo) on real scans (tools/make_digits.py, 121 of them): the sharded
extraction writes the cache entry one process writes, an entry one process wrote is read, and the leaderboard is
printed once; a rank that fails ends every rank with an error; a cache entry another run is writing is refused in one
line; shards merge in folder order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attnzoo.cli import EXIT_USER_ERROR, main
from attnzoo.tasks.probing import FeatureCache, Features, ProbeError
from attnzoo.tasks.probing.leaderboard import ModelSpec, run_probe
from attnzoo.tasks.probing.sharding import merge_shards

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import make_digits  # noqa: E402

VIT_KWARGS = {"patch_size": 8, "embed_dim": 64, "depth": 1, "num_heads": 2}
VIT_FLAGS = ["--model-kwargs", "patch_size=8", "embed_dim=64", "depth=1", "num_heads=2"]
CACHED = ModelSpec("agent_deit_tiny", random_init=True, model_kwargs=VIT_KWARGS)  # in the cache before torchrun
FRESH = ModelSpec("slab_deit_tiny", random_init=True, model_kwargs=VIT_KWARGS)  # extracted by the two processes
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    assert make_digits.write_digits(root, per_class=12, seed=0) == {"train": 100, "val": 20}
    extra = root / "val" / "3" / "extra.png"  # 21 val scans: shards of 11 and 10
    extra.write_bytes(next((root / "val" / "3").iterdir()).read_bytes())
    return root


def _probe_args(data: Path, cache: Path, methods: str = "knn,linear", models: str = "agent_deit_tiny") -> list[str]:
    return ["probe", models, "--data", str(data), "--random-init", "--img-size", "32", "--cache", str(cache),
            "--method", methods, "--epochs", "3", "--batch-size", "16", "--quiet", *VIT_FLAGS]


def _one_process(models: list[ModelSpec], data: Path, cache: Path, methods=("knn",)):
    return run_probe(models, str(data), list(methods), cache_dir=cache, img_size=32, epochs=3, batch_size=16,
                     progress=False, log=lambda message: None)


FAILING_RANK = """
import os, sys
from attnzoo.tasks.probing import leaderboard
from attnzoo.tasks.probing.features import ProbeError

extract = leaderboard.extract_features

def failing(*args, **kwargs):  # rank 1 gives up at once; rank 0 extracts its shard, then learns of it
    if os.environ["RANK"] == "1":
        raise ProbeError("test: rank 1 cannot read its shard")
    return extract(*args, **kwargs)

leaderboard.extract_features = failing
from attnzoo.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def torchrun(digits, tmp_path_factory) -> tuple[Path, dict[str, subprocess.CompletedProcess]]:
    """Two torchrun launches side by side (most of their time is starting Python): a good run of two models, one of
    them in its cache already (written by one process here), and one whose rank 1 fails at once (FAILING_RANK: a
    test-only stand-in for a rank that cannot read its shard)."""
    root = tmp_path_factory.mktemp("torchrun")
    (root / "failing_rank.py").write_text(FAILING_RANK)
    assert _one_process([CACHED], digits, root / "cache_good").extracted == {"agent_deit_tiny": 121}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    models = f"{CACHED.source},{FRESH.source}"
    commands = {"good": ["-m", "attnzoo.cli", *_probe_args(digits, root / "cache_good", models=models)],
                "failing": [str(root / "failing_rank.py"), *_probe_args(digits, root / "cache_failing")]}
    started = {name: subprocess.Popen([*TORCHRUN, *args], cwd=root, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for name, args in commands.items()}
    done = {}
    for name, process in started.items():
        try:
            out, err = process.communicate(timeout=900)  # a rank that hangs would end here (a hang guard, not a clock)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"torchrun ({name}) did not end within 240 s: {err[-2000:]}")
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return root, done


def _entry(cache: Path, model: str = "agent_deit_tiny") -> Path:
    (entry,) = [p for p in cache.iterdir() if p.name.startswith(f"{model}-")]
    return entry


def test_two_processes_write_the_one_process_cache_and_rank_0_prints_once(digits, torchrun, tmp_path):
    root, launches = torchrun
    cache, done = root / "cache_good", launches["good"]
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    # rank 0 alone prints: one header, one table (2 models x knn, linear), one JSON line; one log line per model
    assert sum(line.startswith("| model |") for line in lines) == 1 and sum(line.startswith("{") for line in lines) == 1
    rows = {tuple(cell.strip() for cell in line.split("|")[1:4]) for line in lines
            if line.startswith(("| agent_deit_tiny |", "| slab_deit_tiny |"))}
    assert {(model, method) for model, method, _ in rows} == {(m.source, method) for m in (CACHED, FRESH)
                                                             for method in ("knn", "linear")}
    summary = json.loads(lines[-1])
    assert summary["extracted"] == {"agent_deit_tiny": 0, "slab_deit_tiny": 121}  # any world size reads a cache
    logs = [line for line in done.stderr.splitlines() if line.strip()]  # rank 1 prints nothing at all
    assert len(logs) == 2 and "agent_deit_tiny: features from the cache" in logs[0], done.stderr[-3000:]
    assert "slab_deit_tiny: extracted 121 images' features on 2 processes" in logs[1], done.stderr[-3000:]

    # one process, another cache: the same entry (name, key), the same features to float tolerance
    single = tmp_path / "cache1"
    assert _one_process([FRESH], digits, single).extracted == {"slab_deit_tiny": 121}
    two, one = _entry(cache, FRESH.source), _entry(single, FRESH.source)
    assert two.name == one.name
    meta_two, meta_one = (json.loads((e / "meta.json").read_text()) for e in (two, one))
    assert meta_two["key"] == meta_one["key"] and meta_two["shapes"] == meta_one["shapes"]
    assert (meta_two["processes"], meta_one["processes"]) == (2, 1)
    for split in ("train", "val"):
        labels = [np.load(e / f"{split}_labels.npy") for e in (two, one)]
        assert np.array_equal(*labels)  # the folder's order, not the ranks'
        for name, rtol in (("pooled", 1e-5), ("tokens", 1e-3)):  # tokens: float16, one rounding step apart at most
            a, b = (np.load(e / f"{split}_{name}.npy") for e in (two, one))
            assert a.dtype == b.dtype
            np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=rtol, atol=1e-4)
    # a second run, in one process, reuses both entries, and its probes score what rank 0 printed
    again = _one_process([CACHED, FRESH], digits, cache, methods=("knn", "linear"))
    assert again.extracted == {"agent_deit_tiny": 0, "slab_deit_tiny": 0}
    assert rows == {(r.model, r.method, f"{r.top1:.1f}") for r in again.rows}


def test_a_failing_rank_ends_every_rank_with_an_error_and_writes_nothing(torchrun):
    root, launches = torchrun
    cache, done = root / "cache_failing", launches["failing"]
    assert done.returncode != 0
    errors = {line for line in done.stderr.splitlines() if line.startswith("zoo: error: ")}
    rank_0 = ("zoo: error: agent_deit_tiny: extracting the features failed on rank 1 of 2 processes (its message says "
              "why).")
    # rank 1's own line too, unless torchrun stopped rank 1 (once rank 0 exited) before it printed
    assert rank_0 in errors and errors <= {rank_0, "zoo: error: test: rank 1 cannot read its shard"}, done.stderr
    assert not done.stdout.strip()
    assert not cache.exists() or not list(cache.iterdir())  # no entry, no temporary folder, no lock left


def test_a_cache_entry_another_run_is_writing_is_refused_in_one_line(digits, tmp_path, capsys):
    cache = FeatureCache(tmp_path / "cache")
    key = {"model": "agent_deit_tiny", "model_kwargs": VIT_KWARGS, "input_size": [3, 32, 32]}  # the entry's identity
    lock = cache.lock(key, command="zoo probe agent_deit_tiny (the other run)")
    try:
        code = main(_probe_args(digits, cache.root, "knn"))
    finally:
        lock.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USER_ERROR and len(err) == 1, err
    assert err[0].startswith(f"zoo: error: feature cache {cache.entry(key)} is being written by another zoo probe "
                             f"(pid {os.getpid()} on ")
    assert "zoo probe agent_deit_tiny (the other run)); wait for it to finish" in err[0]
    # a lock file whose run is gone (no flock on it) does not stop the next run
    lock_file = cache.entry(key).with_name(f".{cache.entry(key).name}.lock")
    lock_file.write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "zoo probe (killed)"}))
    assert main(_probe_args(digits, cache.root, "knn")) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["extracted"] == {"agent_deit_tiny": 121}
    assert not lock_file.exists() and _entry(cache.root).name == cache.entry(key).name


def test_shards_merge_into_folder_order():
    def features(rows: list[int]) -> Features:
        rows_ = np.array(rows, dtype=np.int64)
        return Features(np.repeat(rows_[:, None, None], 2, 1).astype(np.float16), rows_[:, None].astype(np.float32),
                        rows_, seconds=float(len(rows)))

    shards = [features(list(range(rank, 7, 3))) for rank in range(3)]  # 7 images over 3 ranks: 3, 2, 2
    merged = merge_shards(shards)
    assert merged.labels.tolist() == list(range(7)) and merged.tokens[:, 0, 0].tolist() == list(range(7))
    assert merged.tokens.dtype == np.float16 and merged.seconds == 3.0
    assert merge_shards([features([0]), None, None]).labels.tolist() == [0]  # ranks past the last image hold none
    with pytest.raises(ValueError, match="shard 0 of 2 holds 3 images; 2 expected of 4"):
        merge_shards([features([0, 2, 3]), features([1])])
    with pytest.raises(ProbeError, match="no images"):
        merge_shards([None, None])
