"""Hydra callbacks: a multirun (grid or Optuna sweep) is one MLflow parent run over its jobs."""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.config.errors import UserError
from src.config.schema import TrackingConfig
from src.tracking.console import print_runs, quiet_libraries
from src.tracking.names import (
    DEVICE_WORKER_ENV,
    MAX_PARAM_LEN,
    OVERRIDES_TAG,
    PARENT_ENV,
    SOURCE_TAG,
    SWEEP_DIR_TAG,
    SWEEP_TAG,
)
from src.tracking.run_table import children
from src.tracking.uris import redact, redact_values, tracking_uri

if TYPE_CHECKING:  # Hydra instantiates callbacks for every command: MLflow loads when used
    from mlflow import MlflowClient

    from src.tracking.registry import Registry

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
                        SWEEP_DIR_TAG: str(HydraConfig.get().sweep.dir),
                        OVERRIDES_TAG: shlex.join(HydraConfig.get().overrides.task),
                        SOURCE_TAG: "src.train -m",
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


class SweepRun:
    """A multirun's parent MLflow run as a sweep writes to it while it goes: every call is best
    effort (a tracking hiccup never stops the sweep)."""

    def __init__(self, run_id: str) -> None:
        import mlflow

        self.run_id = run_id
        self.client = mlflow.MlflowClient()
        self._broken = False

    @classmethod
    def from_env(cls) -> Self | None:
        """The run named by $CLFSWEEP_PARENT_RUN_ID (tracking URI from $MLFLOW_TRACKING_URI)."""
        run_id = os.environ.get(PARENT_ENV)
        if not run_id:
            return None
        try:
            return cls(run_id)
        except Exception as exc:
            log.warning("MLflow parent run %s unusable: %s", run_id, exc)
            return None

    def _safe(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Call an MLflow client method; warn once and go on if tracking fails."""
        if self._broken:
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            self._broken = True
            log.warning("MLflow: could not %s on parent run %s: %s", what, self.run_id, exc)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params one by one (a re-run with a different value must not stop the others)."""
        for key, value in params.items():
            try:
                self.client.log_param(self.run_id, key, redact(str(value))[:MAX_PARAM_LEN])
            except Exception as exc:
                log.debug("MLflow param %s not logged: %s", key, exc)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the parent run."""
        for key, value in tags.items():
            self._safe("set a tag", self.client.set_tag, self.run_id, key, redact(str(value)))

    def log_metric(self, key: str, value: float, step: int) -> None:
        """One metric of the parent run."""
        self._safe("log a metric", self.client.log_metric, self.run_id, key, value, step=step)

    def registry(self, study_name: str, maximize: bool, labels: Sequence[str]) -> Registry | None:
        """The study's registered model, in the MLflow store of this run (None if unreachable)."""
        from src.tracking.registry import Registry

        try:
            experiment_id = self.client.get_run(self.run_id).info.experiment_id
        except Exception as exc:
            log.warning(
                "MLflow parent run %s unusable for the model registry: %s", self.run_id, exc
            )
            return None
        return Registry(self.client, experiment_id, study_name, maximize, labels)

    def log_artifacts(self, paths: Sequence[Path], artifact_path: str) -> None:
        """Upload files to the parent run."""
        for path in paths:
            self._safe(
                "log an artifact", self.client.log_artifact, self.run_id, str(path), artifact_path
            )
