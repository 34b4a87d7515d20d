"""The terminal table of runs (one run, a multirun's children): read back from MLflow."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.table import Table

from src.config.errors import UserError
from src.tracking.names import (
    JOB_TAG,
    METHOD_TAG,
    MODEL_TAG,
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


def latest_multirun(
    uri: str, experiment: str
) -> tuple[mlflow.entities.Run, list[mlflow.entities.Run]]:
    """The experiment's most recent parent run (of a grid or a sweep) and its child runs."""
    import mlflow

    client = mlflow.MlflowClient(uri)
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
    return parents[0], children(client, parents[0])


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


def swept_overrides(
    runs: Sequence[mlflow.entities.Run], multirun: mlflow.entities.Run | None
) -> dict[str, list[str]]:
    """Per override a job got that the multirun's command line did not give as such (a grid's
    values, a sweep's sampled params), each run's value (`-`: not set); the model and method
    aside (they have columns of their own), and the trial's bookkeeping."""
    if multirun is None:
        return {}
    typed = set(override_words(multirun))
    per_run = [
        dict(word.split("=", 1) for word in override_words(run) if word not in typed)
        for run in runs
    ]
    keys = dict.fromkeys(key for overrides in per_run for key in overrides)
    return {
        key.lstrip("+~"): [overrides.get(key, "-") for overrides in per_run]
        for key in keys
        if key not in ("model", "method") and not key.lstrip("+~").startswith(("trial.", "hydra."))
    }


def override_words(run: mlflow.entities.Run) -> list[str]:
    """A run's `key=value` overrides, as typed."""
    text = run.data.tags.get(OVERRIDES_TAG, "")
    try:
        words = shlex.split(text)
    except ValueError:  # an unbalanced quote in a value
        words = text.split()
    return [word for word in words if "=" in word]


def runs_table(
    runs: Sequence[mlflow.entities.Run],
    title: str,
    multirun: mlflow.entities.Run | None = None,
) -> Table:
    """One row per run: its job number (an Optuna sweep's trial number), backbone, method, the
    overrides the multirun (the runs' parent run) varied, state and the headline metrics."""
    table = Table(title=title)
    numbered = any(JOB_TAG in run.data.tags for run in runs)  # a single run has no number
    if numbered:
        number = "trial" if any(OPTUNA_STUDY_TAG in run.data.tags for run in runs) else "job"
        table.add_column(number, justify="right")
    swept = swept_overrides(runs, multirun)
    for header in ("model", "method", *swept, "state"):
        table.add_column(header, justify="left")
    for header in COLUMNS.values():
        table.add_column(header, justify="right")
    for i, run in enumerate(runs):
        metrics = run.data.metrics
        cells = [format_metric(key, metrics.get(key)) for key in COLUMNS]
        table.add_row(
            *([run.data.tags.get(JOB_TAG, "-")] if numbered else []),
            run.data.tags.get(MODEL_TAG, "?"),
            run.data.tags.get(METHOD_TAG, "?"),
            *(values[i] for values in swept.values()),
            run.data.tags.get(STATE_TAG, run.info.status.lower()),
            *cells,
        )
    return table
