"""Training with the HF Trainer: dynamic padding, length-grouped batches, per-epoch evaluation."""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    DataCollatorWithPadding,
    EvalPrediction,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from src.batching import LengthBucketSampler, length_batches, longest_first
from src.config import Precision, TrainerConfig
from src.errors import UserError, disk_space_guard
from src.methods import is_head_parameter
from src.metrics import greater_is_better

log = logging.getLogger(__name__)

DEEPSPEED_DIR = Path(__file__).resolve().parents[1] / "conf" / "deepspeed"
FSDP_SHARDING = {"full_shard": True, "shard_grad_op": False}  # FSDP2's reshard_after_forward
EpochHook = Callable[[int, dict[str, float]], None]


class TokenizedDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """Token ids (unpadded) and labels; the collator pads each batch to its own longest text.

    A label is a class index (int), a multi-hot list of floats or a float: the task's targets.
    """

    def __init__(self, encodings: list[list[int]], labels: Sequence[Any] | None = None) -> None:
        self.encodings = encodings
        self.labels = labels

    def __len__(self) -> int:
        return len(self.encodings)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"input_ids": self.encodings[i]}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item

    def lengths(self) -> list[int]:
        """Token count of every example."""
        return [len(ids) for ids in self.encodings]


def tokenize(
    texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_len: int
) -> list[list[int]]:
    """Token ids truncated at `max_len`, without padding (the collator pads per batch)."""
    out = tokenizer(list(texts), truncation=True, max_length=max_len, padding=False)
    return [list(ids) for ids in out["input_ids"]]


def check_trainer(cfg: TrainerConfig) -> None:
    """Reject impossible trainer settings before anything is loaded."""
    positive = {
        "trainer.lr": cfg.lr,
        "trainer.epochs": cfg.epochs,
        "trainer.batch_size": cfg.batch_size,
        "trainer.eval_batch_size": cfg.eval_batch_size,
        "trainer.grad_accum": cfg.grad_accum,
        "trainer.max_len": cfg.max_len,
    }
    for key, value in positive.items():
        if not value > 0:
            raise UserError(f"{key} must be > 0, got {value}")
    if not 0 <= cfg.warmup_ratio < 1:
        raise UserError(f"trainer.warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}")
    if cfg.weight_decay < 0:
        raise UserError(f"trainer.weight_decay must be >= 0, got {cfg.weight_decay}")
    if cfg.deepspeed and cfg.fsdp:
        raise UserError("trainer.deepspeed and trainer.fsdp both set: choose one")
    if cfg.deepspeed:
        deepspeed_config(cfg.deepspeed)
    fsdp_arguments(cfg.fsdp)


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


def resolve_precision(precision: Precision) -> Precision:
    """`auto`: bf16 on GPUs that support it, fp32 otherwise (CPU)."""
    if precision != Precision.auto:
        if precision != Precision.fp32 and not torch.cuda.is_available():
            raise UserError(
                f"trainer.precision={precision.value} needs a CUDA GPU; use fp32 or auto"
            )
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return Precision.bf16
    return Precision.fp32


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
    cuda = torch.cuda.is_available()
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


def compute_metrics_fn(
    score: Callable[[np.ndarray], dict[str, float]],
) -> Callable[[EvalPrediction], dict[str, float]]:
    """The Trainer's metric hook: `score` maps the validation inputs' logits (in dataset order,
    which `ClassifierTrainer` restores) to metrics against its own gold labels, e.g. per text."""

    def compute(pred: EvalPrediction) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        return score(np.asarray(logits))

    return compute


def in_dataset_order(
    compute: Callable[[EvalPrediction], dict[str, float]], order_of: Callable[[], list[int] | None]
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A metric hook that gets predictions and labels back in dataset order from sampler order."""

    def restore(x: Any, order: list[int]) -> Any:
        if isinstance(x, tuple):
            return tuple(restore(item, order) for item in x)
        if not isinstance(x, np.ndarray) or len(x) != len(order):
            return x
        out = np.empty_like(x)
        out[order] = x
        return out

    def compute_in_order(pred: EvalPrediction) -> dict[str, float]:
        order = order_of()
        if order is None:
            return compute(pred)
        return compute(
            EvalPrediction(
                predictions=restore(pred.predictions, order),
                label_ids=restore(pred.label_ids, order),
            )
        )

    return compute_in_order


class ClassifierTrainer(Trainer):
    """The HF Trainer, with an optional learning rate of its own for the classification head,
    and batches of about equal length (src.batching) for training and evaluation."""

    def __init__(self, *args: Any, head_lr: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_lr = head_lr
        self.eval_order: list[int] | None = None
        if self.compute_metrics is not None:
            self.compute_metrics = in_dataset_order(self.compute_metrics, lambda: self.eval_order)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """group_by_length: length-sorted batches in random order, not HF's mega-batches."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and isinstance(
            dataset, TokenizedDataset
        ):
            return LengthBucketSampler(dataset.lengths(), self.args.train_batch_size)
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        """Longest texts first, so fixed-size evaluation batches pad little; the metric hook gets
        dataset order back (HF's group_by_length would hand it shuffled predictions)."""
        if isinstance(eval_dataset, TokenizedDataset):
            self.eval_order = longest_first(eval_dataset.lengths())
            return self.eval_order
        self.eval_order = None
        return super()._get_eval_sampler(eval_dataset)

    def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The Trainer's step (forward, backward), stopping at once on a NaN / inf loss."""
        loss = super().training_step(*args, **kwargs)
        StopOnNonFinite.check(loss, self.state)
        return loss

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer, the head's parameters moved into groups at `head_lr`."""
        created = self.optimizer is None  # split the groups once, when the optimizer is made
        optimizer = super().create_optimizer(model)
        if self.head_lr is None or not created:
            return optimizer
        source = self.model if model is None else model
        assert source is not None
        head = {id(p) for n, p in source.named_parameters() if is_head_parameter(n)}
        for group in list(optimizer.param_groups):
            moved = [p for p in group["params"] if id(p) in head]
            group["params"] = [p for p in group["params"] if id(p) not in head]
            if moved:  # keeps the group's weight decay; the scheduler scales every group alike
                optimizer.add_param_group({**group, "params": moved, "lr": self.head_lr})
        return optimizer


class EpochEnd(TrainerCallback):
    """Hands each epoch's validation metrics to a hook (MLflow logging, Optuna pruning)."""

    def __init__(self, hooks: Sequence[EpochHook]) -> None:
        self.hooks = list(hooks)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        epoch = round(state.epoch or 0)
        for hook in self.hooks:
            hook(epoch, dict(metrics or {}))


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite: the run stops at that step."""


class StopOnNonFinite:
    """Checks every micro-batch's loss and stops at the first NaN / inf, naming the step.

    The check reads one value back from the device per micro-batch. The stock Trainer makes
    that same host sync for `logging_nan_inf_filter` (on by default), which *hides* a NaN loss
    by logging an average instead; `training_arguments` turns that filter off, so training
    pays no sync beyond the Trainer's default while a divergence stops at once.
    """

    @staticmethod
    def check(loss: torch.Tensor, state: TrainerState) -> None:
        """Raise TrainingDiverged when `loss` (detached, on its device) is not finite."""
        if bool(torch.isfinite(loss).all()):
            return
        value = float(loss.float().mean())
        step = state.global_step + 1  # the optimizer step whose batch gave this loss
        epoch = (state.epoch or 0.0) + 0.0
        raise TrainingDiverged(
            f"training loss is {value} at optimizer step {step} (epoch {epoch:.2f}): training "
            "diverged; lower trainer.lr, or use trainer.precision=fp32 / bf16 instead of fp16"
        )


class StepLogger(TrainerCallback):
    """Hands training-loss logs to a hook with their global step."""

    def __init__(self, hook: Callable[[int, dict[str, float]], None]) -> None:
        self.hook = hook

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        numeric = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
        if "loss" in numeric or "train_loss" in numeric:
            self.hook(state.global_step, numeric)


@dataclass
class Fitted:
    """What training produced: the model with its best epoch loaded, and how it went."""

    model: PreTrainedModel
    best_metric: float | None
    best_epoch: int | None
    train_samples_per_second: float
    train_runtime: float
    history: list[dict[str, float]]


def fit(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: TokenizedDataset,
    valid: TokenizedDataset,
    args: TrainingArguments,
    score: Callable[[np.ndarray], dict[str, float]],
    callbacks: Sequence[TrainerCallback],
    head_lr: float | None = None,
) -> Fitted:
    """Train with per-epoch validation; the best epoch's weights are loaded at the end.

    `score` turns the validation logits into metrics (see `compute_metrics_fn`).
    """
    trainer = ClassifierTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=valid,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics_fn(score),
        callbacks=list(callbacks),
        head_lr=head_lr,
    )
    with disk_space_guard(args.output_dir or ".", "a Trainer checkpoint"):
        result = trainer.train()
    # Every rank has loaded the best epoch before the caller removes the checkpoints (DDP).
    trainer.accelerator.wait_for_everyone()
    history = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    best_epoch = None
    if trainer.state.best_model_checkpoint:
        best_step = int(trainer.state.best_model_checkpoint.rsplit("-", 1)[-1])
        best_epoch = next((round(e["epoch"]) for e in history if e.get("step") == best_step), None)
    return Fitted(
        model=trainer.model,  # type: ignore[arg-type]
        best_metric=trainer.state.best_metric,
        best_epoch=best_epoch,
        train_samples_per_second=float(result.metrics.get("train_samples_per_second", 0.0)),
        train_runtime=float(result.metrics.get("train_runtime", 0.0)),
        history=history,
    )


@torch.inference_mode()
def predict_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    encodings: Sequence[list[int]],
    batch_size: int,
) -> tuple[np.ndarray, float]:
    """Logits in input order, computed in length-sorted batches of at most `batch_size` that
    pad little (src.batching.length_batches); also returns samples/s. Logits stay on the device
    until the end: no host sync per batch."""
    model.eval()
    device = next(model.parameters()).device
    collator = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    batches = length_batches([len(ids) for ids in encodings], batch_size)
    order = np.asarray([i for batch in batches for i in batch], dtype=np.int64)
    out: list[torch.Tensor] = []
    start = time.perf_counter()
    for indices in batches:
        batch = collator([{"input_ids": encodings[j]} for j in indices])
        out.append(model(**{k: v.to(device) for k, v in batch.items()}).logits)
    n_labels = int(model.config.num_labels or 0)
    sorted_logits = torch.cat(out).float().cpu().numpy() if out else np.zeros((0, n_labels))
    elapsed = time.perf_counter() - start
    logits = np.empty_like(sorted_logits)
    logits[order] = sorted_logits
    return logits, len(encodings) / elapsed if elapsed > 0 else float("inf")
