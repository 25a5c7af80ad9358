"""The X-ray demo: make a synthetic PIDray-style set, train a small SDANet detector on the CPU, evaluate it per split.

``run_xray_demo(out_dir)`` runs, in order, each step through the project's own entry points:

1. ``tools/make_pidray.py``: the synthetic set (train + easy / hard / hidden test splits, COCO json);
2. the untrained detector (same config, seeded initialisation) evaluated with ``tools/test.py``: the floor;
3. ``tools/train.py`` on ``configs/xray/cascade-mask-rcnn_biformer-tiny_fpn-sdanet_synthetic-demo.py`` (Cascade Mask
   R-CNN + FPN + SDANet with a tiny BiFormer ``ZooBackbone``) for a wall-clock budget;
4. ``tools/test.py`` on the trained checkpoint: box and mask AP per split and overall, next to the untrained numbers;
5. a PNG of predicted boxes and masks on test images of each split.

OpenMMLab is imported only inside the functions, so ``import zoo`` stays free of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO_ROOT / "configs" / "xray" / "cascade-mask-rcnn_biformer-tiny_fpn-sdanet_synthetic-demo.py"
TEST_SPLITS = ("easy", "hard", "hidden")

__all__ = ["run_xray_demo"]


def run_xray_demo(out_dir, minutes_budget: float = 6.0, num_train: int = 400, num_test: int = 24,
                  image_size: int = 128, seed: int = 0, train_minutes: float | None = None,
                  panels_per_split: int = 2, log=print) -> dict:
    """Run the whole demo under ``out_dir``; returns the metrics, timings and file paths.

    ``train_minutes`` defaults to what ``minutes_budget`` leaves once the data and the untrained evaluation are done,
    less as much again for the trained evaluation and the PNG (the untrained evaluation is the slower one: an
    untrained head keeps its maximum of low-score detections), and at least 1.5 minutes.
    """
    start = time.perf_counter()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_root = out / "data"
    timings = {}

    threads = _threads_env().get("OMP_NUM_THREADS")
    if threads:
        log(f"[xray demo] the CPUs are busy (load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores): "
            f"running the steps with OMP_NUM_THREADS={threads}")
    log(f"[xray demo] 1/5 synthetic PIDray-style set -> {data_root}")
    step = time.perf_counter()
    _run([sys.executable, str(REPO_ROOT / "tools" / "make_pidray.py"), "--out", str(data_root), "--train",
          str(num_train), "--test", str(num_test), "--size", str(image_size), "--seed", str(seed)], out / "make.log")
    timings["data_s"] = time.perf_counter() - step

    config = _write_config(out, data_root, seed)
    log("[xray demo] 2/5 untrained detector (seeded initialisation), evaluated per split")
    step = time.perf_counter()
    untrained = _save_untrained_checkpoint(config, out / "untrained.pth", seed)
    untrained_table = _test(config, untrained, out / "eval_untrained")
    timings["eval_untrained_s"] = time.perf_counter() - step

    if train_minutes is None:
        spent = time.perf_counter() - start
        train_minutes = max(1.5, minutes_budget - (spent + timings["eval_untrained_s"] + 20.0) / 60.0)
    log(f"[xray demo] 3/5 training for up to {train_minutes:.1f} min on the CPU (tools/train.py)")
    step = time.perf_counter()
    _run([sys.executable, str(REPO_ROOT / "tools" / "train.py"), str(config), "--work-dir", str(out / "train"),
          "--cfg-options", f"custom_hooks.0.max_minutes={train_minutes:.2f}"], out / "train.log")
    trained = _last_checkpoint(out / "train")
    iterations = _iterations_from_log(out / "train.log")
    timings["train_s"] = time.perf_counter() - step

    log("[xray demo] 4/5 trained detector, evaluated per split (tools/test.py)")
    step = time.perf_counter()
    trained_table = _test(config, trained, out / "eval_trained")
    timings["eval_trained_s"] = time.perf_counter() - step

    log("[xray demo] 5/5 predictions on test images -> PNG")
    step = time.perf_counter()
    png = _draw_predictions(config, trained, data_root, out / "xray_predictions.png", panels_per_split)
    timings["png_s"] = time.perf_counter() - step
    timings["total_s"] = time.perf_counter() - start

    summary = _summary(untrained_table, trained_table, iterations, timings)
    log("\nUntrained (seeded initialisation):\n" + (out / "eval_untrained" / "pidray.md").read_text())
    log(f"Trained ({iterations} iterations, {timings['train_s'] / 60:.1f} min):\n" +
        (out / "eval_trained" / "pidray.md").read_text())
    log(summary)
    log(f"predictions: {png}")
    result = {"untrained": untrained_table, "trained": trained_table, "iterations": iterations,
              "timings": timings, "png": str(png), "config": str(config), "checkpoint": str(trained)}
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


def _run(command: list[str], log_file: Path) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **_threads_env())
    with open(log_file, "w") as handle:
        completed = subprocess.run(command, cwd=REPO_ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if completed.returncode != 0:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"[xray demo] {' '.join(command[1:3])} failed (exit {completed.returncode}); "
                           f"last lines of {log_file}:\n{tail}")


_CONFIG_SCRIPT = """
import sys
from mmengine.config import Config
cfg = Config.fromfile({demo!r}, import_custom_modules=False)
root = {root!r}
cfg.train_dataloader.dataset.data_root = root
for dataset in cfg.test_dataloader.dataset.datasets:
    dataset.data_root = root
cfg.test_evaluator.ann_files = {{s: root + 'annotations/xray_test_' + s + '.json' for s in ('easy', 'hard', 'hidden')}}
cfg.custom_hooks = [dict(type='TrainTimeBudgetHook', max_minutes=3.0)]  # the demo sets the budget per run
cfg.randomness = dict(seed={seed})
cfg.dump({path!r})
"""


def _write_config(out: Path, data_root: Path, seed: int) -> Path:
    """The demo config with this run's data root and seed, dumped as one file for the tools."""
    path = out / "config.py"
    script = _CONFIG_SCRIPT.format(demo=str(DEMO_CONFIG), root=f"{data_root}/", seed=seed, path=str(path))
    _run([sys.executable, "-c", script], out / "config.log")
    return path


_UNTRAINED_SCRIPT = """
import sys, torch
sys.path.insert(0, {repo!r})
from mmengine.config import Config
from mmengine.registry import init_default_scope
cfg = Config.fromfile({config!r})  # custom_imports: heads.xray, zoo.openmmlab
init_default_scope('mmdet')
from mmdet.registry import MODELS
torch.manual_seed({seed})
model = MODELS.build(cfg.model)
model.init_weights()
torch.save({{'state_dict': model.state_dict(), 'meta': {{'note': 'untrained: seeded initialisation'}}}}, {path!r})
"""


def _save_untrained_checkpoint(config: Path, path: Path, seed: int) -> Path:
    """The demo detector at its seeded initialisation, saved as a checkpoint (in a subprocess: mmdet's init log
    is long, and the demo process stays free of OpenMMLab)."""
    script = _UNTRAINED_SCRIPT.format(repo=str(REPO_ROOT), config=str(config), seed=seed, path=str(path))
    _run([sys.executable, "-c", script], path.with_suffix(".log"))
    return path


def _test(config: Path, checkpoint: Path, work_dir: Path) -> dict:
    results = work_dir / "pidray"
    _run([sys.executable, str(REPO_ROOT / "tools" / "test.py"), str(config), str(checkpoint), "--work-dir",
          str(work_dir), "--cfg-options", f"test_evaluator.results_file={results}"], work_dir.with_suffix(".log"))
    return json.loads(Path(f"{results}.json").read_text())


def _last_checkpoint(work_dir: Path) -> Path:
    pointer = work_dir / "last_checkpoint"
    if not pointer.is_file():
        raise RuntimeError(f"[xray demo] training wrote no checkpoint in {work_dir} (see train.log)")
    return Path(pointer.read_text().strip())


def _iterations_from_log(log_file: Path) -> int:
    import re

    found = re.findall(r"Saving checkpoint at (\d+) iterations", log_file.read_text())
    return int(found[-1]) if found else -1


def _summary(untrained: dict, trained: dict, iterations: int, timings: dict) -> str:
    lines = ["Learning check (same synthetic test images, AP in %):"]
    for key, label in (("bbox_mAP", "box AP"), ("segm_mAP", "mask AP")):
        cells = [f"{split} {100 * untrained[split][key]:.1f} -> {100 * trained[split][key]:.1f}"
                 for split in (*TEST_SPLITS, "overall")]
        lines.append(f"  {label:8s} untrained -> trained: " + ", ".join(cells))
    lines.append(f"  {iterations} training iterations; total {timings['total_s'] / 60:.1f} min "
                 f"(data {timings['data_s']:.0f} s, untrained eval {timings['eval_untrained_s']:.0f} s, "
                 f"train {timings['train_s']:.0f} s, trained eval {timings['eval_trained_s']:.0f} s, "
                 f"png {timings['png_s']:.0f} s)")
    return "\n".join(lines)


def _draw_predictions(config: Path, checkpoint: Path, data_root: Path, path: Path, per_split: int,
                      score_thr: float = 0.3, scale: int = 3) -> Path:
    """A grid: one row per test split, ``per_split`` images each; predicted masks tinted, boxes labelled with class and
    score (``score_thr`` and up, or the single best guess when none reaches it), the ground-truth class names written
    under each image."""
    import cv2
    import numpy as np
    from mmdet.apis import inference_detector, init_detector

    model = init_detector(str(config), str(checkpoint), device="cpu")
    classes = model.dataset_meta["classes"]
    palette = model.dataset_meta.get("palette") or [(255, 0, 0)] * len(classes)
    rows = []
    for split in TEST_SPLITS:
        coco = json.loads((data_root / "annotations" / f"xray_test_{split}.json").read_text())
        files = [str(data_root / split / image["file_name"]) for image in coco["images"][:per_split]]
        panels = []
        for index, (file, result) in enumerate(zip(files, inference_detector(model, files))):
            image = cv2.imread(file)  # BGR, as OpenCV draws
            pred = result.pred_instances
            keep = pred.scores >= score_thr
            if not keep.any() and len(pred.scores):  # nothing confident: show the best guess, score and all
                keep[int(pred.scores.argmax())] = True
            canvas = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST).astype(np.float32)
            colours = [tuple(float(c) for c in palette[int(label)][::-1]) for label in pred.labels[keep]]
            for mask, colour in zip(pred.masks[keep], colours):  # tint the predicted masks
                big = cv2.resize(mask.numpy().astype(np.uint8), None, fx=scale, fy=scale,
                                 interpolation=cv2.INTER_NEAREST).astype(bool)
                canvas[big] = 0.45 * canvas[big] + 0.55 * np.array(colour, np.float32)
            canvas = np.clip(canvas, 0, 255).astype(np.uint8)
            for box, label, score, colour in zip(pred.bboxes[keep], pred.labels[keep], pred.scores[keep], colours):
                x1, y1, x2, y2 = (int(round(float(v) * scale)) for v in box)
                cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 2)
                text = f"{classes[int(label)]} {float(score):.2f}"
                origin = (x1 + 2, max(12, y1 - 4))
                cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
                cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
            image_id = coco["images"][index]["id"]
            truth = ", ".join(classes[a["category_id"] - 1] for a in coco["annotations"] if a["image_id"] == image_id)
            canvas = np.pad(canvas, ((0, 18), (0, 0), (0, 0)), constant_values=255)
            cv2.putText(canvas, f"{split} | truth: {truth}", (4, canvas.shape[0] - 5), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4, (0, 0, 0), 1, cv2.LINE_AA)
            panels.append(np.pad(canvas, ((4, 4), (4, 4), (0, 0)), constant_values=255))
        rows.append(np.concatenate(panels, axis=1))
    cv2.imwrite(str(path), np.concatenate(rows, axis=0))
    return path


if __name__ == "__main__":
    run_xray_demo(sys.argv[1] if len(sys.argv) > 1 else "demo_out/xray",
                  minutes_budget=float(sys.argv[2]) if len(sys.argv) > 2 else 6.0)
