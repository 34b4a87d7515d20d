"""Where runs go, and URIs made safe to print: light, so commands can use it before MLflow loads."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.config.schema import TrackingConfig


def tracking_uri(cfg: TrackingConfig) -> str:
    """The configured URI, else $MLFLOW_TRACKING_URI, else the embedded SQLite store under `dir`."""
    if cfg.uri:
        return cfg.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(cfg.dir).resolve() / 'mlflow.db'}"


def redact_values(values: Mapping[str, Any]) -> dict[str, str]:
    """Tags or params as strings, any password in a URI among them hidden."""
    return {key: redact(str(value)) for key, value in values.items()}


def redact(uri: str) -> str:
    """Hide a password in a URI (`scheme://user:secret@host` → `scheme://user:***@host`), also
    one with an unescaped `@`, and every URI in a longer text."""
    # `:/` too: a URL passed through pathlib (a data path) loses one slash but not its password.
    return re.sub(r"(:/{1,2}[^:/@\s]+):[^/\s]*@", r"\1:***@", uri)
