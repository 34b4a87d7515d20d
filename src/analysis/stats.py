"""Statistics of a sweep, free of MLflow and I/O: seed intervals, paired bootstrap, grouping.

- `t_interval`: mean ± half-width of a two-sided t confidence interval over seeds.
- `paired_bootstrap`: the difference of a metric between two systems on the same test
  examples, resampling examples (the same draw for both systems) within each seed pair.
- `swept_factors` / `group_runs`: which run parameters a sweep varied, and the runs per cell.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import stdtrit  # inverse Student t CDF; lighter than scipy.stats

BOOTSTRAP_METRICS = ("accuracy", "micro_f1", "macro_f1", "weighted_f1")
NO_DIFFERENCE = "no significant difference"
_CHUNK = 256  # bootstrap replicates drawn at once (memory: chunk x examples weights)


# --------------------------------------------------------------------------- seed intervals


@dataclass(frozen=True)
class Interval:
    """A mean and the half-width of its confidence interval (NaN with fewer than 2 values)."""

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def format(self, digits: int = 4) -> str:
        """'0.8123 ± 0.0140'; a single value is shown without a ± part, no value as '–'."""
        if self.n == 0 or math.isnan(self.mean):
            return "–"
        if math.isnan(self.half_width):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def t_interval(values: Iterable[float], confidence: float = 0.95) -> Interval:
    """Mean ± t_{(1+c)/2, n-1} · s / √n over the finite values (e.g. one per seed)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return Interval(math.nan, math.nan, 0)
    if x.size == 1:
        return Interval(float(x[0]), math.nan, 1)
    sem = float(x.std(ddof=1)) / math.sqrt(x.size)
    t = float(stdtrit(x.size - 1, (1 + confidence) / 2))
    return Interval(float(x.mean()), t * sem, int(x.size))


# --------------------------------------------------------------------------- metrics


def weighted_metric(
    name: str, gold: np.ndarray, pred: np.ndarray, weights: np.ndarray, n_labels: int
) -> np.ndarray:
    """A metric for every row of `weights` (B x n example counts): a bootstrap in one product.

    With all weights 1 this equals scikit-learn's accuracy / f1_score(average=...) with
    labels=range(n_labels) and zero_division=0.
    """
    if name not in BOOTSTRAP_METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(BOOTSTRAP_METRICS)}")
    weights = np.atleast_2d(weights).astype(float)
    correct = weights @ (gold == pred).astype(float)
    total = weights.sum(axis=1)
    if name in ("accuracy", "micro_f1"):  # single-label: micro P = R = F1 = accuracy
        return np.divide(correct, total, out=np.zeros_like(correct), where=total > 0)
    classes = np.arange(n_labels)
    gold_1h = (gold[:, None] == classes).astype(float)
    pred_1h = (pred[:, None] == classes).astype(float)
    tp = weights @ (gold_1h * pred_1h)
    support = weights @ gold_1h
    denom = support + weights @ pred_1h
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    if name == "macro_f1":
        return f1.mean(axis=1)
    return np.divide(
        (f1 * support).sum(axis=1),
        support.sum(axis=1),
        out=np.zeros(len(weights)),
        where=support.sum(axis=1) > 0,
    )


def metric_value(name: str, gold: np.ndarray, pred: np.ndarray, n_labels: int) -> float:
    """The metric on the examples as they are."""
    return float(weighted_metric(name, gold, pred, np.ones((1, len(gold))), n_labels)[0])


# --------------------------------------------------------------------------- paired bootstrap


@dataclass(frozen=True)
class PairedPredictions:
    """Two systems' predictions on the same test examples (label indices), e.g. one seed."""

    gold: np.ndarray
    pred_a: np.ndarray
    pred_b: np.ndarray

    def __post_init__(self) -> None:
        if not len(self.gold) == len(self.pred_a) == len(self.pred_b):
            raise ValueError("gold and both predictions must have the same length")
        if len(self.gold) == 0:
            raise ValueError("no shared test examples to compare")


@dataclass(frozen=True)
class BootstrapResult:
    """metric(B) − metric(A), averaged over seed pairs, with its bootstrap interval."""

    delta: float
    low: float
    high: float
    p_value: float
    n_pairs: int
    n_examples: int
    per_pair: list[float] = field(default_factory=list)

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0."""
        return self.low > 0 or self.high < 0


def paired_bootstrap(
    pairs: Sequence[PairedPredictions],
    metric: str,
    n_labels: int,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Paired bootstrap over test examples: each replicate resamples every pair's examples
    (the same draw for A and B) and averages metric(B) − metric(A) over the pairs.

    p_value is two-sided: twice the smaller share of replicates on either side of 0.
    """
    if not pairs:
        raise ValueError("paired_bootstrap needs at least one pair")
    rng = np.random.default_rng(seed)
    deltas = np.zeros(n_boot)
    observed = []
    for pair in pairs:
        a = metric_value(metric, pair.gold, pair.pred_a, n_labels)
        b = metric_value(metric, pair.gold, pair.pred_b, n_labels)
        observed.append(b - a)
        deltas += _bootstrap_deltas(pair, metric, n_labels, n_boot, rng)
    deltas /= len(pairs)
    alpha = 1 - confidence
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min(float(np.mean(deltas <= 0)), float(np.mean(deltas >= 0))))
    return BootstrapResult(
        delta=float(np.mean(observed)),
        low=float(low),
        high=float(high),
        p_value=max(p, 1 / (n_boot + 1)),
        n_pairs=len(pairs),
        n_examples=int(sum(len(p.gold) for p in pairs)),
        per_pair=[float(d) for d in observed],
    )


def _bootstrap_deltas(
    pair: PairedPredictions, metric: str, n_labels: int, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """metric(B) − metric(A) on n_boot resamples of one pair's examples."""
    n = len(pair.gold)
    out = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        size = min(_CHUNK, n_boot - start)
        weights = rng.multinomial(n, np.full(n, 1 / n), size=size)
        out[start : start + size] = weighted_metric(
            metric, pair.gold, pair.pred_b, weights, n_labels
        ) - weighted_metric(metric, pair.gold, pair.pred_a, weights, n_labels)
    return out


def verdict(result: BootstrapResult, name_a: str, name_b: str) -> str:
    """'<B> better', '<A> better' or 'no significant difference' (interval around 0)."""
    if not result.significant:
        return NO_DIFFERENCE
    return f"{name_b if result.delta > 0 else name_a} better"


# --------------------------------------------------------------------------- grouping


def parse_value(text: Any) -> Any:
    """An MLflow param string as a Python value: '300' → 300, '1e-4' → 0.0001, 'null' → None.

    A param the run does not have (None / NaN in a search_runs frame) becomes NaN, not None.
    """
    if not isinstance(text, str):
        return math.nan if text is None or _is_nan(text) else text
    try:
        value = json.loads(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text
    return tuple(value) if isinstance(value, list) else value


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def cell_key(value: Any) -> Hashable:
    """A hashable grouping key: unhashable values (e.g. a list of dicts) become their JSON."""
    if _is_nan(value):
        return None
    try:
        hash(value)
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)
    return value


def varying_columns(frame: pd.DataFrame, exclude: Callable[[str], bool]) -> list[str]:
    """Columns that take more than one value across the rows.

    NaN (a param some runs lack, e.g. one a newer version logs) is not a value: a column is not
    a factor by its absence. None (a param logged as null) is one.
    """
    out = []
    for column in frame.columns:
        if exclude(column):
            continue
        if len({cell_key(v) for v in frame[column] if not _is_nan(v)}) > 1:
            out.append(column)
    return out


def determines(frame: pd.DataFrame, a: str, b: str) -> bool:
    """Whether column a's value fixes column b's value on every row (b is a function of a)."""
    seen: dict[Hashable, Hashable] = {}
    for va, vb in zip(frame[a], frame[b], strict=True):
        ka, kb = cell_key(va), cell_key(vb)
        if seen.setdefault(ka, kb) != kb:
            return False
    return True


def swept_factors(
    frame: pd.DataFrame, exclude: Callable[[str], bool], prefer: Sequence[str] = ()
) -> list[str]:
    """The columns a sweep varied, without ones another kept factor determines.

    E.g. `model.name` and `model.hub_id` vary together: only the first in `prefer` order
    (then fewest dots, then name) is kept.
    """
    rank = {name: i for i, name in enumerate(prefer)}
    candidates = sorted(
        varying_columns(frame, exclude),
        key=lambda c: (rank.get(c, len(rank)), c.count("."), c),
    )
    kept: list[str] = []
    for column in candidates:
        if not any(determines(frame, k, column) for k in kept):
            kept.append(column)
    return kept


def group_runs(
    frame: pd.DataFrame, factors: Sequence[str]
) -> list[tuple[tuple[Any, ...], pd.Index]]:
    """(factor values, row index) of each cell, cells sorted by their values."""
    if not factors:
        return [((), frame.index)] if len(frame) else []
    keys = [tuple(cell_key(frame.at[i, f]) for f in factors) for i in frame.index]
    cells: dict[tuple[Any, ...], list[Any]] = {}
    for key, i in zip(keys, frame.index, strict=True):
        cells.setdefault(key, []).append(i)
    return [(key, pd.Index(cells[key])) for key in sorted(cells, key=sort_key)]


def sort_key(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """Order mixed values: None first, then numbers by value, then strings."""
    return tuple(
        (0, 0.0, "")
        if v is None
        else (1, float(v), "")
        if isinstance(v, int | float) and not isinstance(v, bool)
        else (2, 0.0, str(v))
        for v in values
    )
