"""A plain HF Trainer script with our pipeline's exact settings: the yardstick of our overhead.

What `python -m src.train` does for a LoRA run, without the framework: tokenise once without
padding, `DataCollatorWithPadding`, length-grouped batches, evaluate and keep the best epoch,
merge LoRA, predict the test split in length-sorted batches, save the merged checkpoint. No
Hydra, no MLflow, no config checks, no reports.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, TaskType, get_peft_model
from sklearn.metrics import f1_score
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class ListDataset(torch.utils.data.Dataset[dict[str, Any]]):
    def __init__(self, ids: list[list[int]], labels: list[int]) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def macro_f1(pred: Any) -> dict[str, float]:
    predicted = pred.predictions.argmax(-1)
    return {"macro_f1": float(f1_score(pred.label_ids, predicted, average="macro"))}


@torch.inference_mode()
def predict(model: Any, collator: Any, ids: list[list[int]], batch_size: int) -> np.ndarray:
    """Logits in input order from length-sorted batches."""
    model.eval()
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = []
    for i in range(0, len(order), batch_size):
        batch = collator([{"input_ids": ids[j]} for j in order[i : i + batch_size]])
        out.append(model(**batch).logits.float())
    logits = np.empty((len(ids), out[0].shape[-1]), dtype=np.float32)
    logits[order] = torch.cat(out).numpy()
    return logits


def run(
    settings: Any, checkpoint: Path, load_splits: Any, workdir: Path, attach_meter: Any = None
) -> dict[str, Any]:
    """The whole run; `load_splits()` gives the frames (inside the timed region, as for ours)."""
    start = time.perf_counter()
    splits = load_splits()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)

    def tokenize(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, truncation=True, max_length=settings.max_len)["input_ids"]

    train_ids, valid_ids, test_ids = (
        tokenize(s.text.tolist()) for s in (splits.train, splits.valid, splits.test)
    )
    names = splits.label_names
    model: Any = AutoModelForSequenceClassification.from_pretrained(
        checkpoint,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        pad_token_id=tokenizer.pad_token_id,
        dtype=torch.float32,
        attn_implementation="sdpa",
    )
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=settings.rank,
        lora_alpha=2 * settings.rank,
        lora_dropout=settings.dropout,
        target_modules=TARGET_MODULES,
    )
    model = get_peft_model(model, lora)
    if attach_meter is not None:
        attach_meter(model)
    collator = DataCollatorWithPadding(tokenizer)
    args = TrainingArguments(
        output_dir=str(workdir / "trainer"),
        learning_rate=settings.lr,
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.ours_eval_batch_size,
        weight_decay=settings.weight_decay,
        train_sampling_strategy="group_by_length",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        save_only_model=True,
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        logging_steps=50,
        seed=settings.seed,
        data_seed=settings.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        report_to="none",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=ListDataset(train_ids, splits.train.label.tolist()),
        eval_dataset=ListDataset(valid_ids, splits.valid.label.tolist()),
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=macro_f1,
    )
    result = trainer.train()
    merged = model.merge_and_unload()  # the best epoch's weights: the Trainer loaded them
    test_start = time.perf_counter()
    logits = predict(merged, collator, test_ids, 64)
    test_s = time.perf_counter() - test_start
    merged.save_pretrained(workdir / "checkpoint")
    tokenizer.save_pretrained(workdir / "checkpoint")
    return {
        "train_samples_per_second": float(result.metrics["train_samples_per_second"]),
        "train_runtime": float(result.metrics["train_runtime"]),
        "test_samples_per_second": len(test_ids) / test_s,
        "test_macro_f1": float(
            f1_score(splits.test.label.tolist(), logits.argmax(-1), average="macro")
        ),
        "wall_s": time.perf_counter() - start,
    }
