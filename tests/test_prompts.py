"""Specification of src.inputs.prompts: templates, label descriptions, few-shot, chat templates."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from src.config.errors import UserError
from src.config.schema import DataConfig, PromptConfig
from src.data.sources import load_splits
from src.inputs.long_text import InputSpec, encode, special_tokens_around
from src.inputs.prompts import Prompt, build_prompt, check_prompt, few_shot_examples
from src.model.tiny import train_byte_bpe
from tests.conftest import CONF, Store
from tests.levers import checkpoint_info, logged_checkpoint, train_run

FUND = load_splits(DataConfig(name="fund_reviews"), seed=0)
LABELS = FUND.label_names  # 负向, 正向
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def preset(name: str) -> PromptConfig:
    """A shipped prompt preset, as the schema's dataclass."""
    node = OmegaConf.load(CONF / "prompt" / f"{name}.yaml")
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PromptConfig), node))
    assert isinstance(cfg, PromptConfig)
    return cfg


def fund_reviews_config() -> DataConfig:
    """conf/data/fund_reviews.yaml (with its instruction and label descriptions)."""
    node = OmegaConf.load(CONF / "data" / "fund_reviews.yaml")
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), node))
    assert isinstance(cfg, DataConfig)
    return cfg


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return train_byte_bpe(FUND.train.text.tolist(), 500)


def build(cfg: PromptConfig, tokenizer, seed: int = 0) -> Prompt:  # type: ignore[no-untyped-def]
    return build_prompt(cfg, fund_reviews_config(), FUND.train, LABELS, tokenizer, seed)


def test_none_is_the_raw_text(tokenizer) -> None:
    prompt = build(PromptConfig(), tokenizer)
    assert prompt == Prompt(prefix="", suffix="", special_tokens=True)


def test_label_descriptions_give_the_instruction_and_one_line_per_label(tokenizer) -> None:
    prompt = build(preset("label_descriptions"), tokenizer)
    assert prompt.prefix == (
        "判断这条基金评论的情感倾向。\n"
        "负向：对基金的收益、波动、费用或服务不满\n"
        "正向：对基金的收益、稳定性或服务满意\n"
        "文本："
    )
    assert prompt.suffix == "\n类别：" and prompt.special_tokens


def test_few_shot_draws_k_per_label_from_train_only_seeded(tokenizer) -> None:
    shots = few_shot_examples(FUND.train, LABELS, 2, seed=3)
    assert shots.label.tolist() == [0, 1, 0, 1]  # interleaved: one of each label, then again
    assert set(shots.id) <= set(FUND.train.id)
    pd.testing.assert_frame_equal(shots, few_shot_examples(FUND.train, LABELS, 2, seed=3))
    assert set(few_shot_examples(FUND.train, LABELS, 2, seed=4).id) != set(shots.id)
    cfg = preset("few_shot")
    cfg.k, cfg.example_max_chars = 2, 6
    prompt = build(cfg, tokenizer, seed=3)
    shots3 = few_shot_examples(FUND.train, LABELS, 2, seed=3)
    for text, label in zip(shots3.text, shots3.label, strict=True):
        assert f"文本：{text[:6]}\n类别：{LABELS[label]}" in prompt.prefix
        assert text[6:] not in prompt.prefix
    for text in pd.concat([FUND.valid, FUND.test]).text:
        assert text[:6] not in prompt.prefix


def test_k_larger_than_the_smallest_class_is_one_line() -> None:
    with pytest.raises(UserError, match=r"prompt\.k=7 .* only 6 of label '负向'") as err:
        few_shot_examples(FUND.train, LABELS, 7, seed=0)
    assert "\n" not in str(err.value)


def test_chat_template_wraps_the_prompt_and_replaces_special_tokens(tokenizer) -> None:
    cfg = preset("label_descriptions")
    cfg.chat_template, cfg.system = True, "你是分类助手。"
    tokenizer.chat_template = CHATML
    try:
        prompt = build(cfg, tokenizer)
    finally:
        tokenizer.chat_template = None
    assert prompt.prefix.startswith(
        "<|im_start|>system\n你是分类助手。<|im_end|>\n<|im_start|>user\n"
    )
    assert prompt.prefix.endswith("文本：")
    assert prompt.suffix == "\n类别：<|im_end|>\n<|im_start|>assistant\n"
    assert not prompt.special_tokens
    with pytest.raises(UserError, match="no chat template"):
        build(cfg, tokenizer)


def test_truncation_cuts_the_text_never_the_instruction(tokenizer) -> None:
    prompt = build(preset("label_descriptions"), tokenizer)
    prefix = tokenizer(prompt.prefix, add_special_tokens=False)["input_ids"]
    suffix = tokenizer(prompt.suffix, add_special_tokens=False)["input_ids"]
    before, after = special_tokens_around(tokenizer)
    max_len = len(prefix) + len(suffix) + len(before) + len(after) + 3
    spec = InputSpec(max_len=max_len, prefix=prompt.prefix, suffix=prompt.suffix)
    for ids in encode(FUND.test.text.tolist(), tokenizer, spec).inputs:
        assert len(ids) == max_len
        assert tokenizer.decode(ids).startswith(prompt.prefix)
        assert tokenizer.decode(ids).endswith(prompt.suffix)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"name": "chain_of_thought"}, "unknown prompt template prompt.name='chain_of_thought'"),
        ({"template": "{instruction} {txt}"}, "unknown placeholders ['txt']"),
        ({"template": "{instruction}"}, "must contain {text} exactly once"),
        ({"template": "{text} {text}"}, "must contain {text} exactly once"),
        ({"label_line": "{name}: {description}"}, "unknown placeholders ['name']"),
        ({"template": "{examples}\n{text}", "k": 0}, "needs k >= 1"),
        ({"template": "{text", "k": 0}, "malformed prompt template"),
    ],
)
def test_bad_templates_are_one_line(settings: dict, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)) as err:
        check_prompt(PromptConfig(**settings), "single_label")
    assert "\n" not in str(err.value)


def test_few_shot_needs_classes_and_descriptions_need_every_label(tokenizer) -> None:
    with pytest.raises(UserError, match="few-shot prompts need task=single_label"):
        check_prompt(preset("few_shot"), "regression")
    data = DataConfig(
        name="fund_reviews", instruction="判断情感。", label_descriptions={"负向": "差"}
    )
    cfg = preset("label_descriptions")
    with pytest.raises(UserError, match=r"no description for labels \['正向'\]"):
        build_prompt(cfg, data, FUND.train, LABELS, tokenizer, 0)
    with pytest.raises(UserError, match=r"set data\.instruction"):
        build_prompt(cfg, DataConfig(name="custom"), FUND.train, LABELS, tokenizer, 0)


def test_bad_prompts_stop_the_run_before_anything_is_written(compose_cfg, tmp_path) -> None:
    from src.train import train

    for overrides, message in (
        (["prompt.name=zero_shot"], "unknown prompt template"),
        (["prompt=few_shot", "prompt.k=7"], "prompt.k=7 examples per label"),
    ):
        cfg = compose_cfg("data=fund_reviews", "trainer.max_len=256", *overrides)
        with pytest.raises(UserError, match=re.escape(message)):
            train(cfg)
        assert not (tmp_path / "mlruns" / "mlflow.db").exists()


@pytest.mark.slow  # a whole run; the prompt's own tests run by default
def test_few_shot_run_logs_its_prompt_with_the_model(store: Store, tmp_path: Path) -> None:
    """prompt=few_shot on tiny_qwen2: the run trains and the checkpoint carries the prompt."""
    run = train_run(store, "data=fund_reviews", "prompt=few_shot", "trainer.max_len=160")
    assert run.data.params["prompt.name"] == "few_shot" and run.data.params["prompt.k"] == "1"
    assert {"test_macro_f1", "best_eval_macro_f1"} <= set(run.data.metrics)
    inputs = checkpoint_info(logged_checkpoint(store, run, tmp_path))["inputs"]
    shots = few_shot_examples(FUND.train, LABELS, 1, seed=42)
    assert inputs["prefix"].startswith("判断这条基金评论的情感倾向。\n文本：")
    assert all(text[:100] in inputs["prefix"] for text in shots.text)
    assert inputs["suffix"] == "\n类别："
