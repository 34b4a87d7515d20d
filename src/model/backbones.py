"""Backbones: resolve a preset to a local checkpoint, load tokenizer and classification model."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from src.config.errors import UserError, json_record
from src.config.private_api import set_name_or_path
from src.config.schema import Arch, Hub, MethodConfig, ModelConfig
from src.model.methods import check_method_fits

if TYPE_CHECKING:  # torch and transformers load where a model does: a grid's check needs neither
    import torch
    from transformers import (
        BitsAndBytesConfig,
        PretrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerBase,
    )

log = logging.getLogger(__name__)
T = TypeVar("T")

# Files that make a directory a loadable checkpoint; pickled weights are never loaded.
WEIGHT_PATTERNS = ("*.safetensors",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model")
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "merges.txt"]
# Written into checkpoints by `python -m src.pretrain`: the MLflow run that produced them.
LINEAGE_FILE = "pretrain_run.json"
# Model types whose position ids start after the padding index (RoBERTa's 514 hold 512 tokens).
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl")


@dataclass(frozen=True)
class Backbone:
    """A resolved backbone: the local checkpoint directory and what kind of model it holds."""

    path: Path
    arch: Arch
    trust_remote_code: bool
    pretrain_run_id: str | None = None  # the domain-adaptive pretraining run it comes from


def resolve_backbone(
    cfg: ModelConfig, train_texts: Sequence[str], run_checkpoint: Path | None = None
) -> Backbone:
    """Find (or build, for tiny presets) the local checkpoint directory of a model preset.

    `run_checkpoint`: model.from_run's checkpoint, fetched from its MLflow run by the caller
    (`tracking.record.run_checkpoint`): the model part reads no run record.
    """
    if cfg.from_run:
        if run_checkpoint is None:
            raise UserError(
                f"model.from_run={cfg.from_run}: this command cannot read an MLflow run's"
                " checkpoint; give model.path=DIR (a checkpoint directory) instead"
            )
        path = check_checkpoint_dir(run_checkpoint)
    elif (local := local_weights(cfg)) is not None:
        path = check_checkpoint_dir(local)
    elif cfg.tiny is not None:
        from src.model.tiny import materialize_tiny  # tokenizers and model classes: only here

        path = materialize_tiny(cfg.tiny, train_texts, Path(cfg.cache_dir) / "tiny")
    else:
        path = download(cfg)
    lineage = path / LINEAGE_FILE
    return Backbone(
        path=path,
        arch=cfg.arch,
        trust_remote_code=cfg.trust_remote_code,
        pretrain_run_id=pretrain_run_of(lineage) if lineage.is_file() else None,
    )


def pretrain_run_of(lineage: Path) -> str:
    """The MLflow run id of the pretraining run a backbone folder came from."""
    run_id = json_record(lineage, "the pretraining lineage record").get("run_id")
    if not isinstance(run_id, str) or not run_id:
        raise UserError(f"{lineage}: the pretraining lineage record names no run_id")
    return run_id


def local_weights(cfg: ModelConfig) -> Path | None:
    """The folder a preset loads without a download: model.path, else its own folder under
    model.root (tiny presets build theirs); None: from the Hub or its cache."""
    if cfg.path:
        return Path(cfg.path).expanduser()
    if not cfg.root or cfg.tiny is not None:
        return None
    root = Path(cfg.root).expanduser()
    if cfg.revision:
        raise UserError(
            f"model.revision={cfg.revision} picks a Hub revision, but model.root={root} holds "
            "the weights as they are: set model.root=null to download that revision"
        )
    folders = [root / name for name in (cfg.hub_id, cfg.modelscope_id, cfg.name) if name]
    found = next((folder for folder in folders if folder.is_dir()), None)
    if found is None:
        hint = f"`hf download {cfg.hub_id} --local-dir {folders[0]}`; " if cfg.hub_id else ""
        raise UserError(
            f"model.root={root} has no folder for model={cfg.name}: looked for "
            f"{', '.join(map(str, folders))} ({hint}or model.root=null to use the HF cache)"
        )
    return found


def check_weights_reachable(cfg: ModelConfig) -> None:
    """Fail with one line unless the preset's weights can be had, without loading or
    downloading them: a checkpoint folder, a tiny or classical preset, a pretraining run, a
    snapshot in the HF cache, or a Hub repository this machine may download."""
    if cfg.from_run or cfg.arch == Arch.classical:
        return  # a run's checkpoint is fetched (and checked) by the job itself
    local = local_weights(cfg)
    if local is not None:
        check_checkpoint_dir(local)
    elif cfg.tiny is None and cfg.hub == Hub.huggingface:
        check_hub_access(cfg)


def hub_id(cfg: ModelConfig) -> str:
    """The preset's Hub repository, or one line saying where to put its weights instead."""
    if not cfg.hub_id:
        raise UserError(
            f"model preset '{cfg.name}' has neither hub_id, tiny nor path: set model.path"
        )
    return str(cfg.hub_id)


def check_hub_access(cfg: ModelConfig) -> None:
    """The repository is in the HF cache, or the Hub lets this machine download it."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.constants import is_offline_mode

    repo = hub_id(cfg)
    try:
        snapshot_download(
            repo, revision=cfg.revision, allow_patterns=HUB_PATTERNS, local_files_only=True
        )
        return
    except Exception as exc:
        if is_offline_mode():
            raise unavailable(cfg, exc) from exc
    try:
        HfApi().auth_check(repo)  # a gated or missing repository fails here, not mid-grid
    except Exception as exc:
        raise unavailable(cfg, exc) from exc


def unavailable(cfg: ModelConfig, exc: Exception) -> UserError:
    """Weights neither on this machine nor downloadable: how to supply them."""
    return UserError(
        f"weights of {cfg.hub_id} are not available ({type(exc).__name__}: no access to "
        "the Hub and not in the HF cache): download them where the Hub is reachable "
        f"(`hf download {cfg.hub_id} --local-dir DIR/{cfg.hub_id}`) and pass model.root=DIR "
        "(or model.path=DIR/..., for this preset only), or use model.hub=modelscope"
    )


def check_checkpoint_dir(path: Path) -> Path:
    """Fail with one line unless `path` holds a config, safetensors weights and a tokenizer."""
    if not path.is_dir():
        raise UserError(f"model.path={path} is not a directory: point it at a saved HF checkpoint")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt*")]
        hint = f" (found pickle files {pickled}: re-save them as safetensors)" if pickled else ""
        missing.append(f"*.safetensors weights{hint}")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        missing.append("a tokenizer (tokenizer.json / tokenizer_config.json / vocab.txt)")
    if missing:
        raise UserError(
            f"model.path={path} is not a checkpoint: missing {', '.join(missing)}; "
            "save one with model.save_pretrained() and tokenizer.save_pretrained()"
        )
    return path


def download(cfg: ModelConfig) -> Path:
    """Fetch a preset's weights from its hub (or the local cache), failing with one line offline."""
    repo = hub_id(cfg)
    if cfg.hub == Hub.modelscope:
        return download_modelscope(cfg.modelscope_id or repo, cfg.revision)
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(repo, revision=cfg.revision, allow_patterns=HUB_PATTERNS)
    except Exception as exc:
        raise unavailable(cfg, exc) from exc
    return check_checkpoint_dir(Path(local))


def download_modelscope(model_id: str, revision: str | None) -> Path:
    """Fetch weights through ModelScope, the hub the article uses for Qwen."""
    try:
        from modelscope import snapshot_download
    except ImportError as exc:
        raise UserError(
            "model.hub=modelscope needs the modelscope package: pip install -e '.[modelscope]'"
        ) from exc
    try:
        local = snapshot_download(model_id, revision=revision or "master")
    except Exception as exc:
        raise UserError(
            f"weights of {model_id} are not available from ModelScope ({type(exc).__name__}): "
            "download them where ModelScope is reachable and pass model.path=DIR"
        ) from exc
    return check_checkpoint_dir(Path(local))


def check_backbone(
    backbone: Backbone, model: ModelConfig, method: MethodConfig, longest_input: int, max_len: int
) -> None:
    """What the checkpoint's config tells before its weights load: its kind fits model.arch, the
    attention implementation runs here, the method's modules exist, the inputs fit its positions.

    The model is built on the meta device (no memory, no weights) so that transformers and the
    method check their own settings, as they would when the run loads it.
    """
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    config = backbone_config(backbone)
    encoder = config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if encoder != (backbone.arch == Arch.encoder):
        kind = "an encoder" if encoder else "a decoder"
        raise UserError(
            f"model.arch={backbone.arch.value}, but {backbone.path} holds {kind}"
            f" ({config.model_type}): use a preset of its kind, or set model.arch"
        )
    attention = model.attn_implementation if backbone.arch == Arch.decoder else None
    try:
        with torch.device("meta"):
            skeleton = AutoModelForSequenceClassification.from_config(
                config, attn_implementation=attention, trust_remote_code=backbone.trust_remote_code
            )
    except (ValueError, ImportError) as exc:
        reason = " ".join(str(exc).split())[:240]
        raise UserError(
            f"model.attn_implementation={attention} cannot run here ({reason}); sdpa runs"
            " everywhere, flash_attention_2 needs a CUDA GPU and the flash-attn package"
        ) from exc
    check_method_fits(method, model, skeleton)
    check_positions(config, longest_input, max_len)


def check_positions(config: PretrainedConfig, longest_input: int, max_len: int) -> None:
    """Inputs longer than the backbone's position embeddings fail (BERT) or degrade silently."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        return
    if config.model_type in OFFSET_POSITIONS:  # positions start after the padding index
        limit -= config.pad_token_id + 1
    if longest_input > limit:
        raise UserError(
            f"trainer.max_len={max_len} lets inputs reach {longest_input} tokens, beyond the"
            f" {limit} positions of this {config.model_type} backbone: set trainer.max_len to at"
            f" most {limit} (data.long_text=sliding_window keeps long texts whole)"
        )


def backbone_config(backbone: Backbone) -> PretrainedConfig:
    """The backbone's config as transformers builds it from the folder."""
    from transformers import AutoConfig

    return built_from_folder(
        backbone.path,
        "config",
        lambda: AutoConfig.from_pretrained(
            backbone.path, trust_remote_code=backbone.trust_remote_code
        ),
    )


def built_from_folder(path: Path, what: str, build: Callable[[], T]) -> T:
    """What transformers builds from a backbone folder; a folder it cannot read (a file cut
    short, an unknown model type, a missing file) is one line naming the folder."""
    try:
        return build()
    except (OSError, ValueError, KeyError, TypeError) as exc:  # json's errors are ValueErrors
        reason = " ".join(str(exc).split())[:300]
        raise UserError(
            f"transformers cannot build the {what} of the backbone in {path} "
            f"({type(exc).__name__}: {reason}): check the folder (model.path / model.root), "
            "or download it again"
        ) from None


def load_tokenizer(backbone: Backbone) -> PreTrainedTokenizerBase:
    """Load the tokenizer; decoders get a pad token (their eos) if they have none."""
    from transformers import AutoTokenizer

    tokenizer = built_from_folder(
        backbone.path,
        "tokenizer",
        lambda: AutoTokenizer.from_pretrained(
            backbone.path, trust_remote_code=backbone.trust_remote_code
        ),
    )
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(f"the tokenizer in {backbone.path} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_classifier(
    backbone: Backbone,
    tokenizer: PreTrainedTokenizerBase,
    label_names: Sequence[str],
    dtype: torch.dtype,
    attn_implementation: str | None,
    problem_type: str | None = None,
    quantization: BitsAndBytesConfig | None = None,
) -> PreTrainedModel:
    """Load the backbone with a freshly initialised classification head for `label_names`.

    `problem_type` picks the loss (None: from the labels); `quantization` loads 4-bit weights.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(
        backbone.path,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        pad_token_id=tokenizer.pad_token_id,
        problem_type=problem_type,
        trust_remote_code=backbone.trust_remote_code,
    )
    kwargs: dict[str, Any] = {}
    if attn_implementation and backbone.arch == Arch.decoder:
        kwargs["attn_implementation"] = attn_implementation
    # A checkpoint fine-tuned on another label set has a head of another shape: re-initialise it.
    kwargs.update(dtype=dtype, ignore_mismatched_sizes=True)
    if quantization is not None:
        # bitsandbytes quantizes while loading from disk, onto the GPU.
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    # Every trial reads the weights from their files, and that is what makes "read once per
    # worker, once per node" true: safetensors maps the files, so from the second trial on (of
    # this worker or any other on the node) the bytes come from the OS page cache, shared by
    # all processes. A per-process copy of the tensors was slower still (the copy costs more
    # than the mapped read: benchmarks/startup.py) and needed a clone to keep training off it.
    model: PreTrainedModel = AutoModelForSequenceClassification.from_pretrained(
        backbone.path,
        config=config,
        trust_remote_code=backbone.trust_remote_code,
        use_safetensors=True,  # never a pickle
        **kwargs,
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    # Provenance in the saved config; PEFT also reads it when saving adapters.
    set_name_or_path(model, str(backbone.path))
    return model
