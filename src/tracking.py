"""MLflow adapter: where runs go, what a run records, and how it ends."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import RunStatus
from omegaconf import DictConfig, OmegaConf

from src.config import TrackingConfig
from src.errors import UserError

log = logging.getLogger(__name__)

PARENT_ENV = "CLFSWEEP_PARENT_RUN_ID"
STATE_TAG = "clfsweep.state"  # completed | pruned | failed
MAX_PARAM_LEN = 6000


def tracking_uri(cfg: TrackingConfig) -> str:
    """The configured URI, else $MLFLOW_TRACKING_URI, else the embedded SQLite store under `dir`."""
    if cfg.uri:
        return cfg.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(cfg.dir).resolve() / 'mlflow.db'}"


def setup(cfg: TrackingConfig) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///") and not cfg.uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        # Explicit, absolute artifact root: runs must not depend on the working directory.
        artifact_location = (Path(cfg.dir).resolve() / "artifacts").as_uri()
    try:
        return mlflow.create_experiment(cfg.experiment, artifact_location=artifact_location)
    except mlflow.exceptions.MlflowException:
        # Another process created it between our lookup and create.
        experiment = mlflow.get_experiment_by_name(cfg.experiment)
        assert experiment is not None
        return experiment.experiment_id


def redact(uri: str) -> str:
    """Hide a password in a URI (`scheme://user:secret@host` → `scheme://user:***@host`)."""
    return re.sub(r"(://[^:/@]+):[^@/]+@", r"\1:***@", uri)


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested config into `a.b.c` keys with string values (MLflow params)."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            text = redact(str(value)) if isinstance(value, str) else json.dumps(value)
            out[name] = text[:MAX_PARAM_LEN]
    return out


def git_commit(cwd: Path) -> str | None:
    """The checkout's commit, if the code runs from a git work tree."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@contextmanager
def run(
    experiment_id: str, run_name: str | None, tags: dict[str, str]
) -> Iterator[mlflow.ActiveRun]:
    """One MLflow run; an exception ends it FAILED with the reason as a tag, then propagates."""
    parent = os.environ.get(PARENT_ENV)
    if parent:
        # The tag (not parent_run_id=) nests across processes even once the parent has ended.
        tags = {**tags, "mlflow.parentRunId": parent}
    active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
    try:
        yield active
    except BaseException as exc:
        pruned = type(exc).__name__ == "TrialPruned"
        mlflow.set_tags(
            {STATE_TAG: "pruned" if pruned else "failed", "error": str(exc)[:5000] or repr(exc)}
        )
        status = RunStatus.FINISHED if pruned else RunStatus.FAILED
        if isinstance(exc, KeyboardInterrupt):
            status = RunStatus.KILLED
        mlflow.end_run(RunStatus.to_string(status))
        raise
    mlflow.set_tag(STATE_TAG, "completed")
    mlflow.end_run()


def end_parent_run(reason: str) -> None:
    """Mark this multirun's parent run FAILED with the reason (a no-op outside multiruns)."""
    parent = os.environ.get(PARENT_ENV)
    if parent:
        client = mlflow.MlflowClient()
        client.set_tag(parent, "error", reason[:5000])
        client.set_terminated(parent, RunStatus.to_string(RunStatus.FAILED))


def log_config(cfg: DictConfig, tags: dict[str, str]) -> None:
    """Params = the flattened resolved config; the resolved YAML as an artifact."""
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(resolved, dict)
    mlflow.log_params(flatten(resolved))
    mlflow.set_tags(tags)
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")


def log_dataset(df: pd.DataFrame, name: str, context: str) -> None:
    """Record a split as an MLflow dataset input (with its digest)."""
    with warnings.catch_warnings():
        # The schema hint about integer columns concerns model signatures, not dataset records.
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(df, name=name, targets="label")
        mlflow.log_input(dataset, context=context)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log numeric metrics at a step."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_report(text: str, as_dict: dict[str, Any], split: str) -> None:
    """The classification report, as text and JSON."""
    mlflow.log_text(text, f"{split}_classification_report.txt")
    mlflow.log_dict(as_dict, f"{split}_classification_report.json")


def log_table(df: pd.DataFrame, artifact_file: str) -> None:
    """A CSV artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        df.to_csv(path, index=False)
        mlflow.log_artifact(str(path), str(Path(artifact_file).parent) or None)


def log_figure(figure: Any, artifact_file: str) -> None:
    """A matplotlib figure as a PNG artifact."""
    mlflow.log_figure(figure, artifact_file)


def log_checkpoint(checkpoint_dir: Path) -> str:
    """Log a saved HF checkpoint (directory named `checkpoint`) as the run's MLflow model."""
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(Path(__file__).with_name("mlflow_model.py")),
        artifacts={"checkpoint": str(checkpoint_dir)},
        pip_requirements=["torch", "transformers", "pandas", "safetensors"],
    )
    return str(info.model_uri)


def log_dict(data: dict[str, Any], artifact_file: str) -> None:
    """A JSON artifact."""
    mlflow.log_dict(data, artifact_file)


def log_sklearn_model(model: Any) -> str:
    """Log a fitted scikit-learn pipeline as the run's MLflow model."""
    info = mlflow.sklearn.log_model(model, name="model")
    return str(info.model_uri)


def log_directory(directory: Path, artifact_path: str) -> None:
    """Log a directory's files as run artifacts under `artifact_path`."""
    mlflow.log_artifacts(str(directory), artifact_path)


def download_run_checkpoint(run_id: str, uri: str | None, cache_root: Path) -> Path:
    """The `checkpoint` artifact directory of a run (e.g. a pretraining run), cached locally."""
    target = cache_root / run_id
    if (target / "checkpoint" / "config.json").is_file():
        return target / "checkpoint"
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="checkpoint", dst_path=str(target), tracking_uri=uri
        )
    except Exception as exc:
        raise UserError(
            f"model.from_run={run_id}: no checkpoint artifact of that run in"
            f" {redact(uri or mlflow.get_tracking_uri())} ({type(exc).__name__}); give the run id"
            " `python -m src.pretrain` printed, and the same tracking.uri"
        ) from exc
    return Path(local)
