"""The X-ray demo: make a synthetic PIDray-style set, train a small SDANet detector on the CPU, evaluate it per split,
and run ``zoo xray detect`` on held-out bags.

``run_xray_demo(out_dir)`` runs, in order, each step through the project's own entry points (the shipped tools and
configs of ``attnzoo.shipped``, so it works from an installed wheel as from a clone):

1. ``make_pidray.py``: the synthetic set (train + easy / hard / hidden test splits, COCO json);
2. the untrained detector (same config, seeded initialisation: :func:`save_untrained_checkpoint`) evaluated with
   ``test.py``: the floor;
3. ``train.py`` on ``xray/cascade-mask-rcnn_biformer-tiny_fpn-sdanet_synthetic-demo.py`` (Cascade Mask R-CNN + FPN +
   SDANet with a tiny BiFormer ``ZooBackbone``) for a fixed, seeded number of iterations;
4. ``test.py`` on the trained checkpoint: box and mask AP per split and overall, next to the untrained numbers;
5. ``zoo xray detect`` on held-out bags (test-split scans training never saw): the user's command (shown as typed,
   run in-process through :func:`attnzoo.tasks.xray.detect.detect`), its summary lines, one JSON and one picture per bag.

The tools (``make_pidray.py``, ``train.py``, ``test.py``) run as subprocesses, as a user runs them; the demo config
(:func:`write_demo_config`), the untrained checkpoint and the detection run in this process, their output going to
``config.log``, ``untrained.log`` and ``detect.log``.

The result depends on the iteration count and the seed, not on the machine's speed: ``DEMO_ITERATIONS`` is sized so a
2-core CPU finishes the step in about five minutes. ``guard_minutes`` is only a guard: when the step has used it up,
training stops early, and the demo says so in capitals next to the numbers (they are then not the reference run's).

OpenMMLab is imported only when a step needs it, so importing this module stays free of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ...outputs import output_folder
from ...shipped import config_path, tool_path

DEMO_CONFIG = "xray/cascade-mask-rcnn_biformer-tiny_fpn-sdanet_synthetic-demo.py"
TEST_SPLITS = ("easy", "hard", "hidden")
# Fixed training length (seeded): the learning is the same on every machine; a busy or slow machine takes longer, it
# does not learn less. 600 is what the old wall-clock budget reached on the faster of two 2-core CI machines (601
# iterations, overall box AP 19.8, the whole step in about 5.5 min; the slower machine reached 326-331, box AP 8);
# an iteration costs about the same at 96 px as at 128 px (a 40-iteration run, start-up included, took 28.3 vs 30.1
# CPU-seconds here), so smaller images would not buy iterations.
DEMO_ITERATIONS = 600
DEFAULT_GUARD_MINUTES = 12.0  # about twice the expected step time on 2 cores: a normal run never reaches it
EVAL_RESERVE_S = 90.0  # what the trained evaluation and `zoo xray detect` need after training stops (2 cores)
BAGS_PER_SPLIT = 2  # held-out bags per test split given to `zoo xray detect`
# The 600-iteration detector is not confident yet (its correct detections score about 0.2-0.4, 13-way softmax): the
# demo shows its guesses from 0.2, next to the truth, rather than the command's default 0.3.
DETECT_SCORE_THR = 0.2

__all__ = ["DEMO_CONFIG", "DEMO_ITERATIONS", "run_xray_demo", "save_untrained_checkpoint", "write_demo_config"]


def run_xray_demo(out_dir, iterations: int = DEMO_ITERATIONS, guard_minutes: float = DEFAULT_GUARD_MINUTES,
                  num_train: int = 400, num_test: int = 24, image_size: int = 128, seed: int = 0,
                  log=print) -> dict:
    """Run the whole demo under ``out_dir``; returns the metrics, iteration counts, timings and file paths."""
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    start = time.perf_counter()
    out = output_folder(Path(out_dir).resolve(), "--out")  # the zoo's output-path rule (attnzoo.outputs)
    data_root = out / "data"
    timings = {}

    threads = _threads_env().get("OMP_NUM_THREADS")
    if threads:
        log(f"[xray demo] the CPUs are busy (load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores): "
            f"running the steps with OMP_NUM_THREADS={threads}")
    log(f"[xray demo] 1/5 synthetic PIDray-style set -> {data_root}")
    step = time.perf_counter()
    _run([sys.executable, str(tool_path("make_pidray.py")), "--out", str(data_root), "--train", str(num_train),
          "--test", str(num_test), "--size", str(image_size), "--seed", str(seed)], out / "make.log")
    timings["data_s"] = time.perf_counter() - step

    with _step_output(out / "config.log"):
        config = write_demo_config(out / "config.py", data_root, seed)
    log("[xray demo] 2/5 untrained detector (seeded initialisation), evaluated per split")
    step = time.perf_counter()
    with _step_output(out / "untrained.log"):
        untrained = save_untrained_checkpoint(config, out / "untrained.pth", seed)
    untrained_table = _test(config, untrained, out / "eval_untrained")
    timings["eval_untrained_s"] = time.perf_counter() - step

    spent = time.perf_counter() - start
    guard_train_minutes = max(0.1, (60.0 * guard_minutes - spent - EVAL_RESERVE_S) / 60.0)
    log(f"[xray demo] 3/5 training {iterations} iterations (seed {seed}) on the CPU (train.py); time guard "
        f"{guard_train_minutes:.1f} min")
    step = time.perf_counter()
    _run([sys.executable, str(tool_path("train.py")), str(config), "--work-dir", str(out / "train"),
          "--cfg-options", f"train_cfg.max_iters={iterations}",
          f"custom_hooks.0.max_minutes={guard_train_minutes:.3f}"], out / "train.log")
    trained = _last_checkpoint(out / "train")
    done = _iterations_from_log(out / "train.log")
    timings["train_s"] = time.perf_counter() - step
    stopped_early = done < iterations
    guard_line = (f"TIME GUARD: training stopped after {done} of {iterations} iterations ({guard_minutes:g} min "
                  "for the whole step); this step's numbers are NOT the reference run's. Give the step more time "
                  "(`zoo demo --xray-minutes ...`) for the full schedule.") if stopped_early else ""
    per_iteration = _seconds_per_iteration(out / "train.log")
    log(f"[xray demo] trained {done} of {iterations} iterations; train.py took {timings['train_s']:.0f} s with "
        "start-up" + (f", {per_iteration:.2f} s per iteration" if per_iteration else ""))
    if guard_line:
        log(guard_line)

    log("[xray demo] 4/5 trained detector, evaluated per split (test.py)")
    step = time.perf_counter()
    trained_table = _test(config, trained, out / "eval_trained")
    timings["eval_trained_s"] = time.perf_counter() - step

    log("[xray demo] 5/5 the user's command on held-out bags (test-split scans training never saw):")
    step = time.perf_counter()
    bags, truth = _held_out_bags(data_root, out / "held_out_bags")
    detect_summary = _detect(config, trained, bags, out / "detect", log)
    for name, classes in truth.items():
        log(f"  truth {name}: {', '.join(classes) or 'nothing'}")
    timings["detect_s"] = time.perf_counter() - step
    timings["total_s"] = time.perf_counter() - start

    summary = _summary(untrained_table, trained_table, done, iterations, timings)
    log("\nUntrained (seeded initialisation):\n" + (out / "eval_untrained" / "pidray.md").read_text())
    log(f"Trained ({done} of {iterations} iterations, {timings['train_s'] / 60:.1f} min):\n" +
        (out / "eval_trained" / "pidray.md").read_text())
    log(summary)
    if guard_line:
        log(guard_line)
    log(f"pictures and JSON per bag: {out / 'detect'}")
    result = {"untrained": untrained_table, "trained": trained_table, "iterations": done,
              "planned_iterations": iterations, "stopped_early": stopped_early, "timings": timings,
              "detect": detect_summary, "config": str(config), "checkpoint": str(trained)}
    (out / "xray_demo.json").write_text(json.dumps(result, indent=1))
    return result


# -- steps --------------------------------------------------------------------------------------------------------


def _threads_env() -> dict[str, str]:
    """One OpenMP thread per process when the CPUs are already busy.

    Measured here (2 cores, load average ~11): a 3x3 conv's forward+backward took 46 ms with one thread and 593 ms
    with two, because every parallel region waits for both threads to be scheduled. An explicit OMP_NUM_THREADS wins.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
    return {"OMP_NUM_THREADS": "1"} if busy else {}


def _subprocess_env() -> dict[str, str]:
    """The demo's environment for the tools: unbuffered output, the thread setting above, and, when this ``zoo`` runs
    from a clone (which may not be installed), the clone on PYTHONPATH so the tools import the same code."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **_threads_env())
    clone = Path(__file__).resolve().parents[3]  # zoo/tasks/xray/demo.py -> the clone
    if (clone / "pyproject.toml").is_file():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(clone), os.environ.get("PYTHONPATH", "")) if p)
    return env


def _run(command: list[str], log_file: Path) -> None:
    with open(log_file, "w") as handle:
        completed = subprocess.run(command, cwd=log_file.parent, stdout=handle, stderr=subprocess.STDOUT,
                                   env=_subprocess_env())
    if completed.returncode != 0:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"[xray demo] {' '.join(command[1:3])} failed (exit {completed.returncode}); "
                           f"last lines of {log_file}:\n{tail}")


@contextlib.contextmanager
def _step_output(log_file: Path) -> Iterator[None]:
    """An in-process step's output (prints, warnings, mmengine's log) goes to ``log_file``, as the step's own process
    would write it; with one torch thread when the CPUs are busy, as the tools get (:func:`_threads_env`)."""
    import torch

    threads = torch.get_num_threads()
    with open(log_file, "w") as handle, _mm_logs_to(handle), contextlib.redirect_stdout(handle), \
            contextlib.redirect_stderr(handle):
        if _threads_env():
            torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


@contextlib.contextmanager
def _mm_logs_to(stream) -> Iterator[None]:
    """mmengine's loggers write to ``stream`` for a while: they hold the ``sys.stdout`` of the moment each was made, so
    redirecting stdout alone does not move them. Loggers made meanwhile follow ``sys.stderr`` afterwards (``stream``
    is closed then; :mod:`attnzoo.openmmlab.logs`)."""
    try:
        from mmengine.logging import MMLogger
    except ImportError:  # nothing of OpenMMLab can log then
        yield
        return

    def stream_handlers() -> list[logging.StreamHandler]:
        return [h for logger in list(MMLogger._instance_dict.values()) for h in logger.handlers
                if type(h) is logging.StreamHandler]

    from ...openmmlab.logs import StandardStream, point

    before = {handler: handler.stream for handler in stream_handlers()}
    for handler in before:
        point(handler, stream)
    try:
        yield
    finally:
        for handler in stream_handlers():
            previous = before.get(handler)
            point(handler, StandardStream("stderr") if previous is None or getattr(previous, "closed", False)
                  else previous)


def write_demo_config(path: str | os.PathLike, data_root: str | os.PathLike, seed: int,
                      demo_config: str = DEMO_CONFIG) -> Path:
    """The shipped demo config with this run's data root (train and every test split) and seed, dumped as one file
    for the tools; returns ``path``."""
    from mmengine.config import Config

    path = Path(path)
    root = f"{data_root}/"
    cfg = Config.fromfile(str(config_path(demo_config)), import_custom_modules=False)
    cfg.train_dataloader.dataset.data_root = root
    for dataset in cfg.test_dataloader.dataset.datasets:
        dataset.data_root = root
    cfg.test_evaluator.ann_files = {s: f"{root}annotations/xray_test_{s}.json" for s in TEST_SPLITS}
    cfg.randomness = dict(seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(path))
    return path


def save_untrained_checkpoint(config: str | os.PathLike, path: str | os.PathLike, seed: int) -> Path:
    """The detector of ``config`` at its seeded initialisation (``torch.manual_seed(seed)``, then ``init_weights``),
    saved as an mmengine-style checkpoint ``{'state_dict': ..., 'meta': {'note': ...}}``; returns ``path``.

    The process's random state is left as it was.
    """
    import torch
    from mmengine.registry import init_default_scope

    from ...openmmlab.configs import read_config
    from ...weights import save_pickle

    cfg = read_config(str(config))  # custom_imports: attnzoo.heads.xray, attnzoo.openmmlab
    init_default_scope("mmdet")
    from mmdet.registry import MODELS

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODELS.build(cfg.model)
        model.init_weights()
    return save_pickle({"state_dict": model.state_dict(), "meta": {"note": "untrained: seeded initialisation"}},
                       Path(path))


def _test(config: Path, checkpoint: Path, work_dir: Path) -> dict:
    results = work_dir / "pidray"
    _run([sys.executable, str(tool_path("test.py")), str(config), str(checkpoint), "--work-dir", str(work_dir),
          "--cfg-options", f"test_evaluator.results_file={results}"], work_dir.with_suffix(".log"))
    return json.loads(Path(f"{results}.json").read_text())


def _last_checkpoint(work_dir: Path) -> Path:
    pointer = work_dir / "last_checkpoint"
    if not pointer.is_file():
        raise RuntimeError(f"[xray demo] training wrote no checkpoint in {work_dir} (see train.log)")
    return Path(pointer.read_text().strip())


def _iterations_from_log(log_file: Path) -> int:
    found = re.findall(r"Saving checkpoint at (\d+) iterations", log_file.read_text())
    return int(found[-1]) if found else -1


def _seconds_per_iteration(log_file: Path) -> float | None:
    """Mean of the per-iteration times mmengine's logger printed (None when training was too short to log one)."""
    times = [float(t) for t in re.findall(r"Iter\(train\).*?\btime: ([\d.]+)", log_file.read_text())]
    return sum(times) / len(times) if times else None


def _held_out_bags(data_root: Path, folder: Path) -> tuple[Path, dict[str, list[str]]]:
    """The first BAGS_PER_SPLIT scans of each test split, copied into one folder; returns it and their true classes."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    truth = {}
    for split in TEST_SPLITS:
        coco = json.loads((data_root / "annotations" / f"xray_test_{split}.json").read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        for image in coco["images"][:BAGS_PER_SPLIT]:
            shutil.copy2(data_root / split / image["file_name"], folder / image["file_name"])
            truth[image["file_name"]] = [names[a["category_id"]] for a in coco["annotations"]
                                         if a["image_id"] == image["id"]]
    return folder, truth


def _detect(config: Path, checkpoint: Path, bags: Path, out: Path, log) -> dict:
    """``zoo xray detect`` as a user runs it (shown as typed; run in-process by the same library function): its
    summary lines and last JSON line go to the log and, with its warnings and mmengine's messages, to detect.log."""
    from .detect import detect

    arguments = ["xray", "detect", str(config), str(checkpoint), str(bags), "--out", str(out),
                 "--score-thr", str(DETECT_SCORE_THR)]
    log("$ zoo " + " ".join(shlex.quote(a) for a in arguments))
    lines: list[str] = []

    def record(line: str) -> None:
        lines.append(line)
        print(line)  # into detect.log

    with _step_output(out.parent / "detect.log"):
        summary = detect(config, checkpoint, [bags], out, score_thr=DETECT_SCORE_THR, log=record)
        record(json.dumps(summary))
    for line in lines:
        log(f"  {line}")
    return summary


def _summary(untrained: dict, trained: dict, done: int, planned: int, timings: dict) -> str:
    lines = ["Learning check (same synthetic test images, AP in %):"]
    for key, label in (("bbox_mAP", "box AP"), ("segm_mAP", "mask AP")):
        cells = [f"{split} {100 * untrained[split][key]:.1f} -> {100 * trained[split][key]:.1f}"
                 for split in (*TEST_SPLITS, "overall")]
        lines.append(f"  {label:8s} untrained -> trained: " + ", ".join(cells))
    lines.append(f"  {done} of {planned} training iterations; step total {timings['total_s'] / 60:.1f} min "
                 f"(data {timings['data_s']:.0f} s, untrained eval {timings['eval_untrained_s']:.0f} s, "
                 f"train {timings['train_s']:.0f} s, trained eval {timings['eval_trained_s']:.0f} s, "
                 f"zoo xray detect {timings['detect_s']:.0f} s)")
    return "\n".join(lines)


if __name__ == "__main__":
    run_xray_demo(sys.argv[1] if len(sys.argv) > 1 else "demo_out/xray",
                  iterations=int(sys.argv[2]) if len(sys.argv) > 2 else DEMO_ITERATIONS)
