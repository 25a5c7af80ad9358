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

Task heads (``task`` other than ``classification``) describe a whole detector, segmentor or forgery model instead of
a timm model. Their name is any card name (not a timm name); ``params_m``, ``gflops``, ``input_size``, ``mean`` and
``std`` become optional, and one more section is required::

    task: xray                      # optional, default classification; one of TASKS: classification, xray,
                                    # detection, segmentation, forgery (`zoo list --task` filters on it)
    detector:                       # required for xray / detection / segmentation, not allowed otherwise
      config: xray/cascade-mask-rcnn_r101_fpn-sdanet_1x_pidray.py   # a shipped config (zoo.shipped.config_path)
      architecture: "Cascade Mask R-CNN, FPN + SDANet"             # text
      backbone: "ResNet-101 (torchvision ImageNet weights)"        # text
      backbone_card: null           # the zoo card of the backbone (e.g. biformer_small), or null when it has none
      dataset: pidray               # the dataset the config trains on
      key_mapping: heads.xray.selective_attention.convert_official_sdanet_checkpoint
                                    # module.function that turns an official checkpoint's state dict into the
                                    # config's keys, or null when the official keys load as they are
    forgery:                        # required for forgery, not allowed otherwise
      head: npr                     # the heads.forgery model: fakereasoning, univfd or npr
      encoder_branches:             # one text per image-encoder branch (at least one)
        - "ResNet-50 on neighbouring-pixel residuals"
      language_model: null          # text naming the LM (FakeReasoning), or null
      training_data: "ForenSynths ProGAN, 4 classes"               # what the paper trained on
      key_mapping: null             # as for detectors

    metrics:                        # every task: entries may also carry
      - ...
        split: easy                 # optional: the test split (PIDray easy / hard / hidden / overall)
        generator: progan           # optional: the generator whose images are the fakes (forgery)

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
    "TASKS",
    "Card",
    "CardError",
    "Checkpoint",
    "DetectorSpec",
    "ForgerySpec",
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
_DOTTED_FUNCTION = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")

CLASSIFICATION = "classification"
DETECTOR_TASKS = ("xray", "detection", "segmentation")  # cards of these tasks carry a `detector` section
FORGERY_TASK = "forgery"
TASKS = (CLASSIFICATION, *DETECTOR_TASKS, FORGERY_TASK)
FORGERY_HEADS = ("fakereasoning", "univfd", "npr")


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
        from .shipped import config_path

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
    """One model card (see the module docstring for the YAML schema)."""

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
    detector: DetectorSpec | None = None
    forgery: ForgerySpec | None = None

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


_COMMON_REQUIRED = {"name", "family", "paper", "official_repo", "license", "metrics", "checkpoints"}
_MODEL_STATS = {"params_m", "gflops", "input_size", "mean", "std"}  # required for classification, else optional
_CARD_OPTIONAL = {"notes", "model_kwargs", "task"}
_DETECTOR_FIELDS = {"config", "architecture", "backbone", "backbone_card", "dataset", "key_mapping"}
_FORGERY_FIELDS = {"head", "encoder_branches", "language_model", "training_data", "key_mapping"}


def _task_of(raw: Any, check: _Checker) -> str:
    task = raw.get("task", CLASSIFICATION) if isinstance(raw, dict) else CLASSIFICATION
    if task not in TASKS:
        raise check.fail("task", f"{task!r} is not one of {', '.join(TASKS)}")
    return task


def _optional_text(check: _Checker, value: Any, where: str, pattern=None, hint: str = "") -> str | None:
    return None if value is None else check.text(value, where, pattern, hint)


def _detector_spec(check: _Checker, raw: Any) -> DetectorSpec:
    from .shipped import config_path

    raw = check.mapping(raw, "detector", _DETECTOR_FIELDS)
    spec = DetectorSpec(
        config=check.text(raw["config"], "detector.config"),
        architecture=check.text(raw["architecture"], "detector.architecture"),
        backbone=check.text(raw["backbone"], "detector.backbone"),
        backbone_card=_optional_text(check, raw["backbone_card"], "detector.backbone_card"),
        dataset=check.text(raw["dataset"], "detector.dataset"),
        key_mapping=_optional_text(check, raw["key_mapping"], "detector.key_mapping", _DOTTED_FUNCTION,
                                   "a dotted module.function name (or null)"),
    )
    try:
        config_path(spec.config)
    except FileNotFoundError as err:
        raise check.fail("detector.config", str(err)) from err
    return spec


def _forgery_spec(check: _Checker, raw: Any) -> ForgerySpec:
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
        language_model=_optional_text(check, raw["language_model"], "forgery.language_model"),
        training_data=check.text(raw["training_data"], "forgery.training_data"),
        key_mapping=_optional_text(check, raw["key_mapping"], "forgery.key_mapping", _DOTTED_FUNCTION,
                                   "a dotted module.function name (or null)"),
    )


def load_card_file(path: str | os.PathLike) -> Card:
    """Read and validate one card YAML; raises CardError naming the file and field on any schema break."""
    path = Path(path)
    check = _Checker(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise CardError(f"{path}: not valid YAML ({err})") from err
    task = _task_of(raw, check)
    if task == CLASSIFICATION:
        raw = check.mapping(raw, "", _COMMON_REQUIRED | _MODEL_STATS, _CARD_OPTIONAL)
    elif task in DETECTOR_TASKS:
        raw = check.mapping(raw, "", _COMMON_REQUIRED | {"detector"}, _CARD_OPTIONAL | _MODEL_STATS)
    else:
        raw = check.mapping(raw, "", _COMMON_REQUIRED | {"forgery"}, _CARD_OPTIONAL | _MODEL_STATS)

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
            task=check.text(item["task"], f"{where}.task", _TASK, "lower-case words joined by '-'"),
            dataset=check.text(item["dataset"], f"{where}.dataset"),
            metric=check.text(item["metric"], f"{where}.metric"),
            value=check.number(item["value"], f"{where}.value"),
            source=check.text(item["source"], f"{where}.source"),
            split=_optional_text(check, item.get("split"), f"{where}.split"),
            generator=_optional_text(check, item.get("generator"), f"{where}.generator"),
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

    def stat(key: str) -> float | None:
        return check.number(raw[key], key, positive=True) if raw.get(key) is not None or task == CLASSIFICATION \
            else None

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
        task=task,
        detector=_detector_spec(check, raw["detector"]) if task in DETECTOR_TASKS else None,
        forgery=_forgery_spec(check, raw["forgery"]) if task == FORGERY_TASK else None,
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


# ---------------------------------------------------------------------------------------------------- rendering


def _front_matter(license_id: str, tags: list[str], datasets: list[str], library: str = "timm") -> list[str]:
    lines = ["---", f"library_name: {library}", f"license: {license_id}", "tags:"]
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
    if card.detector is not None:
        return _render_detector(card)
    if card.forgery is not None:
        return _render_forgery(card)
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
    lines += _results_lines(card)
    if card.checkpoints:
        lines += _checkpoint_table(card)
        lines += [
            f"`zoo.load_checkpoint(model, '{card.name}')` fetches the first one into the torch hub cache, checks its",
            "sha256 when known, and loads it without executing pickled code.",
            "",
        ]
    if card.notes:
        lines += ["## Notes", "", card.notes, ""]
    return "\n".join(lines)


def _results_lines(card: Card) -> list[str]:
    """The Results table; split / generator columns appear when some number has one."""
    if not card.metrics:
        return ["## Results", "", "No published numbers for this model (see the notes).", ""]
    extra = [key for key in ("split", "generator") if any(getattr(m, key) for m in card.metrics)]
    header = ["task", "dataset", *extra, "metric", "value", "source"]
    lines = ["## Results", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in card.metrics:
        cells = [m.task, m.dataset, *(getattr(m, key) or "-" for key in extra), m.metric, str(m.value), m.source]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _checkpoint_table(card: Card) -> list[str]:
    lines = ["## Checkpoints", "", "| url | sha256 | note |", "|---|---|---|"]
    return lines + [f"| {c.url} | {c.sha256 or 'unknown'} | {c.note} |" for c in card.checkpoints] + [""]


def _stats_lines(card: Card) -> list[str]:
    stats = []
    if card.params_m is not None:
        stats.append(f"  - Params (M): {card.params_m:g}")
    if card.gflops is not None:
        stats.append(f"  - GMACs: {card.gflops:g}")
    if card.input_size is not None:
        stats.append(f"  - Image size: {card.input_size[1]} x {card.input_size[2]}")
    return ["- **Model Stats:**", *stats] if stats else []


def _header_lines(card: Card, library: str, tags: list[str], what: str) -> list[str]:
    lines = _front_matter(card.license, tags, sorted({m.dataset for m in card.metrics}), library)
    return lines + [
        f"# Model card for {card.name}",
        "",
        f"{what}, from \"{card.paper.title}\" ([arXiv:{card.paper.arxiv}]({card.paper.url})).",
        "",
        "## Model Details",
    ]


def _key_mapping_text(key_mapping: str | None) -> str:
    if key_mapping:
        return f"rename them with `{key_mapping}(state_dict)` before loading"
    return "load as they are (no key mapping)"


def _render_detector(card: Card) -> str:
    spec = card.detector
    try:
        config = str(spec.config_file)
    except FileNotFoundError as err:  # the card was valid when loaded; say what went missing since
        config = f"{spec.config} (not found: {err})"
    from .shipped import tools_dir

    kinds = {"xray": "X-ray prohibited-item detector", "detection": "Object detector", "segmentation": "Segmentor"}
    lines = _header_lines(card, "mmdet" if card.task != "segmentation" else "mmsegmentation",
                          [card.task, "openmmlab", "attnzoo", card.family],
                          {"xray": "An X-ray prohibited-item detector", "detection": "An object detector",
                           "segmentation": "A segmentor"}[card.task])
    backbone = spec.backbone + (f" (zoo card `{spec.backbone_card}`: `zoo card {spec.backbone_card}`)"
                                if spec.backbone_card else " (no zoo card)")
    lines += [
        f"- **Model Type:** {kinds[card.task]}: {spec.architecture}",
        f"- **Backbone:** {backbone}",
        f"- **Dataset:** {spec.dataset}",
        f"- **Config:** `{spec.config}` (this install: {config})",
        f"- **Official checkpoint keys:** {_key_mapping_text(spec.key_mapping)}",
        *_stats_lines(card),
        f"- **Papers:**\n  - {card.paper.title}: {card.paper.url}",
        f"- **Original:** {card.official_repo}",
        f"- **License:** {card.license}",
        "",
        "## Model Usage",
        "",
        "```bash",
        *([f"zoo xray detect {card.name} CHECKPOINT bags/ --out predictions/  # the card name stands for its config"]
          if card.task == "xray" else []),
        f"python {tools_dir()}/train.py {config}",
        f"python {tools_dir()}/test.py {config} CHECKPOINT",
        "```",
        "",
    ]
    lines += _results_lines(card)
    if card.checkpoints:
        lines += _checkpoint_table(card)
    if card.notes:
        lines += ["## Notes", "", card.notes, ""]
    return "\n".join(lines)


def _render_forgery(card: Card) -> str:
    spec = card.forgery
    lines = _header_lines(card, "attnzoo", ["image-forgery-detection", "attnzoo", card.family],
                          f"A generated-image detector ({spec.head})")
    lines += [
        "- **Model Type:** Real-vs-generated image classifier" +
        (" with reasoning text (language model)" if spec.language_model else ""),
        "- **Encoder branches:**",
        *[f"  - {branch}" for branch in spec.encoder_branches],
        f"- **Language model:** {spec.language_model or 'none'}",
        f"- **Training data (paper):** {spec.training_data}",
        f"- **Official checkpoint keys:** {_key_mapping_text(spec.key_mapping)}",
        *_stats_lines(card),
        f"- **Papers:**\n  - {card.paper.title}: {card.paper.url}",
        f"- **Original:** {card.official_repo}",
        f"- **License:** {card.license}",
        "",
        "## Model Usage",
        "",
        "```bash",
        "zoo forgery check RUN images/ --json  # RUN: a trained run folder; one JSON line per image with p_fake",
        "```",
        "",
    ]
    lines += _results_lines(card)
    if card.checkpoints:
        lines += _checkpoint_table(card)
    if card.notes:
        lines += ["## Notes", "", card.notes, ""]
    return "\n".join(lines)
