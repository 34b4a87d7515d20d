"""The answer to the question a sweep was run for: tables, verdicts and plots from MLflow runs.

    python -m src.report --experiment c3_base_vs_instruct_by_size
    python -m src.report --experiment c4_lora_vs_sft_by_size_cpu --tracking-uri sqlite:///x.db
    make report EXPERIMENT=c3_base_vs_instruct_by_size

Reads the experiment's runs with `mlflow.search_runs`, groups them by the swept factors (run
params that vary, seed excluded), and writes to sweeps/<experiment>/report/: report.md and
report.html (the article's metrics, each cell mean ± 95 % t-interval over seeds; the per-class
table of the best configuration; paired-bootstrap comparisons of the claim's factor with a
verdict), summary.csv, comparisons.csv and plots/*.png. The report is also logged to the sweep's
parent run. Failed, pruned and unfinished runs are counted and listed, never dropped silently.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from src import stats
from src.errors import UserError

log = logging.getLogger(__name__)

PARENT_TAG = "clfsweep.sweep"  # set on a multirun's parent run (src/callbacks.py)
STATE_TAG = "clfsweep.state"  # completed | pruned | failed (src/tracking.py)
PARENT_ID_TAG = "mlflow.parentRunId"
OPTUNA_TAG = "optuna.study"
PREDICTIONS = "predictions/test.csv"
CLASS_REPORT = "test_classification_report.json"

# The article's metrics, in its order: (metric suffix, column header).
METRICS = [
    ("accuracy", "Accuracy"),
    ("micro_precision", "micro P"),
    ("micro_recall", "micro R"),
    ("micro_f1", "micro F1"),
    ("macro_precision", "macro P"),
    ("macro_recall", "macro R"),
    ("macro_f1", "macro F1"),
    ("weighted_precision", "weighted P"),
    ("weighted_recall", "weighted R"),
    ("weighted_f1", "weighted F1"),
]
SIZE_FACTOR = "data.max_train"
# Run params that never define a cell: seeds, paths, bookkeeping of the tracking and sweeper.
NOT_FACTORS = {"seed", "seeds", "output_dir", "optimized_metric"}
NOT_FACTOR_PREFIXES = ("tracking.", "trial.", "hydra.")
# Which of two co-varying params names a factor (model.name over model.hub_id, ...).
PREFERRED_FACTORS = (
    "model.name",
    "method.name",
    "prompt.name",
    "data.name",
    SIZE_FACTOR,
    "data.long_text",
    "data.truncation",
    "trainer.max_len",
    "data.mix.ratio",
    "trainer.epochs",
    "method.rank",
    "trainer.lr",
)
# The factor each claim's preset compares (the `_cpu` twins share it); --compare overrides.
CLAIM_FACTORS = {
    "c1_short_text_llm_vs_bert": "model.name",
    "c2_long_text_truncation_vs_window": "model.name",  # per data.long_text
    "c3_base_vs_instruct_by_size": "model.name",
    "c4_lora_vs_sft_by_size": "method.name",
    "c5_epochs_rank": "trainer.epochs",
    "c6_mix_ratio": "data.mix.ratio",
    "c7_prompt_templates": "prompt.name",
    "c8_lr_vs_trainable_params": "trainer.lr",
}


# --------------------------------------------------------------------------- loading


@dataclass
class Runs:
    """An experiment's runs: the ones the tables use, the others with the reason, the parents."""

    experiment: str
    uri: str
    jobs: pd.DataFrame  # one row per completed run; params as parsed values, metrics by name
    excluded: pd.DataFrame  # columns run_id, run_name, state, reason, params...
    parents: pd.DataFrame
    params: list[str]  # the param columns of `jobs` / `excluded`


def load_runs(uri: str, experiment: str, parent_run_id: str | None, metric: str) -> Runs:
    """Every run of the experiment (of one parent run if given), sorted into used / not used."""
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        names = [e.name for e in mlflow.search_experiments()]
        raise UserError(
            f"no MLflow experiment named {experiment!r} at {uri}; experiments there: "
            f"{', '.join(names) or '(none)'} (check --experiment and --tracking-uri)"
        )
    frame = mlflow.search_runs(experiment_names=[experiment], output_format="pandas")
    assert isinstance(frame, pd.DataFrame)
    frame = frame.reset_index(drop=True)
    is_parent = column(frame, f"tags.{PARENT_TAG}").notna()
    parents, children = frame[is_parent], frame[~is_parent]
    if parent_run_id:
        children = children[column(children, f"tags.{PARENT_ID_TAG}") == parent_run_id]
        parents = parents[parents.run_id == parent_run_id]
        if children.empty:
            raise UserError(f"parent run {parent_run_id} has no child runs in {experiment!r}")
    states = [run_state(row, metric) for _, row in children.iterrows()]
    param_cols = sorted(c for c in children.columns if c.startswith("params."))
    table = children[["run_id", "start_time", "artifact_uri"]].copy()
    table["run_name"] = column(children, "tags.mlflow.runName")
    table["parent"] = column(children, f"tags.{PARENT_ID_TAG}")
    table["optuna_study"] = column(children, f"tags.{OPTUNA_TAG}")
    table["state"] = [s for s, _ in states]
    table["reason"] = [r for _, r in states]
    for col in param_cols:
        # object dtype: pandas would turn a null param (None) into NaN, the mark of an absent one
        values = [stats.parse_value(v) for v in children[col]]
        table[col.removeprefix("params.")] = pd.Series(values, index=table.index, dtype=object)
    for suffix, _ in METRICS:
        table[suffix] = column(children, f"metrics.test_{suffix}")
    params = [c.removeprefix("params.") for c in param_cols]
    used = table.state == "completed"
    return Runs(
        experiment=experiment,
        uri=uri,
        jobs=table[used].sort_values("start_time").reset_index(drop=True),
        excluded=table[~used].sort_values("start_time").reset_index(drop=True),
        parents=parents.sort_values("start_time").reset_index(drop=True),
        params=params,
    )


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column of a search_runs frame, all-missing when no run has it."""
    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


def run_state(row: pd.Series, metric: str) -> tuple[str, str]:
    """(completed | pruned | failed | killed | running | incomplete, why it is not used)."""
    tag = row.get(f"tags.{STATE_TAG}")
    error = row.get("tags.error")
    error = "" if not isinstance(error, str) else error.splitlines()[0][:160]
    if tag in ("failed", "pruned"):
        return str(tag), error or str(tag)
    if row.status == "FAILED":
        return "failed", error or "run ended FAILED"
    if row.status == "KILLED":
        return "killed", error or "run was killed"
    if row.status in ("RUNNING", "SCHEDULED"):
        return "running", "still running, or its process died without ending the run"
    value = row.get(f"metrics.test_{metric}")
    if value is None or not np.isfinite(value):
        return "incomplete", f"no test_{metric} metric"
    return "completed", ""


def not_a_factor(name: str) -> bool:
    """Whether a run param can never be a swept factor (a seed, a path, bookkeeping)."""
    return name in NOT_FACTORS or name.startswith(NOT_FACTOR_PREFIXES)


def find_factors(runs: Runs) -> list[str]:
    """The params the completed runs vary (co-varying ones once), seed excluded."""
    return stats.swept_factors(runs.jobs[runs.params], not_a_factor, PREFERRED_FACTORS)


def compare_factor(experiment: str, factors: Sequence[str], requested: str | None) -> str | None:
    """--compare, else the claim's factor for a known preset, else the first non-size factor."""
    if requested:
        if requested not in factors:
            raise UserError(
                f"--compare {requested}: not a swept factor of {experiment!r}; "
                f"swept: {', '.join(factors) or '(none)'}"
            )
        return requested
    claim = CLAIM_FACTORS.get(experiment.removesuffix("_cpu"))
    if claim in factors:
        return claim
    others = [f for f in factors if f != SIZE_FACTOR] or list(factors)
    return others[0] if others else None


# --------------------------------------------------------------------------- artifacts


class Artifacts:
    """Per-run artifacts (predictions, classification reports), downloaded once."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.dir = Path(tempfile.mkdtemp(prefix="clfsweep-report-"))
        self._predictions: dict[str, pd.DataFrame | None] = {}

    def predictions(self, run_id: str) -> pd.DataFrame | None:
        """predictions/test.csv of a run (id, gold, predicted, p_<label>...), None if absent."""
        if run_id not in self._predictions:
            self._predictions[run_id] = self._read_predictions(run_id)
        return self._predictions[run_id]

    def _download(self, run_id: str, artifact: str) -> str | None:
        """A run's artifact as a local path, None (with a warning) if the run has none."""
        try:
            return str(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id,
                    artifact_path=artifact,
                    dst_path=str(self.dir / run_id),
                    tracking_uri=self.uri,
                )
            )
        except Exception as exc:
            log.warning("run %s: no %s (%s)", run_id, artifact, exc)
            return None

    def _read_predictions(self, run_id: str) -> pd.DataFrame | None:
        path = self._download(run_id, PREDICTIONS)
        if path is None:
            return None
        return pd.read_csv(
            path, dtype={"id": str, "gold": str, "predicted": str}, keep_default_na=False
        )

    def class_report(self, run_id: str) -> dict[str, Any] | None:
        """The run's test classification report (sklearn's output_dict), None if absent."""
        path = self._download(run_id, CLASS_REPORT)
        if path is None:
            return None
        return dict(json.loads(Path(path).read_text(encoding="utf-8")))


def label_names(predictions: pd.DataFrame) -> list[str]:
    """Label names in index order, from the p_<label> columns."""
    return [c.removeprefix("p_") for c in predictions.columns if c.startswith("p_")]


def paired(a: pd.DataFrame, b: pd.DataFrame) -> stats.PairedPredictions | str:
    """Two runs' predictions on their shared test ids as label indices, or why they cannot be."""
    names = label_names(a)
    if names != label_names(b):
        return f"different label sets {names} and {label_names(b)}"
    merged = a[["id", "gold", "predicted"]].merge(
        b[["id", "gold", "predicted"]], on="id", suffixes=("_a", "_b")
    )
    if merged.empty:
        return "no shared test ids (different test sets)"
    if (merged.gold_a != merged.gold_b).any():
        return "different gold labels for the same test ids"
    index = {name: i for i, name in enumerate(names)}
    return stats.PairedPredictions(
        gold=merged.gold_a.map(index).to_numpy(dtype=int),
        pred_a=merged.predicted_a.map(index).to_numpy(dtype=int),
        pred_b=merged.predicted_b.map(index).to_numpy(dtype=int),
    )


# --------------------------------------------------------------------------- analysis


@dataclass
class Cell:
    """One configuration: its factor values, its runs (one per seed) and their intervals."""

    key: tuple[Any, ...]
    runs: pd.DataFrame
    intervals: dict[str, stats.Interval]


@dataclass
class Comparison:
    """metric(B) − metric(A) at one setting of the other factors."""

    stratum: dict[str, Any]
    a: Any
    b: Any
    seeds: list[Any]
    result: stats.BootstrapResult
    verdict: str


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
    cells = [
        Cell(key, runs.jobs.loc[idx], intervals(runs.jobs.loc[idx], confidence))
        for key, idx in stats.group_runs(runs.jobs, factors)
    ]
    best = max(cells, key=lambda c: c.intervals[metric].mean, default=None)
    analysis = Analysis(runs, factors, compare, metric, confidence, n_boot, cells, best, None, [])
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


def latest_by_seed(runs: pd.DataFrame) -> dict[Any, pd.Series]:
    """The latest run of each seed (a repeated seed counts once)."""
    out: dict[Any, pd.Series] = {}
    for _, row in runs.sort_values("start_time").iterrows():
        out[row.get("seed")] = row
    return out


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
    """Every pair of the factor's levels at each setting of the other factors, seed-paired."""
    others = [f for f in factors if f != compare]
    out: list[Comparison] = []
    skipped: list[str] = []
    for key, idx in stats.group_runs(jobs, others):
        stratum = dict(zip(others, key, strict=True))
        sub = jobs.loc[idx]
        groups = stats.group_runs(sub, [compare])
        by_level = {lv: latest_by_seed(sub.loc[i]) for (lv,), i in groups}
        levels = sweep_order(sub, compare)
        for a, b in itertools.combinations(levels, 2):
            where = ", ".join(f"{k}={v}" for k, v in stratum.items()) or "all runs"
            pairs, used, n_labels, why = seed_pairs(by_level[a], by_level[b], artifacts)
            if not pairs:
                skipped.append(f"{a} vs {b} at {where}: {why}")
                continue
            result = stats.paired_bootstrap(pairs, metric, n_labels, n_boot, 0, confidence)
            text = stats.verdict(result, level_name(compare, a), level_name(compare, b))
            out.append(Comparison(stratum, a, b, used, result, text))
    return out, skipped


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
        return dict(optuna.importance.get_param_importances(study))
    except Exception as exc:  # too few or constant trials
        log.warning("Optuna importances not computed: %s", exc)
        return {}


# --------------------------------------------------------------------------- writing


def write_report(analysis: Analysis, artifacts: Artifacts, out_dir: Path) -> list[Path]:
    """report.md, report.html, summary.csv, comparisons.csv and plots/ under out_dir."""
    from src import report_render as render

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = render.write_plots(analysis, artifacts, out_dir / "plots")
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    md = out_dir / "report.md"
    md.write_text(render.markdown(analysis, plots, out_dir, generated), encoding="utf-8")
    html = out_dir / "report.html"
    html.write_text(render.html(analysis, plots, out_dir, generated), encoding="utf-8")
    summary = out_dir / "summary.csv"
    render.summary_frame(analysis).to_csv(summary, index=False)
    comparisons = out_dir / "comparisons.csv"
    render.comparisons_frame(analysis).to_csv(comparisons, index=False)
    return [md, html, summary, comparisons, *plots]


def log_to_parent(runs: Runs, requested: str | None, out_dir: Path) -> str | None:
    """Log the report folder to the parent run (the given one, else the sweep's latest)."""
    parent = requested
    if parent is None:
        known = set(runs.jobs.parent.dropna()) | set(runs.excluded.parent.dropna())
        candidates = runs.parents[runs.parents.run_id.isin(known)]
        parent = str(candidates.run_id.iloc[-1]) if len(candidates) else None
    if parent is None:
        log.warning("no parent run found: the report is not logged to MLflow")
        return None
    mlflow.MlflowClient(tracking_uri=runs.uri).log_artifacts(parent, str(out_dir), "report")
    return parent


# --------------------------------------------------------------------------- CLI


def default_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the project's embedded store mlruns/mlflow.db (as src.train)."""
    from src.config import TrackingConfig
    from src.tracking import tracking_uri

    return tracking_uri(TrackingConfig(dir=str(Path.cwd() / "mlruns")))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m src.report",
        description="Tables (mean ± 95%% CI over seeds), paired-bootstrap verdicts and plots "
        "of a sweep's MLflow runs, written to sweeps/<experiment>/report/.",
    )
    p.add_argument("--experiment", required=True, help="MLflow experiment (the preset's name)")
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else mlruns/mlflow.db")
    p.add_argument("--parent-run-id", help="only the child runs of this sweep (parent run)")
    p.add_argument(
        "--metric",
        default="macro_f1",
        choices=stats.BOOTSTRAP_METRICS,
        help="test metric that picks the best configuration and is compared (default macro_f1)",
    )
    p.add_argument("--compare", help="the factor to compare (default: the claim's factor)")
    p.add_argument("--out", type=Path, help="default: sweeps/<experiment>/report")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates (2000)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval level (0.95)")
    p.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    args = p.parse_args(argv)
    if not 0 < args.confidence < 1:
        p.error("--confidence must lie strictly between 0 and 1")
    if args.n_boot < 100:
        p.error("--n-boot must be at least 100")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Build, write, log and summarise the report; 1 when no run completed."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = parse_args(argv)
    from src import report_render as render

    uri = args.tracking_uri or default_uri()
    out_dir = args.out or Path("sweeps") / args.experiment / "report"
    try:
        runs = load_runs(uri, args.experiment, args.parent_run_id, args.metric)
        artifacts = Artifacts(uri)
        analysis = analyse(runs, artifacts, args.metric, args.compare, args.n_boot, args.confidence)
        written = write_report(analysis, artifacts, out_dir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    parent = None if args.no_log else log_to_parent(runs, args.parent_run_id, out_dir)
    render.terminal_summary(analysis, out_dir, written, parent)
    return 0 if analysis.cells else 1


if __name__ == "__main__":
    raise SystemExit(main())
