"""Each command run once on a tiny case, as a user runs it: nothing on stderr that a user cannot
act on; after a sweep, its summary tells the trials apart, and best.yaml's command runs as
pasted into a shell that never activated the venv."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, Store, run_module

STUDY = "console-study"
SWEEP = [
    "hparams_search=smoke_tiny",
    "data=fund_reviews",
    "trainer.max_len=32",
    "hydra.sweeper.n_trials=2",
    f"hydra.sweeper.study_name={STUDY}",
]


@dataclass
class Sweep:
    """A finished two-trial Optuna sweep of src.train: its store, output and best.yaml."""

    store: Store
    result: subprocess.CompletedProcess[str]
    best: dict


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """`python -m src.train -m hparams_search=smoke_tiny` cut to two trials on 16 reviews."""
    store = Store(tmp_path_factory.mktemp("sweep"))
    study_dir = store.root / "study"
    result = run_module(
        "src.train", "-m", *SWEEP, f"hydra.sweeper.study_dir={study_dir}", *store.overrides()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return Sweep(store, result, yaml.safe_load((study_dir / "best.yaml").read_text()))


def test_a_sweep_prints_nothing_on_stderr(sweep: Sweep) -> None:
    assert sweep.result.stderr == ""


def test_the_summary_tells_trials_apart_by_number_and_swept_values(sweep: Sweep) -> None:
    done = run_module("src.summary", "--tracking-uri", sweep.store.uri)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    header = next(line for line in done.stdout.splitlines() if "trial" in line)
    assert "method.rank" in header and "trainer.lr" in header
    jobs = [run for run in sweep.store.runs() if "clfsweep.job" in run.data.tags]
    runs = {run.data.tags["clfsweep.job"]: run for run in jobs}
    assert sorted(runs) == ["0", "1"]
    for number, run in runs.items():
        row = next(line for line in done.stdout.splitlines() if re.match(rf"^\W*{number}\W", line))
        assert run.data.params["method.rank"] in row
        assert run.data.params["trainer.lr"][:6] in row
    # The hint serves the store it was given, not the repository's mlruns/.
    assert f"--backend-store-uri {sweep.store.uri}" in done.stdout


@pytest.mark.slow  # a third training run: about a minute on a busy CPU
def test_best_yaml_command_runs_pasted_into_a_shell_without_the_venv(
    sweep: Sweep, tmp_path: Path
) -> None:
    """From another folder, with a PATH that lacks the venv: the best trial trains again."""
    command = sweep.best["command"]
    before = {run.info.run_id for run in sweep.store.runs()}
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    } | {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (replay,) = [run for run in sweep.store.runs() if run.info.run_id not in before]
    best = sweep.best["params"]
    assert int(replay.data.params["method.rank"]) == best["method.rank"]
    assert float(replay.data.params["trainer.lr"]) == pytest.approx(best["trainer.lr"])
    assert replay.data.metrics["eval_macro_f1"] == pytest.approx(sweep.best["best_value"])


def test_report_prints_nothing_on_stderr(sweep: Sweep, tmp_path: Path) -> None:
    done = run_module(
        "src.report",
        "--experiment",
        "clfsweep",
        "--tracking-uri",
        sweep.store.uri,
        "--out",
        str(tmp_path / "report"),
        "--n-boot",
        "200",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""


def test_report_help_shows_a_plain_percent_sign() -> None:
    done = run_module("src.report", "--help")
    assert "95% CI" in done.stdout and "%%" not in done.stdout


def test_predict_prints_nothing_on_stderr(sweep: Sweep) -> None:
    run = next(run for run in sweep.store.runs() if "clfsweep.job" in run.data.tags)
    done = run_module(
        "src.predict",
        "--run-id",
        run.info.run_id,
        "--tracking-uri",
        sweep.store.uri,
        input="基金涨了很开心\n退钱,什么辣鸡基金\n",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [json.loads(line)["text"] for line in done.stdout.splitlines()] == [
        "基金涨了很开心",
        "退钱,什么辣鸡基金",
    ]
    assert done.stderr == ""


def test_estimate_of_a_tiny_model_prints_nothing_on_stderr() -> None:
    done = run_module("src.estimate", "model=tiny_qwen2", "data=fund_reviews")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "weights" in done.stdout
    assert done.stderr == ""


@pytest.mark.slow  # a pretraining run: about a minute on a busy CPU
def test_pretrain_prints_nothing_on_stderr(tmp_path: Path) -> None:
    store = Store(tmp_path)
    done = run_module(
        "src.pretrain",
        "model=tiny_bert",
        "data=fund_reviews",
        "trainer.max_len=16",
        "trainer.epochs=1",
        *store.overrides(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""


@pytest.mark.parametrize("command", ["src.train", "src.estimate", "src.noise", "src.pretrain"])
def test_help_opens_with_the_commands_own_description(command: str) -> None:
    done = run_module(command, "--help")
    assert done.returncode == 0, done.stderr[-3000:]
    first = done.stdout.splitlines()[0]
    module = __import__(command, fromlist=["__doc__"])
    assert first == (module.__doc__ or "").strip().splitlines()[0]
    assert "powered by Hydra" not in done.stdout


def test_the_sweep_wrote_nothing_into_the_repository(sweep: Sweep) -> None:
    assert not (ROOT / "sweeps" / STUDY).exists()
