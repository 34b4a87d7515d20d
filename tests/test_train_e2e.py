"""End to end: the real `python -m src.train` / `src.predict` commands, results read from MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from src.checkpoint.classifier import classify
from tests.conftest import QUICK, Store, run_module

TEXTS = ["退钱,什么辣鸡基金", "收益一直挺不错"]

EPOCHS = 2


@pytest.fixture(scope="module")
def single_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, mlflow.entities.Run]:
    """One LoRA run on the article's fund reviews, shared by the assertions below."""
    store = Store(tmp_path_factory.mktemp("single"))
    proc = run_module("src.train", *QUICK, "model=tiny_qwen2", "method=lora", *store.overrides())
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = store.runs()
    return store, run


def test_run_records_config_tags_and_final_metrics(single_run) -> None:
    store, run = single_run
    assert run.info.status == "FINISHED"
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["model.name"] == "tiny_qwen2" and params["method.rank"] == "16"
    assert params["trainer.epochs"] == str(EPOCHS) and params["seed"] == "42"
    assert tags["model"] == "tiny_qwen2" and tags["method"] == "lora"
    assert tags["data"] == "fund_reviews" and "trainer.epochs=2" in tags["hydra.overrides"]
    assert tags["clfsweep.state"] == "completed"
    for split in ("test",):
        for name in ("accuracy", "micro_f1", "macro_precision", "weighted_recall", "macro_f1"):
            assert 0.0 <= metrics[f"{split}_{name}"] <= 1.0
    assert metrics["train_samples_per_second"] > 0 and metrics["test_samples_per_second"] > 0
    assert 1 <= metrics["best_epoch"] <= EPOCHS
    assert metrics["best_eval_macro_f1"] == max(
        m.value for m in store.client().get_metric_history(run.info.run_id, "eval_macro_f1")
    )


def test_validation_metrics_are_logged_every_epoch(single_run) -> None:
    store, run = single_run
    history = store.client().get_metric_history(run.info.run_id, "eval_macro_f1")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))


def test_run_artifacts_and_dataset_inputs(single_run, tmp_path: Path) -> None:
    store, run = single_run
    client = store.client()
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "confusion_matrix.png", "test_classification_report.json"} <= names
    assert "test_classification_report.txt" in names and "predictions" in names
    local = client.download_artifacts(run.info.run_id, "predictions/test.csv", str(tmp_path))
    predictions = pd.read_csv(local)
    assert list(predictions.columns) == ["id", "gold", "predicted", "p_负向", "p_正向"]
    assert len(predictions) == 4 and set(predictions.gold) == {"负向", "正向"}
    assert (predictions[["p_负向", "p_正向"]].sum(axis=1) - 1).abs().max() < 1e-5
    report = json.loads(
        Path(
            client.download_artifacts(
                run.info.run_id, "test_classification_report.json", str(tmp_path)
            )
        ).read_text()
    )
    assert report["负向"]["support"] == 2
    contexts = sorted(
        tag.value
        for inp in run.inputs.dataset_inputs
        for tag in inp.tags
        if tag.key == "mlflow.data.context"
    )
    assert contexts == ["test", "training", "validation"]
    assert all(inp.dataset.digest for inp in run.inputs.dataset_inputs)
    sources = {json.loads(inp.dataset.source)["uri"] for inp in run.inputs.dataset_inputs}
    assert [Path(uri).name for uri in sources] == ["fund_reviews.jsonl"]  # what it was read from


def test_logged_model_is_a_safetensors_checkpoint_that_from_pretrained_loads(
    single_run, tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification

    store, run = single_run
    mlflow.set_tracking_uri(store.uri)
    (output,) = run.outputs.model_outputs
    uri = f"models:/{output.model_id}"
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path)))
    checkpoint = local / "artifacts" / "checkpoint"
    assert (checkpoint / "model.safetensors").is_file() and (
        checkpoint / "tokenizer.json"
    ).is_file()
    assert not list(checkpoint.glob("*.bin")) and not list(checkpoint.glob("adapter_*"))
    loaded = AutoModelForSequenceClassification.from_pretrained(checkpoint)
    assert loaded.config.id2label == {0: "负向", 1: "正向"}
    answers = mlflow.pyfunc.load_model(uri).predict(TEXTS)
    expected = classify(checkpoint, TEXTS, batch_size=8, max_len=None)
    assert [a["label"] for a in answers] == [a["label"] for a in expected]


def test_predict_cli_classifies_stdin_texts_from_a_run_id(single_run) -> None:
    store, run = single_run
    texts = "退钱,什么辣鸡基金\n这基金真的稳啊,收益一直挺不错的\n"
    proc = run_module(
        "src.predict", "--run-id", run.info.run_id, "--tracking-uri", store.uri, input=texts
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["text"] for r in rows] == texts.splitlines()
    for row in rows:
        assert row["label"] in {"负向", "正向"}
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)


def test_grid_runs_every_combination_under_one_parent_run(store: Store) -> None:
    proc = run_module(
        "src.train",
        "-m",
        *QUICK,
        "trainer.epochs=1",
        "model=tiny_qwen2,tiny_bert",
        "method=lora,sft",
        *store.overrides(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = store.runs()
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {(r.data.tags["model"], r.data.tags["method"]) for r in children} == {
        ("tiny_qwen2", "lora"),
        ("tiny_qwen2", "sft"),
        ("tiny_bert", "lora"),
        ("tiny_bert", "sft"),
    }
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert all(r.info.status == "FINISHED" and "test_macro_f1" in r.data.metrics for r in children)
