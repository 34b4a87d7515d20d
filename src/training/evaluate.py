"""Evaluation of a trained model: per-epoch validation scores, the threshold a task calibrates,
the test split's metrics, report, confusion matrix and predictions. Pure: the caller logs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from src.inputs.long_text import Encoded
from src.task.heads import SingleLabel, Task, optimized_metric_names
from src.task.metrics import prefixed
from src.training.inference import predict_logits

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

EVAL_BATCH = 64  # texts per batch when the exported model scores validation and test


@dataclass(frozen=True, eq=False)  # eq: frames and figures have no truth value
class TestOutcome:
    """What the test split says about a model: `test_*` metrics and the artifacts behind them."""

    metrics: dict[str, float]
    report: tuple[str, dict[str, Any]] | None  # the classification report, text and JSON
    confusion: Figure | None  # single-label tasks
    predictions: pd.DataFrame  # per text: id, gold, predicted, probabilities


def validation_score(
    task: Task, valid: Encoded, frame: pd.DataFrame
) -> Callable[[np.ndarray], dict[str, float]]:
    """Metrics per validation text from the logits of its inputs (windows aggregated)."""
    gold = frame.label.tolist()
    return lambda logits: task.metrics(gold, valid.aggregate(logits))


def calibrate(
    task: Task,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    valid: Encoded,
    frame: pd.DataFrame,
) -> Task:
    """Fix from the final model's validation logits what decisions depend on (a threshold)."""
    if not task.calibrates:
        return task
    logits, _ = predict_logits(model, tokenizer, valid.inputs, batch_size=EVAL_BATCH)
    return task.calibrated(frame.label.tolist(), valid.aggregate(logits))


def best_epoch_metrics(
    best_metric: float | None, best_epoch: int | None, metric: str
) -> dict[str, float]:
    """The best epoch and its value of the optimised metric."""
    out: dict[str, float] = {}
    if best_metric is not None:
        out[f"best_{metric}"] = best_metric
    if best_epoch is not None:
        out["best_epoch"] = best_epoch
    return out


def test_logits(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, test: Encoded
) -> tuple[np.ndarray, float]:
    """Logits per test text (windows aggregated) and texts per second."""
    logits, inputs_per_second = predict_logits(model, tokenizer, test.inputs, EVAL_BATCH)
    return test.aggregate(logits), inputs_per_second / test.inputs_per_text


def test_outcome(task: Task, frame: pd.DataFrame, logits: np.ndarray) -> TestOutcome:
    """Metrics, report, confusion matrix and predictions of the test split's logits."""
    from src.training.figures import confusion_matrix_figure

    gold = frame.label.tolist()
    confusion = None
    if isinstance(task, SingleLabel):
        pred = task.probabilities(logits).argmax(axis=-1)
        confusion = confusion_matrix_figure(np.asarray(gold), pred, task.label_names)
    return TestOutcome(
        metrics=prefixed(task.metrics(gold, logits), "test"),
        report=task.report(gold, logits),
        confusion=confusion,
        predictions=task.predictions(frame, logits),
    )


def optimized_value(metrics: dict[str, float], optimized_metric: Any) -> float | list[float]:
    """The value a sweeper optimises (one per name for a list); fails loudly if the run did
    not produce it."""
    values = []
    for name in optimized_metric_names(optimized_metric):
        key = f"best_{name}" if name.startswith("eval_") else name
        if key not in metrics:
            raise RuntimeError(f"optimized_metric={name} was not produced; got {sorted(metrics)}")
        values.append(float(metrics[key]))
    return values[0] if len(values) == 1 else values
