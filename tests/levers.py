"""Helpers shared by the tests of the article's levers (mixing, prompts, long texts, heads, ...)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from src.checkpoint.files import MODEL_SUBDIR
from tests.conftest import Store, run_module

PREDICTIONS = "predictions/test.csv"


def train_run(store: Store, *overrides: str) -> mlflow.entities.Run:
    """`python -m src.train` with the overrides, one epoch, into the store; its one MLflow run."""
    result = run_module("src.train", "trainer.epochs=1", *overrides, *store.overrides())
    assert result.returncode == 0, result.stderr[-3000:]
    return [r for r in store.runs() if r.data.tags["mlflow.source.name"] == "src.train"][-1]


def predictions(store: Store, run: mlflow.entities.Run, dst: Path) -> pd.DataFrame:
    """The run's test predictions table."""
    return pd.read_csv(store.client().download_artifacts(run.info.run_id, PREDICTIONS, str(dst)))


def logged_checkpoint(store: Store, run: mlflow.entities.Run, dst: Path) -> Path:
    """The run's logged model's checkpoint directory, downloaded."""
    with current_store(store):
        uri = f"models:/{run.outputs.model_outputs[-1].model_id}"
        return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(dst))) / MODEL_SUBDIR


@contextmanager
def current_store(store: Store) -> Iterator[None]:
    """Make the store MLflow's current one: logged models (models:/...) are looked up there."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store.uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def checkpoint_info(checkpoint: Path) -> dict[str, Any]:
    """The run metadata saved with a checkpoint."""
    return dict(json.loads((checkpoint / "clfsweep.json").read_text()))
