"""The `trainer.*` settings: their checks, and the HF TrainingArguments they become."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.config.errors import UserError
from src.config.schema import Precision, TrainerConfig
from src.task.metrics import greater_is_better

if TYPE_CHECKING:
    from transformers import TrainingArguments


def check_trainer(cfg: TrainerConfig) -> None:
    """Reject impossible trainer settings before anything is loaded."""
    positive = {
        "trainer.lr": cfg.lr,
        "trainer.epochs": cfg.epochs,
        "trainer.batch_size": cfg.batch_size,
        "trainer.eval_batch_size": cfg.eval_batch_size,
        "trainer.grad_accum": cfg.grad_accum,
        "trainer.max_len": cfg.max_len,
        "trainer.logging_steps": cfg.logging_steps,
    }
    for key, value in positive.items():
        if not value > 0:
            raise UserError(f"{key} must be > 0, got {value}")
    if cfg.num_workers < 0:
        raise UserError(
            f"trainer.num_workers must be >= 0 (0 loads batches in the training process),"
            f" got {cfg.num_workers}"
        )
    if not 0 <= cfg.warmup_ratio < 1:
        raise UserError(f"trainer.warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}")
    if cfg.weight_decay < 0:
        raise UserError(f"trainer.weight_decay must be >= 0, got {cfg.weight_decay}")


def check_batches(cfg: TrainerConfig, n_inputs: int, world_size: int = 1) -> None:
    """Gradient accumulation over more batches than an epoch has is one optimizer step per
    epoch on fewer samples than the effective batch the settings promise: refuse it."""
    per_device = -(-n_inputs // world_size)
    batches = -(-per_device // cfg.batch_size)
    if cfg.grad_accum > batches:
        raise UserError(
            f"trainer.grad_accum={cfg.grad_accum} exceeds the {batches} batches of an epoch"
            f" ({n_inputs} training inputs, trainer.batch_size={cfg.batch_size}"
            f"{f', {world_size} processes' if world_size > 1 else ''}): every epoch would be one"
            f" optimizer step on {n_inputs} samples, not the"
            f" {cfg.batch_size * cfg.grad_accum * world_size} the settings promise; set"
            f" trainer.grad_accum to at most {batches}"
        )


def fsdp_arguments(layers: Sequence[str], checkpointing: bool = False) -> dict[str, Any]:
    """TrainingArguments that shard the model with torch's FSDP2 (`fully_shard`), one unit per
    block of the classes `layers` (the model's `_no_split_modules`); none: no FSDP. Gradient
    checkpointing is then FSDP's own (the Trainer's would gather each block's weights twice)."""
    if not layers:
        return {"activation_checkpointing": checkpointing}
    config = {
        "fsdp_version": 2,
        "reshard_after_forward": True,
        "transformer_layer_cls_to_wrap": list(layers),
        "activation_checkpointing": checkpointing,
    }
    return {"fsdp": True, "fsdp_config": config, "activation_checkpointing": False}


def scratch_dir(output_dir: Path) -> Path:
    """The Trainer's checkpoint folder of this run alone, under its output folder: runs started
    at once with the same hydra.run.dir never share it (one would remove another's epoch
    checkpoints), while the processes of one torchrun job (same rendezvous) do."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        owner = "-".join(
            os.environ.get(k, "") for k in ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")
        )
    else:
        owner = f"{socket.gethostname()}-{os.getpid()}"
    return output_dir / f"trainer-{owner}"


def training_arguments(
    cfg: TrainerConfig,
    output_dir: Path,
    seed: int,
    metric: str,
    precision: Precision,
    ordered: bool = False,
    fsdp_layers: Sequence[str] = (),
    checkpointing: bool = False,
) -> TrainingArguments:
    """Trainer settings: evaluate and keep the best epoch by `metric`, no third-party loggers.

    `ordered`: batches follow the training set's order (data.mix main_first / aux_first);
    `fsdp_layers`: the block classes FSDP shards by, for a sharded run; `checkpointing`:
    gradient checkpointing, as the run's placement decided (src.model.sharding.run_layout).
    """
    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    try:
        return TrainingArguments(
            output_dir=str(output_dir),
            learning_rate=cfg.lr,
            num_train_epochs=cfg.epochs,
            per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.eval_batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            weight_decay=cfg.weight_decay,
            warmup_steps=cfg.warmup_ratio,
            train_sampling_strategy="sequential" if ordered else "group_by_length",
            eval_strategy="epoch",
            save_strategy="epoch",
            save_total_limit=1,
            # The Trainer refuses FSDP with save_only_model and load_best_model_at_end together:
            # a sharded run's checkpoints keep the optimizer states as well (more disk, not memory).
            save_only_model=not fsdp_layers,
            load_best_model_at_end=True,
            metric_for_best_model=metric.removeprefix("eval_"),
            greater_is_better=greater_is_better(metric),
            logging_strategy="steps",
            logging_steps=cfg.logging_steps,
            report_to="none",
            seed=seed,
            data_seed=seed,
            bf16=precision == Precision.bf16,
            fp16=precision == Precision.fp16,
            optim="adamw_torch_fused" if cuda else "adamw_torch",
            torch_compile=cfg.compile,
            dataloader_num_workers=cfg.num_workers,
            dataloader_pin_memory=cuda,
            use_cpu=not cuda,
            disable_tqdm=True,
            logging_nan_inf_filter=False,  # a NaN / inf loss must stop training (StopOnNonFinite)
            # A classification loss is a mean over the batch already: the Trainer's token averaging
            # multiplies it by the number of processes, so a 2-process run's gradients are twice a
            # 1-process run's (seen with transformers 5.24 on a tiny Qwen2: grad norm 3.81 vs 1.90),
            # which changes the result wherever clipping at max_grad_norm=1.0 acts.
            average_tokens_across_devices=False,
            **fsdp_arguments(fsdp_layers, checkpointing),
        )
    except (ValueError, TypeError, ImportError) as exc:  # transformers' own checks of them
        raise UserError(
            f"the trainer.* settings (trainer.precision={precision.value}) cannot become "
            f"transformers' TrainingArguments ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:400]}); change the setting it names"
        ) from None
