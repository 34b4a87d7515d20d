"""A run too large for one GPU: how many GPUs it gets, and FSDP on them.

The sharded path runs here for real: two CPU processes over gloo (torchrun) train a tiny Qwen2
with FSDP2, as a trial on two GPUs of a node would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import DictConfig

from src.config.schema import Strategy
from src.model.memory import GIB, PRESETS, Plan, estimate
from src.model.sharding import layout, place, resolve_strategy, sharded
from tests.conftest import QUICK, ROOT, Store

H100 = 80e9
QWEN2_7B = PRESETS["qwen2_7b_base"]
AS_CONFIGURED = Plan(method="sft", batch_size=16, max_len=512, precision="bf16", device="cuda")
SFT = replace(AS_CONFIGURED, gradient_checkpointing=True)
LORA = replace(SFT, method="lora", rank=16, target_modules=("all-linear",))

# Two processes on half a batch each and one process on the whole batch take the same optimizer
# steps: their results differ by the order of float sums only (seen: 1e-7 on tiny models).
TOLERANCE = 1e-5


def gpus(plan: Plan, strategy: Strategy = Strategy.auto, checkpointing: bool | None = True) -> int:
    """The GPUs of H100 80GB that `place` gives a Qwen2-7B run (0: it fits none)."""
    placed = place(QWEN2_7B, plan, H100, strategy, checkpointing)
    return placed.gpus if placed else 0


def test_a_run_that_fits_one_gpu_gets_one_and_a_larger_one_the_fewest_fsdp_fits() -> None:
    assert gpus(LORA) == 1
    n = gpus(SFT)
    assert n > 1
    assert sharded(QWEN2_7B, SFT, n).total <= 0.9 * H100 < sharded(QWEN2_7B, SFT, n - 1).total
    assert estimate(QWEN2_7B, SFT).total / GIB > 100  # 122 GiB: it needs sharding
    assert gpus(SFT, Strategy.ddp) == 0  # copies never make it fit


def test_sharding_does_not_help_a_run_whose_activations_alone_exceed_the_card() -> None:
    """Batches of 16 x 512 tokens keep their activations on every GPU, however many share the
    weights: without gradient checkpointing LoRA's 74 GiB of activations (its dropout keeps
    copies) fit no H100, and a full fine-tune needs 7 GPUs instead of 2."""
    assert estimate(QWEN2_7B, replace(LORA, gradient_checkpointing=False)).activations / GIB > 70
    assert gpus(LORA, checkpointing=False) == 0
    assert gpus(SFT, checkpointing=False) == 7
    assert gpus(SFT, checkpointing=True) == 2


def test_auto_checkpointing_turns_on_only_where_it_saves_gpus() -> None:
    """trainer.gradient_checkpointing=null: the fewest GPUs first, checkpointed if that is what
    fits them (GPUs are what a node runs short of; checkpointing costs time, not results)."""
    lora, sft = (
        place(QWEN2_7B, LORA, H100, Strategy.auto, None),
        place(QWEN2_7B, SFT, H100, Strategy.auto, None),
    )
    assert lora is not None and (lora.gpus, lora.strategy, lora.checkpointing) == (
        1,
        "single",
        True,
    )
    assert sft is not None and (sft.gpus, sft.strategy, sft.checkpointing) == (2, "fsdp", True)
    short = replace(LORA, batch_size=1, max_len=128)  # small activations: no need
    small = place(QWEN2_7B, short, H100, Strategy.auto, None)
    assert small is not None and (small.gpus, small.checkpointing) == (1, False)


def test_a_method_that_forces_checkpointing_is_placed_and_recorded_as_checkpointed() -> None:
    """QLoRA checkpoints whatever trainer.gradient_checkpointing says (PEFT's k-bit recipe):
    the run's placement, its plan row and its tag say so, not `false`."""
    qlora = replace(LORA, method="qlora", gradient_checkpointing=False)
    for given in (None, False, True):
        placed = layout(QWEN2_7B, qlora, H100, Strategy.auto, 1, given)
        assert placed.checkpointing, given


def test_auto_uses_ddp_for_a_run_one_gpu_holds_checkpointed_and_fsdp_for_one_it_cannot() -> None:
    """On two processes, a run that fits one GPU checkpointed is copied (DDP, checkpointed);
    one that fits none is sharded, checkpointed only if the shards need it."""
    lora = layout(QWEN2_7B, LORA, H100, Strategy.auto, 2, None)
    assert (lora.strategy, lora.checkpointing) == ("ddp", True)
    sft = layout(QWEN2_7B, SFT, H100, Strategy.auto, 8, None)
    assert (sft.strategy, sft.checkpointing) == ("fsdp", False)  # 8 shards fit it as it is


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


def test_fsdp_asked_on_cpu_processes_shards_and_auto_copies(
    compose_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a GPU there is no memory to fit: auto copies the model (DDP), fsdp shards it."""
    import src.model.sharding

    monkeypatch.setattr(src.model.sharding, "visible_gpu", lambda: None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for strategy, runs in (("auto", "ddp"), ("fsdp", "fsdp"), ("ddp", "ddp")):
        cfg = compose_cfg(f"trainer.strategy={strategy}")
        assert src.model.sharding.run_layout(cfg, Path("unused"), 2).strategy == runs
    monkeypatch.setenv("WORLD_SIZE", "1")
    cfg = compose_cfg("trainer.strategy=fsdp")
    assert src.model.sharding.run_layout(cfg, Path("unused"), 2).strategy == "single"


@pytest.mark.parametrize(
    ("given", "gpu", "processes", "expected"),
    [
        ("null", None, "1", ("single", False)),  # no GPU memory to fit: off unless asked
        ("true", None, "1", ("single", True)),
        ("null", H100, "1", ("single", True)),  # LoRA's activations need it on an H100
        ("false", H100, "1", ("single", False)),  # as asked, whatever the estimate says
        ("null", H100, "2", ("ddp", True)),
        ("null", 400e9, "1", ("single", False)),  # a card that holds it as it is
    ],
)
def test_a_run_checkpoints_activations_as_asked_or_where_its_gpu_needs_it(
    given: str,
    gpu: float | None,
    processes: str,
    expected: tuple[str, bool],
    compose_cfg: Callable[..., DictConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run decides as the device pool placed it (the same `layout`): a trial placed on one
    H100 with checkpointing runs checkpointed there."""
    import src.model.sharding

    cfg = compose_cfg("model=qwen2_7b_base", f"trainer.gradient_checkpointing={given}")
    monkeypatch.setattr(src.model.sharding, "shape_of", lambda path: QWEN2_7B)
    monkeypatch.setattr(src.model.sharding, "visible_gpu", lambda: gpu and ("card", gpu))
    monkeypatch.setenv("WORLD_SIZE", processes)
    placed = src.model.sharding.run_layout(cfg, Path("unused"), 2)
    assert (placed.strategy, placed.checkpointing) == expected


def torchrun(processes: int, module: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`python -m module arguments` on `processes` CPU processes (gloo) under torchrun's engine,
    or as one plain process."""
    launcher = [sys.executable, "-m"]
    if processes > 1:
        launcher += ["torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m"]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RANK")}
    return subprocess.run(
        [*launcher, module, *arguments],
        cwd=ROOT,
        env=env | {"OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_fsdp_on_two_ranks_trains_as_one_process_and_its_export_reloads_with_its_logits(
    tmp_path: Path,
) -> None:
    """The model sharded by block with src.model.sharding.shard on two gloo ranks, one AdamW
    step on half the batch each (no Trainer), then gathered and exported: the same model as one
    process on the whole batch, and the checkpoint (LoRA merged, head kept) reloads with the
    sharded model's logits."""
    from transformers import AutoModelForSequenceClassification

    from tests.sharded.fsdp_step import inputs

    one, two = tmp_path / "one", tmp_path / "two"
    for out, processes in ((one, 1), (two, 2)):
        for method in ("sft", "lora"):
            (out / method).mkdir(parents=True)
        done = torchrun(processes, "tests.sharded.fsdp_step", str(out), "sft", "lora")
        assert done.returncode == 0, done.stderr[-4000:]
    for method in ("sft", "lora"):
        sharded_logits = np.load(two / method / "logits.npy")
        alone = np.load(one / method / "logits.npy")
        np.testing.assert_allclose(sharded_logits, alone, atol=TOLERANCE, err_msg=method)
        checkpoint = two / method / "model"
        assert not list(checkpoint.glob("adapter_*"))  # merged: an ordinary checkpoint
        reloaded = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
        with torch.no_grad():
            logits = reloaded(input_ids=inputs()[0]).logits.numpy()
        np.testing.assert_allclose(logits, sharded_logits, atol=1e-6, err_msg=method)


@pytest.mark.slow  # two src.train runs on CPU processes, about a minute
def test_two_processes_train_as_one_record_one_run_and_export_a_model_that_reloads(
    tmp_path: Path, compose_cfg: Callable[..., DictConfig]
) -> None:
    """src.train with trainer.strategy=fsdp on two gloo processes shards the model (FSDP2, the
    path a GPU run takes) and sees the 12 training reviews in one optimizer step an epoch, as one
    process does with batches of 12: the same losses and validation metrics."""
    from src.checkpoint.classifier import classify
    from src.data.sources import load_splits

    method = ["method=sft", "trainer.logging_steps=1"]
    alone, shared = Store(tmp_path / "one"), Store(tmp_path / "two")
    one = torchrun(1, "src.train", *QUICK, *method, "trainer.batch_size=12", *alone.overrides())
    assert one.returncode == 0, one.stderr[-4000:]
    two = torchrun(
        2,
        "src.train",
        *QUICK,
        *method,
        "trainer.batch_size=6",
        "trainer.strategy=fsdp",
        *shared.overrides(),
    )
    assert two.returncode == 0, two.stderr[-4000:]
    held = re.search(r"FSDP2: this process holds (\d+) of the model's (\d+) weights", two.stdout)
    assert held is not None, two.stdout[-4000:]
    assert int(held[1]) < int(held[2])  # a shard (blocks split on dim 0: about half)

    (single,) = alone.runs()
    (run,) = shared.runs()  # rank 0 alone records
    assert (run.data.tags["strategy"], single.data.tags["strategy"]) == ("fsdp", "single")
    client = shared.client()
    for name in ("eval_loss", "eval_macro_f1", "train_loss"):
        sharded_run = [m.value for m in client.get_metric_history(run.info.run_id, name)]
        alone_run = [m.value for m in alone.client().get_metric_history(single.info.run_id, name)]
        assert len(sharded_run) == len(alone_run) > 0, name
        np.testing.assert_allclose(sharded_run, alone_run, atol=TOLERANCE, err_msg=name)

    (output,) = run.outputs.model_outputs  # one checkpoint, from rank 0
    mlflow.set_tracking_uri(shared.uri)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{output.model_id}"))
    table = pd.read_csv(
        client.download_artifacts(run.info.run_id, "predictions/test.csv", str(tmp_path))
    )
    cfg = compose_cfg(*QUICK)
    test = load_splits(cfg.data, cfg.seed, cfg.task.name).test.set_index("id")
    texts = test.loc[table.id, "text"].tolist()
    answers = classify(local / "artifacts" / "checkpoint", texts, batch_size=8, max_len=32)
    names = [c.removeprefix("p_") for c in table.columns if c.startswith("p_")]
    reloaded = [[a["probabilities"][n] for n in names] for a in answers]
    np.testing.assert_allclose(reloaded, table[[f"p_{n}" for n in names]], atol=1e-6)


@pytest.mark.parametrize("method", ["lora", "sft"])
def test_gradient_checkpointing_changes_how_fast_a_run_is_never_its_result(
    method: str,
    compose_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What trainer.gradient_checkpointing=null may turn on: the same losses and validation
    metrics, epoch by epoch (LoRA's dropout included: the recomputed forward draws the same
    masks), and the run's tag says which it was."""
    from transformers import PreTrainedModel

    from src.train import train

    enable = PreTrainedModel.activation_checkpointing_enable
    enabled: list[str] = []  # the models the Trainer turned checkpointing on for

    def spy(model: PreTrainedModel, *args: object, **kwargs: object) -> None:
        enabled.append(type(model).__name__)
        enable(model, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "activation_checkpointing_enable", spy)
    histories = {}
    for checkpointing in ("false", "true"):
        cfg = compose_cfg(
            *QUICK,
            f"method={method}",
            "trainer.logging_steps=1",
            f"trainer.gradient_checkpointing={checkpointing}",
            f"tracking.experiment=gc-{checkpointing}",
        )
        train(cfg)
        assert len(enabled) == (checkpointing == "true")
        store = Store(tmp_path)
        (run,) = store.runs(f"gc-{checkpointing}")
        assert run.data.tags["gradient_checkpointing"] == checkpointing
        client = store.client()
        histories[checkpointing] = {
            name: [m.value for m in client.get_metric_history(run.info.run_id, name)]
            for name in ("train_loss", "eval_loss", "eval_macro_f1")
        }
    for name, values in histories["false"].items():
        assert len(values) > 1, name
        np.testing.assert_allclose(histories["true"][name], values, atol=1e-6, err_msg=name)
