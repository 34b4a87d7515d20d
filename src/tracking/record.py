"""MLflow adapter: where runs go, what a run records, and how it ends."""

from __future__ import annotations

import fcntl
import functools
import inspect
import json
import logging
import os
import socket
import sqlite3
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, is_dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import mlflow
import pandas as pd
from mlflow.entities import RunStatus
from omegaconf import DictConfig, OmegaConf

from src.config.errors import Interrupted, UserError, out_of_space
from src.config.schema import ModelConfig, TrackingConfig
from src.tracking.names import (
    ERROR_TAG,
    HOST_TAG,
    MAX_ERROR_LEN,
    MAX_PARAM_LEN,
    PARENT_ENV,
    PARENT_ID_TAG,
    PID_NS_TAG,
    PID_START_TAG,
    PID_TAG,
    STATE_TAG,
    RunState,
)
from src.tracking.processes import process_alive, process_start_ticks
from src.tracking.stores import check_tracking
from src.tracking.uris import redact, redact_values, tracking_uri

log = logging.getLogger(__name__)

# Waits between attempts of a write that met a locked SQLite store (which already waits 20 s).
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)

P = ParamSpec("P")
R = TypeVar("R")


def is_main_process() -> bool:
    """Rank 0 of a `torchrun` / `accelerate launch` job, or any process outside one."""
    return int(os.environ.get("RANK", "0")) == 0


def main_process_only(fn: Callable[P, R]) -> Callable[P, R | None]:
    """Run `fn` on rank 0 only; other ranks of a multi-GPU run record nothing (return None)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
        return fn(*args, **kwargs) if is_main_process() else None

    return wrapper


def retry_locked(fn: Callable[P, R]) -> Callable[P, R]:
    """Retry a write with backoff while the SQLite store answers "database is locked"."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for delay in (*RETRY_DELAYS, None):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if delay is None or "database is locked" not in str(exc):
                    raise
                log.warning("MLflow store locked (%s): retrying in %.1f s", fn.__name__, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    return wrapper


def system_metrics(cfg: TrackingConfig) -> float | None:
    """The sampling interval of a training run's system metrics, None when they are off."""
    return cfg.system_metrics_interval if cfg.system_metrics else None


class HideFullDiskTracebacks(logging.Filter):
    """Drops MLflow's ERROR records (a traceback each, 130 lines) of a full disk: the command
    reports it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None or out_of_space(record.exc_info[1]) is None


def setup(cfg: TrackingConfig) -> str:
    """Point MLflow at the store, make sure the experiment exists, end its orphaned runs KILLED;
    returns the experiment id ("" on ranks other than 0, which record nothing)."""
    if not is_main_process():
        return ""
    check_tracking(cfg)
    db_log = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, HideFullDiskTracebacks) for f in db_log.filters):
        db_log.addFilter(HideFullDiskTracebacks())
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    if redact(uri) != uri:  # MLflow prints run URLs, password included, to stdout
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    with store_errors(uri):
        with store_init_lock(uri):
            if uri.startswith("sqlite:///"):
                create_sqlite_store(Path(uri.removeprefix("sqlite:///")))
            experiment_id = _experiment_id(cfg, uri)
        mark_orphaned_runs(experiment_id)
    return experiment_id


@contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """Opening the store fails with one line (a full disk, a damaged or outdated database),
    MLflow's own log output about it silenced."""
    try:
        with quiet_loggers("mlflow", "alembic"):
            yield
    except UserError:
        raise
    except Exception as exc:
        where = redact(uri)
        if out_of_space(exc) is not None:
            raise UserError(
                f"no space left on the device while opening the MLflow store {where}: free space"
                " there or point tracking.dir / tracking.uri at a larger disk (nothing was"
                " recorded; the store is left as it was)"
            ) from exc
        reason = redact(" ".join(str(exc).split()))[:400]
        raise UserError(
            f"cannot open the MLflow store {where} ({type(exc).__name__}: {reason})"
        ) from exc


@contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Hide the INFO / ERROR lines these libraries log while a store is created or migrated:
    a failure is reported once, by `store_errors`."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def create_sqlite_store(db: Path) -> None:
    """Create (and migrate) a new SQLite store in a file beside `db`, then rename it into place:
    an interruption (a full disk, a kill) never leaves a half-built `db` that breaks every later
    start. A half-built one left by an earlier version, holding no runs, is set aside and made
    again. Call under `store_init_lock`."""
    # MLflow's own schema creation and migration, on an engine of ours: its store objects keep
    # engines (and their open files) cached per URI, which would outlive a failed attempt.
    from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine

    # A symlinked store (mlruns/mlflow.db -> a larger disk) is made where the link points: a
    # rename onto the link would replace the link with a file and leave that disk unused.
    db = db.resolve()
    if db.is_file() and db.stat().st_size:
        if not interrupted_creation(db):
            return
        aside = db.with_name(f"{db.name}.interrupted-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(db, aside)
        log.warning("%s was left half-built by an interrupted creation: kept as %s", db, aside)
    staging = db.with_name(f".{db.name}.creating-{uuid.uuid4().hex[:8]}")
    engine = create_sqlalchemy_engine(f"sqlite:///{staging}")
    try:
        _initialize_tables(engine)
        engine.dispose()
        os.replace(staging, db)
    finally:
        engine.dispose()
        for leftover in (staging, staging.with_name(f"{staging.name}-journal")):
            leftover.unlink(missing_ok=True)


def interrupted_creation(db: Path) -> bool:
    """Whether `db` is a store whose creation stopped half-way: tables missing or a migration's
    temporary table left over, and nothing in it yet (no run, no experiment of ours)."""
    from mlflow.store.db.base_sql_model import Base

    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        listed = con.execute("SELECT name FROM sqlite_master WHERE type='table'")
        tables = {row[0] for row in listed}
        leftover = any(t.startswith("_alembic_tmp_") for t in tables)
        if set(Base.metadata.tables) <= tables and not leftover:
            return False
        counts = [
            con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # fixed table names
            for table in ("runs", "registered_models")
            if table in tables
        ]
        experiments = (
            con.execute("SELECT COUNT(*) FROM experiments").fetchone()[0]
            if "experiments" in tables
            else 0
        )
    return not any(counts) and experiments <= 1  # at most MLflow's "Default" experiment


@contextmanager
def store_init_lock(uri: str) -> Iterator[None]:
    """Serialise the first access of processes to one SQLite store (it creates or migrates the
    schema, which fails when two processes do it at once); a no-op for other stores."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.init-lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _experiment_id(cfg: TrackingConfig, uri: str) -> str:
    """The experiment's id, creating the experiment if needed."""
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///"):
        # Explicit, absolute artifact root next to the database: runs must not depend on the
        # working directory (MLflow's default, ./mlruns/<id>, mixes the artifacts of stores).
        db = Path(uri.removeprefix("sqlite:///")).resolve()
        artifact_location = (db.parent / "artifacts").as_uri()
    try:
        return mlflow.create_experiment(cfg.experiment, artifact_location=artifact_location)
    except mlflow.exceptions.MlflowException:
        # Another process created it between our lookup and create.
        experiment = mlflow.get_experiment_by_name(cfg.experiment)
        assert experiment is not None
        return experiment.experiment_id


def process_tags() -> dict[str, str]:
    """This process's identity, recorded on every run it starts."""

    pid = os.getpid()
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        PID_START_TAG: str(process_start_ticks(pid) or ""),
        PID_NS_TAG: _pid_namespace(),
    }


def _pid_namespace() -> str:
    """This process's pid namespace (containers sharing a host name have their own)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def mark_orphaned_runs(experiment_id: str) -> list[str]:
    """End KILLED the RUNNING runs whose process on this host is gone; returns their ids.

    A process killed with -9 (or by the OOM killer) cannot end its run, which would otherwise
    stay RUNNING forever. One query per start. Runs of other hosts are left alone: MLflow keeps
    no heartbeat that could tell a live remote run from a dead one.
    """

    me = process_tags()
    client = mlflow.MlflowClient()
    host = me[HOST_TAG].replace("'", "")
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
        max_results=1000,
    )
    killed = []
    for found in runs:
        tags = found.data.tags
        if tags.get(PID_NS_TAG, "") != me[PID_NS_TAG] or not tags.get(PID_TAG, "").isdigit():
            continue
        pid, start = int(tags[PID_TAG]), tags.get(PID_START_TAG, "")
        if process_alive(pid, int(start) if start.isdigit() else None):
            continue
        reason = (
            f"killed: its process (pid {pid} on {host}) ended without ending the run "
            "(kill -9, out of memory, power loss); marked KILLED by the next start"
        )
        client.set_tag(found.info.run_id, STATE_TAG, RunState.killed)
        client.set_tag(found.info.run_id, ERROR_TAG, reason)
        client.set_terminated(found.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        log.warning("MLflow run %s %s", found.info.run_id, reason)
        killed.append(found.info.run_id)
    return killed


def flatten(cfg: DictConfig, resolved: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The config as MLflow params: one `a.b.c` key per setting, its resolved value as text.
    Only the schema's own sections (dataclasses) are opened: a mapping of the user's keys
    (data.label_descriptions) is one JSON value, so no user text becomes a key whose characters
    MLflow refuses."""
    out: dict[str, str] = {}
    for key, value in resolved.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and is_dataclass(OmegaConf.get_type(cfg, str(key))):
            out.update(flatten(cfg[key], value, f"{name}."))
        else:
            text = str(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            out[name] = redact(text)[:MAX_PARAM_LEN]
    return out


def git_commit(cwd: Path) -> str | None:
    """The checkout's commit, if the code runs from a git work tree."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@contextmanager
def run(
    experiment_id: str,
    run_name: str | None,
    tags: dict[str, str],
    system_metrics: float | None = None,
) -> Iterator[mlflow.ActiveRun | None]:
    """One MLflow run; an exception ends it FAILED with the reason as a tag, then propagates.

    Records the process (host, pid) so that a later start can mark the run KILLED if the
    process dies without ending it. Yields None, recording nothing, on ranks other than 0.
    `system_metrics`: sample MLflow's system metrics every that many seconds (None: off).
    """
    if not is_main_process():
        yield None
        return
    tags = redact_values(tags) | process_tags()
    parent = os.environ.get(PARENT_ENV)
    if parent:
        # The tag (not parent_run_id=) nests across processes even once the parent has ended.
        tags = {**tags, PARENT_ID_TAG: parent}
    if system_metrics:
        mlflow.set_system_metrics_sampling_interval(system_metrics)
    active = mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name,
        tags=tags,
        log_system_metrics=bool(system_metrics),
    )
    try:
        yield active
    except BaseException as exc:
        state, status = RunState.failed, RunStatus.FAILED
        if type(exc).__name__ == "TrialPruned":
            state, status = RunState.pruned, RunStatus.FINISHED
        elif isinstance(exc, KeyboardInterrupt):  # SIGTERM, Ctrl-C
            state, status = RunState.killed, RunStatus.KILLED
        try:
            try:
                mlflow.set_tags(
                    {STATE_TAG: state, ERROR_TAG: str(exc)[:MAX_ERROR_LEN] or repr(exc)}
                )
            finally:  # off MLflow's stack of active runs even then: the next run must start
                mlflow.end_run(RunStatus.to_string(status))
            if isinstance(exc, Interrupted):  # named in its line only once it is marked
                exc.runs.append(active.info.run_id)
        except Exception as failure:  # the store itself fails (a full disk): report the cause
            if isinstance(exc, Interrupted):
                exc.unmarked.append(active.info.run_id)
            log.warning(
                "MLflow run %s could not be marked %s (%s); the next start marks it KILLED",
                active.info.run_id,
                RunStatus.to_string(status),
                " ".join(str(failure).split())[:200],
            )
        raise
    mlflow.set_tag(STATE_TAG, RunState.completed)
    mlflow.end_run()


@main_process_only
@retry_locked  # the jobs stopped by the same signal may be writing their own ends
def end_parent_run(reason: str, killed: bool = False, only_running: bool = False) -> None:
    """Mark this multirun's parent run FAILED (or KILLED, by a signal) with the reason (a no-op
    outside multiruns); `only_running`: unless it has already ended."""
    parent = os.environ.get(PARENT_ENV)
    if parent:
        client = mlflow.MlflowClient()
        if only_running and client.get_run(parent).info.status != "RUNNING":
            return
        client.set_tag(parent, ERROR_TAG, reason[:MAX_ERROR_LEN])
        if killed:
            client.set_tag(parent, STATE_TAG, RunState.killed)
        status = RunStatus.KILLED if killed else RunStatus.FAILED
        client.set_terminated(parent, RunStatus.to_string(status))


@main_process_only
@retry_locked
def log_config(cfg: DictConfig, tags: dict[str, str]) -> None:
    """Params = the flattened resolved config; the resolved YAML as an artifact (passwords in
    URIs hidden in all three)."""
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(resolved, dict)
    mlflow.log_params(flatten(cfg, {str(k): v for k, v in resolved.items()}))
    mlflow.set_tags(redact_values(tags))
    mlflow.log_text(redact(OmegaConf.to_yaml(cfg, resolve=True)), "config.yaml")


@main_process_only
def log_dataset(
    df: pd.DataFrame, name: str, context: str, source: str, hub: HubSplit | None = None
) -> None:
    """Record a split as an MLflow dataset input: its name, digest, where it was read from
    (`source`: a file or folder; a Hub dataset's split with `hub`) and its role (`context`)."""
    with warnings.catch_warnings():
        # The schema hint about integer columns concerns model signatures, not dataset records;
        # a local path "can be interpreted" as two equivalent local sources.
        warnings.simplefilter("ignore", UserWarning)
        if hub is None:
            dataset: Any = mlflow.data.from_pandas(  # type: ignore[attr-defined]
                df, source=source, name=name, targets="label"
            )
        else:
            dataset = _huggingface_dataset(df, name, source, hub)
        mlflow.log_input(dataset, context=context)


@dataclass(frozen=True)
class HubSplit:
    """A Hugging Face dataset's split, as `datasets.load_dataset` names it."""

    split: str
    config_name: str | None = None
    revision: str | None = None


def _huggingface_dataset(df: pd.DataFrame, name: str, path: str, hub: HubSplit) -> Any:
    """The rows as MLflow's Hugging Face dataset: source the dataset's path, config, split and
    revision; digest of the rows themselves (carved, capped), not of the whole split."""
    import datasets
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

    rows = datasets.Dataset.from_pandas(df, preserve_index=False, split=hub.split)
    source = HuggingFaceDatasetSource(
        path=path, config_name=hub.config_name, split=hub.split, revision=hub.revision
    )
    return mlflow.data.from_huggingface(  # type: ignore[attr-defined]
        rows, targets="label", name=name, source=source
    )


@main_process_only
@retry_locked
def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log numeric metrics at a step."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


@main_process_only
def log_report(text: str, as_dict: dict[str, Any], split: str) -> None:
    """The classification report, as text and JSON."""
    mlflow.log_text(text, f"{split}_classification_report.txt")
    mlflow.log_dict(as_dict, f"{split}_classification_report.json")


@main_process_only
def log_table(df: pd.DataFrame, artifact_file: str) -> None:
    """A CSV artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        df.to_csv(path, index=False)
        mlflow.log_artifact(str(path), str(Path(artifact_file).parent) or None)


@main_process_only
def log_figure(figure: Any, artifact_file: str) -> None:
    """A matplotlib figure as a PNG artifact."""
    mlflow.log_figure(figure, artifact_file)


# What loading and applying a checkpoint imports (src.checkpoint.pyfunc and the src modules it
# uses; tests/test_clients.py checks the list), and tokenizers, which decides the token ids.
CHECKPOINT_REQUIREMENTS = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "huggingface_hub",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "hydra-core",
    "omegaconf",
)


# Keyword arguments of Classifier.__call__ a pyfunc prediction takes as `params`.
PREDICT_PARAMS = ("batch_size", "max_len")


def pinned(distributions: Sequence[str]) -> list[str]:
    """`name==version` of the installed distributions. Local version labels are dropped (torch's
    `+cpu`, `+cu128`): such builds are not on PyPI, and `torch==2.13.0` matches every build of
    that release, so the serving machine keeps the CPU or CUDA build it installs."""
    return [f"{name}=={version(name).split('+')[0]}" for name in distributions]


@main_process_only
def log_checkpoint(checkpoint_dir: Path) -> str:
    """Log a saved HF checkpoint (directory named `checkpoint`) as the run's MLflow model."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema

    from src.checkpoint.classifier import Classifier

    call = inspect.signature(Classifier.__call__).parameters
    specs = [mlflow.types.ParamSpec(name, "long", call[name].default) for name in PREDICT_PARAMS]
    # The parameters of a prediction only: why no input schema, see src.checkpoint.pyfunc.
    signature = ModelSignature(params=ParamSchema(specs))
    with warnings.catch_warnings():
        # An input example would make MLflow load the whole model once more to check it.
        warnings.filterwarnings("ignore", message=".*An input example was not provided")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).parents[1] / "checkpoint" / "pyfunc.py"),
            artifacts={"checkpoint": str(checkpoint_dir)},
            code_paths=[str(Path(__file__).parents[1])],  # the src package
            signature=signature,
            pip_requirements=pinned(CHECKPOINT_REQUIREMENTS),
        )
    return str(info.model_uri)


@main_process_only
def log_dict(data: dict[str, Any], artifact_file: str) -> None:
    """A JSON artifact."""
    mlflow.log_dict(data, artifact_file)


@main_process_only
def log_sklearn_model(model: Any) -> str:
    """Log a fitted scikit-learn pipeline as the run's MLflow model."""
    # Stated, not inferred (inference reloads the model in a subprocess of its own): skops
    # stores the fitted pipeline (no pickle) and reads back numpy and scipy arrays.
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
        pip_requirements=pinned(["scikit-learn", "skops", "numpy", "scipy"]),
    )
    return str(info.model_uri)


def log_to_run(uri: str, run_id: str, directory: Path, artifact_path: str) -> None:
    """Log a directory's files to a run that may have ended (a sweep's parent run)."""
    mlflow.MlflowClient(tracking_uri=uri).log_artifacts(run_id, str(directory), artifact_path)


@main_process_only
def log_file(path: Path, artifact_path: str) -> None:
    """Log a file as a run artifact under `artifact_path`."""
    mlflow.log_artifact(str(path), artifact_path)


@main_process_only
def log_directory(directory: Path, artifact_path: str) -> None:
    """Log a directory's files as run artifacts under `artifact_path`."""
    mlflow.log_artifacts(str(directory), artifact_path)


def run_checkpoint(model: ModelConfig, tracking: TrackingConfig) -> Path | None:
    """model.from_run's checkpoint, fetched from the tracking store into model.cache_dir; None
    without model.from_run."""
    if not model.from_run:
        return None
    cache = Path(model.cache_dir) / "runs"
    return download_run_checkpoint(model.from_run, tracking_uri(tracking), cache)


def download_run_checkpoint(run_id: str, uri: str | None, cache_root: Path) -> Path:
    """The `checkpoint` artifact directory of a run (e.g. a pretraining run), cached locally."""
    target = cache_root / run_id
    if (target / "checkpoint" / "config.json").is_file():
        return target / "checkpoint"
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="checkpoint", dst_path=str(target), tracking_uri=uri
        )
    except Exception as exc:
        raise UserError(
            f"model.from_run={run_id}: no checkpoint artifact of that run in"
            f" {redact(uri or mlflow.get_tracking_uri())} ({type(exc).__name__}); give the run id"
            " `python -m src.pretrain` printed, and the same tracking.uri"
        ) from exc
    return Path(local)
