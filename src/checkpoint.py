"""The saved model: an HF checkpoint (config + safetensors + tokenizer) plus our run metadata."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import LoggedModelStatus
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from src.errors import UserError
from src.models import check_checkpoint_dir
from src.tasks import TASKS
from src.tracking import redact

METADATA_FILE = "clfsweep.json"
# Where the checkpoint sits inside a logged MLflow model (see tracking.log_checkpoint).
MODEL_SUBDIR = Path("artifacts") / "checkpoint"


@dataclass
class CheckpointInfo:
    """What a user needs to apply the checkpoint the way it was trained."""

    task: str = "single_label"
    max_len: int = 512
    label_names: list[str] = field(default_factory=list)
    model: str = ""
    method: str = ""
    threshold: float | None = None  # task=multi_label: the decision threshold tuned on validation
    inputs: dict[str, Any] | None = None  # src.long_text.InputSpec: prompt, truncation, windows


def write_checkpoint(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path, info: CheckpointInfo
) -> Path:
    """Save weights as safetensors, the tokenizer and the metadata into `path`."""
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    (path / METADATA_FILE).write_text(json.dumps(asdict(info), ensure_ascii=False, indent=2))
    return path


def load_checkpoint(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, CheckpointInfo]:
    """Load a checkpoint directory written by `write_checkpoint` (safetensors only)."""
    check_checkpoint_dir(path)
    check_classifier(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True)
    meta = path / METADATA_FILE
    if meta.is_file():
        info = CheckpointInfo(**json.loads(meta.read_text()))
    else:
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        info = CheckpointInfo(label_names=labels)
    return model, tokenizer, info


def check_classifier(path: Path) -> None:
    """Refuse a checkpoint that is not a sequence classifier of a task this version knows."""
    config = json.loads((path / "config.json").read_text())
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise UserError(
            f"{path} holds a {architectures[0]} checkpoint, not a text classifier (a "
            "src.pretrain backbone?): give a model or run of `python -m src.train`"
        )
    meta = path / METADATA_FILE
    task = json.loads(meta.read_text()).get("task") if meta.is_file() else None
    if task is not None and task not in TASKS:
        raise UserError(
            f"{path} was trained for task {task!r}, which this version does not know "
            f"({', '.join(TASKS)}): predict with the clfsweep version that trained it"
        )


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


def resolve_model_dir(run_id: str | None, model: str | None) -> Path:
    """A local checkpoint directory from a run id, an MLflow model URI or a directory; logged
    models must be complete (READY)."""
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
