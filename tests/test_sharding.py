"""A run too large for one GPU: how many GPUs it gets, and FSDP on them.

The sharded path runs here for real: two CPU processes over gloo (torchrun) train a tiny Qwen2
with FSDP2, as a trial on two GPUs of a node would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from omegaconf import DictConfig

from src.config.schema import Strategy
from src.model.memory import GIB, PRESETS, Plan, estimate
from src.model.sharding import gpus_needed, resolve_strategy, sharded
from tests.conftest import QUICK, ROOT, Store

H100 = 80e9
QWEN2_7B = PRESETS["qwen2_7b_base"]
SFT = Plan(method="sft", batch_size=16, max_len=512, precision="bf16", device="cuda")
LORA = replace(SFT, method="lora", rank=16, target_modules=("all-linear",))

# The sharded and the one-process run see the same 12 training reviews in one optimizer step
# an epoch (6 per rank, or 12 at once): their results differ by float summation order only.
TOLERANCE = 1e-4


def test_a_run_that_fits_one_gpu_gets_one_and_a_larger_one_the_fewest_fsdp_fits() -> None:
    assert gpus_needed(QWEN2_7B, LORA, H100, Strategy.auto) == 1
    n = gpus_needed(QWEN2_7B, SFT, H100, Strategy.auto)
    assert n is not None and n > 1
    assert sharded(QWEN2_7B, SFT, n).total <= 0.9 * H100 < sharded(QWEN2_7B, SFT, n - 1).total
    assert estimate(QWEN2_7B, SFT).total / GIB > 150  # the 167 GiB as configured
    assert gpus_needed(QWEN2_7B, SFT, H100, Strategy.ddp) is None  # copies never make it fit


def test_sharding_splits_weights_gradients_and_optimizer_states_but_not_activations() -> None:
    one, two = sharded(QWEN2_7B, SFT, 1), sharded(QWEN2_7B, SFT, 2)
    assert two.optimizer == pytest.approx(one.optimizer / 2)
    assert two.gradients == pytest.approx(one.gradients / 2)
    assert two.weights == pytest.approx(one.weights / 2)
    assert two.activations == one.activations


@pytest.mark.parametrize(
    ("strategy", "processes", "fits_one", "runs"),
    [
        (Strategy.auto, 1, False, "single"),
        (Strategy.fsdp, 1, True, "single"),
        (Strategy.auto, 2, True, "ddp"),
        (Strategy.auto, 2, False, "fsdp"),
        (Strategy.fsdp, 2, True, "fsdp"),
        (Strategy.ddp, 2, False, "ddp"),
    ],
)
def test_auto_shards_only_a_run_that_does_not_fit_one_gpu(
    strategy: Strategy, processes: int, fits_one: bool, runs: str
) -> None:
    assert resolve_strategy(strategy, processes, fits_one) == runs


def train(store: Store, processes: int, *overrides: str) -> subprocess.CompletedProcess[str]:
    """src.train on `processes` CPU processes (torchrun's engine for more than one)."""
    launcher = [sys.executable, "-m"]
    if processes > 1:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        launcher = [torchrun, "--standalone", f"--nproc_per_node={processes}", "-m"]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RANK")}
    return subprocess.run(
        [*launcher, "src.train", *QUICK, *overrides, *store.overrides()],
        cwd=ROOT,
        env=env | {"OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_fsdp_on_two_processes_matches_one_process_records_one_run_and_exports_a_model(
    tmp_path: Path, compose_cfg: Callable[..., DictConfig]
) -> None:
    from src.checkpoint.classifier import classify
    from src.data.sources import load_splits

    method = ["method=sft", "trainer.logging_steps=1"]
    alone, shared = Store(tmp_path / "one"), Store(tmp_path / "fsdp")
    one = train(alone, 1, *method, "trainer.batch_size=12")
    assert one.returncode == 0, one.stderr[-4000:]
    two = train(shared, 2, *method, "trainer.batch_size=6", "trainer.strategy=fsdp")
    assert two.returncode == 0, two.stderr[-4000:]

    (single,) = alone.runs()
    (run,) = shared.runs()  # rank 0 alone records
    assert run.data.tags["strategy"] == "fsdp" and single.data.tags["strategy"] == "single"
    client = shared.client()
    for name in ("eval_loss", "eval_macro_f1", "train_loss"):
        sharded_run = [m.value for m in client.get_metric_history(run.info.run_id, name)]
        alone_run = [
            m.value for m in alone.client().get_metric_history(single.info.run_id, name)
        ]
        assert len(sharded_run) == len(alone_run) > 0, name
        np.testing.assert_allclose(sharded_run, alone_run, atol=TOLERANCE, err_msg=name)

    (output,) = run.outputs.model_outputs  # one checkpoint, full weights, from rank 0
    mlflow.set_tracking_uri(shared.uri)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{output.model_id}"))
    checkpoint = local / "artifacts" / "checkpoint"
    assert (checkpoint / "model.safetensors").is_file()
    table = pd.read_csv(
        client.download_artifacts(run.info.run_id, "predictions/test.csv", str(tmp_path))
    )
    cfg = compose_cfg(*QUICK)
    test = load_splits(cfg.data, cfg.seed, cfg.task.name).test.set_index("id")
    answers = classify(checkpoint, test.loc[table.id, "text"].tolist(), batch_size=8, max_len=32)
    names = [c.removeprefix("p_") for c in table.columns if c.startswith("p_")]
    reloaded = [[a["probabilities"][n] for n in names] for a in answers]
    np.testing.assert_allclose(reloaded, table[[f"p_{n}" for n in names]], atol=1e-6)
