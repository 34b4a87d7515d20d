"""Statistics of a sweep, free of MLflow and I/O: seed intervals, verdicts, grouping.

- `t_interval`: mean ± half-width of a two-sided t confidence interval over seeds.
- `seed_test`: the verdict's test. The unit is the training seed: a paired t-test over the
  per-seed differences metric(B) − metric(A), so seed-to-seed variance (and, where each seed
  draws its own test sample, test-sample variance) is in the interval and the p-value.
- `holm`: Holm–Bonferroni adjusted p-values over one report section's comparisons.
- `min_detectable` / `power` / `seeds_needed`: what a number of seeds can resolve.
- `paired_bootstrap`: the difference of a metric between two systems on the same test
  examples, resampling examples (the same draw for both systems) within each seed pair: the
  test-example interval of a single-seed comparison, which cannot see seed variance.
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
from scipy.special import (
    nctdtr,
    nctdtrinc,
    stdtr,
    stdtrit,
)  # t and noncentral t; lighter than scipy.stats

from src.data import streams

BOOTSTRAP_METRICS = ("accuracy", "micro_f1", "macro_f1", "weighted_f1")
NO_DIFFERENCE = "no significant difference"
ONE_SEED = "no verdict: 1 seed, seed variance unknown"
POWER = 0.8  # the power at which a minimum detectable effect is stated
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


# --------------------------------------------------------------------------- verdicts over seeds


@dataclass(frozen=True)
class SeedTest:
    """metric(B) − metric(A) over seed pairs: mean, t-interval and two-sided p (NaN: 1 seed)."""

    delta: float
    low: float
    high: float
    p_value: float
    sd: float  # standard deviation of the per-seed differences
    per_seed: tuple[float, ...]

    @property
    def n_seeds(self) -> int:
        return len(self.per_seed)


def seed_test(per_seed: Sequence[float], confidence: float = 0.95) -> SeedTest:
    """One-sample t-test of the per-seed differences against 0 (scipy's ttest_1samp)."""
    d = np.asarray(per_seed, dtype=float)
    if d.size == 0:
        raise ValueError("seed_test needs at least one seed pair")
    interval = t_interval(d, confidence)
    if d.size < 2:
        return SeedTest(float(d[0]), math.nan, math.nan, math.nan, math.nan, (float(d[0]),))
    sd = float(d.std(ddof=1))
    if sd == 0:  # every seed gave the same difference: no spread to weigh it against
        p = 1.0 if interval.mean == 0 else 0.0
    else:
        t = interval.mean / (sd / math.sqrt(d.size))
        p = float(2 * stdtr(d.size - 1, -abs(t)))
    return SeedTest(interval.mean, interval.low, interval.high, p, sd, tuple(float(x) for x in d))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (family-wise error); NaN ones are not in the family."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = order.size
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(stepped, 1.0)
    return out


def seed_verdict(test: SeedTest, p_adjusted: float, alpha: float, name_a: str, name_b: str) -> str:
    """'<B> better' / '<A> better' when the adjusted p is under alpha; no claim from 1 seed."""
    if test.n_seeds < 2:
        return ONE_SEED
    if not p_adjusted < alpha:
        return NO_DIFFERENCE
    return f"{name_b if test.delta > 0 else name_a} better"


def _noncentrality(n: int, alpha: float, power: float) -> float:
    """The t-test's noncentrality at which a two-sided level-alpha test over n has `power`."""
    critical = float(stdtrit(n - 1, 1 - alpha / 2))
    return float(nctdtrinc(n - 1, 1 - power, critical))


def min_detectable(sd: float, n: int, alpha: float = 0.05, power: float = POWER) -> float:
    """The smallest true mean difference a t-test over n seed differences of spread sd finds
    with the given power (the far tail ignored); NaN below 2 seeds or without a spread."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return _noncentrality(n, alpha, power) * sd / math.sqrt(n)


def power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """The chance a two-sided level-alpha t-test over n seed differences of spread sd calls a
    true mean difference `effect` (either tail)."""
    if n < 2:
        return math.nan
    critical = float(stdtrit(n - 1, 1 - alpha / 2))
    nc = abs(effect) * math.sqrt(n) / sd
    far_tail = float(nctdtr(n - 1, nc, -critical))  # tiny; NaN where it underflows (1 df)
    return 1 - float(nctdtr(n - 1, nc, critical)) + (far_tail if math.isfinite(far_tail) else 0)


def seeds_needed(effect: float, sd: float, alpha: float = 0.05, target: float = POWER) -> int:
    """The fewest seeds (at least 2) whose t-test has the target power for `effect`."""
    n = 2
    while power(effect, sd, n, alpha) < target:
        n += 1
    return n


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
    rng = streams.rng(seed, streams.Stream.report_bootstrap)
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
