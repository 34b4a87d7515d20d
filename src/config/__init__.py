"""The config tree (conf/) as typed dataclasses, and the checks run on a composed config."""

from pathlib import Path

# Absolute, so that `python -m src.train` and the installed `clfsweep` command find the same
# tree (a relative config_path makes Hydra look for an importable `conf` package instead).
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
