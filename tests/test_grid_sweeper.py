"""The sweeper of `src.train -m` (hydra/sweeper=clfsweep_grid): Hydra's basic sweeper for a grid,
and the same grid placed on a node's devices when `hydra.sweeper.devices` names them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from src.sweep.storage import open_storage
from src.tracking.names import FAIL_REASON_ATTR
from tests.conftest import one_error_line
from tests.test_sweeper_e2e import APP, run

GRID = ["x=0,1,2", "cat=b,a"]  # x slowest, cat in the order given: b before a
IN_ORDER = [(x, cat) for x in (0, 1, 2) for cat in ("b", "a")]


def grid_command(*overrides: str) -> list[str]:
    """A multirun of the sweeper-test app with src.train's default sweeper."""
    return [sys.executable, str(APP), "--config-name=grid", "-m", *overrides]


def calls(path: Path) -> list[tuple[int, str]]:
    """The (x, cat) of each job, in the order they ran (`calls_file`)."""
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(int(row[1].removeprefix("x=")), row[3].removeprefix("cat=")) for row in rows]


def grid_trials(cwd: Path) -> list[optuna.trial.FrozenTrial]:
    """The trials of the study a grid on devices keeps in its multirun folder."""
    storage = open_storage(str(cwd / "sweeps" / "grid" / "study" / "journal.log"))
    return optuna.load_study(study_name="grid", storage=storage).trials


def test_a_grid_without_devices_is_hydras_basic_sweeper(tmp_path: Path) -> None:
    """Every combination once, in the command's order, one after another: no study."""
    done = run(tmp_path, grid_command(*GRID, f"calls_file={tmp_path / 'calls.log'}"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert calls(tmp_path / "calls.log") == IN_ORDER
    assert not (tmp_path / "sweeps" / "grid" / "study").exists()


def test_a_grid_on_devices_runs_each_cell_once_in_the_commands_order_on_every_device(
    tmp_path: Path,
) -> None:
    record = tmp_path / "devices.jsonl"
    done = run(
        tmp_path,
        grid_command(*GRID, "hydra.sweeper.devices=[0,1]", f"devices_file={record}"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trials = sorted(grid_trials(tmp_path), key=lambda t: t.number)
    assert [(t.params["x"], t.params["cat"]) for t in trials] == IN_ORDER
    assert all(t.state == TrialState.COMPLETE for t in trials)
    ran = [json.loads(line) for line in record.read_text().splitlines()]
    assert {r["devices"] for r in ran} == {"0", "1"}  # each placed on a device of its own


def test_a_grid_on_devices_with_failed_cells_fails_and_the_same_folder_runs_only_those(
    tmp_path: Path,
) -> None:
    """A cell that failed is named in one line (exit 2), never a success with rows missing;
    the same command in the same folder runs the failed cells alone, once each."""
    log = tmp_path / "calls.log"
    folder = f"hydra.sweep.dir={tmp_path / 'sweeps' / 'grid'}"
    devices = "hydra.sweeper.devices=[0,1]"
    first = run(
        tmp_path, grid_command(*GRID, devices, folder, f"calls_file={log}", "fail_if_x_above=1.5")
    )
    assert first.returncode == 2
    line = one_error_line(first.stderr)
    assert "2 of 6 cells did not finish, e.g. x=2 cat=b (ValueError: x=2 is above 1.5)" in line
    assert f"re-run the same command with hydra.sweep.dir='{tmp_path / 'sweeps' / 'grid'}'" in line
    assert sorted(calls(log)) == sorted(IN_ORDER)  # no cell retried within the run

    log.unlink()
    second = run(tmp_path, grid_command(*GRID, devices, folder, f"calls_file={log}"))
    assert second.returncode == 0, second.stderr[-3000:]
    assert calls(log) == [(2, "b"), (2, "a")]
    trials = grid_trials(tmp_path)
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted((t.params["x"], t.params["cat"]) for t in finished) == sorted(IN_ORDER)
    failed = [t for t in trials if t.state == TrialState.FAIL]  # kept, with their reasons
    assert [t.user_attrs[FAIL_REASON_ATTR] for t in failed] == ["ValueError: x=2 is above 1.5"] * 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["hydra.sweeper.gpus_per_trial=2"], "hydra.sweeper.gpus_per_trial places the grid on"),
        (["hydra.sweeper.gpu_memory_gib=40"], "set hydra.sweeper.devices too"),
        (["hydra.sweeper.max_batch_size=0"], "max_batch_size=0 must be at least 1"),
        (["hydra.sweeper.devices=[0,0]"], "lists a device twice"),
        (["hydra.sweeper.devices=[0,1,2]", "hydra.sweeper.gpus_per_trial=2"], "would stay idle"),
        (["hydra.sweeper.devices=[0,1]", "x=interval(0,1)"], "use choice(...) or range(...)"),
    ],
)
def test_grid_settings_that_cannot_work_stop_with_one_line_before_anything_exists(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    done = run(tmp_path, grid_command(*GRID, *overrides))
    assert done.returncode == 2
    assert message in one_error_line(done.stderr)
    assert not list(tmp_path.rglob("journal.log"))  # no study
    assert not (tmp_path / "sweeps").exists()  # no job folder


def test_an_optuna_setting_given_to_a_grid_fails_at_compose_time(tmp_path: Path) -> None:
    """The grid's settings are a schema: an Optuna sweeper's key is Hydra's error, naming it."""
    done = run(tmp_path, grid_command(*GRID, "hydra.sweeper.n_trials=3"))
    assert done.returncode == 1
    assert "Key 'n_trials' not in 'ClfsweepGridSweeperConf'" in done.stderr
