"""Which precision a run computes in, and which its weights are stored in.

One rule for every caller: training, domain-adaptive pretraining, the label-noise scorer's folds
and the memory estimate (which asks it for a GPU it may not see).
"""

from __future__ import annotations

from dataclasses import dataclass

from src.config.errors import UserError
from src.config.schema import Precision


@dataclass(frozen=True)
class Device:
    """What the accelerator can do: CUDA at all, and bf16 on it."""

    cuda: bool
    bf16: bool

    @classmethod
    def visible(cls) -> Device:
        """This process's device (torch is imported only here)."""
        import torch

        cuda = torch.cuda.is_available()
        return cls(cuda=cuda, bf16=cuda and torch.cuda.is_bf16_supported())


def resolve_precision(precision: Precision, device: Device | None = None) -> Precision:
    """`auto`: bf16 on GPUs that support it, fp32 otherwise (CPU); half precisions need CUDA."""
    device = device or Device.visible()
    if precision != Precision.auto:
        if precision != Precision.fp32 and not device.cuda:
            raise UserError(
                f"trainer.precision={precision.value} needs a CUDA GPU; use fp32 or auto"
            )
        return precision
    return Precision.bf16 if device.bf16 else Precision.fp32


def storage_precision(fp32_master_weights: bool, precision: Precision) -> Precision:
    """Frozen backbone weights are stored in bf16 under bf16 training; a method that trains
    backbone weights keeps fp32 master weights (autocast computes in bf16)."""
    if precision == Precision.bf16 and not fp32_master_weights:
        return Precision.bf16
    return Precision.fp32
