"""Where a saved model is: a run id, an MLflow model URI or a directory, to a local checkpoint
directory; logged models must be complete (READY)."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
from mlflow.entities import LoggedModelStatus

from src.checkpoint.files import MODEL_SUBDIR
from src.config.errors import UserError
from src.tracking.uris import redact


def check_model_ready(model_id: str, whose: str) -> None:
    """Refuse a logged model whose upload never finished: MLflow marks a LoggedModel READY only
    after all its files are stored (PENDING while uploading, FAILED on an error)."""
    try:
        status = mlflow.get_logged_model(model_id).status
    except Exception as exc:
        uri = redact(mlflow.get_tracking_uri())
        raise UserError(f"{whose}: logged model {model_id} not found in {uri}") from exc
    if status != LoggedModelStatus.READY:
        raise UserError(
            f"{whose}: logged model {model_id} is {status}, not READY: its upload did not "
            "finish (the run was killed or ran out of disk while saving); train it again"
        )


def registered_model_id(name: str, alias: str) -> str | None:
    """The logged model behind a registered model's alias (e.g. a sweep's ``champion``); None
    for a version registered from elsewhere (a run's artifacts)."""
    try:
        version = mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    except Exception as exc:
        uri = redact(mlflow.get_tracking_uri())
        raise UserError(
            f"--model models:/{name}@{alias}: no version of registered model {name} has the "
            f"alias {alias} in {uri} (a sweep registers models:/<study name>@champion)"
        ) from exc
    if version.model_id:
        return str(version.model_id)
    # MLflow's SQL registry keeps no model_id; a version of a logged model has it as source.
    logged = re.fullmatch(r"models:/(m-[0-9a-f]+)/?", version.source or "")
    return logged.group(1) if logged else None


def resolve_model_dir(run_id: str | None, model: str | None, uri: str | None = None) -> Path:
    """A local checkpoint directory from a run id, an MLflow model URI or a directory; logged
    models must be complete (READY). `uri`: the store to read (else MLflow's current one)."""
    if uri is not None:
        mlflow.set_tracking_uri(uri)
    if run_id:
        try:
            outputs = mlflow.get_run(run_id).outputs
        except Exception as exc:
            uri = redact(mlflow.get_tracking_uri())
            raise UserError(f"run {run_id} not found in {uri}") from exc
        if outputs is None or not outputs.model_outputs:
            raise UserError(f"run {run_id} has no logged model: did it finish? (see `make ui`)")
        model_id = outputs.model_outputs[-1].model_id
        check_model_ready(model_id, f"run {run_id}")
        model = f"models:/{model_id}"
    assert model is not None
    logged = re.fullmatch(r"models:/(m-[0-9a-f]+)/?", model)
    if logged and not run_id:
        check_model_ready(logged.group(1), f"--model {model}")
    aliased = re.fullmatch(r"models:/([^/@]+)@([^/@]+)/?", model)
    behind = registered_model_id(*aliased.groups()) if aliased else None
    if behind is not None:
        check_model_ready(behind, f"--model {model}")
    local = Path(model).expanduser()
    if not local.exists():
        if ":/" not in model:
            raise UserError(f"--model {model} is neither a directory nor an MLflow model URI")
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model))
        except Exception as exc:
            raise UserError(f"cannot fetch model {model}: {exc}") from exc
    if (local / MODEL_SUBDIR).is_dir():
        local = local / MODEL_SUBDIR
    return local
