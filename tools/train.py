"""Train a detector or segmentor from an OpenMMLab config (mmengine Runner).

    python tools/train.py configs/det/retinanet_biformer-s_fpn_1x_coco.py [--work-dir DIR] [--amp] [--resume [CKPT]]
    torchrun --nproc_per_node 8 tools/train.py CONFIG --launcher pytorch
"""

from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _mm_entry import add_common_args, build_runner, finish_distributed, load_config  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train with an OpenMMLab config (mmdet / mmseg)")
    parser.add_argument("config", help="config file path")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (AmpOptimWrapper, CUDA only)")
    parser.add_argument("--auto-scale-lr", action="store_true",
                        help="scale the lr by total batch size / the config's auto_scale_lr.base_batch_size")
    parser.add_argument("--resume", nargs="?", type=str, const="auto",
                        help="resume from CKPT, or with no value from the latest checkpoint in the work dir")
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args)

    if args.amp:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--amp needs a CUDA device (mmengine's AmpOptimWrapper); drop --amp on the CPU")
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.loss_scale = "dynamic"
    if args.auto_scale_lr:
        if "base_batch_size" not in cfg.get("auto_scale_lr", {}):
            raise SystemExit("--auto-scale-lr: the config has no auto_scale_lr.base_batch_size")
        cfg.auto_scale_lr.enable = True
    if args.resume == "auto":
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    runner = build_runner(cfg)
    runner.train()
    del runner  # its DDP wrapper holds the process group: released before finish_distributed destroys the group
    finish_distributed()


if __name__ == "__main__":
    main()
