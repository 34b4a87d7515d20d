"""Tiny randomly initialised Qwen2 / Llama / BERT backbones for CPU runs and tests: a tokenizer
trained on the training texts and a seeded random model of the real architecture, written once
as a normal checkpoint directory (cached by architecture and texts)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2Model,
)

from src.config.errors import UserError
from src.config.schema import TinyArchConfig

log = logging.getLogger(__name__)


TINY_FORMAT_VERSION = 1


def materialize_tiny(cfg: TinyArchConfig, train_texts: Sequence[str], cache_root: Path) -> Path:
    """Build once (cached by config and texts) a random-init checkpoint with a trained tokenizer."""
    key = hashlib.sha256()
    key.update(json.dumps([TINY_FORMAT_VERSION, asdict_cfg(cfg)], sort_keys=True).encode())
    for text in train_texts:
        key.update(text.encode())
        key.update(b"\0")
    target = cache_root / f"{cfg.family}-{key.hexdigest()[:16]}"
    if (target / "config.json").is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache_root, prefix=".staging-"))
    try:
        tokenizer = train_tokenizer(cfg, train_texts)
        tokenizer.save_pretrained(staging)
        build_tiny_backbone(cfg, tokenizer).save_pretrained(staging)
        # Concurrent builders of the same key race harmlessly: the first rename wins.
        os.replace(staging, target) if not target.exists() else shutil.rmtree(staging)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("built tiny %s checkpoint at %s", cfg.family, target)
    return target


def asdict_cfg(cfg: TinyArchConfig) -> dict[str, Any]:
    """A tiny-architecture config as a plain dict, whether dataclass or OmegaConf node."""
    if OmegaConf.is_config(cfg):
        return dict(OmegaConf.to_container(cfg))  # type: ignore[arg-type]
    return asdict(cfg)


def train_tokenizer(cfg: TinyArchConfig, texts: Sequence[str]) -> PreTrainedTokenizerFast:
    """Train a tokenizer of the family's kind (byte-level BPE for decoders, WordPiece for BERT)."""
    if cfg.family == "bert":
        return train_wordpiece(texts, cfg.vocab_size)
    return train_byte_bpe(texts, cfg.vocab_size)


def train_byte_bpe(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE like Qwen's and Llama 3's, with `<|endoftext|>` as pad and eos."""
    special = "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[special],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=special, pad_token=special, model_max_length=1 << 20
    )


def train_wordpiece(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A BERT WordPiece tokenizer splitting Chinese characters, as bert-base-chinese does."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(
        texts,
        trainer=trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=specials, show_progress=False
        ),
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=1 << 20,
    )


def build_tiny_backbone(cfg: TinyArchConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A randomly initialised base model (no head) of the real architecture, seeded."""
    torch.manual_seed(cfg.init_seed)
    common: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "pad_token_id": tokenizer.pad_token_id,
    }
    model: PreTrainedModel
    if cfg.family == "bert":
        model = BertModel(BertConfig(**common))
    elif cfg.family == "qwen2":
        model = Qwen2Model(Qwen2Config(num_key_value_heads=cfg.num_kv_heads, **common))
    elif cfg.family == "llama":
        model = LlamaModel(LlamaConfig(num_key_value_heads=cfg.num_kv_heads, **common))
    else:
        raise UserError(f"model.tiny.family={cfg.family} is not one of bert, qwen2, llama")
    return model
