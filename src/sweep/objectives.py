"""What a study optimises: one value per direction, from the job's return value; the best
trial of a single-objective study or the Pareto front of a multi-objective one."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial

from src.config.errors import UserError


def objective_names(config: DictConfig, n_directions: int) -> list[str] | None:
    """The metrics the job returns, one per direction (the app's `optimized_metric`), or None
    for an app without one; a count that differs from the directions' is one clear line."""
    metric = OmegaConf.select(config, "optimized_metric", default=None)
    if metric is None:
        return None
    names = [str(m) for m in metric] if OmegaConf.is_list(metric) else [str(metric)]
    if len(names) != n_directions:
        raise UserError(
            f"optimized_metric names {len(names)} metric(s) ({', '.join(names)}) but "
            f"hydra.sweeper.direction gives {n_directions}: give one direction per metric"
        )
    return names


def finite_float(value: Any) -> float | None:
    """A finite float from one returned value, else None."""
    if value is None or isinstance(value, bool | str):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def objective_values(value: Any, n_objectives: int) -> list[float] | None:
    """One finite float per objective from a job's return value (a number; for a
    multi-objective study a list of `n_objectives` numbers), else None."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    is_list = isinstance(value, list | tuple)
    if is_list != (n_objectives > 1):
        return None
    numbers = [finite_float(v) for v in (value if is_list else [value])]
    if len(numbers) != n_objectives or any(v is None for v in numbers):
        return None
    return [v for v in numbers if v is not None]


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best COMPLETE trial (single objective) or the Pareto front, by trial number."""
    if len(study.directions) > 1:
        return sorted(study.best_trials, key=lambda t: t.number)
    try:
        return [study.best_trial]
    except ValueError:
        return []


def describe_values(values: Sequence[float], names: Sequence[str] | None = None) -> str:
    """``value=0.8125`` or ``eval_macro_f1=0.8125 trainable_params=1.2e+04``."""
    if len(values) == 1 and not names:
        return f"value={values[0]:.6g}"
    labels = names or [f"objective{i}" for i in range(len(values))]
    return " ".join(f"{n}={v:.6g}" for n, v in zip(labels, values, strict=True))
