"""The clfsweep Optuna sweeper's config, registered as ``hydra/sweeper=clfsweep_optuna``.

Every setting and its default is defined once, in ``src.sweep.settings``; this adds only the
target Hydra instantiates.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from src.sweep.settings import SweeperSettings


@dataclass
class ClfsweepOptunaSweeperConf(SweeperSettings):
    """Settings under ``hydra.sweeper``; see the hparams_search presets for examples."""

    _target_: str = "hydra_plugins.clfsweep_optuna_sweeper.optuna_sweeper.ClfsweepOptunaSweeper"


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="clfsweep_optuna",
    node=ClfsweepOptunaSweeperConf,
    provider="clfsweep_optuna_sweeper",
)
