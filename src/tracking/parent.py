"""Hydra callbacks: a multirun (grid or Optuna sweep) is one MLflow parent run over its jobs."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.config.schema import TrackingConfig
from src.tracking.names import PARENT_ENV, SWEEP_TAG
from src.tracking.uris import redact_values, tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


class MlflowParentRun(Callback):
    """Opens the parent run before the first job and exports its id for the jobs and sweeper."""

    def __init__(self) -> None:
        self.run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # MLflow loads here, not when Hydra makes the callback for every run: a single run's
        # config mistake is then reported before MLflow's import costs seconds.
        from mlflow import MlflowClient

        from src.tracking import record

        # Hydra sets HydraConfig only per job; `${hydra:...}` in the tracking config needs it now.
        HydraConfig.instance().set_config(config)
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
                        "hydra.overrides": " ".join(HydraConfig.get().overrides.task),
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
        if self.run_id is not None:
            from mlflow import MlflowClient
            from mlflow.entities import RunStatus

            MlflowClient().set_terminated(self.run_id, RunStatus.to_string(RunStatus.FINISHED))
            os.environ.pop(PARENT_ENV, None)


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
