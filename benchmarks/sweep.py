"""Sweep efficiency: TPE + pruning against the full grid over the same small space.

The grid is run for real, once, with our pipeline (`python -m src.train -m ...`, 3 epochs each,
validation macro F1 after every epoch, read back from MLflow) and cached as a table of per-epoch
validation curves in `benchmarks/results/grid_curves.json`. The TPE + pruning study is then
*replayed* on that table with Optuna's own TPESampler and our sweeper's pruner
(src.sweep.trial), over
many sampler seeds: a trial asks for a (rank, lr) cell, reports the cell's recorded curve epoch by
epoch and stops where the pruner says. This is exact for the grid's cells (the same seed, the same
curves), cheap, and free of timing noise; what it leaves out is run-to-run noise of a re-run cell.

Measure: training steps spent until the best finished trial is within 0.5 macro-F1 point of the
grid's best, as a share of the steps the full grid spends.

python -m benchmarks.sweep --build   # run the grid (about 15 minutes on 2 CPU cores)
python -m benchmarks.sweep           # replay and print the summary
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    ROOT,
    Settings,
    bench_checkpoint,
    machine_info,
    ours_overrides,
)

GRID_FILE = RESULTS / "grid_curves.json"
RANKS = (8, 16, 32, 64)
LRS = (1e-4, 3e-4, 1e-3, 3e-3)
EPOCHS = 3
TOLERANCE = 0.005  # half a macro-F1 point
SAMPLER = {"name": "tpe", "n_startup_trials": 4}
# Pruning from the second epoch on, as conf/hparams_search/lora_rank_lr_epochs.yaml does: the
# grid's best cell is a late bloomer (below the median after epoch 1), which pruning at epoch 1
# kills in about a quarter of the studies (see ALTERNATIVES in the summary).
PRUNER = {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 2}
ALTERNATIVES: dict[str, dict[str, Any]] = {
    "TPE without pruning": {"name": "none"},
    "median pruning from epoch 1": {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
}
MAX_TRIALS = 48
# On a random-init backbone LoRA alone learns next to nothing (the grid's F1 spread would be
# noise); training the embeddings too gives the landscape a real signal. 1,000 validation texts
# keep the noise of a cell's F1 near one point.
GRID_OVERRIDES = ["method.train_embeddings=true", "data.max_eval=1000"]


def build_grid(settings: Settings, out: Path = GRID_FILE) -> dict[str, Any]:
    """Run the grid with our pipeline and store the per-epoch validation curves."""
    settings = replace(settings, epochs=EPOCHS)
    checkpoint = bench_checkpoint(settings)
    with tempfile.TemporaryDirectory(prefix="bench-grid-") as tmp:
        workdir = Path(tmp)
        overrides = [
            o
            for o in ours_overrides(settings, checkpoint, workdir)
            if not o.startswith(("trainer.lr=", "method.rank=", "hydra.run.dir="))
        ]
        command = [
            sys.executable,
            "-m",
            "src.train",
            "-m",
            *overrides,
            f"method.rank={','.join(map(str, RANKS))}",
            f"trainer.lr={','.join(map(str, LRS))}",
            *GRID_OVERRIDES,
            "tracking.log_model=false",
            f"hydra.sweep.dir={workdir / 'sweep'}",
        ]
        subprocess.run(command, cwd=ROOT, check=True)
        runs = read_curves(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    table = {
        "description": "per-epoch validation macro F1 of every grid cell, from real runs",
        "settings": json.loads(settings.to_json()),
        "space": {"method.rank": list(RANKS), "trainer.lr": list(LRS)},
        "overrides": GRID_OVERRIDES,
        "epochs": EPOCHS,
        "steps_per_epoch": math.ceil(settings.n_train / settings.batch_size),
        "machine": machine_info(),
        "runs": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=2))
    return table


def read_curves(uri: str) -> list[dict[str, Any]]:
    """(rank, lr, per-epoch eval_macro_f1) of every finished child run of the grid."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("bench")
    assert experiment is not None
    runs = []
    for run in client.search_runs([experiment.experiment_id]):
        if "mlflow.parentRunId" not in run.data.tags:
            continue
        history = client.get_metric_history(run.info.run_id, "eval_macro_f1")
        curve = [m.value for m in sorted(history, key=lambda m: m.step)]
        runs.append(
            {
                "rank": int(run.data.params["method.rank"]),
                "lr": float(run.data.params["trainer.lr"]),
                "curve": curve,
            }
        )
    return sorted(runs, key=lambda r: (r["rank"], r["lr"]))


def replay(
    table: dict[str, Any],
    seed: int,
    sampler: dict[str, Any] = SAMPLER,
    pruner: dict[str, Any] = PRUNER,
    max_trials: int = MAX_TRIALS,
) -> dict[str, Any]:
    """One TPE + pruning study on the table: steps and trials until within TOLERANCE of the best."""
    import optuna

    from src.sweep.trial import build_pruner

    curves = {(r["rank"], r["lr"]): r["curve"] for r in table["runs"]}
    target = max(max(c) for c in curves.values()) - TOLERANCE
    steps_per_epoch = int(table["steps_per_epoch"])
    kwargs = {k: v for k, v in sampler.items() if k != "name"}
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, **kwargs),
        pruner=build_pruner(dict(pruner)),
    )
    space: dict[str, optuna.distributions.BaseDistribution] = {
        "rank": optuna.distributions.CategoricalDistribution(sorted({k[0] for k in curves})),
        "lr": optuna.distributions.CategoricalDistribution(sorted({k[1] for k in curves})),
    }
    steps = 0
    for number in range(1, max_trials + 1):
        trial = study.ask(space)
        curve = curves[(trial.params["rank"], trial.params["lr"])]
        pruned = False
        for epoch, value in enumerate(curve, start=1):
            steps += steps_per_epoch
            trial.report(value, epoch)
            if epoch < len(curve) and trial.should_prune():
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        best_epoch_value = max(curve)  # the run keeps its best epoch
        study.tell(trial, best_epoch_value)
        if best_epoch_value >= target:
            return {"seed": seed, "reached": True, "steps": steps, "trials": number}
    return {"seed": seed, "reached": False, "steps": steps, "trials": max_trials}


def replay_many(table: dict[str, Any], seeds: int, pruner: dict[str, Any]) -> dict[str, Any]:
    """Share of the grid's steps each of `seeds` studies spends (inf: not within tolerance
    after MAX_TRIALS trials): reached share, median, 90th percentile, median trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = [replay(table, seed, pruner=pruner) for seed in range(seeds)]
    grid_steps = sum(len(r["curve"]) for r in table["runs"]) * int(table["steps_per_epoch"])
    shares = sorted(r["steps"] / grid_steps if r["reached"] else math.inf for r in results)
    return {
        "reached_share": sum(math.isfinite(x) for x in shares) / seeds,
        "median_steps_share": statistics.median(shares),
        "p90_steps_share": shares[int(0.9 * (seeds - 1))],
        "median_trials": statistics.median(r["trials"] for r in results),
    }


def summarize(table: dict[str, Any], seeds: int = 100) -> dict[str, Any]:
    """The replay over `seeds` sampler seeds against the grid's cost (alternatives on half)."""
    curves = [r["curve"] for r in table["runs"]]
    best = max(max(c) for c in curves)
    return {
        "grid_cells": len(curves),
        "grid_steps": sum(len(c) for c in curves) * int(table["steps_per_epoch"]),
        "grid_best": best,
        "good_cells": sum(max(c) >= best - TOLERANCE for c in curves),
        "tolerance": TOLERANCE,
        "seeds": seeds,
        "max_trials": MAX_TRIALS,
        "sampler": SAMPLER,
        "pruner": PRUNER,
        **replay_many(table, seeds, PRUNER),
        "alternatives": {
            name: replay_many(table, max(seeds // 2, 1), pruner)
            for name, pruner in ALTERNATIVES.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--build", action="store_true", help="run the real grid first")
    parser.add_argument("--seeds", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.build:
        build_grid(Settings())
    table = json.loads(GRID_FILE.read_text())
    print(json.dumps(summarize(table, args.seeds), indent=2))


if __name__ == "__main__":
    main()
