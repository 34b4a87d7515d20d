"""The one error boundary of every command: a user's mistake is one `error:` line on stderr,
exit status 2, and a multirun's parent MLflow run ended FAILED with it (never left RUNNING).
Hydra commands reach it through `src.cli.hydra_commands.job_boundary`."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from typing import NoReturn, ParamSpec

from src.config.errors import UserError
from src.tracking.names import DEVICE_WORKER_ENV, PARENT_ENV

P = ParamSpec("P")


def report_user_error(exc: UserError) -> int:
    """The one way a user's mistake ends a command: its line on stderr, a multirun's parent
    MLflow run ended FAILED with it (never left RUNNING), and exit status 2 to return."""
    print(f"error: {exc}", file=sys.stderr)
    # MLflow loads only then; a device pool's worker leaves the parent run to its supervisor.
    if os.environ.get(PARENT_ENV) and DEVICE_WORKER_ENV not in os.environ:
        from src.tracking.record import end_parent_run

        end_parent_run(f"the multirun stopped: {exc}")
    return 2


def command(main: Callable[P, int]) -> Callable[P, int]:
    """The error boundary of a command that reads its own arguments (`src.predict`,
    `src.report`, `src.summary`): a UserError anywhere in it is one line and exit status 2."""

    @functools.wraps(main)
    def run(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            return report_user_error(exc)

    return run


class ArgumentParser(argparse.ArgumentParser):
    """argparse for our commands: a bad argument is a UserError, so the command's boundary
    prints it as its one line (argparse's own is a usage block and a second line)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")
