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
OPTUNA_STUDY_TAG = "optuna.study"
OPTUNA_TRIAL_TAG = "optuna.trial_id"
# Who runs a run: a later start on the same host marks it KILLED once that process is gone.
HOST_TAG = "clfsweep.host"
PID_TAG = "clfsweep.pid"
PID_START_TAG = "clfsweep.pid_start"
PID_NS_TAG = "clfsweep.pid_ns"

PARENT_ENV = "CLFSWEEP_PARENT_RUN_ID"  # the multirun's parent run, for its jobs and the sweeper
# Set in the workers of a sweep's device pool (src/sweep/devices.py): the devices each holds.
DEVICE_WORKER_ENV = "CLFSWEEP_DEVICE_WORKER"

MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
MAX_ERROR_LEN = 5000  # what of an error message a tag keeps


class RunState(StrEnum):
    """The `clfsweep.state` tag: how a run ended."""

    completed = "completed"
    pruned = "pruned"
    failed = "failed"
    killed = "killed"
