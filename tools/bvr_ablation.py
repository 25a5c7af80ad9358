"""RetinaNet vs RetinaNet + BVR (RelationNet++) on the synthetic COCO-format set: same data, seed and schedule.

Trains configs/bvr/retinanet_r18-mini_fpn_coco-synth.py and configs/bvr/retinanet-bvr_r18-mini_fpn_coco-synth.py
with tools/train.py (one process each, seed 0), evaluates each on the val split after the last epoch (COCO bbox mAP)
and prints one line per model. Makes the data with tools/make_coco_det.py when DATA does not exist.

    python tools/bvr_ablation.py --data data/coco_synth_bvr --work-dir work_dirs/bvr_ablation [--epochs 24]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "retinanet": REPO / "configs/bvr/retinanet_r18-mini_fpn_coco-synth.py",
    "retinanet+bvr": REPO / "configs/bvr/retinanet-bvr_r18-mini_fpn_coco-synth.py",
}
MAP = re.compile(r"coco/bbox_mAP: ([0-9.]+)\s+coco/bbox_mAP_50: ([0-9.]+)")


def data_options(root: Path) -> list[str]:
    root_s = f"{root}/"
    ann = f"{root}/annotations/instances_val2017.json"
    return [f"data_root={root_s}", f"train_dataloader.dataset.data_root={root_s}",
            f"val_dataloader.dataset.data_root={root_s}", f"test_dataloader.dataset.data_root={root_s}",
            f"val_evaluator.ann_file={ann}", f"test_evaluator.ann_file={ann}"]


def main(argv=None) -> dict[str, tuple[float, float, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "data/coco_synth_bvr")
    parser.add_argument("--work-dir", type=Path, default=REPO / "work_dirs/bvr_ablation")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--num-train", type=int, default=64)
    parser.add_argument("--num-val", type=int, default=16)
    args = parser.parse_args(argv)
    if not args.data.exists():
        subprocess.run([sys.executable, str(REPO / "tools/make_coco_det.py"), str(args.data), "--num-train",
                        str(args.num_train), "--num-val", str(args.num_val), "--height", "96", "--width", "128"],
                       check=True)
    results = {}
    for name, config in CONFIGS.items():
        options = [*data_options(args.data), f"train_cfg.max_epochs={args.epochs}",
                   f"train_cfg.val_interval={args.epochs}", "randomness.seed=0",
                   f"default_hooks.checkpoint.interval={args.epochs}",
                   f"param_scheduler.1.end={args.epochs}"]
        start = time.time()
        run = subprocess.run([sys.executable, str(REPO / "tools/train.py"), str(config), "--work-dir",
                              str(args.work_dir / name.replace("+", "_")), "--cfg-options", *options],
                             capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        found = MAP.findall(run.stdout + run.stderr)
        if run.returncode or not found:
            sys.stderr.write((run.stdout + run.stderr)[-4000:])
            raise SystemExit(f"{name}: training failed (exit {run.returncode})")
        results[name] = (float(found[-1][0]), float(found[-1][1]), time.time() - start)
        print(f"{name:14s} bbox_mAP {results[name][0]:.3f}  AP50 {results[name][1]:.3f}  "
              f"({args.epochs} epochs, {results[name][2] / 60:.1f} min)", flush=True)
    return results


if __name__ == "__main__":
    main()
