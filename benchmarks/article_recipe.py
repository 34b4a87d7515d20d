"""The article's recipe, reproduced as the benchmark's reference.

Source: ../shared/reference/article-llm-text-classification.zh.txt.

Kept as the article writes it, top to bottom:
- data as `datasets.Dataset.from_pandas(df[['content', 'label', '标注类别']])`;
- `tokenizer(..., max_length=MAX_LEN, padding=True, truncation=True)` inside
  `Dataset.map(batched=True)`: every map batch (datasets' default 1,000 rows) is padded to its own
  longest text, so nearly every row becomes MAX_LEN tokens; the tokenizer pads on the left;
- `DataCollatorWithPadding`, HF `Trainer` with its default random sampler, evaluation and a
  checkpoint every epoch, best model loaded at the end; `compute_metrics` = weighted F1;
- LoRA r=64, alpha=2r, dropout 0.1 on all seven projections (TaskType.SEQ_CLS);
- `evals()`: one text at a time through the (unmerged) PEFT model, gradients enabled.

Changed, and why (none of it changes speed on a CPU): the renamed Trainer arguments of
transformers 5 (`eval_strategy`, `processing_class`); fp32 instead of bf16 (CPU, as our arm);
`attn_implementation="sdpa"` (the article misspells "flash attention2", which raises; SDPA is our
default too); no `trust_remote_code`; `device_map` left out (one CPU); `num_proc=None` in `map`
(see `prepare`); progress bars off; the label names fixed (the article swaps them).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from peft import LoraConfig, TaskType, get_peft_model
from sklearn.metrics import f1_score
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
COLS = ["content", "label", "标注类别"]
TXT_COLNAME = "content"


def get_dataset(df: pd.DataFrame, label_names: list[str]) -> Dataset:
    """The article's `get_dataset_from_json`, from a frame (columns id, text, label) instead."""
    frame = pd.DataFrame(
        {
            "content": df.text.tolist(),
            "label": df.label.tolist(),
            "标注类别": [label_names[i] for i in df.label],
        }
    )
    return Dataset.from_pandas(frame[COLS], split="train")


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """`AutoTokenizer.from_pretrained(..., padding_side='left')` plus the article's pad token."""
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    tokenizer.add_special_tokens({"pad_token": "<|endoftext|>"})
    return tokenizer


def prepare(
    ds: Dataset, tokenizer: PreTrainedTokenizerBase, max_len: int, num_proc: int | None = None
) -> Dataset:
    """The article's preprocessing: pad and truncate inside `datasets.map`, batched.

    The article passes `num_proc=64`, which splits the rows into 64 contiguous shards, each padded
    per its own map batches; `None` (one process) pads per 1,000-row map batch.
    """

    def preprocess_function(examples: dict[str, list[Any]]) -> Any:
        # padding后处理效率不高,需要动态batch padding (the article's own comment)
        return tokenizer(examples[TXT_COLNAME], max_length=max_len, padding=True, truncation=True)

    return ds.map(preprocess_function, num_proc=num_proc, batched=True)


def sharded_training_efficiency(
    texts: list[str],
    tokenizer: PreTrainedTokenizerBase,
    max_len: int,
    num_proc: int,
    batch_size: int,
) -> float:
    """Training padding efficiency had `prepare` run with `num_proc` (the article's 64).

    `map(num_proc=n)` maps n contiguous shards (sizes as `np.array_split`), each padded to its
    own longest text (a shard of 2,000 / 64 rows is one map batch): the padded length of a row
    is its shard's longest real length. Real / processed tokens are then counted over random
    batches of `batch_size` (the collator pads a batch to its longest padded row). Counted from
    the token lengths, not by running 64 processes.
    """
    real = [min(len(ids), max_len) for ids in tokenizer(list(texts))["input_ids"]]
    padded: list[int] = []
    for shard in np.array_split(np.asarray(real), num_proc):
        padded += [int(shard.max())] * len(shard) if len(shard) else []
    order = np.random.default_rng(0).permutation(len(padded))
    processed = sum(
        len(batch) * max(padded[i] for i in batch)
        for batch in (order[i : i + batch_size] for i in range(0, len(order), batch_size))
    )
    return sum(real) / processed


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    """The article's metric hook: weighted F1 of the argmax."""
    predictions, label = eval_pred
    predictions = np.argmax(predictions, axis=1)
    return {"f1": float(f1_score(y_true=label, y_pred=predictions, average="weighted"))}


def evals(
    test_ds: Dataset, model: Any, tokenizer: PreTrainedTokenizerBase, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """The article's evaluation: one text at a time, tokenised in the loop, gradients enabled."""
    k_list = [x[TXT_COLNAME] for x in test_ds]
    model.eval()
    k_result = []
    for txt in k_list:
        model_inputs = tokenizer(
            [txt], max_length=max_len, truncation=True, return_tensors="pt"
        ).to(model.device)
        logits = model(**model_inputs).logits
        res = int(torch.argmax(logits, axis=1).cpu())  # type: ignore[call-arg]
        k_result.append(res)
    return np.array(test_ds["label"]), np.array(k_result)


def training_args(output_dir: Path, settings: Any) -> TrainingArguments:
    """The article's TrainingArguments (learning rate, batch sizes and epochs from `settings`)."""
    return TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=settings.lr,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.article_eval_batch_size,
        num_train_epochs=settings.epochs,
        weight_decay=settings.weight_decay,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        seed=settings.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        report_to="none",
    )


def build_model(
    path: Path, tokenizer: PreTrainedTokenizerBase, label_names: list[str], settings: Any
) -> Any:
    """The article's model: the backbone with a fresh head, then LoRA on all projections."""
    id2label = dict(enumerate(label_names))
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        dtype=torch.float32,
        attn_implementation="sdpa",
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    peft_config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        target_modules=TARGET_MODULES,
        inference_mode=False,
        r=settings.rank,
        lora_alpha=settings.rank * 2,
        lora_dropout=settings.dropout,
    )
    return get_peft_model(model, peft_config)


def run(
    settings: Any,
    checkpoint: Path,
    splits: Any,
    workdir: Path,
    attach_meter: Any = None,
) -> dict[str, Any]:
    """Train and evaluate as the article does; returns what the benchmark measures.

    `attach_meter(model)` is called on the model before training (the padding meter).
    """
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)
    start = time.perf_counter()
    train_ds = get_dataset(splits.train, splits.label_names)
    valid_ds = get_dataset(splits.valid, splits.label_names)
    test_ds = get_dataset(splits.test, splits.label_names)
    tokenizer = load_tokenizer(checkpoint)
    data_collator = DataCollatorWithPadding(tokenizer=tokenizer)
    tokenized_train = prepare(train_ds, tokenizer, settings.max_len)
    tokenized_valid = prepare(valid_ds, tokenizer, settings.max_len)
    model = build_model(checkpoint, tokenizer, splits.label_names, settings)
    if attach_meter is not None:
        attach_meter(model)
    trainer = Trainer(
        model=model,
        args=training_args(workdir / "output", settings),
        train_dataset=tokenized_train,
        eval_dataset=tokenized_valid,
        processing_class=tokenizer,
        data_collator=data_collator,
        compute_metrics=compute_metrics,
    )
    result = trainer.train()
    test_start = time.perf_counter()
    y_true, y_pred = evals(test_ds, model, tokenizer, settings.max_len)
    test_s = time.perf_counter() - test_start
    saved_model = model.merge_and_unload()
    saved_model.save_pretrained(workdir / "seqcls")
    with_64 = sharded_training_efficiency(
        train_ds[TXT_COLNAME], tokenizer, settings.max_len, 64, settings.batch_size
    )
    return {
        "train_padding_efficiency_num_proc_64": with_64,
        "train_samples_per_second": float(result.metrics["train_samples_per_second"]),
        "train_runtime": float(result.metrics["train_runtime"]),
        "test_samples_per_second": len(test_ds) / test_s,
        "test_macro_f1": float(f1_score(y_true, y_pred, average="macro")),
        "wall_s": time.perf_counter() - start,
    }
