"""Scale-out: a multi-process run through torchrun (gloo on CPU), the FSDP settings.
(SLURM: tests/test_slurm.py runs the launcher example on a real cluster.)

`make train-ddp` runs `torchrun -m src.train`; here two CPU processes train one tiny model
(DistributedDataParallel over gloo): rank 0 alone records the run (each metric once) and
saves the one checkpoint.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import LoggedModelStatus

from src.config.schema import TrackingConfig
from src.tracking import names, record
from tests.conftest import QUICK, ROOT, Store

EPOCHS = 2


@pytest.mark.slow  # two ranks train; test_devices runs a two-rank trial by default
def test_torchrun_two_processes_record_one_run_once_and_save_one_checkpoint(
    store: Store,
) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RANK")}
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "src.train",
            *QUICK,
            "trainer.batch_size=2",  # 12 reviews: 6 steps an epoch alone, 3 on two ranks
            "trainer.logging_steps=1",
            *store.overrides(),
        ],
        cwd=ROOT,
        env=env | {"OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    (run,) = store.runs()  # one run, not one per rank
    client = store.client()
    assert run.info.status == "FINISHED"
    assert run.data.tags[names.PID_TAG] != ""
    epochs = [m.step for m in client.get_metric_history(run.info.run_id, "eval_macro_f1")]
    assert epochs == list(range(1, EPOCHS + 1))  # each epoch's metrics logged once
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert steps == list(range(1, 3 * EPOCHS + 1))  # each step once; two ranks share the data
    assert len(client.get_metric_history(run.info.run_id, "test_macro_f1")) == 1
    (output,) = run.outputs.model_outputs  # one checkpoint, from rank 0
    assert client.get_logged_model(output.model_id).status == LoggedModelStatus.READY
    models = client.search_logged_models([run.info.experiment_id])
    assert [m.model_id for m in models] == [output.model_id]  # and no other anywhere
    outputs = store.root / "outputs"
    assert not list(outputs.glob("trainer*"))  # per-epoch checkpoints removed by rank 0
    assert not list(outputs.glob(".staging-*"))


def test_only_rank_0_records(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RANK", "1")
    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", dir=str(tmp_path))
    assert record.setup(cfg) == ""  # no store is even opened on rank 1
    with record.run("", "x", {}) as active:
        assert active is None
        record.log_metrics({"a": 1.0})
        record.log_dict({"a": 1}, "a.json")
    assert not (tmp_path / "mlflow.db").exists()


def test_a_sharded_run_saves_each_epoch_and_leaves_loading_the_best_to_us(
    tmp_path: Path,
) -> None:
    """The Trainer cannot copy a checkpoint into FSDP's sharded parameters: a sharded run keeps
    its best epoch's checkpoint and src.training.trainer.fit loads it into an unsharded model."""
    from src.config.schema import Precision, TrainerConfig
    from src.training.arguments import training_arguments

    def arguments(sharded: bool) -> Any:
        return training_arguments(
            TrainerConfig(), tmp_path, 0, "eval_macro_f1", Precision.fp32, False, sharded=sharded
        )

    sharded = arguments(True)
    assert not sharded.fsdp  # accelerate shards nothing: src.model.sharding.shard did
    assert sharded.save_only_model and not sharded.load_best_model_at_end
    assert sharded.metric_for_best_model == "macro_f1"  # the best checkpoint is still kept
    alone = arguments(False)
    assert alone.save_only_model and alone.load_best_model_at_end
    assert not alone.average_tokens_across_devices  # a batch mean, not a token sum


def test_makefile_train_ddp_runs_torchrun_with_one_output_dir_for_all_ranks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ntrain-ddp:", 1)[1].split("\n\n", 1)[0]
    assert "torchrun --standalone --nproc_per_node=$(NPROC) -m src.train" in recipe
    assert re.search(r"hydra\.run\.dir=\S+\$\$\(date", recipe)  # evaluated once, by the shell
