"""The trial as the training job sees it: re-opened from the sweeper's storage, reported to
every epoch, pruned when the study's pruner says so. The sweeper builds pruners here too."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.storages import BaseStorage

from src.config.schema import TrialConfig
from src.sweep.storage import open_storage
from src.tracking.names import PRUNER_ATTR

log = logging.getLogger(__name__)

PRUNERS = ("median", "percentile", "hyperband", "successive_halving", "none")
# The settings of hydra.sweeper.pruner each pruner takes (besides `kwargs`, passed through).
_PRUNING = ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials")
PRUNER_SETTINGS: dict[str, tuple[str, ...]] = {
    "median": _PRUNING,
    "percentile": ("percentile", *_PRUNING),
    "hyperband": ("min_resource", "max_resource", "reduction_factor", "bootstrap_count"),
    "successive_halving": (
        "min_resource",
        "reduction_factor",
        "min_early_stopping_rate",
        "bootstrap_count",
    ),
    "none": (),
    "nop": (),
}
_JOB_STORAGES: dict[str, BaseStorage] = {}  # storages opened by jobs of this process


def build_pruner(spec: Mapping[str, Any] | None) -> optuna.pruners.BasePruner:
    """An Optuna pruner from a spec like ``{"name": "median", "n_startup_trials": 5, ...}``."""
    spec = dict(spec or {"name": "none"})
    name = str(spec.pop("name", "none") or "none").lower()
    spec = {k: v for k, v in spec.items() if v is not None}
    if name not in PRUNER_SETTINGS:
        raise ValueError(f"unknown pruner {name!r}: choose one of {', '.join(PRUNERS)}")
    if name in ("none", "nop"):  # pruning off: the other pruners' settings are moot
        return optuna.pruners.NopPruner()
    unused = sorted(set(spec) - {"kwargs", *PRUNER_SETTINGS[name]})
    if unused:  # they would be dropped here, changing nothing while logged as the sweep's
        raise ValueError(f"pruner {name} takes no {', '.join(unused)}")
    kwargs = _pick_kwargs(spec, PRUNER_SETTINGS[name])
    if name == "median":
        return optuna.pruners.MedianPruner(**kwargs)
    if name == "percentile":
        kwargs.setdefault("percentile", 25.0)
        return optuna.pruners.PercentilePruner(**kwargs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**kwargs)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**kwargs)
    return optuna.pruners.NopPruner()


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
    storage = _JOB_STORAGES[cfg.storage]
    study = load_study(storage, cfg.study_name)
    frozen = storage.get_trial(int(cfg.trial_id))
    if frozen.state != optuna.trial.TrialState.RUNNING:
        log.warning(
            "Optuna trial %d of study %s is %s: not reporting to it",
            frozen.number,
            cfg.study_name,
            frozen.state.name,
        )
        return None
    return optuna.trial.Trial(study, int(cfg.trial_id))


def report(trial: optuna.Trial, value: float, step: int, name: str = "value") -> None:
    """Report an intermediate value (a non-finite one is skipped: it would poison the pruner's
    medians); raise ``optuna.TrialPruned`` when the pruner says stop. Optuna keeps intermediate
    values and prunes in single-objective studies only: a multi-objective trial reports nothing."""
    if len(trial.study.directions) > 1 or not math.isfinite(float(value)):
        return
    group = _process_group()
    prune = False
    if group is None or group.get_rank() == 0:
        trial.report(float(value), step=step)
        prune = trial.should_prune()
    if group is not None:
        # Ranks of a DDP trial prune together or not at all (one alone would leave the others
        # waiting in a collective): rank 0 reports and decides for all.
        decision = [prune]
        group.broadcast_object_list(decision, src=0)
        prune = bool(decision[0])
    if prune:
        raise optuna.TrialPruned(f"pruned at epoch {step}: {name}={value:.4g}")


def _process_group() -> Any:
    """torch.distributed when this process is one rank of several, else None (no torch import:
    a job that never started a process group has not imported it either)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist if dist.get_world_size() > 1 else None


def pruning_hook(trial: optuna.Trial, metric: str) -> Callable[[int, dict[str, float]], None]:
    """An epoch hook reporting the validation metric to the trial, pruning when told."""

    def hook(epoch: int, metrics: dict[str, float]) -> None:
        if metric in metrics:
            report(trial, metrics[metric], epoch, metric)

    return hook
