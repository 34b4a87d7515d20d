"""Sweeps whose trials are jobs of a real SLURM cluster, as `local=slurm` submits them.

The module fixture starts a one-node cluster with scripts/slurm.sh (munged, MariaDB + slurmdbd,
slurmctld, one slurmd with 2 CPU slots) on 127.0.0.1, in a temporary directory, on free ports;
it skips only where the Debian packages are missing (`.ci/run` installs them) or where it cannot
run as root. Trials go through hydra-submitit-launcher: real `sbatch` job arrays of 2, states
read back with `sacct`, `scancel` of a running job; nothing is mocked.

The sweep of training jobs uses conf/local/slurm.yaml.example with only its CHANGE lines changed
(CPU slots, no GPU, a journal storage and SQLite tracking in the shared directory), so it checks
what a user copies. Pruning and Ctrl-C use the sweeper test app (tests/sweeper_app), whose
objective makes the pruned trial certain and costs seconds a job.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from src.sweep.storage import open_storage
from src.tracking import names
from src.tracking.names import EXCESS_ATTR, FAIL_REASON_ATTR
from tests.conftest import CONF, ROOT

SCRIPT = ROOT / "scripts" / "slurm.sh"
APP = ROOT / "tests" / "sweeper_app" / "app.py"
DAEMONS = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class Cluster:
    """A running cluster: the environment its clients (and our sweeps) need."""

    env: dict[str, str]

    def command(self, *args: str) -> str:
        """Run a SLURM client command (sacct, squeue, scancel); its standard output."""
        return subprocess.run(
            args, env=self.env, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    def job_states(self, workdir: Path, n_jobs: int) -> dict[str, str]:
        """Job id (array tasks as 12_0) -> final state of the jobs started in workdir, once
        slurmdbd has all `n_jobs` of them (slurmctld reports to it every few seconds)."""
        deadline = time.monotonic() + 120
        while True:
            out = self.command(
                "sacct", "-n", "-P", "-X", "-S", "2020-01-01", "-o", "JobID,State,WorkDir"
            )
            rows = [line.split("|") for line in out.splitlines() if line]
            states = {job: state for job, state, where in rows if Path(where) == workdir}
            done = [s for s in states.values() if s not in ("PENDING", "RUNNING")]
            if len(done) >= n_jobs or time.monotonic() > deadline:
                return states
            time.sleep(1)

    def running_jobs(self) -> list[str]:
        """Ids of the jobs now RUNNING."""
        return self.command("squeue", "-h", "-t", "R", "-o", "%i").split()


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def slurm_missing() -> str | None:
    """Why the cluster cannot be started here, or None."""
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if missing:
        return (
            f"SLURM is not installed (no {', '.join(missing)}): apt-get install slurm-wlm "
            "slurmdbd munge mariadb-server (.ci/run does)"
        )
    if os.geteuid() != 0:
        return "the SLURM daemons run as root (slurmd starts the jobs); this is not root"
    return None


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A one-node SLURM cluster on 127.0.0.1, started and stopped by scripts/slurm.sh."""
    reason = slurm_missing()
    if reason:
        pytest.skip(reason)
    directory = Path(tempfile.mkdtemp(prefix="clfsweep-slurm-"))
    env = os.environ | {
        "SLURM_DIR": str(directory),
        "SLURM_CPUS": "2",
        "SLURMCTLD_PORT": str(free_port()),
        "SLURMD_PORT": str(free_port()),
        "SLURMDBD_PORT": str(free_port()),
        "SLURM_DB_PORT": str(free_port()),
    }
    started = subprocess.run(
        [str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=300
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield Cluster(env=sweep_env(directory / "etc" / "slurm.conf"))
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=180)
        shutil.rmtree(directory, ignore_errors=True)


def sweep_env(slurm_conf: Path) -> dict[str, str]:
    """What a sweep (and, through sbatch, its jobs) runs with: this cluster, this checkout."""
    drop = ("MLFLOW_TRACKING_URI", names.PARENT_ENV, "RANK", "HYDRA_FULL_ERROR")
    # SLURM_* of a job pytest itself might run in would leak into the sbatch calls.
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("SLURM_")}
    return env | {
        "SLURM_CONF": str(slurm_conf),
        "PYTHONPATH": str(ROOT),  # the jobs import this checkout's src, not another install
        "OMP_NUM_THREADS": "1",  # one thread per CPU slot
    }


def study_trials(journal: Path, study_name: str) -> list[FrozenTrial]:
    """The trials of a study in a journal file, without those the sweeper gave back."""
    study = optuna.load_study(study_name=study_name, storage=open_storage(str(journal)))
    return [t for t in study.trials if not t.system_attrs.get(EXCESS_ATTR)]


def wait_until(
    condition: Callable[[], bool], what: str, proc: subprocess.Popen[Any], timeout: float = 600
) -> None:
    """Poll `condition` until true; fail with the sweep's output if it exits first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the sweep exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.2)


def app_command(*overrides: str) -> list[str]:
    """A multirun of the sweeper test app, its trials submitted as SLURM job arrays of 2."""
    return [
        sys.executable,
        str(APP),
        "-m",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.array_parallelism=2",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=10",
        "hydra.sweeper.n_jobs=2",
        *overrides,
    ]


def test_trials_are_pruned_inside_their_slurm_jobs(cluster: Cluster, tmp_path: Path) -> None:
    steps = 3
    result = subprocess.run(
        app_command(
            "hydra.sweeper.n_trials=4",
            f"steps={steps}",
            "x=interval(0, 10)",
            "hydra.sweeper.pruner.name=median",
            "hydra.sweeper.pruner.n_startup_trials=2",
            # two good trials run first (array 1), then a hopeless one beside a good one
            "hydra.sweeper.enqueue=[{x: 1.0, y: 2.0}, {x: 1.5, y: 2.0}, {x: 9.0, y: 2.0},"
            " {x: 1.2, y: 2.0}]",
        ),
        cwd=tmp_path,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    trials = study_trials(tmp_path / "sweeps" / "app_study" / "journal.log", "app_study")
    assert len(trials) == 4
    hopeless = trials[2]
    assert hopeless.params["x"] == 9.0
    assert hopeless.state == TrialState.PRUNED  # the job's report was judged by the pruner
    assert len(hopeless.intermediate_values) < steps
    for t in trials[:2] + trials[3:]:
        assert t.state == TrialState.COMPLETE
        assert sorted(t.intermediate_values) == list(range(steps))
    # Two arrays of two jobs, each ended normally (a pruned trial is a job that returned).
    states = cluster.job_states(tmp_path, 4)
    assert sorted(states.values()) == ["COMPLETED"] * 4, states
    assert sorted(job.split("_")[1] for job in states) == ["0", "0", "1", "1"]


def test_ctrl_c_cancels_the_running_jobs_and_requeues_their_trials(
    cluster: Cluster, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        app_command("hydra.sweeper.n_trials=4", "steps=60", "sleep=1"),
        cwd=tmp_path,
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_until(lambda: len(cluster.running_jobs()) == 2, "two running jobs", proc, timeout=120)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, output[-3000:]

    deadline = time.monotonic() + 60
    while cluster.running_jobs() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cluster.running_jobs() == []
    states = cluster.job_states(tmp_path, 2)
    assert len(states) == 2
    assert all(state.startswith("CANCELLED") for state in states.values()), states
    trials = study_trials(tmp_path / "sweeps" / "app_study" / "journal.log", "app_study")
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert len(interrupted) == 2
    assert all("KeyboardInterrupt" in t.user_attrs[FAIL_REASON_ATTR] for t in interrupted)
    queued = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted(t.params["x"] for t in queued) == sorted(t.params["x"] for t in interrupted)


def test_a_sweep_of_training_jobs_survives_scancel_and_a_rerun_finishes_n_trials(
    cluster: Cluster, tmp_path: Path
) -> None:
    shared = tmp_path  # one node: the temporary directory plays the cluster's shared disk
    searchpath = tmp_path / "conf"
    (searchpath / "local").mkdir(parents=True)
    shutil.copy(CONF / "local" / "slurm.yaml.example", searchpath / "local" / "slurm.yaml")
    journal = shared / "sweeps" / "journal.log"
    tracking = f"sqlite:///{shared / 'mlruns' / 'mlflow.db'}"
    study_name = "slurm_study"
    command = [
        sys.executable,
        "-m",
        "src.train",
        "-m",
        "hparams_search=smoke_tiny",
        "local=slurm",
        f"hydra.searchpath=[file://{searchpath}]",
        "data=fund_reviews",  # the article's 20 reviews: seconds a trial
        "trainer.max_len=32",
        "trainer.epochs=6",  # over the smoke preset's 2: epochs to go when scancel comes
        f"hydra.sweeper.study_name={study_name}",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.plots=false",
        # stop at the first failed trial: the re-run has to finish the study
        "hydra.sweeper.max_failure_rate=0",
        "hydra.sweeper.min_trials_for_failure_rate=1",
        # the CHANGE lines of conf/local/slurm.yaml.example, for this cluster
        f"hydra.sweeper.storage={journal}",
        f"tracking.uri={tracking}",
        f"tracking.dir={shared / 'mlruns'}",
        "hydra.launcher.partition=debug",
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
    ]
    started = time.monotonic()

    with open(tmp_path / "first.log", "w") as out, open(tmp_path / "first.err", "w") as errors_file:
        first = subprocess.Popen(
            command, cwd=tmp_path, env=cluster.env, stdout=out, stderr=errors_file
        )
    # The parent run (and the MLflow store) exists before any job runs.
    wait_until(lambda: any(j.endswith("_0") for j in cluster.running_jobs()), "job 0", first)
    client = mlflow.MlflowClient(tracking)
    experiment = client.get_experiment_by_name("clfsweep")
    assert experiment is not None
    trial_0 = f"tags.`{names.OPTUNA_TRIAL_TAG}` = '0'"
    # Cancel once the job's run has logged its first epoch: it is training, 5 epochs to go.
    wait_until(
        lambda: any(
            client.get_metric_history(run.info.run_id, "eval_macro_f1")
            for run in client.search_runs([experiment.experiment_id], trial_0)
        ),
        "first epoch of trial 0",
        first,
    )
    (victim,) = [job for job in cluster.running_jobs() if job.endswith("_0")]
    cluster.command("scancel", victim)
    first.wait(timeout=600)
    err = (tmp_path / "first.err").read_text()
    assert first.returncode == 2, err[-4000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "1 of 2 trials failed" in errors[0], err[-3000:]
    assert "re-run the same command" in errors[0]

    again = subprocess.run(
        command, cwd=tmp_path, env=cluster.env, capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0, again.stderr[-4000:]
    print(f"SLURM sweep: {time.monotonic() - started:.0f} s for both commands")

    trials = study_trials(journal, study_name)
    cancelled = trials[0]
    assert cancelled.state == TrialState.FAIL
    assert f"job {victim} ended CANCELLED" in cancelled.user_attrs[FAIL_REASON_ATTR]
    assert sum(t.state in FINISHED for t in trials) == 4
    assert len(trials) == 5  # the cancelled one and 4 finished: nothing ran twice
    states = cluster.job_states(tmp_path, 5)
    assert states.pop(victim).startswith("CANCELLED")
    assert sorted(states.values()) == ["COMPLETED"] * 4, states

    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if names.SWEEP_TAG in r.data.tags]  # one, across both commands
    assert parent.data.tags[names.SWEEP_TAG] == study_name
    assert parent.info.status == "FINISHED"
    children = {int(r.data.tags[names.OPTUNA_TRIAL_TAG]): r for r in runs if r is not parent}
    assert sorted(children) == sorted(t._trial_id for t in trials)
    assert all(r.data.tags[names.PARENT_ID_TAG] == parent.info.run_id for r in children.values())
    killed = children.pop(cancelled._trial_id)
    # Marked by the job itself at once, though submitit's runner ignores SIGTERM.
    assert killed.info.status == "KILLED"
    assert killed.data.tags[names.STATE_TAG] == names.RunState.killed
    assert killed.data.tags[names.ERROR_TAG].startswith("killed by SIGTERM")
    for trial in trials[1:]:
        run = children[trial._trial_id]
        assert run.info.status == "FINISHED"
        expected = names.RunState.pruned if trial.state == TrialState.PRUNED else "completed"
        assert run.data.tags[names.STATE_TAG] == expected
        if trial.state == TrialState.COMPLETE:
            assert run.data.metrics["best_eval_macro_f1"] == pytest.approx(trial.value)
