"""Tokens in, logits out: tokenising without padding, and batched inference in length-sorted
batches. Shared by evaluation, prediction and the label-noise scorer."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from transformers import DataCollatorWithPadding, PreTrainedModel, PreTrainedTokenizerBase

from src.training.batching import length_batches


def tokenize(
    texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_len: int
) -> list[list[int]]:
    """Token ids truncated at `max_len`, without padding (the collator pads per batch)."""
    out = tokenizer(list(texts), truncation=True, max_length=max_len, padding=False)
    return [list(ids) for ids in out["input_ids"]]


@torch.inference_mode()
def predict_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    encodings: Sequence[list[int]],
    batch_size: int,
) -> tuple[np.ndarray, float]:
    """Logits in input order, computed in length-sorted batches of at most `batch_size` that
    pad little (src.training.batching.length_batches); also returns samples/s. Logits stay on
    the device
    until the end: no host sync per batch."""
    model.eval()
    device = next(model.parameters()).device
    collator = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    batches = length_batches([len(ids) for ids in encodings], batch_size)
    order = np.asarray([i for batch in batches for i in batch], dtype=np.int64)
    out: list[torch.Tensor] = []
    start = time.perf_counter()
    for indices in batches:
        batch = collator([{"input_ids": encodings[j]} for j in indices])
        out.append(model(**{k: v.to(device) for k, v in batch.items()}).logits)
    n_labels = int(model.config.num_labels or 0)
    sorted_logits = torch.cat(out).float().cpu().numpy() if out else np.zeros((0, n_labels))
    elapsed = time.perf_counter() - start
    logits = np.empty_like(sorted_logits)
    logits[order] = sorted_logits
    return logits, len(encodings) / elapsed if elapsed > 0 else float("inf")
