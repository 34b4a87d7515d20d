"""The store behind a tracking URI, probed in seconds before MLflow opens it.

MLflow finds a bad store late and slowly: an unreachable server after minutes of retries, an
unreachable database after two, a read-only or foreign SQLite file deep in a traceback. These
probes say it in one line before any data is read. Light: no MLflow import (SQLAlchemy only
for database URIs).
"""

from __future__ import annotations

import base64
import importlib.metadata
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from src.config.errors import UserError, regular_file, writable_place
from src.config.schema import DEFAULT_STORE_DIR, TrackingConfig
from src.tracking.uris import redact, tracking_uri

PROBE_TIMEOUT = 5.0  # seconds a server or database may take to answer the probe
SQLITE_HEADER = b"SQLite format 3\x00"
DATABASES = ("postgresql", "mysql", "mssql")  # SQLAlchemy dialects MLflow stores runs in
DATABRICKS = ("databricks", "databricks-uc", "uc")  # hosted: credentials from the Databricks CLI
EXAMPLES = "sqlite:///path/mlflow.db, http://host:5000 (mlflow server) or postgresql://…"


def check_tracking(cfg: TrackingConfig) -> None:
    """The experiment has a name, system metrics a sampling interval, and the store behind the
    URI can be opened and written."""
    if not cfg.experiment.strip():
        raise UserError(
            "tracking.experiment is empty: name the MLflow experiment, e.g."
            " tracking.experiment=clfsweep"
        )
    if cfg.system_metrics and not cfg.system_metrics_interval > 0:
        raise UserError(
            f"tracking.system_metrics_interval={cfg.system_metrics_interval} must be > 0 seconds"
            " (or tracking.system_metrics=false)"
        )
    uri = tracking_uri(cfg)
    key = f"{uri_source(cfg)}={redact(uri)}"
    scheme = urlsplit(uri).scheme.split("+")[0].lower()
    if scheme == "sqlite":
        check_sqlite(sqlite_path(uri, key), key)
    elif scheme in ("http", "https"):
        check_server(uri, key)
    elif scheme in DATABASES:
        check_database(uri, key)
    elif scheme in ("", "file"):
        check_file_store(uri, key)
    else:
        check_known_scheme(scheme, key)


def store_to_read(given: str | None) -> str:
    """The tracking URI a reading command (`src.predict`, `src.report`, `src.summary`) opens,
    from --tracking-uri, $MLFLOW_TRACKING_URI or the default store, checked as `src.train`
    checks its own: a known scheme, a server or database that answers, and an SQLite file that
    exists (MLflow would create an empty one, and every run would then be "not found")."""
    cfg = TrackingConfig(uri=given, dir=DEFAULT_STORE_DIR)
    uri = tracking_uri(cfg)
    source = "--tracking-uri" if given else uri_source(cfg).replace("tracking.dir", "the default")
    key = f"{source}={redact(uri)}"
    scheme = urlsplit(uri).scheme.split("+")[0].lower()
    if scheme == "sqlite":
        db = sqlite_path(uri, key)
        if not db.is_file():
            raise UserError(
                f"{key}: {db} does not exist, so it holds no runs: point --tracking-uri at the "
                "mlflow.db your runs wrote (by default mlruns/mlflow.db where src.train ran)"
            )
        check_is_sqlite(db, key)
    elif scheme in ("http", "https"):
        check_server(uri, key)
    elif scheme in DATABASES:
        check_database(uri, key)
    elif scheme not in ("", "file"):
        check_known_scheme(scheme, key)
    return uri


def check_known_scheme(scheme: str, key: str) -> None:
    """A scheme MLflow can open: hosted Databricks, or one an installed plugin registers."""
    if scheme not in DATABRICKS and scheme not in plugin_schemes():
        raise UserError(f"{key}: unknown tracking URI scheme '{scheme}:'; use {EXAMPLES}")


def plugin_schemes() -> set[str]:
    """Schemes that installed MLflow plugins (Azure ML, ...) register for tracking stores."""
    return {e.name for e in importlib.metadata.entry_points(group="mlflow.tracking_store")}


def uri_source(cfg: TrackingConfig) -> str:
    """Which setting the URI comes from, as a user would change it."""
    if cfg.uri:
        return "tracking.uri"
    return "$MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "tracking.dir"


def sqlite_path(uri: str, key: str) -> Path:
    """The database file of a `sqlite:///path` URI (refusing in-memory stores)."""
    rest = uri.split(":", 1)[1]
    if rest in ("", "//", "///:memory:") or not rest.startswith("///"):
        raise UserError(
            f"{key}: an in-memory or malformed SQLite URI keeps no runs; use"
            " sqlite:///path/mlflow.db (three slashes, then the path; four for an absolute one)"
        )
    return Path(rest.removeprefix("///").split("?", 1)[0]).expanduser()


def check_sqlite(db: Path, key: str) -> None:
    """An SQLite file (or a place to create one) this process can read and write."""
    if db.exists():
        check_is_sqlite(db, key)
        if not os.access(db, os.R_OK | os.W_OK) or not os.access(db.parent, os.W_OK | os.X_OK):
            raise UserError(
                f"{key}: {db} is read-only for this user (SQLite also writes a journal next to"
                " it): make the file and its folder writable, or use another tracking.uri"
            )
        return
    if not writable_place(db.parent):
        raise UserError(
            f"{key}: cannot create {db} there (not a writable folder): choose a writable place"
            " for the store"
        )


def check_is_sqlite(db: Path, key: str) -> None:
    """An existing store file is an SQLite database (or still empty)."""
    regular_file(db, key.split("=", 1)[0])
    with db.open("rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        raise UserError(
            f"{key}: {db} is not an SQLite database (it starts with {header[:8]!r}); point"
            " the URI at an mlflow.db or at a file that does not exist yet"
        )


def check_server(uri: str, key: str) -> None:
    """An MLflow tracking server answers its health check, once, within PROBE_TIMEOUT."""
    parts = urlsplit(uri)
    # urllib takes `user:password@` for part of the host name; requests (MLflow's client) sends
    # it as basic auth, so the probe does too.
    host = parts.netloc.rpartition("@")[2]
    health = urlunsplit(parts._replace(netloc=host)).rstrip("/") + "/health"
    request = urllib.request.Request(health)
    if parts.username is not None:
        user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT) as response:
            response.read(64)
    except urllib.error.HTTPError as exc:
        if exc.code != 404:  # it answered: credentials and the rest are MLflow's business
            return
        raise UserError(
            f"{key} is not an MLflow tracking server (GET /health answered {exc.code} {exc.reason})"
            ": check the host and port"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(
            f"cannot reach the MLflow tracking server {key} ({reason}): is `mlflow server`"
            " running there (make services), and the host and port right?"
        ) from exc


def check_database(uri: str, key: str) -> None:
    """A PostgreSQL / MySQL / SQL Server database accepts a connection within PROBE_TIMEOUT."""
    import sqlalchemy

    timeout = {"mssql": "timeout"}.get(uri.split(":", 1)[0].split("+")[0], "connect_timeout")
    try:
        engine = sqlalchemy.create_engine(uri, connect_args={timeout: int(PROBE_TIMEOUT)})
        with engine.connect():
            pass
        engine.dispose()
    except ImportError as exc:
        raise UserError(
            f"{key} needs the database driver {exc.name}: pip install -e '.[services]', or name"
            " an installed driver in the URI (postgresql+psycopg://…)"
        ) from exc
    except Exception as exc:  # SQLAlchemy wraps every driver's errors differently
        reason = redact(" ".join(str(getattr(exc, "orig", None) or exc).split()))[:300]
        raise UserError(
            f"cannot open the MLflow store {key} ({type(exc).__name__}: {reason}): is the"
            " database server running and reachable, and the user, password and database right?"
        ) from exc


def check_file_store(uri: str, key: str) -> None:
    """A file store only where MLflow still allows one, in a writable folder."""
    if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
        raise UserError(
            f"{key} is a file store, which MLflow 3 no longer opens (set"
            " MLFLOW_ALLOW_FILE_STORE=true to force it): use sqlite:///<folder>/mlflow.db"
        )
    if not writable_place(Path(uri.removeprefix("file://"))):
        raise UserError(f"{key}: not a writable folder")
