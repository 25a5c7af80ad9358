"""Run folders that lose nothing (issue 26, rows 4, 5, 6, 13 and Ctrl-C of row 9): `zoo train` processes killed with
SIGKILL mid-epoch, mid-write and in their first epoch's write, then continued; two writers on one --out; Ctrl-C; the
files' modes; atomic hub-folder files.

The killed and interrupted runs are separate processes running `attnzoo.cli.main(["train", ...])` (what the `zoo` console
script runs), forked from a multiprocessing forkserver that imported zoo once, so each starts in a fraction of a
second instead of the ~8 s a fresh interpreter takes to import torch and timm here. They are killed with a real
SIGKILL (or sent a real SIGINT) at points the run announces through its test hook, ``ZOO_TEST_PAUSE`` (see
zoo/tasks/classification/runs.py): the run waits there for the test's go-ahead (a file the test creates), so no test
races a clock against a loaded machine. The model is the tiny BiFormer of test_classification.py at 32 px on 3 classes
of the shapes maker: an epoch takes well under a second.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from attnzoo.cli import EXIT_USER_ERROR, main

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import make_imagefolder  # noqa: E402

TINY_BIFORMER = ["--model-kwargs", "depth=(1,1,1,1)", "embed_dim=(32,64,96,128)", "qk_dims=(32,64,96,128)", "n_win=2",
                 "topks=(1,2,4,-2)"]
FAST = ["--img-size", "32", "--batch-size", "4", "--workers", "0", "--no-aug"]
RUN_FILES = {"config.json", "model.safetensors", "README.md", "train_state.pth", "metrics.jsonl"}
LOCK_NAME = "train.lock"
EXIT_INTERRUPTED = 130  # attnzoo.cli.EXIT_INTERRUPTED, as shells report a command ended by SIGINT
# Every wait below is for an event (a marker line, an exit); this limit only ends a test that already hangs, so it is
# far above the slowest normal run (a child's epoch on a 2-core machine beside two workers and a CPU-heavy job).
WAIT_S = 600


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    # One intra-op thread here and in the children (OMP_NUM_THREADS is what zoo train's CPU plan honours): 2 threads on
    # a shared 2-core box are slower than 1.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_imagefolder.make(tmp_path_factory.mktemp("shapes"), num_train=4, num_val=1, size=32, num_classes=3,
                                 seed=0)


@pytest.fixture(scope="module")
def forkserver():
    """A multiprocessing context whose server process imported zoo's training once; children fork from it."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["attnzoo.cli", "attnzoo.tasks.classification.training", __name__])
    return context


def _zoo_child(argv: list[str], log: str, env: dict[str, str]) -> None:
    """A child process: `zoo <argv>` with stdout / stderr in ``log``.out / ``log``.err, exit code as the CLI's."""
    os.environ.update(env)
    for fd, suffix in ((1, ".out"), (2, ".err")):
        target = os.open(log + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    torch.set_num_threads(1)
    sys.exit(main(argv))


class Child:
    """`zoo <argv>` in a forked process; with ``pause`` (``<point>@<epoch>``) it waits there until :meth:`go`."""

    def __init__(self, context, argv: list[str], log: Path, pause: str | None = None):
        self.log = str(log)
        self.go_file = Path(self.log + ".go")
        env = {"OMP_NUM_THREADS": "1", **({"ZOO_TEST_PAUSE": f"{pause}:{self.go_file}"} if pause else {})}
        self.process = context.Process(target=_zoo_child, args=(argv, self.log, env))
        self.process.start()

    def go(self) -> None:
        """The go-ahead: the paused run goes on."""
        self.go_file.touch()

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        path = Path(self.log + ".err")
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for(self, marker: str, timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.stderr():
            if not self.process.is_alive():
                raise AssertionError(f"the run ended (exit {self.process.exitcode}) without '{marker}':\n"
                                     f"{self.stderr()[-2000:]}")
            if time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(f"no '{marker}' within {timeout} s")
            time.sleep(0.05)

    def kill9(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.process.join(WAIT_S)
        assert self.process.exitcode == -signal.SIGKILL

    def join(self, timeout: float = WAIT_S) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            raise AssertionError(f"still running after {timeout} s")
        return self.process.exitcode


def _wait_until(condition, what: str, timeout: float = WAIT_S) -> None:
    """Poll ``condition`` (an event, not a clock; the timeout only ends a test that is already failing)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.05)


def _train(shapes: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    return ["train", "biformer_tiny", "--data", str(shapes), "--out", str(out), "--epochs", str(epochs), *FAST,
            *TINY_BIFORMER, *extra]


def _zoo_lines(stderr: str) -> list[str]:
    """The zoo's own lines of a stderr that also holds tqdm's carriage-return progress bars."""
    return [part.strip() for line in stderr.splitlines() for part in line.split("\r") if part.startswith("zoo")]


def _metrics_epochs(out: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _state(out: Path) -> dict:
    return torch.load(out / "train_state.pth", weights_only=True)


def _assert_clean_and_consistent(out: Path, epochs: int) -> None:
    """One run's files: the five of them, no lock or hidden temporary file, every epoch's metrics once, the same in
    the state and in metrics.jsonl."""
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert _metrics_epochs(out) == list(range(1, epochs + 1))
    state = _state(out)
    assert state["epoch"] == epochs
    assert [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] == state["metrics"]


def _continue(shapes: Path, out: Path, epochs: int, capsys, *extra: str) -> str:
    """`zoo train ... [extra]` in this process; asserts it succeeds; returns its stderr."""
    code = main(_train(shapes, out, epochs, *extra))
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert json.loads(captured.out.strip().splitlines()[-1])["epoch"] == epochs
    return captured.err


# --------------------------------------------------------------------------------------------- row 4: two writers


def test_a_second_writer_on_the_same_out_is_refused_naming_the_first(shapes, tmp_path, forkserver):
    out = tmp_path / "run"
    # Both start at once on a new folder; the winner waits at its pause until the loser has been refused.
    children = [Child(forkserver, _train(shapes, out, 2), tmp_path / f"child{i}", pause="hub@1") for i in range(2)]
    _wait_until(lambda: any(not child.process.is_alive() for child in children), "neither run ended")
    for child in children:
        child.go()
    codes = [child.join() for child in children]
    assert sorted(codes) == [0, EXIT_USER_ERROR], [c.stderr()[-1500:] for c in children]
    winner, loser = children if codes[0] == 0 else children[::-1]
    (line,) = _zoo_lines(loser.stderr())
    assert line.startswith(f"zoo: error: {out}: in use by another zoo train (pid {winner.pid} on ")
    assert "zoo train biformer_tiny" in line and "--out" in line
    _assert_clean_and_consistent(out, 2)


def test_the_lock_records_its_holder_and_a_stale_one_is_taken_over(tmp_path, capsys):
    from attnzoo.tasks.classification.runs import RunError, RunLock

    out = tmp_path / "run"
    with RunLock.acquire(out, "zoo train first") as lock:
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "zoo train first"
        with pytest.raises(RunError, match=rf"in use by another zoo train \(pid {os.getpid()} on .*zoo train first"):
            RunLock.acquire(out, "zoo train second")
        assert lock.taken_over is None
    assert not out.exists()  # the lock made the folder and left it empty: both go
    # The lock file of a process that died without releasing it.
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps(dict(pid=2**22 + 1, host="elsewhere", started="then", command="zoo x")))
    with RunLock.acquire(out, "zoo train third") as lock:
        assert lock.taken_over["pid"] == 2**22 + 1
    assert "took over the lock of a run that is no longer running (pid 4194305 on elsewhere" in capsys.readouterr().err
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------------------------------- kills and Ctrl-C


def test_kill9_mid_epoch_then_resume(shapes, tmp_path, forkserver, capsys):
    out = tmp_path / "run"
    child = Child(forkserver, _train(shapes, out, 2), tmp_path / "child", pause="batch@2")
    child.wait_for("zoo-test: paused at batch of epoch 2")
    child.kill9()
    assert _state(out)["epoch"] == 1 and _metrics_epochs(out) == [1] and (out / LOCK_NAME).exists()
    err = _continue(shapes, out, 2, capsys, "--resume")
    assert f"took over the lock of a run that is no longer running (pid {child.pid} " in err
    _assert_clean_and_consistent(out, 2)


def test_kill9_between_the_state_and_the_metrics_loses_no_metrics_line(shapes, tmp_path, forkserver, capsys):
    """Row 6: the state of epoch 2 was committed, its metrics line not yet: --resume ends with 1, 2, 3 (not 1, 3)."""
    out = tmp_path / "run"
    child = Child(forkserver, _train(shapes, out, 3), tmp_path / "child", pause="train_state.pth@2")
    child.wait_for("zoo-test: paused at train_state.pth of epoch 2")
    child.kill9()
    assert _state(out)["epoch"] == 2 and _metrics_epochs(out) == [1]
    snapshot = tmp_path / "snapshot"
    shutil.copytree(out, snapshot)
    _continue(shapes, out, 3, capsys, "--resume")
    _assert_clean_and_consistent(out, 3)
    # Had epoch 2 been the last, a --resume that has nothing left to train still puts its line back.
    assert main(_train(shapes, snapshot, 2, "--resume")) == EXIT_USER_ERROR
    assert "already trained 2 epochs" in capsys.readouterr().err
    _assert_clean_and_consistent(snapshot, 2)


def test_kill9_while_the_first_epoch_is_written_leaves_a_folder_that_goes_on(shapes, tmp_path, forkserver, capsys):
    """Row 5: killed after the first epoch's hub files, before its state: both `--resume` and a plain restart start
    afresh after one warning, and the hidden files of interrupted writes are removed."""
    out = tmp_path / "run"
    child = Child(forkserver, _train(shapes, out, 1), tmp_path / "child", pause="hub@1")
    child.wait_for("zoo-test: paused at hub of epoch 1")
    child.kill9()
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "README.md", LOCK_NAME}
    # What a kill inside an atomic write leaves (the temporary file is created empty, then written).
    (out / ".train_state.pth.k1ll3d").write_bytes(b"")
    (out / ".metrics.jsonl.k1ll3d").write_bytes(b"")
    again = tmp_path / "again"
    shutil.copytree(out, again)

    err = _continue(shapes, out, 1, capsys, "--resume")
    (warning,) = [line for line in _zoo_lines(err) if "no completed epoch" in line]
    assert "starting afresh from epoch 1" in warning and ".train_state.pth.k1ll3d" in warning
    _assert_clean_and_consistent(out, 1)

    err = _continue(shapes, again, 1, capsys)  # the same command as the killed one
    assert any("no completed epoch" in line for line in _zoo_lines(err))
    _assert_clean_and_consistent(again, 1)


def test_a_folder_that_is_not_a_run_is_not_cleaned(shapes, tmp_path, capsys):
    """Only an interrupted run's leftovers are removed: a hub folder of someone else's, or other files, stay."""
    out = tmp_path / "hub"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "README.md").write_text("# my model\n")
    for extra in ([], ["--resume"]):
        assert main(_train(shapes, out, 1, *extra)) == EXIT_USER_ERROR
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "holds no zoo train run" in err, err
        assert err.strip().endswith(f"choose a new or empty --out{' without --resume' if extra else ''}.")
    assert {p.name for p in out.iterdir()} == {"config.json", "README.md"}

    # A run's own card without a state (a run that failed while writing its first epoch) is a run's leftover.
    from attnzoo.tasks.classification.runs import RunLock, prepare_run_folder

    (out / "README.md").write_text("# run\n\nTrained with `zoo train` (from random weights); epoch 1 of 2.\n")
    with RunLock.acquire(out, "zoo train test") as lock:
        assert prepare_run_folder(out, True, lock) is False
    assert "no completed epoch to resume" in capsys.readouterr().err and list(out.iterdir()) == []


def test_ctrl_c_ends_with_one_line_and_a_resumable_folder(shapes, tmp_path, forkserver, capsys):
    """Row 9 (Ctrl-C): SIGINT while epoch 1 is being committed takes effect once it is: exit 130, one line saying
    what to run, the lock released, and --resume goes on."""
    out = tmp_path / "run"
    child = Child(forkserver, _train(shapes, out, 2), tmp_path / "child", pause="train_state.pth@1")
    child.wait_for("zoo-test: paused at train_state.pth of epoch 1")
    os.kill(child.pid, signal.SIGINT)  # pending in the child before the go-ahead below can be seen
    child.go()
    assert child.join() == EXIT_INTERRUPTED
    stderr = child.stderr()
    assert "Traceback" not in stderr
    assert _zoo_lines(stderr)[-1] == (f"zoo: interrupted: {out} holds epoch 1 of 2; run the same command with "
                                      "--resume to continue.")
    assert {p.name for p in out.iterdir()} == RUN_FILES and _metrics_epochs(out) == [1]
    _continue(shapes, out, 2, capsys, "--resume")
    _assert_clean_and_consistent(out, 2)


# ----------------------------------------------------------------------------------------- row 13 and row 6's files


def test_every_file_of_a_run_has_the_mode_of_a_normal_write(shapes, tmp_path, capsys):
    """Row 13: under umask 022 every file of a run is 0644 (mkstemp alone makes 0600)."""
    previous = os.umask(0o022)
    try:
        _continue(shapes, tmp_path / "run", 1, capsys)
    finally:
        os.umask(previous)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "run").iterdir()}
    assert modes == dict.fromkeys(RUN_FILES, "0o644")


def test_save_pretrained_replaces_each_file_instead_of_writing_into_it(tmp_path):
    """Row 6 (config.json, README.md written in place): a second save replaces every file by rename, so a reader
    holding the old file (here a hard link to it) never sees it change under it."""
    import attnzoo

    model = attnzoo.create_model("biformer_tiny", pretrained=False, num_classes=3, **dict(
        depth=(1, 1, 1, 1), embed_dim=(32, 64, 96, 128), qk_dims=(32, 64, 96, 128), n_win=2, topks=(1, 2, 4, -2)))
    folder = attnzoo.save_pretrained(model, tmp_path / "folder", readme="first\n")
    names = ["config.json", "model.safetensors", "README.md"]
    for name in names:
        os.link(folder / name, tmp_path / f"old-{name}")
    before = {name: (folder / name).read_bytes() for name in names}
    attnzoo.save_pretrained(model, folder, label_names=["a", "b", "c"], readme="second\n")
    for name in names:
        assert (tmp_path / f"old-{name}").read_bytes() == before[name], name
        assert (folder / name).stat().st_ino != (tmp_path / f"old-{name}").stat().st_ino, name
    assert (folder / "README.md").read_text() == "second\n"
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)
