"""The folder ``zoo train --out RUN`` writes: a hub folder plus what it takes to resume.

    RUN/config.json        timm hub config: architecture, model_args, label_names (the class folder names),
                           pretrained_cfg with the input size and crop the run was measured with
    RUN/model.safetensors  the weights that were validated (the EMA's with --model-ema)
    RUN/README.md          this run's card: measured val top-1 / top-5, the command, the recipe
    RUN/train_state.pth    resume state: epoch, raw model, optimizer, EMA, AMP scaler, every epoch's metrics and
                           the recipe (the flags --resume keeps: :data:`RECIPE_FLAGS`) (weights-only pickle)
    RUN/metrics.jsonl      one JSON line per completed epoch (a copy of the metrics in train_state.pth)
    RUN/train.lock         while a run writes the folder: its pid, host, start time and command

``attnzoo.create_model(RUN)`` / ``zoo validate RUN`` / ``timm.create_model("local-dir:RUN", pretrained=True)`` read it.

Nothing is lost to a kill, a crash or Ctrl-C:

- every file is written atomically (a hidden ``.<name>.<random>`` file in RUN, renamed over the file), so each file
  is either the previous epoch's or the new one's, never half of one; hidden files a killed writer left behind are
  removed on the next start;
- ``train_state.pth`` is the commit of an epoch, written after the epoch's hub files and holding the metrics of every
  epoch so far; metrics.jsonl is rewritten from it after each commit and again on ``--resume``, so a process killed
  between the two loses no metrics line and repeats none (one killed after the hub files and before the state leaves
  them an epoch ahead of the state: ``--resume`` trains that epoch again and rewrites them);
- Ctrl-C during the writing of an epoch takes effect once the epoch is committed;
- a folder with no committed epoch that holds only what an interrupted run leaves (its hub files and hidden files,
  marked as a run's by its stale lock or its card) is cleaned and started afresh, with or without ``--resume``, after
  a warning saying so; a folder of anything else is never touched;
- ``train.lock`` (an ``flock``-ed file, so the kernel frees it when its process dies, even by ``kill -9``) keeps a
  second ``zoo train`` out of the folder: it is refused with one line naming the holder. A lock left by a process
  that is gone is taken over with a warning naming it.

Under torchrun only rank 0 takes the lock and writes.

Test hook: ``ZOO_TEST_PAUSE=<point>@<epoch>:<go-file>`` makes a run print ``zoo-test: paused at <point> of epoch
<epoch>`` on stderr and wait there until the file ``<go-file>`` exists (the test's go-ahead, never a clock: a test
kills or signals the run at a known point, then lets it go on; a run nobody lets go waits until it is killed, at
most :data:`TEST_PAUSE_LIMIT` seconds). The points are ``batch`` (after the epoch's first training step), ``hub``
(after config.json, model.safetensors and README.md), ``train_state.pth`` and ``metrics.jsonl`` (after that file).
It is read only by :func:`pause_for_tests`; nothing else changes when it is set.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shlex
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import torch

from ...errors import ZooError
from ...models import CONFIG_NAME, README_NAME, WEIGHTS_NAME, family_of, save_pretrained
from ...outputs import writing
from ...weights import atomic_write, read_checkpoint, save_pickle
from ..folders import printable

__all__ = [
    "LOCK_NAME",
    "METRICS_NAME",
    "RECIPE_FLAGS",
    "RUN_FILES",
    "STATE_NAME",
    "RunError",
    "RunLock",
    "RunRecord",
    "has_run",
    "hold_interrupts",
    "pause_for_tests",
    "prepare_run_folder",
    "read_state",
    "recipe_of",
    "restore_metrics",
    "resume_recipe",
    "show_flag",
    "write_epoch",
]

STATE_NAME = "train_state.pth"
METRICS_NAME = "metrics.jsonl"
LOCK_NAME = "train.lock"
RUN_FILES = (CONFIG_NAME, WEIGHTS_NAME, README_NAME, STATE_NAME, METRICS_NAME)
# The card RunRecord writes says this; a README.md without it is not a run's (e.g. a save_pretrained folder).
_CARD_MARK = "Trained with `zoo train`"


class RunError(ZooError, ValueError):
    """A run folder that does not fit the request (occupied, nothing to resume, another model); names the fix."""


def _warn(message: str) -> None:
    print(f"zoo: warning: {printable(message)}", file=sys.stderr, flush=True)  # names in it escaped


def has_run(out: Path) -> bool:
    """Whether ``out`` holds a committed epoch (its resume state)."""
    return (out / STATE_NAME).is_file()


def read_state(out: Path) -> dict:
    """The resume state of a run folder (read weights-only: nothing in it runs code)."""
    return read_checkpoint(out / STATE_NAME, fix="--resume cannot continue from it; start the run again in another "
                           "--out (or with --pretrained RUN to start from the weights in its model.safetensors)")


# ------------------------------------------------------------------------------------------------------ the lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _describe(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}: "
            f"{holder.get('command', '?')}")


class RunLock:
    """``RUN/train.lock``: held (``flock``) by the one process writing RUN; it records who that is.

    ``RunLock.acquire(out, command)`` takes it or raises :class:`RunError` naming the holder; ``release()`` (also on
    exceptions and Ctrl-C, through ``with``) removes it, and the folder too when the lock created it and it stayed
    empty. ``taken_over`` is the record of a gone process whose lock was taken over, else None.
    """

    def __init__(self, out: Path, fd: int, created_folder: bool, taken_over: dict | None):
        self.out = out
        self.path = out / LOCK_NAME
        self._fd: int | None = fd
        self._created_folder = created_folder
        self.taken_over = taken_over

    @classmethod
    def acquire(cls, out: Path, command: str) -> RunLock:
        out = Path(out)
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        path = out / LOCK_NAME
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                flocked = True
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    flocked = False  # a file system without flock: judge by the recorded pid alone
                else:
                    os.close(fd)
                    cls._refuse(out, _read_holder(path))
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file between our open and our lock: try the new one
        previous = _read_holder(path, fd=fd)
        if previous and not flocked:
            alive = previous.get("host") != socket.gethostname() or _pid_alive(int(previous.get("pid", 0)))
            if alive and previous.get("pid") != os.getpid():
                os.close(fd)
                cls._refuse(out, previous)
        record = dict(pid=os.getpid(), host=socket.gethostname(),
                      started=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), command=command)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        if previous:
            _warn(f"{path}: took over the lock of a run that is no longer running ({_describe(previous)}).")
        return cls(out, fd, created, previous or None)

    @staticmethod
    def _refuse(out: Path, holder: dict) -> None:
        if not holder:
            raise RunError(f"{out}: another zoo train is starting in this folder (it holds {out / LOCK_NAME}); wait "
                           "for it to end, or choose another --out.")
        gone = holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", 0)))
        note = (" That process is gone, but a child of it (a data-loader worker) still holds the lock; retry in a few "
                "seconds." if gone else " Wait for it to end, or choose another --out.")
        raise RunError(f"{out}: in use by another zoo train ({_describe(holder)}).{note}")

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # before unlocking, so nobody locks a file that is about to vanish
        os.close(self._fd)
        self._fd = None
        if self._created_folder:
            with contextlib.suppress(OSError):
                self.out.rmdir()  # only succeeds when empty (e.g. refused: nothing to resume)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(path: Path, fd: int | None = None) -> dict:
    """The record in a lock file ({} when empty or unreadable); waits for a holder still writing it (it writes right
    after taking the lock; up to 10 s, so a loaded machine does not turn its pid into "another zoo train is starting")."""
    for _ in range(100):
        try:
            text = os.pread(fd, 4096, 0).decode() if fd is not None else path.read_text()
        except (OSError, UnicodeDecodeError):
            return {}
        if not text.strip():
            if fd is not None:
                return {}
        else:
            try:
                holder = json.loads(text)
                return holder if isinstance(holder, dict) else {}
            except json.JSONDecodeError:
                if fd is not None:
                    return {}
        time.sleep(0.1)
    return {}


# ------------------------------------------------------------------------------------------------------ starting


def _leftover_temps(out: Path) -> list[Path]:
    """Hidden files of interrupted atomic writes (``.<run file>.<random>``)."""
    return sorted(p for p in out.iterdir() if p.name.startswith(".")
                  and any(p.name.startswith(f".{name}.") for name in (*RUN_FILES, LOCK_NAME)))


def _is_run_card(path: Path) -> bool:
    try:
        return _CARD_MARK in path.read_text(encoding="utf-8", errors="replace")[:4096]
    except OSError:
        return False


def prepare_run_folder(out: Path, resume: bool, lock: RunLock) -> bool:
    """Make ``out`` (held by ``lock``) ready for a run: remove the hidden files of interrupted writes, and say whether
    the run resumes (``out`` holds a committed epoch) or starts afresh. Raises RunError with the fix when neither fits:
    ``--resume`` on a folder with nothing of a run in it, or a fresh start in a folder that holds a run or other
    files. A folder whose only contents are what a run interrupted before its first committed epoch leaves is cleaned
    and started afresh, with a warning, whether or not ``--resume`` was given."""
    temps = _leftover_temps(out)
    for temp in temps:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    if has_run(out):
        if not resume:
            raise RunError(f"{out}: folder exists and holds a run; pass --resume to continue the run in it, or choose "
                           "another --out.")
        return True
    others = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
    if not others and not temps and lock.taken_over is None:
        if resume:
            raise RunError(f"{out}: nothing to resume (no {STATE_NAME}); drop --resume to start a run there.")
        return False
    only_run_files = set(others) <= set(RUN_FILES)
    # A killed run leaves its lock; another way out (an error while writing) leaves at least its card, unless nothing
    # was written yet. A folder of someone else's (e.g. from save_pretrained) has neither and is never touched.
    from_a_run = lock.taken_over is not None or _is_run_card(out / README_NAME)
    if only_run_files and from_a_run:
        left = ", ".join(others + [p.name for p in temps]) or LOCK_NAME
        for name in others:
            (out / name).unlink()
        _warn(f"{out}: no completed epoch{' to resume' if resume else ''}; removed what an interrupted run left "
              f"({left}) and starting afresh from epoch 1.")
        return False
    raise RunError(f"{out}: {'nothing to resume: the' if resume else 'the'} folder holds no zoo train run (no "
                   f"{STATE_NAME}) but other files; choose a new or empty --out"
                   f"{' without --resume' if resume else ''}.")


def restore_metrics(out: Path, state: dict) -> list[dict]:
    """The metrics of every committed epoch of a resumed run, and metrics.jsonl rewritten to hold exactly them.

    They come from the state; a state written before it carried them is completed from metrics.jsonl (the last line
    of each committed epoch, none after it)."""
    epoch = int(state["epoch"])
    history = state.get("metrics")
    if history is None:
        by_epoch: dict[int, dict] = {}
        path = out / METRICS_NAME
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of an in-place append
            if isinstance(entry, dict) and isinstance(entry.get("epoch"), int) and 1 <= entry["epoch"] <= epoch:
                by_epoch[entry["epoch"]] = entry
        history = [by_epoch[e] for e in sorted(by_epoch)]
    history = [entry for entry in history if int(entry["epoch"]) <= epoch]
    _write_metrics(out, history)
    return list(history)


# ------------------------------------------------------------------------------------------------------ the recipe

# What makes a run's recipe: ``zoo train``'s flags (argument name -> flag) recorded in train_state.pth's ``recipe``
# and restored by --resume. The rest may change between a run and its --resume: --epochs (to train on), --data (its
# classes are checked), --device, --workers, --grad-checkpointing, --no-image-check, --max-pixels.
RECIPE_FLAGS = {
    "model": "MODEL", "model_kwargs": "--model-kwargs", "img_size": "--img-size", "crop_pct": "--crop-pct",
    "drop_path": "--drop-path", "pretrained": "--pretrained", "batch_size": "--batch-size", "amp": "--amp",
    "seed": "--seed", "opt": "--opt", "lr": "--lr", "weight_decay": "--weight-decay", "layer_decay": "--layer-decay",
    "clip_grad": "--clip-grad", "sched": "--sched", "warmup_epochs": "--warmup-epochs", "warmup_lr": "--warmup-lr",
    "min_lr": "--min-lr", "no_aug": "--no-aug", "scale": "--scale", "color_jitter": "--color-jitter",
    "smoothing": "--smoothing", "mixup": "--mixup", "cutmix": "--cutmix", "model_ema": "--model-ema",
    "model_ema_decay": "--model-ema-decay",
}


def recipe_of(args) -> dict:
    """The recipe of a run started with ``args`` (the values of :data:`RECIPE_FLAGS`), as train_state.pth records it."""
    return {dest: getattr(args, dest) for dest in RECIPE_FLAGS if hasattr(args, dest)}


def _plain(value):
    """A value as compared between a run's recipe and a --resume's flags: tuples as lists, ints as floats."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def show_flag(dest: str, value) -> str:
    """A recipe entry as the flag that gives it (``--img-size 48``, ``--no-aug``, ``no --layer-decay``)."""
    flag = RECIPE_FLAGS[dest]
    if dest == "model":
        return f"MODEL {value}"
    if value is None or value is False or (dest == "model_kwargs" and not value):
        return f"no {flag}"
    if value is True:
        return flag
    if dest == "model_kwargs":
        return f"{flag} " + " ".join(f"{k}={v!r}" for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return f"{flag} " + " ".join(map(str, value))
    return f"{flag} {value}"


def resume_recipe(out: Path, args, state: dict, given: set[str] | None) -> None:
    """Put the recipe of the run in ``out`` (its ``state``) into ``args`` for --resume: a flag the command did not give
    takes the run's value; a given flag (``given``: argument names; None: every argument that is not None) that
    contradicts the run is a :class:`RunError` naming each one, in one line. A run written before train_state.pth
    recorded its recipe has its input size and crop checked against its config.json, and takes them and its model
    arguments from there."""
    recorded = state.get("recipe")
    if not isinstance(recorded, dict):
        recorded = _recipe_from_config(out, args, given)
    clashes = []
    for dest, value in recorded.items():
        if dest not in RECIPE_FLAGS or not hasattr(args, dest):
            continue
        mine = getattr(args, dest)
        is_given = dest in given if given is not None else mine is not None
        if not is_given:
            setattr(args, dest, value)
        elif _plain(mine) != _plain(value):
            clashes.append(f"{show_flag(dest, mine)} (the run: {show_flag(dest, value)})")
    if clashes:
        raise RunError(f"{out}: --resume continues the run's own recipe, and {'; '.join(clashes)} "
                       f"contradict{'s' if len(clashes) == 1 else ''} it; drop "
                       f"{'that flag' if len(clashes) == 1 else 'those flags'} to continue the run as it was, or start a "
                       f"new run from its weights (--pretrained {out} --out NEW).")


def _recipe_from_config(out: Path, args, given: set[str] | None) -> dict:
    """The part of the recipe a run whose state has none records in its config.json: its input size and crop (as a
    recipe, checked against the flags), and its model arguments (the model's as built: the card's and the run's own;
    they only fill an absent --model-kwargs)."""
    try:
        config = json.loads((out / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(config, dict):
        return {}
    model_args = dict(config.get("model_args") or {})
    data = config.get("pretrained_cfg") or {}
    recorded = {}
    size = model_args.pop("img_size", None) or (data.get("input_size") or [None])[-1]
    if isinstance(size, (list, tuple)):
        size = size[0] if len(set(size)) == 1 else None
    if isinstance(size, int):
        recorded["img_size"] = size
    if isinstance(data.get("crop_pct"), (int, float)):
        recorded["crop_pct"] = float(data["crop_pct"])
    model_args.pop("num_classes", None)
    given_kwargs = "model_kwargs" in given if given is not None else bool(getattr(args, "model_kwargs", None))
    if model_args and not given_kwargs:
        args.model_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in model_args.items()}
    return recorded


# ------------------------------------------------------------------------------------------------------ writing


TEST_PAUSE_LIMIT = 600.0  # seconds a paused run waits for its go-ahead: only so a run of a crashed test ends


def pause_for_tests(point: str, epoch: int) -> None:
    """The test hook (see the module's docstring): at ``point`` of ``epoch``, when ZOO_TEST_PAUSE asks to, wait for
    the test's go-ahead file."""
    hook = os.environ.get("ZOO_TEST_PAUSE")
    if not hook:
        return
    where, _, go = hook.partition(":")
    if where != f"{point}@{epoch}":
        return
    print(f"zoo-test: paused at {point} of epoch {epoch}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + TEST_PAUSE_LIMIT
    while not (go and os.path.exists(go)) and time.monotonic() < deadline:
        time.sleep(0.01)  # polling an event (the file), not timing one: the run goes on only when the test says so


@contextlib.contextmanager
def hold_interrupts():
    """Ctrl-C (SIGINT) inside the block takes effect when it ends (the main thread only; elsewhere no change).
    Blocks nest: an inner block hands a held Ctrl-C to the outer one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        if callable(previous):
            previous(signal.SIGINT, None)
        elif previous == signal.SIG_DFL:
            raise KeyboardInterrupt


def _write_metrics(out: Path, history: list[dict]) -> None:
    text = "".join(json.dumps(entry) + "\n" for entry in history)
    path = out / METRICS_NAME
    if path.is_file() and path.read_text(encoding="utf-8", errors="replace") == text:
        return
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


class RunRecord:
    """What the card says about a run: where it came from and how it was trained (filled in by the trainer)."""

    def __init__(self, architecture: str, command: list[str], data: str, classes: list[str], recipe: dict,
                 start: str):
        self.architecture = architecture
        self.command = "zoo " + shlex.join(command)
        self.data = data
        self.classes = classes
        self.recipe = recipe
        self.start = start

    def card(self, out: Path, model: torch.nn.Module, epoch: int, epochs: int, val: dict | None,
             data_config: dict) -> str:
        params_m = sum(p.numel() for p in model.parameters()) / 1e6
        size = "x".join(str(s) for s in data_config["input_size"][1:])
        lines = [
            "---", "library_name: timm", "tags:", "- image-classification", "- timm", "- attnzoo",
            f"- {family_of(self.architecture)}", "---", "",
            f"# {out.name}: {self.architecture} trained on {self.data}", "",
            f"Trained with `zoo train` ({self.start}); epoch {epoch} of {epochs}.", "",
            "## Results", "",
        ]
        if val is None:
            lines += ["No val/ split next to train/, so nothing was measured.", ""]
        else:
            lines += [
                f"| split | images | top-1 | top-{val.get('top5_k', 5)} |", "|---|---|---|---|",
                f"| {val['data']} | {val['images']} | {val['top1']:.2f} | {val['top5']:.2f} |", "",
                f"Measured by `zoo train` after epoch {epoch} on the weights in this folder"
                f"{' (the EMA)' if self.recipe.get('model_ema') else ''}, at {size} pixels, crop_pct "
                f"{data_config['crop_pct']}. The same number again:", "",
                "```bash", f"zoo validate {shlex.quote(str(out))} --data {shlex.quote(val['data'])}", "```", "",
            ]
        lines += [
            "## Training", "",
            "```bash", self.command, "```", "",
            f"- **Architecture:** {self.architecture} ({params_m:.2f} M parameters)",
            f"- **Classes ({len(self.classes)}):** {', '.join(self.classes)}",
            f"- **Input:** {size}, mean {list(data_config['mean'])}, std {list(data_config['std'])}",
        ]
        lines += [f"- **{key}:** {value}" for key, value in self.recipe.items()]
        lines += ["", "## Usage", "", "```python", "import attnzoo", "",
                  f"model = attnzoo.create_model({str(out)!r}).eval()", "```",
                  "", "```bash", f"zoo predict {shlex.quote(str(out))} image.png", "```", ""]
        return "\n".join(lines)


@contextlib.contextmanager
def _previous_epoch_kept(out: Path):
    """The hub files as the last committed epoch left them, put back when writing the next epoch fails before its
    commit (a full disk while writing train_state.pth): the folder keeps one consistent epoch, not an epoch's hub
    files beside the previous epoch's state. Kept as hard links (no space taken; hidden ``.<name>.previous`` files
    that a next start cleans like other leftovers); where the file system has none, nothing is kept."""
    hub = (CONFIG_NAME, WEIGHTS_NAME, README_NAME)
    kept: dict[str, Path | None] = {}
    for name in hub:
        link = out / f".{name}.previous"
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        try:
            os.link(out / name, link)
            kept[name] = link
        except FileNotFoundError:
            kept[name] = None  # not written yet (the first epoch): removed again on failure
        except OSError:
            kept = {}  # no hard links here: keep nothing
            break
    try:
        yield
    except BaseException:
        for name, link in kept.items():
            with contextlib.suppress(OSError):
                if link is None:
                    (out / name).unlink()
                else:
                    os.replace(link, out / name)
        raise
    finally:
        for link in kept.values():
            if link is not None:
                with contextlib.suppress(OSError):
                    link.unlink()


def write_epoch(out: Path, record: RunRecord, eval_model: torch.nn.Module, state: dict, data_config: dict,
                val: dict | None) -> None:
    """After an epoch (rank 0 only): the hub folder of the validated weights, then the resume state (the commit:
    ``state["metrics"]`` holds every epoch's metrics so far), then metrics.jsonl from it; each file atomically, and a
    Ctrl-C meanwhile held until all are written."""
    epoch = int(state["epoch"])
    with hold_interrupts(), writing(out, "--out"):  # a full disk, a read-only folder: one line (attnzoo.outputs)
        card = record.card(out, eval_model, epoch, state["epochs"], val, data_config)
        with _previous_epoch_kept(out):
            save_pretrained(eval_model, out, label_names=record.classes, data_config=data_config, readme=card)
            pause_for_tests("hub", epoch)
            save_pickle(state, out / STATE_NAME)
        pause_for_tests(STATE_NAME, epoch)
        _write_metrics(out, state["metrics"])
        pause_for_tests(METRICS_NAME, epoch)
