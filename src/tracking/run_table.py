"""The terminal table of runs (one run, a multirun's children): read back from MLflow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.table import Table

from src.errors import UserError
from src.tracking.names import PARENT_ID_TAG, STATE_TAG, SWEEP_TAG

if TYPE_CHECKING:
    import mlflow

COLUMNS = {
    "test_accuracy": "accuracy",
    "test_macro_f1": "macro F1",
    "test_weighted_f1": "weighted F1",
    "train_samples_per_second": "train samples/s",
    "test_samples_per_second": "test samples/s",
}


def latest_children(uri: str, experiment: str) -> list[mlflow.entities.Run]:
    """The child runs of the experiment's most recent parent run, oldest first."""
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


def runs_table(runs: Sequence[mlflow.entities.Run], title: str) -> Table:
    """One row per run: backbone, method, state and the headline metrics."""
    table = Table(title=title)
    for header in ("model", "method", "state", *COLUMNS.values()):
        table.add_column(
            header, justify="left" if header in ("model", "method", "state") else "right"
        )
    for run in runs:
        metrics = run.data.metrics
        cells = [format_metric(key, metrics.get(key)) for key in COLUMNS]
        table.add_row(
            run.data.tags.get("model", "?"),
            run.data.tags.get("method", "?"),
            run.data.tags.get(STATE_TAG, run.info.status.lower()),
            *cells,
        )
    return table
