"""The card schema: the dataclasses, the YAML checks, and ``TASK_SPECS``, the table of tasks a card can describe.

The YAML schema itself is described in the package docstring (``attnzoo.cards``). Everything that differs between tasks
lives in one :class:`TaskSpec` per task: the section its cards carry, whether they must state model stats, how the
section is parsed, how the card renders, and what ``zoo list`` prints in its "built from" column. ``TASKS``,
``DETECTOR_TASKS`` and ``load_card_file`` read the table, so a new task is one entry (plus its renderer).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ZooError
from .render import render_classification, render_detector, render_forgery

ARXIV_ID = re.compile(r"^\d{4}\.\d{4,5}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
TASK_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")  # metric tasks and task names: lower-case words joined by "-"
DOTTED_FUNCTION = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")

CLASSIFICATION = "classification"
FORGERY_TASK = "forgery"
FORGERY_HEADS = ("fakereasoning", "univfd", "npr")  # the attnzoo.heads.forgery models a forgery card may name

COMMON_REQUIRED = frozenset({"name", "family", "paper", "official_repo", "license", "metrics", "checkpoints"})
MODEL_STATS = frozenset({"params_m", "gflops", "input_size", "mean", "std"})  # required or optional per TaskSpec
CARD_OPTIONAL = frozenset({"notes", "model_kwargs", "task"})


class CardError(ValueError, ZooError):
    """A card file breaks the schema; the message names the file and the field."""


class UnknownModelError(KeyError, ZooError):
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


# ---------------------------------------------------------------------------------------------------- dataclasses


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
    split: str | None = None  # the test split the number is on (PIDray: easy, hard, hidden, overall)
    generator: str | None = None  # forgery: the generator whose images are the fakes


@dataclass(frozen=True)
class DetectorSpec:
    """A detector / segmentor card's ``detector`` section: which shipped config builds it, on what, from what."""

    config: str  # as written in the card; config_file resolves it
    architecture: str
    backbone: str
    backbone_card: str | None
    dataset: str
    key_mapping: str | None

    @property
    def config_file(self) -> Path:
        """The config as a file: a shipped config (zoo/.mim/configs installed, configs/ in a clone) or a path."""
        from ..shipped import config_path

        return config_path(self.config)


@dataclass(frozen=True)
class ForgerySpec:
    """A forgery model card's ``forgery`` section."""

    head: str
    encoder_branches: tuple[str, ...]
    language_model: str | None
    training_data: str
    key_mapping: str | None


@dataclass(frozen=True)
class Checkpoint:
    url: str
    sha256: str | None
    note: str


@dataclass(frozen=True)
class Card:
    """One model card (see the ``attnzoo.cards`` docstring for the YAML schema)."""

    name: str
    family: str
    paper: Paper
    official_repo: str
    license: str
    params_m: float | None  # None only on task-head cards that do not state it
    gflops: float | None
    input_size: tuple[int, int, int] | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    metrics: tuple[Metric, ...]
    checkpoints: tuple[Checkpoint, ...]
    notes: str = ""
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)
    task: str = CLASSIFICATION
    section: Any = None  # the task's own section as its TaskSpec.parse returned it; None when the task has none

    @property
    def spec(self) -> TaskSpec:
        """The card's task spec (TASK_SPECS[task])."""
        return TASK_SPECS[self.task]

    def _section_named(self, key: str) -> Any:
        spec = TASK_SPECS.get(self.task)
        return self.section if spec is not None and spec.section == key else None

    @property
    def detector(self) -> DetectorSpec | None:
        """The ``detector`` section (xray / detection / segmentation cards), else None."""
        return self._section_named("detector")

    @property
    def forgery(self) -> ForgerySpec | None:
        """The ``forgery`` section (forgery cards), else None."""
        return self._section_named("forgery")

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


class Checker:
    """Reads one YAML mapping, turning every schema break into a CardError naming file and field.

    A TaskSpec's ``parse`` gets one, with the raw section, and uses these methods to read it.
    """

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

    def optional_text(self, value: Any, where: str, pattern: re.Pattern | None = None, hint: str = "") -> str | None:
        return None if value is None else self.text(value, where, pattern, hint)

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


# ------------------------------------------------------------------------------------------------- task sections

_DETECTOR_FIELDS = {"config", "architecture", "backbone", "backbone_card", "dataset", "key_mapping"}
_FORGERY_FIELDS = {"head", "encoder_branches", "language_model", "training_data", "key_mapping"}
_KEY_MAPPING_HINT = "a dotted module.function name (or null)"


def parse_detector(check: Checker, raw: Any) -> DetectorSpec:
    from ..shipped import config_path

    raw = check.mapping(raw, "detector", _DETECTOR_FIELDS)
    spec = DetectorSpec(
        config=check.text(raw["config"], "detector.config"),
        architecture=check.text(raw["architecture"], "detector.architecture"),
        backbone=check.text(raw["backbone"], "detector.backbone"),
        backbone_card=check.optional_text(raw["backbone_card"], "detector.backbone_card"),
        dataset=check.text(raw["dataset"], "detector.dataset"),
        key_mapping=check.optional_text(raw["key_mapping"], "detector.key_mapping", DOTTED_FUNCTION,
                                        _KEY_MAPPING_HINT),
    )
    try:
        config_path(spec.config)
    except FileNotFoundError as err:
        raise check.fail("detector.config", str(err)) from err
    return spec


def parse_forgery(check: Checker, raw: Any) -> ForgerySpec:
    raw = check.mapping(raw, "forgery", _FORGERY_FIELDS)
    head = check.text(raw["head"], "forgery.head")
    if head not in FORGERY_HEADS:
        raise check.fail("forgery.head", f"{head!r} is not one of {', '.join(FORGERY_HEADS)}")
    branches = check.items(raw["encoder_branches"], "forgery.encoder_branches")
    if not branches:
        raise check.fail("forgery.encoder_branches", "expected at least one encoder branch")
    return ForgerySpec(
        head=head,
        encoder_branches=tuple(check.text(b, f"forgery.encoder_branches[{i}]") for i, b in enumerate(branches)),
        language_model=check.optional_text(raw["language_model"], "forgery.language_model"),
        training_data=check.text(raw["training_data"], "forgery.training_data"),
        key_mapping=check.optional_text(raw["key_mapping"], "forgery.key_mapping", DOTTED_FUNCTION,
                                        _KEY_MAPPING_HINT),
    )


def _short(text: str) -> str:
    """A section's text without its parenthesised detail: "ResNet-101 (torchvision weights)" -> "ResNet-101"."""
    return text.split(" (")[0]


def classification_built_from(card: Card) -> str:
    return f"timm {card.name}"


def detector_built_from(card: Card) -> str:
    return f"{_short(card.detector.backbone)}; {card.detector.config}"


def forgery_built_from(card: Card) -> str:
    built = " + ".join(_short(b) for b in card.forgery.encoder_branches)
    if card.forgery.language_model:
        built += f"; LM {_short(card.forgery.language_model)}"
    return built


# ------------------------------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class TaskSpec:
    """Everything the zoo needs to know about one task; one entry of TASK_SPECS.

    ``section`` and ``parse`` go together: a task with a section requires that YAML key on its cards (and no other
    task's cards may carry it); ``parse(checker, raw_section)`` returns the object stored as ``Card.section``.
    ``render(card, spec)`` returns the Markdown card (attnzoo.cards.render has the shared pieces). ``summary`` and each
    of ``commands`` are ``str.format``-ed with ``card=card``.
    """

    name: str  # the `task:` value; lower-case words joined by "-"
    section: str | None  # the YAML key of the task's own section, or None
    parse: Callable[[Checker, Any], Any] | None  # reads the raw section (None exactly when section is None)
    model_stats_required: bool  # params_m, gflops, input_size, mean, std required (else optional)
    render: Callable[[Card, TaskSpec], str]  # the Markdown model card
    library: str  # the front matter's library_name
    tags: tuple[str, ...]  # the front matter's first tags ("attnzoo" and the family follow)
    kind: str  # the "Model Type" line
    summary: str  # the card's opening phrase, e.g. "An object detector"
    built_from: Callable[[Card], str]  # `zoo list`'s "built from" column
    commands: tuple[str, ...] = ()  # shell commands shown first under "Model Usage"

    def __post_init__(self):
        if not TASK_NAME.match(self.name):
            raise ValueError(f"task name {self.name!r} is not lower-case words joined by '-'")
        if (self.section is None) != (self.parse is None):
            raise ValueError(f"task {self.name!r}: section and parse go together (both set or both None)")
        if self.section in COMMON_REQUIRED | MODEL_STATS | CARD_OPTIONAL:
            raise ValueError(f"task {self.name!r}: section {self.section!r} is a common card field")


def _detector_task(name: str, library: str, kind: str, summary: str, commands: tuple[str, ...] = ()) -> TaskSpec:
    return TaskSpec(name=name, section="detector", parse=parse_detector, model_stats_required=False,
                    render=render_detector, library=library, tags=(name, "openmmlab"), kind=kind,
                    summary=summary, built_from=detector_built_from, commands=commands)


TASK_SPECS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec(name=CLASSIFICATION, section=None, parse=None, model_stats_required=True,
             render=render_classification, library="timm", tags=("image-classification", "timm"),
             kind="Image classification / feature backbone", summary="A {card.family} model",
             built_from=classification_built_from),
    _detector_task("xray", "mmdet", "X-ray prohibited-item detector", "An X-ray prohibited-item detector",
                   ("zoo xray detect {card.name} CHECKPOINT bags/ --out predictions/  # the card name stands for "
                    "its config",)),
    _detector_task("detection", "mmdet", "Object detector", "An object detector"),
    _detector_task("segmentation", "mmsegmentation", "Segmentor", "A segmentor"),
    TaskSpec(name=FORGERY_TASK, section="forgery", parse=parse_forgery, model_stats_required=False,
             render=render_forgery, library="attnzoo", tags=("image-forgery-detection",),
             kind="Real-vs-generated image classifier", summary="A generated-image detector ({card.forgery.head})",
             built_from=forgery_built_from,
             commands=("zoo forgery check FORGERY_RUN images/ --json  # FORGERY_RUN: a tools/forgery_train.py "
                       "--out folder; one JSON line per image with p_fake",)),
)}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to TASK_SPECS (a new task at run time); remove it again with ``TASK_SPECS.pop(spec.name)``."""
    if spec.name in TASK_SPECS:
        raise ValueError(f"task {spec.name!r} is already registered")
    TASK_SPECS[spec.name] = spec
    return spec


class TaskNames(Sequence[str]):
    """A live, read-only tuple-like view of the task names in TASK_SPECS (table order), optionally only those whose
    section is ``section``: a task registered later shows up in it."""

    _ALL = object()

    def __init__(self, section: Any = _ALL):
        self._section = section

    def _names(self) -> tuple[str, ...]:
        return tuple(name for name, spec in TASK_SPECS.items()
                     if self._section is TaskNames._ALL or spec.section == self._section)

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and not isinstance(other, str) and self._names() == tuple(other)

    __hash__ = None

    def __repr__(self) -> str:
        return repr(self._names())


TASKS = TaskNames()  # every task, classification first
DETECTOR_TASKS = TaskNames("detector")  # the tasks whose cards carry a `detector` section


# ----------------------------------------------------------------------------------------------------- one card


def _task_of(raw: Any, check: Checker) -> TaskSpec:
    task = raw.get("task", CLASSIFICATION) if isinstance(raw, dict) else CLASSIFICATION
    if task not in TASK_SPECS:
        raise check.fail("task", f"{task!r} is not one of {', '.join(TASKS)}")
    return TASK_SPECS[task]


def load_card_file(path: str | os.PathLike) -> Card:
    """Read and validate one card YAML; raises CardError naming the file and field on any schema break."""
    path = Path(path)
    check = Checker(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise CardError(f"{path}: not valid YAML ({err})") from err
    spec = _task_of(raw, check)
    required = set(COMMON_REQUIRED) | ({spec.section} if spec.section else set())
    stats = MODEL_STATS if spec.model_stats_required else frozenset()
    raw = check.mapping(raw, "", required | stats, CARD_OPTIONAL | (MODEL_STATS - stats))

    name = check.text(raw["name"], "name")
    if name != path.stem:
        raise check.fail("name", f"'{name}' must equal the file name '{path.stem}' (one card per model name)")
    family = check.text(raw["family"], "family", re.compile(r"^[a-z0-9_]+$"), "lower-case letters, digits and '_'")

    paper = check.mapping(raw["paper"], "paper", {"title", "arxiv"})
    arxiv = str(paper["arxiv"]) if isinstance(paper["arxiv"], (int, float)) else paper["arxiv"]
    paper = Paper(
        title=check.text(paper["title"], "paper.title"),
        arxiv=check.text(arxiv, "paper.arxiv", ARXIV_ID, "an arXiv id like 2303.08810"),
    )
    repo = check.text(raw["official_repo"], "official_repo", re.compile(r"^https?://"), "an http(s) URL")
    license_id = check.text(raw["license"], "license")

    input_size = mean = std = None
    if "input_size" in raw:
        input_size = check.numbers(raw["input_size"], "input_size", 3, integer=True)
    if "mean" in raw or "std" in raw:
        if input_size is None:
            raise check.fail("input_size", "missing (mean and std need it: one value per input channel)")
        mean = check.numbers(raw.get("mean"), "mean", input_size[0])
        std = check.numbers(raw.get("std"), "std", input_size[0])
        if not all(s > 0 for s in std):
            raise check.fail("std", f"every value must be positive, got {list(std)}")

    metrics = []
    for i, item in enumerate(check.items(raw["metrics"], "metrics")):
        where = f"metrics[{i}]"
        item = check.mapping(item, where, {"task", "dataset", "metric", "value", "source"}, {"split", "generator"})
        metrics.append(Metric(
            task=check.text(item["task"], f"{where}.task", TASK_NAME, "lower-case words joined by '-'"),
            dataset=check.text(item["dataset"], f"{where}.dataset"),
            metric=check.text(item["metric"], f"{where}.metric"),
            value=check.number(item["value"], f"{where}.value"),
            source=check.text(item["source"], f"{where}.source"),
            split=check.optional_text(item.get("split"), f"{where}.split"),
            generator=check.optional_text(item.get("generator"), f"{where}.generator"),
        ))

    checkpoints = []
    for i, item in enumerate(check.items(raw["checkpoints"], "checkpoints")):
        where = f"checkpoints[{i}]"
        item = check.mapping(item, where, {"url", "sha256", "note"})
        sha = item["sha256"]
        if sha is not None:
            sha = check.text(sha, f"{where}.sha256", SHA256, "64 lower-case hex digits (or null)")
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

    def stat(key: str) -> float | None:
        if raw.get(key) is None and not spec.model_stats_required:
            return None
        return check.number(raw[key], key, positive=True)

    return Card(
        name=name,
        family=family,
        paper=paper,
        official_repo=repo,
        license=license_id,
        params_m=stat("params_m"),
        gflops=stat("gflops"),
        input_size=input_size,
        mean=mean,
        std=std,
        metrics=tuple(metrics),
        checkpoints=tuple(checkpoints),
        notes=notes.strip(),
        model_kwargs=dict(model_kwargs),
        path=path,
        task=spec.name,
        section=spec.parse(check, raw[spec.section]) if spec.section else None,
    )
