"""The Hydra Sweeper plugin class; the work happens in ``src.sweep`` (imported only when used).

Hydra imports every public module under ``hydra_plugins`` at start-up, so this one stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

if TYPE_CHECKING:
    from src.sweep.settings import SweeperSettings

T = TypeVar("T")


def one_line_errors(fn: Callable[[], T]) -> T:
    """Run `fn`; a user error (bad settings, too many failed trials) exits with one line, and
    the multirun's parent MLflow run (if any) ends FAILED with it instead of staying RUNNING.
    A stop by SIGTERM or Ctrl-C, once the sweep loop has re-queued the running trials, exits
    with one line and 128 + the signal, the parent run KILLED; the same command continues."""
    from src.cli.boundary import report_user_error
    from src.config.errors import UserError

    try:
        return fn()
    except UserError as exc:  # the one boundary every command's mistakes go through
        raise SystemExit(report_user_error(exc)) from None
    except KeyboardInterrupt as exc:
        from src.cli.hydra_commands import exit_stopped

        exit_stopped(exc, study=True)


class ClfsweepOptunaSweeper(Sweeper):
    """Optuna ask/tell sweeper: resumable to exactly n_trials, prunable, parallel workers."""

    def __init__(self, **settings: Any) -> None:
        self._settings = settings
        self._impl: Any = None

    @classmethod
    def of(cls, settings: SweeperSettings) -> ClfsweepOptunaSweeper:
        """The sweeper with these settings (checked again when it is set up)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(settings)})

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Validate the settings and prepare the launcher."""
        from src.sweep.loop import OptunaSweep
        from src.sweep.settings import SweeperSettings

        self.config = config
        self.hydra_context = hydra_context
        self._impl = one_line_errors(
            lambda: OptunaSweep(SweeperSettings.from_kwargs(self._settings))
        )
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.launcher = self._impl.launcher

    def sweep(self, arguments: list[str]) -> Any:
        """Run this worker's share of the study; returns the best trial so far (or None)."""
        assert self._impl is not None, "setup() was not called"
        return one_line_errors(lambda: self._impl.sweep(arguments))
