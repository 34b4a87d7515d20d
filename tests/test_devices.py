"""One node, several GPUs: `hydra.sweeper.devices` runs one sweep worker per device group.

On a CPU machine the device ids are fake (CUDA_VISIBLE_DEVICES naming GPUs that do not exist
changes nothing for CPU code): the test app records, per process, the CUDA_VISIBLE_DEVICES it
saw and when its trial started and ended, which is all the pool decides.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from optuna.trial import TrialState

from src.config.errors import UserError
from src.sweep import devices as pool
from src.sweep.multi_gpu import TorchrunTask, find_task_function, rank_error
from src.sweep.settings import SweeperSettings
from src.sweep.storage import open_storage
from src.sweep.trial import report
from src.tracking.names import DEVICE_WORKER_ENV, FAIL_REASON_ATTR
from src.tracking.processes import process_alive
from tests.conftest import one_error_line
from tests.sweeper_app.ranked import ranked_task
from tests.test_sweeper_e2e import app_command, by_state, clean_env, load_trials, run

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Span:
    """One trial's process: where it ran and when."""

    trial: int
    devices: str
    pid: int
    worker: int
    start: float
    end: float | None


def spans(path: Path) -> list[Span]:
    """The trials' processes as the test app recorded them (no end: killed or stopped)."""
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    ends = {(r["trial"], r["pid"]): r["time"] for r in lines if r["event"] == "end"}
    return [
        Span(
            r["trial"],
            r["devices"],
            r["pid"],
            r["worker"],
            r["time"],
            ends.get((r["trial"], r["pid"])),
        )
        for r in lines
        if r["event"] == "start"
    ]


def wait_for(found: Callable[[], Any], proc: subprocess.Popen[Any], timeout: float = 90) -> Any:
    """Poll until `found()` is truthy; fail if the sweep ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        assert proc.poll() is None, "the sweep ended early"
        time.sleep(0.05)
    raise AssertionError("timed out")


def start(cwd: Path, command: list[str]) -> subprocess.Popen[bytes]:
    """A sweep in the background, its output in cwd/sweep.log."""
    with open(cwd / "sweep.log", "ab") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


# -- the settings and the pool's rules --------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"devices": [0, 0]}, "lists a device twice"),
        ({"devices": ["0,1"]}, "is not a device id"),
        ({"devices": [0, 1, 2], "gpus_per_trial": 2}, "1 would stay idle"),
        ({"gpus_per_trial": 2}, "needs the devices to split"),
        ({"gpus_per_trial": 0}, "must be >= 1"),
        ({"devices": [0, 1], "n_jobs": 2}, "leave n_jobs at 1"),
        ({"devices": [0, 1], "gpu_memory_gib": 0}, r"gpu_memory_gib=0.0 must be > 0"),
    ],
)
def test_device_settings_that_cannot_work_stop_with_one_line(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        SweeperSettings.from_kwargs({"study_name": "s", **settings})


def test_devices_split_into_groups_in_order_and_ints_become_ids() -> None:
    s = SweeperSettings.from_kwargs(
        {"study_name": "s", "devices": [0, 1, 2, 3], "gpus_per_trial": 2}
    )
    assert pool.device_groups(s.devices, s.gpus_per_trial) == [("0", "1"), ("2", "3")]
    assert pool.device_groups(["GPU-a", "GPU-b"], 1) == [("GPU-a",), ("GPU-b",)]


def test_a_worker_is_this_command_again_pinned_to_its_devices(tmp_path: Path) -> None:
    argv = ["python", "-m", "src.train", "-m", "hparams_search=smoke_tiny"]
    command = pool.worker_command(argv, "/venv/bin/python", tmp_path / "my sweep")
    assert command == [
        "/venv/bin/python",
        "-m",
        "src.train",
        "-m",
        "hparams_search=smoke_tiny",
        f"hydra.sweep.dir='{tmp_path / 'my sweep'}'",
    ]
    env = pool.worker_env({"PATH": "/bin"}, ("2", "3"), threads=8)
    assert env == {
        "PATH": "/bin",
        "CUDA_VISIBLE_DEVICES": "2,3",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # nvidia-smi's numbering
        "OMP_NUM_THREADS": "8",  # its share of the cores
        DEVICE_WORKER_ENV: "2,3",
    }
    mine = {"CUDA_DEVICE_ORDER": "FASTEST_FIRST", "OMP_NUM_THREADS": "2"}
    assert pool.worker_env(mine, ("0",), threads=8).items() >= mine.items()  # the user's own


def test_devices_outside_an_allocation_or_with_another_launcher_are_refused() -> None:
    pool.check_devices(["2", "3"], "2,3", pool.BASIC_LAUNCHER)
    pool.check_devices(["0", "1"], None, pool.BASIC_LAUNCHER)
    with pytest.raises(UserError, match=r"0, 1 not in CUDA_VISIBLE_DEVICES=2,3"):
        pool.check_devices(["0", "1"], "2,3", pool.BASIC_LAUNCHER)
    slurm = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    with pytest.raises(UserError, match="does not combine with the launcher"):
        pool.check_devices(["0"], None, slurm)


def test_only_a_worker_killed_in_a_trial_is_replaced_and_not_for_ever() -> None:
    assert pool.should_replace(-9, stopping=False, asked=1, deaths=1)
    assert not pool.should_replace(-9, stopping=False, asked=0, deaths=1)  # would die again
    assert not pool.should_replace(-2, stopping=True, asked=1, deaths=1)  # Ctrl-C
    assert not pool.should_replace(0, stopping=False, asked=1, deaths=0)  # done
    assert not pool.should_replace(2, stopping=False, asked=1, deaths=0)  # its own error
    deaths = 0
    for _ in range(3):  # died in its first trial, three workers in a row: a broken GPU?
        deaths = pool.deaths_in_a_row(deaths, finished=0)
    assert deaths == 3 and not pool.should_replace(-11, stopping=False, asked=1, deaths=deaths)
    assert pool.deaths_in_a_row(2, finished=1) == 0  # it finished a trial before dying


# A stand-in worker: says where it runs, then dies once (kill -9), waits, or just ends.
WORKER = """
import os, signal, sys, time
from pathlib import Path
devices = os.environ["CUDA_VISIBLE_DEVICES"]
print("on", devices, os.environ["CUDA_DEVICE_ORDER"], os.environ["OMP_NUM_THREADS"], flush=True)
marker = Path(sys.argv[1]) / devices
if sys.argv[2] == "die-once" and not marker.exists() or sys.argv[2] == "die-always":
    marker.touch()
    os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[2] == "wait":
    if devices == "1":
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # deaf to Ctrl-C: only SIGKILL stops it
    marker.touch()
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        print("stopped", flush=True)
        sys.exit(130)
"""


def run_pool(tmp_path: Path, mode: str, asked: int = 1) -> pool.PoolResult:
    """Two stand-in workers on devices 0 and 1."""
    command = [sys.executable, "-c", WORKER, str(tmp_path), mode]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    devices = pool.DevicePool(command, env, tmp_path, lambda pid: (asked, 0))
    return devices.run([("0",), ("1",)])


def test_a_worker_killed_in_a_trial_is_replaced_on_its_devices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_pool(tmp_path, "die-once")
    assert result == pool.PoolResult(stopped_by=None, errors=[])
    lines = sorted(capsys.readouterr().out.splitlines())
    threads = pool.threads_per_process(2)  # this machine's cores, halved
    assert [line for line in lines if "] on " in line] == [
        f"[gpu 0] on 0 PCI_BUS_ID {threads}",
        f"[gpu 0] on 0 PCI_BUS_ID {threads}",  # the replacement
        f"[gpu 1] on 1 PCI_BUS_ID {threads}",
        f"[gpu 1] on 1 PCI_BUS_ID {threads}",
    ]


def test_a_worker_that_died_before_its_first_trial_is_reported_not_replaced(
    tmp_path: Path,
) -> None:
    result = run_pool(tmp_path, "die-once", asked=0)
    assert result.stopped_by is None
    assert sorted(result.errors) == [("gpu 0", -9), ("gpu 1", -9)]


def test_workers_that_keep_dying_in_their_trial_are_replaced_twice_then_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_pool(tmp_path, "die-always")
    assert result.stopped_by is None
    assert sorted(result.errors) == [("gpu 0", -9), ("gpu 1", -9)]
    out = capsys.readouterr().out
    assert out.count("[gpu 0] on 0") == out.count("[gpu 1] on 1") == 3


def test_sigterm_stops_each_worker_once_and_a_second_signal_kills_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def stop_twice() -> None:
        deadline = time.monotonic() + 60
        while not all((tmp_path / d).exists() for d in "01") and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would: to the supervisor alone
        time.sleep(1.5)
        os.kill(os.getpid(), signal.SIGTERM)

    stopper = threading.Thread(target=stop_twice)
    stopper.start()
    result = run_pool(tmp_path, "wait")
    stopper.join()
    assert result == pool.PoolResult(stopped_by=signal.SIGTERM, errors=[])
    out = capsys.readouterr().out
    assert "[gpu 0] stopped" in out  # stopped as by Ctrl-C
    assert "[gpu 1] stopped" not in out  # ignored it: killed by the second signal
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


# -- sweeps of the test app on fake devices -----------------------------------------------------


# Placed (the default): a process per trial on the devices free when it starts; fixed groups
# (gpus_per_trial=1): a long-lived worker per device.
MODES = {"placed": [], "fixed groups": ["hydra.sweeper.gpus_per_trial=1"]}


@pytest.mark.parametrize("mode", MODES)
def test_every_device_busy_none_shared_count_exact_and_a_killed_workers_device_reused(
    tmp_path: Path, mode: str
) -> None:
    record, gate = tmp_path / "devices.jsonl", tmp_path / "go"
    proc = start(
        tmp_path,
        app_command(
            *MODES[mode],
            "hydra.sweeper.devices=[0,1,2]",
            "hydra.sweeper.n_trials=9",
            "steps=2",
            "sleep=0.3",
            f"devices_file={record}",
            f"hold_file={gate}",  # every trial waits until the killed worker's device is reused
        ),
    )
    victim = wait_for(lambda: next((s for s in spans(record) if s.devices == "1"), None), proc)
    os.kill(victim.worker, signal.SIGKILL)  # mid-trial
    killed_at = time.time()
    wait_for(lambda: [s for s in spans(record) if s.devices == "1" and s.start > killed_at], proc)
    gate.touch()
    assert proc.wait(timeout=120) == 0, (tmp_path / "sweep.log").read_text()[-4000:]

    trials = load_trials(tmp_path)
    assert len(by_state(trials, *FINISHED)) == 9
    (failed,) = by_state(trials, TrialState.FAIL)
    assert failed.number == victim.trial
    assert "stale" in failed.user_attrs[FAIL_REASON_ATTR]
    (retried,) = [t for t in trials if t.system_attrs.get("failed_trial") == failed.number]
    assert retried.state == TrialState.COMPLETE and retried.params == failed.params

    ran = spans(record)
    assert {s.devices for s in ran} == {"0", "1", "2"}
    closed = [(s, s.end or killed_at) for s in ran]
    for i, (a, a_end) in enumerate(closed):
        for b, b_end in closed[i + 1 :]:
            if a.start < b_end and b.start < a_end:  # ran at the same time
                assert a.devices != b.devices, (a, b)
    later = [s for s in ran if s.devices == "1" and s.start > killed_at]
    assert later and all(s.worker != victim.worker for s in later)
    by_number = {t.number: t for t in trials}
    assert all(by_number[s.trial].user_attrs["devices"] == s.devices for s in ran if s.end)
    if mode == "placed":  # a process per trial, the retried one included
        assert len({s.worker for s in ran}) == len(ran) == 10
    else:  # three workers and the one that replaced the victim
        assert len({s.worker for s in ran}) == 4


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_ctrl_c_or_sigterm_stops_every_worker_and_the_same_command_finishes_the_study(
    tmp_path: Path, sig: signal.Signals
) -> None:
    record = tmp_path / "devices.jsonl"
    command = app_command(
        "hydra.sweeper.devices=[0,1]",
        "hydra.sweeper.n_trials=5",
        "steps=2",
        "sleep=0.3",
        f"devices_file={record}",
    )
    gate = tmp_path / "go"
    proc = start(tmp_path, [*command, f"hold_file={gate}"])  # the trials wait for Ctrl-C
    running = wait_for(lambda: len(spans(record)) >= 2 and spans(record), proc)
    proc.send_signal(sig)  # the terminal's Ctrl-C (or a scheduler's SIGTERM) reaches it alone
    assert proc.wait(timeout=60) == 128 + sig
    output = (tmp_path / "sweep.log").read_text()
    assert "re-run the same command to finish it" in output
    line = one_error_line(output)  # the workers' own lines carry their devices' prefix
    assert line.startswith(f"error: stopped by {sig.name}: ") and "continue" in line
    assert not any(process_alive(s.worker) for s in running)  # every worker stopped
    trials = load_trials(tmp_path)
    assert not by_state(trials, TrialState.RUNNING)
    interrupted = by_state(trials, TrialState.FAIL)
    assert {t.number for t in interrupted} == {s.trial for s in running}
    assert all("interrupted" in t.user_attrs[FAIL_REASON_ATTR] for t in interrupted)
    queued = by_state(trials, TrialState.WAITING)
    assert sorted(t.params["x"] for t in queued) == sorted(t.params["x"] for t in interrupted)

    gate.touch()
    again = run(tmp_path, [*command, f"hold_file={gate}"])
    assert again.returncode == 0, again.stderr[-4000:]
    trials = load_trials(tmp_path)
    assert len(by_state(trials, *FINISHED)) == 5
    assert not by_state(trials, TrialState.RUNNING, TrialState.WAITING)


def test_a_grid_across_devices_runs_each_point_once(tmp_path: Path) -> None:
    record = tmp_path / "devices.jsonl"
    result = run(
        tmp_path,
        app_command(
            "hydra.sweeper.devices=[0,1]",
            "hydra.sweeper.sampler.name=grid",
            "hydra.sweeper.n_trials=100",  # at most the grid: 6 points
            "hydra.sweeper.params=null",
            "x=0,1,2",
            "cat=a,b",
            "steps=1",
            f"devices_file={record}",
        ),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    trials = load_trials(tmp_path)
    points = sorted((t.params["x"], t.params["cat"]) for t in trials)
    assert points == [(x, cat) for x in (0, 1, 2) for cat in ("a", "b")]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert {s.devices for s in spans(record)} == {"0", "1"}


@pytest.mark.parametrize("mode", MODES)
def test_workers_that_stop_with_an_error_end_the_sweep_with_one_line(
    tmp_path: Path, mode: str
) -> None:
    result = run(
        tmp_path,
        app_command(
            *MODES[mode], "hydra.sweeper.devices=[0,1]", "fail_if_x_above=-1", "steps=1"
        ),  # all fail
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    if mode == "placed":  # the supervisor counts the failures of the trials it placed
        assert last.startswith("error: study app_study: ")
        assert "trials failed in this run (max_failure_rate=0.5)" in last
        assert not by_state(load_trials(tmp_path), TrialState.RUNNING)
        return
    assert last.startswith("error: study app_study: 0 of n_trials=4 finished; the workers on ")
    assert "gpu 0 (exit code 2)" in last and "gpu 1 (exit code 2)" in last
    assert "[gpu 0] error: study app_study: 3 of 3 trials failed" in result.stderr


# -- trials on several GPUs: torchrun's engine --------------------------------------------------


def test_a_trial_on_two_gpus_runs_as_two_ranks_and_returns_rank_0s_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hydra_cfg = OmegaConf.create({"hydra": OmegaConf.structured(HydraConf)})
    hydra_cfg.hydra.job_logging = {"version": 1, "root": {"level": "INFO"}}
    monkeypatch.setitem(HydraConfig.instance().__dict__, "cfg", None)
    HydraConfig.instance().set_config(hydra_cfg)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    task = TorchrunTask(ranked_task, 2)
    assert task(OmegaConf.create({"prune": False})) == "rank 0 of 2 on 2,3"
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 2"):  # PRUNED, not FAILED
        task(OmegaConf.create({"prune": True}))


@pytest.mark.slow
def test_a_sweep_with_two_gpus_per_trial_runs_each_trial_as_two_ranks_on_its_pair(
    tmp_path: Path,
) -> None:
    record = tmp_path / "devices.jsonl"
    command = app_command(
        "hydra.sweeper.devices=[0,1,2,3]",
        "hydra.sweeper.gpus_per_trial=2",
        "hydra.sweeper.n_trials=4",
        "steps=2",
        "sleep=0.3",
        f"devices_file={record}",
    )
    result = run(tmp_path, command, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert len(by_state(load_trials(tmp_path), *FINISHED)) == 4
    ran = spans(record)
    by_trial: dict[int, list[Span]] = {}
    for span in ran:
        by_trial.setdefault(span.trial, []).append(span)
    assert sorted(by_trial) == [0, 1, 2, 3]
    for ranks in by_trial.values():
        assert len(ranks) == 2 and len({s.devices for s in ranks}) == 1
        assert len({s.worker for s in ranks}) == 1  # both ranks of one worker's trial
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert {(r["rank"], r["world_size"]) for r in lines} == {("0", "2"), ("1", "2")}
    assert {s.devices for s in ran} == {"0,1", "2,3"}
    first = {t: min(s.start for s in spans_) for t, spans_ in by_trial.items()}
    last = {t: max(s.end or 0 for s in spans_) for t, spans_ in by_trial.items()}
    for a in by_trial:
        for b in by_trial:
            if a < b and first[a] < last[b] and first[b] < last[a]:
                assert by_trial[a][0].devices != by_trial[b][0].devices


class OneOfTwoRanks:
    """torch.distributed as one rank of a two-rank trial sees it: rank 0's broadcast decides."""

    def __init__(self, rank: int, decision_of_rank_0: bool = False) -> None:
        self.rank = rank
        self.decision_of_rank_0 = decision_of_rank_0
        self.sent: list[Any] = []

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return True

    def get_world_size(self) -> int:
        return 2

    def get_rank(self) -> int:
        return self.rank

    def broadcast_object_list(self, objects: list[Any], src: int) -> None:
        assert src == 0
        if self.rank == src:
            self.sent.append(objects[0])
        else:
            objects[0] = self.decision_of_rank_0


def test_the_ranks_of_a_ddp_trial_prune_together_as_rank_0_decides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1)
    )
    done = study.ask()
    done.report(1.0, step=1)
    study.tell(done, 1.0)

    rank_0 = OneOfTwoRanks(0)
    monkeypatch.setitem(sys.modules, "torch.distributed", rank_0)
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned):
        report(trial, 0.0, step=1)  # below the median: rank 0 prunes, and tells rank 1
    assert rank_0.sent == [True]
    assert study.trials[-1].intermediate_values == {1: 0.0}

    trial = study.ask()
    monkeypatch.setitem(sys.modules, "torch.distributed", OneOfTwoRanks(1, True))
    with pytest.raises(optuna.TrialPruned):
        report(trial, 5.0, step=1)  # fine in its own eyes: pruned all the same
    monkeypatch.setitem(sys.modules, "torch.distributed", OneOfTwoRanks(1, False))
    report(trial, 0.0, step=2)  # poor, but rank 0 goes on: so does rank 1
    assert study.trials[-1].intermediate_values == {}  # rank 0 alone reports


def test_ranks_find_the_task_function_hydra_main_wrapped() -> None:
    import src.train

    assert find_task_function("src.train", "main") is src.train.main.__wrapped__  # type: ignore[attr-defined]
    assert find_task_function(ranked_task.__module__, "ranked_task") is ranked_task


def test_a_failed_rank_names_itself() -> None:
    error = rank_error({1: {"message": "ValueError: x"}, 0: "Signal 15 (SIGTERM) received"})
    assert str(error) == "rank 1: ValueError: x"  # the one that raised, not the one stopped
    assert str(rank_error({1: "Signal 9 (SIGKILL) received by PID 7"})) == (
        "rank 1: Signal 9 (SIGKILL) received by PID 7"
    )


# -- a real sweep of src.train ------------------------------------------------------------------


def train_multirun(cwd: Path, *overrides: str) -> list[Any]:
    """`src.train -m` of one-epoch runs on 64 reviews, to its end: its MLflow runs."""
    quick = ["trainer.epochs=1", "data.max_train=64"]
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", "-m", *quick, *overrides],
        cwd=cwd,
        env=clean_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "clfsweep"]
    return client.search_runs([experiment.experiment_id])


def train_sweep(cwd: Path, *overrides: str) -> tuple[list[Any], list[Any]]:
    """A smoke_tiny sweep of src.train on fake devices: its Optuna trials and MLflow runs."""
    settings = ["hparams_search=smoke_tiny", "hydra.sweeper.enqueue=[]"]
    runs = train_multirun(cwd, *settings, "hydra.sweeper.plots=false", *overrides)
    return load_trials(cwd, "smoke_tiny-tiny_qwen2-snownlp_sentiment"), runs


def children_of_one_parent(runs: list[Any]) -> list[Any]:
    """The child runs of the sweep's one parent run, which has ended."""
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED"
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


@pytest.mark.slow
def test_src_train_trials_on_two_devices_are_children_of_one_parent_run(tmp_path: Path) -> None:
    trials, runs = train_sweep(tmp_path, "hydra.sweeper.devices=[0,1]", "hydra.sweeper.n_trials=3")
    assert len(by_state(trials, *FINISHED)) == 3
    assert {t.user_attrs["devices"] for t in trials} == {"0", "1"}
    children = children_of_one_parent(runs)
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)
    assert (tmp_path / "sweeps" / "smoke_tiny-tiny_qwen2-snownlp_sentiment" / "best.yaml").is_file()


@pytest.mark.slow
def test_src_train_trials_on_two_gpus_each_train_with_ddp_and_record_one_run(
    tmp_path: Path,
) -> None:
    trials, runs = train_sweep(
        tmp_path,
        "hydra.sweeper.devices=[0,1]",
        "hydra.sweeper.gpus_per_trial=2",  # two gloo ranks on a CPU
        "hydra.sweeper.n_trials=2",
        "trainer.logging_steps=1",
    )
    assert len(by_state(trials, *FINISHED)) == 2
    assert {t.user_attrs["devices"] for t in trials} == {"0,1"}
    children = children_of_one_parent(runs)
    assert len(children) == 2  # rank 0 alone records
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    for child in children:  # 64 reviews in batches of 8: 8 steps alone, 4 on each of two ranks
        losses = client.get_metric_history(child.info.run_id, "train_loss")
        assert [m.step for m in losses] == [1, 2, 3, 4]


# -- trials of different sizes placed on free devices ------------------------------------------

# A stand-in trial process: records where and when it ran, then sleeps its trial's duration.
TRIAL = """
import json, os, sys, time
start = time.time()
trial = int(os.environ["CLFSWEEP_PLACED_TRIAL"])
time.sleep(float(sys.argv[2].split(",")[trial]))
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"trial": trial, "devices": os.environ["CUDA_VISIBLE_DEVICES"],
                        "start": start, "end": time.time()}) + "\\n")
"""


def test_placement_of_1_and_2_gpu_trials_on_four_fake_devices_shares_none_uses_all_runs_each_once(
    tmp_path: Path,
) -> None:
    gpus = [2, 1, 1, 2, 1, 2, 1, 1]
    seconds = [0.6, 0.2, 0.9, 0.3, 0.2, 0.4, 0.5, 0.1]
    record = tmp_path / "trials.jsonl"
    command = [sys.executable, "-c", TRIAL, str(record), ",".join(map(str, seconds))]
    asked = iter(enumerate(gpus))
    ended: list[tuple[int, int]] = []
    placed = pool.PlacedPool(
        command,
        dict(os.environ),
        tmp_path,
        ["0", "1", "2", "3"],
        ask=lambda: next(asked, None),
        ended=lambda trial, code: ended.append((trial, code)),
        abandon=lambda trials: pytest.fail(f"abandoned {trials}"),
    )
    assert placed.run() is None
    assert sorted(ended) == [(t, 0) for t in range(len(gpus))]  # each once, each finished
    ran = [json.loads(line) for line in record.read_text().splitlines()]
    assert sorted(r["trial"] for r in ran) == list(range(len(gpus)))
    assert all(len(r["devices"].split(",")) == gpus[r["trial"]] for r in ran)
    for i, a in enumerate(ran):
        for b in ran[i + 1 :]:
            if a["start"] < b["end"] and b["start"] < a["end"]:
                assert not set(a["devices"].split(",")) & set(b["devices"].split(",")), (a, b)
    assert {d for r in ran for d in r["devices"].split(",")} == {"0", "1", "2", "3"}


@pytest.mark.slow  # six src.train trials, two of them as two ranks, on a CPU: minutes
def test_placement_of_src_train_grid_cells_by_their_memory_estimate_on_four_fake_devices(
    tmp_path: Path, compose_cfg: Callable[..., Any]
) -> None:
    """The node command (`src.train -m <grid> hydra.sweeper.devices=[...]`) on a grid of LoRA
    and full fine-tuning cells, with a per-device memory between the two estimates: the full
    fine-tunes get two devices each (two ranks), the LoRA cells one; each cell once."""
    from src.model.memory import GIB
    from src.model.sharding import placement

    common = ["model=tiny_qwen2", "data.max_train=64", "trainer.max_len=64", "trainer.batch_size=8"]
    common.append("trainer.gradient_checkpointing=false")  # else it could fit sft on one device
    needs = {
        m: placement(compose_cfg(*common, f"method={m}"), GIB).per_gpu for m in ("lora", "sft")
    }
    assert needs["lora"] < needs["sft"]
    card = (needs["lora"] + needs["sft"]) / 2 / 0.9 / GIB  # LoRA fits, a full fine-tune does not
    folder = tmp_path / "sweeps" / "grid"
    runs = train_multirun(
        tmp_path,
        *common,
        "method=lora,sft",
        "seed=1,2,3",
        "hydra.sweeper.devices=[0,1,2,3]",
        f"hydra.sweeper.gpu_memory_gib={card}",
        f"hydra.sweep.dir={folder}",
    )
    storage = open_storage(str(folder / "study" / "journal.log"))
    trials = optuna.load_study(study_name="grid", storage=storage).trials
    assert [(t.params["method"], t.params["seed"]) for t in trials] == [
        (m, s) for m in ("lora", "sft") for s in (1, 2, 3)
    ]
    assert len(by_state(trials, *FINISHED)) == 6
    for trial in trials:
        gpus = 2 if trial.params["method"] == "sft" else 1
        assert trial.user_attrs["gpus"] == gpus
        assert len(trial.user_attrs["devices"].split(",")) == gpus
    assert {d for t in trials for d in t.user_attrs["devices"].split(",")} == {"0", "1", "2", "3"}
    children = children_of_one_parent(runs)
    assert len(children) == 6  # rank 0 alone records a two-rank trial
    assert sorted(r.data.tags["strategy"] for r in children) == ["ddp"] * 3 + ["single"] * 3
    assert {r.data.tags["gradient_checkpointing"] for r in children} == {"false"}


# A trial process on a broken GPU: killed at once on device 1, else a short trial.
DYING = """
import os, signal, time
if os.environ["CUDA_VISIBLE_DEVICES"] == "1":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(0.2)
"""


def placed_pool(
    tmp_path: Path, devices: list[str], trials: int
) -> tuple[Any, list[tuple[int, int]]]:
    """A pool of 1-GPU stand-in trials (`DYING`) and the (trial, exit code) it reports."""
    asked = iter((t, 1) for t in range(trials))
    ended: list[tuple[int, int]] = []
    placed = pool.PlacedPool(
        [sys.executable, "-c", DYING],
        dict(os.environ),
        tmp_path,
        devices,
        ask=lambda: next(asked, None),
        ended=lambda trial, code: ended.append((trial, code)),
        abandon=lambda trials: None,
    )
    return placed, ended


def test_placement_gives_a_device_up_once_three_trials_in_a_row_on_it_were_killed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    placed, ended = placed_pool(tmp_path, ["0", "1"], 8)
    with caplog.at_level(logging.WARNING):
        assert placed.run() is None
    killed = [trial for trial, code in ended if code == -signal.SIGKILL]
    assert len(killed) == 3  # the broken GPU took three trials, then no more
    assert sorted(trial for trial, _ in ended) == list(range(8))  # every trial ended once
    assert "gpu 1 given up: the last 3 trials placed on it were killed" in caplog.text
    assert placed.placer.devices == ["0"]


def test_placement_that_gave_up_every_device_stops_with_one_line(tmp_path: Path) -> None:
    placed, ended = placed_pool(tmp_path, ["1"], 8)
    with pytest.raises(UserError, match=r"gpu 1 was given up after 3 trials in a row on it"):
        placed.run()
    assert [code for _, code in ended] == [-signal.SIGKILL] * 3
