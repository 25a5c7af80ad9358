"""How many attention heads MoH-ViT's routers really use, per stage, on a batch of images.

    python tools/analysis/moh_head_usage.py                       # the four released MoH-TransNeXt models
    python tools/analysis/moh_head_usage.py moh_transnext_base_50 --pretrained --batch 8

Without ``--pretrained`` the models have random weights (this machine cannot download the official ones) and the
images are random: the selection is still the router's own (shared heads + top-k routed heads per token), so the
fraction shows what the configuration makes every token use; with the released weights the per-head load column
shows how evenly the trained routers spread the tokens.
"""

from __future__ import annotations

import argparse
import os.path as osp
import sys

import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if osp.join(REPO_ROOT, "tools") not in sys.path:
    sys.path.insert(0, osp.join(REPO_ROOT, "tools"))
from _clone_import import make_attnzoo_importable  # noqa: E402

make_attnzoo_importable()

RELEASED = ("moh_transnext_small_80", "moh_transnext_small_75", "moh_transnext_base_75", "moh_transnext_base_50")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=list(RELEASED), help="MoH-TransNeXt model names")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--pretrained", action="store_true", help="the official weights (downloads them)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import attnzoo

    print(f"{'model':<24} {'stage':>5} {'configured':>10} {'measured':>9}  per-head load (share of tokens), min-max")
    for name in args.names:
        torch.manual_seed(args.seed)
        model = attnzoo.create_model(name, pretrained=args.pretrained).eval()
        images = torch.randn(args.batch, 3, args.img_size, args.img_size)
        for promised, used in zip(model.head_fractions(), model.measure_head_usage(images)):
            load = used["load"]
            print(f"{name:<24} {used['stage']:>5} {promised:>10.3f} {used['fraction']:>9.3f}  "
                  f"{min(load):.2f}-{max(load):.2f} over {len(load)} heads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
