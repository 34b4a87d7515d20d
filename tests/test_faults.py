"""Faults with real processes: kill -9, NaN loss, a full disk; and determinism.

Each test breaks a run the way it breaks in the field and checks what is left behind: the MLflow
run ends with the right status and reason, no half-written model is ever offered for
prediction, earlier records stay intact, and the next start (a run or a sweep) cleans up.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from mlflow.entities import LoggedModelStatus
from optuna.trial import TrialState

from hydra_plugins.clfsweep_optuna_sweeper.optuna_sweeper import one_line_errors
from src.cli.hydra_commands import stopped
from src.config.errors import STOP_SIGNALS, Interrupted, UserError, stop_on_signals
from src.config.schema import TrackingConfig
from src.predict import main as predict_main
from src.sweep.storage import open_storage
from src.tracking import names, record
from src.tracking.models import resolve_model_dir
from src.tracking.names import FAIL_REASON_ATTR
from src.train import train
from tests.conftest import QUICK, ROOT, Store, one_error_line, resize, run_module, tmpfs

TIMING = ("_per_second", "runtime")


def quick(*changes: str) -> list[str]:
    """The quick run's overrides with some of them changed."""
    keys = {change.split("=", 1)[0] for change in changes}
    return [o for o in QUICK if o.split("=", 1)[0] not in keys] + list(changes)


def child_env() -> dict[str, str]:
    """The environment of a child process, without tracking settings of the caller; it runs
    this checkout's code from any working directory."""
    drop = ("CLFSWEEP_PARENT_RUN_ID", "MLFLOW_TRACKING_URI", "RANK", "WORLD_SIZE")
    kept = {k: v for k, v in os.environ.items() if k not in drop}
    return kept | {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}


def start_run_then(store: Store, action: str, experiment: str = "clfsweep") -> int:
    """A real process that starts an MLflow run through src.tracking.record, then does `action`
    (Python code, e.g. kill itself with -9); returns its exit status."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from src.tracking import record
        from src.config.schema import TrackingConfig
        cfg = TrackingConfig(uri={store.uri!r}, dir={str(store.root / "mlruns")!r},
                             experiment={experiment!r})
        with record.run(record.setup(cfg), "doomed", {{"model": "none"}}):
            record.log_metrics({{"before": 1.0}})
        """
    )
    code = code.rstrip() + "\n" + textwrap.indent(textwrap.dedent(action), " " * 4)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True, text=True
    )
    return proc.returncode


def the_run(store: Store, experiment: str = "clfsweep") -> mlflow.entities.Run:
    """The only run of the experiment (fresh from the store)."""
    (run,) = store.runs(experiment)
    return store.client().get_run(run.info.run_id)


# -- kill -9 ------------------------------------------------------------------------------------


def test_kill_9_mid_training_next_start_marks_the_run_killed(store: Store) -> None:
    command = [
        sys.executable,
        "-m",
        "src.train",
        *quick("trainer.epochs=40"),
        *store.overrides(),
    ]
    log = store.root / "train.log"
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=child_env(), stdout=out, stderr=out)
    try:
        run_id = wait_for_epoch_metric(store, proc, log)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    client = store.client()
    assert client.get_run(run_id).info.status == "RUNNING"  # what kill -9 leaves behind

    # The next start (any `python -m src.train` / sweep calls record.setup first):
    record.setup(TrackingConfig(uri=store.uri, dir=str(store.root / "mlruns")))
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags[names.STATE_TAG] == "killed"
    assert f"pid {proc.pid}" in run.data.tags["error"]
    assert run.data.metrics["eval_macro_f1"] >= 0  # what it logged is kept
    assert not run.outputs or not run.outputs.model_outputs  # no model was registered
    with pytest.raises(UserError, match="has no logged model"):
        resolve_model_dir(run_id, None)


def wait_for_epoch_metric(
    store: Store,
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout: float = 240,
    metric: str = "eval_macro_f1",
) -> str:
    """The run id, once the training process has logged its first epoch's metrics (`metric`).
    Polled with a client of its own while the process creates the store: the store must never
    be seen half-built (it is made in a file beside it, then renamed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended before the kill: {log.read_text()[-2000:]}")
        if (store.root / "mlruns" / "mlflow.db").exists():  # created whole (renamed into place)
            trained = [r for r in store.runs() if metric in r.data.metrics]
            if trained:
                return trained[0].info.run_id
        time.sleep(0.3)
    raise AssertionError("no epoch metric within the timeout")


def test_kill_9_during_the_model_upload_never_registers_a_half_written_model(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = store.root / "staging" / "checkpoint"
    checkpoint.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (checkpoint / name).write_bytes(b"x" * 4096)
    # The upload copies one file, then the process is killed (-9) before it can finish.
    status = start_run_then(
        store,
        f"""
        import shutil
        from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

        def dies_mid_upload(self, local_dir, artifact_path=None):
            target = Path(self.artifact_dir, artifact_path or "")
            target.mkdir(parents=True, exist_ok=True)
            first = sorted(p for p in Path(local_dir).rglob("*") if p.is_file())[0]
            shutil.copy(first, target / first.name)
            os.kill(os.getpid(), signal.SIGKILL)

        LocalArtifactRepository.log_artifacts = dies_mid_upload
        record.log_checkpoint(Path({str(checkpoint)!r}))
        """,
    )
    assert status == -signal.SIGKILL
    run = the_run(store)
    (output,) = run.outputs.model_outputs  # MLflow links the model before uploading it
    model = mlflow.MlflowClient(store.uri).get_logged_model(output.model_id)
    assert model.status == LoggedModelStatus.PENDING

    mlflow.set_tracking_uri(store.uri)
    with pytest.raises(UserError, match=r"is PENDING, not READY: its upload did not finish"):
        resolve_model_dir(run.info.run_id, None)
    with pytest.raises(UserError, match="not READY"):
        resolve_model_dir(None, f"models:/{output.model_id}")
    code = predict_main(["--run-id", run.info.run_id, "--tracking-uri", store.uri])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "not READY" in errors[0]

    record.setup(TrackingConfig(uri=store.uri, dir=str(store.root / "mlruns")))
    assert the_run(store).info.status == "KILLED"


def test_orphan_scan_leaves_live_finished_and_other_hosts_runs_alone(store: Store) -> None:
    cfg = TrackingConfig(uri=store.uri, dir=str(store.root / "mlruns"))
    experiment_id = record.setup(cfg)
    client = store.client()
    me = record.process_tags()
    dead = dead_pid()
    cases = {
        "live": me,  # this very process
        "remote": me | {names.HOST_TAG: "another-host", names.PID_TAG: str(dead)},
        "container": me | {names.PID_NS_TAG: "pid:[1]", names.PID_TAG: str(dead)},
        "foreign": {},  # started by another tool: no process tags
        "dead": me | {names.PID_TAG: str(dead)},
    }
    ids = {
        name: client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        for name, tags in cases.items()
    }
    finished = client.create_run(experiment_id, tags=me | {names.PID_TAG: str(dead)})
    client.set_terminated(finished.info.run_id, "FINISHED")

    assert record.mark_orphaned_runs(experiment_id) == [ids["dead"]]
    status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {
        "live": "RUNNING",
        "remote": "RUNNING",
        "container": "RUNNING",
        "foreign": "RUNNING",
        "dead": "KILLED",
    }
    assert client.get_run(finished.info.run_id).info.status == "FINISHED"
    assert record.mark_orphaned_runs(experiment_id) == []  # idempotent


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- NaN / inf loss ------------------------------------------------------------------------------


def test_nan_loss_stops_at_once_naming_the_step_and_the_run_fails(compose_cfg, tmp_path) -> None:
    # lr=1e30: the first update blows the weights up, the second step's loss is not finite.
    cfg = compose_cfg(*quick("trainer.lr=1e30", "trainer.batch_size=4", "trainer.epochs=3"))
    with pytest.raises(FloatingPointError, match=r"training loss is (nan|inf).* optimizer step 2"):
        train(cfg)
    (run,) = Store(tmp_path).runs()
    assert run.info.status == "FAILED"
    assert run.data.tags[names.STATE_TAG] == "failed"
    assert "optimizer step 2" in run.data.tags["error"]
    assert "lower trainer.lr" in run.data.tags["error"]
    client = Store(tmp_path).client()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval_macro_f1")] == []
    assert not list((tmp_path / "run").glob("trainer-*/checkpoint-*"))


@pytest.mark.slow  # about a minute: a sweep of two src.train trials
def test_a_sweep_marks_orphans_killed_then_fails_the_nan_trial_and_moves_on(tmp_path: Path) -> None:
    store = Store(tmp_path)
    # An orphan left by a process killed with -9, found by the sweep's start.
    assert start_run_then(store, "os.kill(os.getpid(), signal.SIGKILL)") == -signal.SIGKILL
    (orphan,) = store.runs()
    assert orphan.info.status == "RUNNING"

    proc = run_sweep(
        tmp_path,
        "hydra/sweeper=clfsweep_optuna",
        "hydra.sweeper.study_name=nan_sweep",
        "hydra.sweeper.n_trials=1",  # finished trials: the failed one does not count
        "hydra.sweeper.sampler.name=random",
        "hydra.sweeper.sampler.seed=0",  # after the queued lr=1e30, it draws lr=1e-3
        "hydra.sweeper.enqueue=[{trainer.lr: 1e30}]",
        "hydra.sweeper.plots=false",
        "trainer.lr=choice(1e30, 1e-3)",
        "trainer.batch_size=4",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert store.client().get_run(orphan.info.run_id).info.status == "KILLED"

    storage = open_storage(str(tmp_path / "sweeps" / "nan_sweep" / "journal.log"))
    trials = optuna.load_study(study_name="nan_sweep", storage=storage).trials
    assert [t.params["trainer.lr"] for t in trials] == [1e30, 1e-3]
    by_lr = {t.params["trainer.lr"]: t for t in trials}
    assert by_lr[1e30].state == TrialState.FAIL
    assert "TrainingDiverged" in by_lr[1e30].user_attrs[FAIL_REASON_ATTR]
    assert "optimizer step 2" in by_lr[1e30].user_attrs[FAIL_REASON_ATTR]
    assert by_lr[1e-3].state == TrialState.COMPLETE
    jobs = {
        r.data.params.get("trainer.lr"): r for r in store.runs() if "optuna.trial_id" in r.data.tags
    }
    assert jobs["1e+30"].info.status == "FAILED" and "step 2" in jobs["1e+30"].data.tags["error"]
    assert jobs["0.001"].info.status == "FINISHED"


def run_sweep(cwd: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """`python -m src.train -m ...` on the quick setting, all records under `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "src.train", "-m", *quick(*overrides)],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


# -- SIGTERM and Ctrl-C ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGTERM, 143), pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_signal_mid_training_ends_the_run_killed_at_once_with_one_line(
    store: Store, sig: signal.Signals, code: int
) -> None:
    log = store.root / "train.log"
    command = [sys.executable, "-m", "src.train", *quick("trainer.epochs=40"), *store.overrides()]
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=child_env(), stdout=out, stderr=out)
    try:
        run_id = wait_for_epoch_metric(store, proc, log)
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == code  # 128 + the signal, as shells report it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    line = one_error_line(log.read_text())
    assert line == f"error: stopped by {sig.name}: MLflow run {run_id} is marked KILLED"
    run = store.client().get_run(run_id)  # KILLED now, not RUNNING until some next start
    assert run.info.status == "KILLED" and run.data.tags[names.STATE_TAG] == "killed"
    assert run.data.tags["error"] == f"killed by {sig.name}: the process was asked to stop"
    assert run.data.metrics["eval_macro_f1"] >= 0  # what it logged is kept


@pytest.mark.slow  # about two minutes: a sweep stopped mid-trial, then resumed
def test_sigterm_during_a_sweep_fails_the_trial_and_the_same_command_resumes_the_study(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path)
    command = [
        sys.executable,
        "-m",
        "src.train",
        "-m",
        *quick("trainer.epochs=6"),
        "hydra/sweeper=clfsweep_optuna",
        "hydra.sweeper.study_name=stopped",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.name=random",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.plots=false",
        "trainer.lr=choice(1e-3, 2e-3)",
    ]
    log = tmp_path / "sweep.log"
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=tmp_path, env=child_env(), stdout=out, stderr=out)
    try:
        run_id = wait_for_epoch_metric(store, proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    line = one_error_line(log.read_text())
    assert f"stopped by SIGTERM: MLflow run {run_id}" in line and "continue" in line
    job = store.client().get_run(run_id)
    assert job.info.status == "KILLED" and "SIGTERM" in job.data.tags["error"]
    (parent,) = [r for r in store.runs() if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED" and "SIGTERM" in parent.data.tags["error"]
    storage = open_storage(str(tmp_path / "sweeps" / "stopped" / "journal.log"))
    stopped, *queued = optuna.load_study(study_name="stopped", storage=storage).trials
    assert stopped.state == TrialState.FAIL
    assert "SIGTERM" in stopped.user_attrs[FAIL_REASON_ATTR]
    assert [t.state for t in queued] == [TrialState.WAITING]  # its configuration, to run again

    again = subprocess.run(
        command, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    trials = optuna.load_study(study_name="stopped", storage=storage).trials
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 2  # n_trials, resumed


@pytest.mark.slow  # a minute: the other Hydra commands share the stop of src.train
@pytest.mark.parametrize(
    ("sig", "command", "metric"),
    [
        (signal.SIGTERM, ["src.pretrain", "model=tiny_bert", "trainer.max_len=16"], "train_loss"),
        (signal.SIGINT, ["src.train", "-m", "trainer.lr=1e-3,2e-3"], "eval_macro_f1"),
    ],
    ids=["pretrain-SIGTERM", "grid-SIGINT"],
)
def test_a_signal_stops_pretraining_and_a_grid_with_their_runs_killed(
    store: Store, sig: signal.Signals, command: list[str], metric: str
) -> None:
    log = store.root / "command.log"
    module, *args = command
    flags = [a for a in args if a.startswith("-")]
    changes = [a for a in args if not a.startswith("-")]
    overrides = quick("trainer.epochs=200", "trainer.logging_steps=1", *changes)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *flags, *overrides, *store.overrides()],
            cwd=ROOT,
            env=child_env(),
            stdout=out,
            stderr=out,
        )
    try:
        run_id = wait_for_epoch_metric(store, proc, log, metric=metric)
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == 128 + sig
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    line = one_error_line(log.read_text())
    killed = store.client().get_run(run_id)
    assert killed.info.status == "KILLED" and killed.data.tags["error"].startswith(
        f"killed by {sig.name}"
    )
    if "-m" not in command:
        assert line == f"error: stopped by {sig.name}: MLflow run {run_id} is marked KILLED"
        return
    (parent,) = [r for r in store.runs() if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED" and sig.name in parent.data.tags["error"]
    assert line == (
        f"error: stopped by {sig.name}: MLflow run {run_id} and the multirun's parent run is "
        "marked KILLED"
    )


@pytest.mark.parametrize(
    ("stop", "code", "name"),
    [
        (Interrupted(signal.SIGTERM), 143, "SIGTERM"),
        (Interrupted(signal.SIGINT), 130, "SIGINT"),
        (KeyboardInterrupt(), 130, "SIGINT"),  # Ctrl-C in an app without our handler
    ],
    ids=["SIGTERM", "SIGINT", "KeyboardInterrupt"],
)
def test_a_sweep_stopped_by_a_signal_exits_128_plus_it_with_its_parent_run_killed(
    stops_store: Store,
    parent_run: str,
    capsys: pytest.CaptureFixture[str],
    stop: KeyboardInterrupt,
    code: int,
    name: str,
) -> None:
    """The sweeper's boundary, once its loop has failed and re-queued the running trials (the
    slow test above runs the whole of it)."""

    def stopped_sweep() -> None:
        raise stop

    with pytest.raises(SystemExit) as exit:
        one_line_errors(stopped_sweep)
    assert exit.value.code == code
    assert one_error_line(capsys.readouterr().err) == (
        f"error: stopped by {name}: the multirun's parent run is marked KILLED; run the same "
        "command again to continue an Optuna study"
    )
    ended = stops_store.client().get_run(parent_run)
    assert ended.info.status == "KILLED" and ended.data.tags["error"].startswith(
        f"killed by {name}"
    )


def test_a_device_workers_stop_leaves_the_parent_run_to_its_supervisor(
    stops_store: Store,
    parent_run: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(names.DEVICE_WORKER_ENV, "0")
    stop = Interrupted(signal.SIGINT)  # what its supervisor sends it
    stop.runs.append("job-run")

    def stopped_sweep() -> None:
        raise stop

    with pytest.raises(SystemExit) as exit:
        one_line_errors(stopped_sweep)
    assert exit.value.code == 130
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: stopped by SIGINT: MLflow run job-run is marked KILLED;")
    assert stops_store.client().get_run(parent_run).info.status == "RUNNING"


def test_a_run_the_store_did_not_let_end_is_not_called_killed() -> None:
    stop = Interrupted(signal.SIGTERM)
    stop.unmarked.append("locked-run")
    assert stopped(stop) == "stopped by SIGTERM: MLflow run locked-run could not be marked KILLED"


def test_after_a_stop_a_second_signal_ends_the_process_even_in_nested_blocks() -> None:
    """A sweep's job stops inside the command's own block: the command's handler must not
    come back for the clean-up, or a second SIGTERM would be one more stop."""
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    with stop_on_signals():
        with pytest.raises(Interrupted), stop_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises at once
        assert all(signal.getsignal(sig) is signal.SIG_DFL for sig in STOP_SIGNALS)
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before  # out of every block


def test_a_stop_waits_until_a_store_write_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal in the middle of a store's transaction stops the process right after it: cut
    half-way, it kept SQLite's lock, and the run could not be marked KILLED."""
    store_code = compile(
        "def write(done):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(0.3)  # the signal arrives here, inside the transaction\n"
        "    done.append('committed')\n",
        "<a store's module>",
        "exec",
    )
    store: dict[str, object] = {"__name__": "sqlalchemy.engine.fake", "os": os, "signal": signal}
    store["time"] = time
    exec(store_code, store)
    done: list[str] = []
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        with pytest.raises(Interrupted), stop_on_signals():
            store["write"](done)  # type: ignore[operator]
            done.append("after the write")
            time.sleep(5)  # stopped here, within RETRY_STOP_S
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert done == ["committed", "after the write"]


@pytest.fixture(scope="module")
def stops_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One store for the parent runs of the stop tests (a new SQLite store costs seconds)."""
    store = Store(tmp_path_factory.mktemp("stops"))
    (store.root / "mlruns").mkdir()
    store.client().create_experiment("clfsweep")
    return store


@pytest.fixture
def parent_run(stops_store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new RUNNING multirun parent run in `stops_store`, exported as the sweep does (and the
    store this process's MLflow client uses, whatever an earlier test set)."""
    experiment = stops_store.client().get_experiment_by_name("clfsweep")
    assert experiment is not None
    client = stops_store.client()
    run_id = client.create_run(experiment.experiment_id, run_name="study").info.run_id
    monkeypatch.setenv(names.PARENT_ENV, run_id)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(stops_store.uri)
    yield run_id
    mlflow.set_tracking_uri(previous)


# -- out of disk ---------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 192 KiB tmpfs: room for a run's reports and plots, not for its model."""
    with tmpfs(tmp_path / "small-disk", "192k") as mount:
        yield mount


def test_a_full_disk_while_the_store_is_created_is_one_line_and_leaves_no_half_built_store(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with tmpfs(tmp_path / "tiny-disk", "64k") as mount:
        cfg = TrackingConfig(uri=f"sqlite:///{mount / 'mlflow.db'}", dir=str(mount))
        with pytest.raises(UserError, match=r"no space left on the device while opening the ML"):
            record.setup(cfg)
        assert not (mount / "mlflow.db").exists()  # no half-built store, no staging file
        assert sorted(p.name for p in mount.iterdir()) == ["mlflow.db.init-lock"]
        output = capfd.readouterr()
        assert "ERROR" not in output.out + output.err  # MLflow's own error lines silenced
        resize(mount, "8m")  # space freed: the next start creates the store and runs
        with record.run(record.setup(cfg), "after", {}):
            record.log_metrics({"x": 1.0})
        (run,) = mlflow.MlflowClient(cfg.uri).search_runs([record.setup(cfg)])
        assert run.info.status == "FINISHED"


def test_a_disk_that_fills_under_the_store_mid_run_is_one_line_without_mlflow_tracebacks(
    compose_cfg, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # 2 MiB: the store (about 1 MiB) and the run's first records fit, the model does not, and
    # then neither does the store's next write (the run's end).
    with tmpfs(tmp_path / "full-disk", "2m") as mount:
        cfg = compose_cfg(*QUICK)
        cfg.tracking.uri = f"sqlite:///{mount / 'mlflow.db'}"
        with pytest.raises(UserError, match=r"no space left on the device while writing"):
            train(cfg)
    assert mlflow.active_run() is None  # a sweep's next job in this process can start its run
    output = capfd.readouterr()
    assert "Traceback" not in output.err + output.out
    assert "ERROR" not in output.err + output.out  # MLflow logged 3 tracebacks of 130 lines


def test_a_half_built_store_left_by_an_interrupted_creation_is_set_aside_and_made_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with tmpfs(tmp_path / "tiny-disk", "96k") as mount:
        uri = f"sqlite:///{mount / 'mlflow.db'}"
        # MLflow's own creation, in a process of its own, runs out of space half-way.
        plain = f"import mlflow; mlflow.MlflowClient({uri!r}).search_runs(['0'])"
        first = subprocess.run([sys.executable, "-c", plain], capture_output=True, text=True)
        assert first.returncode != 0 and (mount / "mlflow.db").stat().st_size > 0
        resize(mount, "8m")
        again = subprocess.run([sys.executable, "-c", plain], capture_output=True, text=True)
        assert "already exists" in again.stderr  # what every later start met, space freed
        cfg = TrackingConfig(uri=uri, dir=str(mount))
        with caplog.at_level(logging.WARNING), record.run(record.setup(cfg), "after", {}):
            record.log_metrics({"x": 1.0})
        (aside,) = mount.glob("mlflow.db.interrupted-*")  # kept, not deleted
        assert aside.stat().st_size > 0
        assert f"left half-built by an interrupted creation: kept as {aside}" in caplog.text
        (run,) = mlflow.MlflowClient(uri).search_runs([record.setup(cfg)])
        assert run.info.status == "FINISHED"


def test_a_store_whose_path_is_a_symlink_is_made_where_the_link_points(tmp_path: Path) -> None:
    """mlruns/mlflow.db linked to a larger disk before the first run: the store is made there,
    and the link stays a link (a rename onto it would have replaced it with a file)."""
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "large-disk").mkdir()
    link, target = tmp_path / "mlruns" / "mlflow.db", tmp_path / "large-disk" / "mlflow.db"
    link.symlink_to(target)
    cfg = TrackingConfig(uri=f"sqlite:///{link}", dir=str(tmp_path / "mlruns"))
    with record.run(record.setup(cfg), "on the large disk", {}):
        record.log_metrics({"x": 1.0})
    assert link.is_symlink() and target.is_file()
    (run,) = mlflow.MlflowClient(f"sqlite:///{target}").search_runs([record.setup(cfg)])
    assert run.info.status == "FINISHED"


def test_out_of_disk_while_saving_the_model_is_one_line_and_keeps_earlier_artifacts(
    compose_cfg, tmp_path: Path, small_disk: Path
) -> None:
    cfg = compose_cfg(*QUICK)
    mlflow.set_tracking_uri(cfg.tracking.uri)
    mlflow.create_experiment("clfsweep", artifact_location=small_disk.as_uri())
    with pytest.raises(
        UserError, match=r"no space left on the device while writing the checkpoint"
    ):
        train(cfg)
    (run,) = Store(tmp_path).runs()
    client = Store(tmp_path).client()
    assert run.info.status == "FAILED"
    assert "no space left" in run.data.tags["error"]
    assert run.data.metrics["test_macro_f1"] >= 0  # metrics logged before the save are there
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "confusion_matrix.png", "test_classification_report.txt"} <= names
    local = client.download_artifacts(run.info.run_id, "predictions/test.csv", str(tmp_path))
    assert len(pd.read_csv(local)) == 4  # intact: the 4 test reviews
    for output in run.outputs.model_outputs if run.outputs else []:
        assert client.get_logged_model(output.model_id).status != LoggedModelStatus.READY
    with pytest.raises(UserError):
        resolve_model_dir(run.info.run_id, None)
    assert not list((tmp_path / "run").glob(".staging-*"))  # the staged copy was removed


def test_out_of_disk_for_trainer_checkpoints_is_one_line(
    compose_cfg, tmp_path: Path, small_disk: Path
) -> None:
    cfg = compose_cfg(*QUICK)
    cfg.output_dir = str(small_disk / "run")
    with pytest.raises(UserError, match=r"no space left on the device while writing a Trainer"):
        train(cfg)
    (run,) = Store(tmp_path).runs()
    assert run.info.status == "FAILED" and "no space left" in run.data.tags["error"]


# -- gradient accumulation --------------------------------------------------------------------


def test_train_loss_is_a_mean_per_batch_with_gradient_accumulation(compose_cfg, tmp_path) -> None:
    # 12 training reviews in 3 batches of 4. A learning rate too small to move the weights, no
    # dropout: every batch has the same loss under either setting.
    settings = quick("trainer.lr=1e-12", "trainer.batch_size=4", "trainer.logging_steps=1")
    losses = {}
    for accum in (1, 3):
        train(compose_cfg(*settings, "method.dropout=0", f"trainer.grad_accum={accum}"))
        run = Store(tmp_path).runs()[-1]
        losses[accum] = [v for _, v in history(Store(tmp_path), run, "train_loss")]
    assert len(losses[1]) == 6 and len(losses[3]) == 2  # steps: 3 a epoch, then 1 a epoch
    per_epoch = [sum(losses[1][i : i + 3]) / 3 for i in (0, 3)]
    assert losses[3] == pytest.approx(per_epoch, rel=1e-4)  # the mean, not the sum (x3)
    assert 0.3 < losses[3][0] < 1.5  # about ln 2 for two random classes


# -- determinism ---------------------------------------------------------------------------------


def test_same_config_and_seed_give_identical_metrics_twice(compose_cfg, tmp_path: Path) -> None:
    overrides = quick("trainer.logging_steps=1", "trainer.batch_size=4", "seed=7")
    train(compose_cfg(*overrides))
    train(compose_cfg(*overrides))
    store = Store(tmp_path)
    first, second = store.runs()
    assert comparable(first) == comparable(second)
    for key in ("train_loss", "eval_macro_f1", "eval_loss"):
        assert history(store, first, key) == history(store, second, key)
    assert len(history(store, first, "train_loss")) == 6  # 3 steps x 2 epochs, each compared


@pytest.mark.slow
def test_same_config_and_seed_give_identical_metrics_in_two_processes(
    compose_cfg, tmp_path: Path
) -> None:
    overrides = quick("trainer.logging_steps=1", "trainer.batch_size=4", "seed=7")
    store = Store(tmp_path / "cli")
    proc = run_module("src.train", *overrides, *store.overrides())
    assert proc.returncode == 0, proc.stderr[-3000:]
    train(compose_cfg(*overrides))  # the same run again, in this process
    first, second = store.runs()[0], Store(tmp_path).runs()[0]
    assert comparable(first) == comparable(second)
    for key in ("train_loss", "eval_macro_f1", "eval_loss"):
        assert history(store, first, key) == history(Store(tmp_path), second, key)


def comparable(run: mlflow.entities.Run) -> dict[str, float]:
    """The run's final metrics without timings."""
    return {k: v for k, v in run.data.metrics.items() if not k.endswith(TIMING)}


def history(store: Store, run: mlflow.entities.Run, key: str) -> list[tuple[int, float]]:
    """A metric's (step, value) history."""
    return [(m.step, m.value) for m in store.client().get_metric_history(run.info.run_id, key)]
