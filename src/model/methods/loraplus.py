"""LoRA+: LoRA whose B matrices learn `method.loraplus_lr_ratio` times faster than the A
matrices (Hayou et al. 2024; PEFT's `create_loraplus_optimizer`); merged at export like LoRA.

Unlike PEFT's optimizer, only the B matrices get the higher rate: the head keeps trainer.lr (or
method.head_lr), whatever the shape of its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from src.config.errors import UserError
from src.config.schema import MethodConfig
from src.model.methods.lora import Lora


@dataclass
class LoraPlusSettings(MethodConfig):
    """method=loraplus's settings: LoRA's and the B matrices' learning-rate ratio."""

    loraplus_lr_ratio: float = 16.0  # lr of the B matrices / lr of the A matrices (trainer.lr)


class LoraPlus(Lora):
    """LoRA adapters and head; the B matrices at `loraplus_lr_ratio` x trainer.lr."""

    name = "loraplus"
    schema = LoraPlusSettings
    settings: LoraPlusSettings

    def check(self) -> None:
        """LoRA's checks, and a ratio of at least 1 (1 is plain LoRA)."""
        super().check()
        ratio = self.settings.loraplus_lr_ratio
        if not ratio >= 1:
            raise UserError(
                f"method.loraplus_lr_ratio must be >= 1 (the B matrices learn faster; 1 is plain"
                f" LoRA), got {ratio}"
            )

    def learning_rate(self, parameter: str, lr: float) -> float:
        """The B matrices' rate is `loraplus_lr_ratio` x lr; the others' as for LoRA."""
        rate = super().learning_rate(parameter, lr)
        return rate * self.settings.loraplus_lr_ratio if ".lora_B." in parameter else rate
