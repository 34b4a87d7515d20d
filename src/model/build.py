"""One classifier for one method: the backbone with a fresh head, its weights stored in the
precision the method needs, its trainable parameters chosen by the method.

Training, the label-noise scorer's folds and the benchmarks build through `build_classifier`;
the memory estimate asks the same rules (src/model/precision.py, src/model/methods.py). A new
method is added in methods.py, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from src.config.schema import MethodConfig, ModelConfig, Precision
from src.model.backbones import Backbone, load_classifier
from src.model.methods import apply_method, count_parameters, quantization
from src.model.precision import storage_precision

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True, eq=False)  # eq: a model has no meaningful equality
class Built:
    """The model, ready for the Trainer, and its parameter counts."""

    model: PreTrainedModel  # a PeftModel for the LoRA family: it acts as the model it wraps
    trainable: int
    total: int


def build_classifier(
    backbone: Backbone,
    tokenizer: PreTrainedTokenizerBase,
    model: ModelConfig,
    method: MethodConfig,
    label_names: Sequence[str],
    precision: Precision,
    *,
    problem_type: str | None = None,
) -> Built:
    """Backbone + fresh head (one output per label, or one value), method's parameters trainable.

    `precision` is the resolved training precision.
    """
    import torch

    stored = storage_precision(method.name, precision)
    classifier = load_classifier(
        backbone,
        tokenizer,
        label_names,
        torch.bfloat16 if stored == Precision.bf16 else torch.float32,
        model.attn_implementation,
        problem_type=problem_type,
        quantization=quantization(method),
    )
    adapted = cast("PreTrainedModel", apply_method(classifier, method, model))
    trainable, total = count_parameters(adapted)
    return Built(adapted, trainable, total)
