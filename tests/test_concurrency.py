"""Concurrency without loss: several processes writing one embedded SQLite MLflow store.

Four processes start at the same moment on a store that does not exist yet (the schema is
created once, under a file lock) and each logs a run's params, tags, metric histories and an
artifact; every record must arrive. The slow variant runs four real trainings at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest

from src.tracking import record
from tests.conftest import QUICK, ROOT, Store

WORKERS = 4
STEPS = 60
METRICS = ("loss", "lr", "grad_norm", "eval_f1")


def child_env() -> dict[str, str]:
    """The environment of a child process, without tracking settings of the caller."""
    drop = ("CLFSWEEP_PARENT_RUN_ID", "MLFLOW_TRACKING_URI", "RANK", "WORLD_SIZE")
    return {k: v for k, v in os.environ.items() if k not in drop} | {"PYTHONUNBUFFERED": "1"}


def logger_code(store: Store, go: Path, worker: int) -> str:
    """A process that waits for `go`, then records one run through src.tracking.record."""
    return textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from omegaconf import OmegaConf
        from src.tracking import record
        from src.config.schema import TrackingConfig

        cfg = TrackingConfig(uri={store.uri!r}, dir={str(store.root / "mlruns")!r})
        while not Path({str(go)!r}).exists():
            time.sleep(0.01)
        with record.run(record.setup(cfg), "worker-{worker}", {{"worker": "{worker}"}}):
            record.log_config(OmegaConf.create({{"worker": {worker}, "lr": 1e-3}}), {{}})
            for step in range({STEPS}):
                record.log_metrics({{name: step + {worker} for name in {METRICS!r}}}, step)
            record.log_dict({{"worker": {worker}}}, "done.json")
        """
    )


def test_four_processes_on_one_new_sqlite_store_lose_no_run_and_no_metric(store: Store) -> None:
    go = store.root / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", logger_code(store, go, worker)],
            cwd=ROOT,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for worker in range(WORKERS)
    ]
    time.sleep(3)  # let them import; then all touch the new store at once
    go.write_text("")
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * WORKERS, "\n".join(o[-2000:] for o in outputs)

    client = store.client()
    runs = store.runs()
    assert sorted(r.data.tags["worker"] for r in runs) == [str(w) for w in range(WORKERS)]
    assert all(r.info.status == "FINISHED" for r in runs)
    counted = 0
    for run in runs:
        worker = int(run.data.tags["worker"])
        assert run.data.params == {"worker": str(worker), "lr": "0.001"}
        for name in METRICS:
            history = client.get_metric_history(run.info.run_id, name)
            assert sorted((m.step, m.value) for m in history) == [
                (step, float(step + worker)) for step in range(STEPS)
            ]
            counted += len(history)
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == [
            "config.yaml",
            "done.json",
        ]
    assert counted == WORKERS * STEPS * len(METRICS)  # 960 metric values, none lost


def test_a_locked_store_is_retried_with_backoff_then_reported(monkeypatch) -> None:
    monkeypatch.setattr(record, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    monkeypatch.setattr(record.time, "sleep", lambda s: None)
    calls: list[dict[str, float]] = []

    def locked_twice(metrics: dict[str, float], step: int | None = None) -> None:
        calls.append(metrics)
        if len(calls) <= 2:
            raise mlflow.exceptions.MlflowException("(sqlite3.OperationalError) database is locked")

    monkeypatch.setattr(record.mlflow, "log_metrics", locked_twice)
    record.log_metrics({"a": 1.0})
    assert len(calls) == 3  # two locked attempts, then it went through

    def always_locked(metrics: dict[str, float], step: int | None = None) -> None:
        raise mlflow.exceptions.MlflowException("database is locked")

    monkeypatch.setattr(record.mlflow, "log_metrics", always_locked)
    with pytest.raises(mlflow.exceptions.MlflowException, match="database is locked"):
        record.log_metrics({"a": 1.0})

    def other_error(metrics: dict[str, float], step: int | None = None) -> None:
        calls.append(metrics)
        raise ValueError("not a lock")

    calls.clear()
    monkeypatch.setattr(record.mlflow, "log_metrics", other_error)
    with pytest.raises(ValueError):
        record.log_metrics({"a": 1.0})
    assert len(calls) == 1  # anything else is not retried


@pytest.mark.slow  # four trainings at once on two cores: a minute or two
def test_four_real_trainings_at_once_on_one_sqlite_store(store: Store) -> None:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "src.train",
                *QUICK,
                f"seed={seed}",
                "trainer.logging_steps=1",
                "trainer.batch_size=4",
                *store.overrides(),
                f"hydra.run.dir={store.root / f'out{seed}'}",
            ],
            cwd=ROOT,
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(WORKERS)
    ]
    errors = [p.communicate(timeout=900)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * WORKERS, "\n".join(e[-2000:] for e in errors)
    client = store.client()
    runs = store.runs()
    assert sorted(r.data.params["seed"] for r in runs) == [str(s) for s in range(WORKERS)]
    for run in runs:
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert steps == list(range(1, 7))  # 3 steps x 2 epochs
        epochs = [m.step for m in client.get_metric_history(run.info.run_id, "eval_macro_f1")]
        assert epochs == [1, 2]
        assert "test_macro_f1" in run.data.metrics
        (model,) = run.outputs.model_outputs
        assert str(client.get_logged_model(model.model_id).status) == "READY"
