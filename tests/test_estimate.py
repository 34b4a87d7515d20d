"""The pre-flight memory estimate: parameter counts, presets, and the peak of a real training step.

The measured peak is the tensor-level peak of one training step (forward, backward, AdamW step)
on a CPU, from torch's memory profiler timeline (`export_memory_timeline`): every tensor
allocation and free of the step, parameters and optimizer states included. There is no CUDA
here, so no allocator fragmentation or CUDA context: the estimate is compared without them.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch.profiler import ProfilerActivity, profile
from transformers import AutoConfig, AutoModelForSequenceClassification

from src.config.errors import UserError
from src.model import memory as est
from src.model.backbones import Backbone, load_classifier, load_tokenizer
from src.model.methods import apply_method, methods

CONF_MODELS = Path(__file__).resolve().parents[1] / "conf" / "model"


def hf_config(shape: est.Shape) -> Any:
    """A transformers config of the shape (for counting parameters on the meta device)."""
    common = {
        "hidden_size": shape.hidden,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "intermediate_size": shape.intermediate,
        "vocab_size": shape.vocab,
        "num_labels": 2,
    }
    if shape.encoder:
        return AutoConfig.for_model("bert", **common)
    return AutoConfig.for_model(shape.family, num_key_value_heads=shape.kv_heads, **common)


@pytest.mark.parametrize(
    "name",
    [
        "qwen2_7b_base",
        "qwen2_5_0_5b_base",
        "qwen2_5_1_5b_base",
        "qwen2_5_3b_base",
        "llama3_1_8b_base",
        "bert_base_chinese",
        "chinese_roberta_wwm_ext_large",
    ],
)
def test_parameter_count_matches_transformers(name: str) -> None:
    shape = est.PRESETS[name]
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(hf_config(shape))
    assert shape.parameters(2) == sum(p.numel() for p in model.parameters())


def test_every_hub_preset_has_sizes() -> None:
    for path in CONF_MODELS.glob("*.yaml"):
        preset = yaml.safe_load(path.read_text())
        if preset.get("tiny") or preset["arch"] == "classical":
            continue
        assert preset["name"] in est.PRESETS, path.name
        assert preset["hub_id"] in est.PRESETS, path.name


def test_known_sizes() -> None:
    """Qwen2.5-0.5B: 494M parameters with tied embeddings (its model card); 7B LoRA r=16."""
    qwen05 = est.PRESETS["Qwen/Qwen2.5-0.5B"]
    assert qwen05.parameters(2) - qwen05.hidden * 2 == 494_032_768
    plan = est.Plan(method="lora", rank=16, batch_size=1, max_len=1)
    lora = est.trainable_parameters(est.PRESETS["qwen2_7b_base"], plan)
    assert lora == 28 * 16 * (2 * (3584 + 3584) + 2 * (3584 + 512) + 3 * (3584 + 18944)) + 3584 * 2


def test_options_order_and_sharding() -> None:
    shape = est.PRESETS["qwen2_7b_base"]
    plan = est.Plan(method="sft", batch_size=8, max_len=512)
    totals = dict((name, e.total) for name, e in est.options(shape, plan))
    assert totals["+ gradient checkpointing"] < totals["as configured"]
    assert totals["QLoRA r=16 + gradient checkpointing"] < totals["LoRA r=16"]
    sharded = est.estimate(shape, replace(plan, zero_stage=3, shards=8))
    assert sharded.weights < est.estimate(shape, plan).weights / 8 + 1
    n = est.zero3_gpus(shape, plan, 80e9)
    assert n is not None and 1 < n <= 8


def test_zero_stage_and_world_size(compose_cfg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    cfg = compose_cfg("model=qwen2_7b_base", "method=sft", "trainer.strategy=fsdp")
    plan = est.plan_from_config(cfg)
    assert (plan.zero_stage, plan.shards, plan.precision) == (3, 4, "bf16")
    assert est.plan_from_config(cfg, device="cpu").precision == "fp32"


def measured_peak(model: Any, batch: dict[str, torch.Tensor], tmp_path: Path) -> float:
    """Bytes of the tensor-level peak of one training step, after a warm-up step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def step() -> None:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # the optimizer states exist from here on
    activities = [ProfilerActivity.CPU]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # export_memory_timeline is deprecated for CUDA users
        with profile(
            activities=activities, profile_memory=True, record_shapes=True, with_stack=True
        ) as prof:
            step()
        timeline = tmp_path / "memory.json"
        prof.export_memory_timeline(str(timeline), device="cpu")
    _, sizes = json.loads(timeline.read_text())
    return float(max(sum(s) for s in sizes))


@pytest.mark.parametrize(
    ("model", "method", "extra"),
    [
        ("tiny_qwen2", "lora", []),
        ("tiny_qwen2", "sft", []),
        ("tiny_llama", "lora", ["trainer.gradient_checkpointing=true"]),
        ("tiny_llama", "freeze_layers", ["method.trainable_layers=1"]),
        ("tiny_bert", "lora", []),
        ("tiny_bert", "sft", []),
        ("tiny_qwen2", "head_only", []),
        ("tiny_qwen2", "ia3", []),
        ("tiny_bert", "ia3", []),
    ],
)
def test_estimate_within_25_percent_of_measured_peak(
    compose_cfg: Any, tmp_path: Path, model: str, method: str, extra: list[str]
) -> None:
    """A tiny model built as the pipeline builds it, batch 8 x 128 tokens, fp32 on the CPU."""
    cfg = compose_cfg(
        f"model={model}",
        f"method={method}",
        "data=fund_reviews",
        "trainer.batch_size=8",
        "trainer.max_len=128",
        *extra,
    )
    path = est.tiny_checkpoint(cfg)
    backbone = Backbone(path=path, arch=cfg.model.arch, trust_remote_code=False)
    tokenizer = load_tokenizer(backbone)
    torch.manual_seed(0)
    net = load_classifier(backbone, tokenizer, ["a", "b"], torch.float32, "sdpa")
    net = apply_method(net, cfg.method, cfg.model)
    if cfg.trainer.gradient_checkpointing:
        net.activation_checkpointing_enable()
    vocab = json.loads((path / "config.json").read_text())["vocab_size"]
    ids = torch.randint(5, vocab, (8, 128))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    batch["labels"] = torch.randint(0, 2, (8,))
    measured = measured_peak(net, batch, tmp_path)
    predicted = est.estimate(est.shape_of(path), est.plan_from_config(cfg, device="cpu"))
    assert predicted.runtime == 0
    assert abs(predicted.total / measured - 1) <= 0.25, (predicted, measured)


def test_report_without_gpu() -> None:
    text = est.report(est.PRESETS["qwen2_7b_base"], est.Plan(method="sft"), "qwen2_7b_base")
    assert "no CUDA GPU is visible" in text
    assert (
        "QLoRA" in text
        and "FSDP (+ gradient checkpointing)" in text
        and "gradient checkpointing" in text
    )


@pytest.mark.parametrize("method", sorted(methods()))
def test_every_method_has_its_row_in_the_estimate(method: str) -> None:
    text = est.report(est.PRESETS["qwen2_7b_base"], est.Plan(method=method), "qwen2_7b_base")
    assert f"trainable ({method});" in text.splitlines()[0]


def test_an_unknown_method_is_refused_not_estimated_as_another() -> None:
    with pytest.raises(UserError, match=r"method\.name=adapter is not one of"):
        est.estimate(est.PRESETS["qwen2_7b_base"], est.Plan(method="adapter"))


def test_preflight_measures_the_estimate(
    compose_cfg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a (pretend) 80 GB GPU the tiny run fits; the estimate is in the run's metrics."""
    monkeypatch.setattr(est, "visible_gpu", lambda: ("pretend H100", 80e9))
    cfg = compose_cfg("model=tiny_qwen2", "method=lora", "data=fund_reviews")
    path = est.tiny_checkpoint(cfg)
    metrics = est.preflight(cfg, path, 2, checkpointing=False)
    assert metrics["estimate_fits"] == 1.0
    assert metrics["estimate_gpu_gib"] == pytest.approx(80e9 / 2**30)
    assert 0 < metrics["estimate_total_gib"] < 2


@pytest.mark.slow
def test_cli_prints_the_estimate() -> None:
    from tests.conftest import run_module

    done = run_module("src.estimate", "model=qwen2_7b_base", "method=sft", "trainer.batch_size=4")
    assert done.returncode == 0, done.stderr
    assert "qwen2_7b_base" in done.stdout and "total" in done.stdout
    assert "no CUDA GPU is visible" in done.stdout


# -- the plan of a multirun: python -m src.estimate -m ... --------------------------------------

README_PLAN = "<!-- plan: checked by tests/test_estimate.py -->"


def test_plan_in_the_readme_is_what_the_command_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    import src.estimate

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split(README_PLAN, 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    command, *printed = block.strip().splitlines()
    arguments = shlex.split(command.removeprefix("$ "))
    assert arguments[:4] == ["python", "-m", "src.estimate", "-m"]
    monkeypatch.setattr(src.estimate, "visible_gpu", lambda: None)  # as on a machine without one
    assert src.estimate.plan_text(arguments[4:]).splitlines() == printed


def test_plan_places_mixed_sizes_in_waves_on_few_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    import src.estimate

    monkeypatch.setattr(src.estimate, "visible_gpu", lambda: None)
    text = src.estimate.plan_text(
        [
            "model=qwen2_7b_base",
            "method=sft,lora",
            "seed=1,2",
            "hydra.sweeper.devices=[0,1,2]",
        ]
    )
    rows = [line.split() for line in text.splitlines()[2:]]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("1", "0,1", "2", "FSDP"),  # sft seed 1
        ("1", "2", "1", "one"),  # sft seed 2 waits; lora seed 1 fills the gap
        ("2", "0,1", "2", "FSDP"),
        ("2", "2", "1", "one"),
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            [
                "model=qwen2_7b_base",
                "method=lora,sft",
                "trainer.gradient_checkpointing=false",
                "hydra.sweeper.devices=[0,1]",
            ],
            "does not fit on 64 GPUs of 74.5 GiB by the memory estimate: "
            "trainer.gradient_checkpointing=null (on where needed) fits it",
        ),
        (["trainer.lr=interval(1e-5,1e-3)"], "the plan needs the values listed"),
        (
            [
                "method=sft",
                "model=qwen2_7b_base",
                "trainer.gradient_checkpointing=true",
                "hydra.sweeper.gpu_memory_gib=40",
                "hydra.sweeper.devices=[0,1]",
            ],
            "needs 4 GPUs; the plan has 2 devices",
        ),
    ],
)
def test_a_plan_that_cannot_be_made_is_one_error_line(
    arguments: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import src.estimate

    monkeypatch.setattr(src.estimate, "visible_gpu", lambda: None)
    assert src.estimate.plan_cli(arguments) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and message in line
