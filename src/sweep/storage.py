"""Optuna storages from a storage string, and the commands that open them in Optuna's tools.

A string without ``://`` is the path of an Optuna journal file (the default, safe for several
worker processes on one host); anything else is an RDB URL (``sqlite:///...``,
``postgresql://...``). Both are what optuna-dashboard and the ``optuna`` CLI take, so every
string we print can be pasted there. ``journal:///path``, an older spelling, is read as the path.
"""

from __future__ import annotations

import logging
import shlex
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from src.config.errors import UserError
from src.tracking.uris import redact

log = logging.getLogger(__name__)


JOURNAL_SCHEME = "journal://"  # read, never written: Optuna's tools do not take it
SQLITE_HEADER = b"SQLite format 3\x00"
SCHEMA_RACE_ATTEMPTS = 3


def journal_path(storage: str) -> Path | None:
    """The journal file a storage string names, None for an RDB URL."""
    if storage.startswith(JOURNAL_SCHEME):
        return Path(storage[len(JOURNAL_SCHEME) :]).expanduser()
    return None if "://" in storage else Path(storage).expanduser()


def normalize_storage_url(url: str, base_dir: str | Path) -> str:
    """Journal files as absolute paths, SQLite paths absolute (relative ones are taken from
    `base_dir`): the form every tool opens from any directory."""
    path = journal_path(url)
    if path is not None:
        return str((path if path.is_absolute() else Path(base_dir) / path).absolute())
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
        if _is_sqlite(path):
            raise UserError(
                f"the Optuna storage {path} is a SQLite database: give it as sqlite:///{path}"
            )
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
        "(postgresql://user:password@host:5432/db, sqlite:///path.db, or a journal file path)?"
    )


def _is_sqlite(path: Path) -> bool:
    """Whether a file is a SQLite database (which a journal backend would append lines to)."""
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER


def tool_commands(storage: str, study_name: str) -> dict[str, str]:
    """The optuna-dashboard and ``optuna`` CLI commands that open a study (`storage` as shown,
    a password already hidden), ready to paste."""
    where = shlex.quote(storage)
    if journal_path(storage) is not None:
        where += " --storage-class JournalFileBackend"  # the CLI would guess it; say it
    return {
        "dashboard": f"optuna-dashboard --host 127.0.0.1 {shlex.quote(storage)}",
        "optuna_cli": f"optuna trials --study-name {shlex.quote(study_name)} --storage {where}",
    }
