"""A loaded checkpoint that classifies texts the way its run encoded them (prompt, truncation
or windows, task and threshold): used by `python -m src.predict` and the MLflow pyfunc model."""

from __future__ import annotations

import math
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from src.checkpoint.files import CheckpointInfo, load_checkpoint
from src.config.errors import UserError
from src.config.schema import TaskConfig
from src.inputs.long_text import InputSpec, encode
from src.task.heads import make_task
from src.training.inference import predict_logits

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Classifier:
    """A loaded checkpoint that classifies texts the way its run encoded them."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    info: CheckpointInfo

    @classmethod
    def load(cls, model_dir: Path) -> Classifier:
        """Load a checkpoint directory (safetensors only)."""
        return cls(*load_checkpoint(model_dir))

    def __call__(
        self, texts: Sequence[object], batch_size: int = 32, max_len: int | None = None
    ) -> list[dict]:
        """Label (labels, value) and probabilities for each text, in input order.

        Texts are encoded as in training (prompt, truncation or sliding windows, whose logits
        are aggregated per text); the task and its threshold come from the checkpoint metadata.
        """
        texts = check_texts(texts)
        info = self.info
        spec = InputSpec(**info.inputs) if info.inputs else InputSpec(max_len=info.max_len)
        encoded = encode(texts, self.tokenizer, replace(spec, max_len=max_len or spec.max_len))
        logits, _ = predict_logits(self.model, self.tokenizer, encoded.inputs, batch_size)
        id2label: dict[int, str] = dict(self.model.config.id2label or {})  # type: ignore[assignment]
        labels = [id2label[i] for i in range(len(id2label))]
        task = make_task(TaskConfig(name=info.task, threshold=info.threshold), labels)
        answers = task.answers(encoded.aggregate(logits))
        return [{"text": text} | answer for text, answer in zip(texts, answers, strict=True)]


def check_texts(texts: Sequence[object]) -> list[str]:
    """The texts, if each is a string with something in it; else one line naming the first
    that is not (an empty text would reach the model as an empty input)."""
    checked = []
    for number, text in enumerate(texts, start=1):
        if _missing(text):
            raise UserError(f"text {number} is missing (None / NaN): give one text per row")
        if not isinstance(text, str):
            raise UserError(
                f"text {number} is {type(text).__name__} {reprlib.repr(text)}, not a string: "
                "give one text per row"
            )
        if not text.strip():
            raise UserError(f"text {number} is {'empty' if not text else 'blank'}: give a text")
        checked.append(text)
    return checked


def _missing(value: object) -> bool:
    """None, NaN, pd.NA or NaT: a missing value of a DataFrame cell."""
    nan = isinstance(value, float) and math.isnan(value)
    return value is None or value is pd.NA or value is pd.NaT or nan


def classify(
    model_dir: Path, texts: Sequence[object], batch_size: int, max_len: int | None
) -> list[dict]:
    """Classify texts with the checkpoint in `model_dir`."""
    return Classifier.load(model_dir)(texts, batch_size, max_len)
