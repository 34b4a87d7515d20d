"""A frozen backbone and a trained classification head (a linear probe)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from src.config.schema import ModelConfig
from src.model.methods.method import Method, head_size

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from src.model.memory import Plan, Shape


class HeadOnly(Method):
    """Only the classification layer trains."""

    name = "head_only"

    def apply(self, model: PreTrainedModel, preset: ModelConfig) -> PreTrainedModel:
        """Freeze the backbone below the head."""
        getattr(model, model.base_model_prefix).requires_grad_(False)
        return model

    @classmethod
    def trainable_parameters(cls, shape: Shape, plan: Plan) -> int:
        """The classification layer."""
        return head_size(shape, plan.num_labels)

    @classmethod
    def blocks_keeping_activations(cls, shape: Shape, plan: Plan) -> int:
        """None: no block has a trainable weight."""
        return 0
