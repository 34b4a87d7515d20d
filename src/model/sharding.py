"""How many GPUs a run needs, and how its processes share the work (trainer.strategy).

A run that fits one GPU by the memory estimate (`src.model.memory`) gets one; a larger one the
fewest GPUs on which FSDP (torch's `fully_shard`: parameters, gradients and optimizer states
split over the processes, like ZeRO-3) fits it. DDP copies the whole model to every GPU: it
speeds up a run that fits, it never makes one fit. Activations are not sharded: where they are
what does not fit, trainer.gradient_checkpointing=null turns checkpointing on. The plan
(`python -m src.estimate -m`), the device pool and the run itself decide with one function,
`layout`, so a trial runs as it was placed.
"""

from __future__ import annotations

import logging
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
from src.model.methods import method_named
from src.model.processes import world_size

MAX_GPUS = 64
log = logging.getLogger(__name__)

STRATEGY_NAMES = {"single": "one GPU", "ddp": "DDP", "fsdp": "FSDP"}


def sharded(shape: Shape, plan: Plan, processes: int) -> Estimate:
    """The memory of one process of `plan` sharded with FSDP over `processes`."""
    return estimate(shape, replace(plan, zero_stage=3, shards=processes))


def fits(total: float, gpu_bytes: float) -> bool:
    """Whether `total` bytes fit a card of `gpu_bytes`, with the allocator's headroom."""
    return total <= HEADROOM * gpu_bytes


def resolve_strategy(strategy: Strategy, processes: int, fits_one: bool) -> str:
    """What a run of `processes` processes does: single, ddp or fsdp (auto: FSDP only when the
    run does not fit one GPU)."""
    if processes <= 1:
        return "single"
    if strategy == Strategy.auto:
        return "ddp" if fits_one else "fsdp"
    return strategy.value


@dataclass(frozen=True)
class Placement:
    """How a run uses its GPUs: how many, how its processes share the work, whether it
    checkpoints activations, and the memory per GPU by the estimate."""

    gpus: int
    strategy: str  # single | ddp | fsdp
    checkpointing: bool  # trainer.gradient_checkpointing, as given or as null (auto) decides
    per_gpu: float  # bytes


def layout(
    shape: Shape,
    plan: Plan,
    gpu_bytes: float,
    strategy: Strategy,
    processes: int,
    checkpointing: bool | None,
) -> Placement:
    """A run of `plan` on `processes` GPUs of `gpu_bytes`: the strategy (auto: FSDP only when
    one GPU cannot hold the run even checkpointed) and gradient checkpointing (None: on only
    when the run does not fit without it; it costs a second forward pass, never the result; on
    whatever is asked for a method that forces it, QLoRA)."""
    choices = (False, True) if checkpointing is None else (checkpointing,)
    if method_named(plan.method).forces_gradient_checkpointing:
        choices = (True,)
    plans = [replace(plan, gradient_checkpointing=c, zero_stage=0, shards=1) for c in choices]
    runs = resolve_strategy(strategy, processes, fits(estimate(shape, plans[-1]).total, gpu_bytes))

    def per_gpu(p: Plan) -> float:
        return sharded(shape, p, processes).total if runs == "fsdp" else estimate(shape, p).total

    chosen = next((p for p in plans if fits(per_gpu(p), gpu_bytes)), plans[-1])
    return Placement(processes, runs, chosen.gradient_checkpointing, per_gpu(chosen))


def place(
    shape: Shape,
    plan: Plan,
    gpu_bytes: float,
    strategy: Strategy,
    checkpointing: bool | None,
) -> Placement | None:
    """The run on the fewest GPUs of `gpu_bytes` it fits (checkpointed where `checkpointing` is
    None and that saves GPUs: GPUs are what a node runs short of); None if none up to MAX_GPUS.
    DDP copies the whole model to every GPU: with trainer.strategy=ddp only one GPU is tried."""
    counts = range(1, 2 if strategy == Strategy.ddp else MAX_GPUS + 1)
    for processes in counts:
        placed = layout(shape, plan, gpu_bytes, strategy, processes, checkpointing)
        if fits(placed.per_gpu, gpu_bytes):
            return placed
    return None


def run_layout(cfg: Any, checkpoint: Path, num_labels: int) -> Placement:
    """How this run of $WORLD_SIZE processes uses its GPUs, decided as the device pool placed
    it (`layout`); without a GPU (CPU processes), sharded only if asked and no checkpointing
    unless asked: there is no GPU memory to fit."""
    processes = world_size()
    strategy = Strategy(cfg.trainer.strategy)
    given = cfg.trainer.gradient_checkpointing
    gpu = visible_gpu()
    if gpu is None:
        return Placement(processes, resolve_strategy(strategy, processes, True), bool(given), 0.0)
    try:
        shape = shape_of(checkpoint)
    except (OSError, KeyError, ValueError) as exc:  # no estimate: as if it fit (preflight says)
        log.warning("no memory estimate for %s (%s): sharded only if asked", checkpoint, exc)
        return Placement(processes, resolve_strategy(strategy, processes, True), bool(given), 0.0)
    placed = layout(shape, plan_from_config(cfg, num_labels), gpu[1], strategy, processes, given)
    if given is None and placed.checkpointing:
        log.info("gradient checkpointing on: without it the run does not fit %s", gpu[0])
    return placed


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
    # No MixedPrecisionPolicy: parameters keep the dtype they have on one GPU and the Trainer's
    # autocast does the rest, so a sharded run computes what a one-GPU run does (a bf16
    # param_dtype would halve the all-gathers but also round the norms' weights to bf16).
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module)
    fully_shard(model)
    declare_sharded(model)


def placement(cfg: Any, gpu_bytes: float, fixed_gpus: int | None = None) -> Placement:
    """How a job of `cfg` runs on cards of `gpu_bytes`: on the fewest GPUs it fits, or on
    `fixed_gpus` (hydra.sweeper.gpus_per_trial as the user fixed it)."""
    shape, name = shape_for(cfg)
    plan = plan_from_config(cfg, num_labels_of(cfg))
    strategy = Strategy(cfg.trainer.strategy)
    given = cfg.trainer.gradient_checkpointing
    if fixed_gpus:
        return layout(shape, plan, gpu_bytes, strategy, fixed_gpus, given)
    placed = place(shape, plan, gpu_bytes, strategy, given)
    if placed is None:
        hint = (
            "trainer.gradient_checkpointing=null (on where needed) fits it (activations are not "
            "sharded)"
            if given is False and place(shape, plan, gpu_bytes, strategy, None)
            else "python -m src.estimate with the same arguments shows what does"
        )
        raise UserError(
            f"{name} ({plan.method}, batch {plan.batch_size} x {plan.max_len}) does not fit on "
            f"{MAX_GPUS} GPUs of {gpu_bytes / GIB:.3g} GiB by the memory estimate: {hint}"
        )
    return placed


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
