"""LoRA: low-rank adapters on the backbone's projections (PEFT), the head trained in full;
merged into the backbone at export. DoRA, QLoRA and LoRA+ build on it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from src.config.errors import UserError
from src.config.schema import ModelConfig
from src.model.methods.method import Method, built, check_targets, head_size

if TYPE_CHECKING:
    import optuna
    from omegaconf import DictConfig
    from peft import LoraConfig, PeftModel
    from torch import nn
    from transformers import PreTrainedModel

    from src.model.memory import Plan, Shape


class Lora(Method):
    """LoRA adapters (rank `method.rank`, alpha `method.alpha` or 2 x rank) and the head."""

    name = "lora"
    trains_adapters = True

    def check(self) -> None:
        """Rank, alpha and dropout in range (before torch and PEFT load)."""
        super().check()
        s = self.settings
        if s.rank <= 0:
            raise UserError(f"method.rank must be a positive integer, got {s.rank}")
        if s.alpha is not None and s.alpha <= 0:
            raise UserError(f"method.alpha must be positive (or null for 2 x rank), got {s.alpha}")
        if not 0 <= s.dropout < 1:
            raise UserError(f"method.dropout must be in [0, 1), got {s.dropout}")

    def check_fits(self, preset: ModelConfig, model: nn.Module) -> None:
        """PEFT accepts the LoRA config, and every target names modules it can adapt here."""
        key = (
            "method.target_modules" if self.settings.target_modules else "model.lora_target_modules"
        )
        check_targets(built(lambda: self.peft_config(self.target_modules(preset))), model, key)

    def peft_config(self, targets: list[str], embeddings: str | None = None) -> LoraConfig:
        """PEFT's LoRA settings; SEQ_CLS makes PEFT train and save the head in full.

        `embeddings`: the name of the input embedding module, trained in full (merged at export).
        """
        from peft import LoraConfig, TaskType

        s = self.settings
        return LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=s.rank,
            lora_alpha=int(s.alpha) if s.alpha is not None else 2 * s.rank,
            lora_dropout=s.dropout,
            target_modules=targets,
            use_dora=False,
            use_rslora=s.use_rslora,
            modules_to_save=[embeddings] if embeddings else None,
        )

    def apply(self, model: PreTrainedModel, preset: ModelConfig) -> PeftModel:
        """The backbone wrapped with adapters (and the embedding matrix, if it trains)."""
        from peft import get_peft_model

        embeddings = embedding_module(model) if self.settings.train_embeddings else None
        return get_peft_model(model, self.peft_config(self.target_modules(preset), embeddings))

    @classmethod
    def levers(cls, cfg: DictConfig, trial: optuna.Trial) -> None:
        """The rank, log-uniform over 4..128."""
        trial.suggest_int("method.rank", 4, 128, log=True)

    @classmethod
    def trainable_parameters(cls, shape: Shape, plan: Plan) -> int:
        """Adapters (A and B of every targeted layer), the head, the embeddings if they train."""
        adapters = shape.targeted(plan.target_modules)
        per_block = sum(plan.rank * (a + b) for a, b, _ in adapters.values())
        pooler = plan.rank * 2 * shape.hidden if shape.pooler_targeted(plan.target_modules) else 0
        embeddings = shape.vocab * shape.hidden if plan.train_embeddings else 0
        return shape.layers * per_block + pooler + head_size(shape, plan.num_labels) + embeddings

    @classmethod
    def weight_bytes(cls, shape: Shape, plan: Plan) -> float:
        """The backbone as stored, and fp32 adapters (PEFT upcasts them) with the head's copy."""
        return super().weight_bytes(shape, plan) + 4.0 * cls.trainable_parameters(shape, plan)

    @classmethod
    def activations_per_token(cls, shape: Shape, plan: Plan, p: float) -> float:
        """Each adapter keeps its dropout output and mask (nothing extra without dropout), and
        its rank-sized intermediate."""
        adapters = shape.targeted(plan.target_modules)
        copy = (p + 1) * sum(a for a, _, _ in adapters.values()) if plan.lora_dropout > 0 else 0
        return copy + p * plan.rank * len(adapters)


def embedding_module(model: PreTrainedModel) -> str:
    """The dotted name of the model's input embedding matrix (`model.embed_tokens`, ...)."""
    embeddings = model.get_input_embeddings()
    return next(name for name, module in model.named_modules() if module is embeddings)
