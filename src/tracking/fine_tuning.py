"""What a fine-tuning run records beyond its config: tags and name, its data, token lengths,
per-epoch and per-step metrics, the test outcome, the model. Effects only: the values come
from the pure parts of the pipeline (data, inputs, evaluation)."""

from __future__ import annotations

import logging
import shlex
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from src.checkpoint.files import CheckpointInfo
from src.config.errors import disk_space_guard
from src.config.schema import MixConfig
from src.data.mixing import TrainingSet, guard_lengths, length_comparison
from src.data.sources import Splits
from src.inputs.long_text import Inputs, length_stats
from src.model.backbones import Backbone
from src.tracking import record
from src.tracking.names import (
    DATA_TAG,
    GIT_COMMIT_TAG,
    JOB_TAG,
    METHOD_TAG,
    MODEL_TAG,
    OPTUNA_STUDY_TAG,
    OPTUNA_TRIAL_TAG,
    OVERRIDES_TAG,
    SOURCE_TAG,
)
from src.training.evaluate import TestOutcome

if TYPE_CHECKING:
    import mlflow
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def run_tags(cfg: DictConfig) -> dict[str, str]:
    """Tags that make runs findable: backbone, method, data, code version, the command line."""
    tags = {
        MODEL_TAG: cfg.model.name,
        METHOD_TAG: cfg.method.name,
        DATA_TAG: cfg.data.name,
        OVERRIDES_TAG: shlex.join(HydraConfig.get().overrides.task),
        SOURCE_TAG: "src.train",
    }
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        tags[JOB_TAG] = str(HydraConfig.get().job.num)
    commit = record.git_commit(Path(HydraConfig.get().runtime.cwd))
    if commit:
        tags[GIT_COMMIT_TAG] = commit
    if cfg.trial.trial_id is not None:
        tags[OPTUNA_STUDY_TAG] = str(cfg.trial.study_name)
        tags[OPTUNA_TRIAL_TAG] = str(cfg.trial.trial_id)
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


@contextmanager
def training_run(
    cfg: DictConfig,
    experiment_id: str,
    tags: dict[str, str],
    splits: Splits,
    training: TrainingSet,
) -> Iterator[mlflow.ActiveRun | None]:
    """The run of one training job, fine-tuned or classical, opened with its config and data
    recorded; it ends FAILED (or KILLED) with the reason when the body raises."""
    name = run_name(cfg, tags)
    with record.run(experiment_id, name, tags, record.system_metrics(cfg.tracking)) as active:
        record.log_config(cfg, tags)
        log_datasets(splits, training)
        yield active


def lineage_tags(backbone: Backbone) -> dict[str, str]:
    """The domain-adaptive pretraining run the backbone comes from, if any."""
    return {"pretrain_run_id": backbone.pretrain_run_id} if backbone.pretrain_run_id else {}


def log_datasets(splits: Splits, training: TrainingSet) -> None:
    """Record each split and mixed-in auxiliary data as an MLflow dataset input: what it was
    read from, its digest, and its role (training / validation / test)."""
    for split, context in (("train", "training"), ("valid", "validation"), ("test", "test")):
        origin = splits.origins[split]
        hub = None
        if origin.hub_split is not None:
            hub = record.HubSplit(origin.hub_split, origin.config_name, origin.revision)
        frame = splits.frames()[split]
        record.log_dataset(frame, f"{origin.name}:{context}", context, origin.uri, hub)
    if len(training.aux):
        name, sources = f"{splits.origins['train'].name}:auxiliary", ", ".join(training.aux_sources)
        record.log_dataset(training.aux, name, "training", sources)


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
    record.log_metrics(metrics)
    if is_aux.any():
        aux = length_stats(inputs.train.text_tokens[is_aux], inputs.train.budget)
        comparison, mismatch = length_comparison(stats["train"], aux, mix)
        record.log_metrics(comparison)
        record.log_dict({"main": stats["train"], "auxiliary": aux}, "mix_token_lengths.json")
        guard_lengths(mismatch, mix.on_length_mismatch)


def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
    """Per-epoch validation metrics, step = epoch."""
    record.log_metrics(
        {k: v for k, v in metrics.items() if k.startswith("eval_") and "runtime" not in k}, epoch
    )


def log_train_step(step: int, logs: dict[str, float]) -> None:
    """Training loss and learning rate, step = optimizer step."""
    keep = ("loss", "learning_rate", "grad_norm")
    record.log_metrics({f"train_{k}": v for k, v in logs.items() if k in keep}, step)


def log_test_outcome(outcome: TestOutcome) -> None:
    """The test report (text + JSON), confusion matrix and predictions CSV as artifacts."""
    if outcome.report is not None:
        text, as_dict = outcome.report
        record.log_report(text, as_dict, "test")
        log.debug("test report:\n%s", text)  # in MLflow; the console shows the result table
    if outcome.confusion is not None:
        record.log_figure(outcome.confusion, "confusion_matrix.png")
    record.log_table(outcome.predictions, "predictions/test.csv")


def log_checkpoint(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, info: CheckpointInfo, where: Path
) -> None:
    """Write the checkpoint to a staging dir under `where`, then log it as the run's model."""
    from src.checkpoint.files import write_checkpoint

    if not record.is_main_process():
        return  # a multi-GPU run saves one checkpoint, from rank 0
    with (
        disk_space_guard(where, "the checkpoint"),
        tempfile.TemporaryDirectory(dir=where, prefix=".staging-") as staging,
    ):
        checkpoint = write_checkpoint(model, tokenizer, Path(staging) / "checkpoint", info)
        log.info("model logged: %s", record.log_checkpoint(checkpoint))
