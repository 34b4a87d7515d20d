"""A tiny Hydra task for the sweeper tests: a cheap objective with per-step reports."""

from __future__ import annotations

import json
import os
import time

import hydra
import optuna
from omegaconf import DictConfig

from src.sweep.trial import open_trial, report


def objective(x: float, y: float, cat: str, step: int) -> float:
    """Best near x=1, y=2, cat=b; grows towards its final value over the steps."""
    base = -((x - 1.0) ** 2) - (y - 2.0) ** 2 + (0.5 if cat == "b" else 0.0)
    if x > 5:  # the hopeless region
        base -= 1000.0
    return base - 1.0 / (step + 1)


def y_for_b_only(cfg: DictConfig, trial: optuna.Trial) -> None:
    """A custom search space: y is searched, near its optimum, only when cat is b."""
    if trial.params["cat"] == "b":
        trial.suggest_float("y", 1.5, 2.5)


def suggest_x(cfg: DictConfig, trial: optuna.Trial) -> None:
    """A custom search space suggesting x (which a test also fixes by an override)."""
    trial.suggest_float("x", 0.0, 1.0)


def record_process(path: str | None, trial: int | None, event: str) -> None:
    """Append what this process runs on (a JSON line): the device pool tests read it."""
    if not path:
        return
    env = os.environ
    line = {
        "event": event,
        "trial": trial,
        "time": time.time(),
        "pid": os.getpid(),
        "worker": os.getppid() if "RANK" in env else os.getpid(),
        "devices": env.get("CUDA_VISIBLE_DEVICES"),
        "rank": env.get("RANK"),
        "world_size": env.get("WORLD_SIZE"),
    }
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | list[float] | None:
    """Sleep, report every step to the Optuna trial (if any), return the final value (and
    |x| as a second objective to minimise when asked)."""
    if cfg.calls_file:
        with open(cfg.calls_file, "a") as f:
            f.write(f"{cfg.trial.trial_id} x={cfg.x} y={cfg.y} cat={cfg.cat}\n")
    if cfg.fail_if_x_above is not None and cfg.x > cfg.fail_if_x_above:
        raise ValueError(f"x={cfg.x} is above {cfg.fail_if_x_above}")
    if cfg.return_nan:
        return float("nan")
    trial = open_trial(cfg.trial)
    number = trial.number if trial is not None else None
    record_process(cfg.devices_file, number, "start")
    while cfg.hold_file and not os.path.exists(cfg.hold_file):  # the test lets it go on
        time.sleep(0.05)
    value = 0.0
    for step in range(cfg.steps):
        time.sleep(cfg.sleep)
        value = objective(cfg.x, cfg.y, cfg.cat, step)
        if trial is not None:
            report(trial, value, step)
    if cfg.result_file:
        with open(cfg.result_file, "a") as f:
            f.write(f"{value!r}\n")
    record_process(cfg.devices_file, number, "end")
    return [value, abs(cfg.x)] if cfg.second_objective else value


if __name__ == "__main__":
    main()
