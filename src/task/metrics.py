"""Metrics computed with scikit-learn: the article's report, multi-label and regression metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# scikit-learn and scipy load inside the functions: config checks read the metric names below
# before any data is read, and importing them costs seconds.

AVERAGES = ("micro", "macro", "weighted")
PRF = ("precision", "recall", "f1")
# The (unprefixed) names each function below returns: `optimized_metric` is checked against them
# before a run starts (tests/test_metrics.py keeps them equal to what the functions return).
CLASSIFICATION_METRICS = ("accuracy", *(f"{a}_{m}" for a in AVERAGES for m in PRF))
MULTILABEL_METRICS = ("subset_accuracy", *(f"{a}_{m}" for a in (*AVERAGES, "samples") for m in PRF))
REGRESSION_METRICS = ("mae", "rmse", "pearson", "spearman")

# Whether a larger value is better, for every metric name this module produces.
LOWER_IS_BETTER = {"loss", "mae", "rmse"}
# Candidate decision thresholds of multi-label classification, on the probability scale.
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n_labels: int
) -> dict[str, float]:
    """Accuracy and micro / macro / weighted precision, recall and F1 (unprefixed names)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels = list(range(n_labels))
    out: dict[str, float] = {"accuracy": float(accuracy_score(y_true, y_pred))}
    for avg in AVERAGES:
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=avg, zero_division=0
        )
        out[f"{avg}_precision"] = float(p)
        out[f"{avg}_recall"] = float(r)
        out[f"{avg}_f1"] = float(f)
    return out


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Subset accuracy and micro / macro / weighted / samples P, R, F1 of multi-hot arrays."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    out: dict[str, float] = {"subset_accuracy": float(accuracy_score(y_true, y_pred))}
    for avg in (*AVERAGES, "samples"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        out[f"{avg}_precision"] = float(p)
        out[f"{avg}_recall"] = float(r)
        out[f"{avg}_f1"] = float(f)
    return out


def best_threshold(y_true: np.ndarray, probs: np.ndarray) -> float:
    """The candidate threshold with the highest micro F1 (the smallest one among ties)."""
    from sklearn.metrics import f1_score

    scores = [f1_score(y_true, probs >= t, average="micro", zero_division=0) for t in THRESHOLDS]
    return float(THRESHOLDS[int(np.argmax(scores))])


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, and Pearson / Spearman correlation (NaN when either side is constant)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    constant = np.ptp(y_true) == 0 or np.ptp(y_pred) == 0
    return {
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
        "pearson": float("nan") if constant else float(pearsonr(y_true, y_pred)[0]),
        "spearman": float("nan") if constant else float(spearmanr(y_true, y_pred)[0]),
    }


def per_class_report(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, label_names: list[str]
) -> tuple[str, dict[str, Any]]:
    """sklearn's classification report, as the text the article prints and as a dict."""
    from sklearn.metrics import classification_report

    kwargs: dict[str, Any] = {
        "labels": list(range(len(label_names))),
        "target_names": label_names,
        "zero_division": 0,
        "digits": 4,
    }
    text = classification_report(y_true, y_pred, **kwargs)
    as_dict = classification_report(y_true, y_pred, output_dict=True, **kwargs)
    return str(text), dict(as_dict)


def prefixed(metrics: dict[str, float], split: str) -> dict[str, float]:
    """Name metrics `{split}_{name}`, e.g. `eval_macro_f1`, `test_accuracy`."""
    return {f"{split}_{k}": v for k, v in metrics.items()}


def greater_is_better(metric_name: str) -> bool:
    """Direction of a `{split}_{name}` metric, for picking the best epoch."""
    return not any(metric_name.endswith(name) for name in LOWER_IS_BETTER)
