"""Runs read back from an MLflow store for reports: an experiment's runs as one table, the
digest of the data each run was tested on, and a run's artifacts as local files."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import Run
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from src.config.errors import UserError

log = logging.getLogger(__name__)


def experiment_runs(uri: str, experiment: str) -> pd.DataFrame:
    """Every run of the experiment as MLflow's table (`params.*`, `metrics.*`, `tags.*`)."""
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        names = [e.name for e in mlflow.search_experiments()]
        raise UserError(
            f"no MLflow experiment named {experiment!r} at {uri}; experiments there: "
            f"{', '.join(names) or '(none)'} (check --experiment and --tracking-uri)"
        )
    frame = mlflow.search_runs(experiment_names=[experiment], output_format="pandas")
    assert isinstance(frame, pd.DataFrame)
    return frame.reset_index(drop=True)


def test_digests(uri: str, experiment: str) -> dict[str, str]:
    """Each run's digest of its test split, from the dataset inputs MLflow recorded."""
    mlflow.set_tracking_uri(uri)
    found = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    assert isinstance(found, list)
    return {run.info.run_id: digest for run in found if (digest := test_digest(run))}


def test_digest(run: Run) -> str | None:
    """The digest of the dataset input logged with context 'test', None if none was."""
    for entry in run.inputs.dataset_inputs if run.inputs else []:
        tags = {tag.key: tag.value for tag in entry.tags}
        if tags.get(MLFLOW_DATASET_CONTEXT) == "test":
            return str(entry.dataset.digest)
    return None


def download_artifact(uri: str, run_id: str, artifact: str, into: Path) -> str | None:
    """A run's artifact as a local path, None (with a warning) if the run has none."""
    try:
        return str(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact, dst_path=str(into), tracking_uri=uri
            )
        )
    except Exception as exc:
        log.warning("run %s: no %s (%s)", run_id, artifact, exc)
        return None
