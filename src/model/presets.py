"""The `model=` settings a preset may combine, checked before anything loads.

Light on purpose (no torch, transformers or scikit-learn): `src.cli.config_checks` runs these before
any data is read. What only the backbone's own config can tell (attention, LoRA targets,
positions) is `src.model.backbones.check_backbone`, after the checkpoint is found.
"""

from __future__ import annotations

from src.config.errors import UserError
from src.config.schema import Arch, ModelConfig, TfidfConfig, TinyArchConfig

TINY_FAMILIES = {"bert": Arch.encoder, "qwen2": Arch.decoder, "llama": Arch.decoder}
TFIDF_ANALYZERS = ("char", "char_wb", "word")  # scikit-learn's TfidfVectorizer
CLASS_WEIGHTS = (None, "balanced")  # scikit-learn's LogisticRegression
SEED_LIMIT = 2**32  # numpy seeds (and so transformers' set_seed) lie in [0, 2**32)


def check_seed(key: str, value: int) -> None:
    """A seed numpy, torch and our random streams all accept."""
    if not 0 <= value < SEED_LIMIT:
        raise UserError(f"{key}={value} must lie in [0, 2**32), as numpy's seeds do")


def check_model(cfg: ModelConfig) -> None:
    """Reject a preset whose settings contradict each other or cannot build a model."""
    if cfg.arch == Arch.classical:
        if cfg.tfidf is None:
            raise UserError(
                f"model.arch=classical needs model.tfidf settings (see conf/model/tfidf_logreg"
                f".yaml); model={cfg.name} has none"
            )
        check_tfidf(cfg.tfidf, "model.tfidf")
        return
    if cfg.tiny is not None and cfg.hub_id and not cfg.path and not cfg.from_run:
        raise UserError(
            f"model.hub_id={cfg.hub_id} would be ignored: model={cfg.name} is a tiny random model"
            " (model.tiny); choose a hub preset (e.g. model=qwen2_5_0_5b_instruct) or set"
            " model.path"
        )
    if cfg.tiny is not None:
        check_tiny(cfg.tiny, cfg.arch)


def check_tiny(cfg: TinyArchConfig, arch: Arch) -> None:
    """A tiny architecture its model class can build: sizes that divide, a known family."""
    if cfg.family not in TINY_FAMILIES:
        raise UserError(f"model.tiny.family={cfg.family} is not one of {', '.join(TINY_FAMILIES)}")
    if TINY_FAMILIES[cfg.family] != arch:
        built = TINY_FAMILIES[cfg.family].value
        raise UserError(
            f"model.arch={arch.value} does not fit model.tiny.family={cfg.family}, which builds"
            f" {built} models: set model.arch={built}"
        )
    sizes = {
        "hidden_size": cfg.hidden_size,
        "num_layers": cfg.num_layers,
        "num_heads": cfg.num_heads,
        "num_kv_heads": cfg.num_kv_heads,
        "intermediate_size": cfg.intermediate_size,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings,
    }
    for key, value in sizes.items():
        if value < 1:
            raise UserError(f"model.tiny.{key}={value} must be at least 1")
    if cfg.hidden_size % cfg.num_heads:
        raise UserError(
            f"model.tiny.hidden_size={cfg.hidden_size} must be a multiple of"
            f" model.tiny.num_heads={cfg.num_heads}"
        )
    if cfg.family != "bert" and cfg.num_heads % cfg.num_kv_heads:
        raise UserError(
            f"model.tiny.num_heads={cfg.num_heads} must be a multiple of"
            f" model.tiny.num_kv_heads={cfg.num_kv_heads}"
        )
    check_seed("model.tiny.init_seed", cfg.init_seed)


def check_tfidf(cfg: TfidfConfig, key: str) -> None:
    """TF-IDF and linear-model settings scikit-learn accepts (it would say so only when fitting)."""
    if cfg.analyzer not in TFIDF_ANALYZERS:
        raise UserError(f"{key}.analyzer={cfg.analyzer} is not one of {', '.join(TFIDF_ANALYZERS)}")
    if not 1 <= cfg.ngram_min <= cfg.ngram_max:
        raise UserError(
            f"{key}.ngram_min={cfg.ngram_min} and {key}.ngram_max={cfg.ngram_max} must satisfy"
            " 1 <= ngram_min <= ngram_max"
        )
    if cfg.max_features is not None and cfg.max_features < 1:
        raise UserError(
            f"{key}.max_features={cfg.max_features} must be at least 1, or null for no limit"
        )
    if not cfg.C > 0:
        raise UserError(f"{key}.C={cfg.C} must be > 0 (the inverse regularisation strength)")
    if cfg.class_weight not in CLASS_WEIGHTS:
        raise UserError(f"{key}.class_weight={cfg.class_weight} must be null or balanced")
    if cfg.max_iter < 1:
        raise UserError(f"{key}.max_iter={cfg.max_iter} must be at least 1")
