"""User mistakes and bad files end with one clear line (issue 26, rows 7, 9, 11 and "also seen"), and the CPU
threads fit the machine (row 14).

- ``--model-kwargs``: an unknown name, a wrong type, a value the model cannot take (the tiny BiFormer of
  test_classification.py); the flag given before the images of ``zoo predict``;
- flag ranges checked by argparse (``--top-k -1``, ``--epochs 0``, ``--batch-size 0``, ...);
- the checkpoint reader's message for each kind of bad file, with advice that fits it (and the caller's ``fix``);
  ``tools/test.py`` with a code-carrying checkpoint;
- the threads and loader workers chosen from the CPUs the process may use.
"""

from __future__ import annotations

import collections
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from attnzoo.cli import EXIT_USER_ERROR, main
from attnzoo.tasks.classification import distributed
from attnzoo.weights import CheckpointError, read_checkpoint

REPO = Path(__file__).resolve().parents[2]
IMAGE = str(REPO / "zoo" / "assets" / "demo_image.png")
TINY_BIFORMER = ["depth=(1,1,1,1)", "embed_dim=(32,64,96,128)", "qk_dims=(32,64,96,128)", "n_win=2",
                 "topks=(1,2,4,-2)"]
PREDICT_TINY = ["predict", "biformer_tiny", IMAGE, "--random-init", "--img-size", "32"]


@pytest.fixture(autouse=True)
def _threads_restored():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on a shared 2-core box are slower than 1
    yield
    torch.set_num_threads(threads)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------------------------------------- --model-kwargs


@pytest.mark.parametrize("bad, words", [
    ("depth=banana", ["--model-kwargs depth='banana'", "depth takes Sequence[int]", "not a str"]),
    ("foo=1", ["--model-kwargs foo=1", "takes no argument 'foo'", "It takes (BiFormer's constructor): depth, in_chans"]),
    ("n_wins=2", ["takes no argument 'n_wins'", "Did you mean n_win?", "constructor): n_win, "]),
    ("n_win=0", ["--model-kwargs n_win=0: biformer_tiny cannot be built or run with this value",
                 "ZeroDivisionError", "its default is 7"]),
    ("topks=(1,2)", ["--model-kwargs topks=(1, 2): biformer_tiny cannot be built or run", "IndexError"]),
])
def test_model_kwargs_are_checked_before_the_model_is_built(bad, words, capsys):
    """Row 9: TypeError / ZeroDivisionError / IndexError tracebacks before; now one line naming the argument."""
    key = bad.split("=")[0]
    kwargs = [kw for kw in TINY_BIFORMER if not kw.startswith(f"{key}=")] + [bad]
    assert main([*PREDICT_TINY, "--model-kwargs", *kwargs]) == EXIT_USER_ERROR
    err = _one_error_line(capsys)
    for word in words:
        assert word in err, (word, err)


def test_train_checks_model_kwargs_before_reading_data(tmp_path, capsys):
    argv = ["train", "biformer_tiny", "--data", str(tmp_path / "no-data-needed"), "--out", str(tmp_path / "run"),
            "--img-size", "32", "--model-kwargs", *TINY_BIFORMER[:-2], "n_win=0"]
    assert main(argv) == EXIT_USER_ERROR
    assert "--model-kwargs n_win=0" in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_model_kwargs_given_before_the_images(capsys):
    """Row 9: nargs='*' swallowed the image (a ValueError traceback in timm's ParseKwargs); now argparse's one error
    names the file and says where the flag goes."""
    with pytest.raises(SystemExit) as info:
        main(["predict", "biformer_tiny", "--random-init", "--model-kwargs", *TINY_BIFORMER, IMAGE])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (f"argument --model-kwargs: '{IMAGE}' is a file, not KEY=VALUE: --model-kwargs takes every word after it "
            "up to the next flag, so give it after the files: zoo predict MODEL_OR_FOLDER IMAGE") in err
    with pytest.raises(SystemExit):
        main(["predict", "biformer_tiny", IMAGE, "--model-kwargs", "depth"])
    assert "expected KEY=VALUE words (KEY a Python name), got 'depth'" in capsys.readouterr().err


def test_model_kwargs_values_parse_as_timm_parses_them():
    from attnzoo.commands.validate import ModelKwargs  # noqa: F401  (the action the verbs use)
    from attnzoo.models import parse_kwarg_value

    assert parse_kwarg_value("(1,2)") == (1, 2) and parse_kwarg_value("0.5") == 0.5
    assert parse_kwarg_value("None") is None and parse_kwarg_value("avg") == "avg"


# ---------------------------------------------------------------------------------------------- flag ranges


@pytest.mark.parametrize("argv, message", [
    ([*PREDICT_TINY, "--top-k", "-1"], "argument --top-k: must be >= 1, got -1"),
    ([*PREDICT_TINY, "--top-k", "0"], "argument --top-k: must be >= 1, got 0"),
    (["train", "resnet18", "--data", "d", "--out", "o", "--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    (["train", "resnet18", "--data", "d", "--out", "o", "--batch-size", "0"], "argument --batch-size: must be >= 1"),
    (["train", "resnet18", "--data", "d", "--out", "o", "--workers", "-1"], "argument --workers: must be >= 0"),
    (["train", "resnet18", "--data", "d", "--out", "o", "--lr", "-1"], "argument --lr: must be >= 0.0, got -1"),
    (["train", "resnet18", "--data", "d", "--out", "o", "--smoothing", "1"],
     "argument --smoothing: must be in [0.0, 1.0), got 1"),
    (["train", "resnet18", "--data", "d", "--out", "o", "--lr", "nan"], "argument --lr: must be >= 0.0, got nan"),
    (["validate", "resnet18", "--data", "d", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["validate", "resnet18", "--data", "d", "--img-size", "ten"], "expected a whole number >= 1, got 'ten'"),
])
def test_flag_ranges_are_checked_by_argparse(argv, message, capsys):
    """Row 9: `--top-k -1` (RuntimeError), `--epochs 0` (ZeroDivisionError), `--batch-size 0` (ValueError) were
    tracebacks; now argparse refuses them, naming the flag (exit 2)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and "Traceback" not in err


def test_top_k_above_the_class_count(capsys):
    assert main([*PREDICT_TINY, "--model-kwargs", *TINY_BIFORMER, "--top-k", "1001"]) == EXIT_USER_ERROR
    assert "--top-k 1001: the model has 1000 classes; pass --top-k 1000 or less." in _one_error_line(capsys)


# ---------------------------------------------------------------------------------------------- bad files


class RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def _zip_checkpoint(path: Path) -> Path:
    torch.save({"state_dict": {"w": torch.ones(64, 64)}}, path)
    return path


BAD_FILES = {
    # name: (make the file, words the message must hold)
    "empty": (lambda p: p.write_bytes(b""), ["not a readable PyTorch checkpoint: the file is empty (0 bytes)"]),
    "text": (lambda p: p.write_text("model weights are on the shared drive\n"),
             ["not a PyTorch checkpoint but a text file", "beginning 'model weights are on the shared drive'"]),
    "html": (lambda p: p.write_text("<!DOCTYPE html><html><body>Sign in</body></html>"),
             ["not a PyTorch checkpoint but a web page", "check the URL"]),
    "git-lfs": (lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n"),
                ["a Git LFS pointer", "git lfs pull"]),
    "truncated-zip": (lambda p: p.write_bytes(_zip_checkpoint(p).read_bytes()[:9000]),
                      ["the file is truncated or corrupt (PyTorch's zip format, but no end-of-archive record in its "
                       "9000 bytes: it was cut short)"]),
    "truncated-legacy": (lambda p: (torch.save({"w": torch.ones(8)}, p, _use_new_zipfile_serialization=False),
                                    p.write_bytes(p.read_bytes()[:60])),
                         ["truncated or corrupt (PyTorch's older pickle format, cut short or damaged"]),
    "plain-pickle": (lambda p: p.write_bytes(pickle.dumps({"w": [1.0]}, protocol=4)),
                     ["not a PyTorch checkpoint: a Python pickle that torch.save did not write"]),
    "random-bytes": (lambda p: p.write_bytes(bytes(range(256)) * 4),
                     ["neither PyTorch's zip format nor its pickle format (its first bytes: 00 01 02"]),
    "safetensors-named-pth": (lambda p: save_file({"w": torch.ones(2)}, str(p)),
                              ["a .safetensors file named '.pth'", "rename it to weights.safetensors"]),
    "code-zip": (lambda p: torch.save({"w": torch.ones(2), "x": RunsCode()}, p),
                 ["refused: the file is a pickle that needs Python code to rebuild (posix.getcwd)",
                  "nothing in it was executed", "--trust-pickle"]),
    "code-legacy": (lambda p: torch.save({"w": torch.ones(2), "x": RunsCode()}, p,
                                         _use_new_zipfile_serialization=False),
                    ["refused: the file is a pickle that needs Python code to rebuild (posix.getcwd)", "--trust-pickle"]),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_each_bad_checkpoint_is_named_for_what_it_is(kind, tmp_path):
    """Rows 7 and 11: a 0-byte file was an EOFError 'truncated or corrupt' at best (an IndexError traceback from the
    reader's own handler on main 5b58531), a text file a 'pickle that needs Python code' to --trust-pickle (now an
    IndexError). Each kind now says what the file is; only a pickle that asks for code mentions --trust-pickle."""
    make, words = BAD_FILES[kind]
    path = tmp_path / "weights.pth"
    make(path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and len(message.splitlines()) == 1
    for word in words:
        assert word in message, (word, message)
    assert ("--trust-pickle" in message) == kind.startswith("code"), message


@pytest.mark.parametrize("kind", ["empty", "text", "truncated-zip", "code-zip"])
def test_the_caller_phrases_the_fix(kind, tmp_path):
    """Row 11: for a run's train_state.pth the convert-to-safetensors advice is useless to --resume; the caller's
    ``fix`` replaces the advice (zoo/tasks/classification/runs.py read_state passes one)."""
    make, _ = BAD_FILES[kind]
    path = tmp_path / "train_state.pth"
    make(path)
    fix = "--resume cannot continue from it; start the run afresh in another --out"
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path, fix=fix)
    assert str(info.value).endswith(f"; {fix}.") or str(info.value).endswith(f". {fix}.")
    assert "zoo convert" not in str(info.value) and "--trust-pickle" not in str(info.value)


def test_bad_checkpoints_on_the_command_line(tmp_path, capsys):
    """Row 7/11 through `zoo predict --checkpoint`: one line, exit 2."""
    for kind in ("empty", "text"):
        path = tmp_path / f"{kind}.pth"
        BAD_FILES[kind][0](path)
        assert main(["predict", "resnet18", IMAGE, "--checkpoint", str(path), "--img-size", "32"]) == EXIT_USER_ERROR
        assert BAD_FILES[kind][1][0] in _one_error_line(capsys)


def test_an_empty_resume_state_is_one_line(tmp_path, capsys):
    """Row 7 through `zoo train --resume` with a 0-byte train_state.pth (an IndexError traceback on main 5b58531)."""
    sys.path.insert(0, str(REPO / "tools"))
    import make_imagefolder

    data = make_imagefolder.make(tmp_path / "shapes", num_train=2, num_val=1, size=32, num_classes=2)
    out = tmp_path / "run"
    out.mkdir()
    (out / "train_state.pth").write_bytes(b"")
    argv = ["train", "biformer_tiny", "--data", str(data), "--out", str(out), "--resume", "--img-size", "32",
            "--batch-size", "2", "--workers", "0", "--no-aug", "--model-kwargs", *TINY_BIFORMER]
    assert main(argv) == EXIT_USER_ERROR
    assert f"{out / 'train_state.pth'}: not a readable PyTorch checkpoint: the file is empty (0 bytes)" in \
        _one_error_line(capsys)


def test_read_checkpoint_still_reads_good_files(tmp_path):
    torch.save(collections.OrderedDict(w=torch.ones(3)), tmp_path / "zip.pth")
    torch.save({"w": torch.ones(3)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    save_file({"w": torch.ones(3)}, str(tmp_path / "w.safetensors"))
    for name in ("zip.pth", "legacy.pth", "w.safetensors"):
        assert torch.equal(read_checkpoint(tmp_path / name)["w"], torch.ones(3))


def test_tools_test_py_refuses_a_code_pickle_in_one_line(tmp_path, capsys):
    """Also seen: tools/test.py ended in a raw UnpicklingError traceback after 693 log lines; now the checkpoint is
    read before the Runner starts and the refusal is one line, exit 2."""
    pytest.importorskip("mmdet")
    import importlib.util

    spec = importlib.util.spec_from_file_location("attnzoo_tools_test", REPO / "tools" / "test.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "x": RunsCode()}, evil)
    config = REPO / "configs" / "det" / "retinanet_biformer-mini_fpn_coco-synth.py"
    with pytest.raises(SystemExit) as info:
        tool.main([str(config), str(evil), "--work-dir", str(tmp_path / "work")])
    captured = capsys.readouterr()
    assert info.value.code == EXIT_USER_ERROR
    assert captured.err.strip().splitlines() == [captured.err.strip()]
    assert captured.err.startswith(f"test.py: error: {evil}: refused: the file is a pickle that needs Python code")
    assert not (tmp_path / "work").exists()  # the Runner never started


# ---------------------------------------------------------------------------------------------- threads


@pytest.mark.parametrize("cpus, local, workers, expected", [
    (1, 1, None, (0, 1)),
    (2, 1, None, (1, 1)),
    (3, 1, None, (2, 1)),
    (16, 1, None, (4, 12)),
    (16, 2, None, (4, 4)),  # torchrun --nproc_per_node 2: 8 CPUs each
    (16, 1, 0, (0, 16)),  # --workers 0
    (2, 4, None, (0, 1)),
])
def test_cpu_plan_fits_the_cpus(cpus, local, workers, expected, monkeypatch):
    """Row 14: torch's default threads (one per core) beside min(4, cores) loader workers oversubscribed the cores."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(distributed, "available_cpus", lambda: cpus)
    plan = distributed.cpu_plan(workers, local_processes=local)
    assert (plan.workers, plan.threads, plan.threads_from) == (*expected, "default")


def test_omp_num_threads_and_affinity(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert distributed.available_cpus() <= 3
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    plan = distributed.cpu_plan()
    assert plan.threads == 5 and plan.threads_from == "OMP_NUM_THREADS"


def test_the_verbs_start_with_the_plan(monkeypatch):
    """start_processes (where zoo train / validate start) sets torch's threads from the CPUs the process may use and
    hands the verb its workers; OMP_NUM_THREADS leaves torch's threads alone."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(distributed, "available_cpus", lambda: 3)
    processes = distributed.start_processes("cpu")
    assert processes.workers == 2 and torch.get_num_threads() == 1
    processes = distributed.start_processes("cpu", workers=0)
    assert processes.workers == 0 and torch.get_num_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(1)
    assert distributed.start_processes("cpu").workers == 2 and torch.get_num_threads() == 1


def test_workers_default_is_chosen_at_start():
    from attnzoo.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "resnet18", "--data", "d", "--out", "o"])
    assert args.workers is None  # resolved by start_processes, not fixed when the module was imported
    args = parser.parse_args(["validate", "resnet18", "--data", "d", "--workers", "0"])
    assert args.workers == 0
