"""Bad input: one clear line before any training starts, and nothing written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from src.config.errors import UserError
from src.train import train
from tests.conftest import QUICK, Store, run_module


def nothing_written(tmp_path: Path) -> bool:
    """No MLflow store was created under the test's tracking dir."""
    return not (tmp_path / "mlruns" / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.rank=0", "method.rank must be a positive integer"),
        ("method.rank=-4", "method.rank must be a positive integer"),
        ("trainer.lr=0", "trainer.lr must be > 0"),
        ("trainer.lr=-1e-4", "trainer.lr must be > 0"),
        ("trainer.max_len=0", "trainer.max_len must be > 0"),
        ("trainer.epochs=0", "trainer.epochs must be > 0"),
        ("trainer.warmup_ratio=1.5", "trainer.warmup_ratio must be in [0, 1)"),
        ("optimized_metric=macro_f1", "optimized_metric=macro_f1 (eval_macro_f1?) is not a metric"),
        ("model.path=/nonexistent/qwen", "is not a directory"),
    ],
)
def test_impossible_values_stop_before_training(compose_cfg, tmp_path, override, message) -> None:
    cfg = compose_cfg(*QUICK, override)
    with pytest.raises(UserError, match=re.escape(message)):
        train(cfg)
    assert nothing_written(tmp_path)


def test_a_model_path_that_is_not_a_checkpoint_names_what_is_missing(compose_cfg, tmp_path) -> None:
    bogus = tmp_path / "not-a-checkpoint"
    bogus.mkdir()
    (bogus / "pytorch_model.bin").write_bytes(b"pickle")
    cfg = compose_cfg(*QUICK, f"model.path={bogus}")
    with pytest.raises(
        UserError, match=r"missing config\.json, \*\.safetensors weights \(found pickle"
    ):
        train(cfg)
    assert nothing_written(tmp_path)


def test_custom_data_errors_name_file_and_line(compose_cfg, tmp_path) -> None:
    path = tmp_path / "train.jsonl"
    rows = [json.dumps({"text": f"评论{i}", "label": i % 2}, ensure_ascii=False) for i in range(30)]
    rows[6] = '{"text": "broken'
    path.write_text("\n".join(rows), encoding="utf-8")
    cfg = compose_cfg("data=custom", f"data.train_path={path}")
    with pytest.raises(UserError, match=r"train\.jsonl.* line 7"):
        train(cfg)
    assert nothing_written(tmp_path)


def test_unwritable_tracking_dir_is_one_clear_line(compose_cfg, tmp_path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    cfg = compose_cfg(*QUICK)
    cfg.tracking.uri = None  # the store goes under tracking.dir
    cfg.tracking.dir = str(a_file / "mlruns")
    with pytest.raises(UserError, match=r"cannot write to tracking\.dir="):
        train(cfg)


def test_hub_weights_offline_stop_with_one_line_on_how_to_supply_model_path(
    compose_cfg, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cfg = compose_cfg(*QUICK, "model=qwen2_7b_base")
    with pytest.raises(UserError, match=r"Qwen/Qwen2-7B are not available.*model\.path=DIR"):
        train(cfg)
    assert nothing_written(tmp_path)


def test_cli_prints_one_error_line_and_exits_2(store: Store) -> None:
    proc = run_module("src.train", *QUICK, "method.rank=0", *store.overrides())
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: method.rank must be a positive integer, got 0"]
    assert "Traceback" not in proc.stderr
    assert not (store.root / "mlruns" / "mlflow.db").exists()


def test_design_card_grid_stops_offline_with_one_line(store: Store) -> None:
    proc = run_module(
        "src.train",
        "-m",
        "model=qwen2_7b_base,qwen2_7b_instruct",
        "method=lora,sft",
        *store.overrides(),
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model.root=DIR" in errors[0]
    assert "Traceback" not in proc.stderr
    assert store.runs() == []  # stopped before the first job, before the parent run
