"""The Hydra Sweeper behind ``src.train -m``: Hydra's basic sweeper, or the grid on devices.

Without ``hydra.sweeper.devices`` a grid runs as Hydra's basic sweeper runs it (every
combination, in the order given, one job after another). With devices it becomes the study the
clfsweep Optuna sweeper's device pool places (`GridSettings.study`): each cell on the GPUs its
memory estimate asks for, as they come free. Hydra imports this module at every start-up, so it
stays light.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.clfsweep_optuna_sweeper.optuna_sweeper import (
    ClfsweepOptunaSweeper,
    one_line_errors,
)


class ClfsweepGridSweeper(Sweeper):
    """Every combination of the sweep overrides; with devices, placed on a node's GPUs."""

    def __init__(self, **settings: Any) -> None:
        self._settings = settings
        self._impl: Sweeper | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Build the sweeper that runs this grid: the basic one, or the study on devices."""
        self.config = config
        self.hydra_context = hydra_context
        self._impl = one_line_errors(lambda: grid_sweeper(self._settings, hydra_context, config))
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.launcher = self._impl.launcher

    def sweep(self, arguments: list[str]) -> Any:
        """Run the grid's jobs (on devices: this worker's share of its study)."""
        assert self._impl is not None, "setup() was not called"
        return self._impl.sweep(arguments)


def grid_sweeper(settings: dict[str, Any], context: HydraContext, config: DictConfig) -> Sweeper:
    """Hydra's basic sweeper for a grid without devices, else the clfsweep Optuna sweeper with
    the grid's study (every cell once, in the command's order, none pruned)."""
    from src.config.private_api import BASIC_SWEEPER
    from src.sweep.loop import study_settings
    from src.sweep.settings import GridSettings

    grid = GridSettings.from_kwargs(settings)
    if not grid.devices:
        basic: Sweeper = get_class(BASIC_SWEEPER)(grid.max_batch_size, grid.params)
        return basic
    arguments = OmegaConf.to_container(config.hydra.overrides.task)
    assert isinstance(arguments, list)
    study = study_settings(
        config.hydra.sweeper,
        [str(a) for a in arguments],
        str(config.hydra.sweep.dir),
        context.config_loader,
    )
    return ClfsweepOptunaSweeper.of(study)
