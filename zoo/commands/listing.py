"""``zoo list [PATTERN] [--task TASK]``: the zoo's models as tables.

Classification models (timm names): name, family, live params, card GFLOPs and top-1. Task-head cards (X-ray
detectors, forgery models, ...): name, task, family, what they are built from (the task spec's ``built_from``, see
``attnzoo.cards``), and the paper's headline numbers. Every task in ``attnzoo.cards.TASKS`` is listed, none by name here.
Without ``--task`` both tables are printed (the second only when a task-head card matches).
"""

from __future__ import annotations

import argparse

import torch

from ..errors import UserError


def _live_params_m(name: str, model_kwargs: dict) -> float:
    import timm

    # The meta device allocates nothing, so counting a large model's parameters is instant.
    with torch.device("meta"):
        model = timm.create_model(name, **model_kwargs)
    return sum(p.numel() for p in model.parameters()) / 1e6


def _classification_table(pattern: str):
    from rich.table import Table

    from ..cards import get_card, has_card
    from ..models import family_of, list_models

    names = list_models(pattern)
    if not names:
        return None
    table = Table(title=f"attnzoo classification models matching '{pattern}'")
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
    return table


def headline(card) -> str:
    """The paper's summary numbers of a task-head card: the overall / unsplit metrics, else how many it has."""
    summary = [m for m in card.metrics
               if (m.split in (None, "overall")) and (m.generator in (None, "mean", "average", "overall"))]
    if summary:
        # as the card writes it: 61.0, not 61; the dataset is named when the summary spans more than one
        named = len({m.dataset for m in summary[:3]}) > 1
        return ", ".join(f"{m.dataset + ' ' if named else ''}{m.metric} {m.value}" for m in summary[:3])
    if card.metrics:
        return f"{len(card.metrics)} per-split numbers (`zoo card {card.name}`)"
    return "no paper numbers"


def _task_table(pattern: str, tasks: list[str]):
    from rich.table import Table

    from ..cards import get_card, list_cards

    found = {task: list_cards(pattern, task=task) for task in tasks}
    names = [name for task in tasks for name in found[task]]
    if not names:
        return None
    shown = ", ".join(task for task in tasks if found[task])
    table = Table(title=f"attnzoo task models ({shown}) matching '{pattern}'")
    table.add_column("name", no_wrap=True, min_width=max(map(len, names)))
    for column in ("task", "family", "built from", "paper (card)"):
        table.add_column(column)
    for name in names:
        card = get_card(name)
        table.add_row(name, card.task, card.family, card.spec.built_from(card), headline(card))
    return table


def run(args: argparse.Namespace) -> int:
    from ..cards import CLASSIFICATION, TASKS
    from ..tasks.demo import wide_console

    other_tasks = [t for t in TASKS if t != CLASSIFICATION]
    tables = []
    if args.task in (None, CLASSIFICATION):
        tables.append(_classification_table(args.pattern))
    if args.task != CLASSIFICATION:
        tables.append(_task_table(args.pattern, [args.task] if args.task else other_tasks))
    tables = [t for t in tables if t is not None]
    if not tables:
        what = f"no {args.task} model" if args.task else "no model"
        raise UserError(f"{what} matches '{args.pattern}' (`zoo list` shows every model; tasks: {', '.join(TASKS)})")
    console = wide_console()
    for table in tables:
        console.print(table)
    return 0


def register(commands) -> None:
    from ..cards import TASKS

    listing = commands.add_parser("list", help="tables of the zoo's models (classification, X-ray, forgery, ...)")
    listing.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern, e.g. 'focalnet*'")
    listing.add_argument("--task", choices=TASKS, help="only this task's models (default: every task)")
    listing.set_defaults(run=run)
