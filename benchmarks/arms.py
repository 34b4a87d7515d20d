"""One benchmark arm in a fresh process, so that its peak RSS is its own.

python -m benchmarks.arms {article,ours,plain} --settings '<json>' --workdir DIR --out FILE
python -m benchmarks.arms store --settings '{}' --workdir DIR --out FILE

Writes a JSON object: the arm's speeds, its padding counts per phase and its peak RSS. `store`
creates an MLflow store (SQLite schema + the experiment) that `ours --store DIR` starts from: a
user's `mlruns/` exists after their first run, so its one-time creation is not timed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PaddingMeter,
    Settings,
    bench_checkpoint,
    load_bench_splits,
    ours_overrides,
    peak_rss_mb,
    stopwatch,
)


def pad_id(checkpoint: Path) -> int:
    from transformers import AutoTokenizer

    pad = AutoTokenizer.from_pretrained(checkpoint).pad_token_id
    assert pad is not None
    return int(pad)


def run_article(settings: Settings, checkpoint: Path, workdir: Path) -> dict[str, Any]:
    from benchmarks import article_recipe

    meter = PaddingMeter(pad_id(checkpoint))
    splits = load_bench_splits(settings, checkpoint)
    out = article_recipe.run(
        settings,
        checkpoint,
        splits,
        workdir,
        attach_meter=lambda model: meter.attach(model.get_input_embeddings()),
    )
    return out | {"padding": meter.as_dict()}


def run_plain(settings: Settings, checkpoint: Path, workdir: Path) -> dict[str, Any]:
    from benchmarks import plain_trainer

    meter = PaddingMeter(pad_id(checkpoint))
    out = plain_trainer.run(
        settings,
        checkpoint,
        lambda: load_bench_splits(settings, checkpoint),
        workdir,
        attach_meter=lambda model: meter.attach(model.get_input_embeddings()),
    )
    return out | {"padding": meter.as_dict()}


def run_store(settings: Settings, checkpoint: Path, workdir: Path) -> dict[str, Any]:
    """An MLflow store with the benchmark's experiment, created by our own tracking setup."""
    from src.config.schema import TrackingConfig
    from src.tracking import record

    experiment_id = record.setup(TrackingConfig(dir=str(workdir / "mlruns"), experiment="bench"))
    return {"store": str(workdir / "mlruns"), "experiment_id": experiment_id}


def run_ours(
    settings: Settings, checkpoint: Path, workdir: Path, store: Path | None = None
) -> dict[str, Any]:
    """`python -m src.train <overrides>`, in this process, observed by the padding meter."""
    import runpy

    import mlflow

    import src.train  # noqa: F401  (its imports, outside the timed region)

    if store is not None:
        (workdir / "mlruns").mkdir(parents=True, exist_ok=True)
        shutil.copy(store / "mlflow.db", workdir / "mlruns" / "mlflow.db")
    meter = PaddingMeter(pad_id(checkpoint))
    detach = meter.attach_on_first_use(settings.vocab_size)
    sys.argv = ["src.train", *ours_overrides(settings, checkpoint, workdir)]
    with stopwatch() as wall:
        # As `python -m src.train`: Hydra finds conf/ relative to the __main__ module.
        runpy.run_module("src.train", run_name="__main__", alter_sys=True)
    detach()
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bench")
    assert experiment is not None, "our arm logged no run"
    (run,) = client.search_runs([experiment.experiment_id])
    metrics = run.data.metrics
    return {
        "train_samples_per_second": metrics["train_samples_per_second"],
        "test_samples_per_second": metrics["test_samples_per_second"],
        "test_macro_f1": metrics["test_macro_f1"],
        "wall_s": wall["s"],
        "padding": meter.as_dict(),
    }


ARMS = {"article": run_article, "ours": run_ours, "plain": run_plain, "store": run_store}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("arm", choices=sorted(ARMS))
    parser.add_argument("--settings", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--store", type=Path, help="ours: start from this MLflow store")
    args = parser.parse_args()
    settings = Settings.from_json(args.settings)
    checkpoint = bench_checkpoint(settings)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.arm == "ours":
        result = run_ours(settings, checkpoint, args.workdir, args.store)
    else:
        result = ARMS[args.arm](settings, checkpoint, args.workdir)
    result["peak_rss_mb"] = peak_rss_mb()
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
