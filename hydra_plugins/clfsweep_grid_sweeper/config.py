"""The grid sweeper's config, registered as ``hydra/sweeper=clfsweep_grid``.

Its settings and their defaults are defined once, in ``src.sweep.settings.GridSettings``; this
adds only the target Hydra instantiates.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from src.sweep.settings import GridSettings


@dataclass
class ClfsweepGridSweeperConf(GridSettings):
    """Settings under ``hydra.sweeper`` of a grid (``src.train -m a=1,2 b=x,y``)."""

    _target_: str = "hydra_plugins.clfsweep_grid_sweeper.grid_sweeper.ClfsweepGridSweeper"


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="clfsweep_grid",
    node=ClfsweepGridSweeperConf,
    provider="clfsweep_grid_sweeper",
)
