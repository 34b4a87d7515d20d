"""Every device of a node busy: one sweep worker per device group, pinned through
CUDA_VISIBLE_DEVICES.

The engine is Optuna's distributed study, as with the same command in several terminals: the
workers share the study (a journal file lock or RDB), each asks its next trial as soon as its own
ends, and together they finish exactly n_trials. This module only does what the user did by
hand: it starts the same command once per device group with CUDA_VISIBLE_DEVICES set, replaces
a worker that died in a trial (the next worker to ask fails that trial and re-queues it,
`src.sweep.liveness`), and stops every worker on Ctrl-C or SIGTERM (each fails and re-queues its
running trial, so re-running the command finishes the study). submitit's local executor gives
every job the same first GPUs, and Hydra's launchers (joblib, submitit) wait for a whole batch:
neither keeps each device busy on its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from src.config.errors import UserError
from src.config.private_api import BASIC_LAUNCHER
from src.sweep.placement import Placer
from src.sweep.search_space import quote
from src.tracking.names import DEVICE_WORKER_ENV

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
POLL_S = 0.2
MAX_DEATHS_IN_A_ROW = 3
PLACED_TRIAL_ENV = "CLFSWEEP_PLACED_TRIAL"  # the trial a placed process runs (then it ends)


def device_groups(devices: Sequence[str], per_trial: int) -> list[tuple[str, ...]]:
    """The devices in groups of `per_trial`, in the order given: one worker each."""
    return [tuple(devices[i : i + per_trial]) for i in range(0, len(devices), per_trial)]


def worker_command(orig_argv: Sequence[str], executable: str, sweep_dir: Path) -> list[str]:
    """This process's own command line (`python -m src.train ...`, `clfsweep ...`, a script),
    with every worker's jobs in one sweep directory (a `${now:...}` one differs per process)."""
    return [executable, *orig_argv[1:], f"hydra.sweep.dir={quote(str(sweep_dir))}"]


def worker_env(base: Mapping[str, str], group: Sequence[str], threads: int) -> dict[str, str]:
    """The environment of a worker holding `group`, `threads` CPU threads per process unless
    set."""
    ids = ",".join(group)
    # CUDA numbers GPUs fastest first unless told otherwise; nvidia-smi numbers them by bus.
    order = base.get("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    extra = {"CUDA_VISIBLE_DEVICES": ids, "CUDA_DEVICE_ORDER": order, DEVICE_WORKER_ENV: ids}
    # Each worker's torch would take every core: N workers would oversubscribe them N times.
    extra["OMP_NUM_THREADS"] = base.get("OMP_NUM_THREADS", str(max(1, threads)))
    return {**base, **extra}


def trial_env(
    base: Mapping[str, str], group: Sequence[str], threads: int, trial: int
) -> dict[str, str]:
    """The environment of a process that runs the study's trial `trial` on `group`."""
    return worker_env(base, group, threads) | {PLACED_TRIAL_ENV: str(trial)}


def threads_per_process(processes: int) -> int:
    """This process's CPU cores shared out among `processes` (one per GPU: a DDP trial's ranks
    each get a share)."""
    return max(1, len(os.sched_getaffinity(0)) // max(1, processes))


def label(group: Sequence[str]) -> str:
    """How a worker's lines are prefixed: ``gpu 0``, ``gpus 2,3``."""
    return ("gpu " if len(group) == 1 else "gpus ") + ",".join(group)


def check_devices(devices: Sequence[str], visible: str | None, launcher_target: str) -> None:
    """Devices this process may hand out, to workers that run their trials themselves."""
    if launcher_target != BASIC_LAUNCHER:
        raise UserError(
            f"hydra.sweeper.devices runs one worker per device of this node, each running its "
            f"trials itself: it does not combine with the launcher {launcher_target} (drop "
            "hydra.sweeper.devices, or the launcher, e.g. local=slurm)"
        )
    if visible is None:
        return
    allowed = [d.strip() for d in visible.split(",") if d.strip()]
    outside = [d for d in devices if d not in allowed]
    if outside:
        raise UserError(
            f"hydra.sweeper.devices={list(devices)}: {', '.join(outside)} not in "
            f"CUDA_VISIBLE_DEVICES={visible} of this environment (a scheduler's allocation?): "
            "list devices from it, or unset CUDA_VISIBLE_DEVICES"
        )


def deaths_in_a_row(before: int, finished: int) -> int:
    """A device group's workers that died in their trial without finishing one, in a row."""
    return 0 if finished else before + 1


def should_replace(returncode: int, stopping: bool, asked: int, deaths: int) -> bool:
    """Whether a worker that ended is replaced on its devices: one killed by a signal (kill -9,
    the OOM killer, a crash) in a trial is; one that ended on its own (done, or an error it
    printed) is not, nor one that died before its first trial (it would die again), nor the
    third in a row to die without finishing a trial (a broken GPU would burn the study)."""
    return returncode < 0 and not stopping and asked > 0 and deaths < MAX_DEATHS_IN_A_ROW


@dataclass
class Worker:
    """A worker process and the devices it holds."""

    group: tuple[str, ...]
    process: subprocess.Popen[bytes]
    pipes: list[threading.Thread] = field(default_factory=list)


@dataclass
class PoolResult:
    """How the pool ended: the signal that stopped it, and workers that ended with an error."""

    stopped_by: int | None
    errors: list[tuple[str, int]]


def spawn(
    command: Sequence[str], cwd: Path, env: Mapping[str, str], group: tuple[str, ...]
) -> Worker:
    """A process on `group`'s devices, in a session of its own (the terminal's Ctrl-C reaches the
    supervisor alone, which stops each process exactly once), its output relayed line by line
    with the devices as prefix."""
    process = subprocess.Popen(
        list(command),
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    prefix = f"[{label(group)}] "
    assert process.stdout is not None and process.stderr is not None
    pipes = [
        _relay(process.stdout, sys.stdout, prefix),
        _relay(process.stderr, sys.stderr, prefix),
    ]
    return Worker(group, process, pipes)


class Supervisor:
    """What both pools share: the processes they started, stopped together on Ctrl-C or
    SIGTERM: the first signal stops each as on Ctrl-C (its trial failed and re-queued), a
    second one kills them."""

    stopped_by: int | None = None
    kind = "processes"  # what the processes are, for the stop's log line

    def processes(self) -> list[Worker]:
        """The processes running now."""
        raise NotImplementedError

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        again = self.stopped_by is not None
        self.stopped_by = self.stopped_by or signum
        if not again:
            log.warning(
                "%s: stopping %d %s; their trials go back to the queue",
                signal.Signals(signum).name,
                len(self.processes()),
                self.kind,
            )
        self._stop(signal.SIGKILL if again else signal.SIGINT)

    def _stop(self, signum: int) -> None:
        """Send `signum` to every process's session."""
        for worker in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.process.pid, signum)


class DevicePool(Supervisor):
    """Workers on device groups, replaced when they die in a trial, stopped together."""

    kind = "workers"

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        trials_of: Callable[[int], tuple[int, int]],
    ) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.cwd = cwd
        self.trials_of = trials_of  # a worker pid's trials: (asked, finished)
        self.workers: list[Worker] = []
        self.deaths: dict[tuple[str, ...], int] = {}
        self.threads = 1
        self.stopped_by: int | None = None
        self.errors: list[tuple[str, int]] = []

    def run(self, groups: Sequence[tuple[str, ...]]) -> PoolResult:
        """Start a worker per group; wait until every worker has ended."""
        self.threads = threads_per_process(sum(len(group) for group in groups))
        with restored_signal_handlers(STOP_SIGNALS):
            for stop in STOP_SIGNALS:
                signal.signal(stop, self._on_signal)
            for group in groups:
                self._start(group)
            while self.workers:
                time.sleep(POLL_S)
                self._reap()
        return PoolResult(self.stopped_by, self.errors)

    def processes(self) -> list[Worker]:
        return self.workers

    def _start(self, group: tuple[str, ...]) -> None:
        """A worker on `group`."""
        worker = spawn(self.command, self.cwd, worker_env(self.env, group, self.threads), group)
        self.workers.append(worker)
        log.info("worker %d on %s started", worker.process.pid, label(group))

    def _reap(self) -> None:
        """Collect ended workers; replace those that died in a trial."""
        for worker in list(self.workers):
            code = worker.process.poll()
            if code is None:
                continue
            self.workers.remove(worker)
            for pipe in worker.pipes:
                pipe.join(timeout=5)
            pid, name = worker.process.pid, label(worker.group)
            asked, finished = self.trials_of(pid)
            deaths = deaths_in_a_row(self.deaths.get(worker.group, 0), finished)
            self.deaths[worker.group] = deaths
            if should_replace(code, self.stopped_by is not None, asked, deaths):
                log.warning(
                    "worker %d on %s died (signal %d): its trial goes back to the queue; a new "
                    "worker takes the devices",
                    pid,
                    name,
                    -code,
                )
                self._start(worker.group)
            elif code != 0 and self.stopped_by is None:
                self.errors.append((name, code))


class PlacedPool(Supervisor):
    """Trials of different sizes on free devices, one process per trial (`src.sweep.placement`
    decides which trial starts where); stopped together on Ctrl-C or SIGTERM.

    `ask()` returns the next trial (number, GPUs) of the study, None when the study needs no
    more now; `ended(trial, returncode)` is told when a trial's process ends; `abandon(trials)`
    gets the trials asked but never started when the pool stops.
    """

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        devices: Sequence[str],
        ask: Callable[[], tuple[int, int] | None],
        ended: Callable[[int, int], None],
        abandon: Callable[[list[int]], None],
    ) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.cwd = cwd
        self.placer = Placer(devices)
        self.ask, self.ended, self.abandon = ask, ended, abandon
        self.threads = threads_per_process(len(devices))
        self.running: dict[int, Worker] = {}
        self.deaths: dict[str, int] = {}  # trial processes killed in a row on each device

    def run(self) -> int | None:
        """Place trials until the study needs no more and every process has ended; the signal
        that stopped the pool, if one did."""
        with restored_signal_handlers(STOP_SIGNALS):
            for stop in STOP_SIGNALS:
                signal.signal(stop, self._on_signal)
            try:
                self._place_until_done()
            except BaseException:
                self._stop(signal.SIGINT)  # a broken sweep leaves no trial process behind
                while self.running:
                    time.sleep(POLL_S)
                    with contextlib.suppress(Exception):  # the first error is the one to report
                        self._reap()
                raise
            finally:
                if self.placer.waiting:
                    self.abandon([w.key for w in self.placer.waiting])
        return self.stopped_by

    def _place_until_done(self) -> None:
        """Ask, place, start, reap; until nothing runs, nothing waits and the study needs no
        more trials (or a signal stopped the pool and its processes have ended)."""
        while True:
            self._reap()
            exhausted = False
            while self.stopped_by is None:  # one trial asked at a time, placed at once
                for trial, group in self.placer.place():
                    self._start(trial, group)
                if exhausted or not self.placer.wants_more():
                    break
                asked = self.ask()
                exhausted = asked is None
                if asked is not None:
                    self._submit(*asked)
            if not self.running and (
                self.stopped_by is not None or (exhausted and not self.placer.waiting)
            ):
                return
            time.sleep(POLL_S)

    def processes(self) -> list[Worker]:
        return list(self.running.values())

    def _start(self, trial: int, group: tuple[str, ...]) -> None:
        """The process of `trial` on `group`."""
        env = trial_env(self.env, group, self.threads, trial)
        worker = self.running[trial] = spawn(self.command, self.cwd, env, group)
        log.info("trial %d on %s started (process %d)", trial, label(group), worker.process.pid)

    def _submit(self, trial: int, gpus: int) -> None:
        """Queue `trial`, which needs `gpus` of the devices the pool still has."""
        try:
            self.placer.submit(trial, gpus)
        except ValueError as exc:  # more GPUs than the devices not given up
            raise UserError(f"{exc}: re-run with devices that work") from None

    def _reap(self) -> None:
        """Free the devices of ended trial processes; give a device up once the third trial in
        a row on it was killed (as a worker pool does: a broken GPU would burn the study)."""
        for trial, worker in list(self.running.items()):
            code = worker.process.poll()
            if code is None:
                continue
            del self.running[trial]
            for pipe in worker.pipes:
                pipe.join(timeout=5)
            self.placer.release(worker.group)
            self.ended(trial, code)
            if self.stopped_by is not None:
                continue  # stopped by us: no device's fault
            for device in worker.group:
                self.deaths[device] = deaths_in_a_row(self.deaths.get(device, 0), int(code >= 0))
                if self.deaths[device] == MAX_DEATHS_IN_A_ROW:
                    self._give_up(device)

    def _give_up(self, device: str) -> None:
        """No trial is placed on `device` again; one line if what waits no longer fits."""
        killed = MAX_DEATHS_IN_A_ROW
        log.warning("gpu %s given up: the last %d trials placed on it were killed", device, killed)
        stranded = self.placer.retire(device)
        if stranded or not self.placer.devices:
            left = ",".join(self.placer.devices) or "none"
            raise UserError(
                f"gpu {device} was given up after {killed} trials in a row on it were killed, "
                f"and the devices left ({left}) cannot run the trials still to place; fix or "
                "drop that GPU and re-run the same command (the finished trials are kept)"
            )


def _relay(stream: IO[bytes], sink: IO[str], prefix: str) -> threading.Thread:
    """Copy a worker's output line by line, each line prefixed with its devices."""

    def copy() -> None:
        for line in iter(stream.readline, b""):
            sink.write(prefix + line.decode(errors="replace"))
            sink.flush()
        stream.close()

    thread = threading.Thread(target=copy, name=f"relay {prefix.strip()}", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def restored_signal_handlers(signals: Sequence[signal.Signals]) -> Iterator[None]:
    """The handlers of `signals` as they were before the block, whatever it installs."""
    previous = {s: signal.getsignal(s) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
