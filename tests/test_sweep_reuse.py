"""Sweep workers read the backbone once; a trial equals the same configuration run alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow

SWEEP = [
    "hparams_search=smoke_tiny",
    "hydra.sweeper.n_trials=3",
    "hydra.sweeper.pruner.name=none",
    "hydra.sweeper.enqueue=[]",
    "trainer.epochs=1",
]


def run_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m src.train args` with `cwd` as the project directory (mlruns/, sweeps/ there)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",)}
    return subprocess.run(
        [sys.executable, "-m", "src.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_lora_trials_reuse_the_backbone_and_match_standalone_runs(tmp_path: Path) -> None:
    sweep = run_in(tmp_path, "-m", *SWEEP)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "clfsweep"]
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    trials = [r for r in runs if "optuna.trial_id" in r.data.tags]
    assert len(trials) == 3
    assert [r.data.metrics["backbone_weight_reads"] for r in trials] == [1, 1, 1]

    last = trials[-1]
    params = {k: last.data.params[k] for k in ("method.rank", "trainer.lr", "trainer.epochs")}
    overrides = [f"{k}={v}" for k, v in params.items()]
    alone = run_in(tmp_path, "hparams_search=smoke_tiny", *overrides, "tracking.run_name=alone")
    assert alone.returncode == 0, alone.stderr[-3000:]
    (standalone,) = client.search_runs(
        [experiment.experiment_id], filter_string="attributes.run_name = 'alone'"
    )
    for metric in ("test_accuracy", "test_macro_f1", "best_eval_macro_f1"):
        assert standalone.data.metrics[metric] == last.data.metrics[metric], metric
