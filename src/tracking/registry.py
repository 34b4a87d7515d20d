"""The study's best model in the MLflow Model Registry: registered under the study's name with
the alias ``champion``, which moves when a better trial finishes; its metrics as version tags.
``python -m src.predict --model models:/<study>@champion`` then classifies with it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from optuna.trial import FrozenTrial

from src.tracking.names import (
    CHAMPION_ALIAS,
    MODEL_VERSION_TRIAL_TAG,
    OPTUNA_STUDY_TAG,
    OPTUNA_TRIAL_TAG,
)

log = logging.getLogger(__name__)


@dataclass
class Registry:
    """The registered model of one study; every call is best effort (a warning, no stop)."""

    client: MlflowClient
    experiment_id: str  # where the trials' runs are
    study_name: str  # also the registered model's name
    maximize: bool  # of the first objective, which ranks the versions
    labels: Sequence[str]  # a name per objective: the version tags

    @property
    def uri(self) -> str:
        """The champion's model URI."""
        return f"models:/{self.study_name}@{CHAMPION_ALIAS}"

    def champion(self) -> ModelVersion | None:
        """The version the alias points at, None before the first registration."""
        try:
            return self.client.get_model_version_by_alias(self.study_name, CHAMPION_ALIAS)
        except MlflowException:
            return None

    def promote(self, trial: FrozenTrial, trial_id: int) -> bool:
        """Register a COMPLETE trial's model and move the alias to it when it beats the
        champion (in the first objective); whether it moved."""
        try:
            return self._promote(trial, trial_id)
        except Exception as exc:
            log.warning("MLflow model registry: trial %d not registered: %s", trial.number, exc)
            return False

    def _promote(self, trial: FrozenTrial, trial_id: int) -> bool:
        """`promote` without the safety net."""
        current = self.champion()
        if current is not None and not self._beats(trial.values[0], current):
            return False
        found = self._logged_model(trial_id)
        if found is None:
            return False
        run_id, model_id = found
        try:
            self.client.create_registered_model(
                self.study_name, tags={OPTUNA_STUDY_TAG: self.study_name}
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        tags = {label: repr(v) for label, v in zip(self.labels, trial.values, strict=True)}
        version = self.client.create_model_version(
            self.study_name,
            # As mlflow.register_model does. MLflow's SQL registry resolves this source through
            # the global tracking URI (the parent-run callback set it to this store) and keeps
            # no model_id: readers find the logged model in the source.
            f"models:/{model_id}",
            run_id=run_id,
            tags=tags
            | {MODEL_VERSION_TRIAL_TAG: str(trial.number), OPTUNA_STUDY_TAG: self.study_name},
            model_id=model_id,
        )
        self.client.set_registered_model_alias(self.study_name, CHAMPION_ALIAS, version.version)
        log.info(
            "MLflow model registry: %s version %s (trial %d, %s) is now @%s",
            self.study_name,
            version.version,
            trial.number,
            ", ".join(f"{k}={v}" for k, v in tags.items()),
            CHAMPION_ALIAS,
        )
        return True

    def _beats(self, value: float, current: ModelVersion) -> bool:
        """Whether `value` is strictly better than the champion's first metric."""
        held = current.tags.get(self.labels[0])
        if held is None:
            return True
        return value > float(held) if self.maximize else value < float(held)

    def _logged_model(self, trial_id: int) -> tuple[str, str] | None:
        """The run and the complete logged model of a trial's job, if it logged one."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{OPTUNA_STUDY_TAG}` = '{self.study_name}' "
                f"and tags.`{OPTUNA_TRIAL_TAG}` = '{trial_id}'"
            ),
            max_results=1,
        )
        outputs = runs[0].outputs if runs else None
        if outputs is None or not outputs.model_outputs:
            log.info("MLflow model registry: trial id %d logged no model to register", trial_id)
            return None
        model = self.client.get_logged_model(outputs.model_outputs[-1].model_id)
        if model.status != LoggedModelStatus.READY:
            return None  # its upload did not finish
        return runs[0].info.run_id, model.model_id
