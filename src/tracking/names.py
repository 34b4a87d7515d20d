"""The run record's vocabulary: the tags, states, environment and limits that every writer and
reader of our MLflow runs (training, sweeps, reports, the summary table) shares."""

from __future__ import annotations

from enum import StrEnum

SWEEP_TAG = "clfsweep.sweep"  # on a multirun's parent run: the study's or the grid's name
STATE_TAG = "clfsweep.state"  # how a run ended: a RunState
JOB_TAG = "clfsweep.job"  # a multirun's job number: in an Optuna sweep, the trial number
OVERRIDES_TAG = "hydra.overrides"  # the job's overrides, shell-quoted as typed
ERROR_TAG = "error"  # why a run failed, was pruned or killed
PARENT_ID_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag
SOURCE_TAG = "mlflow.source.name"  # MLflow's own: the command that made the run
OVERRIDES_TAG = "hydra.overrides"  # the command line's overrides
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # MLflow's own: the code version
# What a run trained: the presets of its model=, method= and data= groups.
MODEL_TAG = "model"
METHOD_TAG = "method"
DATA_TAG = "data"
STRATEGY_TAG = "strategy"  # how a run's processes shared the work: single, ddp or fsdp
CHECKPOINTING_TAG = "gradient_checkpointing"  # whether the run checkpointed activations
SWEEP_DIR_TAG = "sweep.dir"  # on a multirun's parent run: Hydra's sweep folder
OPTUNA_STUDY_TAG = "optuna.study"
OPTUNA_TRIAL_TAG = "optuna.trial_id"  # on a trial's run: the Optuna trial id
# On a sweep's parent run: the study's storage (password redacted), folder and dashboard command,
# its best trial numbers (or the Pareto front's) and the champion model registered from it.
OPTUNA_STORAGE_TAG = "optuna.storage"
OPTUNA_STUDY_DIR_TAG = "optuna.study_dir"
OPTUNA_DASHBOARD_TAG = "optuna.dashboard"
OPTUNA_BEST_TRIAL_TAG = "optuna.best_trial"
CHAMPION_TAG = "champion"
BEST_TRIAL_TAG = "best.trial"
PARETO_TRIALS_TAG = "pareto.trials"
# On a registered model version: the trial number whose model it is; the registry alias.
MODEL_VERSION_TRIAL_TAG = "optuna.trial"
CHAMPION_ALIAS = "champion"
# Who runs a run: a later start on the same host marks it KILLED once that process is gone.
HOST_TAG = "clfsweep.host"
PID_TAG = "clfsweep.pid"
PID_START_TAG = "clfsweep.pid_start"
PID_NS_TAG = "clfsweep.pid_ns"

PARENT_ENV = "CLFSWEEP_PARENT_RUN_ID"  # the multirun's parent run, for its jobs and the sweeper
# Set in the workers of a sweep's device pool (src/sweep/devices.py): the devices each holds.
DEVICE_WORKER_ENV = "CLFSWEEP_DEVICE_WORKER"
# A study's storage URL with its password, handed from the sweeper to its jobs (never logged).
TRIAL_STORAGE_ENV = "CLFSWEEP_TRIAL_STORAGE"

# The study's record in Optuna's storage: system attributes of the study and its trials, and
# the user attributes a trial carries (what the dashboard and `optuna trials` show).
SEARCH_SPACE_ATTR = "clfsweep:search_space"  # study: the search space a sweep was started with
PRUNER_ATTR = "clfsweep:pruner"  # study: the pruner spec the sweeper was given
WORKER_ATTR = "clfsweep:worker"  # trial: who runs it (host, pid, start)
WORKER_PREFIX = "clfsweep:worker:"  # study: one entry per device worker
HEARTBEAT_ATTR = "clfsweep:heartbeat"  # trial: the last sign of life of its worker
EXCESS_ATTR = "clfsweep:excess"  # trial: asked beyond n_trials by a racing worker
SWEEPER_ATTR_PREFIX = "clfsweep:"  # every system attribute the sweeper itself writes
FAIL_REASON_ATTR = "fail_reason"  # trial user attr: why a trial FAILED
OUTPUT_DIR_ATTR = "output_dir"  # trial user attr: the trial's folder
DEVICES_ATTR = "devices"  # trial user attr: the GPUs it ran on

MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
MAX_ERROR_LEN = 5000  # what of an error message a tag keeps


class RunState(StrEnum):
    """The `clfsweep.state` tag: how a run ended."""

    completed = "completed"
    pruned = "pruned"
    failed = "failed"
    killed = "killed"
