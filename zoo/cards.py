"""Model cards: one YAML file per model in ``zoo/cards/<timm_name>.yaml``, validated when loaded.

A card states what the zoo knows about a model from outside the code: the paper, the official repository, the
numbers the authors report, and where the official weights live. Every field below is checked on load; a bad card
raises :class:`CardError` naming the file and the field. The live model is checked against the card by
``tests/zoo/test_cards.py`` (parameter count within 0.5%).

Schema (YAML keys; all required unless marked optional)::

    name: poolformer_s12            # the timm model name; must equal the file's stem
    family: poolformer              # family name (lower case), groups models in `zoo list`
    paper:
      title: "MetaFormer Is Actually What You Need for Vision"
      arxiv: "2111.11418"           # arXiv id (NNNN.NNNNN), no URL
    official_repo: https://github.com/sail-sg/poolformer
    license: apache-2.0             # SPDX-style id, as on the Hugging Face hub
    params_m: 11.9                  # parameters in millions, for the model as built with model_kwargs
    gflops: 1.8                     # GMACs at input_size (what papers call "GFLOPs"); see zoo/flops.py
    input_size: [3, 224, 224]       # [channels, height, width] the numbers below refer to
    mean: [0.485, 0.456, 0.406]     # per-channel normalisation, one value per input channel
    std: [0.229, 0.224, 0.225]
    metrics:                        # reported numbers; may be an empty list
      - task: image-classification  # lower-case words joined by "-"
        dataset: imagenet-1k
        metric: top1                # e.g. top1, top5, box_ap, mask_ap, miou
        value: 77.2                 # a number, in the unit the source uses (percent for top1)
        source: "paper, Table 2"    # where the number comes from: paper table, README, model zoo page
    checkpoints:                    # official weights; may be an empty list
      - url: https://github.com/.../poolformer_s12.pth.tar
        sha256: null                # 64 hex digits, or null when not known
        note: "official ImageNet-1k weights (official key layout; zoo.load_checkpoint converts it)"
    notes: |                        # optional free text: known differences, caveats
      ...
    model_kwargs: {}                # optional: keyword arguments for timm.create_model that the checkpoints need

``zoo.load_checkpoint(model, "<name>")`` uses the first checkpoint, verifying its sha256 when the card gives one.
Cards are read from ``zoo/cards/`` and from the directories in the ``ZOO_CARD_PATH`` environment variable
(``os.pathsep``-separated), so private cards can live outside the package; a name defined twice is an error.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Card",
    "CardError",
    "Checkpoint",
    "Metric",
    "Paper",
    "UnknownModelError",
    "card_dirs",
    "get_card",
    "list_cards",
    "render_card",
    "suggest_names",
]

PACKAGE_CARD_DIR = Path(__file__).parent / "cards"
CARD_PATH_ENV = "ZOO_CARD_PATH"

_ARXIV_ID = re.compile(r"^\d{4}\.\d{4,5}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TASK = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class CardError(ValueError):
    """A card file breaks the schema; the message names the file and the field."""


class UnknownModelError(KeyError):
    """A model or card name that nothing knows; the message suggests close names."""

    def __init__(self, kind: str, name: str, candidates: Iterable[str]):
        self.name = name
        self.suggestions = suggest_names(name, candidates)
        hint = f" Did you mean: {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown {kind} '{name}'.{hint} (`zoo list` shows every model)")

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


def suggest_names(name: str, candidates: Iterable[str], limit: int = 5) -> list[str]:
    """Up to ``limit`` names from ``candidates`` close to ``name`` (difflib), best first."""
    candidates = list(candidates)
    close = difflib.get_close_matches(name, candidates, n=limit, cutoff=0.6)
    if len(close) < limit:  # a prefix such as "biformer" should still find "biformer_tiny"
        close += [c for c in sorted(candidates) if c.startswith(name) and c not in close][: limit - len(close)]
    return close


@dataclass(frozen=True)
class Paper:
    title: str
    arxiv: str

    @property
    def url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}"


@dataclass(frozen=True)
class Metric:
    task: str
    dataset: str
    metric: str
    value: float
    source: str


@dataclass(frozen=True)
class Checkpoint:
    url: str
    sha256: str | None
    note: str


@dataclass(frozen=True)
class Card:
    """One model card (see the module docstring for the YAML schema)."""

    name: str
    family: str
    paper: Paper
    official_repo: str
    license: str
    params_m: float
    gflops: float
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    metrics: tuple[Metric, ...]
    checkpoints: tuple[Checkpoint, ...]
    notes: str = ""
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    def metric(self, metric: str, dataset: str | None = None) -> Metric | None:
        """The first reported metric called ``metric`` (optionally on ``dataset``), or None."""
        for m in self.metrics:
            if m.metric == metric and (dataset is None or m.dataset == dataset):
                return m
        return None

    @property
    def top1(self) -> float | None:
        found = self.metric("top1")
        return found.value if found else None


# --------------------------------------------------------------------------------------------------- validation


class _Checker:
    """Reads one YAML mapping, turning every schema break into a CardError naming file and field."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, problem: str) -> CardError:
        return CardError(f"{self.path}: field '{where}': {problem}")

    def mapping(self, value: Any, where: str, required: set[str], optional: set[str] = frozenset()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}")
        missing = sorted(required - value.keys())
        if missing:
            raise self.fail(f"{where}.{missing[0]}" if where else missing[0], "missing (required)")
        unknown = sorted(set(value) - required - set(optional))
        if unknown:
            allowed = ", ".join(sorted(required | set(optional)))
            name = f"{where}.{unknown[0]}" if where else str(unknown[0])
            raise self.fail(name, f"unknown field (allowed: {allowed})")
        return value

    def text(self, value: Any, where: str, pattern: re.Pattern | None = None, hint: str = "") -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"expected non-empty text, got {value!r}")
        if pattern is not None and not pattern.match(value):
            raise self.fail(where, f"{value!r} is not {hint}")
        return value

    def number(self, value: Any, where: str, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, f"expected a number, got {value!r}")
        if positive and not value > 0:
            raise self.fail(where, f"expected a positive number, got {value!r}")
        return float(value)

    def numbers(self, value: Any, where: str, length: int, integer: bool = False) -> tuple:
        if not isinstance(value, (list, tuple)) or len(value) != length:
            raise self.fail(where, f"expected a list of {length} numbers, got {value!r}")
        if integer:
            if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
                raise self.fail(where, f"expected positive integers, got {value!r}")
            return tuple(value)
        return tuple(self.number(v, f"{where}[{i}]") for i, v in enumerate(value))

    def items(self, value: Any, where: str) -> list:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list (may be empty), got {type(value).__name__}")
        return value


_CARD_REQUIRED = {
    "name", "family", "paper", "official_repo", "license", "params_m", "gflops",
    "input_size", "mean", "std", "metrics", "checkpoints",
}
_CARD_OPTIONAL = {"notes", "model_kwargs"}


def load_card_file(path: str | os.PathLike) -> Card:
    """Read and validate one card YAML; raises CardError naming the file and field on any schema break."""
    path = Path(path)
    check = _Checker(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise CardError(f"{path}: not valid YAML ({err})") from err
    raw = check.mapping(raw, "", _CARD_REQUIRED, _CARD_OPTIONAL)

    name = check.text(raw["name"], "name")
    if name != path.stem:
        raise check.fail("name", f"'{name}' must equal the file name '{path.stem}' (one card per model name)")
    family = check.text(raw["family"], "family", re.compile(r"^[a-z0-9_]+$"), "lower-case letters, digits and '_'")

    paper = check.mapping(raw["paper"], "paper", {"title", "arxiv"})
    arxiv = str(paper["arxiv"]) if isinstance(paper["arxiv"], (int, float)) else paper["arxiv"]
    paper = Paper(
        title=check.text(paper["title"], "paper.title"),
        arxiv=check.text(arxiv, "paper.arxiv", _ARXIV_ID, "an arXiv id like 2303.08810"),
    )
    repo = check.text(raw["official_repo"], "official_repo", re.compile(r"^https?://"), "an http(s) URL")
    license_id = check.text(raw["license"], "license")

    input_size = check.numbers(raw["input_size"], "input_size", 3, integer=True)
    mean = check.numbers(raw["mean"], "mean", input_size[0])
    std = check.numbers(raw["std"], "std", input_size[0])
    if not all(s > 0 for s in std):
        raise check.fail("std", f"every value must be positive, got {list(std)}")

    metrics = []
    for i, item in enumerate(check.items(raw["metrics"], "metrics")):
        where = f"metrics[{i}]"
        item = check.mapping(item, where, {"task", "dataset", "metric", "value", "source"})
        metrics.append(Metric(
            task=check.text(item["task"], f"{where}.task", _TASK, "lower-case words joined by '-'"),
            dataset=check.text(item["dataset"], f"{where}.dataset"),
            metric=check.text(item["metric"], f"{where}.metric"),
            value=check.number(item["value"], f"{where}.value"),
            source=check.text(item["source"], f"{where}.source"),
        ))

    checkpoints = []
    for i, item in enumerate(check.items(raw["checkpoints"], "checkpoints")):
        where = f"checkpoints[{i}]"
        item = check.mapping(item, where, {"url", "sha256", "note"})
        sha = item["sha256"]
        if sha is not None:
            sha = check.text(sha, f"{where}.sha256", _SHA256, "64 lower-case hex digits (or null)")
        checkpoints.append(Checkpoint(
            url=check.text(item["url"], f"{where}.url", re.compile(r"^(https?|file)://"), "an http(s):// or file:// URL"),
            sha256=sha,
            note=check.text(item["note"], f"{where}.note"),
        ))

    notes = raw.get("notes") or ""
    if not isinstance(notes, str):
        raise check.fail("notes", f"expected text, got {type(notes).__name__}")
    model_kwargs = raw.get("model_kwargs") or {}
    if not isinstance(model_kwargs, dict) or not all(isinstance(k, str) for k in model_kwargs):
        raise check.fail("model_kwargs", f"expected a mapping of argument names to values, got {model_kwargs!r}")

    return Card(
        name=name,
        family=family,
        paper=paper,
        official_repo=repo,
        license=license_id,
        params_m=check.number(raw["params_m"], "params_m", positive=True),
        gflops=check.number(raw["gflops"], "gflops", positive=True),
        input_size=input_size,
        mean=mean,
        std=std,
        metrics=tuple(metrics),
        checkpoints=tuple(checkpoints),
        notes=notes.strip(),
        model_kwargs=dict(model_kwargs),
        path=path,
    )


# ------------------------------------------------------------------------------------------------------- lookup


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
    # The stamp (file names and modification times) makes an edited or added card visible without a restart.
    stamp = tuple((p.name, p.stat().st_mtime_ns) for d in dirs if d.is_dir() for p in sorted(d.glob("*.yaml")))
    return _load_cards(dirs, stamp)


def list_cards(pattern: str = "*") -> list[str]:
    """Names of the cards matching the shell-style ``pattern`` (fnmatch), sorted."""
    return sorted(name for name in _all_cards() if fnmatch.fnmatchcase(name, pattern))


def has_card(name: str) -> bool:
    return name in _all_cards()


def get_card(name: str) -> Card:
    """The card called ``name``; an unknown name raises UnknownModelError (a KeyError) suggesting close names."""
    cards = _all_cards()
    if name not in cards:
        raise UnknownModelError("model card", name, cards)
    return cards[name]


# ---------------------------------------------------------------------------------------------------- rendering


def _front_matter(license_id: str, tags: list[str], datasets: list[str]) -> list[str]:
    lines = ["---", "library_name: timm", f"license: {license_id}", "tags:"]
    lines += [f"- {tag}" for tag in tags]
    if datasets:
        lines += ["datasets:"] + [f"- {d}" for d in datasets]
    return lines + ["---", ""]


def usage_lines(name: str, has_weights: bool) -> list[str]:
    """The "Model Usage" section shared by rendered cards and generated folder READMEs."""
    pretrained = "True" if has_weights else "False"
    return [
        "## Model Usage",
        "",
        "### Image classification",
        "```python",
        "import timm",
        "import torch",
        "import zoo  # registers the attnzoo families with timm",
        "",
        f"model = zoo.create_model('{name}', pretrained={pretrained}).eval()",
        "config = timm.data.resolve_data_config({}, model=model)",
        "transform = timm.data.create_transform(**config)",
        "with torch.no_grad():",
        "    probabilities = model(transform(image).unsqueeze(0)).softmax(-1)  # image: a PIL image",
        "```",
        "",
        "### Feature maps",
        "```python",
        f"backbone = timm.create_model('{name}', features_only=True)",
        "feature_maps = backbone(torch.randn(1, 3, 224, 224))",
        "```",
        "",
    ]


def render_card(name: str) -> str:
    """The card as a Markdown model card in the Hugging Face hub README style (YAML front matter, then sections)."""
    card = get_card(name)
    datasets = sorted({m.dataset for m in card.metrics})
    tags = ["image-classification", "timm", "attnzoo", card.family]
    h, w = card.input_size[1:]
    lines = _front_matter(card.license, tags, datasets)
    lines += [
        f"# Model card for {card.name}",
        "",
        f"A {card.family} model from \"{card.paper.title}\" ([arXiv:{card.paper.arxiv}]({card.paper.url})).",
        "",
        "## Model Details",
        "- **Model Type:** Image classification / feature backbone",
        "- **Model Stats:**",
        f"  - Params (M): {card.params_m:g}",
        f"  - GMACs: {card.gflops:g} (the \"GFLOPs\" papers report, at {h} x {w})",
        f"  - Image size: {h} x {w}",
        f"- **Preprocessing:** mean {list(card.mean)}, std {list(card.std)}",
        f"- **Papers:**\n  - {card.paper.title}: {card.paper.url}",
        f"- **Original:** {card.official_repo}",
        f"- **License:** {card.license}",
    ]
    if card.model_kwargs:
        lines.append(f"- **Model arguments for the checkpoints:** `{card.model_kwargs}`")
    lines.append("")
    lines += usage_lines(card.name, bool(card.checkpoints))
    if card.metrics:
        lines += ["## Results", "", "| task | dataset | metric | value | source |", "|---|---|---|---|---|"]
        lines += [f"| {m.task} | {m.dataset} | {m.metric} | {m.value:g} | {m.source} |" for m in card.metrics]
        lines.append("")
    if card.checkpoints:
        lines += ["## Checkpoints", "", "| url | sha256 | note |", "|---|---|---|"]
        lines += [f"| {c.url} | {c.sha256 or 'unknown'} | {c.note} |" for c in card.checkpoints]
        lines += [
            "",
            f"`zoo.load_checkpoint(model, '{card.name}')` fetches the first one into the torch hub cache, checks its",
            "sha256 when known, and loads it without executing pickled code.",
            "",
        ]
    if card.notes:
        lines += ["## Notes", "", card.notes, ""]
    return "\n".join(lines)
