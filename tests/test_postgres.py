"""A real PostgreSQL server and an MLflow tracking server on it, as `make services` starts them.

Two sweep workers share one Optuna study through PostgreSQL and log to the MLflow server:
together they finish exactly n_trials, every trial's run arrives at the server under one
parent run with a complete model, and no password reaches a param, tag or logged file.
The session fixture runs scripts/services.sh in a temporary directory on free ports; it skips
where PostgreSQL is not installed (`.ci/run` installs it).
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow.entities import LoggedModelStatus
from optuna.trial import TrialState

from src.tracking.names import EXCESS_ATTR, WORKER_ATTR
from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "services.sh"


@dataclass
class Services:
    """Where the servers listen, and the passwords that must not leak."""

    storage: str  # postgresql://postgres:<password>@127.0.0.1:<port>/optuna
    tracking: str  # http://127.0.0.1:<port>
    pg_password: str


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_missing() -> str | None:
    """Why PostgreSQL cannot be started here, or None."""
    if not (shutil.which("pg_ctl") or glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")):
        return "PostgreSQL is not installed: apt-get install postgresql"
    if os.geteuid() == 0 and subprocess.run(["id", "postgres"], capture_output=True).returncode:
        return "running as root without a postgres account to run the server as"
    return None


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """PostgreSQL + MLflow server on 127.0.0.1, started and stopped by scripts/services.sh."""
    reason = postgres_missing()
    if reason:
        pytest.skip(reason)
    # Under /tmp, not pytest's private tmp dir: the postgres account must reach it.
    directory = Path(tempfile.mkdtemp(prefix="clfsweep-services-"))
    pg_port, mlflow_port = free_port(), free_port()
    password = "pg-" + secrets.token_hex(8)
    env = os.environ | {
        "SERVICES_DIR": str(directory),
        "PG_PORT": str(pg_port),
        "MLFLOW_PORT": str(mlflow_port),
        "CLFSWEEP_PG_PASSWORD": password,
        "MLFLOW": str(Path(sys.executable).with_name("mlflow")),
    }
    started = subprocess.run(
        [str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=300
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield Services(
            storage=f"postgresql://postgres:{password}@127.0.0.1:{pg_port}/optuna",
            tracking=f"http://127.0.0.1:{mlflow_port}",
            pg_password=password,
        )
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow  # a minute: a PostgreSQL and an MLflow server, two workers
def test_two_workers_on_postgres_finish_exactly_n_trials_and_the_server_gets_every_run(
    services: Services, tmp_path: Path
) -> None:
    n_trials = 4
    http_password = "http-" + secrets.token_hex(6)
    tracking = services.tracking.replace("http://", f"http://admin:{http_password}@")
    command = [
        sys.executable,
        "-m",
        "src.train",
        "-m",
        "hparams_search=smoke_tiny",
        "data=fund_reviews",  # the article's 20 reviews: seconds a trial
        "trainer.max_len=32",
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.study_name=pg_study",
        "hydra.sweeper.plots=false",
        "hydra.sweeper.pruner.name=none",  # every trial completes: each run has a model
        f"hydra.sweeper.storage={services.storage}",
        f"tracking.uri={tracking}",  # credentials in the URI: must be redacted everywhere
        "tracking.experiment=pg_sweep",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RANK")}
    workers = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    # Not even in the console: jobs get the storage URL through the environment.
    assert not any(services.pg_password in output for output in outputs)

    study = optuna.load_study(study_name="pg_study", storage=services.storage)
    trials = [t for t in study.trials if not t.system_attrs.get(EXCESS_ATTR)]
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == n_trials
    assert len(trials) == n_trials  # none failed, none run twice
    assert {t.system_attrs[WORKER_ATTR]["pid"] for t in trials} == {w.pid for w in workers}

    mlflow.set_tracking_uri(services.tracking)
    client = mlflow.MlflowClient(services.tracking)
    experiment = client.get_experiment_by_name("pg_sweep")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    jobs = [r for r in runs if "optuna.trial_id" in r.data.tags]
    parents = [r for r in runs if "clfsweep.sweep" in r.data.tags]
    storage = optuna.storages.RDBStorage(services.storage)
    study_id = storage.get_study_id_from_name("pg_study")
    assert sorted(int(r.data.tags["optuna.trial_id"]) for r in jobs) == sorted(
        storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in trials
    )
    assert len(parents) == 1  # workers that start together keep one parent run
    for run in jobs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert "test_macro_f1" in run.data.metrics
        (model,) = run.outputs.model_outputs
        assert client.get_logged_model(model.model_id).status == LoggedModelStatus.READY

    leaked = [
        (run.info.run_id, key)
        for run in runs
        for key, value in [*run.data.params.items(), *run.data.tags.items()]
        if services.pg_password in value or http_password in value
    ]
    assert leaked == []
    assert "admin:***@" in jobs[0].data.params["tracking.uri"]
    config = mlflow.artifacts.load_text(f"{jobs[0].info.artifact_uri}/config.yaml")
    best = mlflow.artifacts.load_text(f"{parents[0].info.artifact_uri}/optuna/best.yaml")
    for text in (config, best):
        assert services.pg_password not in text and http_password not in text
    assert "postgres:***@" in best

    # However the two workers interleaved, the registered champion holds the best value.
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    top = max(t.value for t in complete if t.value is not None)
    champion = client.get_model_version_by_alias("pg_study", "champion")
    assert float(champion.tags["eval_macro_f1"]) == top
    assert int(champion.tags["optuna.trial"]) in {t.number for t in complete if t.value == top}
    assert "champion: models:/pg_study@champion" in best
