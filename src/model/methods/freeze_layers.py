"""Top-layer fine-tuning: the top `method.trainable_layers` transformer blocks, everything above
them (final norm, pooler) and the head train in full; the embeddings and lower blocks freeze."""

from __future__ import annotations

from typing import TYPE_CHECKING

from src.config.errors import UserError
from src.config.schema import ModelConfig
from src.model.methods.method import Method

if TYPE_CHECKING:
    import optuna
    from omegaconf import DictConfig
    from torch import nn
    from transformers import PreTrainedModel

    from src.model.memory import Plan, Shape


class FreezeLayers(Method):
    """The top blocks and the head train, from fp32 master weights."""

    name = "freeze_layers"
    fp32_master_weights = True

    def check(self) -> None:
        """A count of blocks is at least 0."""
        super().check()
        if self.settings.trainable_layers < 0:
            raise UserError(
                f"method.trainable_layers must be >= 0, got {self.settings.trainable_layers}"
            )

    def check_fits(self, preset: ModelConfig, model: nn.Module) -> None:
        """The blocks to train exist."""
        check_trainable_layers(self.settings.trainable_layers, len(transformer_blocks(model)))

    def apply(self, model: PreTrainedModel, preset: ModelConfig) -> PreTrainedModel:
        """Freeze what lies below the top blocks."""
        freeze_below_top(model, self.settings.trainable_layers)
        return model

    @classmethod
    def levers(cls, cfg: DictConfig, trial: optuna.Trial) -> None:
        """How many top blocks train: up to the tiny preset's depth, else 4."""
        tiny = cfg.model.get("tiny")
        trial.suggest_int("method.trainable_layers", 1, tiny.num_layers if tiny else 4)

    @classmethod
    def trainable_parameters(cls, shape: Shape, plan: Plan) -> int:
        """The top blocks, the final norm / pooler and the head."""
        top = min(plan.trainable_layers, shape.layers) * shape.block_params()
        return top + shape.head_params(plan.num_labels)

    @classmethod
    def blocks_keeping_activations(cls, shape: Shape, plan: Plan) -> int:
        """Blocks below the first trainable weight keep nothing for the backward pass."""
        return min(plan.trainable_layers, shape.layers)


def check_trainable_layers(trainable_layers: int, blocks: int) -> None:
    """freeze_layers can train at most every block the model has."""
    if trainable_layers > blocks:
        raise UserError(
            f"method.trainable_layers={trainable_layers}, but the model has {blocks} transformer"
            " blocks"
        )


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The backbone's stack of transformer blocks (`layers`, `encoder.layer`, ...)."""
    from torch import nn

    n_layers = model.config.num_hidden_layers  # type: ignore[union-attr]
    return next(
        module
        for module in model.modules()
        if isinstance(module, nn.ModuleList) and len(module) == n_layers
    )


def freeze_below_top(model: PreTrainedModel, trainable_layers: int) -> None:
    """Train the top blocks and everything after them (final norm, pooler, head) in full.

    Parameters registered before the first block (the embeddings) and the lower blocks freeze.
    """
    blocks = transformer_blocks(model)
    check_trainable_layers(trainable_layers, len(blocks))
    in_blocks = {id(p) for p in blocks.parameters()}
    frozen_blocks = {
        id(p) for b in blocks[: len(blocks) - trainable_layers] for p in b.parameters()
    }
    seen_block = False
    for param in model.parameters():
        seen_block = seen_block or id(param) in in_blocks
        param.requires_grad_(seen_block and id(param) not in frozen_blocks)
