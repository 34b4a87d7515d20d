"""Training with the HF Trainer: dynamic padding, length-grouped batches, per-epoch evaluation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from transformers import (
    DataCollatorWithPadding,
    EvalPrediction,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from src.config.errors import TrainingDiverged, disk_space_guard
from src.inputs.long_text import Inputs
from src.task.heads import Task
from src.training.batching import LengthBucketSampler, longest_first

log = logging.getLogger(__name__)

EpochHook = Callable[[int, dict[str, float]], None]
# A trainable parameter's learning rate from its name and trainer.lr (the method's rule).
LearningRate = Callable[[str, float], float]


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
    """The HF Trainer, with the method's learning rate for each parameter (e.g. the head's own,
    LoRA+'s B matrices'), and batches of about equal length (src.training.batching) for
    training and evaluation."""

    def __init__(
        self, *args: Any, learning_rate: LearningRate | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        # Sequence-classification models take **kwargs, so the Trainer believes their loss is
        # normalised by `num_items_in_batch` across the accumulated micro-batches; but their
        # losses (cross-entropy, BCE, MSE) ignore it and return a mean per micro-batch. Left
        # alone, the Trainer sums those means over `grad_accum` micro-batches (and multiplies by
        # the number of processes): gradients and the logged loss `grad_accum` times too large.
        # Declared plainly, it divides each micro-batch's mean by their number: a mean again.
        self.model_accepts_loss_kwargs = False
        self.learning_rate = learning_rate
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

    def save_model(self, output_dir: str | None = None, *args: Any, **kwargs: Any) -> None:
        """The Trainer's save; for a sharded model its full weights, gathered on the first
        process (a collective: every process calls it) and written by it alone. The Trainer's
        own save would write that process's shard of each weight as if it were the whole."""
        from src.model.sharding import is_sharded

        if not is_sharded(self.model):
            super().save_model(output_dir, *args, **kwargs)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model = cast("PreTrainedModel", self.model)
        full = get_model_state_dict(model, options=options)
        if self.args.should_save:
            model.save_pretrained(str(output_dir or self.args.output_dir), state_dict=full)

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer, each parameter moved into a group at the method's learning
        rate for it where that differs from trainer.lr."""
        created = self.optimizer is None  # split the groups once, when the optimizer is made
        optimizer = super().create_optimizer(model)
        if self.learning_rate is None or not created:
            return optimizer
        source = self.model if model is None else model
        assert source is not None
        lr = self.args.learning_rate
        rates = {id(p): self.learning_rate(n, lr) for n, p in source.named_parameters()}
        for group in list(optimizer.param_groups):
            by_rate: dict[float, list[torch.nn.Parameter]] = {}
            for param in group["params"]:
                by_rate.setdefault(rates.get(id(param), lr), []).append(param)
            group["params"] = by_rate.pop(lr, [])
            for rate, moved in by_rate.items():  # keeps the group's weight decay; the
                # scheduler scales every group alike
                optimizer.add_param_group({**group, "params": moved, "lr": rate})
        return optimizer


class EpochEnd(TrainerCallback):
    """Hands each epoch's validation metrics, with the epoch's mean training loss as
    `train_loss`, to hooks (MLflow logging, Optuna pruning, the console's epoch line)."""

    def __init__(self, hooks: Sequence[EpochHook]) -> None:
        self.hooks = list(hooks)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        control.should_log = True  # the Trainer logs the loss since its last log: the epoch's tail

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        epoch = round(state.epoch or 0)
        values = dict(metrics or {})
        loss = epoch_loss(state.log_history, state.global_step)
        if loss is not None:
            values["train_loss"] = loss
        for hook in self.hooks:
            hook(epoch, values)


def epoch_loss(history: Sequence[dict[str, Any]], step: int) -> float | None:
    """The mean training loss of the epoch that ended at `step`: the Trainer's loss logs since
    the previous evaluation, each weighted by the optimizer steps it averages."""
    evaluated = [e["step"] for e in history if "eval_loss" in e and e["step"] < step]
    since = max(evaluated, default=0)
    total, steps, previous = 0.0, 0, since
    for entry in history:
        if "loss" in entry and since < entry["step"] <= step:
            total += float(entry["loss"]) * (entry["step"] - previous)
            steps += entry["step"] - previous
            previous = entry["step"]
    return total / steps if steps else None


class StepsDone(TrainerCallback):
    """Hands the optimizer step count to a progress display (src.tracking.console)."""

    def __init__(self, make_progress: Callable[[int], Any]) -> None:
        self.make_progress = make_progress
        self.progress: Any = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.progress = self.make_progress(state.max_steps)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.progress.update(state.global_step)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.progress.close()


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
    train_runtime: float  # seconds


def fit(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: TokenizedDataset,
    valid: TokenizedDataset,
    args: TrainingArguments,
    score: Callable[[np.ndarray], dict[str, float]],
    callbacks: Sequence[TrainerCallback],
    learning_rate: LearningRate | None = None,
    rebuild: Callable[[], PreTrainedModel] | None = None,
) -> Fitted:
    """Train with per-epoch validation; the best epoch's weights are loaded at the end.

    `score` turns the validation logits into metrics (see `compute_metrics_fn`). `rebuild`, for
    a sharded model: a fresh unsharded one of the same build, which gets the best epoch's
    weights on every process, so that the LoRA merge, evaluation and the checkpoint see one
    ordinary model as after a DDP run.
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
        learning_rate=learning_rate,
    )
    # Our callbacks print one line per epoch; the Trainer's own printer dumps every log dict.
    trainer.remove_callback(PrinterCallback)
    with disk_space_guard(args.output_dir or ".", "a Trainer checkpoint"):
        result = trainer.train()
    trained = trainer.model
    if rebuild is not None and trainer.state.best_model_checkpoint:
        # The optimizer's states go first: a full copy of the weights joins the shards on the GPU.
        trainer.optimizer = trainer.lr_scheduler = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        trained = rebuild()
        best_weights(trained, trainer.state.best_model_checkpoint)
        trained = trained.to(trainer.args.device)  # type: ignore[arg-type]
    # Every rank has loaded the best epoch before the caller removes the checkpoints.
    trainer.accelerator.wait_for_everyone()
    history = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    best_epoch = None
    if trainer.state.best_model_checkpoint:
        best_step = int(trainer.state.best_model_checkpoint.rsplit("-", 1)[-1])
        best_epoch = next((round(e["epoch"]) for e in history if e.get("step") == best_step), None)
    return Fitted(
        model=trained,  # type: ignore[arg-type]
        best_metric=trainer.state.best_metric,
        best_epoch=best_epoch,
        train_samples_per_second=float(result.metrics.get("train_samples_per_second", 0.0)),
        train_runtime=float(result.metrics.get("train_runtime", 0.0)),
    )


def best_weights(model: PreTrainedModel, checkpoint: str) -> None:
    """Load a Trainer checkpoint's weights into an unsharded `model` of the same build, as the
    Trainer's load_best_model_at_end does: a PEFT model its adapter and head, another all."""
    from peft import PeftModel
    from safetensors.torch import load_file

    if isinstance(model, PeftModel):
        model.load_adapter(checkpoint, model.active_adapter)
        return
    state: dict[str, torch.Tensor] = {}
    for part in sorted(Path(checkpoint).glob("*.safetensors")):  # a large model: several
        state |= load_file(part)
    model.load_state_dict(state)


def training_datasets(
    task: Task, inputs: Inputs, train: pd.DataFrame, valid: pd.DataFrame
) -> tuple[TokenizedDataset, TokenizedDataset]:
    """Training and validation inputs with the task's targets (a window gets its text's)."""
    train_y = task.targets(train.label.tolist())
    valid_y = task.targets(valid.label.tolist())
    return (
        TokenizedDataset(inputs.train.inputs, inputs.train.per_input(train_y)),
        TokenizedDataset(inputs.valid.inputs, inputs.valid.per_input(valid_y)),
    )
