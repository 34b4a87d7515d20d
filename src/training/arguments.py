"""The `trainer.*` settings: their checks, and the HF TrainingArguments they become."""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.config import CONF_DIR
from src.config.schema import Precision, TrainerConfig
from src.errors import UserError
from src.task.metrics import greater_is_better

if TYPE_CHECKING:
    from transformers import TrainingArguments

DEEPSPEED_DIR = CONF_DIR / "deepspeed"


FSDP_SHARDING = {"full_shard": True, "shard_grad_op": False}  # FSDP2's reshard_after_forward


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
    if cfg.deepspeed and cfg.fsdp:
        raise UserError("trainer.deepspeed and trainer.fsdp both set: choose one")
    if cfg.deepspeed:
        deepspeed_config(cfg.deepspeed)
    fsdp_arguments(cfg.fsdp)


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


def fsdp_arguments(sharding: str | None) -> dict[str, Any]:
    """TrainingArguments for trainer.fsdp: FSDP2, full_shard (parameters too, like ZeRO-3) or
    shard_grad_op (gradients and optimizer states, like ZeRO-2)."""
    if not sharding:
        return {}
    if sharding not in FSDP_SHARDING:
        raise UserError(f"trainer.fsdp={sharding}: use one of {', '.join(FSDP_SHARDING)} or null")
    return {"fsdp": True, "fsdp_config": {"reshard_after_forward": FSDP_SHARDING[sharding]}}


def deepspeed_config(name: str) -> str:
    """The JSON file of trainer.deepspeed: a preset under conf/deepspeed/ or a path."""
    path = Path(name).expanduser() if name.endswith(".json") else DEEPSPEED_DIR / f"{name}.json"
    if not path.is_file():
        presets = ", ".join(sorted(p.stem for p in DEEPSPEED_DIR.glob("*.json")))
        raise UserError(f"trainer.deepspeed={name}: no file {path}; use {presets} or a .json path")
    if importlib.util.find_spec("deepspeed") is None:
        raise UserError(
            f"trainer.deepspeed={name} needs the deepspeed package (on a CUDA machine: "
            "pip install deepspeed), and a launcher: make train-ddp NPROC=... ARGS=..."
        )
    return str(path)


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
) -> TrainingArguments:
    """Trainer settings: evaluate and keep the best epoch by `metric`, no third-party loggers.

    `ordered`: batches follow the training set's order (data.mix main_first / aux_first).
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
            save_only_model=True,
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
            activation_checkpointing=cfg.gradient_checkpointing,
            optim="adamw_torch_fused" if cuda else "adamw_torch",
            torch_compile=cfg.compile,
            dataloader_num_workers=cfg.num_workers,
            dataloader_pin_memory=cuda,
            use_cpu=not cuda,
            disable_tqdm=True,
            logging_nan_inf_filter=False,  # a NaN / inf loss must stop training (StopOnNonFinite)
            deepspeed=deepspeed_config(cfg.deepspeed) if cfg.deepspeed else None,
            **fsdp_arguments(cfg.fsdp),
        )
    except (ValueError, TypeError, ImportError) as exc:  # transformers' own checks of them
        raise UserError(
            f"the trainer.* settings (trainer.precision={precision.value}) cannot become "
            f"transformers' TrainingArguments ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:400]}); change the setting it names"
        ) from None
