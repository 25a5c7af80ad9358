"""Evaluate a checkpoint with an OpenMMLab config (mmengine Runner) and print the evaluator's metrics.

    python tools/test.py configs/det/retinanet_biformer-s_fpn_1x_coco.py work_dirs/.../epoch_12.pth
    torchrun --nproc_per_node 8 tools/test.py CONFIG CKPT --launcher pytorch

A checkpoint the zoo's reader refuses (a pickle that asks for code) or cannot read (empty, truncated, not a
checkpoint) ends the tool before the Runner starts, with one line ``test.py: error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _mm_entry import (  # noqa: E402
    add_common_args,
    build_runner,
    check_checkpoint,
    finish_distributed,
    load_config,
    one_error_line,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Test a checkpoint with an OpenMMLab config (mmdet / mmseg)")
    parser.add_argument("config", help="config file path")
    parser.add_argument("checkpoint", help="checkpoint file (a Runner checkpoint or a state dict)")
    parser.add_argument("--out", help="also dump the raw predictions to this .pkl file")
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args)
    check_checkpoint(args.checkpoint, "test.py")
    cfg.load_from = args.checkpoint
    if args.out is not None:
        if not args.out.endswith((".pkl", ".pickle")):
            raise SystemExit("--out must end with .pkl")
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        cfg.test_evaluator = [*evaluators, dict(type='DumpResults', out_file_path=args.out)]

    with one_error_line("test.py"):
        runner = build_runner(cfg)
        metrics = runner.test()
    if runner.rank == 0:
        # One "name: value" line per metric, whatever the logger prints.
        for name, value in metrics.items():
            print(f"{name}: {value}", flush=True)
    del runner  # its DDP wrapper holds the process group: released before finish_distributed destroys the group
    finish_distributed()
    return metrics


if __name__ == "__main__":
    main()
