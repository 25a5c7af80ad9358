"""Inference throughput (images/s) of a config's model on synthetic batches, post-processing included.

    python tools/analysis/benchmark_throughput.py configs/det/retinanet_biformer-s_fpn_1x_coco.py --device cuda \
        --shape 800 1280 --batch 1 --iters 50 [--amp]

Random weights (pretrained loading is off), eval mode, ``mode='predict'`` (NMS / resizing of the segmentation map
included) unless ``--mode tensor``. Times ``--iters`` batches after ``--warmup`` ones, synchronising CUDA. Compare
numbers only within one run on one machine; report the device with them.
"""

from __future__ import annotations

import argparse
import json
import os.path as osp
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _config_model import build_model, data_samples  # noqa: E402


def benchmark(config: str, height: int, width: int, batch: int = 1, iters: int = 20, warmup: int = 5,
              device: str = "cpu", amp: bool = False, mode: str = "predict", cfg_options: dict | None = None) -> dict:
    model, scope = build_model(config, cfg_options, device=device)
    images = torch.randn(batch, 3, height, width, device=device)
    samples = data_samples(scope, batch, height, width)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.float16, enabled=amp)
    with torch.no_grad(), autocast:
        for _ in range(warmup):
            model(images, samples, mode=mode)
        sync()
        start = time.perf_counter()
        for _ in range(iters):
            model(images, samples, mode=mode)
        sync()
        elapsed = time.perf_counter() - start
    device_name = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"
    return dict(config=config, device=device_name, input_shape=[batch, 3, height, width], amp=amp, mode=mode,
                ms_per_batch=round(1000 * elapsed / iters, 2), images_per_s=round(batch * iters / elapsed, 2))


def main(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--shape", type=int, nargs=2, default=(800, 1280), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="float16 autocast")
    parser.add_argument("--mode", choices=["predict", "tensor"], default="predict")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys, key=value")
    args = parser.parse_args(argv)
    result = benchmark(args.config, *args.shape, batch=args.batch, iters=args.iters, warmup=args.warmup,
                       device=args.device, amp=args.amp, mode=args.mode, cfg_options=args.cfg_options)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
