"""``zoo convert SRC DST``: write a checkpoint as a cleaned .safetensors and print its sha256."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from ..models import convert_checkpoint

    sha256 = convert_checkpoint(args.src, args.dst, args.model, trust_pickle=args.trust_pickle, use_ema=args.use_ema)
    print(f"{sha256}  {args.dst}")
    return 0


def register(commands) -> None:
    convert = commands.add_parser("convert", help="write a checkpoint as a cleaned .safetensors; prints its sha256")
    convert.add_argument("src", help="a .safetensors/.pth/.pt/.bin checkpoint")
    convert.add_argument("dst", help="the .safetensors file to write")
    convert.add_argument("--model", help="timm name: map the official layout to it and check that it fits exactly")
    convert.add_argument("--trust-pickle", action="store_true",
                         help="read a pickle that needs code to load (this RUNS that code: only for files you trust)")
    convert.add_argument("--use-ema", action="store_true", help="take the EMA weights of a training checkpoint")
    convert.set_defaults(run=run)
