"""How many GPUs a run needs, and how its processes share the work (trainer.strategy).

A run that fits one GPU by the memory estimate (`src.model.memory`) gets one; a larger one the
fewest GPUs on which FSDP (torch's `fully_shard`: parameters, gradients and optimizer states
split over the processes, like ZeRO-3) fits it. DDP copies the whole model to every GPU: it
speeds up a run that fits, it never makes one fit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from src.config.errors import UserError
from src.config.schema import Strategy
from src.model.memory import (
    GIB,
    HEADROOM,
    Estimate,
    Plan,
    Shape,
    estimate,
    num_labels_of,
    plan_from_config,
    shape_for,
    shape_of,
    visible_gpu,
)
from src.model.processes import world_size

MAX_GPUS = 64

STRATEGY_NAMES = {"single": "one GPU", "ddp": "DDP", "fsdp": "FSDP"}


def sharded(shape: Shape, plan: Plan, processes: int) -> Estimate:
    """The memory of one process of `plan` sharded with FSDP over `processes`."""
    return estimate(shape, replace(plan, zero_stage=3, shards=processes))


def fits(total: float, gpu_bytes: float) -> bool:
    """Whether `total` bytes fit a card of `gpu_bytes`, with the allocator's headroom."""
    return total <= HEADROOM * gpu_bytes


def gpus_needed(shape: Shape, plan: Plan, gpu_bytes: float, strategy: Strategy) -> int | None:
    """The fewest GPUs of `gpu_bytes` the run fits: 1 if it fits one, else the fewest FSDP
    fits on (not with trainer.strategy=ddp); None if none up to MAX_GPUS."""
    if fits(estimate(shape, plan).total, gpu_bytes):
        return 1
    if strategy == Strategy.ddp:
        return None
    for n in range(2, MAX_GPUS + 1):
        if fits(sharded(shape, plan, n).total, gpu_bytes):
            return n
    return None


def resolve_strategy(strategy: Strategy, processes: int, fits_one: bool) -> str:
    """What a run of `processes` processes does: single, ddp or fsdp (auto: FSDP only when the
    run does not fit one GPU)."""
    if processes <= 1:
        return "single"
    if strategy == Strategy.auto:
        return "ddp" if fits_one else "fsdp"
    return strategy.value


def run_strategy(cfg: Any, checkpoint: Path, num_labels: int) -> str:
    """single, ddp or fsdp for this run of $WORLD_SIZE processes (auto: FSDP when the estimate
    says the run does not fit this process's GPU)."""
    processes = world_size()
    strategy = Strategy(cfg.trainer.strategy)
    gpu = visible_gpu()
    fits_one = True
    if processes > 1 and strategy == Strategy.auto and gpu is not None:
        plan = replace(plan_from_config(cfg, num_labels), zero_stage=0, shards=1)
        fits_one = fits(estimate(shape_of(checkpoint), plan).total, gpu[1])
    return resolve_strategy(strategy, processes, fits_one)


def block_classes(model: Any) -> list[str]:
    """The classes FSDP shards by: the backbone's blocks (`_no_split_modules`), found under a
    PEFT wrapper too."""
    for module in model.modules():
        names = getattr(module, "_no_split_modules", None)
        if names:
            return [str(name) for name in names]
    raise ValueError(f"{type(model).__name__} names no blocks (_no_split_modules) to shard by")


def is_sharded(model: Any) -> bool:
    """Whether FSDP holds the model's parameters (as DTensors, one shard on each process)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def shard(model: Any) -> None:
    """Shard `model` (method applied) over this run's processes with torch's FSDP2: each block
    (`block_classes`), then the root for the rest, as accelerate does on GPUs. We shard, not
    accelerate: on CPU processes it runs DDP instead, and sharding before PEFT (transformers'
    sharded loading) breaks PEFT's copy of the head. The Trainer is told, so it neither wraps
    the model in DDP nor shards it again; GPUs and CPUs take this one path."""
    from torch.distributed.fsdp import fully_shard

    from src.config.private_api import declare_sharded

    blocks = set(block_classes(model))
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module)
    fully_shard(model)
    declare_sharded(model)


@dataclass(frozen=True)
class Placement:
    """What one job needs: GPUs, how its processes share the work, memory per GPU."""

    gpus: int
    strategy: str  # single | ddp | fsdp
    per_gpu: float  # bytes, by the estimate


def placement(cfg: Any, gpu_bytes: float, fixed_gpus: int | None = None) -> Placement:
    """The GPUs, strategy and per-GPU memory of a job of `cfg` on cards of `gpu_bytes`
    (`fixed_gpus`: hydra.sweeper.gpus_per_trial as the user fixed it)."""
    shape, name = shape_for(cfg)
    plan = replace(plan_from_config(cfg, num_labels_of(cfg)), zero_stage=0, shards=1)
    strategy = Strategy(cfg.trainer.strategy)
    alone = estimate(shape, plan).total
    gpus = fixed_gpus or gpus_needed(shape, plan, gpu_bytes, strategy)
    if gpus is None:
        checkpointed = replace(plan, gradient_checkpointing=True)
        hint = (
            "trainer.gradient_checkpointing=true fits it (activations are not sharded)"
            if not plan.gradient_checkpointing
            and gpus_needed(shape, checkpointed, gpu_bytes, strategy)
            else "python -m src.estimate with the same arguments shows what does"
        )
        raise UserError(
            f"{name} ({plan.method}, batch {plan.batch_size} x {plan.max_len}) does not fit on "
            f"{MAX_GPUS} GPUs of {gpu_bytes / GIB:.3g} GiB by the memory estimate: {hint}"
        )
    runs = resolve_strategy(strategy, gpus, fits(alone, gpu_bytes))
    per_gpu = sharded(shape, plan, gpus).total if runs == "fsdp" else alone
    return Placement(gpus, runs, per_gpu)


def trial_gpus(cfg: Any, gpu_memory_gib: float | None) -> int:
    """The GPUs a job of `cfg` needs, by the memory estimate against `gpu_memory_gib` per
    device (else the visible GPU's memory); 1 for a job without a backbone to estimate (the
    classical model, another app) or without a card size (no GPU, none given)."""
    from src.config.schema import Arch

    if "model" not in cfg or "trainer" not in cfg or cfg.model.get("arch") == Arch.classical:
        return 1
    gpu = visible_gpu()
    gpu_bytes = gpu_memory_gib * GIB if gpu_memory_gib else (gpu[1] if gpu else 0.0)
    return placement(cfg, gpu_bytes).gpus if gpu_bytes else 1
