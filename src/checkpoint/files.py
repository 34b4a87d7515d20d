"""The saved model: an HF checkpoint (config + safetensors + tokenizer) plus our run metadata."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from src.errors import UserError
from src.model.backbones import check_checkpoint_dir
from src.task.heads import TASKS

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
    inputs: dict[str, Any] | None = (
        None  # src.inputs.long_text.InputSpec: prompt, truncation, windows
    )


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
