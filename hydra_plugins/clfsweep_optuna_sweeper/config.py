"""Typed config of the clfsweep Optuna sweeper, registered as ``hydra/sweeper=clfsweep_optuna``."""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore


class Direction(Enum):
    maximize = "maximize"
    minimize = "minimize"


class SamplerName(Enum):
    tpe = "tpe"
    random = "random"
    grid = "grid"  # needs choice()/range() params only
    cmaes = "cmaes"  # needs the `cmaes` package
    gp = "gp"
    qmc = "qmc"


class PrunerName(Enum):
    median = "median"
    percentile = "percentile"
    hyperband = "hyperband"
    successive_halving = "successive_halving"
    none = "none"


@dataclass
class SamplerConf:
    """Which Optuna sampler; `kwargs` go to its constructor (e.g. n_startup_trials for tpe)."""

    name: SamplerName = SamplerName.tpe
    seed: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class PrunerConf:
    """Which Optuna pruner; unset (null) settings keep Optuna's defaults."""

    name: PrunerName = PrunerName.median
    n_startup_trials: int | None = None  # median, percentile
    n_warmup_steps: int | None = None  # median, percentile
    interval_steps: int | None = None  # median, percentile
    n_min_trials: int | None = None  # median, percentile
    percentile: float | None = None  # percentile
    min_resource: Any = None  # hyperband, successive_halving: int or "auto"
    max_resource: Any = None  # hyperband: int or "auto"
    reduction_factor: int | None = None  # hyperband, successive_halving
    min_early_stopping_rate: int | None = None  # successive_halving
    bootstrap_count: int | None = None  # hyperband, successive_halving
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClfsweepOptunaSweeperConf:
    """Settings under ``hydra.sweeper``; see the hparams_search presets for examples."""

    _target_: str = "hydra_plugins.clfsweep_optuna_sweeper.optuna_sweeper.ClfsweepOptunaSweeper"
    # Finished (COMPLETE or PRUNED) trials the study must reach; re-running tops it up.
    n_trials: int = 20
    study_name: str = "${hydra.job.name}"
    # Optuna storage URL; null: journal file <study_dir>/journal.log.
    storage: str | None = None
    # Where journal.log, best.yaml and plots go; null: <cwd>/sweeps/<study_name>.
    study_dir: str | None = None
    direction: Direction = Direction.maximize
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    # Stop when failed / (finished + failed) among this worker's trials exceeds this.
    max_failure_rate: float = 0.5
    min_trials_for_failure_rate: int = 3
    # Seconds after which this worker starts no new trial; null: no limit.
    timeout: float | None = None
    # Overrides tried first, each once per study: [{method.rank: 64, trainer.lr: 5e-5}, ...].
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    # Trials asked per launcher call (the basic launcher runs them one after another).
    n_jobs: int = 1
    # Liveness of running trials: seconds between heartbeats, and silence after which a
    # trial of a worker on another host counts as dead (null: 2 x heartbeat_interval).
    heartbeat_interval: int = 60
    grace_period: int | None = None
    # How many times a trial whose worker died is re-queued with the same parameters.
    max_retry: int = 1
    # Write plots (and log them to the sweep's parent MLflow run) when the sweep ends.
    plots: bool = True
    # The search space: key -> Hydra sweep syntax (interval, int(...), tag(log, ...),
    # choice, range, a,b,c) or a fixed value.
    params: dict[str, Any] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="clfsweep_optuna",
    node=ClfsweepOptunaSweeperConf,
    provider="clfsweep_optuna_sweeper",
)
