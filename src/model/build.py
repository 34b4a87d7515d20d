"""One classifier for one method: the backbone with a fresh head, its weights stored in the
precision the method needs, its trainable parameters chosen by the method.

Training, the label-noise scorer's folds and the benchmarks build through `build_classifier`;
the memory estimate asks the same method objects (src/model/methods/) and precision rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from src.config.schema import MethodConfig, ModelConfig, Precision
from src.model.backbones import Backbone, load_classifier
from src.model.methods import Method, count_parameters, method_of
from src.model.precision import storage_precision

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True, eq=False)  # eq: a model has no meaningful equality
class Built:
    """The model, ready for the Trainer, its parameter counts and the method that made it (its
    learning rates, its export)."""

    model: PreTrainedModel  # a PeftModel for PEFT's methods: it acts as the model it wraps
    trainable: int
    total: int
    method: Method


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

    chosen = method_of(method)
    stored = storage_precision(chosen.fp32_master_weights, precision)
    classifier = load_classifier(
        backbone,
        tokenizer,
        label_names,
        torch.bfloat16 if stored == Precision.bf16 else torch.float32,
        model.attn_implementation,
        problem_type=problem_type,
        quantization=chosen.quantization(),
    )
    adapted = cast("PreTrainedModel", chosen.apply(classifier, model))
    trainable, total = count_parameters(adapted)
    return Built(adapted, trainable, total, chosen)
