"""Parameters and GFLOPs (GMACs, the papers' convention) of a config's model on one input size.

    python tools/analysis/get_flops.py configs/det/mask-rcnn_biformer-s_fpn_1x_coco.py --shape 800 1280
    python tools/analysis/get_flops.py configs/seg/upernet_biformer-s_8xb2-160k_ade20k-512x512.py --shape 512 2048

Counted with attnzoo.flops.count_gflops (torch's FlopCounterMode: convolutions and matrix products, attention included;
not norms, activations or the top-k routing), on the raw head outputs (no NMS / post-processing), with random
weights. The papers report detection FLOPs at 1280x800 and segmentation FLOPs at 512x2048.
"""

from __future__ import annotations

import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _config_model import TensorForward, build_model  # noqa: E402


def count(config: str, height: int, width: int, cfg_options: dict | None = None) -> dict:
    from attnzoo.flops import count_gflops

    model, scope = build_model(config, cfg_options)
    params = sum(p.numel() for p in model.parameters())
    backbone = sum(p.numel() for p in model.backbone.parameters()) if hasattr(model, "backbone") else None
    gflops = count_gflops(TensorForward(model, scope), input_size=(3, height, width))
    return dict(config=config, input_shape=[3, height, width], params_m=round(params / 1e6, 3),
                backbone_params_m=None if backbone is None else round(backbone / 1e6, 3), gflops=round(gflops, 2))


def main(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--shape", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="input height and width (default: 800 1280 for mmdet configs, 512 2048 for mmseg)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys, key=value")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    if args.shape is None:
        from mmengine.config import Config

        args.shape = (512, 2048) if Config.fromfile(args.config).default_scope == "mmseg" else (800, 1280)
    result = count(args.config, *args.shape, cfg_options=args.cfg_options)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"config:   {result['config']}\ninput:    {result['input_shape']}\n"
              f"params:   {result['params_m']:.2f} M (backbone {result['backbone_params_m']} M)\n"
              f"GFLOPs:   {result['gflops']:.1f} (multiply-adds, no post-processing)")
    return result


if __name__ == "__main__":
    main()
