"""Fitting texts into `trainer.max_len`: truncation (head / tail / head_tail) or sliding windows.

A text becomes one or more model inputs `prefix + text tokens + suffix`, wrapped in the
tokenizer's special tokens ([CLS] ... [SEP], a BOS). The prefix and suffix (the prompt) are never
cut: only the text's tokens are truncated or windowed, within what the prompt leaves (the
budget). With sliding windows every window carries the whole prompt and is labelled with its
text's label; the logits of a text's windows are aggregated into the text's logits, so metrics
stay per text. The spec is saved with the checkpoint (src.checkpoint.files) so that prediction
encodes texts identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from src.config.errors import UserError
from src.config.schema import Aggregation, DataConfig, LongText, Truncation
from src.inputs.prompts import Prompt

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class InputSpec:
    """How texts become model inputs; enum fields hold the config values' strings (JSON-ready)."""

    max_len: int
    prefix: str = ""
    suffix: str = ""
    special_tokens: bool = True  # False when a chat template already supplies them
    truncation: str = Truncation.head.value
    head_tokens: int = 128
    long_text: str = LongText.truncate.value
    stride: int = 128
    aggregation: str = Aggregation.mean.value


@dataclass(frozen=True)
class Encoded:
    """The model inputs of a list of texts and the text each input belongs to."""

    inputs: list[list[int]]
    text_index: np.ndarray  # per input: the position of its text
    text_tokens: np.ndarray  # per text: its token count before cutting
    budget: int  # tokens of an input left for the text
    aggregation: str

    def aggregate(self, logits: np.ndarray) -> np.ndarray:
        """Per-input logits -> per-text logits."""
        return aggregate(logits, self.text_index, len(self.text_tokens), self.aggregation)

    def per_input(self, values: Sequence[Any]) -> list[Any]:
        """A per-text value (a label) repeated for each of the text's inputs."""
        return [values[i] for i in self.text_index]

    @property
    def inputs_per_text(self) -> float:
        """Average number of inputs (windows) per text."""
        return len(self.inputs) / max(len(self.text_tokens), 1)


def check_long_text(cfg: DataConfig, max_len: int) -> None:
    """Reject truncation / window settings that cannot work with `max_len`."""
    if cfg.long_text == LongText.sliding_window and not 0 <= cfg.stride < max_len:
        raise UserError(
            f"data.stride={cfg.stride} must be at least 0 and smaller than"
            f" trainer.max_len={max_len}: it is the number of tokens consecutive windows share"
        )
    if cfg.truncation == Truncation.head_tail and not 0 < cfg.head_tokens < max_len:
        raise UserError(
            f"data.head_tokens={cfg.head_tokens} must lie between 1 and trainer.max_len={max_len}"
            " - 1 for data.truncation=head_tail (the rest of the budget comes from the end)"
        )


def input_spec(cfg: DataConfig, max_len: int, prompt: Prompt) -> InputSpec:
    """The spec of a run: data.truncation / long_text settings around a rendered prompt."""
    return InputSpec(
        max_len=max_len,
        prefix=prompt.prefix,
        suffix=prompt.suffix,
        special_tokens=prompt.special_tokens,
        truncation=Truncation(cfg.truncation).value,
        head_tokens=cfg.head_tokens,
        long_text=LongText(cfg.long_text).value,
        stride=cfg.stride,
        aggregation=Aggregation(cfg.aggregation).value,
    )


def encode(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, spec: InputSpec) -> Encoded:
    """Token ids (unpadded) of every input; one per text, or one per window."""
    before, after = special_tokens_around(tokenizer) if spec.special_tokens else ([], [])
    prefix, suffix = (_ids(tokenizer, part) for part in (spec.prefix, spec.suffix))
    fixed = len(before) + len(prefix) + len(suffix) + len(after)
    budget = spec.max_len - fixed
    if budget < 1:
        raise UserError(
            f"the prompt and special tokens take {fixed} of trainer.max_len={spec.max_len} tokens,"
            " leaving none for the text: raise trainer.max_len or shorten the prompt"
        )
    sliding = spec.long_text == LongText.sliding_window.value
    if sliding and spec.stride >= budget:
        raise UserError(
            f"data.stride={spec.stride} must be smaller than the {budget} tokens a window has for"
            f" the text (trainer.max_len={spec.max_len} minus {fixed} prompt and special tokens)"
        )
    # Whole texts on purpose (cut below): no "longer than model_max_length" warning.
    text_ids = (
        tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        if texts
        else []
    )
    inputs: list[list[int]] = []
    index: list[int] = []
    for i, ids in enumerate(text_ids):
        pieces = (
            windows(ids, budget, spec.stride)
            if sliding
            else [truncate(ids, budget, Truncation(spec.truncation), spec.head_tokens)]
        )
        for piece in pieces:
            inputs.append([*before, *prefix, *piece, *suffix, *after])
            index.append(i)
    return Encoded(
        inputs=inputs,
        text_index=np.asarray(index, dtype=np.int64),
        text_tokens=np.asarray([len(ids) for ids in text_ids], dtype=np.int64),
        budget=budget,
        aggregation=spec.aggregation,
    )


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a prompt part, without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def special_tokens_around(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single sequence ([CLS] / [SEP], BOS, ...)."""
    # Fast tokenizers have no public "add special tokens to these ids": find them around a probe.
    probe = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a")["input_ids"])
    for start in range(len(full) - len(probe) + 1):
        if full[start : start + len(probe)] == probe:
            return full[:start], full[start + len(probe) :]
    raise ValueError(f"cannot locate the special tokens of {type(tokenizer).__name__}")


def truncate(ids: Sequence[int], budget: int, how: Truncation, head_tokens: int) -> list[int]:
    """At most `budget` ids: the first, the last, or `head_tokens` first plus the rest last."""
    if len(ids) <= budget:
        return list(ids)
    if how == Truncation.head:
        return list(ids[:budget])
    if how == Truncation.tail:
        return list(ids[len(ids) - budget :])
    head = min(head_tokens, budget)  # a long prompt can leave less than head_tokens
    tail = budget - head
    return [*ids[:head], *(ids[len(ids) - tail :] if tail else [])]


def windows(ids: Sequence[int], budget: int, stride: int) -> list[list[int]]:
    """Windows of `budget` ids covering all ids, consecutive ones sharing `stride` ids."""
    if len(ids) <= budget:
        return [list(ids)]
    step = budget - stride
    out = []
    for start in range(0, len(ids), step):
        out.append(list(ids[start : start + budget]))
        if start + budget >= len(ids):
            break
    return out


def aggregate(logits: np.ndarray, index: np.ndarray, n_texts: int, how: str) -> np.ndarray:
    """Per-text mean or max of the logits of the text's inputs (inputs in any order)."""
    logits = np.asarray(logits, dtype=np.float64)
    if len(index) == n_texts and np.array_equal(index, np.arange(n_texts)):
        return logits  # one input per text
    out = np.zeros((n_texts, *logits.shape[1:]))
    if how == Aggregation.max.value:
        out.fill(-np.inf)
        np.maximum.at(out, index, logits)
        return out
    np.add.at(out, index, logits)
    counts = np.bincount(index, minlength=n_texts).reshape(-1, *([1] * (logits.ndim - 1)))
    return out / counts


def length_stats(lengths: np.ndarray, budget: int) -> dict[str, float]:
    """Token-length distribution of texts, and the share longer than what an input holds."""
    if len(lengths) == 0:
        return {}
    return {
        "mean": float(np.mean(lengths)),
        "p50": float(np.percentile(lengths, 50)),
        "p90": float(np.percentile(lengths, 90)),
        "max": float(np.max(lengths)),
        "truncated_share": float(np.mean(lengths > budget)),
    }


@dataclass
class Inputs:
    """Token ids of the training rows (main + auxiliary) and of the valid and test texts."""

    train: Encoded
    valid: Encoded
    test: Encoded


def encode_splits(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    test: pd.DataFrame,
    tokenizer: PreTrainedTokenizerBase,
    spec: InputSpec,
) -> Inputs:
    """Tokenise every split once, without padding: texts cut or windowed around the prompt."""
    return Inputs(*(encode(df.text.tolist(), tokenizer, spec) for df in (train, valid, test)))
