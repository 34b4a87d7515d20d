"""Optuna plumbing shared by the clfsweep_optuna sweeper and the training job.

Storage URLs: ``journal:///abs/path/journal.log`` is an Optuna journal file (the default, safe
for several worker processes on one host); anything else is an Optuna RDB URL
(``sqlite:///...``, ``postgresql://...``).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from src.config import TrialConfig
from src.errors import UserError
from src.tracking import redact

log = logging.getLogger(__name__)

JOURNAL_SCHEME = "journal://"
PRUNER_ATTR = "clfsweep:pruner"  # study system attr: the pruner spec the sweeper was given
FAIL_REASON_ATTR = "fail_reason"  # trial user attr: why a trial FAILED
PRUNERS = ("median", "percentile", "hyperband", "successive_halving", "none")
SCHEMA_RACE_ATTEMPTS = 3
_JOB_STORAGES: dict[str, BaseStorage] = {}  # storages opened by jobs of this process


def journal_url(path: str | Path) -> str:
    """The journal storage URL of a file path (made absolute)."""
    return JOURNAL_SCHEME + str(Path(path).expanduser().absolute())


def journal_path(url: str) -> Path | None:
    """The file of a journal storage URL, None for other URLs."""
    if not url.startswith(JOURNAL_SCHEME):
        return None
    return Path(url[len(JOURNAL_SCHEME) :]).expanduser()


def normalize_storage_url(url: str, base_dir: str | Path) -> str:
    """Make journal and SQLite paths absolute (relative ones are taken from `base_dir`)."""
    path = journal_path(url)
    if path is not None:
        return journal_url(path if path.is_absolute() else Path(base_dir) / path)
    prefix = "sqlite:///"
    if url.startswith(prefix) and url != prefix + ":memory:":
        rest = url[len(prefix) :]
        if rest and not rest.startswith("/"):
            return prefix + str((Path(base_dir) / rest).absolute())
    return url


def open_storage(
    url: str,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int = 1,
) -> BaseStorage:
    """Open an Optuna storage from our URL convention (heartbeats apply to RDB URLs only)."""
    path = journal_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    elif url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}  # a dead host fails in 10 s
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = (
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
            if heartbeat_interval
            else None
        )
        for attempt in range(SCHEMA_RACE_ATTEMPTS):
            try:
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval or None,
                    grace_period=grace_period if heartbeat_interval else None,
                    heartbeat_stale_trial_callback=callback,
                )
            except Exception as exc:
                # Workers starting together on a new database race to create Optuna's tables;
                # the loser's CREATE fails, and its next attempt finds them made.
                text = str(exc)
                if attempt + 1 < SCHEMA_RACE_ATTEMPTS and (
                    "already exists" in text or "duplicate key" in text
                ):
                    log.info("Optuna storage schema created concurrently; opening it again")
                    time.sleep(1.0 + attempt)
                    continue
                raise open_storage_error(url, exc) from exc
    raise AssertionError("unreachable")


def open_storage_error(url: str, exc: Exception) -> UserError:
    """One line on why an RDB storage could not be opened."""
    if isinstance(exc, ImportError):
        driver = getattr(exc.__cause__, "name", None) or exc.name
        return UserError(
            f"the Optuna storage {redact(url)} needs the database driver {driver}: "
            "pip install -e '.[services]' (psycopg for postgresql://)"
        )
    reason = redact(" ".join(str(exc).split("\n")[0].split()))[:300]
    return UserError(
        f"cannot open the Optuna storage {redact(url)} ({type(exc).__name__}: {reason}): "
        "is the database server running and reachable, the URL right "
        "(postgresql://user:password@host:5432/db, sqlite:///path.db, journal:///path)?"
    )


def build_pruner(spec: Mapping[str, Any] | None) -> optuna.pruners.BasePruner:
    """An Optuna pruner from a spec like ``{"name": "median", "n_startup_trials": 5, ...}``."""
    spec = dict(spec or {"name": "none"})
    name = str(spec.pop("name", "none") or "none").lower()
    spec = {k: v for k, v in spec.items() if v is not None}
    pick = _pick_kwargs
    if name == "median":
        keys = ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials")
        return optuna.pruners.MedianPruner(**pick(spec, keys))
    if name == "percentile":
        keys = ("percentile", "n_startup_trials", "n_warmup_steps", "interval_steps")
        kwargs = pick(spec, (*keys, "n_min_trials"))
        kwargs.setdefault("percentile", 25.0)
        return optuna.pruners.PercentilePruner(**kwargs)
    if name == "hyperband":
        keys = ("min_resource", "max_resource", "reduction_factor", "bootstrap_count")
        return optuna.pruners.HyperbandPruner(**pick(spec, keys))
    if name == "successive_halving":
        keys = ("min_resource", "reduction_factor", "min_early_stopping_rate", "bootstrap_count")
        return optuna.pruners.SuccessiveHalvingPruner(**pick(spec, keys))
    if name in ("none", "nop"):
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}: choose one of {', '.join(PRUNERS)}")


def _pick_kwargs(spec: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The entries of `spec` named in `keys`, plus everything under ``kwargs``."""
    out = {k: spec[k] for k in keys if k in spec}
    out.update(spec.get("kwargs") or {})
    return out


def load_study(storage: BaseStorage, study_name: str) -> optuna.Study:
    """Load a study with the pruner the sweeper recorded for it (sampling is the sweeper's job)."""
    study_id = storage.get_study_id_from_name(study_name)
    spec = storage.get_study_system_attrs(study_id).get(PRUNER_ATTR)
    return optuna.load_study(
        study_name=study_name,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(),
        pruner=build_pruner(spec),
    )


def open_trial(cfg: TrialConfig) -> optuna.Trial | None:
    """Re-open the sweeper's trial in the job; None outside an Optuna sweep or if it is over."""
    if cfg.trial_id is None:
        return None
    if not cfg.storage or not cfg.study_name:
        raise ValueError("trial.trial_id is set but trial.storage or trial.study_name is not")
    if cfg.storage not in _JOB_STORAGES:  # one engine per RDB URL, not one per trial
        _JOB_STORAGES[cfg.storage] = open_storage(cfg.storage)
    study = load_study(_JOB_STORAGES[cfg.storage], cfg.study_name)
    frozen = study._storage.get_trial(int(cfg.trial_id))
    if frozen.state != optuna.trial.TrialState.RUNNING:
        log.warning(
            "Optuna trial %d of study %s is %s: not reporting to it",
            frozen.number,
            cfg.study_name,
            frozen.state.name,
        )
        return None
    return optuna.trial.Trial(study, int(cfg.trial_id))


def report(trial: optuna.Trial, value: float, step: int) -> None:
    """Report an intermediate value; raise ``optuna.TrialPruned`` when the pruner says stop."""
    if not math.isfinite(float(value)):
        return
    trial.report(float(value), step=step)
    if trial.should_prune():
        raise optuna.TrialPruned(f"pruned at step {step} with value {value:.6g}")
