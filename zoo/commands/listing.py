"""``zoo list [PATTERN]``: the zoo's models as a table (name, family, live params, card GFLOPs and top-1)."""

from __future__ import annotations

import argparse

import torch

from .errors import UserError


def _live_params_m(name: str, model_kwargs: dict) -> float:
    import timm

    # The meta device allocates nothing, so counting a large model's parameters is instant.
    with torch.device("meta"):
        model = timm.create_model(name, **model_kwargs)
    return sum(p.numel() for p in model.parameters()) / 1e6


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..cards import get_card, has_card
    from ..demo import wide_console
    from ..registry import family_of, list_models

    names = list_models(args.pattern)
    if not names:
        raise UserError(f"no model matches '{args.pattern}' (`zoo list` shows every model)")
    table = Table(title=f"attnzoo models matching '{args.pattern}'")
    table.add_column("name", no_wrap=True, min_width=max(map(len, names)))
    table.add_column("family", no_wrap=True)
    for column in ("params (M)", "GFLOPs (card)", "top-1 (card)"):
        table.add_column(column, justify="right")
    for name in names:
        card = get_card(name) if has_card(name) else None
        params = _live_params_m(name, card.model_kwargs if card else {})
        gflops = f"{card.gflops:g}" if card else "-"
        top1 = f"{card.top1:g}" if card and card.top1 is not None else "-"
        table.add_row(name, family_of(name), f"{params:.2f}", gflops, top1)
    wide_console().print(table)
    return 0


def register(commands) -> None:
    listing = commands.add_parser("list", help="table of the zoo's models (name, family, params, GFLOPs, top-1)")
    listing.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern, e.g. 'focalnet*'")
    listing.set_defaults(run=run)
