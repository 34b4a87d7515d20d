"""The commands as a user meets them first: help, printing the config, the installed commands,
Hydra's shell completion through a real bash."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from src.cli.hydra_commands import RedactingStream
from tests.conftest import ROOT, run_module

BIN = Path(sys.executable).parent
COMMANDS = ("clfsweep", "clfsweep-predict", "clfsweep-report", "clfsweep-summary")


def test_help_lists_only_choices_a_user_can_pick() -> None:
    done = run_module("src.train", "--help")
    assert done.returncode == 0, done.stderr
    groups = done.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert "model: " in groups and "tiny_qwen2" in groups and "method: " in groups
    assert "_schema" not in done.stdout


def test_help_is_hydras_own_help_from_one_copy_of_the_config_repository() -> None:
    ours = run_module("src.train", "--help")
    unwrapped = (
        "import sys; sys.argv[1:] = ['--help']; from src.train import main; main.__wrapped__()"
    )
    hydras = subprocess.run(
        [sys.executable, "-c", unwrapped], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert hydras.returncode == 0, hydras.stderr
    assert ours.stdout == hydras.stdout


def test_the_resolved_config_prints_before_any_job_has_a_folder() -> None:
    done = run_module("src.train", "--cfg", "job", "--resolve")
    assert done.returncode == 0, done.stderr
    cfg = yaml.safe_load(done.stdout)
    assert cfg["output_dir"] is None  # Hydra gives a job its folder when the job runs
    assert cfg["tracking"]["dir"].endswith("/mlruns") and "${" not in done.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_the_commands_are_installed(name: str) -> None:
    assert shutil.which(name, path=str(BIN)), f"{name}: run `make setup` (pip install -e .)"


def test_clfsweep_is_python_m_src_train(tmp_path: Path) -> None:
    """From any folder: the installed command finds the project's config tree."""
    as_module = run_module("src.train", "--cfg", "job", "model=tiny_bert")
    installed = subprocess.run(
        [str(BIN / "clfsweep"), "--cfg", "job", "model=tiny_bert"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr
    drop = ("dir:", "cache_dir:")  # paths from the working directory differ, nothing else
    lines = [line for line in installed.stdout.splitlines() if not line.strip().startswith(drop)]
    expected = [line for line in as_module.stdout.splitlines() if not line.strip().startswith(drop)]
    assert lines == expected


def complete(line: str) -> list[str]:
    """What bash offers at the end of `line` once `clfsweep -sc install=bash` is installed."""
    script = (
        'eval "$(clfsweep -sc install=bash)"\n'
        f'COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}\n'
        'read -a COMP_WORDS <<< "$COMP_LINE"; COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n'
        'hydra_bash_completion; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(Path.home())},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completion_offers_groups_and_their_options() -> None:
    assert "model=" in complete("clfsweep mod")
    assert complete("clfsweep model=tiny") == [
        "model=tiny_bert",
        "model=tiny_llama",
        "model=tiny_qwen2",
    ]
    methods = complete("clfsweep method=")
    assert "method=lora" in methods and not [m for m in methods if "schema" in m]


def test_the_redacted_console_answers_as_the_real_stream_and_hides_passwords() -> None:
    """isatty, fileno, encoding, ... are the real terminal's (tqdm draws its bar on a
    terminal only); what is written still loses its password."""
    master, terminal = pty.openpty()
    with open(terminal, "w", encoding="utf-8") as real:
        console = RedactingStream(real)
        assert console.isatty() and console.fileno() == real.fileno()
        assert (console.encoding, console.errors, console.buffer, console.line_buffering) == (
            real.encoding,
            real.errors,
            real.buffer,
            real.line_buffering,
        )
        console.write("tracking.uri=postgresql://clf:hunter2@db/runs\n")
        console.flush()
        shown = os.read(master, 1024)
    os.close(master)
    assert b"postgresql://clf:***@db/runs" in shown and b"hunter2" not in shown
