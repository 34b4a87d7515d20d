"""Specification of the methods: one module and one yaml each; DoRA, rsLoRA, trained
embeddings, head learning rate, top-layer fine-tuning, QLoRA's GPU requirement, IA3, LoRA+, and
dropping auxiliary head outputs."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import PreTrainedModel

from src.config.errors import UserError
from src.config.schema import (
    Arch,
    MethodConfig,
    ModelConfig,
    Precision,
    TinyArchConfig,
    TrainerConfig,
)
from src.model.backbones import Backbone, load_classifier, load_tokenizer
from src.model.memory import Plan, shape_from_config, trainable_parameters
from src.model.methods import (
    apply_method,
    check_method,
    check_method_fits,
    export_model,
    is_head_parameter,
    method_of,
    methods,
    restrict_head,
)
from src.model.methods.freeze_layers import freeze_below_top
from src.model.methods.ia3 import PAPER_TARGETS, IA3Settings
from src.model.methods.loraplus import LoraPlusSettings
from src.model.tiny import materialize_tiny
from src.training.arguments import training_arguments
from src.training.inference import predict_logits
from src.training.trainer import ClassifierTrainer, TokenizedDataset
from tests.conftest import Store
from tests.levers import train_run

TEXTS = ["这基金真的稳啊,收益不错", "分红政策一会儿一个样", "经理换得太频繁了", "感觉很靠谱"] * 3
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PRESETS = {
    "qwen2": ModelConfig(name="tiny_qwen2", arch=Arch.decoder, lora_target_modules=PROJECTIONS),
    "bert": ModelConfig(
        name="tiny_bert", arch=Arch.encoder, lora_target_modules=["query", "key", "value", "dense"]
    ),
}


@pytest.fixture(scope="module", params=["qwen2", "bert"])
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(request.param)


def classifier(family: str, tmp_path: Path, labels: int = 2) -> tuple[PreTrainedModel, object]:
    """A tiny randomly initialised classifier of the family and its tokenizer (fp32)."""
    cfg = TinyArchConfig(family=family, num_kv_heads=2 if family != "bert" else 4)
    arch = Arch.encoder if family == "bert" else Arch.decoder
    backbone = Backbone(materialize_tiny(cfg, TEXTS, tmp_path / "tiny"), arch, False)
    tokenizer = load_tokenizer(backbone)
    names = [f"c{i}" for i in range(labels)]
    model = load_classifier(backbone, tokenizer, names, torch.float32, "sdpa")
    return model, tokenizer


def logits_of(model: PreTrainedModel, tokenizer: object) -> np.ndarray:
    ids = tokenizer(TEXTS[:4], truncation=True, max_length=16)["input_ids"]  # type: ignore[operator]
    return predict_logits(model, tokenizer, ids, batch_size=4)[0]  # type: ignore[arg-type]


def test_dora_and_rslora_are_peft_switches() -> None:
    dora = method_of(MethodConfig(name="dora", rank=8)).peft_config(PROJECTIONS)
    assert dora.use_dora and not dora.use_rslora and dora.lora_alpha == 16
    rslora = method_of(MethodConfig(name="lora", rank=8, use_rslora=True)).peft_config(PROJECTIONS)
    assert rslora.use_rslora and not rslora.use_dora and rslora.modules_to_save is None


def test_dora_with_rslora_and_embeddings_trains_them_and_merges_exactly(
    family: str, tmp_path: Path
) -> None:
    model, tokenizer = classifier(family, tmp_path)
    method = MethodConfig(name="dora", rank=4, use_rslora=True, train_embeddings=True)
    peft = apply_method(model, method, PRESETS[family])
    trainable = [n for n, p in peft.named_parameters() if p.requires_grad]
    assert any("lora_magnitude_vector" in n for n in trainable)  # DoRA's magnitudes
    embedding_copies = [n for n in trainable if "modules_to_save" in n and "embed" in n]
    assert len(embedding_copies) == 1  # the whole input embedding matrix trains
    scalings = [m.scaling["default"] for m in peft.modules() if hasattr(m, "lora_A")]
    assert scalings == pytest.approx([8 / math.sqrt(4)] * len(scalings))  # alpha / sqrt(rank)
    with torch.no_grad():  # stand-in for training: move every trainable weight
        for param in peft.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    before = logits_of(peft, tokenizer)
    trained = dict(peft.named_parameters())[embedding_copies[0]].detach().clone()
    exported = export_model(peft)
    np.testing.assert_allclose(logits_of(exported, tokenizer), before, atol=1e-5)
    assert torch.equal(exported.get_input_embeddings().weight, trained)


def test_freeze_layers_trains_the_top_blocks_and_everything_above(
    family: str, tmp_path: Path
) -> None:
    model, _ = classifier(family, tmp_path)
    apply_method(model, MethodConfig(name="freeze_layers", trainable_layers=1), PRESETS[family])
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    if family == "bert":
        assert not any(n.startswith(("bert.embeddings", "bert.encoder.layer.0.")) for n in trains)
        assert {n.split(".")[0] for n in trains} == {"bert", "classifier"}
        assert any(n.startswith("bert.encoder.layer.1.") for n in trains)
        assert any(n.startswith("bert.pooler") for n in trains)
    else:
        assert not any(n.startswith(("model.embed_tokens", "model.layers.0.")) for n in trains)
        assert any(n.startswith("model.layers.1.") for n in trains)
        assert {"model.norm.weight", "score.weight"} <= trains
    freeze_below_top(model, 0)
    assert all(
        "layers.1." not in n and "layer.1." not in n
        for n, p in model.named_parameters()
        if p.requires_grad
    )
    with pytest.raises(UserError, match="trainable_layers=3, but the model has 2"):
        freeze_below_top(model, 3)


def test_head_lr_puts_the_head_in_its_own_groups(tmp_path: Path) -> None:
    model, _ = classifier("qwen2", tmp_path)
    peft = apply_method(model, MethodConfig(name="lora", rank=4), PRESETS["qwen2"])
    trainer_cfg = TrainerConfig(lr=1e-4, weight_decay=0.01)
    args = training_arguments(trainer_cfg, tmp_path / "t", 0, "eval_loss", Precision.fp32, False)
    data = TokenizedDataset([[1, 2, 3]], [0])
    method = method_of(MethodConfig(name="lora", rank=4, head_lr=5e-3))
    trainer = ClassifierTrainer(
        model=peft,
        args=args,
        train_dataset=data,
        eval_dataset=data,
        learning_rate=method.learning_rate,
    )
    optimizer = trainer.create_optimizer()
    by_lr: dict[float, set[str]] = {}
    names = {id(p): n for n, p in peft.named_parameters()}
    for group in optimizer.param_groups:
        by_lr.setdefault(group["lr"], set()).update(names[id(p)] for p in group["params"])
    assert set(by_lr) == {1e-4, 5e-3}
    assert by_lr[5e-3] and all(".score." in n for n in by_lr[5e-3])
    assert not any(".score." in n for n in by_lr[1e-4])
    trainable = {n for n, p in peft.named_parameters() if p.requires_grad}
    assert by_lr[1e-4] | by_lr[5e-3] == trainable
    assert trainer.create_optimizer() is optimizer  # split once


def test_restrict_head_keeps_the_first_outputs_exactly(family: str, tmp_path: Path) -> None:
    model, tokenizer = classifier(family, tmp_path, labels=4)
    full = logits_of(model, tokenizer)
    restricted = restrict_head(model, 2)
    np.testing.assert_allclose(logits_of(restricted, tokenizer), full[:, :2], atol=1e-6)
    assert restricted.config.num_labels == 2 and restricted.config.id2label == {0: "c0", 1: "c1"}
    restricted.save_pretrained(tmp_path / "saved")
    reloaded = type(restricted).from_pretrained(tmp_path / "saved")
    np.testing.assert_allclose(logits_of(reloaded, tokenizer), full[:, :2], atol=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only message")
def test_qlora_without_a_gpu_is_one_line_and_never_imports_bitsandbytes(
    compose_cfg, tmp_path
) -> None:
    from src.train import train

    with pytest.raises(UserError, match=re.escape("method=qlora needs a CUDA GPU")) as err:
        check_method(MethodConfig(name="qlora"))
    assert "\n" not in str(err.value) and "method=lora" in str(err.value)
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        train(compose_cfg("data=fund_reviews", "method=qlora"))
    assert "bitsandbytes" not in sys.modules
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"name": "lora", "head_lr": 0.0}, "method.head_lr must be > 0"),
        ({"name": "freeze_layers", "trainable_layers": -1}, "method.trainable_layers must be >= 0"),
        ({"name": "dora", "rank": 0}, "method.rank must be a positive integer"),
        ({"name": "adapter"}, "method.name=adapter is not one of"),
    ],
)
def test_bad_method_values_are_one_line(override: dict, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        check_method(MethodConfig(**override))


@pytest.mark.slow  # a whole run; the variants' build tests run by default
def test_dora_run_with_rslora_head_lr_and_embeddings(store: Store) -> None:
    """method=dora with every LoRA option on tiny_qwen2: the embedding matrix (2000 x 64) is
    among the trained parameters, and the run logs the usual metrics."""
    run = train_run(
        store,
        "data=fund_reviews",
        "method=dora",
        "method.use_rslora=true",
        "method.train_embeddings=true",
        "method.head_lr=1e-2",
        "trainer.max_len=32",
        "tracking.log_model=false",
    )
    metrics, params = run.data.metrics, run.data.params
    assert params["method.name"] == "dora" and params["method.head_lr"] == "0.01"
    assert metrics["trainable_params"] > 64 * 1000  # the embeddings train in full
    assert {"test_macro_f1", "best_eval_macro_f1", "train_samples_per_second"} <= set(metrics)
    assert run.data.tags["method"] == "dora"


@pytest.mark.slow
def test_freeze_layers_run(store: Store) -> None:
    """method=freeze_layers on tiny_bert: only the top block, pooler and head train."""
    run = train_run(
        store,
        "model=tiny_bert",
        "data=fund_reviews",
        "method=freeze_layers",
        "method.trainable_layers=1",
        "trainer.max_len=32",
        "tracking.log_model=false",
    )
    metrics = run.data.metrics
    assert 0 < metrics["trainable_params"] < metrics["total_params"] / 2
    assert "test_macro_f1" in metrics


def test_every_method_is_one_module_and_one_yaml_and_help_lists_it() -> None:
    from tests.conftest import CONF, run_module

    assert set(methods()) == {p.stem for p in (CONF / "method").glob("*.yaml")}
    done = run_module("src.train", "--help")
    listed = next(line for line in done.stdout.splitlines() if line.startswith("method: "))
    assert listed.removeprefix("method: ").split(", ") == sorted(methods())


@pytest.mark.parametrize("family", ["qwen2", "bert"])
def test_ia3_trains_its_vectors_and_the_head_as_the_estimate_counts(
    family: str, tmp_path: Path
) -> None:
    """With the paper's targets (keys, values, the feed-forward output layer's input), the
    trained parameters are the rescaling vectors and the head, as many as the estimate counts."""
    model, _ = classifier(family, tmp_path)
    targets = list(PAPER_TARGETS["encoder" if family == "bert" else "decoder"])
    peft = apply_method(model, IA3Settings(name="ia3", target_modules=targets), PRESETS[family])
    trainable = {n: p for n, p in peft.named_parameters() if p.requires_grad}
    assert all(".ia3_l." in n or is_head_parameter(n) for n in trainable)
    down = "output.dense" if family == "bert" else "down_proj"
    width = model.config.intermediate_size
    assert {p.numel() for n, p in trainable.items() if f"{down}.ia3_l" in n} >= {width}
    plan = Plan(method="ia3", target_modules=tuple(targets), num_labels=2)
    shape = shape_from_config(model.config.to_dict())
    assert sum(p.numel() for p in trainable.values()) == trainable_parameters(shape, plan)


def test_ia3_settings_are_typed_and_checked_by_building_peft_config(
    compose_cfg, tmp_path: Path
) -> None:
    from hydra.errors import ConfigCompositionException

    cfg = compose_cfg("method=ia3", "method.feedforward_modules=[down_proj]")
    assert cfg.method.name == "ia3" and cfg.method.feedforward_modules == ["down_proj"]
    with pytest.raises(ConfigCompositionException):
        compose_cfg("method=lora", "method.feedforward_modules=[down_proj]")
    model, _ = classifier("qwen2", tmp_path)
    method = IA3Settings(name="ia3", target_modules=["v_proj"], feedforward_modules=["down_proj"])
    with pytest.raises(UserError, match=r"method.feedforward_modules=\['down_proj'\] must be"):
        check_method_fits(method, PRESETS["qwen2"], model)


def optimizer_rates(model: PreTrainedModel, method_cfg: MethodConfig, tmp_path: Path) -> dict:
    """{learning rate: names of the parameters the Trainer's optimizer updates at it}."""
    trainer_cfg = TrainerConfig(lr=1e-4, weight_decay=0.01)
    args = training_arguments(trainer_cfg, tmp_path / "t", 0, "eval_loss", Precision.fp32, False)
    data = TokenizedDataset([[1, 2, 3]], [0])
    trainer = ClassifierTrainer(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=data,
        learning_rate=method_of(method_cfg).learning_rate,
    )
    names = {id(p): n for n, p in model.named_parameters()}
    by_lr: dict[float, set[str]] = {}
    for group in trainer.create_optimizer().param_groups:
        by_lr.setdefault(group["lr"], set()).update(names[id(p)] for p in group["params"])
    return by_lr


def test_loraplus_trains_loras_parameters_with_the_b_matrices_at_ratio_times_lr(
    tmp_path: Path,
) -> None:
    model, _ = classifier("qwen2", tmp_path)
    lora = apply_method(model, MethodConfig(name="lora", rank=4), PRESETS["qwen2"])
    lora_trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    model, _ = classifier("qwen2", tmp_path)
    settings = LoraPlusSettings(name="loraplus", rank=4, loraplus_lr_ratio=8.0, head_lr=5e-3)
    peft = apply_method(model, settings, PRESETS["qwen2"])
    trainable = {n for n, p in peft.named_parameters() if p.requires_grad}
    assert trainable == lora_trainable  # the same adapters and head as LoRA
    by_lr = optimizer_rates(peft, settings, tmp_path)
    assert set(by_lr) == {1e-4, 8e-4, 5e-3}
    assert by_lr[8e-4] == {n for n in trainable if ".lora_B." in n} != set()
    assert by_lr[5e-3] == {n for n in trainable if is_head_parameter(n)} != set()
    assert by_lr[1e-4] == trainable - by_lr[8e-4] - by_lr[5e-3]
    assert all(".lora_A." in n for n in by_lr[1e-4])


def test_loraplus_default_ratio_is_16_and_below_1_is_refused(compose_cfg) -> None:
    cfg = compose_cfg("method=loraplus")
    assert cfg.method.loraplus_lr_ratio == 16 and method_of(cfg.method).learning_rate(
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight", 1e-4
    ) == pytest.approx(16e-4)
    with pytest.raises(UserError, match=re.escape("method.loraplus_lr_ratio must be >= 1")):
        check_method(LoraPlusSettings(name="loraplus", loraplus_lr_ratio=0.5))


# Trainable parameters of tiny_qwen2 (hidden 64, kv 32, MLP 128, 2 blocks, 2 labels): IA3's
# vectors on q (64), v (32) and down_proj's input (128); LoRA+'s rank-16 A and B on all seven
# projections (in + out: 128 + 96 + 96 + 128 + 192 + 192 + 192); and the 64 x 2 head.
TINY_TRAINABLE = {"ia3": 2 * (64 + 32 + 128) + 128, "loraplus": 2 * 16 * 1024 + 128}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(TINY_TRAINABLE))
def test_a_tiny_run_of_each_new_method(store: Store, method: str) -> None:
    """`python -m src.train model=tiny_qwen2 method=ia3|loraplus`: one epoch, the usual
    metrics, the method's tag and its trainable parameters."""
    run = train_run(
        store, "model=tiny_qwen2", "data=fund_reviews", f"method={method}", "trainer.max_len=32"
    )
    metrics = run.data.metrics
    assert run.data.tags["method"] == method
    assert {"test_macro_f1", "best_eval_macro_f1"} <= set(metrics)
    assert metrics["trainable_params"] == TINY_TRAINABLE[method]
