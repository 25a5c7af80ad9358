"""Finding cards: the directories they are read from, the cached table of every card, and lookups by name."""

from __future__ import annotations

import fnmatch
import os
from functools import lru_cache
from pathlib import Path

from .schema import TASK_SPECS, TASKS, Card, CardError, UnknownModelError, load_card_file

PACKAGE_CARD_DIR = Path(__file__).parent  # zoo/cards/*.yaml, next to this package's modules
CARD_PATH_ENV = "ZOO_CARD_PATH"


def card_dirs() -> tuple[Path, ...]:
    """Where cards are read from: the package's ``zoo/cards`` then each ``ZOO_CARD_PATH`` entry."""
    extra = [Path(p) for p in os.environ.get(CARD_PATH_ENV, "").split(os.pathsep) if p]
    return (PACKAGE_CARD_DIR, *extra)


@lru_cache(maxsize=8)
def _load_cards(dirs: tuple[Path, ...], stamp: tuple) -> dict[str, Card]:
    cards: dict[str, Card] = {}
    for directory in dirs:
        for path in sorted(directory.glob("*.yaml")):
            card = load_card_file(path)
            if card.name in cards:
                raise CardError(f"{path}: field 'name': '{card.name}' is already defined by {cards[card.name].path}")
            cards[card.name] = card
    return cards


def _all_cards() -> dict[str, Card]:
    dirs = card_dirs()
    # The stamp (file names and modification times) makes an edited or added card visible without a restart; the
    # task specs are part of it, so registering or removing a task reloads the cards too.
    stamp = tuple((p.name, p.stat().st_mtime_ns) for d in dirs if d.is_dir() for p in sorted(d.glob("*.yaml")))
    return _load_cards(dirs, (stamp, tuple(TASK_SPECS.values())))


def list_cards(pattern: str = "*", task: str | None = None) -> list[str]:
    """Names of the cards matching the shell-style ``pattern`` (fnmatch), of ``task`` when given, sorted."""
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
    return sorted(name for name, card in _all_cards().items()
                  if fnmatch.fnmatchcase(name, pattern) and (task is None or card.task == task))


def has_card(name: str) -> bool:
    return name in _all_cards()


def get_card(name: str) -> Card:
    """The card called ``name``; an unknown name raises UnknownModelError (a KeyError) suggesting close names."""
    cards = _all_cards()
    if name not in cards:
        raise UnknownModelError("model card", name, cards)
    return cards[name]


def render_card(name: str) -> str:
    """The card as a Markdown model card in the Hugging Face hub README style, by its task's renderer."""
    card = get_card(name)
    return card.spec.render(card, card.spec)
