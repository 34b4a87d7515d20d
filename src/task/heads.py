"""Heads (`task=`): single-label classification, multi-label classification, regression.

A task says what the model is trained on (HF `problem_type`: cross-entropy, BCE on multi-hot
targets, MSE on one output), and how logits become metrics and predictions. Frames keep the
columns id, text, label; `label` holds a class index (single_label), a tuple of class indices
(multi_label) or a float (regression): src.task.labels reads them so, and the targets below
turn them into what the loss takes.

Heads may have more outputs than the task has labels (auxiliary classes of data.mix kept apart):
metrics and predictions only look at the task's own first outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from src.config.errors import UserError
from src.config.schema import DataConfig, TaskConfig
from src.task.metrics import (
    CLASSIFICATION_METRICS,
    MULTILABEL_METRICS,
    REGRESSION_METRICS,
    best_threshold,
    classification_metrics,
    multilabel_metrics,
    per_class_report,
    regression_metrics,
)

TASKS = ("single_label", "multi_label", "regression")
# What `metrics()` of each head returns, known before anything runs (optimized_metric checks).
TASK_METRICS = {
    "single_label": CLASSIFICATION_METRICS,
    "multi_label": (*MULTILABEL_METRICS, "threshold"),
    "regression": REGRESSION_METRICS,
}


def check_task(cfg: TaskConfig, data: DataConfig, has_loss: bool = True) -> None:
    """Reject unknown tasks, thresholds outside (0, 1), a default metric the task lacks, and a
    multi-label cell separator that cannot split.

    `has_loss`: whether validation also reports `eval_loss` (the Trainer does; the classical
    baseline does not).
    """
    if cfg.name not in TASKS:
        raise UserError(f"task.name={cfg.name!r} is not one of {', '.join(TASKS)}")
    if cfg.threshold is not None and not 0 < cfg.threshold < 1:
        raise UserError(f"task.threshold={cfg.threshold} must lie strictly between 0 and 1")
    check_metric_name("task.metric", cfg.metric, cfg.name, has_loss)
    if cfg.name == "multi_label" and not data.label_separator:
        raise UserError(
            "data.label_separator is empty: task=multi_label splits CSV / TSV label cells at it;"
            " use e.g. '|'"
        )


def produced_metrics(task: str, has_loss: bool = True) -> list[str]:
    """Every `eval_*` (per epoch) and `test_*` (final) metric a run of `task` logs."""
    names = TASK_METRICS[task]
    return [
        *(f"eval_{n}" for n in (*names, *(("loss",) if has_loss else ()))),
        *(f"test_{n}" for n in names),
    ]


def check_metric_name(key: str, metric: str, task: str, has_loss: bool = True) -> None:
    """A metric to optimise must be one the task produces: found now, not after an epoch."""
    produced = produced_metrics(task, has_loss)
    if metric in produced:
        return
    hint = f" (eval_{metric}?)" if f"eval_{metric}" in produced else ""
    raise UserError(
        f"{key}={metric}{hint} is not a metric of task={task}"
        f"{'' if has_loss else ' with the classical model (no eval_loss)'}; choose one of"
        f" {', '.join(produced)}"
    )


# Facts of a run a sweep may optimise besides its eval_* / test_* metrics.
RUN_OBJECTIVES = (
    "trainable_params",
    "total_params",
    "train_runtime",
    "train_samples_per_second",
    "test_samples_per_second",
)


def optimized_metric_names(optimized_metric: Any) -> list[str]:
    """The names in `optimized_metric`: one, or a list (a multi-objective sweep)."""
    if isinstance(optimized_metric, str):
        return [optimized_metric]
    return [str(name) for name in optimized_metric]


def check_optimized_metric(optimized_metric: Any, task: str, has_loss: bool = True) -> None:
    """Every name is a metric the task produces or a fact of the run; at most one eval_* (the
    best epoch is chosen by one validation metric)."""
    names = optimized_metric_names(optimized_metric)
    if not names:
        raise UserError("optimized_metric is empty: name at least one metric")
    for name in names:
        if name not in RUN_OBJECTIVES:
            check_metric_name("optimized_metric", name, task, has_loss)
    evals = [n for n in names if n.startswith("eval_")]
    if len(evals) > 1:
        raise UserError(
            f"optimized_metric names {', '.join(evals)}: the best epoch is chosen by one "
            "validation metric; keep one eval_* and use test_* names for the others"
        )


def selection_metric(optimized_metric: Any, default: str) -> str:
    """The validation metric that picks the best epoch and feeds the pruner: the eval_* one
    in `optimized_metric`, else the task's `default`."""
    names = optimized_metric_names(optimized_metric)
    return next((n for n in names if n.startswith("eval_")), default)


# --------------------------------------------------------------------------- heads


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function."""
    return 1 / (1 + np.exp(-logits))


@dataclass(frozen=True)
class SingleLabel:
    """One class per text: cross-entropy, argmax, the article's metrics."""

    label_names: list[str]
    name: ClassVar[str] = "single_label"
    problem_type: ClassVar[str] = "single_label_classification"
    calibrates: ClassVar[bool] = False  # whether `calibrated` learns anything from validation

    @property
    def outputs(self) -> int:
        return len(self.label_names)

    def targets(self, labels: Sequence[Any]) -> list[Any]:
        return [int(label) for label in labels]

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(np.asarray(logits, dtype=np.float64)[:, : self.outputs])

    def metrics(self, gold: Sequence[Any], logits: np.ndarray) -> dict[str, float]:
        pred = self.probabilities(logits).argmax(axis=-1)
        return classification_metrics(np.asarray(gold), pred, self.outputs)

    def report(self, gold: Sequence[Any], logits: np.ndarray) -> tuple[str, dict[str, Any]]:
        pred = self.probabilities(logits).argmax(axis=-1)
        return per_class_report(np.asarray(gold), pred, self.label_names)

    def calibrated(self, gold: Sequence[Any], logits: np.ndarray) -> SingleLabel:
        return self

    def answers(self, logits: np.ndarray) -> list[dict[str, Any]]:
        """Per text: the predicted label and every label's probability."""
        return [
            {
                "label": self.label_names[int(row.argmax())],
                "probabilities": dict(zip(self.label_names, row.tolist(), strict=True)),
            }
            for row in self.probabilities(logits)
        ]

    def predictions(self, frame: pd.DataFrame, logits: np.ndarray) -> pd.DataFrame:
        """Per text: id, gold and predicted label name, class probabilities."""
        probs = self.probabilities(logits)
        table = pd.DataFrame(
            {
                "id": frame["id"].to_numpy(),
                "gold": [self.label_names[i] for i in frame["label"]],
                "predicted": [self.label_names[i] for i in probs.argmax(axis=-1)],
            }
        )
        for i, label in enumerate(self.label_names):
            table[f"p_{label}"] = probs[:, i]
        return table


@dataclass(frozen=True)
class MultiLabel:
    """Any number of classes per text: BCE on multi-hot targets, one decision threshold."""

    label_names: list[str]
    threshold: float | None = None  # None: tuned on the scored data itself (validation)
    name: ClassVar[str] = "multi_label"
    problem_type: ClassVar[str] = "multi_label_classification"

    @property
    def outputs(self) -> int:
        return len(self.label_names)

    @property
    def calibrates(self) -> bool:
        return self.threshold is None

    def multi_hot(self, labels: Sequence[Any]) -> np.ndarray:
        hot = np.zeros((len(labels), self.outputs), dtype=np.float32)
        for row, indices in enumerate(labels):
            hot[row, list(indices)] = 1.0
        return hot

    def targets(self, labels: Sequence[Any]) -> list[Any]:
        return self.multi_hot(labels).tolist()

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(np.asarray(logits, dtype=np.float64)[:, : self.outputs])

    def decide(self, gold: Sequence[Any], logits: np.ndarray) -> tuple[np.ndarray, float]:
        """Predicted multi-hot rows and the threshold used (tuned here when none is set)."""
        probs = self.probabilities(logits)
        threshold = self.threshold
        if threshold is None:
            threshold = best_threshold(self.multi_hot(gold), probs)
        return (probs >= threshold).astype(int), threshold

    def metrics(self, gold: Sequence[Any], logits: np.ndarray) -> dict[str, float]:
        pred, threshold = self.decide(gold, logits)
        return multilabel_metrics(self.multi_hot(gold).astype(int), pred) | {"threshold": threshold}

    def report(self, gold: Sequence[Any], logits: np.ndarray) -> tuple[str, dict[str, Any]]:
        pred, _ = self.decide(gold, logits)
        return per_class_report(self.multi_hot(gold).astype(int), pred, self.label_names)

    def calibrated(self, gold: Sequence[Any], logits: np.ndarray) -> MultiLabel:
        """The task with its threshold fixed: the configured one, else tuned on these logits."""
        return replace(self, threshold=self.decide(gold, logits)[1])

    def answers(self, logits: np.ndarray) -> list[dict[str, Any]]:
        """Per text: the labels at or above the threshold (0.5 if none was tuned), probabilities."""
        threshold = 0.5 if self.threshold is None else self.threshold
        return [
            {
                "labels": [
                    name for name, p in zip(self.label_names, row, strict=True) if p >= threshold
                ],
                "probabilities": dict(zip(self.label_names, row.tolist(), strict=True)),
            }
            for row in self.probabilities(logits)
        ]

    def predictions(self, frame: pd.DataFrame, logits: np.ndarray) -> pd.DataFrame:
        """Per text: id, gold and predicted label names ("|"-joined), label probabilities."""
        pred, _ = self.decide(frame["label"].tolist(), logits)
        probs = self.probabilities(logits)
        table = pd.DataFrame(
            {
                "id": frame["id"].to_numpy(),
                "gold": ["|".join(self.label_names[i] for i in row) for row in frame["label"]],
                "predicted": [
                    "|".join(self.label_names[i] for i in np.flatnonzero(row)) for row in pred
                ],
            }
        )
        for i, label in enumerate(self.label_names):
            table[f"p_{label}"] = probs[:, i]
        return table


@dataclass(frozen=True)
class Regression:
    """A number per text: one output, MSE loss; MAE, RMSE, Pearson, Spearman."""

    label_names: list[str]  # one name: the label column's
    name: ClassVar[str] = "regression"
    problem_type: ClassVar[str] = "regression"
    calibrates: ClassVar[bool] = False

    @property
    def outputs(self) -> int:
        return 1

    def targets(self, labels: Sequence[Any]) -> list[Any]:
        return [float(label) for label in labels]

    def values(self, logits: np.ndarray) -> np.ndarray:
        return np.asarray(logits, dtype=np.float64).reshape(len(logits), -1)[:, 0]

    def metrics(self, gold: Sequence[Any], logits: np.ndarray) -> dict[str, float]:
        return regression_metrics(np.asarray(gold, dtype=np.float64), self.values(logits))

    def report(self, gold: Sequence[Any], logits: np.ndarray) -> None:
        return None

    def calibrated(self, gold: Sequence[Any], logits: np.ndarray) -> Regression:
        return self

    def answers(self, logits: np.ndarray) -> list[dict[str, Any]]:
        """Per text: the predicted value."""
        return [{"value": float(value)} for value in self.values(logits)]

    def predictions(self, frame: pd.DataFrame, logits: np.ndarray) -> pd.DataFrame:
        """Per text: id, gold and predicted value."""
        return pd.DataFrame(
            {
                "id": frame["id"].to_numpy(),
                "gold": frame["label"].to_numpy(dtype=np.float64),
                "predicted": self.values(logits),
            }
        )


Task = SingleLabel | MultiLabel | Regression


def make_task(cfg: TaskConfig, label_names: Sequence[str]) -> Task:
    """The head of `task.name` over the data's labels."""
    if cfg.name == "multi_label":
        return MultiLabel(list(label_names), cfg.threshold)
    if cfg.name == "regression":
        return Regression(list(label_names))
    return SingleLabel(list(label_names))
