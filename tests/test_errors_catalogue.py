"""Bad inputs beyond a run's config: the sweeper, reports, prediction and data at the command
line. One clear line each (a UserError, or `error: ...` and exit status 2), and nothing lost:
no run, study or file is left half-written. Every case is listed in docs/errors.md.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from src import report
from src.checkpoint.files import CheckpointInfo, write_checkpoint
from src.config.errors import UserError
from src.model.tiny import train_wordpiece
from src.predict import main as predict_main
from src.sweep.search_space import parse_search_space
from src.train import train
from tests.conftest import ROOT, Store, one_error_line, tmpfs

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
        env=env | {"CLFSWEEP_PARENT_RUN_ID": "", "PYTHONPATH": str(ROOT)},  # this checkout
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
        (b"good\n\xb7\xe7\xcf\xd5\n", r"line 2 is not UTF-8 text \(invalid start byte at byte 5\)"),
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


# -- mistakes at the command line, through the commands' own entry points ---------------------


def command_line(
    main: Callable[[], Any], args: list[str], capfd, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    """Exit status and console output of `python -m <command> args`, run in this process
    through the command's entry point (Hydra, its callbacks, our wrapper) to save start-ups."""
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "__main__")  # find conf/ as `python -m` does
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    GlobalHydra.instance().clear()
    saved, sys.argv = sys.argv, [sys.modules[main.__module__].__file__ or "", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()
        root.handlers[:], root.level = handlers, level  # Hydra configured logging for the job
    out = capfd.readouterr()
    return code, out.out + out.err


def no_run_in(store: Store) -> bool:
    """No MLflow run in the store (most mistakes never even create it)."""
    return not (store.root / "mlruns" / "mlflow.db").exists() or not store.runs()


def closed_port() -> int:
    """A local TCP port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SECRET = "s3cret-pw"
# Each case: the arguments of `python -m src.train` (beside a quick run in the test's own store
# and folders), the error line expected. {tmp}, {file}, {closed} are filled in per test.
TRAIN_CASES = {
    "rank": (["method.rank=0"], r"method.rank must be a positive integer, got 0"),
    "seed": (["seed=-1"], r"seed=-1 must lie in \[0, 2\*\*32\)"),
    "logging-steps": (["trainer.logging_steps=0"], r"trainer.logging_steps must be > 0"),
    "num-workers": (["trainer.num_workers=-1"], r"trainer.num_workers must be >= 0"),
    "metric-of-another-task": (
        ["optimized_metric=eval_rmse"],
        r"optimized_metric=eval_rmse is not a metric of task=single_label; choose one of",
    ),
    "metric-without-prefix": (
        ["optimized_metric=macro_f1"],
        r"optimized_metric=macro_f1 \(eval_macro_f1\?\) is not a metric",
    ),
    "lora-target-typo": (
        ["method.target_modules=[q_proj,v_prj]"],
        r"method.target_modules: 'v_prj' matches no module .* named .*v_proj",
    ),
    "attention": (
        ["model.attn_implementation=flash_attention_2"],
        r"model.attn_implementation=flash_attention_2 cannot run here .*sdpa runs everywhere",
    ),
    "positions": (
        ["model.tiny.max_position_embeddings=8"],
        r"trainer.max_len=32 lets inputs reach \d+ tokens, beyond the 8 positions",
    ),
    "grad-accum": (
        ["trainer.grad_accum=64"],
        r"trainer.grad_accum=64 exceeds the 1 batches of an epoch .* at most 1",
    ),
    "file-store": (
        ["tracking.uri=file://{tmp}/fs"],
        r"tracking.uri=file://.* is a file store, which MLflow 3 no longer opens",
    ),
    "closed-port": (
        ["tracking.uri=http://127.0.0.1:{closed}"],
        r"cannot reach the MLflow tracking server tracking.uri=http://127.0.0.1:\d+ \(.*refused",
    ),
    "unreachable-postgres": (
        [f"tracking.uri=postgresql://clf:{SECRET}@127.0.0.1:{{closed}}/mlflow"],
        r"cannot open the MLflow store tracking.uri=postgresql://clf:\*\*\*@127.0.0.1:\d+/mlflow",
    ),
    "unknown-scheme": (["tracking.uri=foo://x"], r"unknown tracking URI scheme 'foo:'"),
    "not-a-database": (
        ["tracking.uri=sqlite:///{file}"],
        r"is not an SQLite database \(it starts with b'notes, n'\)",
    ),
    "empty-experiment": (["tracking.experiment="], r"tracking.experiment is empty"),
    "unwritable-run-dir": (
        ["hydra.run.dir={file}/run"],
        r"hydra.run.dir=.*/a-file/run cannot be created or written",
    ),
    "chinese-unquoted": (
        ["data.instruction=判断评论情感"],
        r"""Hydra cannot read the override 'data.instruction=判断评论情感' .*type it as """
        r"""'data.instruction="判断评论情感"'""",
    ),
    "split-by-the-shell": (
        ["data.instruction=rate", "the", "review"],
        r"""type it as 'data.instruction="rate the review"'""",
    ),
    "chinese-list": (
        ["data.label_names=[正向,负向]"],
        r"""type it as 'data.label_names=\["正向","负向"\]'""",
    ),
}


@pytest.fixture
def case_paths(store: Store) -> dict[str, str]:
    """Values for the cases' placeholders."""
    a_file = store.root / "a-file"
    a_file.write_text("notes, not a database")
    return {"tmp": str(store.root), "file": str(a_file), "closed": str(closed_port())}


@pytest.mark.parametrize("case", TRAIN_CASES, ids=list(TRAIN_CASES))
def test_a_mistake_at_the_command_line_is_one_line_before_any_run(
    store: Store, case_paths: dict[str, str], capfd, monkeypatch, case: str
) -> None:
    from src.train import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args, message = TRAIN_CASES[case]
    args = [a.format(**case_paths) for a in args]
    given = {a.split("=", 1)[0] for a in args}
    defaults = [o for o in store.overrides() if o.split("=", 1)[0] not in given]
    code, output = command_line(
        main, ["data=fund_reviews", "trainer.max_len=32", *defaults, *args], capfd, monkeypatch
    )
    assert code == 2, output[-3000:]
    assert re.search(message, one_error_line(output)), one_error_line(output)
    assert SECRET not in output
    assert no_run_in(store)


@pytest.mark.parametrize("module", ["src.pretrain", "src.noise", "src.estimate"])
def test_every_hydra_command_prints_the_quoted_form_of_an_unreadable_override(
    capfd, monkeypatch, module: str
) -> None:
    main = importlib.import_module(module).main
    code, output = command_line(main, ["data.instruction=判断 评论"], capfd, monkeypatch)
    assert code == 2
    assert one_error_line(output).endswith("""type it as 'data.instruction="判断 评论"'""")


def test_no_password_reaches_the_console_in_a_grid_either(store: Store, capfd, monkeypatch) -> None:
    from src.train import main

    # A store that works, and a password in a job's override: the first job reads its data.
    url = f"https://clf:{SECRET}@data.example/train.jsonl"
    args = ["-m", "data=custom", f"data.train_path={url}", "method=lora,sft"]
    code, output = command_line(main, [*args, *store.overrides()], capfd, monkeypatch)
    assert code == 2
    assert "#0 : " in output  # Hydra's launcher echoes every job's overrides ...
    assert SECRET not in output and "clf:***@" in output  # ... with the password hidden
    assert "file not found" in one_error_line(output)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("{tmp}", r"--output .* is a directory: give a file name"),
        ("{tmp}/no/out.jsonl", r"the folder .*/no does not exist"),
    ],
    ids=["a-directory", "missing-folder"],
)
def test_a_prediction_output_that_cannot_be_written_is_one_line_before_inference(
    tmp_path: Path, capsys, monkeypatch, where: str, message: str
) -> None:
    import src.checkpoint.classifier as classifier

    model = tiny_checkpoint(tmp_path / "ckpt")
    texts = tmp_path / "texts.txt"
    texts.write_text("好\n", "utf-8")
    monkeypatch.setattr(classifier, "classify", lambda *a: pytest.fail("inference ran"))
    output = where.format(tmp=tmp_path)
    args = ["--model", str(model), "--input", str(texts), "--output", output]
    code, line = predict(args, capsys)
    assert code == 2 and re.search(message, line)
    assert not list(tmp_path.rglob("*.jsonl*"))  # nothing written, not even a part


@pytest.mark.parametrize("where", ["mlflow.db", "new/mlflow.db"], ids=["file", "folder"])
def test_a_read_only_store_is_one_line(
    store: Store, tmp_path: Path, capfd, monkeypatch, where: str
) -> None:
    from src.train import main

    with tmpfs(tmp_path / "read-only", "1m") as mount:
        with closing(sqlite3.connect(mount / "mlflow.db")) as db:
            db.execute("CREATE TABLE t (x)")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        args = ["data=fund_reviews", f"tracking.uri=sqlite:///{mount / where}"]
        code, output = command_line(main, [*args, *store.overrides()[1:]], capfd, monkeypatch)
    assert code == 2
    line = one_error_line(output)
    assert re.search(r"is read-only for this user|cannot create .* there \(not a writable", line)
    assert no_run_in(store)


# -- the catalogue itself ----------------------------------------------------------------------

CATALOGUE = ROOT / "docs" / "errors.md"
# What a test must assert for each guarantee a row names (docs/errors.md, "What each row keeps").
EVIDENCE = {
    "one line": ("one_error_line(", "raises(UserError", "UserError, match", "== 2"),
    "Hydra's": ("ConfigCompositionException", "ValidationError", "compose("),
    "MLflow's": ("INVALID_PARAMETER_VALUE",),
    "no run": ("no_run_in(", "nothing_written(", ".runs()", 'mlflow.db").exists()', "journal.log"),
    "run ends": (".status ==", "status == "),
    "trial fails": ("TrialState.FAIL", "FAIL_REASON_ATTR"),
    "nothing written": ("exists()", "glob("),
    "listed": ("not in the tables", "for run_id in ids"),
    "warning": ("caplog.text", "caplog.records", "caplog.messages", "warns("),
}


def catalogue_rows() -> list[tuple[str, set[str], list[tuple[str, str]]]]:
    """Every row of docs/errors.md: its number, its guarantees, its tests (file, function). A
    section's Kept line gives the guarantees of its rows, and its test counts for each."""
    rows = []
    section_kept: set[str] = set()
    section_tests: list[tuple[str, str]] = []
    previous: list[tuple[str, str]] = []
    for line in CATALOGUE.read_text("utf-8").splitlines():
        if line.startswith("## "):
            section_kept, section_tests = set(), []
        elif line.startswith("Kept: "):
            section_kept = {k.strip() for k in line[6:].split("(")[0].split("·")}
            section_tests = named_tests(line)
        if not re.match(r"\| \d+ \|", line):
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        kept = {k.strip() for k in cells[3].split("·")} if len(cells) == 5 else section_kept
        tests = previous if cells[-1].startswith("same test") else named_tests(cells[-1])
        rows.append((cells[0], kept, [*tests, *section_tests]))
        previous = tests
    return rows


def named_tests(text: str) -> list[tuple[str, str]]:
    """The (file, function) of every `file.py::test` in a cell (`…::test`: the same file)."""
    tests, file = [], ""
    for found, name in re.findall(r"([\w/]+\.py|…)::(\w+)", text):
        file = file if found == "…" else found
        tests.append((file, name))
    return tests


def test_every_row_names_its_guarantees_and_tests_that_assert_them() -> None:
    rows = catalogue_rows()
    numbers = [number for number, _, _ in rows]
    assert len(numbers) == len(set(numbers)), "row numbers repeat"
    problems = []
    for number, kept, tests in rows:
        if not kept or not kept <= set(EVIDENCE) or not tests:
            problems.append(f"row {number}: guarantees {sorted(kept)}, tests {tests}")
            continue
        sources = []
        for file, name in tests:
            function = getattr(importlib.import_module(f"tests.{Path(file).stem}"), name, None)
            if not callable(function):
                problems.append(f"row {number}: no test {file}::{name}")
                continue
            sources.append(inspect.getsource(function))
        problems += [
            f"row {number}: none of its tests asserts '{guarantee}'"
            for guarantee in sorted(kept)
            if not any(e in source for source in sources for e in EVIDENCE[guarantee])
        ]
    assert not problems, "\n".join(problems)


def test_rows_are_numbered_in_order_and_the_introduction_counts_them() -> None:
    text = CATALOGUE.read_text("utf-8")
    rows = catalogue_rows()
    numbers = [number for number, _, _ in rows]
    assert numbers == [str(n) for n in range(1, len(rows) + 1)]
    lettered = re.findall(r"^\| (\d+[a-z]+) \|", text, re.MULTILINE)
    assert not lettered, f"rows the checks above would skip: {lettered}"
    before = sum(bool(kept & {"no run", "Hydra's"}) for _, kept, _ in rows)
    stated = re.search(r"lists (\d+) cases; (\d+) of them stop before any", " ".join(text.split()))
    assert stated, "the introduction no longer states how many cases there are"
    assert (int(stated[1]), int(stated[2])) == (len(rows), before)
