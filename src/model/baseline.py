"""The classical reference row (`model=tfidf_logreg`): TF-IDF features and a linear model.

Character n-grams need no word segmentation for Chinese. The model's outputs take the form of
a fine-tuned head's logits (log-probabilities, log-odds, values), so metrics, reports and
prediction tables come from the same task code (src.task.heads) as every other row.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline, make_pipeline

from src.config.schema import TfidfConfig
from src.task.heads import MultiLabel, Regression, Task

# Log-probability standing in for classes absent from the training data (never predicted).
ABSENT_CLASS_LOGIT = -1e4


def build_pipeline(cfg: TfidfConfig, task: Task, seed: int) -> Pipeline:
    """TF-IDF and the task's linear model: logistic regression (one per label), or ridge."""
    vectorizer = TfidfVectorizer(
        analyzer=cfg.analyzer,
        ngram_range=(cfg.ngram_min, cfg.ngram_max),
        max_features=cfg.max_features,
        sublinear_tf=cfg.sublinear_tf,
    )
    model: Any
    if isinstance(task, Regression):
        model = Ridge(alpha=1 / cfg.C)
    else:
        model = LogisticRegression(
            C=cfg.C, class_weight=cfg.class_weight, max_iter=cfg.max_iter, random_state=seed
        )
        if isinstance(task, MultiLabel):
            model = OneVsRestClassifier(model)
    return make_pipeline(vectorizer, model)


def fit_baseline(
    cfg: TfidfConfig, task: Task, texts: Sequence[str], targets: Sequence[Any], seed: int
) -> tuple[Pipeline, float]:
    """The fitted pipeline and the training samples per second."""
    pipeline = build_pipeline(cfg, task, seed)
    start = time.perf_counter()
    pipeline.fit(list(texts), np.asarray(targets))
    speed = len(texts) / max(time.perf_counter() - start, 1e-9)
    # Plain ints: skops (MLflow's safe model format) stores every numpy scalar as a file of
    # its own, minutes for a vocabulary of 40K n-grams.
    vectorizer = pipeline[0]
    vectorizer.vocabulary_ = {term: int(i) for term, i in vectorizer.vocabulary_.items()}
    return pipeline, speed


def baseline_logits(
    pipeline: Pipeline, task: Task, texts: Sequence[str], n_outputs: int
) -> tuple[np.ndarray, float]:
    """Logit-like outputs (n_texts x n_outputs) and the samples per second."""
    start = time.perf_counter()
    if isinstance(task, Regression):
        logits = np.asarray(pipeline.predict(list(texts)), dtype=np.float64).reshape(-1, 1)
    elif isinstance(task, MultiLabel):
        logits = np.asarray(pipeline.decision_function(list(texts)), dtype=np.float64)
    else:
        log_probs = pipeline.predict_log_proba(list(texts))
        logits = np.full((len(texts), n_outputs), ABSENT_CLASS_LOGIT)
        logits[:, pipeline[-1].classes_] = log_probs
    return logits, len(texts) / max(time.perf_counter() - start, 1e-9)
