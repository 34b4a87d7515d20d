"""The saved model: an HF checkpoint (config + safetensors + tokenizer) plus our run metadata."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from src.errors import UserError
from src.models import check_checkpoint_dir

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
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True)
    meta = path / METADATA_FILE
    if meta.is_file():
        info = CheckpointInfo(**json.loads(meta.read_text()))
    else:
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        info = CheckpointInfo(label_names=labels)
    return model, tokenizer, info


def resolve_model_dir(run_id: str | None, model: str | None) -> Path:
    """A local checkpoint directory from a run id, an MLflow model URI or a directory."""
    if run_id:
        try:
            outputs = mlflow.get_run(run_id).outputs
        except Exception as exc:
            raise UserError(f"run {run_id} not found in {mlflow.get_tracking_uri()}") from exc
        if outputs is None or not outputs.model_outputs:
            raise UserError(f"run {run_id} has no logged model: did it finish? (see `make ui`)")
        model = f"models:/{outputs.model_outputs[-1].model_id}"
    assert model is not None
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
