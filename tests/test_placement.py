"""Placement of trials of different sizes on a node's GPUs (src/sweep/placement.py): pure rules,
checked by simulating a pool with a clock."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import pytest

from src.sweep.placement import Placer, plan_order

FOUR = ["0", "1", "2", "3"]


def simulate(
    trials: Sequence[tuple[int, float]], devices: Sequence[str], max_bypass: int = 0
) -> list[tuple[int, tuple[str, ...], float, float]]:
    """Run (gpus, duration) trials through a Placer as the pool does, asking the next trial
    whenever it wants one: (trial, devices, start, end) of each."""
    placer = Placer(devices, max_bypass)
    pending = list(enumerate(trials))
    running: list[tuple[float, int, tuple[str, ...]]] = []
    ran: list[tuple[int, tuple[str, ...], float, float]] = []
    now = 0.0
    while pending or placer.waiting or running:
        while True:  # as the pool: one trial asked at a time, placed at once
            for key, taken in placer.place():
                end = now + trials[key][1]
                heapq.heappush(running, (end, key, taken))
                ran.append((key, taken, now, end))
            if not pending or not placer.wants_more():
                break
            key, (gpus, _) = pending.pop(0)
            placer.submit(key, gpus)
        assert running, "nothing runs and trials wait: the pool would hang"
        now, _, taken = heapq.heappop(running)
        placer.release(taken)
        while running and running[0][0] == now:  # trials that end at the same moment
            placer.release(heapq.heappop(running)[2])
    return ran


def overlapping(ran: list[tuple[int, tuple[str, ...], float, float]]) -> list[tuple[int, int]]:
    """Pairs of trials that ran at the same time on a shared device."""
    return [
        (a[0], b[0])
        for i, a in enumerate(ran)
        for b in ran[i + 1 :]
        if a[2] < b[3] and b[2] < a[3] and set(a[1]) & set(b[1])
    ]


def test_placement_of_mixed_sizes_never_shares_a_device_uses_all_and_runs_each_once() -> None:
    trials = [(2, 3.0), (1, 1.0), (1, 2.0), (2, 1.0), (1, 1.0), (1, 1.5), (2, 2.0), (1, 0.5)]
    ran = simulate(trials, FOUR)
    assert sorted(key for key, *_ in ran) == list(range(len(trials)))
    assert not overlapping(ran)
    assert all(len(taken) == trials[key][0] for key, taken, *_ in ran)
    assert {d for _, taken, *_ in ran for d in taken} == set(FOUR)


def test_placement_backfills_a_gap_a_two_gpu_trial_cannot_use() -> None:
    placer = Placer(["0", "1", "2"])
    placer.submit(0, 2)
    assert placer.place() == [(0, ("0", "1"))]
    placer.submit(1, 2)  # waits: one device free
    placer.submit(2, 1)  # fits the gap: starts now, no idle GPU
    assert placer.place() == [(2, ("2",))]
    assert [w.key for w in placer.waiting] == [1]
    placer.release(("0", "1"))
    assert placer.place() == [(1, ("0", "1"))]


def test_placement_reserves_devices_for_a_trial_bypassed_too_often() -> None:
    """A 2-GPU trial behind a stream of 1-GPU trials on 2 devices: without the bound it would
    wait as long as the stream lasts; with max_bypass=2 it starts after two."""
    stream = [(1, 1.0), (2, 1.0)] + [(1, 1.5 + 0.1 * i) for i in range(20)]
    ran = {key: start for key, _, start, _ in simulate(stream, ["0", "1"], max_bypass=2)}
    bypassed = [key for key, start in ran.items() if key > 1 and start < ran[1]]
    assert len(bypassed) <= 2
    assert ran[1] < max(ran.values())  # long before the stream ends


def test_placement_without_a_reservation_lets_a_stream_starve_a_two_gpu_trial() -> None:
    """What the bound prevents: a bound as long as the stream lets every 1-GPU trial go first."""
    stream = [(1, 1.0), (2, 1.0)] + [(1, 1.5 + 0.1 * i) for i in range(20)]
    ran = {key: start for key, _, start, _ in simulate(stream, ["0", "1"], max_bypass=100)}
    assert ran[1] == max(ran.values())  # the last to start


def test_placement_refuses_a_trial_larger_than_the_pool() -> None:
    with pytest.raises(ValueError, match="needs 3 GPUs; the pool has 2"):
        Placer(["0", "1"]).submit(0, 3)


def test_placement_plan_of_the_articles_grid_on_eight_gpus_starts_everything_at_once() -> None:
    order = plan_order([1, 2, 1, 2], [str(i) for i in range(8)])
    assert order == [
        (1, 0, ("0",)),
        (1, 1, ("1", "2")),
        (1, 2, ("3",)),
        (1, 3, ("4", "5")),
    ]


def test_placement_plan_in_waves_when_the_cells_outnumber_the_devices() -> None:
    order = plan_order([2, 1, 2, 1, 1], ["0", "1", "2"])
    assert order == [
        (1, 0, ("0", "1")),
        (1, 1, ("2",)),
        (2, 2, ("0", "1")),
        (2, 3, ("2",)),
        (3, 4, ("0",)),
    ]


def test_placement_of_a_retired_device_never_happens_and_names_what_no_longer_fits() -> None:
    placer = Placer(["0", "1", "2"])
    placer.submit(0, 1)
    placer.submit(1, 3)
    assert placer.place() == [(0, ("0",))]
    assert placer.retire("1") == [1]  # three GPUs no longer exist
    placer.release(["0"])
    assert placer.free == ["0", "2"] and placer.devices == ["0", "2"]
