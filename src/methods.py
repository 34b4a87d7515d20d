"""Fine-tuning methods: which parameters train (LoRA, full, head only), and the export."""

from __future__ import annotations

import logging

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import PreTrainedModel

from src.config import MethodConfig, ModelConfig
from src.errors import UserError

log = logging.getLogger(__name__)

METHODS = ("lora", "sft", "head_only")


def check_method(cfg: MethodConfig) -> None:
    """Reject impossible method settings before anything is loaded."""
    if cfg.name not in METHODS:
        raise UserError(f"method.name={cfg.name} is not one of {', '.join(METHODS)}")
    if cfg.name == "lora":
        if cfg.rank <= 0:
            raise UserError(f"method.rank must be a positive integer, got {cfg.rank}")
        if cfg.alpha is not None and cfg.alpha <= 0:
            raise UserError(
                f"method.alpha must be positive (or null for 2 x rank), got {cfg.alpha}"
            )
        if not 0 <= cfg.dropout < 1:
            raise UserError(f"method.dropout must be in [0, 1), got {cfg.dropout}")


def apply_method(
    model: PreTrainedModel, method: MethodConfig, preset: ModelConfig
) -> PreTrainedModel | PeftModel:
    """Make the method's parameters trainable: LoRA adapters + head, everything, or the head."""
    if method.name == "lora":
        return get_peft_model(model, lora_config(method, preset))
    if method.name == "head_only":
        base = getattr(model, model.base_model_prefix)
        base.requires_grad_(False)
    return model


def lora_config(method: MethodConfig, preset: ModelConfig) -> LoraConfig:
    """PEFT LoRA settings; SEQ_CLS makes PEFT train and save the classification head in full."""
    targets = list(method.target_modules or preset.lora_target_modules or ["all-linear"])
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=method.rank,
        lora_alpha=method.alpha if method.alpha is not None else 2 * method.rank,
        lora_dropout=method.dropout,
        target_modules=targets,
    )


def export_model(model: PreTrainedModel | PeftModel) -> PreTrainedModel:
    """The deployable model: LoRA merged into the backbone (head kept), or the model itself."""
    if isinstance(model, PeftModel):
        merged = model.merge_and_unload()
        assert isinstance(merged, PreTrainedModel)
        return merged
    return model


def count_parameters(model: PreTrainedModel | PeftModel) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
