"""``zoo card NAME``: print a model card as Markdown (YAML front matter first, as on the HF hub)."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from ..cards import render_card

    print(render_card(args.name))
    return 0


def register(commands) -> None:
    card = commands.add_parser("card", help="print a model card as Markdown")
    card.add_argument("name", help="model name, e.g. poolformer_s12")
    card.set_defaults(run=run)
