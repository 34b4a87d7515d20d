"""The terminal table of a multirun: one row per child run of its parent run."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.table import Table

from src.errors import UserError
from src.tracking.names import (
    JOB_TAG,
    OPTUNA_STUDY_TAG,
    OVERRIDES_TAG,
    PARENT_ID_TAG,
    STATE_TAG,
    SWEEP_TAG,
)

if TYPE_CHECKING:
    import mlflow

COLUMNS = {
    "test_accuracy": "accuracy",
    "test_macro_f1": "macro F1",
    "test_weighted_f1": "weighted F1",
    "train_samples_per_second": "train samples/s",
    "test_samples_per_second": "test samples/s",
}


def latest_children(client: mlflow.MlflowClient, experiment: str) -> list[mlflow.entities.Run]:
    """The child runs of the experiment's most recent parent run, oldest first."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise UserError(f"no MLflow experiment named {experiment!r} at {client.tracking_uri}")
    parents = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{SWEEP_TAG}` != ''",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not parents:
        raise UserError(
            f"experiment {experiment!r} has no multirun yet: run `python -m src.train -m ...`"
        )
    return children(client, parents[0])


def children(client: mlflow.MlflowClient, parent: mlflow.entities.Run) -> list[mlflow.entities.Run]:
    """A parent run's child runs, oldest first."""
    return list(
        client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`{PARENT_ID_TAG}` = '{parent.info.run_id}'",
            order_by=["attributes.start_time ASC"],
        )
    )


def format_metric(name: str, value: float | None) -> str:
    """Scores with 4 decimals, throughputs as whole numbers, `-` when missing."""
    if value is None:
        return "-"
    return f"{value:.0f}" if name.endswith("per_second") else f"{value:.4f}"


def swept_overrides(runs: Sequence[mlflow.entities.Run]) -> dict[str, list[str]]:
    """Per override key whose value differs between the runs (what the multirun varied, the
    model and method aside: they have columns of their own), each run's value (`-`: not set)."""
    per_run = [overrides_of(run) for run in runs]
    keys = list(dict.fromkeys(key for overrides in per_run for key in overrides))
    varied = {
        key: [overrides.get(key, "-") for overrides in per_run]
        for key in keys
        if key not in ("model", "method") and not key.startswith(("trial.", "hydra."))
    }
    return {key: values for key, values in varied.items() if len(set(values)) > 1}


def overrides_of(run: mlflow.entities.Run) -> dict[str, str]:
    """A run's overrides as `{key: value}`, the `+` / `++` / `~` prefixes dropped."""
    text = run.data.tags.get(OVERRIDES_TAG, "")
    try:
        words = shlex.split(text)
    except ValueError:  # an unbalanced quote in a value
        words = text.split()
    pairs = (word.split("=", 1) for word in words if "=" in word)
    return {key.lstrip("+~"): value for key, value in pairs}


def runs_table(runs: Sequence[mlflow.entities.Run], title: str) -> Table:
    """One row per run: its job number (an Optuna sweep's trial number), backbone, method, the
    overrides the multirun varied, state and the headline metrics."""
    table = Table(title=title)
    number = "trial" if any(OPTUNA_STUDY_TAG in run.data.tags for run in runs) else "job"
    swept = swept_overrides(runs)
    for header in (number, "model", "method", *swept, "state"):
        table.add_column(header, justify="right" if header == number else "left")
    for header in COLUMNS.values():
        table.add_column(header, justify="right")
    for i, run in enumerate(runs):
        metrics = run.data.metrics
        cells = [format_metric(key, metrics.get(key)) for key in COLUMNS]
        table.add_row(
            run.data.tags.get(JOB_TAG, "-"),
            run.data.tags.get("model", "?"),
            run.data.tags.get("method", "?"),
            *(values[i] for values in swept.values()),
            run.data.tags.get(STATE_TAG, run.info.status.lower()),
            *cells,
        )
    return table
