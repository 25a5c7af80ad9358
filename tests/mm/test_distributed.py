"""tools/train.py under torchrun with 2 CPU processes (gloo): one detection and one segmentation config train,
validate and write their checkpoint once.

mmengine 0.10.7's pytorch launcher calls torch.cuda.set_device; tools/_mm_entry.py joins the gloo group itself on a
machine without CUDA, wraps the model without device_ids and swaps SyncBN for BN (see prepare_cpu_distributed).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from mm_cycle import CONFIGS, REPO, shrink_config

CASES = {
    "det": ("det/retinanet_biformer-mini_fpn_coco-synth.py", (96, 64), "epoch_1.pth", r"coco/bbox_mAP: [0-9.]+"),
    # mmseg's FPN config asks for SyncBN in its head: the CPU path must replace it.
    "seg": ("seg/fpn_poolformer-s12_8xb4-40k_ade20k-512x512.py", (64, 64), "iter_2.pth", r"mIoU: [0-9.]+"),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_two_cpu_processes_train_and_checkpoint_once(kind, coco_synth, ade_synth, tmp_path):
    config, scale, checkpoint, metric = CASES[kind]
    path = shrink_config(CONFIGS / config, ade_synth if kind == "seg" else coco_synth, tmp_path, image_scale=scale)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "tools/train.py"), str(path), "--launcher", "pytorch", "--work-dir", str(tmp_path / "work")]
    # the limit only ends a hung run: ~50 s per case on a loaded 2-core machine, a CPU-heavy job beside can triple it
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "Distributed training: True" in output
    assert re.search(metric, output), output[-3000:]
    work = tmp_path / "work"
    assert sorted(p.name for p in work.glob("*.pth")) == [checkpoint]  # one checkpoint, written by rank 0 only
    assert len(re.findall(r"Saving checkpoint at", output)) == 1
    assert (work / "last_checkpoint").read_text().strip().endswith(checkpoint)
    if kind == "seg":
        assert "SyncBN replaced by BN" in output
