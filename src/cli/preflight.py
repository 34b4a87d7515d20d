"""Before a multirun's first job, folder or MLflow parent run: the work it would do is there.
(And before a single run's folder: its config's keys are the schema's.)

A Hydra callback (conf/hydra/default.yaml, the first one), for every Hydra command: the base
config's keys are the schema's, a grid has at least one job (Hydra's basic sweeper launches 0
jobs for `trainer.epochs=range(1,1)` and reports success) and every one of its jobs holds values
its command accepts, and the settings of a study (the
clfsweep Optuna sweeper's, a grid's on devices) are built into the objects the sweep will use
(`src.sweep.loop.check_sweep`), so a setting Optuna refuses is one line while nothing exists yet.
"""

from __future__ import annotations

import os
from typing import Any, cast

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.cli.boundary import report_user_error
from src.cli.config_checks import VALUE_CHECKS
from src.cli.hydra_commands import check_keys, check_typed_texts
from src.config import register_resolvers
from src.config.errors import UserError
from src.model.multirun_weights import job_overrides
from src.sweep.search_space import grid_jobs
from src.sweep.settings import GRID_SWEEPER, OPTUNA_SWEEPER, GridSettings, runs_a_study
from src.tracking.names import DEVICE_WORKER_ENV


class MultirunChecks(Callback):
    """Stops a multirun with one line before anything exists when it would do nothing, or
    could not do what it says; and a single run whose config has a key no code reads, before
    Hydra makes its folder."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_keys(config)
            overrides = cast(list[str], OmegaConf.to_container(config.hydra.overrides.task))
            check_typed_texts(config, overrides)
        except UserError as exc:
            raise SystemExit(report_user_error(exc)) from None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        register_resolvers()  # its jobs' folder names use them
        if DEVICE_WORKER_ENV in os.environ:
            return  # a device pool's worker: its supervisor checked the same settings
        try:
            arguments = cast(list[str], OmegaConf.to_container(config.hydra.overrides.task))
            check_typed_texts(config, arguments)
            if runs_a_study(config.hydra.sweeper):
                check_optuna_sweep(config, arguments)
            else:
                check_grid(config, arguments)
            check_first_job(config, kwargs.get("config_name"))
            check_grid_jobs(config, kwargs.get("config_name"), arguments)
        except UserError as exc:
            # Hydra turns a callback's exception into a warning and goes on with the jobs.
            raise SystemExit(report_user_error(exc)) from None


def check_grid(config: DictConfig, arguments: list[str]) -> None:
    """The grid sweeper's settings are its schema's and can work, and every swept key of a grid
    (`hydra.sweeper.params`, then the command line, which wins) gives at least one value: an
    empty one makes the grid zero jobs."""
    sweeper = OmegaConf.to_container(config.hydra.sweeper, resolve=True)
    assert isinstance(sweeper, dict)
    if str(sweeper.pop("_target_", "")).endswith(GRID_SWEEPER):
        GridSettings.from_kwargs({str(key): value for key, value in sweeper.items()})
    params = config.hydra.sweeper.get("params") or {}
    lines = [f"{key}={value}" for key, value in params.items()] + arguments
    axes = {}
    for override in OverridesParser.create().parse_overrides(lines):
        axes[override.get_key_element()] = override
    for override in axes.values():
        if override.is_discrete_sweep() and not list(override.sweep_string_iterator()):
            raise UserError(
                f"{override.input_line} gives no values, so the multirun would launch 0 jobs "
                "and report success: give at least one (range(a,b) stops before b, e.g. "
                "range(1,4) is 1, 2, 3)"
            )


def check_first_job(config: DictConfig, config_name: str | None) -> None:
    """The keys of the first job's config (its sweeps at their first values, so a `+key=a,b`
    sweep is seen too) are the schema's; its interpolations resolve per job, once Hydra sets
    them (src.cli.hydra_commands.job_boundary)."""
    check_keys(config)
    first = job_overrides(config)[0]
    if first:
        check_keys(compose(config_name, overrides=first))


def check_grid_jobs(config: DictConfig, config_name: str | None, arguments: list[str]) -> None:
    """The values of every job of a grid (Hydra's basic sweeper's, or a grid's on devices), each
    checked on its composed config as the job will check it: a bad value in the fifth cell stops
    the grid before its parent run exists, not after four cells trained. An Optuna study's
    trials are sampled, not listed: each is checked when it runs."""
    values = VALUE_CHECKS.get(str(config_name))
    if values is None or str(config.hydra.sweeper.get("_target_", "")).endswith(OPTUNA_SWEEPER):
        return
    params = config.hydra.sweeper.get("params") or {}
    lines = [f"{key}={value}" for key, value in params.items()] + arguments
    jobs = grid_jobs(lines) or []
    swept = [i for i in range(len(jobs[0]) if jobs else 0) if len({job[i] for job in jobs}) > 1]
    for number, overrides in enumerate(jobs):
        try:
            job = compose(config_name, overrides=overrides)
            check_typed_texts(job, lines)  # as typed: the jobs get Hydra's reading of a sweep
            values(job)
        except UserError as exc:
            cell = " ".join(overrides[i] for i in swept) or "its one job"
            raise UserError(f"job {number} of the grid ({cell}): {exc}") from None


def check_optuna_sweep(config: DictConfig, arguments: list[str]) -> None:
    """The settings, search space, sampler, pruner and storage places of the study the multirun
    runs (the clfsweep Optuna sweeper's, or a grid's on devices), checked by building them as
    the sweep will."""
    from src.sweep.loop import check_sweep, study_settings

    loader = GlobalHydra.instance().config_loader()
    sweeper = OmegaConf.to_container(config.hydra.sweeper, resolve=True)
    assert isinstance(sweeper, dict)
    given = {str(key): value for key, value in sweeper.items()}
    settings = study_settings(given, arguments, str(config.hydra.sweep.dir), loader)
    check_sweep(settings, config, arguments, loader)
