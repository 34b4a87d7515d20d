"""DoRA (weight-decomposed LoRA): LoRA on each weight's direction and a trained magnitude per
output; the same settings as LoRA, merged into the backbone at export."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from src.model.methods.lora import Lora

if TYPE_CHECKING:
    from peft import LoraConfig

    from src.model.memory import Plan, Shape


class Dora(Lora):
    """LoRA with PEFT's `use_dora`."""

    name = "dora"

    def peft_config(self, targets: list[str], embeddings: str | None = None) -> LoraConfig:
        """LoRA's settings with the magnitude vectors."""
        return dataclasses.replace(super().peft_config(targets, embeddings), use_dora=True)

    @classmethod
    def trainable_parameters(cls, shape: Shape, plan: Plan) -> int:
        """LoRA's, and one magnitude per output of every adapted layer."""
        magnitudes = sum(b for _, b, _ in shape.targeted(plan.target_modules).values())
        return super().trainable_parameters(shape, plan) + shape.layers * magnitudes
