"""``hydra.sweeper.custom_search_space``: a function that suggests more parameters with
Optuna's trial object once the configured ones are sampled, as in hydra-optuna-sweeper
(``fn(cfg, trial) -> None``); and `method_levers`, an example for this project's methods."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optuna
from hydra.utils import get_method
from omegaconf import DictConfig

from src.config.errors import UserError
from src.model.methods import method_named

SpaceExtender = Callable[[DictConfig, optuna.Trial], None]


def load_extender(path: str | None) -> SpaceExtender | None:
    """The function named by ``custom_search_space`` (None when unset); one line if missing."""
    if path is None:
        return None
    try:
        return get_method(path)
    except Exception as exc:
        reason = " ".join(str(exc).split())
        raise UserError(
            f"hydra.sweeper.custom_search_space={path}: cannot import it ({reason}); give an "
            "importable module.function(cfg, trial)"
        ) from None


def extend_trial(
    extender: SpaceExtender, cfg: DictConfig, trial: optuna.Trial, fixed: Mapping[str, Any]
) -> None:
    """Let the function suggest its parameters; one line if it fails, or if it suggests a
    parameter an override already fixes (hydra-optuna-sweeper refuses that too)."""
    try:
        extender(cfg, trial)
    except Exception as exc:
        reason = " ".join(str(exc).split())
        raise UserError(f"failed on trial {trial.number}: {type(exc).__name__}: {reason}") from exc
    clash = sorted({k.lstrip("+~") for k in trial.params} & {k.lstrip("+~") for k in fixed})
    if clash:
        raise UserError(
            f"it suggests {', '.join(clash)}, which an override fixes "
            f"({', '.join(f'{k}={fixed[k]}' for k in clash if k in fixed)}): drop one of them"
        )


def method_levers(cfg: DictConfig, trial: optuna.Trial) -> None:
    """Each method's own levers (`Method.levers`), sampled only for trials of that method: e.g.
    the LoRA rank (log 4..128) for the LoRA family, the number of top blocks that train for
    freeze_layers (up to the tiny preset's depth, else 4). Needs ``method`` among the searched
    parameters."""
    method_named(str(trial.params.get("method", cfg.method.name))).levers(cfg, trial)
