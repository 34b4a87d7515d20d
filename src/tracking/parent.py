"""Hydra callbacks: a multirun (grid or Optuna sweep) is one MLflow parent run over its jobs."""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.analysis.summary import children
from src.config.schema import TrackingConfig
from src.errors import UserError
from src.tracking.console import print_runs, quiet_libraries
from src.tracking.names import DEVICE_WORKER_ENV, OVERRIDES_TAG, PARENT_ENV, SWEEP_TAG
from src.tracking.uris import redact_values, tracking_uri

if TYPE_CHECKING:  # Hydra instantiates callbacks for every command: MLflow loads when used
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


class MlflowParentRun(Callback):
    """Opens the parent run before the first job and exports its id for the jobs and sweeper."""

    def __init__(self) -> None:
        self.run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        quiet_libraries()
        if DEVICE_WORKER_ENV in os.environ:
            return  # a device pool's worker: its supervisor owns the parent run ($PARENT_ENV)
        # Hydra turns a callback's exception into a warning and runs every job without a parent:
        # stop the multirun here instead, with one line, before any job.
        try:
            self._start(config)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, UserError) else _one_line(exc)
            print(
                f"error: the multirun's parent MLflow run could not start ({reason}); fix the "
                "overrides or the tracking settings: no job was run",
                file=sys.stderr,
            )
            if self.run_id is not None:
                from mlflow import MlflowClient
                from mlflow.entities import RunStatus

                MlflowClient().set_terminated(self.run_id, RunStatus.to_string(RunStatus.FAILED))
            raise SystemExit(2) from None

    def _start(self, config: DictConfig) -> None:
        """Open (or rejoin) the parent run and export its id."""
        from mlflow import MlflowClient

        from src.tracking import record

        # Hydra sets HydraConfig only per job; `${hydra:...}` in the tracking config needs it now.
        HydraConfig.instance().set_config(config)
        OmegaConf.to_container(config.tracking, resolve=True)  # fail before touching the store
        tracking_cfg: TrackingConfig = config.tracking
        experiment_id = record.setup(tracking_cfg)
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri(tracking_cfg)
        client = MlflowClient()
        name = sweep_name(config)
        study = config.hydra.sweeper.get("study_name")
        self.run_id = find_open_parent(client, experiment_id, name) if study else None
        if self.run_id is None:
            run = client.create_run(
                experiment_id,
                run_name=name,
                tags=redact_values(
                    {
                        SWEEP_TAG: name,
                        "sweep.dir": str(HydraConfig.get().sweep.dir),
                        OVERRIDES_TAG: shlex.join(HydraConfig.get().overrides.task),
                        "mlflow.source.name": "src.train -m",
                    }
                ),
            )
            self.run_id = run.info.run_id
            if study:
                self.run_id = elect_parent(client, experiment_id, name, self.run_id)
        os.environ[PARENT_ENV] = self.run_id
        log.info("MLflow parent run %s (%s)", self.run_id, name)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import RunStatus

        if self.run_id is None:
            return
        client = MlflowClient()
        client.set_terminated(self.run_id, RunStatus.to_string(RunStatus.FINISHED))
        os.environ.pop(PARENT_ENV, None)
        parent = client.get_run(self.run_id)
        jobs = children(client, parent)
        print_runs(jobs, f"{parent.info.run_name}: {len(jobs)} runs ({self.run_id})", parent)


def _one_line(exc: Exception) -> str:
    """``Type: message`` on one line, without OmegaConf's type details after `full_key`."""
    text = re.split(r"\s+(?:reference_type|object_type)=", " ".join(str(exc).split()))[0]
    return f"{type(exc).__name__}: {text}"


def sweep_name(config: DictConfig) -> str:
    """An Optuna study's name, else the grid's sweep directory name."""
    study = config.hydra.sweeper.get("study_name")
    return str(study) if study else Path(str(HydraConfig.get().sweep.dir)).name


def elect_parent(client: MlflowClient, experiment_id: str, name: str, mine: str) -> str:
    """Workers that start together each create a parent run: all keep the oldest, the others
    delete their own, so one study has one parent run."""
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{name}'", max_results=100
    )
    oldest = min(runs, key=lambda r: (r.info.start_time, r.info.run_id), default=None)
    if oldest is None or oldest.info.run_id == mine:
        return mine
    client.delete_run(mine)
    return oldest.info.run_id


def find_open_parent(client: MlflowClient, experiment_id: str, name: str) -> str | None:
    """The parent run of an earlier invocation of the same study (resumed or parallel workers)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{SWEEP_TAG}` = '{name}'",
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    return runs[0].info.run_id if runs else None
