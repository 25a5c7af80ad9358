"""Forgery metrics on hand-computed examples: accuracy split, AP, BLEU-1, ROUGE-L, CSS and the per-generator table."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("torchmetrics")
pytest.importorskip("nltk")  # ROUGE-L's Porter stemmer

from attnzoo.heads.forgery.metrics import (  # noqa: E402
    ForgeryRecord,
    accuracy_split,
    average_precision,
    bleu1,
    forgery_metrics_table,
    format_table,
    rouge_l,
)


def test_bleu1_by_hand():
    # 5 of 6 predicted unigrams appear in the reference (clipped counts: 'the' x2 allowed), same length -> BP = 1
    assert bleu1("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # all unigrams match but the prediction is short: BP = exp(1 - 6/2)
    assert bleu1("the cat", "the cat is on the mat") == pytest.approx(math.exp(-2.0))
    # clipping: 'the' x4 predicted, only 2 in the reference
    assert bleu1("the the the the", "the cat on the") == pytest.approx(2 / 4)


def test_rouge_l_by_hand():
    # stemming makes 'cats' == 'cat'; LCS = the cat on the mat (5): P = R = 5/6
    assert rouge_l("the cats sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # LCS 2: P = 1, R = 2/6 -> F = 2PR / (P + R) = 0.5
    assert rouge_l("the cat", "the cat is on the mat") == pytest.approx(0.5)
    assert rouge_l("edges", "lighting") == 0.0


def test_average_precision_by_hand():
    # ranked: 0.8 (fake) P=1, 0.4 (real), 0.35 (fake) P=2/3 -> AP = (1 + 2/3) / 2
    assert average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)
    assert average_precision([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8]) == pytest.approx(1.0)
    assert math.isnan(average_precision([1, 1], [0.3, 0.9]))  # one class only: undefined
    with pytest.raises(ValueError, match="0 \\(real\\) or 1"):
        average_precision([0, 2], [0.1, 0.2])


def test_accuracy_split_by_hand():
    real, fake, overall = accuracy_split([0, 0, 0, 1, 1], [0.1, 0.7, 0.2, 0.9, 0.5])
    assert (real, fake, overall) == pytest.approx((2 / 3, 1 / 2, 3 / 5))  # 0.5 is not > 0.5: called real


def test_table_per_generator_and_overall():
    records = [
        ForgeryRecord("sd", 0, 0.2, "the cat sat on the mat", "the cat is on the mat"),
        ForgeryRecord("sd", 1, 0.9, "the cat", "the cat is on the mat"),
        ForgeryRecord("gan", 0, 0.6),
        ForgeryRecord("gan", 1, 0.7, None, "edges"),
    ]
    table = forgery_metrics_table(records)
    assert list(table) == ["gan", "sd", "all", "mean"]
    assert table["sd"]["acc"] == 1.0 and table["sd"]["ap"] == 1.0
    assert table["sd"]["bleu1"] == pytest.approx((5 / 6 + math.exp(-2.0)) / 2)
    assert table["gan"]["acc_real"] == 0.0 and math.isnan(table["gan"]["bleu1"])  # no predicted text there
    assert table["all"]["n"] == 4 and table["all"]["acc"] == pytest.approx(3 / 4)
    assert table["mean"]["acc"] == pytest.approx((table["gan"]["acc"] + table["sd"]["acc"]) / 2)
    assert table["mean"]["bleu1"] == pytest.approx(table["sd"]["bleu1"])
    text = format_table(table)
    assert "| sd | 2 | 100.00 | 100.00 | 100.00 | 100.00 |" in text and text.count("\n") == 5


def test_css_is_cosine_of_clip_text_embeddings():
    open_clip = pytest.importorskip("open_clip")
    from attnzoo.heads.forgery.metrics import CLIPTextSimilarity
    from attnzoo.heads.forgery.tiny import tiny_open_clip_config

    torch.manual_seed(0)
    model = open_clip.CLIP(**tiny_open_clip_config())
    css = CLIPTextSimilarity(model, open_clip.get_tokenizer("ViT-L-14-336"))
    texts = ["the edges are jagged", "lighting is consistent"]
    same = css(texts, texts)
    torch.testing.assert_close(same, torch.ones(2))
    a = model.encode_text(open_clip.tokenize(texts[:1]))
    b = model.encode_text(open_clip.tokenize(texts[1:]))
    expected = torch.nn.functional.cosine_similarity(a, b).item()
    assert css(texts[:1], texts[1:]).item() == pytest.approx(expected, abs=1e-5)
    table = forgery_metrics_table([ForgeryRecord("g", 1, 0.9, texts[0], texts[0]), ForgeryRecord("g", 0, 0.1)], css)
    assert table["g"]["css"] == pytest.approx(1.0, abs=1e-5)
