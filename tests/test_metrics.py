"""Metrics: the article's report, computed by scikit-learn, named `{split}_{name}`."""

from __future__ import annotations

import pytest

from src.task.metrics import classification_metrics, greater_is_better, per_class_report, prefixed

GOLD = [0, 0, 0, 1, 1, 2]
PRED = [0, 0, 1, 1, 2, 2]


def test_accuracy_and_averages_match_hand_computation() -> None:
    m = classification_metrics(GOLD, PRED, 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # Per class: P = (1, 1/2, 1/2), R = (2/3, 1/2, 1), F1 = (4/5, 1/2, 2/3).
    assert m["macro_precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert m["macro_recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    # Single-label micro averages all equal accuracy.
    assert m["micro_precision"] == m["micro_recall"] == m["micro_f1"] == pytest.approx(4 / 6)


def test_a_class_never_predicted_counts_as_zero_not_an_error() -> None:
    m = classification_metrics([0, 1, 2], [0, 1, 1], 3)
    assert m["macro_recall"] == pytest.approx((1 + 1 + 0) / 3)
    assert m["macro_precision"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_per_class_report_names_every_label_with_support() -> None:
    text, report = per_class_report(GOLD, PRED, ["负向", "中性", "正向"])
    assert "负向" in text and "macro avg" in text
    assert report["负向"]["support"] == 3 and report["正向"]["recall"] == pytest.approx(1.0)


def test_metric_names_carry_their_split() -> None:
    named = prefixed(classification_metrics(GOLD, PRED, 3), "test")
    assert {
        "test_accuracy",
        "test_macro_f1",
        "test_weighted_recall",
        "test_micro_precision",
    } <= set(named)
    assert greater_is_better("eval_macro_f1") and not greater_is_better("eval_loss")
