"""Heads (`task=`): single-label classification, multi-label classification, regression.

A task says what the label column holds, what the model is trained on (HF `problem_type`:
cross-entropy, BCE on multi-hot targets, MSE on one output), and how logits become metrics and
predictions. Frames keep the columns id, text, label; `label` holds a class index
(single_label), a tuple of class indices (multi_label) or a float (regression).

Heads may have more outputs than the task has labels (auxiliary classes of data.mix kept apart):
metrics and predictions only look at the task's own first outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from src.config.schema import DataConfig, TaskConfig
from src.data.sources import (
    Splits,
    _ids,
    _is_missing,
    _require_columns,
    _texts,
    apply_exclusions,
    check_config,
    load_splits,
    read_table,
)
from src.data.streams import Stream, rng
from src.errors import UserError
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
_SPLIT_STREAMS = {"test": Stream.task_test_split, "valid": Stream.task_valid_split}
_CAP_STREAMS = {
    "train": Stream.task_cap_train,
    "valid": Stream.task_cap_valid,
    "test": Stream.task_cap_test,
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


# --------------------------------------------------------------------------- data


def load_task_splits(task: TaskConfig, cfg: DataConfig, seed: int) -> Splits:
    """The splits with labels as the task needs them (src.data.sources for single_label)."""
    if task.name == "single_label":
        return load_splits(cfg, seed)
    check_config(cfg)
    wanted = "numeric" if task.name == "regression" else "multi-label (lists of)"
    if cfg.name != "custom":
        raise UserError(
            f"task={task.name} needs {wanted} labels, but data={cfg.name} has single class"
            f" labels: use data=custom with a label column of {wanted} labels"
        )
    if not cfg.train_path:
        raise UserError("data=custom needs a training file: set data.train_path=<file>")
    paths = {"train": str(cfg.train_path)}
    paths.update({s: str(p) for s, p in (("valid", cfg.valid_path), ("test", cfg.test_path)) if p})
    raw = {split: _read_rows(cfg, split, path) for split, path in paths.items()}
    if task.name == "regression":
        names = [cfg.label_column]
        frames = {s: f.assign(label=_numbers(f, paths[s], cfg)) for s, f in raw.items()}
    else:
        lists = {s: _label_lists(f, cfg) for s, f in raw.items()}
        names = _multi_label_names(lists, paths, cfg)
        indices = {s: [tuple(sorted(names.index(x) for x in row)) for row in lists[s]] for s in raw}
        frames = {s: f.assign(label=pd.Series(indices[s], index=f.index)) for s, f in raw.items()}
    train = frames["train"]
    for split in ("test", "valid"):
        if split not in frames:
            fraction = cfg.test_fraction if split == "test" else cfg.valid_fraction
            if split == "valid" and "test" not in paths:  # a fraction of what the test split left
                fraction /= 1 - cfg.test_fraction
            train, frames[split] = random_split(train, fraction, seed, _SPLIT_STREAMS[split])
    frames["train"] = train
    kept = apply_exclusions(Splits(**frames, label_names=names, source=paths["train"]), cfg)
    caps = {"train": cfg.max_train, "valid": cfg.max_eval, "test": cfg.max_test}
    capped = {s: random_cap(f, caps[s], seed, _CAP_STREAMS[s]) for s, f in kept.frames().items()}
    return Splits(**capped, label_names=names, source=paths["train"])


def _read_rows(cfg: DataConfig, split: str, path: str) -> pd.DataFrame:
    """id, text and the raw label column of one file, with its line / item numbers as index."""
    frame = read_table(path, str_columns=[c for c in (cfg.text_column, cfg.id_column) if c])
    if frame.empty:
        raise UserError(f"{path}: no rows, so the {split} split would be empty; check the file")
    _require_columns(frame, cfg, path)
    return pd.DataFrame(
        {
            "id": _ids(frame, cfg, split, path),
            "text": _texts(frame, cfg.text_column, path),
            "label": frame[cfg.label_column].to_numpy(),
        },
        index=frame.index,
    )


def _numbers(frame: pd.DataFrame, path: str, cfg: DataConfig) -> list[float]:
    """The label column as floats; one line naming the first non-numeric label otherwise."""
    out = []
    for row, value in frame["label"].items():
        number = _number(value)
        if number is None:
            raise UserError(
                f"{path}: task=regression needs numeric labels, found {value!r} in column"
                f" {cfg.label_column!r} at {frame.index.name} {row}"
            )
        out.append(number)
    return out


def _number(value: Any) -> float | None:
    """A finite number given as a number or a numeric string; None for anything else."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | str | np.number):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if np.isfinite(number) else None


def _label_lists(frame: pd.DataFrame, cfg: DataConfig) -> list[list[str]]:
    """Each row's labels: a JSON list, or a string split at data.label_separator."""
    out = []
    for value in frame["label"]:
        if isinstance(value, list | tuple | np.ndarray):
            labels = [str(v) for v in value]
        elif _is_missing(value):
            labels = []
        else:
            labels = [part.strip() for part in str(value).split(cfg.label_separator)]
        out.append(sorted({label for label in labels if label}))
    return out


def _multi_label_names(
    lists: dict[str, list[list[str]]], paths: dict[str, str], cfg: DataConfig
) -> list[str]:
    """data.label_names, else the sorted labels of the training file; other labels are errors."""
    train = sorted({label for row in lists["train"] for label in row})
    names = [str(n) for n in cfg.label_names] if cfg.label_names is not None else train
    if len(names) < 2:
        raise UserError(
            f"{paths['train']}: task=multi_label needs at least 2 labels, found {names}"
        )
    for split, rows in lists.items():
        unknown = sorted({label for row in rows for label in row} - set(names))
        if unknown:
            raise UserError(
                f"{paths[split]}: labels {unknown} are not among the labels {names}"
                f" ({'data.label_names' if cfg.label_names else 'those of the training file'})"
            )
    return names


def random_split(
    df: pd.DataFrame, fraction: float, seed: int, stream: Stream
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded split into (rest, part) with `fraction` of the rows (at least 1) in part."""
    k = max(1, round(len(df) * fraction))
    if k >= len(df):
        raise UserError(
            f"{len(df)} training rows are too few to split off a validation and a test split;"
            " provide data.valid_path and data.test_path"
        )
    take = np.zeros(len(df), dtype=bool)
    take[rng(seed, stream).permutation(len(df))[:k]] = True
    return df[~take].reset_index(drop=True), df[take].reset_index(drop=True)


def random_cap(df: pd.DataFrame, cap: int | None, seed: int, stream: Stream) -> pd.DataFrame:
    """At most `cap` seeded rows, in their original order."""
    df = df.reset_index(drop=True)
    if cap is None or cap >= len(df):
        return df
    keep = np.sort(rng(seed, stream).permutation(len(df))[:cap])
    return df.iloc[keep].reset_index(drop=True)
