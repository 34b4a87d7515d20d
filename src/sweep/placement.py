"""Which waiting trial starts on which free GPUs, when trials need different numbers of them.

The policy is first come, first served with backfill and a bound on bypassing:
- trials start in the order they were asked, each on the lowest free device ids it needs;
- a trial that does not fit the free devices waits, and a later trial that fits starts in the
  gap (backfill: no GPU idles while a trial it could run waits);
- but a waiting trial lets at most `max_bypass` later trials start before it; then the devices
  that free up are kept for it until it starts (a reservation). Without the bound a 2-GPU trial
  could wait for ever behind a stream of 1-GPU trials that never leave two devices free at
  once; with it, it waits at most `max_bypass` backfilled trials plus the running ones.
Trial durations are unknown before they run, so the bound counts trials, not seconds.

Pure: no processes, no Optuna. The device pool (`src.sweep.devices`) and the plan of
`python -m src.estimate -m` both use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Waiting:
    """A trial waiting for devices: its key (the trial number, a cell index), its GPUs."""

    key: int
    gpus: int
    bypassed: int = 0  # later trials started before it


@dataclass
class Placer:
    """Free devices and waiting trials; `place()` says which trials start where."""

    devices: Sequence[str]
    max_bypass: int = 0  # 0: as many as there are devices
    free: list[str] = field(init=False)
    waiting: list[Waiting] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.free = list(self.devices)
        self.max_bypass = self.max_bypass or len(self.devices)

    def submit(self, key: int, gpus: int) -> None:
        """A trial that needs `gpus` devices joins the queue."""
        if not 1 <= gpus <= len(self.devices):
            raise ValueError(f"trial {key} needs {gpus} GPUs; the pool has {len(self.devices)}")
        self.waiting.append(Waiting(key, gpus))

    def release(self, devices: Sequence[str]) -> None:
        """A trial ended: its devices are free again."""
        self.free.extend(devices)
        order = {d: i for i, d in enumerate(self.devices)}
        self.free.sort(key=order.__getitem__)

    def retire(self, device: str) -> list[int]:
        """Give `device` up (never placed on again); the waiting trials the devices left can no
        longer hold."""
        self.devices = [d for d in self.devices if d != device]
        self.free = [d for d in self.free if d != device]
        return [w.key for w in self.waiting if w.gpus > len(self.devices)]

    def place(self) -> list[tuple[int, tuple[str, ...]]]:
        """The trials that start now, each with its devices, in queue order."""
        started: list[tuple[int, tuple[str, ...]]] = []
        for trial in list(self.waiting):
            blocked = [w for w in self.waiting if w is not trial and self._before(w, trial)]
            if any(w.bypassed >= self.max_bypass for w in blocked):
                break  # a reservation: what frees up now goes to the oldest waiting trial
            if trial.gpus > len(self.free):
                continue
            taken, self.free = tuple(self.free[: trial.gpus]), self.free[trial.gpus :]
            self.waiting.remove(trial)
            for w in blocked:
                w.bypassed += 1
            started.append((trial.key, taken))
        return started

    def _before(self, a: Waiting, b: Waiting) -> bool:
        """Whether `a` joined the queue before `b`."""
        return self.waiting.index(a) < self.waiting.index(b)

    def wants_more(self) -> bool:
        """Whether to ask for another trial: devices are free, no waiting trial holds a
        reservation, and the queue is shorter than the pool (a bounded look-ahead)."""
        reserved = any(w.bypassed >= self.max_bypass for w in self.waiting)
        return bool(self.free) and not reserved and len(self.waiting) < len(self.devices)


def plan_order(
    gpus: Sequence[int], devices: Sequence[str]
) -> list[tuple[int, int, tuple[str, ...]]]:
    """(wave, cell, devices) for cells needing `gpus[cell]` GPUs each, asked in order and each
    taking as long as the others: the order in which the pool would start them."""
    placer = Placer(devices)
    for cell, n in enumerate(gpus):
        placer.submit(cell, n)
    order: list[tuple[int, int, tuple[str, ...]]] = []
    wave = 0
    while placer.waiting:
        wave += 1
        started = placer.place()
        if not started:
            raise AssertionError("a pool with every device free started nothing")
        order += [(wave, cell, taken) for cell, taken in started]
        for _, taken in started:
            placer.release(taken)
    return order
