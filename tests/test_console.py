"""Specification of src.tracking.console: what a run prints, and what it keeps out."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from src.tracking.console import ConsoleFormatter, StepProgress, epoch_line
from src.training.trainer import epoch_loss
from tests.conftest import QUICK, Store, run_module

# What a run printed before: the Trainer's raw dicts, library progress bars and warnings.
NOISE = (
    "{'loss'",
    "{'eval_loss'",
    "'train_runtime'",
    "Loading weights",
    "Writing model shards",
    "Downloading artifacts",
    "Any type hint",
    "is_gradient_checkpointing",
    "Creating initial MLflow database tables",
    "Updating database tables",
    "LOAD REPORT",
    "new PAD/BOS/EOS tokens",
    "mtime may not be reliable",
    "Warning",
    "Traceback",
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, str]:
    """A two-epoch run; its combined stdout and stderr."""
    store = Store(tmp_path_factory.mktemp("console"))
    proc = run_module("src.train", *QUICK, *store.overrides())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return store, proc.stdout + proc.stderr


def test_a_run_prints_none_of_the_libraries_noise(quick_run: tuple[Store, str]) -> None:
    _, output = quick_run
    assert [noise for noise in NOISE if noise in output] == []


def test_a_run_prints_one_line_per_epoch_and_its_result_table(
    quick_run: tuple[Store, str],
) -> None:
    store, output = quick_run
    epochs = [line for line in output.splitlines() if " epoch " in f" {line}"]
    assert len(epochs) == 2, output
    assert "epoch 1/2  train loss " in epochs[0] and "epoch 2/2  train loss " in epochs[1]
    assert all("eval_macro_f1 " in line and "accuracy " in line for line in epochs)
    (run,) = store.runs()
    assert run.info.run_id in output and "macro F1" in output
    assert f"{run.data.metrics['test_macro_f1']:.4f}" in output
    assert len(output.splitlines()) <= 16, output  # before: 36 lines for this run


def test_every_log_line_also_lands_in_the_runs_log_file(quick_run: tuple[Store, str]) -> None:
    store, output = quick_run
    (log_file,) = (store.root / "outputs").glob("*.log")
    logged = log_file.read_text()
    for line in output.splitlines():
        if " epoch " in f" {line}" or "trainable parameters" in line:
            assert line.split(" ", 1)[1] in logged  # the console drops the date and logger


def test_epoch_loss_is_the_step_weighted_mean_of_the_epochs_loss_logs() -> None:
    history = [
        {"loss": 0.9, "step": 2},
        {"loss": 0.7, "step": 3},  # the Trainer's log at the end of epoch 1 (3 steps)
        {"eval_loss": 0.8, "step": 3},
        {"loss": 0.5, "step": 6},
    ]
    assert epoch_loss(history, 3) == pytest.approx((0.9 * 2 + 0.7) / 3)
    assert epoch_loss(history, 6) == pytest.approx(0.5)
    assert epoch_loss([{"eval_loss": 0.8, "step": 3}], 3) is None


def test_epoch_line_names_the_optimized_metric_and_accuracy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook = epoch_line("eval_macro_f1", epochs=3)
    with caplog.at_level(logging.INFO, logger="clfsweep"):
        hook(2, {"train_loss": 0.69123, "eval_macro_f1": 0.5, "eval_accuracy": 0.75})
    (message,) = caplog.messages
    assert message.startswith("epoch 2/3  train loss 0.6912  eval_macro_f1 0.5000  accuracy")


def test_without_a_terminal_progress_is_a_line_every_tenth_of_the_steps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="clfsweep"):
        progress = StepProgress(total=200, terminal=False)
        for step in range(1, 201):
            progress.update(step)
        progress.close()
    assert len(caplog.messages) == 10
    assert caplog.messages[0].startswith("step 20/200 (10%)")
    assert caplog.messages[-1].startswith("step 200/200 (100%)")


def test_the_console_names_the_level_of_warnings_only() -> None:
    formatter = ConsoleFormatter()

    def line(level: int) -> str:
        return formatter.format(logging.LogRecord("x", level, __file__, 1, "hello", None, None))

    assert line(logging.INFO).endswith(" hello") and "INFO" not in line(logging.INFO)
    assert line(logging.WARNING).endswith(" WARNING: hello")


def in_terminal(argv: list[str], columns: int = 120, rows: int = 40) -> tuple[int, str]:
    """Run `argv` from the repository root in a pseudo-terminal of that size (a new one has 0
    columns, where tqdm draws nothing but `\\r`): its exit status and what it showed."""
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    proc = subprocess.Popen(
        argv,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "TERM": "xterm"},
    )
    os.close(terminal)
    shown = b""
    with contextlib.suppress(OSError):  # EIO: the child closed the terminal
        while chunk := os.read(master, 4096):
            shown += chunk
    os.close(master)
    return proc.wait(), shown.decode(errors="replace")


def test_a_terminal_gets_one_progress_bar_instead_of_lines() -> None:
    """On a pseudo-terminal of 100 columns, the steps show as one tqdm bar, cleared at the end."""
    code = (
        "import time\n"
        "from src.tracking.console import StepProgress\n"
        "p = StepProgress(total=5)\n"
        "for s in range(1, 6):\n"
        "    time.sleep(0.15)  # past tqdm's minimum refresh interval\n"
        "    p.update(s)\n"
        "p.close()\n"
    )
    status, text = in_terminal([sys.executable, "-c", code], columns=100)
    assert status == 0
    assert "training: 100%" in text and "5/5 [" in text
    assert "step 1/5" not in text


def test_a_training_run_in_a_terminal_shows_the_bar_and_no_password(tmp_path: Path) -> None:
    """`python -m src.train` as a person sees it: the bar over the steps (not the log file's
    step lines), while what it prints still hides a password."""
    store = Store(tmp_path)
    secret = "postgresql://clf:hunter2@db.example/runs"
    status, text = in_terminal(
        [
            sys.executable,
            "-m",
            "src.train",
            *QUICK,
            f"tracking.run_name={secret}",
            *store.overrides(),
        ]
    )
    assert status == 0, text[-3000:]
    assert re.search(r"training: +\d+%\|", text), text[-3000:]
    assert "step 1/" not in text  # the log file's progress lines stay in the log file
    assert "clf:***@db.example" in text and "hunter2" not in text
