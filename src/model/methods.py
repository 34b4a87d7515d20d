"""Fine-tuning methods: which parameters train (LoRA family, full, top blocks, head); the export."""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING, cast

from src.config.schema import MethodConfig, ModelConfig
from src.errors import UserError

if TYPE_CHECKING:  # torch, peft and transformers load when a model is built, not on import
    from peft import LoraConfig, PeftModel
    from torch import nn
    from transformers import BitsAndBytesConfig, PreTrainedModel

log = logging.getLogger(__name__)

METHODS = ("lora", "dora", "qlora", "sft", "head_only", "freeze_layers")
LORA_FAMILY = ("lora", "dora", "qlora")
# Methods that train backbone weights themselves, which need fp32 master weights.
TRAINS_BACKBONE_WEIGHTS = ("sft", "freeze_layers")
# The sequence-classification heads of transformers models, under the names PEFT uses for them.
HEAD_MODULES = ("classifier", "score")


def check_method(cfg: MethodConfig) -> None:
    """Reject impossible method settings before anything is loaded."""
    if cfg.name not in METHODS:
        raise UserError(f"method.name={cfg.name} is not one of {', '.join(METHODS)}")
    if cfg.name in LORA_FAMILY:
        if cfg.rank <= 0:
            raise UserError(f"method.rank must be a positive integer, got {cfg.rank}")
        if cfg.alpha is not None and cfg.alpha <= 0:
            raise UserError(
                f"method.alpha must be positive (or null for 2 x rank), got {cfg.alpha}"
            )
        if not 0 <= cfg.dropout < 1:
            raise UserError(f"method.dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.head_lr is not None and cfg.head_lr <= 0:
        raise UserError(f"method.head_lr must be > 0 (or null for trainer.lr), got {cfg.head_lr}")
    if cfg.name == "freeze_layers" and cfg.trainable_layers < 0:
        raise UserError(f"method.trainable_layers must be >= 0, got {cfg.trainable_layers}")
    if cfg.name == "qlora":
        check_qlora()


def check_method_fits(method: MethodConfig, preset: ModelConfig, model: PreTrainedModel) -> None:
    """The method's settings fit this architecture (`model` may live on the meta device): every
    LoRA target names modules PEFT can adapt, the top blocks to train exist."""
    if method.name in LORA_FAMILY:
        key = "method.target_modules" if method.target_modules else "model.lora_target_modules"
        check_targets(lora_config(method, preset), model, key)
    if method.name == "freeze_layers":
        check_trainable_layers(method.trainable_layers, len(transformer_blocks(model)))


def check_trainable_layers(trainable_layers: int, blocks: int) -> None:
    """freeze_layers can train at most every block the model has."""
    if trainable_layers > blocks:
        raise UserError(
            f"method.trainable_layers={trainable_layers}, but the model has {blocks} transformer"
            " blocks"
        )


def check_targets(config: LoraConfig, model: nn.Module, key: str) -> None:
    """Each target module matches a module LoRA can adapt, by PEFT's own matching rule: PEFT
    alone refuses only a list of which none matches, and ignores a misspelt one among others."""
    import dataclasses

    from peft.tuners.tuners_utils import check_target_module_exists
    from torch import nn

    targets = sorted(config.target_modules or [])
    if "all-linear" in targets:
        return
    adaptable = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    # The head trains in full (SEQ_CLS puts it in modules_to_save), so LoRA never adapts it.
    names = {n: m for n, m in model.named_modules() if n and not is_head_parameter(n)}
    leaves = sorted({n.rsplit(".", 1)[-1] for n, m in names.items() if isinstance(m, adaptable)})
    for target in targets:
        single = dataclasses.replace(config, target_modules=[target])
        matched = [m for n, m in names.items() if check_target_module_exists(single, n) is True]
        if not any(isinstance(m, adaptable) for m in matched):
            found = "only modules that LoRA cannot adapt" if matched else "no module"
            raise UserError(
                f"{key}: {target!r} matches {found} in this {type(model).__name__}; its"
                f" adaptable modules are named {', '.join(leaves)} (or use all-linear)"
            )


def check_qlora() -> None:
    """QLoRA's 4-bit weights need bitsandbytes' CUDA kernels: say so before importing it."""
    import torch

    if not torch.cuda.is_available():
        raise UserError(
            "method=qlora needs a CUDA GPU (4-bit weights run on bitsandbytes' CUDA kernels);"
            " on this machine use method=lora"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("method=qlora needs bitsandbytes: pip install -e '.[gpu]'")


def quantization(method: MethodConfig) -> BitsAndBytesConfig | None:
    """QLoRA's 4-bit NF4 storage with bf16 compute; None for the other methods."""
    if method.name != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def apply_method(
    model: PreTrainedModel, method: MethodConfig, preset: ModelConfig
) -> PreTrainedModel | PeftModel:
    """Make the method's parameters trainable: adapters + head, everything, top blocks, or head."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if method.name == "qlora":
        # Casts norms to fp32 and turns on gradient checkpointing, QLoRA's memory recipe.
        model = prepare_model_for_kbit_training(model)
    if method.name in LORA_FAMILY:
        embeddings = embedding_module(model) if method.train_embeddings else None
        return get_peft_model(model, lora_config(method, preset, embeddings))
    if method.name == "head_only":
        base = getattr(model, model.base_model_prefix)
        base.requires_grad_(False)
    if method.name == "freeze_layers":
        freeze_below_top(model, method.trainable_layers)
    return model


def lora_config(
    method: MethodConfig, preset: ModelConfig, embeddings: str | None = None
) -> LoraConfig:
    """PEFT LoRA / DoRA settings; SEQ_CLS makes PEFT train and save the head in full.

    `embeddings`: the name of the input embedding module, trained in full (merged at export).
    """
    from peft import LoraConfig, TaskType

    targets = list(method.target_modules or preset.lora_target_modules or ["all-linear"])
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=method.rank,
        lora_alpha=int(method.alpha) if method.alpha is not None else 2 * method.rank,
        lora_dropout=method.dropout,
        target_modules=targets,
        use_dora=method.name == "dora",
        use_rslora=method.use_rslora,
        modules_to_save=[embeddings] if embeddings else None,
    )


def embedding_module(model: PreTrainedModel) -> str:
    """The dotted name of the model's input embedding matrix (`model.embed_tokens`, ...)."""
    embeddings = model.get_input_embeddings()
    return next(name for name, module in model.named_modules() if module is embeddings)


def transformer_blocks(model: PreTrainedModel) -> nn.ModuleList:
    """The backbone's stack of transformer blocks (`layers`, `encoder.layer`, ...)."""
    from torch import nn

    n_layers = model.config.num_hidden_layers
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


def is_head_parameter(name: str) -> bool:
    """Whether a parameter name belongs to the classification head (PEFT-wrapped or not)."""
    return any(part in HEAD_MODULES for part in name.split("."))


def restrict_head(model: PreTrainedModel, n_labels: int) -> PreTrainedModel:
    """Keep the head's first `n_labels` outputs: drops auxiliary classes of data.mix at export."""
    if model.config.num_labels == n_labels:
        return model
    import torch
    from torch import nn

    name = next(n for n in HEAD_MODULES if isinstance(getattr(model, n, None), nn.Linear))
    old: nn.Linear = getattr(model, name)
    new = nn.Linear(old.in_features, n_labels, bias=old.bias is not None)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight[:n_labels])
        if old.bias is not None:
            new.bias.copy_(old.bias[:n_labels])
    setattr(model, name, new)
    names = cast(dict[int, str], model.config.id2label)
    id2label = {i: names[i] for i in range(n_labels)}
    model.config.id2label = id2label
    model.config.label2id = {label: i for i, label in id2label.items()}
    model.num_labels = n_labels  # type: ignore[assignment]  # a plain int attribute of the model
    return model


def export_model(model: PreTrainedModel | PeftModel) -> PreTrainedModel:
    """The deployable model: LoRA merged into the backbone (head kept), or the model itself."""
    from peft import PeftModel
    from transformers import PreTrainedModel

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
