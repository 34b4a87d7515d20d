"""Which RUNNING trials still have a live worker, and heartbeats for our own.

Optuna's heartbeat (``fail_stale_trials``, ``RetryHeartbeatStaleTrialCallback``) exists for RDB
storages only; ``JournalStorage`` has none in Optuna 5. So every trial we ask for records its
worker (host, pid, the pid's start time) in a trial system attr, and while it runs a thread
refreshes a heartbeat timestamp (journal) or Optuna's own heartbeat (RDB with
``heartbeat_interval``). A RUNNING trial is stale when its worker process on this host is gone
(checked at once via /proc or ``kill(pid, 0)``, robust to pid reuse), or when a worker on
another host has not beaten for ``grace_period`` seconds.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial

from src.tracking.names import HEARTBEAT_ATTR, WORKER_ATTR
from src.tracking.processes import process_alive, process_start_ticks


@dataclass(frozen=True)
class Worker:
    """The process that runs a trial: it owns the trial until it tells the result."""

    host: str
    pid: int
    start_ticks: int | None

    @classmethod
    def current(cls) -> Worker:
        """This process."""
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_start_ticks(pid))

    def to_attr(self, heartbeat: str) -> dict[str, Any]:
        """The trial system attr; `heartbeat` is "attr", "optuna" or "none"."""
        return {
            "host": self.host,
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "heartbeat": heartbeat,
            "started": time.time(),
        }


def stale_reason(trial: FrozenTrial, me: Worker, grace_period: float, now: float) -> str | None:
    """Why a RUNNING trial is stale, or None when its worker may be alive."""
    info = trial.system_attrs.get(WORKER_ATTR)
    if not isinstance(info, dict):
        # A worker records itself right after asking; one that died in between left nothing.
        start = trial.datetime_start.timestamp() if trial.datetime_start else now
        if now - start > max(grace_period, 600):
            return f"no worker recorded for {now - start:.0f} s"
        return None
    host, pid = info.get("host"), int(info.get("pid", -1))
    if host == me.host:
        if pid == me.pid and info.get("start_ticks") == me.start_ticks:
            return None
        if not process_alive(pid, info.get("start_ticks")):
            return f"its worker (pid {pid} on {host}) is gone"
        return None
    if info.get("heartbeat") != "attr":
        return None  # Optuna's own heartbeat (RDB) or none: Optuna judges
    last = max(float(trial.system_attrs.get(HEARTBEAT_ATTR) or 0), float(info.get("started") or 0))
    if now - last > grace_period:
        return f"no heartbeat from its worker (pid {pid} on {host}) for {now - last:.0f} s"
    return None


class Heartbeat:
    """A thread beating for `trial_ids` while the block runs (Optuna's for RDB, ours else)."""

    def __init__(self, storage: BaseStorage, trial_ids: list[int], interval: float) -> None:
        self._storage = storage
        self._trial_ids = list(trial_ids)
        # Optuna's own heartbeat exists for RDB storages opened with a heartbeat_interval.
        native = storage.get_heartbeat_interval() if isinstance(storage, RDBStorage) else None
        self._native = native is not None
        self._interval = native or interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def mode(self) -> str:
        """How liveness is recorded: "optuna" (RDB heartbeat), "attr" or "none"."""
        if self._native:
            return "optuna"
        return "attr" if self._interval > 0 else "none"

    def beat(self) -> None:
        """Record one heartbeat for every trial."""
        for trial_id in self._trial_ids:
            try:
                if isinstance(self._storage, RDBStorage) and self._native:
                    self._storage.record_heartbeat(trial_id)
                else:
                    self._storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
            except Exception:  # a finished trial or a storage hiccup: next beat retries
                pass

    def _run(self) -> None:
        """Beat until stopped."""
        while not self._stop.wait(self._interval):
            self.beat()

    def __enter__(self) -> Heartbeat:
        if self.mode == "none":
            return self
        self.beat()
        self._thread = threading.Thread(target=self._run, name="clfsweep-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
