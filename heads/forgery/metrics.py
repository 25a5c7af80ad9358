"""Forgery detection and reasoning metrics, per generator and overall, in one table.

Detection: accuracy on real images, on fake images and overall at a threshold on P(fake) (official
``forgery_eval/eval.py`` ``calculate_acc``, threshold 0.5), and average precision (non-interpolated, as sklearn's
``average_precision_score`` that UnivFD/NPR report; here torchmetrics ``binary_average_precision``).
Reasoning (official eval.py): per-sample BLEU-1 on whitespace tokens with brevity penalty (nltk ``sentence_bleu``
weights (1,0,0,0); here torchmetrics ``bleu_score(n_gram=1)`` on one pair), ROUGE-L F-measure with the Porter stemmer
(rouge-score; here torchmetrics ``rouge_score(use_stemmer=True)``), and CSS: cosine similarity of CLIP text
embeddings (official: openai clip-vit-large-patch14-336 text tower; here the same model through open_clip), each
averaged over the samples that have a predicted reasoning text.

Rows: one per generator, ``all`` (every record pooled) and ``mean`` (the average of the per-generator rows, as papers
report averages over test sets). torchmetrics / open_clip are imported inside the functions that use them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import torch

__all__ = [
    "CLIPTextSimilarity",
    "ForgeryRecord",
    "accuracy_split",
    "average_precision",
    "bleu1",
    "forgery_metrics_table",
    "format_table",
    "rouge_l",
]

COLUMNS = ("n", "acc_real", "acc_fake", "acc", "ap", "bleu1", "rouge_l", "css")


@dataclass
class ForgeryRecord:
    generator: str
    label: int  # 0 real, 1 fake
    probability_fake: float
    predicted_text: str | None = None  # the model's reasoning (inside <REASONING>), None when it gave none
    reference_text: str | None = None  # the annotation's reasoning


def _check_binary(labels: torch.Tensor, scores: torch.Tensor) -> None:
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels {tuple(labels.shape)} and scores {tuple(scores.shape)} must be equal-length vectors")
    if not torch.isin(labels, torch.tensor([0, 1])).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")


def accuracy_split(labels, probability_fake, threshold: float = 0.5) -> tuple[float, float, float]:
    """(accuracy on real, accuracy on fake, overall accuracy); prediction = P(fake) > threshold. NaN for an empty class."""
    labels = torch.as_tensor(labels).long()
    scores = torch.as_tensor(probability_fake, dtype=torch.float64)
    _check_binary(labels, scores)
    correct = ((scores > threshold).long() == labels).double()

    def mean(mask):
        return float(correct[mask].mean()) if mask.any() else math.nan

    return mean(labels == 0), mean(labels == 1), mean(torch.ones_like(labels, dtype=torch.bool))


def average_precision(labels, probability_fake) -> float:
    """AP with 'fake' as the positive class; NaN when only one class is present (AP is undefined there)."""
    from torchmetrics.functional.classification import binary_average_precision

    labels = torch.as_tensor(labels).long()
    scores = torch.as_tensor(probability_fake, dtype=torch.float64)
    _check_binary(labels, scores)
    if labels.min() == labels.max():
        return math.nan
    return float(binary_average_precision(scores, labels))


def bleu1(prediction: str, reference: str) -> float:
    """Sentence BLEU-1 (unigram precision x brevity penalty) on whitespace tokens."""
    from torchmetrics.functional.text import bleu_score

    return float(bleu_score([prediction], [[reference]], n_gram=1))


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure with Porter stemming (rouge-score's normalisation: lower case, alphanumeric tokens)."""
    from torchmetrics.functional.text import rouge_score

    return float(rouge_score(prediction, reference, rouge_keys="rougeL", use_stemmer=True)["rougeL_fmeasure"])


class CLIPTextSimilarity:
    """Cosine similarity of CLIP text embeddings (CSS) through open_clip.

    ``CLIPTextSimilarity.from_pretrained()`` is the paper's model (ViT-L-14-336, openai weights; downloads);
    tests pass a CLIP built from a config. Texts longer than the 77-token context are truncated, as the official
    ``CLIPProcessor(truncation=True)`` does.
    """

    def __init__(self, model, tokenizer=None, device: str = "cpu"):
        import open_clip

        self.model = model.to(device).eval()
        self.tokenizer = tokenizer or open_clip.get_tokenizer("ViT-L-14-336")
        self.device = device

    @classmethod
    def from_pretrained(cls, name: str = "ViT-L-14-336", pretrained: str = "openai", device: str = "cpu"):
        import open_clip

        model = open_clip.create_model(name, pretrained=pretrained)
        return cls(model, open_clip.get_tokenizer(name), device)

    @torch.no_grad()
    def __call__(self, predictions: list[str], references: list[str]) -> torch.Tensor:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions vs {len(references)} references")
        a = self.model.encode_text(self.tokenizer(predictions).to(self.device), normalize=True)
        b = self.model.encode_text(self.tokenizer(references).to(self.device), normalize=True)
        return (a * b).sum(-1).float().cpu()


def _row(records: list[ForgeryRecord], css: CLIPTextSimilarity | None, threshold: float) -> dict[str, float]:
    labels = [r.label for r in records]
    scores = [r.probability_fake for r in records]
    acc_real, acc_fake, acc = accuracy_split(labels, scores, threshold)
    row = {"n": len(records), "acc_real": acc_real, "acc_fake": acc_fake, "acc": acc,
           "ap": average_precision(labels, scores), "bleu1": math.nan, "rouge_l": math.nan, "css": math.nan}
    texts = [(r.predicted_text, r.reference_text) for r in records
             if r.predicted_text is not None and r.reference_text is not None]
    if texts:
        row["bleu1"] = sum(bleu1(p, ref) for p, ref in texts) / len(texts)
        row["rouge_l"] = sum(rouge_l(p, ref) for p, ref in texts) / len(texts)
        if css is not None:
            preds, refs = zip(*texts)
            row["css"] = float(css(list(preds), list(refs)).mean())
    return row


def forgery_metrics_table(records: list[ForgeryRecord], css: CLIPTextSimilarity | None = None,
                          threshold: float = 0.5) -> dict[str, dict[str, float]]:
    """{generator: row, ..., 'all': pooled row, 'mean': mean of generator rows}; rows keyed by ``COLUMNS``."""
    if not records:
        raise ValueError("no records to evaluate")
    by_generator: dict[str, list[ForgeryRecord]] = defaultdict(list)
    for record in records:
        by_generator[record.generator].append(record)
    table = {name: _row(group, css, threshold) for name, group in sorted(by_generator.items())}
    pooled = _row(records, css, threshold)
    mean = {"n": len(records)}
    for column in COLUMNS[1:]:
        values = [row[column] for row in table.values() if not math.isnan(row[column])]
        mean[column] = sum(values) / len(values) if values else math.nan
    table["all"] = pooled
    table["mean"] = mean
    return table


def format_table(table: dict[str, dict[str, float]]) -> str:
    """A Markdown table; accuracies and AP in percent, text metrics in [0, 1]."""
    header = "| generator | " + " | ".join(COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, row in table.items():
        cells = []
        for column in COLUMNS:
            value = row[column]
            if column == "n":
                cells.append(str(int(value)))
            elif isinstance(value, float) and math.isnan(value):
                cells.append("-")
            elif column in ("acc_real", "acc_fake", "acc", "ap"):
                cells.append(f"{100 * value:.2f}")
            else:
                cells.append(f"{value:.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
