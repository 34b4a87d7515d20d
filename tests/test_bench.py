"""The benchmark's accounting and the article recipe's data preparation (no timings asserted),
and the batching that makes our padding efficient."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from transformers import (
    DataCollatorWithPadding,
    Qwen2Config,
    Qwen2ForSequenceClassification,
    TrainingArguments,
)

from benchmarks import article_recipe
from benchmarks.bench import render_table, table_rows
from benchmarks.common import PaddingMeter, TokenCount
from benchmarks.sweep import replay, summarize
from src.model.tiny import train_byte_bpe
from src.training.batching import bucketed_order, length_batches, longest_first, padding_efficiency
from src.training.trainer import ClassifierTrainer, TokenizedDataset

TEXTS = ["这个商品很好", "物流太慢了,再也不买", "一般", "质量不错,价格也便宜,下次还来"] * 10


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return train_byte_bpe(TEXTS, 300)


# --------------------------------------------------------------------------- padding accounting


def test_token_count() -> None:
    count = TokenCount()
    count.add(torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]]), pad_id=0)
    count.add(torch.tensor([0, 0, 8, 9]), pad_id=0)  # one left-padded sequence
    assert (count.rows, count.real, count.processed) == (3, 5, 12)
    assert count.efficiency == pytest.approx(5 / 12)
    assert TokenCount().efficiency == 1.0


def test_padding_meter_phases() -> None:
    meter = PaddingMeter(pad_id=0)
    embedding = nn.Embedding(10, 4)
    meter.attach(embedding)
    ids = torch.tensor([[1, 2, 0], [3, 0, 0]])
    embedding.train()
    embedding(ids)
    embedding.eval()
    with torch.no_grad():  # the Trainer's evaluation loop
        embedding(ids)
    with torch.inference_mode():  # our predict_logits
        embedding(ids)
    embedding(ids[:1, :2])  # the article's loop: gradients enabled, model in eval mode
    counts = meter.as_dict()
    assert counts["train"] == {"rows": 2, "real": 3, "processed": 6, "efficiency": 0.5}
    assert counts["valid"]["processed"] == 6
    assert (counts["test"]["rows"], counts["test"]["real"], counts["test"]["processed"]) == (
        3,
        5,
        8,
    )


def test_padding_meter_finds_the_embedding_and_steps_aside() -> None:
    meter = PaddingMeter(pad_id=0)
    detach = meter.attach_on_first_use(vocab_size=10)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    model(torch.tensor([[1, 0]]))
    model(torch.tensor([[1, 2]]))
    detach()  # already removed itself: a no-op
    assert not nn.modules.module._global_forward_pre_hooks
    assert meter.counts["train"].processed == 4 and meter.counts["train"].real == 3


# --------------------------------------------------------------------------- the article's recipe


def frame(texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [str(i) for i in range(len(texts))],
            "text": texts,
            "label": [i % 2 for i in range(len(texts))],
        }
    )


def test_recipe_dataset_columns() -> None:
    ds = article_recipe.get_dataset(frame(TEXTS[:4]), ["负向", "正向"])
    assert ds.column_names == ["content", "label", "标注类别"]
    assert ds["标注类别"][:2] == ["负向", "正向"]


def test_recipe_pads_each_map_batch_to_its_longest_text(tokenizer: Any) -> None:
    """padding=True inside datasets.map: 1,000-row map batches, left padding, truncation."""
    tokenizer = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer)
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.padding_side = "left"
    long_text = "质量不错" * 100
    texts = ["好"] * 1000 + ["物流太慢了"] * 199 + [long_text]
    ds = article_recipe.prepare(article_recipe.get_dataset(frame(texts), ["a", "b"]), tokenizer, 16)
    lengths = [len(ids) for ids in ds["input_ids"]]
    first, second = set(lengths[:1000]), set(lengths[1000:])
    assert first == {len(tokenizer("好")["input_ids"])}  # the first map batch: short texts only
    assert second == {16}  # the second holds the long text: everything padded to max_len
    row = ds[1000]
    real = len(tokenizer("物流太慢了")["input_ids"])
    assert sum(row["attention_mask"]) == real
    assert row["input_ids"][: 16 - real] == [tokenizer.pad_token_id] * (16 - real)  # left
    assert sum(ds[1199]["attention_mask"]) == 16  # truncated at max_len


def test_recipe_sharded_padding(tokenizer: Any) -> None:
    """num_proc shards pad to their own longest text (batch size 1: no collator padding)."""
    short, long = "好", "质量不错,价格也便宜,下次还来"
    texts = [short, short, long, short]
    n_short, n_long = (len(tokenizer(t)["input_ids"]) for t in (short, long))
    got = article_recipe.sharded_training_efficiency(texts, tokenizer, 64, 2, 1)
    assert got == pytest.approx((3 * n_short + n_long) / (2 * n_short + 2 * n_long))
    assert article_recipe.sharded_training_efficiency(texts, tokenizer, 64, 4, 1) == 1.0


def tiny_classifier(tokenizer: Any, num_labels: int) -> Qwen2ForSequenceClassification:
    """A one-layer Qwen2 classifier, seeded."""
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=16,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2ForSequenceClassification(config)


def test_recipe_evaluates_one_text_at_a_time(tokenizer: Any) -> None:
    model = tiny_classifier(tokenizer, num_labels=2)
    meter = PaddingMeter(pad_id=tokenizer.pad_token_id)
    meter.attach(model.get_input_embeddings())
    test_ds = article_recipe.get_dataset(frame(TEXTS[:6]), ["a", "b"])
    y_true, y_pred = article_recipe.evals(test_ds, model, tokenizer, 8)
    assert list(y_true) == [0, 1, 0, 1, 0, 1] and len(y_pred) == 6
    assert meter.counts["test"].rows == 6 and meter.counts["test"].efficiency == 1.0


# --------------------------------------------------------------------------- our batching


def long_tailed_lengths(n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(x) for x in np.clip(rng.lognormal(3.3, 0.8, n), 2, 256)]


def test_bucketed_order_is_an_epoch_of_even_batches() -> None:
    lengths = long_tailed_lengths(2003)
    order = bucketed_order(lengths, 8, torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(2003))
    batches = [order[i : i + 8] for i in range(0, len(order), 8)]
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # the longest batch first
    assert len(batches[-1]) == 3  # the short batch last: every other batch stays whole
    assert padding_efficiency(lengths, batches) >= 0.95
    again = bucketed_order(lengths, 8, torch.Generator().manual_seed(1))
    assert again != order  # a new order each epoch


def test_length_batches_for_inference() -> None:
    lengths = long_tailed_lengths(1000)
    batches = length_batches(lengths, max_batch=64)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert max(len(b) for b in batches) <= 64
    assert padding_efficiency(lengths, batches) >= 0.95
    fixed = np.argsort(lengths, kind="stable").tolist()
    assert padding_efficiency(lengths, [fixed[i : i + 64] for i in range(0, 1000, 64)]) < 0.9
    assert longest_first([3, 9, 1]) == [1, 0, 2]


def test_validation_metrics_see_dataset_order(tokenizer: Any, tmp_path: Any) -> None:
    """Evaluation runs longest first; the metric hook gets predictions back in dataset order
    (HF's group_by_length evaluation sampler would hand them over shuffled)."""
    model = tiny_classifier(tokenizer, num_labels=1)
    rng = np.random.default_rng(0)
    encodings = [[5] * int(n) for n in rng.integers(2, 40, size=50)]
    seen: dict[str, np.ndarray] = {}

    def metrics(pred: Any) -> dict[str, float]:
        seen["labels"], seen["logits"] = pred.label_ids, pred.predictions
        return {"x": 0.0}

    args = TrainingArguments(
        str(tmp_path),
        per_device_eval_batch_size=8,
        train_sampling_strategy="group_by_length",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = ClassifierTrainer(
        model=model,
        args=args,
        eval_dataset=TokenizedDataset(encodings, [float(i) for i in range(50)]),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=metrics,
    )
    trainer.evaluate()
    assert seen["labels"].ravel().tolist() == [float(i) for i in range(50)]
    model.eval()
    with torch.no_grad():
        direct = model(input_ids=torch.tensor([encodings[7]])).logits
    assert seen["logits"][7] == pytest.approx(direct.numpy().ravel(), abs=1e-5)


# --------------------------------------------------------------------------- sweep replay, table


def synthetic_table() -> dict[str, Any]:
    runs = []
    for rank in (8, 16, 32, 64):
        for lr in (1e-4, 3e-4, 1e-3, 3e-3):
            top = 0.9 - abs(np.log10(lr) + 3) * 0.1 - (0.02 if rank == 8 else 0.0)
            runs.append({"rank": rank, "lr": lr, "curve": [top - 0.1, top - 0.02, top]})
    return {"runs": runs, "steps_per_epoch": 10, "epochs": 3}


def test_sweep_replay() -> None:
    table = synthetic_table()
    result = replay(table, seed=0)
    assert result["reached"] and 0 < result["steps"] <= 48 * 30
    assert replay(table, seed=0) == result  # deterministic per seed
    summary = summarize(table, seeds=5)
    assert summary["grid_steps"] == 16 * 3 * 10
    assert summary["good_cells"] == 3 and summary["reached_share"] == 1.0


def arm(train: float, test: float, wall: float, real: int, processed: int) -> dict[str, Any]:
    phase = {"rows": 1, "real": real, "processed": processed, "efficiency": real / processed}
    return {
        "train_samples_per_second": train,
        "test_samples_per_second": test,
        "wall_s": wall,
        "peak_rss_mb": 900.0,
        "test_macro_f1": 0.5,
        "padding": {"train": phase, "valid": phase, "test": phase},
        "train_padding_efficiency_num_proc_64": 0.2,
    }


def test_table_rows() -> None:
    arms = {
        "article": [arm(10, 10, 100, 15, 100), arm(12, 11, 110, 15, 100)],
        "ours": [arm(50, 80, 30, 96, 100), arm(60, 90, 31, 96, 100)],
        "plain": [arm(60, 90, 29, 96, 100), arm(61, 91, 30, 96, 100)],
    }
    startup = {"bench": {"cold_s": 0.3, "warm_s": 0.1, "checkpoint_mb": 17.5}}
    sweep = {"median_steps_share": 0.3, "grid_steps": 480}
    cli = {
        "import hydra, omegaconf": 0.4,
        "minimal Hydra app --help": 1.0,
        "src.train --help": 1.0,
        "src.train --cfg job --resolve": 1.3,
        "src.predict --help": 0.5,
        "config mistake to its error line": 1.2,
    }
    rows = {r["metric"]: r for r in table_rows(arms, startup, sweep, cli)}
    train = rows["training samples/s"]
    assert (train["reference"], train["ours"], train["ratio"], train["met"]) == (11, 55, 5, True)
    assert rows["padding efficiency, training"]["met"] is True
    overhead = next(r for name, r in rows.items() if name.startswith("framework overhead"))
    assert overhead["ratio"] == pytest.approx(30.5 / 29.5) and overhead["met"] is True
    startup_row = next(r for name, r in rows.items() if name.startswith("trial start-up"))
    assert startup_row["ratio"] == pytest.approx(1 / 3)
    sweep_row = next(r for name, r in rows.items() if name.startswith("sweep"))
    assert sweep_row["met"] is True and sweep_row["ours"] == pytest.approx(0.3 * 480)
    help_row = next(r for n, r in rows.items() if "src.train --help` (reference: `import" in n)
    assert help_row["ratio"] == pytest.approx(2.5) and help_row["met"] is True
    mistake_row = next(r for n, r in rows.items() if "config mistake" in n)
    assert mistake_row["ours"] == 1.2 and mistake_row["ratio"] == pytest.approx(3.0)
    assert "| training samples/s | 11 | 55 | 5 |" in render_table(list(rows.values()))
    json.dumps(rows)  # the JSON report holds them as they are


# --------------------------------------------------------------------------- the GPU benchmark


def test_the_gpu_benchmark_runs_sharded_on_two_cpu_processes_and_plans_the_node(
    tmp_path: Any,
) -> None:
    """The one script a lent GPU runs (`benchmarks/gpu.py`), rehearsed on 2 gloo processes: it
    shards with src.train's own FSDP path, measures each cell, and prints the node's plan."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node=2", "-m", "benchmarks.gpu", "--fsdp", "--smoke", "--plan"]
    done = subprocess.run(
        [*command, "--out-dir", str(tmp_path)],
        cwd=ROOT,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (written,) = tmp_path.glob("*-fsdp.md")
    table = written.read_text()
    assert "| smoke | lora fsdp |" in table and "| smoke | sft fsdp |" in table
    assert "1,2            2  FSDP     on            58.0  model=qwen2_7b_base method=sft" in table
