"""What a report concludes: cells (one configuration, its distinct seeds, mean ± CI), the best
one's per-class table, the claim factor's comparisons over seeds (a paired t-test over per-seed
differences, Holm-adjusted over the section), Optuna importances."""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from src.analysis import stats
from src.analysis.runs import (
    METRICS,
    PREDICTIONS,
    Artifacts,
    Runs,
    compare_factor,
    drop_repeats,
    find_factors,
    fmt_seed,
    label_names,
    paired,
)

log = logging.getLogger(__name__)


@dataclass
class Cell:
    """One configuration: its factor values, its runs (one per distinct seed), their intervals
    and the smallest difference of the report metric its seeds resolve against a like cell."""

    key: tuple[Any, ...]
    runs: pd.DataFrame
    intervals: dict[str, stats.Interval]
    mde: float = math.nan


@dataclass
class Comparison:
    """metric(B) − metric(A) at one setting of the other factors, over the seeds both ran."""

    stratum: dict[str, Any]
    a: Any
    b: Any
    seeds: list[Any]
    test: stats.SeedTest
    n_examples: int
    test_data: str  # "same" / "not recorded" / which seeds' test splits differ
    p_adjusted: float = math.nan
    mde: float = math.nan
    verdict: str = ""
    # With one seed: the interval over test examples only (it cannot see seed variance).
    examples_only: stats.BootstrapResult | None = None


@dataclass
class Analysis:
    """Everything a report shows."""

    runs: Runs
    factors: list[str]
    compare: str | None
    metric: str
    confidence: float
    n_boot: int
    cells: list[Cell]
    best: Cell | None
    per_class: pd.DataFrame | None
    comparisons: list[Comparison]
    skipped_comparisons: list[str] = field(default_factory=list)
    best_run: pd.Series | None = None
    importances: dict[str, float] | None = None
    test_data: str = ""  # whether the table's runs of each seed were tested on the same data


def analyse(
    runs: Runs,
    artifacts: Artifacts,
    metric: str,
    requested_compare: str | None,
    n_boot: int,
    confidence: float,
) -> Analysis:
    """Cells with seed intervals, the best one's per-class table, the factor's comparisons."""
    factors = find_factors(runs) if not runs.jobs.empty else []
    compare = compare_factor(runs.experiment, factors, requested_compare)
    runs = drop_repeats(runs, factors)
    cells = [
        cell(key, runs.jobs.loc[idx], metric, confidence)
        for key, idx in stats.group_runs(runs.jobs, factors)
    ]
    best = max(cells, key=lambda c: c.intervals[metric].mean, default=None)
    analysis = Analysis(runs, factors, compare, metric, confidence, n_boot, cells, best, None, [])
    analysis.test_data = table_test_data(runs.jobs)
    if best is not None:
        analysis.best_run = best.runs.iloc[int(np.argmax(best.runs[metric].to_numpy()))]
        analysis.per_class = per_class_table(best.runs, artifacts, confidence)
    if compare is not None:
        analysis.comparisons, analysis.skipped_comparisons = compare_levels(
            runs.jobs, factors, compare, artifacts, metric, n_boot, confidence
        )
    if runs.jobs.optuna_study.notna().any():
        analysis.importances = optuna_importances(runs.jobs, factors, metric)
    return analysis


def intervals(runs: pd.DataFrame, confidence: float) -> dict[str, stats.Interval]:
    """Mean ± CI over the cell's runs of every article metric."""
    return {m: stats.t_interval(runs[m].tolist(), confidence) for m, _ in METRICS}


def cell(key: tuple[Any, ...], runs: pd.DataFrame, metric: str, confidence: float) -> Cell:
    """A cell and its minimum detectable effect: against a cell of the same seed spread, a
    per-seed difference spreads √2 times as much as one cell's seeds."""
    values = runs[metric].to_numpy(dtype=float)
    sd = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    mde = stats.min_detectable(math.sqrt(2) * sd, len(values), 1 - confidence)
    return Cell(key, runs, intervals(runs, confidence), mde)


def by_seed(runs: pd.DataFrame) -> dict[Any, pd.Series]:
    """A cell's runs by seed (one each: drop_repeats kept the newest of a repeated seed)."""
    return {row.get("seed"): row for _, row in runs.iterrows()}


def per_class_table(
    runs: pd.DataFrame, artifacts: Artifacts, confidence: float
) -> pd.DataFrame | None:
    """Per-class precision / recall / F1 (mean ± CI over seeds) and support of one cell."""
    reports = [r for r in (artifacts.class_report(i) for i in runs.run_id) if r]
    if not reports:
        return None
    rows = []
    for name, entry in reports[0].items():
        if not isinstance(entry, dict):
            continue
        values = {
            key: stats.t_interval([r[name][key] for r in reports if name in r], confidence)
            for key in ("precision", "recall", "f1-score")
        }
        support = stats.t_interval([r[name]["support"] for r in reports if name in r])
        rows.append({"class": name, **values, "support": support.mean})
    return pd.DataFrame(rows)


def level_name(factor: str, value: Any) -> str:
    """How a verdict names a level: 'tiny_llama', 'lr=0.0001', 'max_train=500'."""
    if factor.endswith(".name"):
        return str(value)
    return f"{factor.rsplit('.', 1)[-1]}={value}"


def compare_levels(
    jobs: pd.DataFrame,
    factors: list[str],
    compare: str,
    artifacts: Artifacts,
    metric: str,
    n_boot: int,
    confidence: float,
) -> tuple[list[Comparison], list[str]]:
    """Every pair of the factor's levels at each setting of the other factors, seed-paired;
    the verdicts Holm-adjusted over all of them (the report section is the family)."""
    others = [f for f in factors if f != compare]
    out: list[Comparison] = []
    skipped: list[str] = []
    for key, idx in stats.group_runs(jobs, others):
        stratum = dict(zip(others, key, strict=True))
        sub = jobs.loc[idx]
        by_level = {lv: by_seed(sub.loc[i]) for (lv,), i in stats.group_runs(sub, [compare])}
        for a, b in itertools.combinations(sweep_order(sub, compare), 2):
            pairs, used, n_labels, why = seed_pairs(by_level[a], by_level[b], artifacts)
            if not pairs:
                skipped.append(f"{a} vs {b} at {where(stratum)}: {why}")
                continue
            per_seed = [
                stats.metric_value(metric, p.gold, p.pred_b, n_labels)
                - stats.metric_value(metric, p.gold, p.pred_a, n_labels)
                for p in pairs
            ]
            comparison = Comparison(
                stratum,
                a,
                b,
                used,
                stats.seed_test(per_seed, confidence),
                sum(len(p.gold) for p in pairs),
                same_test_data(by_level[a], by_level[b], used),
            )
            if len(pairs) == 1:
                comparison.examples_only = stats.paired_bootstrap(
                    pairs, metric, n_labels, n_boot, 0, confidence
                )
            out.append(comparison)
    decide(out, compare, 1 - confidence)
    return out, skipped


def table_test_data(jobs: pd.DataFrame) -> str:
    """Whether the runs of each seed recorded one test split (digest) across the whole table."""
    if jobs.empty or jobs.test_digest.isna().all():
        return "not recorded"
    splits = jobs.dropna(subset=["test_digest"]).groupby("seed", dropna=False).test_digest.unique()
    differ = {seed: digests for seed, digests in splits.items() if len(digests) > 1}
    if not differ:
        unrecorded = int(jobs.test_digest.isna().sum())
        return "same" if not unrecorded else f"same where recorded ({unrecorded} runs without)"
    return (
        "differ ("
        + "; ".join(
            f"seed {fmt_seed(seed)}: {len(d)} test splits {', '.join(sorted(d))}"
            for seed, d in differ.items()
        )
        + ")"
    )


def where(stratum: dict[str, Any]) -> str:
    """A setting of the other factors as a message names it."""
    return ", ".join(f"{k}={v}" for k, v in stratum.items()) or "all runs"


def same_test_data(
    runs_a: dict[Any, pd.Series], runs_b: dict[Any, pd.Series], seeds: list[Any]
) -> str:
    """Whether both arms of each seed were tested on the same data, by the test split's digest."""
    digests = [(s, runs_a[s].get("test_digest"), runs_b[s].get("test_digest")) for s in seeds]
    differ = [f"seed {s}: {da} vs {db}" for s, da, db in digests if da and db and da != db]
    if differ:
        return "differ (" + "; ".join(differ) + ")"
    if all(da and db for _, da, db in digests):
        return "same"
    return "not recorded"


def decide(comparisons: list[Comparison], compare: str, alpha: float) -> None:
    """Holm-adjusted p, the minimum detectable effect at the family's Bonferroni level, and the
    verdict of each comparison; one on different test data is no verdict and not in the family."""
    same_data = [not c.test_data.startswith("differ") for c in comparisons]
    raw = [c.test.p_value if ok else math.nan for c, ok in zip(comparisons, same_data, strict=True)]
    adjusted = stats.holm(raw)
    family = max(1, int(np.count_nonzero(~np.isnan(adjusted))))
    for c, ok, p in zip(comparisons, same_data, adjusted, strict=True):
        c.p_adjusted = float(p)
        c.mde = stats.min_detectable(c.test.sd, c.test.n_seeds, alpha / family)
        if not ok:
            c.verdict = "no verdict: tested on different data"
            log.warning(
                "%s vs %s at %s: tested on different data, no verdict: %s",
                c.a,
                c.b,
                where(c.stratum),
                c.test_data,
            )
        else:
            a, b = level_name(compare, c.a), level_name(compare, c.b)
            c.verdict = stats.seed_verdict(c.test, c.p_adjusted, alpha, a, b)


def seed_pairs(
    runs_a: dict[Any, pd.Series], runs_b: dict[Any, pd.Series], artifacts: Artifacts
) -> tuple[list[stats.PairedPredictions], list[Any], int, str]:
    """Predictions of the seeds both arms ran: (pairs, seeds, label count, why none if none)."""
    pairs, used, n_labels, why = [], [], 0, "no seed ran both"
    for seed in [s for s in runs_a if s in runs_b]:
        pa = artifacts.predictions(runs_a[seed].run_id)
        pb = artifacts.predictions(runs_b[seed].run_id)
        if pa is None or pb is None:
            why = f"seed {seed}: no {PREDICTIONS} artifact"
            continue
        pair = paired(pa, pb)
        if isinstance(pair, str):
            why = f"seed {seed}: {pair}"
            continue
        pairs.append(pair)
        used.append(seed)
        n_labels = len(label_names(pa))
    return pairs, used, n_labels, why


def sweep_order(runs: pd.DataFrame, factor: str) -> list[Any]:
    """A factor's levels: numbers ascending, names in the order the sweep first ran them
    (a preset lists Base before Instruct, LoRA before SFT: A is the first, B the second)."""
    levels = [k[0] for k, _ in stats.group_runs(runs, [factor])]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in levels):
        return levels
    first = runs.sort_values("start_time").drop_duplicates(factor, keep="first")
    order = [stats.cell_key(v) for v in first[factor]]
    return [v for v in order if v in levels]


def optuna_importances(jobs: pd.DataFrame, factors: list[str], metric: str) -> dict[str, float]:
    """fANOVA importances of the swept params for the test metric, from the runs themselves."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    numeric = [f for f in factors if all(isinstance(v, int | float) for v in jobs[f])]
    distributions: dict[str, optuna.distributions.BaseDistribution] = {}
    for f in factors:
        values = jobs[f].tolist()
        if f in numeric and min(values) < max(values):
            low, high = float(min(values)), float(max(values))
            log_scale = low > 0 and high / low >= 10
            distributions[f] = optuna.distributions.FloatDistribution(low, high, log=log_scale)
        elif f not in numeric:
            choices = tuple(sorted({str(v) for v in values}))
            distributions[f] = optuna.distributions.CategoricalDistribution(choices)
    if not distributions or len(jobs) < 2:
        return {}
    study = optuna.create_study(direction="maximize")
    for _, row in jobs.iterrows():
        params = {f: float(row[f]) if f in numeric else str(row[f]) for f in distributions}
        study.add_trial(
            optuna.trial.create_trial(
                value=float(row[metric]), params=params, distributions=distributions
            )
        )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            importances = dict(optuna.importance.get_param_importances(study))
        # Too few runs to tell the params apart: equal importances would read as a finding.
        same = any("select the same set of trials" in str(w.message) for w in caught)
        return {} if same else importances
    except Exception as exc:  # too few or constant trials
        log.warning("Optuna importances not computed: %s", exc)
        return {}
