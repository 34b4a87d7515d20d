"""Trials of one sweep worker are independent: each reads the backbone from its files (after the
first, from the OS page cache every process on the node shares), and no trial writes into the
files or into the next trial's weights, whatever training or LoRA's merge does to its own."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

from src.config.schema import Arch
from src.model.backbones import Backbone, load_classifier, load_tokenizer
from tests.test_errors_catalogue import tiny_checkpoint

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


def digest(path: Path) -> str:
    """The sha256 of a checkpoint's weight files."""
    sha = hashlib.sha256()
    for file in sorted(path.glob("*.safetensors")):
        sha.update(file.read_bytes())
    return sha.hexdigest()


def test_a_model_changed_in_place_leaves_the_files_and_the_next_load_alone(
    tmp_path: Path,
) -> None:
    path = tiny_checkpoint(tmp_path / "ckpt")
    before = digest(path)
    backbone = Backbone(path, Arch.encoder, trust_remote_code=False)
    tokenizer = load_tokenizer(backbone)

    def load() -> torch.nn.Module:
        return load_classifier(backbone, tokenizer, ["a", "b"], torch.float32, None)

    first, second = load(), load()
    with torch.no_grad():  # what SFT's optimizer steps and LoRA's merge do to a trial's model
        for param in first.parameters():
            param.add_(1.0)
    third = load()
    for name, param in third.named_parameters():
        if not name.startswith("classifier"):  # the head is new in every trial
            assert torch.equal(param, second.state_dict()[name]), name
    assert digest(path) == before


@pytest.mark.slow  # a minute: a sweep and a run of the same configuration
def test_a_sweep_trial_equals_the_same_configuration_run_alone(tmp_path: Path) -> None:
    sweep = run_in(tmp_path, "-m", *SWEEP)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "clfsweep"]
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    trials = [r for r in runs if "optuna.trial_id" in r.data.tags]
    assert len(trials) == 3

    last = trials[-1]  # two trials trained and merged LoRA into the backbone before it
    params = {k: last.data.params[k] for k in ("method.rank", "trainer.lr", "trainer.epochs")}
    overrides = [f"{k}={v}" for k, v in params.items()]
    alone = run_in(tmp_path, "hparams_search=smoke_tiny", *overrides, "tracking.run_name=alone")
    assert alone.returncode == 0, alone.stderr[-3000:]
    (standalone,) = client.search_runs(
        [experiment.experiment_id], filter_string="attributes.run_name = 'alone'"
    )
    for metric in ("test_accuracy", "test_macro_f1", "best_eval_macro_f1"):
        assert standalone.data.metrics[metric] == last.data.metrics[metric], metric
