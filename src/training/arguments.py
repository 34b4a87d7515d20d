"""The `trainer.*` settings: their checks, and the HF TrainingArguments they become."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

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
    checkpointing: bool,
    ordered: bool = False,
    sharded: bool = False,
) -> TrainingArguments:
    """Trainer settings: evaluate and keep the best epoch by `metric`, no third-party loggers.

    `checkpointing`: gradient checkpointing, as the caller decided it (src.train: the run's
    placement, src.model.sharding.run_layout); `ordered`: batches follow the training set's order
    (data.mix main_first / aux_first); `sharded`: the model is sharded with FSDP
    (src.model.sharding.shard); the best epoch is then loaded after training from its checkpoint
    (src.training.trainer.best_weights), as the Trainer cannot copy a checkpoint into sharded
    parameters.
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
            save_total_limit=1,  # the best epoch's checkpoint is kept as well
            save_only_model=True,
            load_best_model_at_end=not sharded,
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
            activation_checkpointing=checkpointing,
        )
    except (ValueError, TypeError, ImportError) as exc:  # transformers' own checks of them
        raise UserError(
            f"the trainer.* settings (trainer.precision={precision.value}) cannot become "
            f"transformers' TrainingArguments ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:400]}); change the setting it names"
        ) from None
