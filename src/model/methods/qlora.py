"""QLoRA: the backbone frozen in 4-bit NF4 (bitsandbytes), LoRA adapters and head in full
precision; the export keeps the 4-bit weights with the adapters merged in."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from src.config.errors import UserError
from src.config.schema import ModelConfig
from src.model.methods.lora import Lora

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import BitsAndBytesConfig, PreTrainedModel

    from src.model.memory import Plan, Shape

NF4_BYTES = 4.127 / 8  # 4-bit weights + double-quantised absmax per 64 weights


class QLora(Lora):
    """LoRA on a 4-bit backbone; needs a CUDA GPU and bitsandbytes."""

    name = "qlora"
    quantizes_backbone = True
    # PEFT's prepare_model_for_kbit_training turns gradient checkpointing on.
    forces_gradient_checkpointing = True

    def check(self) -> None:
        """LoRA's checks, and the GPU and library 4-bit weights need."""
        super().check()
        check_qlora()

    def quantization(self) -> BitsAndBytesConfig:
        """4-bit NF4 storage with bf16 compute."""
        import torch
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )

    def apply(self, model: PreTrainedModel, preset: ModelConfig) -> PeftModel:
        """QLoRA's memory recipe first (norms cast to fp32, gradient checkpointing), then LoRA."""
        from peft import prepare_model_for_kbit_training

        return super().apply(prepare_model_for_kbit_training(model), preset)

    @classmethod
    def weight_bytes(cls, shape: Shape, plan: Plan) -> float:
        """NF4 linear layers; other weights fp32 (prepare_model_for_kbit_training upcasts them);
        fp32 adapters and head."""
        linear = shape.layers * shape.block_linear_params()
        rest = shape.parameters(plan.num_labels) - linear
        return linear * NF4_BYTES + rest * 4.0 + 4.0 * cls.trainable_parameters(shape, plan)


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
