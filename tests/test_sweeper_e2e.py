"""End-to-end tests of the clfsweep_optuna sweeper: real Hydra multiruns in subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
import yaml
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from optuna.trial import FrozenTrial, TrialState

from src.config.errors import UserError
from src.sweep.storage import open_storage
from src.tracking.models import registered_model_id, resolve_model_dir
from src.tracking.names import FAIL_REASON_ATTR, WORKER_ATTR
from src.tracking.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "sweeper_app" / "app.py"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without tracking settings that would leak into the sweep."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CLFSWEEP_PARENT_RUN_ID", "MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR")
    }
    return env | extra


def app_command(*overrides: str) -> list[str]:
    """A multirun of the test app."""
    return [sys.executable, str(APP), "-m", *overrides]


def run(
    cwd: Path, command: list[str], env: dict[str, str] | None = None, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; its output is kept for assertion messages."""
    return subprocess.run(
        command,
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, its schema created once for the session (seconds each)."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def new_parent_run(directory: Path, template: Path) -> tuple[mlflow.MlflowClient, str, str]:
    """An MLflow store in `directory` with a parent run: the client, the run id, the store URI."""
    shutil.copy(template, directory / "mlflow.db")
    uri = f"sqlite:///{directory}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("sweeps", (directory / "artifacts").as_uri())
    return client, client.create_run(experiment).info.run_id, uri


@pytest.fixture
def parent_run(tmp_path: Path, mlflow_template: Path) -> tuple[mlflow.MlflowClient, str, str]:
    """A store of this test's own with a parent run."""
    return new_parent_run(tmp_path, mlflow_template)


@dataclass
class Sweep:
    """A finished sweep of the app: where it ran, its output, its parent MLflow run."""

    cwd: Path
    result: subprocess.CompletedProcess[str]
    client: mlflow.MlflowClient
    parent: str

    def best(self) -> dict[str, Any]:
        """Its best.yaml."""
        return yaml.safe_load((self.cwd / "sweeps" / "app_study" / "best.yaml").read_text())


@pytest.fixture(scope="module")
def two_objective_sweep(tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path) -> Sweep:
    """One multi-objective sweep (NSGA-II, a parent run, plots), read by several tests."""
    cwd = tmp_path_factory.mktemp("two-objectives")
    client, parent, uri = new_parent_run(cwd, mlflow_template)
    result = run(
        cwd,
        app_command(
            "hydra.sweeper.n_trials=6",
            "hydra.sweeper.direction=[maximize,minimize]",
            "second_objective=true",  # the app returns [value, |x|]
            "+optimized_metric=[score,abs_x]",  # their names, as src.train's optimized_metric
            "hydra.sweeper.sampler.name=nsgaii",
            "+hydra.sweeper.sampler.kwargs.population_size=4",
            "hydra.sweeper.pruner.name=median",
            "hydra.sweeper.plots=true",
            "steps=1",
        ),
        env=clean_env(MLFLOW_TRACKING_URI=uri, CLFSWEEP_PARENT_RUN_ID=parent),
    )
    assert result.returncode == 0, result.stderr
    return Sweep(cwd, result, client, parent)


def load_trials(cwd: Path, study_name: str = "app_study") -> list[FrozenTrial]:
    """The trials of a study stored in its default journal file."""
    storage = open_storage(str(cwd / "sweeps" / study_name / "journal.log"))
    return optuna.load_study(study_name=study_name, storage=storage).trials


def by_state(trials: list[FrozenTrial], *states: TrialState) -> list[FrozenTrial]:
    """The trials in any of `states`."""
    return [t for t in trials if t.state in states]


def test_resume_after_kill_finishes_exactly_n_trials(tmp_path: Path) -> None:
    calls = tmp_path / "calls.log"
    command = app_command("hydra.sweeper.n_trials=4", "steps=2", "sleep=0.6", f"calls_file={calls}")
    with open(tmp_path / "first.log", "w") as out:
        proc = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if calls.exists() and len(calls.read_text().splitlines()) >= 3:
                break  # trial 2's job has started
            assert proc.poll() is None, (tmp_path / "first.log").read_text()
            time.sleep(0.05)
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {t.number: t for t in load_trials(tmp_path)}
    assert [before[n].state for n in (0, 1, 2)] == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.RUNNING,
    ]

    again = run(tmp_path, command)
    assert again.returncode == 0, again.stderr
    trials = load_trials(tmp_path)
    assert len(by_state(trials, *FINISHED)) == 4
    assert not by_state(trials, TrialState.RUNNING, TrialState.WAITING)
    for n in (0, 1):  # untouched
        assert trials[n].value == before[n].value
        assert trials[n].datetime_complete == before[n].datetime_complete
    killed = trials[2]
    assert killed.state == TrialState.FAIL
    assert "stale" in killed.user_attrs[FAIL_REASON_ATTR]
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 2]
    assert len(retried) == 1
    assert retried[0].params == killed.params
    assert retried[0].state == TrialState.COMPLETE
    started = [line.split()[0] for line in calls.read_text().splitlines()]
    assert started.count("0") == 1 and started.count("1") == 1  # finished trials never re-run
    trial_dirs = (tmp_path / "sweeps" / "app_study" / "trials").iterdir()
    assert sorted(p.name for p in trial_dirs if p.is_dir()) == [str(t.number) for t in trials]


def test_two_workers_share_one_study(tmp_path: Path) -> None:
    command = app_command("hydra.sweeper.n_trials=6", "steps=1", "sleep=0.8")
    procs = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trials = load_trials(tmp_path)
    assert len(trials) == 6
    assert all(t.state == TrialState.COMPLETE for t in trials)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(6))
    pids = {t.system_attrs[WORKER_ATTR]["pid"] for t in trials}
    assert pids == {p.pid for p in procs}
    trial_dirs = (tmp_path / "sweeps" / "app_study" / "trials").iterdir()
    assert sorted(p.name for p in trial_dirs if p.is_dir()) == [str(n) for n in range(6)]


def test_hopeless_trials_are_pruned_early(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        app_command(
            "hydra.sweeper.n_trials=4",
            "steps=3",
            "x=interval(0, 10)",
            "hydra.sweeper.pruner.name=median",
            "hydra.sweeper.pruner.n_startup_trials=2",
            "hydra.sweeper.enqueue=[{x: 1.0, y: 2.0}, {x: 1.5, y: 2.0}, {x: 9.0, y: 2.0}]",
        ),
    )
    assert result.returncode == 0, result.stderr
    trials = load_trials(tmp_path)
    assert len(by_state(trials, *FINISHED)) == 4 == len(trials)
    assert [t.params["x"] for t in trials[:3]] == [1.0, 1.5, 9.0]
    hopeless = trials[2]
    assert hopeless.state == TrialState.PRUNED
    assert len(hopeless.intermediate_values) < 3
    assert hopeless.value == hopeless.intermediate_values[max(hopeless.intermediate_values)]
    for t in by_state(trials, TrialState.COMPLETE):
        assert len(t.intermediate_values) == 3


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        app_command(
            "hydra.sweeper.n_trials=3",
            "x=interval(0, 3)",
            "fail_if_x_above=4.0",
            "hydra.sweeper.enqueue=[{x: 4.5}]",
        ),
    )
    assert result.returncode == 0, result.stderr
    trials = load_trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 3
    assert trials[0].user_attrs[FAIL_REASON_ATTR] == "ValueError: x=4.5 is above 4.0"


def test_too_many_failures_stop_with_one_clear_line(tmp_path: Path) -> None:
    result = run(tmp_path, app_command("hydra.sweeper.n_trials=10", "return_nan=true"))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "3 of 3 trials failed" in errors[0] and "max_failure_rate=0.5" in errors[0]
    assert "Traceback" not in result.stderr
    trials = load_trials(tmp_path)
    assert len(trials) == 3
    assert all("returned nan" in t.user_attrs[FAIL_REASON_ATTR] for t in trials)


def test_a_trial_whose_config_cannot_compose_fails_with_the_reason(tmp_path: Path) -> None:
    result = run(tmp_path, app_command("hydra.sweeper.n_trials=2", "nope=1,2"))
    assert result.returncode == 2
    trials = load_trials(tmp_path)
    assert len(trials) == 3
    assert all("nope" in t.user_attrs[FAIL_REASON_ATTR] for t in trials)


def test_grid_sampler_batches_and_timeout(tmp_path: Path) -> None:
    grid = run(
        tmp_path,
        app_command(
            "hydra.sweeper.study_name=grid",
            "hydra.sweeper.sampler.name=grid",
            "hydra.sweeper.n_trials=10",  # capped at the 4 grid points
            "hydra.sweeper.n_jobs=2",
            "x=1,2",
            "y=range(0, 2)",
        ),
    )
    assert grid.returncode == 0, grid.stderr
    trials = load_trials(tmp_path, "grid")
    assert sorted((t.params["x"], t.params["y"]) for t in trials) == [
        (1, 0),
        (1, 1),
        (2, 0),
        (2, 1),
    ]
    assert "Launching 2 jobs locally" in grid.stdout
    timed = run(
        tmp_path,
        app_command(
            "hydra.sweeper.study_name=timed",
            "hydra.sweeper.timeout=0.5",
            "steps=1",
            "sleep=1.0",
        ),
    )
    assert timed.returncode == 0, timed.stderr
    assert len(load_trials(tmp_path, "timed")) == 1


def test_sqlite_storage_with_optunas_heartbeat(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        app_command("hydra.sweeper.n_trials=2", "hydra.sweeper.storage=sqlite:///study.db"),
    )
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="app_study", storage=f"sqlite:///{tmp_path}/study.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert {t.system_attrs[WORKER_ATTR]["heartbeat"] for t in study.trials} == {"optuna"}
    best = yaml.safe_load((tmp_path / "sweeps" / "app_study" / "best.yaml").read_text())
    assert best["storage"] == f"sqlite:///{tmp_path}/study.db"  # made absolute: opens anywhere
    cli = shlex.split(best["optuna_cli"])
    listed = subprocess.run(
        [Path(sys.executable).parent / cli[0], *cli[1:], "-f", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 2


def test_enqueued_first_best_yaml_reruns_the_best_trial_and_reruns_top_up(tmp_path: Path) -> None:
    extra = tmp_path / "extra"  # a primary config of its own, chosen by Hydra's options
    extra.mkdir()
    (extra / "alt.yaml").write_text("defaults:\n  - config\n  - _self_\n\nsteps: 1\n")
    results = tmp_path / "values.txt"

    def command(n: int) -> list[str]:
        return [
            *app_command(
                f"hydra.sweeper.n_trials={n}",
                "cat=a,b",
                "hydra.sweeper.enqueue=[{x: 1.0, y: 2.0, cat: b}]",
                f"result_file={results}",
            ),
            "--config-dir",
            "extra",
            "--config-name",
            "alt",
        ]

    first = run(tmp_path, command(3))
    assert first.returncode == 0, first.stderr
    trials = load_trials(tmp_path)
    assert trials[0].params == {"x": 1.0, "y": 2.0, "cat": "b"}
    assert trials[0].distributions["cat"] == optuna.distributions.CategoricalDistribution(
        ["a", "b"]
    )
    for t in trials:  # each trial's own folder, with the config Hydra composed for it
        output_dir = Path(t.user_attrs["output_dir"])
        assert output_dir == tmp_path / "sweeps" / "app_study" / "trials" / str(t.number)
        assert f"x={t.params['x']!r}" in (output_dir / ".hydra" / "overrides.yaml").read_text()
    best = yaml.safe_load((tmp_path / "sweeps" / "app_study" / "best.yaml").read_text())
    assert best["best_trial"] == 0
    assert set(best["overrides"]) >= {"x=1.0", "y=2.0", "cat=b"}
    # Pasted into a shell elsewhere: it enters the sweep's folder and runs this interpreter.
    enter = f"cd {shlex.quote(str(tmp_path))} && {shlex.quote(sys.executable)} "
    assert best["command"].startswith(enter)
    replay = shlex.split(best["command"].removeprefix(enter.split(" && ")[0] + " && "))
    assert replay[-len(best["overrides"]) :] == best["overrides"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    single = run(elsewhere, ["bash", "-c", best["command"]])
    assert single.returncode == 0, single.stderr
    values = [float(v) for v in results.read_text().split()]
    assert values[-1] == best["best_value"] == trials[0].value  # alt.yaml's steps=1 included

    same = run(tmp_path, command(3))  # already done: nothing to run, nothing enqueued twice
    assert same.returncode == 0, same.stderr
    assert len(load_trials(tmp_path)) == 3
    more = run(tmp_path, command(5))  # a larger n_trials tops the study up
    assert more.returncode == 0, more.stderr
    trials = load_trials(tmp_path)
    assert len(by_state(trials, *FINISHED)) == 5 == len(trials)
    assert sum(t.params == {"x": 1.0, "y": 2.0, "cat": "b"} for t in trials) == 1


def test_parent_mlflow_run_gets_progress_and_plots(
    tmp_path: Path, parent_run: tuple[mlflow.MlflowClient, str, str]
) -> None:
    client, parent, uri = parent_run
    env = clean_env(MLFLOW_TRACKING_URI=uri, CLFSWEEP_PARENT_RUN_ID=parent)
    result = run(
        tmp_path,
        app_command("hydra.sweeper.n_trials=3", "hydra.sweeper.plots=true", "steps=2"),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    run_data = client.get_run(parent).data
    assert run_data.params["study_name"] == "app_study"
    assert run_data.params["n_trials"] == "3"
    assert "x: float [0.0, 5.0]" in run_data.params["search_space"]
    assert run_data.params["sampler"].startswith("random(")
    history = client.get_metric_history(parent, "best_value")
    assert sorted(m.step for m in history) == [0, 1, 2]
    trials = load_trials(tmp_path)
    best = max(trials, key=lambda t: t.value or float("-inf"))
    assert run_data.metrics["best_value"] == pytest.approx(best.value)
    assert run_data.tags["best.x"] == repr(best.params["x"])
    artifacts = {a.path for a in client.list_artifacts(parent, "optuna")}
    assert "optuna/best.yaml" in artifacts
    plots = {a.path for a in client.list_artifacts(parent, "optuna/plots")}
    assert {
        "optuna/plots/optimization_history.png",
        "optuna/plots/param_importances.png",
        "optuna/plots/parallel_coordinate.png",
        "optuna/plots/intermediate_values.png",
    } <= plots
    assert (tmp_path / "sweeps" / "app_study" / "plots" / "optimization_history.png").exists()


@pytest.mark.slow  # a minute: three real trials; the champion's unit tests run by default
def test_sweep_of_src_train_with_the_lora_preset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not (ROOT / "src" / "train.py").exists():
        pytest.skip("src/train.py is not there yet")
    result = run(
        tmp_path,
        [
            sys.executable,
            "-m",
            "src.train",
            "-m",
            "hparams_search=lora_rank_lr_epochs",
            "model=tiny_qwen2",
            "data=fund_reviews",
            "hydra.sweeper.n_trials=3",
        ],
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    name = "lora_rank_lr_epochs-tiny_qwen2-fund_reviews"
    trials = load_trials(tmp_path, name)
    assert len(trials) == 3
    assert all(t.state in FINISHED for t in trials)
    assert trials[0].params == {"method.rank": 64, "trainer.lr": 5e-5, "trainer.epochs": 3}
    for t in by_state(trials, TrialState.COMPLETE):
        assert sorted(t.intermediate_values) == list(range(1, t.params["trainer.epochs"] + 1))
        assert t.value is not None and 0.0 <= t.value <= 1.0
    best = yaml.safe_load((tmp_path / "sweeps" / name / "best.yaml").read_text())
    assert "hparams_search=lora_rank_lr_epochs" in best["overrides"]
    enter = f"cd {shlex.quote(str(tmp_path))} && {shlex.quote(sys.executable)}"
    assert best["command"].startswith(f"{enter} -m src.train ")
    trial_dirs = [p for p in (tmp_path / "sweeps" / name / "trials").iterdir() if p.is_dir()]
    assert sorted(p.name.split("_")[0] for p in trial_dirs) == ["0", "1", "2"]
    for t in trials:
        assert Path(t.user_attrs["output_dir"]) in trial_dirs  # each trial's own folder

    # The best trial's model is the registered champion, and src.predict classifies with it.
    tracking = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    client = mlflow.MlflowClient(tracking)
    top = max(by_state(trials, TrialState.COMPLETE), key=lambda t: t.value or 0.0)
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.tags["optuna.trial"] == str(top.number)
    assert float(champion.tags["eval_macro_f1"]) == top.value
    assert best["champion"] == f"models:/{name}@champion"
    texts = tmp_path / "texts.txt"
    texts.write_text("基金涨了很开心\n退钱,什么辣鸡基金\n", encoding="utf-8")
    command = [sys.executable, "-m", "src.predict", "--tracking-uri", tracking, "--input", texts]
    by_alias = run(tmp_path, [*command, "--model", best["champion"]], timeout=300)
    assert by_alias.returncode == 0, by_alias.stderr[-2000:]
    labels = [json.loads(line)["label"] for line in by_alias.stdout.splitlines()]
    assert len(labels) == 2
    # In this order: MLflow's set_tracking_uri(None) also unsets the environment variable.
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    weights = [
        (resolve_model_dir(*source) / "model.safetensors").read_bytes()
        for source in ((None, best["champion"]), (champion.run_id, None))
    ]
    assert weights[0] == weights[1]  # the champion is the best trial's own model


def test_a_multi_objective_study_keeps_its_pareto_front(two_objective_sweep: Sweep) -> None:
    sweep = two_objective_sweep
    study = optuna.load_study(
        study_name="app_study",
        storage=open_storage(str(sweep.cwd / "sweeps" / "app_study" / "journal.log")),
    )
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["score", "abs_x"]
    assert all(t.state == TrialState.COMPLETE and len(t.values) == 2 for t in study.trials)
    front = sorted(study.best_trials, key=lambda t: t.number)
    for t in study.trials:  # the app's second objective really is |x|
        assert t.values[1] == pytest.approx(abs(t.params["x"]))
    best = sweep.best()
    assert best["directions"] == ["maximize", "minimize"]
    assert best["metrics"] == ["score", "abs_x"]
    assert "best_value" not in best
    assert [(p["trial"], p["values"]) for p in best["pareto_front"]] == [
        (t.number, list(t.values)) for t in front
    ]
    for entry, trial in zip(best["pareto_front"], front, strict=True):
        assert f"x={trial.params['x']!r}" in entry["command"]
    data = sweep.client.get_run(sweep.parent).data
    assert data.params["direction"] == "maximize,minimize"
    assert data.params["sampler"] == "nsgaii(seed=0, population_size=4)"
    assert data.params["pruner"] == "none()"  # Optuna prunes single-objective studies only
    assert "pruning is off" in sweep.result.stdout
    assert data.tags["pareto.trials"] == ",".join(str(t.number) for t in front)
    assert data.metrics["pareto_size"] == len(front)
    history = sweep.client.get_metric_history(sweep.parent, "trial_abs_x")
    assert sorted(m.step for m in history) == list(range(6))
    plots = {a.path for a in sweep.client.list_artifacts(sweep.parent, "optuna/plots")}
    assert {"optuna/plots/pareto_front.png", "optuna/plots/param_importances_abs_x.png"} <= plots


def test_the_printed_storage_opens_in_optuna_dashboard_and_the_optuna_cli(
    two_objective_sweep: Sweep,
) -> None:
    pytest.importorskip("optuna_dashboard", reason="pip install -e '.[dashboard]'")
    sweep, bin_dir = two_objective_sweep, Path(sys.executable).parent
    best = sweep.best()
    storage = best["storage"]  # a journal file's path: what both tools take
    assert Path(storage) == sweep.cwd / "sweeps" / "app_study" / "journal.log"
    for printed in (f"storage {storage}", best["dashboard"], best["optuna_cli"]):
        assert printed in sweep.result.stdout  # the console shows the same strings
    assert sweep.client.get_run(sweep.parent).data.tags["optuna.storage"] == storage

    studies = subprocess.run(
        [bin_dir / "optuna", "studies", "--storage", storage, "-f", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert studies.returncode == 0, studies.stderr
    assert [(s["name"], s["n_trials"]) for s in json.loads(studies.stdout)] == [("app_study", 6)]
    cli = shlex.split(best["optuna_cli"])  # pasted as printed
    trials = subprocess.run(
        [bin_dir / cli[0], *cli[1:], "-f", "json"], capture_output=True, text=True, timeout=120
    )
    assert trials.returncode == 0, trials.stderr
    assert sorted(t["number"] for t in json.loads(trials.stdout)) == list(range(6))

    dashboard = shlex.split(best["dashboard"])
    assert dashboard[1:3] == ["--host", "127.0.0.1"]
    port = free_port()
    with serving([bin_dir / dashboard[0], *dashboard[1:], "--port", str(port)]) as server:
        studies_api = wait_for_json(f"http://127.0.0.1:{port}/api/studies", server)
        (summary,) = studies_api["study_summaries"]
        assert summary["study_name"] == "app_study"
        assert summary["directions"] == ["maximize", "minimize"]
        detail = wait_for_json(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}", server)
        assert detail["objective_names"] == ["score", "abs_x"]
        assert len(detail["trials"]) == 6
        front = {p["trial"] for p in best["pareto_front"]}
        assert {t["number"] for t in detail["best_trials"]} == front

    # `make dashboard` serves a study on 127.0.0.1. Its command is run here as make prints it
    # (-n: make would otherwise set up a virtual environment of its own first).
    port = free_port()
    venv = Path(sys.executable).parent.parent
    make = ["make", "-n", "-s", "-C", str(ROOT), "dashboard", f"VENV={venv}"]
    recipe = subprocess.run(
        [*make, f"DASHBOARD_PORT={port}", f"STORAGE={storage}"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.splitlines()
    command = shlex.split(recipe[-1])
    assert command == [
        f"{venv}/bin/optuna-dashboard",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        storage,
    ]
    with serving(command) as server:
        studies_api = wait_for_json(f"http://127.0.0.1:{port}/api/studies", server)
        assert [s["study_name"] for s in studies_api["study_summaries"]] == ["app_study"]


@contextlib.contextmanager
def serving(command: list[Any]) -> Iterator[subprocess.Popen[bytes]]:
    """A server process (and its children) for the duration of the block."""
    server = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        yield server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def free_port() -> int:
    """A TCP port nobody listens on, on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_json(url: str, server: subprocess.Popen[bytes], timeout: float = 120) -> Any:
    """GET a JSON document from a server that is still starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except OSError:
            assert server.poll() is None, f"the server exited with {server.returncode}"
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_the_champion_alias_moves_to_better_trials_only(
    parent_run: tuple[mlflow.MlflowClient, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, parent, uri = parent_run
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # no process-wide URI over it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # as the parent-run callback sets it
    experiment_id = client.get_run(parent).info.experiment_id
    study = optuna.create_study(study_name="s", direction="maximize")
    registry = Registry(client, experiment_id, "s", maximize=True, labels=["eval_macro_f1"])
    assert registry.champion() is None
    moved, models = [], []
    for trial_id, value in enumerate([0.5, 0.4, 0.7, 0.7]):
        run_id = client.create_run(
            experiment_id, tags={"optuna.study": "s", "optuna.trial_id": str(trial_id)}
        ).info.run_id
        model = client.create_logged_model(experiment_id, source_run_id=run_id)
        client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        models.append(model.model_id)
        study.add_trial(optuna.trial.create_trial(value=value))
        moved.append(registry.promote(study.trials[-1], trial_id))
    assert moved == [True, False, True, False]  # a tie does not move it
    champion = registry.champion()
    assert champion is not None
    assert (str(champion.version), champion.tags["optuna.trial"]) == ("2", "2")
    assert champion.tags["eval_macro_f1"] == "0.7"
    assert sorted(str(v.version) for v in client.search_model_versions("name='s'")) == ["1", "2"]
    no_model = optuna.trial.create_trial(value=0.9)  # a job that logged no model
    client.create_run(experiment_id, tags={"optuna.study": "s", "optuna.trial_id": "9"})
    assert not registry.promote(no_model, 9)
    assert str(registry.champion().version) == "2"  # type: ignore[union-attr]

    assert registered_model_id("s", "champion") == models[2]  # what src.predict checks
    with pytest.raises(UserError, match="no version of registered model s has the alias nope"):
        resolve_model_dir(None, "models:/s@nope")


def test_custom_search_space_samples_conditional_params(tmp_path: Path) -> None:
    calls = tmp_path / "calls.log"
    result = run(
        tmp_path,
        app_command(
            "hydra.sweeper.n_trials=6",
            "cat=a,b",
            "~hydra.sweeper.params.y",  # y: only searched for cat=b, by the function
            "hydra.sweeper.custom_search_space=app.y_for_b_only",
            "hydra.sweeper.enqueue=[{cat: b, y: 2.25}]",
            "steps=1",
            f"calls_file={calls}",
        ),
    )
    assert result.returncode == 0, result.stderr
    trials = load_trials(tmp_path)
    assert trials[0].params["y"] == 2.25  # an enqueued value of a custom parameter
    assert {t.params["cat"] for t in trials} == {"a", "b"}
    for t in trials:
        assert ("y" in t.params) == (t.params["cat"] == "b")
        if "y" in t.params:
            assert 1.5 <= t.params["y"] <= 2.5
    jobs = calls.read_text().splitlines()  # what each job was given
    for t, line in zip(trials, jobs, strict=True):
        assert f"y={t.params.get('y', 0.0)} cat={t.params['cat']}" in line

    clash = run(
        tmp_path,
        app_command(
            "hydra.sweeper.study_name=clash",
            "x=0.5",
            "hydra.sweeper.custom_search_space=app.suggest_x",
        ),
    )
    assert clash.returncode == 2
    errors = [line for line in clash.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: hydra.sweeper.custom_search_space=app.suggest_x: it suggests x, which an "
        "override fixes (x=0.5): drop one of them"
    ]
    assert "Traceback" not in clash.stderr
    (failed,) = load_trials(tmp_path, "clash")  # no job ran; the trial says why
    assert failed.state == TrialState.FAIL
    assert "suggests x" in failed.user_attrs[FAIL_REASON_ATTR]


def test_max_failure_rate_one_never_stops_the_study_on_failures(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        app_command(
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.max_failure_rate=1.0",
            "hydra.sweeper.min_trials_for_failure_rate=1",
            "x=interval(0, 1.5)",
            "fail_if_x_above=2.0",
            "hydra.sweeper.enqueue=[{x: 4.0}, {x: 4.5}, {x: 1.0}]",
        ),
    )
    assert result.returncode == 0, result.stderr
    trials = load_trials(tmp_path)
    assert [t.state for t in trials[:3]] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert len(by_state(trials, TrialState.COMPLETE)) == 3  # the study still reaches n_trials

    everything_fails = run(
        tmp_path,
        app_command(
            "hydra.sweeper.study_name=doomed",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.max_failure_rate=1.0",
            "return_nan=true",
        ),
    )
    assert everything_fails.returncode == 0, everything_fails.stderr
    assert "3 trials failed in this run, as many as n_trials" in everything_fails.stdout
    assert [t.state for t in load_trials(tmp_path, "doomed")] == [TrialState.FAIL] * 3


@pytest.mark.slow
def test_multi_objective_sweep_of_src_train_trades_f1_against_trainable_params(
    tmp_path: Path,
) -> None:
    result = run(
        tmp_path,
        [
            sys.executable,
            "-m",
            "src.train",
            "-m",
            "hparams_search=f1_vs_params",
            "model=tiny_qwen2",
            "data=fund_reviews",
            "trainer.epochs=1",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.enqueue=[{method: lora, method.rank: 4}, {method: head_only}]",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        ],
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    name = "f1_vs_params-tiny_qwen2-fund_reviews"
    study = optuna.load_study(
        study_name=name,
        storage=open_storage(str(tmp_path / "sweeps" / name / "journal.log")),
    )
    assert study.metric_names == ["eval_macro_f1", "trainable_params"]  # optuna-dashboard's axes
    trials = study.trials
    assert [t.params for t in trials[:2]] == [
        {"method": "lora", "trainer.lr": trials[0].params["trainer.lr"], "method.rank": 4},
        {"method": "head_only", "trainer.lr": trials[1].params["trainer.lr"]},
    ]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs(
        [client.get_experiment_by_name("clfsweep").experiment_id],
        filter_string="tags.`optuna.study` = '" + name + "'",
    )
    jobs = [r for r in runs if "optuna.trial_id" in r.data.tags]  # not the parent run
    by_trial = {int(r.data.tags["optuna.trial_id"]): r.data.metrics for r in jobs}
    for t in trials:  # the job returned [best eval macro F1, trainable parameters] of its run
        assert t.state == TrialState.COMPLETE
        metrics = by_trial[t.number]
        assert t.values == [metrics["best_eval_macro_f1"], metrics["trainable_params"]]
    assert trials[1].values[1] < trials[0].values[1]  # the head alone trains fewer parameters
    best = yaml.safe_load((tmp_path / "sweeps" / name / "best.yaml").read_text())
    assert best["metrics"] == ["eval_macro_f1", "trainable_params"]
    assert {p["trial"] for p in best["pareto_front"]} == {t.number for t in study.best_trials}


def test_a_multirun_whose_parent_run_cannot_start_stops_before_any_job(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        [
            sys.executable,
            "-m",
            "src.train",
            "-m",
            "tracking.experiment=${oops}",  # resolves in no job either
            "method=lora,sft",
            "data=fund_reviews",
        ],
        timeout=300,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: the multirun's parent MLflow run could not start (InterpolationKeyError: "
        "Interpolation key 'oops' not found full_key: tracking.experiment); fix the overrides "
        "or the tracking settings: no job was run"
    ]
    assert "Traceback" not in result.stderr and "UserWarning" not in result.stderr
    store = tmp_path / "mlruns"
    assert not (store / "mlflow.db").exists() and not store.exists()  # no run, not even a store
    assert "Launching" not in result.stdout
