"""(IA)³: learned vectors that rescale the keys, values and feed-forward activations of a frozen
backbone (PEFT's IA3, Liu et al. 2022), the head trained in full; merged at export like LoRA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from src.config.errors import UserError
from src.config.schema import MethodConfig, ModelConfig
from src.model.methods.method import Method, built, check_targets, head_size

if TYPE_CHECKING:
    from peft import IA3Config, PeftModel
    from torch import nn
    from transformers import PreTrainedModel

    from src.model.memory import Plan, Shape

# The paper's placement, which the estimate assumes when method.target_modules is null (PEFT's
# default per architecture differs by a projection for some: queries instead of keys).
PAPER_TARGETS = {
    "decoder": ("k_proj", "v_proj", "down_proj"),
    "encoder": ("key", "value", "output.dense"),
}
PAPER_FEEDFORWARD = ("down_proj", "output.dense")


@dataclass
class IA3Settings(MethodConfig):
    """method=ia3's settings: the shared ones (target_modules, head_lr) and its own."""

    # Targets whose input (not output) is rescaled, as the paper's feed-forward layers; a subset
    # of the targets. null: PEFT's default for the architecture among the targets.
    feedforward_modules: list[str] | None = None


class IA3(Method):
    """Rescaling vectors on the targets (`method.target_modules`, null: PEFT's default for the
    architecture) and the head."""

    name = "ia3"
    schema = IA3Settings
    settings: IA3Settings
    trains_adapters = True

    def target_modules(self, preset: ModelConfig) -> list[str]:
        """`method.target_modules`; empty: PEFT's default for the architecture."""
        return list(self.settings.target_modules or [])

    def check_fits(self, preset: ModelConfig, model: nn.Module) -> None:
        """PEFT accepts the IA3 config, and every target names modules it can adapt here."""
        key = "method.target_modules"
        check_targets(built(lambda: self.peft_config(model)), model, key)

    def peft_config(self, model: nn.Module) -> IA3Config:
        """PEFT's IA3 settings for `model`; SEQ_CLS makes PEFT train and save the head in full."""
        from peft import IA3Config, TaskType
        from peft.utils.constants import (
            TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD,
        )
        from peft.utils.constants import (
            TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS,
        )

        model_type = str(model.config.model_type)  # type: ignore[union-attr]
        targets = list(self.settings.target_modules or TARGETS.get(model_type, []))
        if not targets:
            raise UserError(
                f"method=ia3 knows no default targets for model_type={model_type}: set"
                " method.target_modules (and method.feedforward_modules)"
            )
        feedforward = self.settings.feedforward_modules
        if feedforward is None:
            feedforward = [m for m in FEEDFORWARD.get(model_type, []) if m in targets]
        if not set(feedforward) <= set(targets):
            raise UserError(
                f"method.feedforward_modules={list(feedforward)} must be among the target modules"
                f" ({', '.join(targets)})"
            )
        return IA3Config(
            task_type=TaskType.SEQ_CLS, target_modules=targets, feedforward_modules=feedforward
        )

    def apply(self, model: PreTrainedModel, preset: ModelConfig) -> PeftModel:
        """The backbone wrapped with IA3 vectors; the head trains in full."""
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(model))

    @classmethod
    def vectors(cls, shape: Shape, plan: Plan) -> dict[str, int]:
        """The length of each block's rescaling vector by layer: the input width of a
        feed-forward target, the output width of another."""
        targets = plan.target_modules or PAPER_TARGETS["encoder" if shape.encoder else "decoder"]
        feedforward = shape.targeted(PAPER_FEEDFORWARD)
        return {
            name: fan_in if name in feedforward else fan_out
            for name, (fan_in, fan_out, _) in shape.targeted(targets).items()
        }

    @classmethod
    def trainable_parameters(cls, shape: Shape, plan: Plan) -> int:
        """The vectors of every block and the head."""
        return shape.layers * sum(cls.vectors(shape, plan).values()) + head_size(
            shape, plan.num_labels
        )

    @classmethod
    def weight_bytes(cls, shape: Shape, plan: Plan) -> float:
        """The backbone as stored, fp32 vectors and the head's trained copy."""
        return super().weight_bytes(shape, plan) + 4.0 * cls.trainable_parameters(shape, plan)

    @classmethod
    def activations_per_token(cls, shape: Shape, plan: Plan, p: float) -> float:
        """Each rescaling keeps the activation it multiplies (for its vector's gradient)."""
        return p * sum(cls.vectors(shape, plan).values())
