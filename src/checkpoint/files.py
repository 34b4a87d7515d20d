"""The saved model: an HF checkpoint (config + safetensors + tokenizer) plus our run metadata
and a model card saying how to use it with `transformers.pipeline` and MLflow."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from src.config.errors import UserError, json_record
from src.config.schema import LongText, Truncation
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
    """Save weights as safetensors, the tokenizer (cutting texts where training did), the
    metadata and the model card into `path`."""
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    # HF pipelines with truncation=True then keep what training kept: at most max_len tokens,
    # from the start (head) or the end (tail). save_pretrained keeps only init arguments.
    AutoTokenizer.from_pretrained(
        path,
        model_max_length=input_limit(model, info.max_len),
        truncation_side="left" if truncation_of(info) == Truncation.tail else "right",
    ).save_pretrained(path)
    (path / METADATA_FILE).write_text(json.dumps(asdict(info), ensure_ascii=False, indent=2))
    model_card(info).save(path / "README.md")
    return path


def input_limit(model: PreTrainedModel, max_len: int) -> int:
    """trainer.max_len, or fewer where the model has fewer positions."""
    positions = getattr(model.config, "max_position_embeddings", None)
    return min(max_len, positions) if positions else max_len


def truncation_of(info: CheckpointInfo) -> Truncation:
    """How the run cut long texts (head for checkpoints that do not say)."""
    return Truncation((info.inputs or {}).get("truncation", Truncation.head.value))


def pipeline_gaps(info: CheckpointInfo) -> list[str]:
    """What `transformers.pipeline("text-classification")` does not apply of how the run
    encoded and decided, so that its answers can differ from `python -m src.predict`'s."""
    inputs = info.inputs or {}
    gaps = []
    if inputs.get("prefix") or inputs.get("suffix") or inputs.get("special_tokens") is False:
        gaps.append("the prompt the model was trained with (the pipeline sees the bare text)")
    if inputs.get("long_text") == LongText.sliding_window.value:
        gaps.append(
            "sliding windows: the pipeline classifies the first max_len tokens, src.predict "
            f"aggregates ({inputs.get('aggregation')}) the windows over the whole text"
        )
    elif truncation_of(info) == Truncation.head_tail:
        gaps.append(
            "head_tail truncation: the pipeline keeps the first max_len tokens, src.predict "
            f"the first {inputs.get('head_tokens')} and the last ones"
        )
    if info.task == "multi_label":
        gaps.append(
            f"the multi-label threshold {info.threshold} tuned on validation: ask the pipeline "
            "for every label's score (top_k=None) and keep the labels scoring at least that"
        )
    return gaps


def model_card(info: CheckpointInfo) -> ModelCard:
    """The Hub-style README of the checkpoint: how to use it, and where the pipeline differs."""
    data = ModelCardData(
        library_name="transformers", pipeline_tag="text-classification", tags=["clfsweep"]
    )
    gaps = pipeline_gaps(info)
    differences = (
        "It gives the labels of `python -m src.predict` (same truncation, no prompt, no windows)."
        if not gaps
        else "It does not apply, so its answers can differ from `python -m src.predict`'s:\n\n"
        + "\n".join(f"- {gap}" for gap in gaps)
    )
    body = f"""
# {info.model or "clfsweep"} {info.method} classifier ({info.task})

Labels: {", ".join(info.label_names)}. Trained on at most {info.max_len} tokens per input.

## transformers

```python
from transformers import pipeline
classify = pipeline("text-classification", model="path/to/this/folder", truncation=True)
classify(["..."])
```

`truncation=True` cuts texts as training did (the tokenizer's `model_max_length` and
`truncation_side`); without it the pipeline feeds whole texts, longer than the model saw.
{differences}

## clfsweep and MLflow

`python -m src.predict --model DIR` and the logged MLflow model (`mlflow.pyfunc.load_model`,
input: a list or Series of texts, or a DataFrame with a `text` column) encode texts exactly as
training did: prompt, truncation or sliding windows, task and threshold ({METADATA_FILE}).
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def load_checkpoint(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, CheckpointInfo]:
    """Load a checkpoint directory written by `write_checkpoint` (safetensors only)."""
    check_checkpoint_dir(path)
    check_classifier(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True)
    meta = path / METADATA_FILE
    if meta.is_file():
        info = checkpoint_info(meta)
    else:
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        info = CheckpointInfo(label_names=labels)
    return model, tokenizer, info


def checkpoint_info(meta: Path) -> CheckpointInfo:
    """How training encoded the texts, read back from the checkpoint's record."""
    record = json_record(meta, "the checkpoint's record")
    known = {f.name for f in fields(CheckpointInfo)}
    unknown = sorted(set(record) - known)
    if unknown:
        raise UserError(
            f"{meta}: the checkpoint's record has fields {unknown} this version does not know "
            "(written by a newer clfsweep?): predict with the clfsweep version that trained it"
        )
    return CheckpointInfo(**record)


def check_classifier(path: Path) -> None:
    """Refuse a checkpoint that is not a sequence classifier of a task this version knows."""
    config = json_record(path / "config.json", "the model's config")
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise UserError(
            f"{path} holds a {architectures[0]} checkpoint, not a text classifier (a "
            "src.pretrain backbone?): give a model or run of `python -m src.train`"
        )
    meta = path / METADATA_FILE
    task = json_record(meta, "the checkpoint's record").get("task") if meta.is_file() else None
    if task is not None and task not in TASKS:
        raise UserError(
            f"{path} was trained for task {task!r}, which this version does not know "
            f"({', '.join(TASKS)}): predict with the clfsweep version that trained it"
        )
