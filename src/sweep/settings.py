"""The sweeper's settings (``hydra.sweeper``): one typed definition with its defaults.

The Hydra plugin shell registers these dataclasses as ``hydra/sweeper=clfsweep_optuna`` (so a
typo fails at compose time); the sweep loop reads the same dataclasses back, checked here. Hydra
imports the shell at every start-up, so this module imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from omegaconf import OmegaConf

from src.config.errors import UserError

T = TypeVar("T")
OPTUNA_SWEEPER = "ClfsweepOptunaSweeper"  # the classes the two sweepers' `_target_` names
GRID_SWEEPER = "ClfsweepGridSweeper"
GRID_STUDY = "grid"  # the study of a grid placed on devices, in the multirun's own folder


def typed(cls: type[T], kwargs: Mapping[str, Any]) -> T:
    """The dataclass `cls` from the keyword arguments Hydra instantiated a sweeper with (a
    value of the wrong type is OmegaConf's one-line error)."""
    plain = {
        k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k, v in kwargs.items()
    }
    settings = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), plain))
    assert isinstance(settings, cls)
    return settings


def runs_a_study(sweeper: Mapping[str, Any]) -> bool:
    """Whether the jobs of a multirun with these `hydra.sweeper` settings are trials of an Optuna
    study: with the clfsweep Optuna sweeper, and with a grid placed on devices."""
    target = str(sweeper.get("_target_", ""))
    return target.endswith(OPTUNA_SWEEPER) or (
        target.endswith(GRID_SWEEPER) and bool(sweeper.get("devices"))
    )


class Direction(Enum):
    maximize = "maximize"
    minimize = "minimize"


class SamplerName(Enum):
    tpe = "tpe"  # single- and multi-objective
    nsgaii = "nsgaii"  # multi-objective (NSGA-II)
    random = "random"
    grid = "grid"  # needs choice()/range() params only
    cmaes = "cmaes"  # single-objective; needs the `cmaes` package
    gp = "gp"
    qmc = "qmc"


SINGLE_OBJECTIVE_SAMPLERS = (SamplerName.cmaes,)


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

    def spec(self) -> dict[str, Any]:
        """The settings that are set, as plain values (what jobs rebuild the pruner from)."""
        spec: dict[str, Any] = {"name": self.name.value}
        for key, value in vars(self).items():
            if key != "name" and value not in (None, {}):
                spec[key] = value
        return spec


@dataclass
class SweeperSettings:
    """Settings under ``hydra.sweeper``; see the hparams_search presets for examples."""

    # Finished (COMPLETE or PRUNED) trials the study must reach; re-running tops it up.
    n_trials: int = 20
    study_name: str = "${hydra.job.name}"
    # Optuna storage URL; null: journal file <study_dir>/journal.log.
    storage: str | None = None
    # Where journal.log, best.yaml and plots go; null: <cwd>/sweeps/<study_name>.
    study_dir: str | None = None
    # maximize | minimize, or one per objective for a multi-objective study: [maximize, minimize]
    # (the job then returns one value per objective, e.g. optimized_metric: [eval_macro_f1,
    # trainable_params]).
    direction: Any = Direction.maximize
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    # Stop when failed / (finished + failed) among this worker's trials exceeds this; 1.0: never.
    max_failure_rate: float = 0.5
    min_trials_for_failure_rate: int = 3
    # Seconds after which this worker starts no new trial; null: no limit.
    timeout: float | None = None
    # Overrides tried first, each once per study: [{method.rank: 64, trainer.lr: 5e-5}, ...].
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    # Trials asked per launcher call (the basic launcher runs them one after another).
    n_jobs: int = 1
    # One worker process per device group of this node, each trial pinned to its group through
    # CUDA_VISIBLE_DEVICES: [0,1,2,3] (nvidia-smi's indices, or GPU UUIDs); []: trials run in
    # this process on whatever it sees. A worker that dies is replaced; Ctrl-C stops them all.
    devices: list[str] = field(default_factory=list)
    # GPUs each trial gets; null: each trial's own, from the memory estimate of its config (the
    # fewest on which it fits, sharded with FSDP when above one), placed on free devices as they
    # fit (src/sweep/placement.py). A number: every trial that many, in fixed groups ([0,1],
    # [2,3], ...). Trials on 2+ GPUs run with torchrun's engine.
    gpus_per_trial: int | None = None
    # Memory of one device in GiB, for the estimate behind gpus_per_trial=null; null: the
    # visible GPU's (without a GPU and without this, every trial gets one device).
    gpu_memory_gib: float | None = None
    # Liveness of running trials: seconds between heartbeats, and silence after which a
    # trial of a worker on another host counts as dead (null: 2 x heartbeat_interval).
    heartbeat_interval: int = 60
    grace_period: int | None = None
    # How many times a trial whose worker died is re-queued with the same parameters.
    max_retry: int = 1
    # Write plots (and log them to the sweep's parent MLflow run) when the sweep ends.
    plots: bool = True
    # Register the best trial's model in the MLflow Model Registry under the study's name with
    # the alias `champion`, moved when a better trial finishes (needs src.train's parent run).
    register_model: bool = True
    # The search space: key -> Hydra sweep syntax (interval, int(...), tag(log, ...),
    # choice, range, a,b,c) or a fixed value.
    params: dict[str, Any] | None = None
    # A function `module.name(cfg, trial)` suggesting more parameters with Optuna's trial once
    # `params` are sampled, e.g. conditional ones: src.sweep.custom_space.method_levers.
    custom_search_space: str | None = None

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> SweeperSettings:
        """The checked settings from the keyword arguments Hydra instantiated the sweeper with."""
        settings = typed(cls, kwargs)
        settings.check()
        return settings

    @property
    def directions(self) -> list[str]:
        """One direction per objective, as Optuna names them."""
        given = self.direction if isinstance(self.direction, list | tuple) else [self.direction]
        return [str(getattr(d, "value", d)).lower() for d in given]

    def check(self) -> None:
        """One clear line for each value that cannot work."""
        if self.n_trials < 1:
            raise UserError(f"hydra.sweeper.n_trials={self.n_trials} must be at least 1")
        if self.n_jobs < 1:
            raise UserError(f"hydra.sweeper.n_jobs={self.n_jobs} must be at least 1")
        if not 0 <= self.max_failure_rate <= 1:
            raise UserError(
                f"hydra.sweeper.max_failure_rate={self.max_failure_rate} must be in [0, 1] "
                "(1.0: never stop on failures)"
            )
        names = [d.value for d in Direction]
        if not self.directions or any(d not in names for d in self.directions):
            raise UserError(
                f"hydra.sweeper.direction={self.direction}: maximize, minimize, or a list of "
                "them, one per objective"
            )
        if len(self.directions) > 1 and self.sampler.name in SINGLE_OBJECTIVE_SAMPLERS:
            raise UserError(
                f"sampler {self.sampler.name.value} optimises one objective; with "
                f"{len(self.directions)} directions use tpe, nsgaii, random, gp, qmc or grid"
            )
        if self.custom_search_space is not None and "." not in self.custom_search_space:
            raise UserError(
                f"hydra.sweeper.custom_search_space={self.custom_search_space}: give the "
                "function as module.name, e.g. src.sweep.custom_space.method_levers"
            )
        if self.custom_search_space and self.sampler.name == SamplerName.grid:
            raise UserError(
                "sampler grid needs every parameter up front: it cannot be combined with "
                "hydra.sweeper.custom_search_space"
            )
        if not self.study_name or "/" in self.study_name:
            raise UserError(f"hydra.sweeper.study_name={self.study_name!r}: a name without '/'")
        if self.heartbeat_interval < 0 or (self.grace_period or 1) <= 0:
            raise UserError("hydra.sweeper.heartbeat_interval/grace_period must be positive")
        self._check_devices()

    def _check_devices(self) -> None:
        """Devices that split into whole trials, each trial on its own GPUs."""
        devices, per_trial = self.devices, self.gpus_per_trial or 1
        if self.gpus_per_trial is not None and self.gpus_per_trial < 1:
            raise UserError(f"hydra.sweeper.gpus_per_trial={self.gpus_per_trial} must be >= 1")
        if self.gpu_memory_gib is not None and self.gpu_memory_gib <= 0:
            raise UserError(f"hydra.sweeper.gpu_memory_gib={self.gpu_memory_gib} must be > 0")
        bad = [d for d in devices if not d.strip() or "," in d]
        if bad:
            raise UserError(
                f"hydra.sweeper.devices={devices}: {bad[0]!r} is not a device id; list one id "
                "per entry, e.g. devices=[0,1,2,3]"
            )
        if len(set(devices)) != len(devices):
            raise UserError(f"hydra.sweeper.devices={devices} lists a device twice")
        if per_trial > 1 and not devices:
            raise UserError(
                f"hydra.sweeper.gpus_per_trial={per_trial} needs the devices to split: set "
                "hydra.sweeper.devices, e.g. [0,1,2,3]"
            )
        if len(devices) % per_trial:
            raise UserError(
                f"hydra.sweeper.devices={devices} do not split into trials of "
                f"gpus_per_trial={per_trial} GPUs: {len(devices) % per_trial} would stay idle"
            )
        if devices and self.n_jobs > 1:
            raise UserError(
                f"hydra.sweeper.n_jobs={self.n_jobs} with devices: each device group runs one "
                "trial at a time; leave n_jobs at 1"
            )


@dataclass
class GridSettings:
    """Settings under ``hydra.sweeper`` of the default sweeper of ``src.train -m`` (Hydra's
    basic sweeper's two, and the devices of a node to place the grid on)."""

    # Jobs per launcher call; null: all of them (Hydra's basic sweeper).
    max_batch_size: int | None = None
    # Axes of the grid, as on the command line (which wins): {trainer.lr: "1e-4,3e-4"}.
    params: dict[str, str] | None = None
    # The node's GPUs, as for hydra/sweeper=clfsweep_optuna: each cell runs on the GPUs its
    # memory estimate asks for, placed on free ones as they fit; []: one job after another here.
    devices: list[str] = field(default_factory=list)
    gpus_per_trial: int | None = None  # null: each cell's own, from its memory estimate
    gpu_memory_gib: float | None = None  # null: the visible GPU's

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> GridSettings:
        """The checked settings from the keyword arguments Hydra instantiated the sweeper with."""
        settings = typed(cls, kwargs)
        if settings.max_batch_size is not None and settings.max_batch_size < 1:
            raise UserError(
                f"hydra.sweeper.max_batch_size={settings.max_batch_size} must be at least 1 "
                "(null: every job in one batch)"
            )
        if not settings.devices:
            moot = [k for k in ("gpus_per_trial", "gpu_memory_gib") if getattr(settings, k)]
            if moot:
                raise UserError(
                    f"hydra.sweeper.{moot[0]} places the grid on devices: set "
                    "hydra.sweeper.devices too, e.g. '[0,1,2,3]'"
                )
        settings.study(1, "unused").check()
        return settings

    def study(self, cells: int, sweep_dir: str) -> SweeperSettings:
        """The grid as the study the device pool places: each of its `cells` once, in the order
        the command lists them, none pruned; its journal in the multirun's folder (`sweep_dir`),
        so a grid never resumes another and the same `hydra.sweep.dir` resumes this one."""
        return SweeperSettings(
            n_trials=cells,
            study_name=GRID_STUDY,
            study_dir=f"{sweep_dir}/study",
            sampler=SamplerConf(name=SamplerName.grid),
            pruner=PrunerConf(name=PrunerName.none),
            devices=list(self.devices),
            gpus_per_trial=self.gpus_per_trial,
            gpu_memory_gib=self.gpu_memory_gib,
            params=dict(self.params) if self.params else None,
            plots=False,
            register_model=False,
        )
