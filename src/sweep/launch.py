"""Launching a batch of trials: one outcome per job, whichever job fails.

hydra-submitit-launcher's ``launch`` waits for its jobs in order and raises at the first one that
left no result (``scancel``, a node failure, the time limit): the sweeper would fail every trial
of the array, finished ones included, and leave the running ones to their jobs. For its two
launchers (``submitit_slurm``, ``submitit_local``) the batch is submitted here the same way, and
every job is waited for and answered on its own, and Ctrl-C cancels the jobs still queued or
running; any other launcher is called as it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf

from src.config.private_api import submitit_cluster

log = logging.getLogger(__name__)

SUBMITIT_LAUNCHERS = "hydra_plugins.hydra_submitit_launcher.submitit_launcher"


class JobLeftNoResult(RuntimeError):
    """A job that ended (cancelled, killed, out of time) without returning."""


def launch(
    launcher: Launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> Sequence[JobReturn]:
    """``launcher.launch``; for hydra-submitit-launcher's launchers, one outcome per job."""
    if type(launcher).__module__ != SUBMITIT_LAUNCHERS:
        return launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
    jobs = _submit(launcher, job_overrides, initial_job_idx)
    try:
        return [_outcome(job, o) for job, o in zip(jobs, job_overrides, strict=True)]
    except BaseException:  # Ctrl-C: jobs left queued or running would outlive their trials
        for job in jobs:
            if not job.done():
                job.cancel(check=False)
        raise


def _submit(
    launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> list[Any]:
    """Submit the batch as one job array, with the settings ``BaseSubmititLauncher.launch`` uses."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cluster, params = submitit_cluster(launcher), dict(launcher.params)
    executor = submitit.AutoExecutor(
        cluster=cluster,
        folder=params.pop("submitit_folder"),
        **{f"{cluster}_max_num_timeout": params.pop("max_num_timeout")}
        if "max_num_timeout" in params
        else {},
    )
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{k if k in shared else f"{cluster}_{k}": v for k, v in params.items()}
    )
    sweep = launcher.config.hydra.sweep
    log.info("Submitit '%s' sweep output dir : %s", cluster, sweep.dir)
    Path(str(sweep.dir)).mkdir(parents=True, exist_ok=True)
    if "mode" in sweep:
        os.chmod(str(sweep.dir), mode=int(str(sweep.mode), 8))
    numbers = [initial_job_idx + i for i in range(len(job_overrides))]
    for idx, overrides in zip(numbers, job_overrides, strict=True):
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
    return list(
        executor.map_array(
            launcher,
            [list(o) for o in job_overrides],
            ["hydra.sweep.dir"] * len(numbers),
            numbers,
            [f"job_id_for_{idx}" for idx in numbers],
            [Singleton.get_state()] * len(numbers),
        )
    )


def _outcome(job: Any, overrides: Sequence[str]) -> JobReturn:
    """The job's own JobReturn, or a FAILED one saying how the job ended without it."""
    from submitit.core.utils import UncompletedJobError

    try:
        result: JobReturn = job.results()[0]
        return result
    except UncompletedJobError as exc:
        reason: BaseException = exc
        if not job.paths.result_pickle.exists():
            reason = JobLeftNoResult(
                f"job {job.job_id} ended {job.state} without a result (its log: {job.paths.stderr})"
            )
        return JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=reason)
