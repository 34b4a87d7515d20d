"""An experiment's runs read back from MLflow: which are used (completed) and why the others
are not, the factors a sweep varied, and the per-run artifacts the comparisons need."""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.analysis import stats
from src.config.errors import UserError
from src.tracking.names import (
    ERROR_TAG,
    OPTUNA_STUDY_TAG,
    PARENT_ID_TAG,
    STATE_TAG,
    SWEEP_TAG,
    RunState,
)
from src.tracking.reading import download_artifact, experiment_runs, test_digests

log = logging.getLogger(__name__)


# How a report sorts a run: how it ended (its state tag), or what it still lacks.
RUNNING = "running"
INCOMPLETE = "incomplete"
REPEAT = "repeat"  # the same configuration and seed as a newer run: one observation, not two
STATES = (*RunState, RUNNING, INCOMPLETE, REPEAT)

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
    frame = experiment_runs(uri, experiment)
    is_parent = column(frame, f"tags.{SWEEP_TAG}").notna()
    parents, children = frame[is_parent], frame[~is_parent]
    if parent_run_id:
        children = children[column(children, f"tags.{PARENT_ID_TAG}") == parent_run_id]
        parents = parents[parents.run_id == parent_run_id]
        if children.empty:
            raise UserError(f"parent run {parent_run_id} has no child runs in {experiment!r}")
    states = [run_state(row, metric) for _, row in children.iterrows()]
    param_cols = sorted(c for c in children.columns if c.startswith("params."))
    index = children.index
    # One frame from all its columns at once: inserting them one by one fragments it (pandas
    # warns once per column past 100, 40 lines on the report's stderr for a sweep).
    columns = {
        "run_id": children["run_id"],
        "start_time": children["start_time"],
        "artifact_uri": children["artifact_uri"],
        "run_name": column(children, "tags.mlflow.runName"),
        "parent": column(children, f"tags.{PARENT_ID_TAG}"),
        "optuna_study": column(children, f"tags.{OPTUNA_STUDY_TAG}"),
        "state": pd.Series([s for s, _ in states], index=index, dtype=object),
        "reason": pd.Series([r for _, r in states], index=index, dtype=object),
    }
    for col in param_cols:
        # object dtype: pandas would turn a null param (None) into NaN, the mark of an absent one
        values = [stats.parse_value(v) for v in children[col]]
        columns[col.removeprefix("params.")] = pd.Series(values, index=index, dtype=object)
    for suffix, _ in METRICS:
        columns[suffix] = column(children, f"metrics.test_{suffix}")
    digests = test_digests(uri, experiment)
    columns["test_digest"] = pd.Series(
        [digests.get(r) for r in children["run_id"]], index=index, dtype=object
    )
    table = pd.concat(columns, axis=1)
    params = [c.removeprefix("params.") for c in param_cols]
    used = table.state == RunState.completed
    return Runs(
        experiment=experiment,
        uri=uri,
        jobs=table[used].sort_values("start_time").reset_index(drop=True),
        excluded=table[~used].sort_values("start_time").reset_index(drop=True),
        parents=parents.sort_values("start_time").reset_index(drop=True),
        params=params,
    )


def drop_repeats(runs: Runs, factors: Sequence[str]) -> Runs:
    """One run per configuration and seed: a re-run (e.g. best.yaml's command) is not a second
    seed. The newest is kept; the others move to `excluded` as 'repeat', naming the kept run."""
    jobs = runs.jobs
    if "seed" not in jobs.columns:
        return runs
    keys = pd.Series(
        [tuple(stats.cell_key(jobs.at[i, c]) for c in (*factors, "seed")) for i in jobs.index],
        index=jobs.index,
    )
    repeat = keys.duplicated(keep="last") & jobs.seed.notna()  # jobs run oldest first
    if not repeat.any():
        return runs
    newest = {keys[i]: jobs.loc[i] for i in jobs.index[~repeat]}
    dropped = jobs[repeat].copy()
    dropped["state"] = REPEAT
    dropped["reason"] = [
        f"same configuration and seed {fmt_seed(jobs.at[i, 'seed'])} as the newer run "
        f"{newest[keys[i]].run_id} ({newest[keys[i]].run_name}), which is used"
        for i in dropped.index
    ]
    excluded = pd.concat([runs.excluded, dropped], ignore_index=True)
    return dataclasses.replace(
        runs,
        jobs=jobs[~repeat].reset_index(drop=True),
        excluded=excluded.sort_values("start_time").reset_index(drop=True),
    )


def fmt_seed(seed: Any) -> str:
    """A seed as a run param shows it (1, not 1.0)."""
    return str(int(seed)) if isinstance(seed, float) and seed.is_integer() else str(seed)


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column of a search_runs frame, all-missing when no run has it."""
    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


def run_state(row: pd.Series, metric: str) -> tuple[str, str]:
    """(one of STATES, why the run is not used)."""
    tag = row.get(f"tags.{STATE_TAG}")
    error = row.get(f"tags.{ERROR_TAG}")
    error = "" if not isinstance(error, str) else error.splitlines()[0][:160]
    if tag in (RunState.failed, RunState.pruned):
        return str(tag), error or str(tag)
    if row.status == "FAILED":
        return RunState.failed, error or "run ended FAILED"
    if row.status == "KILLED":
        return RunState.killed, error or "run was killed"
    if row.status in ("RUNNING", "SCHEDULED"):
        return RUNNING, "still running, or its process died without ending the run"
    value = row.get(f"metrics.test_{metric}")
    if value is None or not np.isfinite(value):
        return INCOMPLETE, f"no test_{metric} metric"
    return RunState.completed, ""


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
        return download_artifact(self.uri, run_id, artifact, self.dir / run_id)

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
