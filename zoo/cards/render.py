"""Markdown renderers: a card as a Hugging Face hub style README (YAML front matter, then sections).

Each task's renderer is named by its ``TaskSpec.render`` and called as ``render(card, spec)``; it takes the library
name, tags, "Model Type" text, opening phrase and usage commands from the spec. The pieces every card shares (front
matter, header, results and checkpoint tables, notes) are here for a new task's renderer to reuse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .schema import Card, TaskSpec


def front_matter(license_id: str, tags: list[str], datasets: list[str], library: str = "timm") -> list[str]:
    lines = ["---", f"library_name: {library}", f"license: {license_id}", "tags:"]
    lines += [f"- {tag}" for tag in tags]
    if datasets:
        lines += ["datasets:"] + [f"- {d}" for d in datasets]
    return lines + ["---", ""]


def card_front_matter(card: Card, spec: TaskSpec) -> list[str]:
    """The front matter of ``card``: the spec's library and tags, then "attnzoo" and the family; the datasets."""
    return front_matter(card.license, [*spec.tags, "attnzoo", card.family], sorted({m.dataset for m in card.metrics}),
                        spec.library)


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
        "import attnzoo  # registers the attnzoo families with timm",
        "",
        f"model = attnzoo.create_model('{name}', pretrained={pretrained}).eval()",
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


def results_lines(card: Card) -> list[str]:
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


def checkpoint_table(card: Card) -> list[str]:
    lines = ["## Checkpoints", "", "| url | sha256 | note |", "|---|---|---|"]
    return lines + [f"| {c.url} | {c.sha256 or 'unknown'} | {c.note} |" for c in card.checkpoints] + [""]


def notes_lines(card: Card) -> list[str]:
    return ["## Notes", "", card.notes, ""] if card.notes else []


def closing_lines(card: Card) -> list[str]:
    """What every task-head card ends with: results, the checkpoint table, the notes."""
    return results_lines(card) + (checkpoint_table(card) if card.checkpoints else []) + notes_lines(card)


def stats_lines(card: Card) -> list[str]:
    """The optional "Model Stats" of a task-head card: only the stats it states."""
    stats = []
    if card.params_m is not None:
        stats.append(f"  - Params (M): {card.params_m:g}")
    if card.gflops is not None:
        stats.append(f"  - GMACs: {card.gflops:g}")
    if card.input_size is not None:
        stats.append(f"  - Image size: {card.input_size[1]} x {card.input_size[2]}")
    return ["- **Model Stats:**", *stats] if stats else []


def header_lines(card: Card, spec: TaskSpec) -> list[str]:
    """Front matter, title, the spec's opening phrase with the paper, and the "Model Details" heading."""
    return card_front_matter(card, spec) + [
        f"# Model card for {card.name}",
        "",
        f"{spec.summary.format(card=card)}, from \"{card.paper.title}\" ([arXiv:{card.paper.arxiv}]({card.paper.url})).",
        "",
        "## Model Details",
    ]


def source_lines(card: Card) -> list[str]:
    """Papers, original repository and license (the end of "Model Details")."""
    return [
        f"- **Papers:**\n  - {card.paper.title}: {card.paper.url}",
        f"- **Original:** {card.official_repo}",
        f"- **License:** {card.license}",
    ]


def command_lines(card: Card, spec: TaskSpec) -> list[str]:
    """The spec's usage commands, formatted for ``card``."""
    return [command.format(card=card) for command in spec.commands]


def key_mapping_text(key_mapping: str | None) -> str:
    if key_mapping:
        return f"rename them with `{key_mapping}(state_dict)` before loading"
    return "load as they are (no key mapping)"


# ------------------------------------------------------------------------------------------ the tasks' renderers


def render_classification(card: Card, spec: TaskSpec) -> str:
    """A timm classification model: stats, preprocessing, Python usage, results, checkpoints."""
    h, w = card.input_size[1:]
    lines = card_front_matter(card, spec)
    lines += [
        f"# Model card for {card.name}",
        "",
        f"{spec.summary.format(card=card)} from \"{card.paper.title}\" ([arXiv:{card.paper.arxiv}]({card.paper.url})).",
        "",
        "## Model Details",
        f"- **Model Type:** {spec.kind}",
        "- **Model Stats:**",
        f"  - Params (M): {card.params_m:g}",
        f"  - GMACs: {card.gflops:g} (the \"GFLOPs\" papers report, at {h} x {w})",
        f"  - Image size: {h} x {w}",
        f"- **Preprocessing:** mean {list(card.mean)}, std {list(card.std)}",
        *source_lines(card),
    ]
    if card.model_kwargs:
        lines.append(f"- **Model arguments for the checkpoints:** `{card.model_kwargs}`")
    lines.append("")
    lines += usage_lines(card.name, bool(card.checkpoints))
    lines += results_lines(card)
    if card.checkpoints:
        lines += checkpoint_table(card)
        lines += [
            f"`attnzoo.load_checkpoint(model, '{card.name}')` fetches the first one into the torch hub cache, checks its",
            "sha256 when known, and loads it without executing pickled code.",
            "",
        ]
    lines += notes_lines(card)
    return "\n".join(lines)


def render_detector(card: Card, spec: TaskSpec) -> str:
    """An OpenMMLab detector / segmentor (a ``detector`` section): config, backbone, train / test commands."""
    from ..shipped import tools_dir

    section = card.section
    try:
        config = str(section.config_file)
    except FileNotFoundError as err:  # the card was valid when loaded; say what went missing since
        config = f"{section.config} (not found: {err})"
    backbone = section.backbone + (f" (zoo card `{section.backbone_card}`: `zoo card {section.backbone_card}`)"
                                   if section.backbone_card else " (no zoo card)")
    lines = header_lines(card, spec)
    lines += [
        f"- **Model Type:** {spec.kind}: {section.architecture}",
        f"- **Backbone:** {backbone}",
        f"- **Dataset:** {section.dataset}",
        f"- **Config:** `{section.config}` (this install: {config})",
        f"- **Official checkpoint keys:** {key_mapping_text(section.key_mapping)}",
        *stats_lines(card),
        *source_lines(card),
        "",
        "## Model Usage",
        "",
        "```bash",
        *command_lines(card, spec),
        f"python {tools_dir()}/train.py {config}",
        f"python {tools_dir()}/test.py {config} CHECKPOINT",
        "```",
        "",
    ]
    return "\n".join(lines + closing_lines(card))


def render_forgery(card: Card, spec: TaskSpec) -> str:
    """A generated-image detector (a ``forgery`` section): encoder branches, language model, training data."""
    section = card.section
    lines = header_lines(card, spec)
    lines += [
        f"- **Model Type:** {spec.kind}" + (" with reasoning text (language model)" if section.language_model else ""),
        "- **Encoder branches:**",
        *[f"  - {branch}" for branch in section.encoder_branches],
        f"- **Language model:** {section.language_model or 'none'}",
        f"- **Training data (paper):** {section.training_data}",
        f"- **Official checkpoint keys:** {key_mapping_text(section.key_mapping)}",
        *stats_lines(card),
        *source_lines(card),
        "",
        "## Model Usage",
        "",
        "```bash",
        *command_lines(card, spec),
        "```",
        "",
    ]
    return "\n".join(lines + closing_lines(card))
