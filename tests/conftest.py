"""Shared fixtures: Hydra composition, isolated MLflow stores, subprocess runs of the commands."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from src.config.schema import register_configs

pytest_plugins = ["pytester", "tests.ci_policy"]  # ci_policy: a skip fails on CI (CI=true)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Tiny checkpoints are cached by (architecture, training texts): share them across the session.
os.environ.setdefault("CLFSWEEP_CACHE", str(ROOT / ".pytest_cache" / "clfsweep"))
# data=hf's load_dataset caches what it reads: in the tests' cache, not the user's
os.environ.setdefault("HF_DATASETS_CACHE", str(ROOT / ".pytest_cache" / "hf-datasets"))
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("CLFSWEEP_PARENT_RUN_ID", None)
os.environ.pop("CLFSWEEP_MODELS", None)  # a machine's models root must not reach the tests


@pytest.fixture(autouse=True)
def no_parent_run_left_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that opened a multirun's parent run in this process leaves no parent run for the
    next: every test starts outside a multirun, as every command does."""
    monkeypatch.delenv("CLFSWEEP_PARENT_RUN_ID", raising=False)


def compose_train(overrides: list[str], tmp_path: Path, config_name: str = "train") -> DictConfig:
    """The composed `train` (or `pretrain`, `noise`) config with Hydra's runtime set, writing
    only under `tmp_path`."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        cfg.hydra.runtime.cwd = str(ROOT)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.tracking.dir = str(tmp_path / "mlruns")
        cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
        del cfg["hydra"]
    return cfg


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """Compose `conf/train.yaml` with overrides, as the CLI would."""
    yield lambda *overrides: compose_train(list(overrides), tmp_path)
    GlobalHydra.instance().clear()


class Store:
    """An isolated MLflow store and output dir for one test's subprocess runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"

    def overrides(self) -> list[str]:
        """Overrides that keep a run's MLflow data and Hydra outputs in this store."""
        return [
            f"tracking.uri={self.uri}",
            f"tracking.dir={self.root / 'mlruns'}",
            f"hydra.run.dir={self.root / 'outputs'}",
            f"hydra.sweep.dir={self.root / 'multirun'}",
        ]

    def client(self) -> mlflow.MlflowClient:
        """A client on this store."""
        return mlflow.MlflowClient(tracking_uri=self.uri)

    def runs(self, experiment: str = "clfsweep") -> list[mlflow.entities.Run]:
        """All runs of an experiment, oldest first."""
        client = self.client()
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """An isolated MLflow store for the test."""
    return Store(tmp_path)


def run_module(
    module: str, *args: str, input: str | None = None, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """Run `python -m module args...` from the repo root, as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `mount` (needs root: skips without)."""
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode()[:200]}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def resize(mount: Path, size: str) -> None:
    """Give a tmpfs more room, as freeing space would."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)


def one_error_line(output: str) -> str:
    """The single `error:` line of a command's output (fails if there are more, or a trace)."""
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    return errors[0]


# A run of a few seconds: 20 fund reviews, one epoch of short sequences.
QUICK = ["data=fund_reviews", "trainer.epochs=2", "trainer.max_len=32", "trainer.lr=1e-3"]
