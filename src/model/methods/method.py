"""What every fine-tuning method answers: its checks, which parameters train, how it changes a
backbone, its precision and memory needs, its learning rates, its export.

A method is one subclass of `Method` in a module of this package, named by its yaml in
conf/method (`name:`); src/model/methods/__init__.py finds it there. The defaults here are a
method that trains the backbone as loaded (weights stored in the training precision).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, cast

from src.config.errors import UserError
from src.config.schema import MethodConfig, ModelConfig, Precision
from src.model.precision import storage_precision

if TYPE_CHECKING:  # torch, peft and transformers load when a model is built, not on import
    import optuna
    from omegaconf import DictConfig
    from peft import PeftConfig, PeftModel
    from torch import nn
    from transformers import BitsAndBytesConfig, PreTrainedModel

    from src.model.memory import Plan, Shape

# The sequence-classification heads of transformers models, under the names PEFT uses for them.
HEAD_MODULES = ("classifier", "score")


class Method:
    """A fine-tuning method with its settings (`settings`: the method's own schema)."""

    name: ClassVar[str] = ""  # the yaml's `name:`; empty for classes that are no method
    # The method's typed settings: a subclass of MethodConfig adds the method's own fields (its
    # yaml names the schema in its defaults list, as `/method_<name>_schema@_here_`).
    schema: ClassVar[type[MethodConfig]] = MethodConfig
    # Backbone weights train: fp32 master weights (autocast computes in bf16).
    fp32_master_weights: ClassVar[bool] = False
    # Trains small adapters on a frozen backbone: the estimate offers no LoRA instead of it.
    trains_adapters: ClassVar[bool] = False
    # Stores the backbone quantised (4-bit): the estimate offers no QLoRA instead of it.
    quantizes_backbone: ClassVar[bool] = False
    # Turns gradient checkpointing on whatever trainer.gradient_checkpointing says.
    forces_gradient_checkpointing: ClassVar[bool] = False
    # Fields of the method's own schema that need no check, and why (tests/test_config.py
    # tries a bad value of every other one).
    no_check_needed: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: MethodConfig) -> None:
        self.settings = settings

    # -- settings ---------------------------------------------------------------------------

    def check(self) -> None:
        """Reject impossible settings before anything is loaded (extended by each method)."""
        head_lr = self.settings.head_lr
        if head_lr is not None and head_lr <= 0:
            raise UserError(f"method.head_lr must be > 0 (or null for trainer.lr), got {head_lr}")

    def check_fits(self, preset: ModelConfig, model: nn.Module) -> None:
        """The settings fit this architecture (`model` may live on the meta device)."""

    def target_modules(self, preset: ModelConfig) -> list[str]:
        """The modules adapters wrap: `method.target_modules`, else the preset's projections,
        else every linear layer (the estimate's LoRA alternative adapts these too)."""
        return list(self.settings.target_modules or preset.lora_target_modules or ["all-linear"])

    # -- the model --------------------------------------------------------------------------

    def quantization(self) -> BitsAndBytesConfig | None:
        """How the backbone's weights load quantised; None: as stored."""
        return None

    def apply(self, model: PreTrainedModel, preset: ModelConfig) -> PreTrainedModel | PeftModel:
        """Make the method's parameters trainable (here: every parameter, as loaded)."""
        return model

    def learning_rate(self, parameter: str, lr: float) -> float:
        """The learning rate of a trainable parameter: `method.head_lr` for the head, else `lr`."""
        head_lr = self.settings.head_lr
        return head_lr if head_lr is not None and is_head_parameter(parameter) else lr

    def export(self, model: PreTrainedModel | PeftModel) -> PreTrainedModel:
        """The deployable model: adapters merged into the backbone (head kept), or the model."""
        return export_model(model)

    @classmethod
    def levers(cls, cfg: DictConfig, trial: optuna.Trial) -> None:
        """Sample the method's own hyperparameters in a sweep (none by default)."""

    # -- the memory estimate (src/model/memory.py) ------------------------------------------

    @classmethod
    def trainable_parameters(cls, shape: Shape, plan: Plan) -> int:
        """Parameters the optimizer updates: here every one."""
        return shape.parameters(plan.num_labels)

    @classmethod
    def weight_bytes(cls, shape: Shape, plan: Plan) -> float:
        """Bytes of all weights as the run stores them."""
        stored = storage_precision(cls.fp32_master_weights, Precision(plan.precision))
        return shape.parameters(plan.num_labels) * (2.0 if stored == Precision.bf16 else 4.0)

    @classmethod
    def activations_per_token(cls, shape: Shape, plan: Plan, p: float) -> float:
        """Bytes a block keeps per token beyond the backbone's own (adapters), at `p` bytes a
        value."""
        return 0.0

    @classmethod
    def blocks_keeping_activations(cls, shape: Shape, plan: Plan) -> int:
        """Blocks that save activations for the backward pass: those at and above the lowest
        trainable weight."""
        return shape.layers


def is_head_parameter(name: str) -> bool:
    """Whether a parameter name belongs to the classification head (PEFT-wrapped or not)."""
    return any(part in HEAD_MODULES for part in name.split("."))


def head_size(shape: Shape, num_labels: int) -> int:
    """Parameters of the classification layer alone (no pooler, no final norm)."""
    return shape.hidden * num_labels + (num_labels if shape.encoder else 0)


def built(make: Callable[[], PeftConfig]) -> PeftConfig:
    """The PEFT config `make()` builds; its refusal of a setting as one line."""
    try:
        config: PeftConfig = make()
    except (ValueError, TypeError) as exc:
        reason = " ".join(str(exc).split())
        raise UserError(f"method: PEFT refuses these settings: {reason}") from None
    return config


def check_targets(config: Any, model: nn.Module, key: str) -> None:
    """Each target module of a PEFT config (LoRA's, IA3's, ...) matches a module PEFT can
    adapt, by PEFT's own matching rule: PEFT alone refuses only a list of which none matches,
    and ignores a misspelt one among others."""
    import copy

    from peft.tuners.tuners_utils import check_target_module_exists
    from torch import nn

    targets = sorted(config.target_modules or [])
    if "all-linear" in targets:
        return
    adaptable = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    # The head trains in full (SEQ_CLS puts it in modules_to_save), so no adapter wraps it.
    names = {n: m for n, m in model.named_modules() if n and not is_head_parameter(n)}
    leaves = sorted({n.rsplit(".", 1)[-1] for n, m in names.items() if isinstance(m, adaptable)})
    for target in targets:
        single = copy.copy(config)  # not rebuilt: the other settings may depend on all targets
        single.target_modules = {target}
        matched = [m for n, m in names.items() if check_target_module_exists(single, n) is True]
        if not any(isinstance(m, adaptable) for m in matched):
            found = "only modules that PEFT cannot adapt" if matched else "no module"
            raise UserError(
                f"{key}: {target!r} matches {found} in this {type(model).__name__}; its"
                f" adaptable modules are named {', '.join(leaves)} (or use all-linear)"
            )


def export_model(model: PreTrainedModel | PeftModel) -> PreTrainedModel:
    """A PEFT model's adapters merged into its backbone (head kept), or the model itself."""
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
