"""Every check of a composed config that its types cannot express, run before anything loads.

Each config group's module owns the rules of its values (`check_method` next to the methods,
`check_trainer` next to the TrainingArguments they become, ...); this module runs them all, in
one place, before any data is read, any weight is loaded and any MLflow run exists. Nothing
here imports torch, transformers, peft, MLflow or scikit-learn: a mistake is one line within
about a second.

`CHECKED_BY` names, for every field of every schema (src/config/schema.py), the function that
refuses its bad values before any run exists; `NO_CHECK_NEEDED` says why a field needs none.
tests/test_config.py walks the schemas against both (and tries a bad value of every checked
field), so a new field without a check fails there, by name.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from src.config.errors import UserError, regular_file, writable_place
from src.config.schema import Arch
from src.data.label_noise import check_noise
from src.data.mixing import check_mix
from src.data.sources import check_config as check_source
from src.inputs.long_text import check_long_text
from src.inputs.prompts import check_prompt
from src.model.methods import check_method
from src.model.presets import check_model, check_seed, check_tfidf
from src.task.heads import check_optimized_metric, check_task
from src.tracking.stores import check_tracking
from src.training.arguments import check_trainer


def check_config(cfg: DictConfig) -> None:
    """Value checks of a `train` (or `noise`) config the schema's types cannot express, and
    writable, reachable output locations."""
    check_values(cfg)
    check_locations(cfg)


def check_values(cfg: DictConfig) -> None:
    """The value checks of a `train` (or `noise`) config, without its locations (a job's output
    folder exists only once Hydra runs it)."""
    check_seed("seed", cfg.seed)
    if cfg.seeds < 1:
        raise UserError(f"seeds={cfg.seeds} must be at least 1 (experiment presets sweep seed)")
    classical = cfg.model.arch == Arch.classical
    check_model(cfg.model)
    check_method(cfg.method)
    check_trainer(cfg.trainer)
    check_task(cfg.task, cfg.data, has_loss=not classical)
    check_optimized_metric(cfg.optimized_metric, cfg.task.name, not classical)
    check_source(cfg.data)
    check_prompt(cfg.prompt, cfg.task.name)
    check_long_text(cfg.data, cfg.trainer.max_len)
    check_mix(cfg.data.mix, cfg.task.name)
    if "noise" in cfg:
        check_noise(cfg.noise)
        check_tfidf(cfg.noise.tfidf, "noise.tfidf")


def check_pretrain(cfg: DictConfig) -> None:
    """The same for a `pretrain` config: its groups, its own settings, its locations."""
    check_pretrain_values(cfg)
    check_locations(cfg)


def check_pretrain_values(cfg: DictConfig) -> None:
    """The value checks of a `pretrain` config, without its locations."""
    check_seed("seed", cfg.seed)
    if cfg.model.arch == Arch.classical:
        raise UserError(f"model={cfg.model.name} has no language model to pretrain")
    check_model(cfg.model)
    check_trainer(cfg.trainer)
    check_source(cfg.data)
    if not 0 < cfg.mlm_probability < 1:
        raise UserError(f"mlm_probability={cfg.mlm_probability} must lie strictly between 0 and 1")
    if cfg.texts_path:
        regular_file(Path(cfg.texts_path).expanduser(), "texts_path")


# The value checks of each Hydra command's config: what a grid checks on every one of its jobs
# before its parent run exists (src.cli.preflight), besides what each job checks when it runs.
VALUE_CHECKS = {"train": check_values, "noise": check_values, "pretrain": check_pretrain_values}


def check_estimate(cfg: DictConfig) -> None:
    """The same for `estimate`: the groups it reads (it writes nothing), checked as `train`
    checks them, so an impossible value is refused rather than estimated."""
    check_model(cfg.model)
    check_method(cfg.method)
    check_trainer(cfg.trainer)
    check_source(cfg.data)


def check_locations(cfg: DictConfig) -> None:
    """Where the command writes: its output folder, the model cache, the tracking store."""
    places = {"output_dir": cfg.output_dir, "model.cache_dir": cfg.model.cache_dir}
    if not cfg.tracking.uri:
        places["tracking.dir"] = cfg.tracking.dir
    for key, place in places.items():
        if not writable_place(Path(place)):
            raise UserError(
                f"cannot write to {key}={place}: choose a writable directory"
                " (hydra.run.dir for output_dir)"
            )
    check_tracking(cfg.tracking)


# Why a field needs no check of its own.
ENUM = "an enum of the schema: Hydra refuses any other value at compose time"
FLAG = "a boolean: both values are valid"
FREE_TEXT = "free text: any value is valid (it names things in tags, run names or prompts)"
SWEEPER = "set by the clfsweep sweeper for its jobs (src.sweep.trial), never by hand"

# Field path -> `module:function` that refuses its bad values, all before any MLflow run exists
# (some need the data or the backbone's config, so they run later than check_config). Paths
# without a group belong to the top of `train` / `pretrain`.
CHECKED_BY: dict[str, str] = {
    "model.arch": "src.model.presets:check_tiny",  # real checkpoints: backbones.check_backbone
    "model.hub_id": "src.model.presets:check_model",
    "model.path": "src.model.backbones:check_checkpoint_dir",
    "model.tiny.family": "src.model.presets:check_tiny",
    "model.tiny.hidden_size": "src.model.presets:check_tiny",
    "model.tiny.num_layers": "src.model.presets:check_tiny",
    "model.tiny.num_heads": "src.model.presets:check_tiny",
    "model.tiny.num_kv_heads": "src.model.presets:check_tiny",
    "model.tiny.intermediate_size": "src.model.presets:check_tiny",
    "model.tiny.vocab_size": "src.model.presets:check_tiny",
    "model.tiny.max_position_embeddings": "src.model.presets:check_tiny",
    "model.tiny.init_seed": "src.model.presets:check_tiny",
    "model.lora_target_modules": "src.model.backbones:check_backbone",
    "model.attn_implementation": "src.model.backbones:check_backbone",
    "model.cache_dir": "src.cli.config_checks:check_locations",
    "model.from_run": "src.tracking.record:run_checkpoint",
    "model.tfidf.analyzer": "src.model.presets:check_tfidf",
    "model.tfidf.ngram_min": "src.model.presets:check_tfidf",
    "model.tfidf.ngram_max": "src.model.presets:check_tfidf",
    "model.tfidf.max_features": "src.model.presets:check_tfidf",
    "model.tfidf.C": "src.model.presets:check_tfidf",
    "model.tfidf.class_weight": "src.model.presets:check_tfidf",
    "model.tfidf.max_iter": "src.model.presets:check_tfidf",
    "method.name": "src.model.methods:check_method",
    "method.rank": "src.model.methods:check_method",
    "method.alpha": "src.model.methods:check_method",
    "method.dropout": "src.model.methods:check_method",
    "method.target_modules": "src.model.backbones:check_backbone",
    "method.head_lr": "src.model.methods:check_method",
    "method.trainable_layers": "src.model.methods:check_method",
    "data.name": "src.data.sources.base:source_for",
    "data.train_path": "src.data.sources:load_splits",
    "data.valid_path": "src.data.sources:load_splits",
    "data.test_path": "src.data.sources:load_splits",
    "data.text_column": "src.data.sources:load_splits",
    "data.label_column": "src.data.sources:load_splits",
    "data.id_column": "src.data.sources:load_splits",
    "data.label_names": "src.data.sources:check_config",
    "data.max_train": "src.data.sources:check_config",
    "data.max_eval": "src.data.sources:check_config",
    "data.max_test": "src.data.sources:check_config",
    "data.valid_fraction": "src.data.sources:check_config",
    "data.test_fraction": "src.data.sources:check_config",
    "data.exclude_ids": "src.data.sources:apply_exclusions",
    "data.exclude_file": "src.data.sources:excluded_ids",
    "data.instruction": "src.inputs.prompts:build_prompt",
    "data.label_descriptions": "src.inputs.prompts:label_lines",
    "data.label_separator": "src.task.heads:check_task",
    "data.head_tokens": "src.inputs.long_text:check_long_text",
    "data.stride": "src.inputs.long_text:check_long_text",
    "data.mix.datasets": "src.data.sources:load_splits",
    "data.path": "src.data.sources.hf:HuggingFace",  # its check(): builds datasets' builder
    "data.config_name": "src.data.sources.hf:HuggingFace",
    "data.revision": "src.data.sources.hf:HuggingFace",
    "data.splits.train": "src.data.sources.hf:chosen_splits",
    "data.splits.valid": "src.data.sources.hf:chosen_splits",
    "data.splits.test": "src.data.sources.hf:chosen_splits",
    "data.mix.ratio": "src.data.mixing:check_mix",
    "data.mix.max_length_ratio": "src.data.mixing:check_mix",
    "prompt.name": "src.inputs.prompts:check_prompt",
    "prompt.template": "src.inputs.prompts:check_prompt",
    "prompt.label_line": "src.inputs.prompts:check_prompt",
    "prompt.example": "src.inputs.prompts:check_prompt",
    "prompt.k": "src.inputs.prompts:check_prompt",
    "prompt.example_max_chars": "src.inputs.prompts:check_prompt",
    "prompt.chat_template": "src.inputs.prompts:in_chat_template",
    "prompt.system": "src.inputs.prompts:check_prompt",
    "task.name": "src.task.heads:check_task",
    "task.threshold": "src.task.heads:check_task",
    "task.metric": "src.task.heads:check_task",
    "trainer.lr": "src.training.arguments:check_trainer",
    "trainer.epochs": "src.training.arguments:check_trainer",
    "trainer.batch_size": "src.training.arguments:check_trainer",
    "trainer.eval_batch_size": "src.training.arguments:check_trainer",
    "trainer.grad_accum": "src.training.arguments:check_batches",
    "trainer.weight_decay": "src.training.arguments:check_trainer",
    "trainer.warmup_ratio": "src.training.arguments:check_trainer",
    "trainer.max_len": "src.training.arguments:check_trainer",  # positions: check_backbone
    "trainer.precision": "src.model.precision:resolve_precision",
    "trainer.logging_steps": "src.training.arguments:check_trainer",
    "trainer.num_workers": "src.training.arguments:check_trainer",
    "tracking.uri": "src.tracking.stores:check_tracking",
    "tracking.dir": "src.cli.config_checks:check_locations",
    "tracking.experiment": "src.tracking.stores:check_tracking",
    "tracking.system_metrics_interval": "src.tracking.stores:check_tracking",
    "model.root": "src.model.backbones:local_weights",
    "seed": "src.model.presets:check_seed",
    "seeds": "src.cli.config_checks:check_config",
    "optimized_metric": "src.task.heads:check_metric_name",
    "output_dir": "src.cli.config_checks:check_locations",
    "texts_path": "src.cli.config_checks:check_pretrain",
    "mlm_probability": "src.cli.config_checks:check_pretrain",
    "noise.scorer": "src.data.label_noise:check_noise",
    "noise.folds": "src.data.label_noise:check_noise",
    "noise.tfidf.analyzer": "src.model.presets:check_tfidf",
    "noise.tfidf.ngram_min": "src.model.presets:check_tfidf",
    "noise.tfidf.ngram_max": "src.model.presets:check_tfidf",
    "noise.tfidf.max_features": "src.model.presets:check_tfidf",
    "noise.tfidf.C": "src.model.presets:check_tfidf",
    "noise.tfidf.class_weight": "src.model.presets:check_tfidf",
    "noise.tfidf.max_iter": "src.model.presets:check_tfidf",
}

NO_CHECK_NEEDED: dict[str, str] = {
    "model.name": FREE_TEXT,
    "model.modelscope_id": "only with model.hub=modelscope: the ModelScope download names it",
    "model.hub": ENUM,
    "model.revision": "passed to the hub download, which fails with one line without it",
    "model.trust_remote_code": FLAG,
    "model.tfidf.sublinear_tf": FLAG,
    "method.use_rslora": FLAG,
    "method.train_embeddings": FLAG,
    "data.truncation": ENUM,
    "data.long_text": ENUM,
    "data.aggregation": ENUM,
    "data.mix.order": ENUM,
    "data.mix.labels": ENUM,
    "data.mix.on_length_mismatch": ENUM,
    "trainer.gradient_checkpointing": "true, false or null (decided by the run's placement)",
    "trainer.compile": FLAG,
    "trainer.strategy": ENUM,
    "tracking.run_name": FREE_TEXT,
    "tracking.log_model": FLAG,
    "tracking.system_metrics": FLAG,
    "data.allow_overlap": FLAG,
    "trial.storage": SWEEPER,
    "trial.study_name": SWEEPER,
    "trial.trial_id": SWEEPER,
    "noise.include_valid": FLAG,
    "noise.tfidf.sublinear_tf": FLAG,
}
