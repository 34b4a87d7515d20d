"""Specification of domain-adaptive pretraining (src.pretrain) and fine-tuning from its run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from safetensors.torch import load_file

from src.config.errors import UserError
from src.config.schema import Arch, DataConfig, ModelConfig, TrackingConfig, register_configs
from src.data.sources import load_splits
from src.model.backbones import LINEAGE_FILE, resolve_backbone
from src.pretrain import domain_texts, pretrain
from src.tracking.record import run_checkpoint
from tests.conftest import CONF, Store, run_module
from tests.levers import train_run


def compose_pretrain(overrides: list[str], tmp_path: Path) -> DictConfig:
    """conf/pretrain.yaml composed as the CLI would, writing only under tmp_path."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("pretrain", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
        cfg.tracking.dir = str(tmp_path / "mlruns")
        del cfg["hydra"]
    return cfg


def test_domain_texts_are_the_training_split_or_a_file(tmp_path: Path) -> None:
    cfg = compose_pretrain(["data=fund_reviews"], tmp_path)
    fund = load_splits(DataConfig(name="fund_reviews"), seed=42)
    texts, valid = domain_texts(cfg)
    assert texts == fund.train.text.tolist() and valid == fund.valid.text.tolist()
    path = tmp_path / "domain.txt"
    path.write_text("第一条\n\n  第二条  \n", "utf-8")
    cfg = compose_pretrain(["data=fund_reviews", f"texts_path={path}"], tmp_path)
    assert domain_texts(cfg)[0] == ["第一条", "第二条"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=tfidf_logreg"], "has no language model to pretrain"),
        (["mlm_probability=1.5"], "mlm_probability=1.5 must lie strictly between 0 and 1"),
        (["texts_path=/nonexistent/texts.txt"], "texts_path=/nonexistent/texts.txt: cannot read"),
        (["trainer.lr=0"], "trainer.lr must be > 0"),
    ],
)
def test_bad_pretraining_settings_are_one_line(
    tmp_path: Path, overrides: list, message: str
) -> None:
    cfg = compose_pretrain(["data=fund_reviews", *overrides], tmp_path)
    with pytest.raises(UserError, match=re.escape(message)) as err:
        pretrain(cfg)
    assert "\n" not in str(err.value)


def test_a_model_path_to_a_pretrained_checkpoint_keeps_its_lineage(tmp_path: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (tmp_path / name).write_text("{}")
    cfg = ModelConfig(name="tiny_bert", arch=Arch.encoder, path=str(tmp_path))
    assert resolve_backbone(cfg, []).pretrain_run_id is None
    (tmp_path / LINEAGE_FILE).write_text(json.dumps({"run_id": "abc123"}))
    assert resolve_backbone(cfg, []).pretrain_run_id == "abc123"


def test_an_unknown_from_run_is_one_line(compose_cfg) -> None:
    from src.train import train

    cfg = compose_cfg("data=fund_reviews", "model.from_run=0123456789abcdef")
    with pytest.raises(UserError, match=r"model\.from_run=0123456789abcdef: no checkpoint"):
        train(cfg)


@pytest.mark.slow
def test_pretrain_then_fine_tune_from_its_run(store: Store, tmp_path: Path) -> None:
    """Masked-LM pretraining of tiny_bert on the fund reviews, then fine-tuning from the run:
    the checkpoint is the pretrained one, and the fine-tuning run names its parent."""
    result = run_module(
        "src.pretrain",
        "model=tiny_bert",
        "data=fund_reviews",
        "trainer.max_len=16",
        "trainer.epochs=1",
        *store.overrides(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (pre,) = store.runs()
    assert f"model.from_run={pre.info.run_id}" in result.stdout
    assert pre.data.tags["stage"] == "pretrain"
    assert pre.data.metrics["eval_perplexity"] > 1 and "train_loss" in pre.data.metrics
    artifacts = {a.path for a in store.client().list_artifacts(pre.info.run_id, "checkpoint")}
    assert {"checkpoint/config.json", "checkpoint/model.safetensors"} <= artifacts
    local = store.root / "outputs" / "checkpoint"
    assert json.loads((local / LINEAGE_FILE).read_text()) == {"run_id": pre.info.run_id}

    fine = train_run(
        store,
        "model=tiny_bert",
        f"model.from_run={pre.info.run_id}",
        "data=fund_reviews",
        "trainer.max_len=16",
    )
    assert fine.data.tags["pretrain_run_id"] == pre.info.run_id
    assert fine.info.status == "FINISHED" and "test_macro_f1" in fine.data.metrics
    # The backbone the fine-tuning started from holds the pretrained weights.
    model_cfg = ModelConfig(
        name="tiny_bert", arch=Arch.encoder, from_run=pre.info.run_id, cache_dir=str(tmp_path)
    )
    backbone = resolve_backbone(
        model_cfg, [], run_checkpoint(model_cfg, TrackingConfig(uri=store.uri))
    )
    assert backbone.pretrain_run_id == pre.info.run_id
    fetched, saved = (load_file(d / "model.safetensors") for d in (backbone.path, local))
    assert fetched.keys() == saved.keys()
    assert all((fetched[k] == saved[k]).all() for k in saved)
