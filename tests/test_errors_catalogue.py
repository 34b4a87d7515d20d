"""Bad inputs beyond a run's config: the sweeper, reports, prediction and data at the command
line. One clear line each (a UserError, or `error: ...` and exit status 2), and nothing lost:
no run, study or file is left half-written. Every case is listed in docs/errors.md.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from src import report
from src.checkpoint.files import CheckpointInfo, write_checkpoint
from src.errors import UserError
from src.model.tiny import train_wordpiece
from src.predict import main as predict_main
from src.sweep.search_space import parse_search_space
from src.train import train
from tests.conftest import ROOT, Store, one_error_line

APP = ROOT / "tests" / "sweeper_app" / "app.py"
LABELS = ["负向", "正向"]
TEXTS = ["基金涨了很开心", "又亏钱了", "还行吧", "不错不错", "垃圾基金", "稳稳的幸福"] * 3


def tiny_checkpoint(path: Path, task: str = "single_label", masked_lm: bool = False) -> Path:
    """A tiny random BERT checkpoint as src.train writes it (safetensors, tokenizer, metadata)."""
    tokenizer = train_wordpiece(TEXTS, 120)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = BertForMaskedLM(config) if masked_lm else BertForSequenceClassification(config)
    info = CheckpointInfo(task=task, max_len=32, label_names=LABELS, model="tiny", method="sft")
    return write_checkpoint(model, tokenizer, path, info)  # type: ignore[arg-type]


# -- the sweeper -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("interval(0", r"cannot parse sweep parameter 'x=interval\(0': no viable alternative"),
        ("intervl(0, 1)", r"Unknown function 'intervl' Available: .*interval"),
        ("choice()", r"empty choice is not legal"),
        ("interval(5, 1)", r"x: interval\(5.0, 1.0\) is empty"),
        ("tag(log, interval(-1, 1))", r"x: a log interval must start above 0, got -1.0"),
    ],
    ids=["unclosed", "unknown-function", "empty-choice", "empty-interval", "log-below-zero"],
)
def test_bad_search_space_syntax_is_one_line(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_search_space({"x": spec}, [])


def sweep_app(cwd: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """The sweeper test app as a multirun."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RANK")}
    return subprocess.run(
        [sys.executable, str(APP), "-m", *overrides],
        cwd=cwd,
        env=env | {"CLFSWEEP_PARENT_RUN_ID": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_search_space_error_in_the_sweeper_config_is_one_line_at_the_cli(
    tmp_path: Path,
) -> None:
    proc = sweep_app(tmp_path, "hydra.sweeper.params.x='interval(0'")
    assert proc.returncode == 2
    assert "cannot parse sweep parameter 'x=interval(0'" in one_error_line(proc.stderr)
    assert not (tmp_path / "sweeps" / "app_study" / "journal.log").exists()  # no study made


def test_an_unreachable_storage_is_one_line_without_its_password(tmp_path: Path) -> None:
    proc = sweep_app(tmp_path, "hydra.sweeper.storage=postgresql://clf:s3cret@127.0.0.1:9/optuna")
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "cannot open the Optuna storage postgresql://clf:***@127.0.0.1:9/optuna" in line
    assert "is the database server running" in line
    assert "s3cret" not in proc.stderr + proc.stdout


def test_an_existing_study_with_another_direction_is_one_line(tmp_path: Path) -> None:
    first = sweep_app(tmp_path, "hydra.sweeper.n_trials=1", "steps=1")
    assert first.returncode == 0, first.stderr[-2000:]
    again = sweep_app(tmp_path, "hydra.sweeper.n_trials=2", "hydra.sweeper.direction=minimize")
    assert again.returncode == 2
    assert re.search(
        r"study app_study exists with direction maximize, not minimize: choose another "
        r"hydra.sweeper.study_name",
        one_error_line(again.stderr),
    )
    storage = f"journal:///{tmp_path}/sweeps/app_study/journal.log"
    import optuna

    from src.sweep.storage import open_storage

    study = optuna.load_study(study_name="app_study", storage=open_storage(storage))
    assert len(study.trials) == 1  # the study is untouched


def test_an_optuna_storage_without_its_driver_is_one_line(tmp_path: Path) -> None:
    from src.sweep.storage import open_storage

    with pytest.raises(UserError, match=r"needs the database driver MySQLdb: pip install"):
        open_storage("mysql://u:pw@127.0.0.1:9/optuna")


# -- reports -----------------------------------------------------------------------------------


def make_experiment(store: Store, name: str) -> list[str]:
    """Two finished runs without test metrics and one killed run; returns their ids."""
    client = store.client()
    experiment_id = client.create_experiment(name)
    ids = []
    for method in ("lora", "sft"):
        run = client.create_run(experiment_id, tags={"clfsweep.state": "completed"})
        client.log_param(run.info.run_id, "method.name", method)
        client.log_metric(run.info.run_id, "eval_macro_f1", 0.5, step=1)  # no test_* metric
        client.set_terminated(run.info.run_id, "FINISHED")
        ids.append(run.info.run_id)
    killed = client.create_run(experiment_id, tags={"error": "killed: its process ... is gone"})
    client.set_terminated(killed.info.run_id, "KILLED")
    return [*ids, killed.info.run_id]


def test_report_of_runs_with_missing_metrics_lists_each_with_the_reason(
    store: Store, tmp_path: Path, capsys
) -> None:
    ids = make_experiment(store, "holes")
    out = tmp_path / "report"
    code = report.main(
        ["--experiment", "holes", "--tracking-uri", store.uri, "--no-log", "--out", str(out)]
    )
    assert code == 1  # no run to compare: not a success
    shown = capsys.readouterr().out
    for run_id in ids:
        assert run_id[:12] in shown  # none silently dropped
    assert shown.count("no test_macro_f1 metric") == 2
    assert "killed" in shown
    assert (out / "report.md").exists()


def test_report_of_an_unknown_experiment_is_one_line(store: Store, capsys) -> None:
    make_experiment(store, "known")
    code = report.main(["--experiment", "nope", "--tracking-uri", store.uri, "--no-log"])
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "no MLflow experiment named 'nope'" in line and "known" in line


# -- prediction --------------------------------------------------------------------------------


def predict(args: list[str], capsys) -> tuple[int, str]:
    """src.predict's exit status and its one error line."""
    code = predict_main(args)
    return code, one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"good\n\xb7\xe7\xcf\xd5\n", r"line 2 is not UTF-8 \(invalid start byte\): re-encode"),
        (b"good\n\n", r"line 2 is empty: give one non-empty text per line"),
        (b"good\n   \nbad\n", r"line 2 is empty"),
        (b"", r"holds no texts"),
    ],
    ids=["not-utf8", "empty-line", "blank-line", "no-texts"],
)
def test_prediction_input_errors_name_the_line(
    tmp_path: Path, capsys, content: bytes, message: str
) -> None:
    model = tiny_checkpoint(tmp_path / "ckpt")
    texts = tmp_path / "texts.txt"
    texts.write_bytes(content)
    out = tmp_path / "out.jsonl"
    code, line = predict(
        ["--model", str(model), "--input", str(texts), "--output", str(out)], capsys
    )
    assert code == 2 and re.search(message, line)
    assert not out.exists()  # nothing half-written


def test_prediction_with_a_checkpoint_of_an_unknown_task_is_one_line(
    tmp_path: Path, capsys
) -> None:
    model = tiny_checkpoint(tmp_path / "ckpt", task="ner")
    texts = tmp_path / "texts.txt"
    texts.write_text("好\n", "utf-8")
    code, line = predict(["--model", str(model), "--input", str(texts)], capsys)
    assert code == 2
    assert "was trained for task 'ner', which this version does not know" in line


def test_prediction_with_a_pretraining_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:
    model = tiny_checkpoint(tmp_path / "ckpt", masked_lm=True)
    (model / "clfsweep.json").unlink()  # as src.pretrain writes it: no classifier metadata
    texts = tmp_path / "texts.txt"
    texts.write_text("好\n", "utf-8")
    code, line = predict(["--model", str(model), "--input", str(texts)], capsys)
    assert code == 2
    assert "holds a BertForMaskedLM checkpoint, not a text classifier" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/no/such/dir"], "is neither a directory nor an MLflow model URI"),
        (["--run-id", "0123456789abcdef0123456789abcdef"], "run 0123456789abcdef"),
    ],
    ids=["no-such-model", "no-such-run"],
)
def test_prediction_with_an_unknown_model_or_run_is_one_line(
    store: Store, capsys, args: list[str], message: str
) -> None:
    mlflow.set_tracking_uri(store.uri)
    store.client().create_experiment("exists")  # an empty store
    code, line = predict([*args, "--tracking-uri", store.uri], capsys)
    assert code == 2 and message in line


def test_prediction_with_a_missing_input_file_is_one_line(tmp_path: Path, capsys) -> None:
    model = tiny_checkpoint(tmp_path / "ckpt")
    code, line = predict(["--model", str(model), "--input", str(tmp_path / "none.txt")], capsys)
    assert code == 2 and "none.txt does not exist" in line


# -- data at the command line ------------------------------------------------------------------


def write_rows(path: Path, rows: list[dict[str, object]]) -> str:
    """A JSONL file."""
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), "utf-8")
    return str(path)


def rows(n: int = 12) -> list[dict[str, object]]:
    """Balanced rows with ids."""
    return [{"uid": f"r{i}", "text": f"评论{i}", "label": ("neg", "pos")[i % 2]} for i in range(n)]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("duplicate_ids", r"dups.jsonl.*'r0'.*duplicate|duplicate.*'r0'"),
        ("mixed_label_types", r"mixed_label_types.jsonl.*mix integers and strings"),
        ("null_texts", r"null_texts.jsonl.*line 4"),
    ],
    ids=["duplicate-ids", "mixed-label-types", "null-texts"],
)
def test_bad_data_files_stop_a_run_with_one_line_before_anything_is_written(
    compose_cfg, tmp_path: Path, case: str, message: str
) -> None:
    data = rows()
    if case == "duplicate_ids":
        data[5]["uid"] = "r0"
        name = "dups"
    elif case == "mixed_label_types":
        data[3]["label"] = 1
        name = case
    else:
        data[3]["text"] = None
        name = case
    path = write_rows(tmp_path / f"{name}.jsonl", data)
    cfg = compose_cfg("data=custom", f"data.train_path={path}", "data.id_column=uid")
    with pytest.raises(UserError, match=message):
        train(cfg)
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # no run was started
