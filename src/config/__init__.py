"""The config tree (conf/) as typed dataclasses, and the checks run on a composed config."""

import hashlib
from pathlib import Path

from omegaconf import OmegaConf

# Absolute, so that `python -m src.train` and the installed `clfsweep` command find the same
# tree (a relative config_path makes Hydra look for an importable `conf` package instead).
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

MAX_FOLDER_NAME = 200  # bytes; file systems allow 255


def folder_name(text: str) -> str:
    """A multirun job's folder name from its overrides (`hydra.sweep.subdir`): a `/` in a value
    (a path, a prompt) would nest folders, and a name over 255 bytes cannot be made; a long one
    keeps its start and a digest of the whole, so distinct overrides stay distinct."""
    name = text.replace("/", "_")  # the job's number in front keeps names distinct
    if len(name.encode()) <= MAX_FOLDER_NAME:
        return name
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    start = name.encode()[: MAX_FOLDER_NAME - 13].decode(errors="ignore")
    return f"{start}~{digest}"


def register_resolvers() -> None:
    """Our resolvers of Hydra's config (`hydra.sweep.subdir`); again before each multirun, as
    a restored Hydra state (Singleton.set_state) may have dropped them."""
    OmegaConf.register_new_resolver("folder_name", folder_name, replace=True)


register_resolvers()
