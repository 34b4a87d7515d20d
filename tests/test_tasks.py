"""Specification of src.task.heads: single-label, multi-label and regression heads, their labels."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.config.errors import UserError
from src.config.schema import DataConfig, TaskConfig
from src.data.sources import Splits, load_splits
from src.task.heads import MultiLabel, Regression, SingleLabel, make_task
from src.task.metrics import best_threshold, greater_is_better
from tests.conftest import Store
from tests.levers import predictions, train_run

ASPECTS = ["价格", "物流", "质量"]
PHRASES = {
    "物流": ["快递很快", "发货慢"],
    "质量": ["质量不错", "做工粗糙"],
    "价格": ["便宜", "太贵"],
}


def multi_label_rows(n: int) -> list[dict]:
    """Reviews naming one or two aspects, labelled with those aspects."""
    rows = []
    for i in range(n):
        aspects = [ASPECTS[i % 3]] + ([ASPECTS[(i + 1) % 3]] if i % 2 else [])
        text = "，".join(PHRASES[a][i % 2] for a in aspects) + f"。第{i}条"
        rows.append({"text": text, "label": aspects})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return str(path)


def frame(ids: list[str], labels: list[object]) -> pd.DataFrame:
    """A split frame with the given ids (as texts too) and labels."""
    return pd.DataFrame({"id": ids, "text": ids, "label": labels})


def custom(**kwargs: object) -> DataConfig:
    return DataConfig(name="custom", **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- heads


def test_single_label_metrics_ignore_auxiliary_outputs() -> None:
    task = SingleLabel(["neg", "pos"])
    logits = np.array([[2.0, 0.0, 9.0], [0.0, 1.0, 9.0], [0.0, 3.0, -9.0]])  # 3rd: an aux class
    metrics = task.metrics([0, 0, 1], logits)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    table = task.predictions(frame(["a", "b", "c"], [0, 0, 1]), logits)
    assert table.predicted.tolist() == ["neg", "pos", "pos"]
    np.testing.assert_allclose(table.p_neg + table.p_pos, 1.0)  # over the two main classes
    (answer,) = task.answers(logits[:1])
    assert answer["label"] == "neg"
    assert answer["probabilities"]["neg"] == pytest.approx(1 / (1 + np.exp(-2)))


def test_multi_label_targets_metrics_and_threshold() -> None:
    task = MultiLabel(["a", "b", "c"])
    gold = [(0,), (0, 2), ()]
    assert task.targets(gold) == [[1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    probs = np.array([[0.9, 0.3, 0.2], [0.7, 0.1, 0.35], [0.2, 0.3, 0.1]])
    logits = np.log(probs / (1 - probs))
    tuned = task.metrics(gold, logits)  # no threshold set: tuned on these logits
    assert tuned["threshold"] == pytest.approx(0.35)  # the smallest that catches c in row 2
    assert tuned["subset_accuracy"] == 1.0 and tuned["micro_f1"] == 1.0
    fixed = MultiLabel(["a", "b", "c"], threshold=0.5).metrics(gold, logits)
    # 0.5 misses c in row 2: P = 2/2, R = 2/3 (micro), 2 of 3 rows exact.
    assert fixed["micro_precision"] == 1.0 and fixed["micro_recall"] == pytest.approx(2 / 3)
    assert fixed["subset_accuracy"] == pytest.approx(2 / 3)
    assert fixed["samples_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)  # sklearn: empty row = 0
    assert {"macro_f1", "weighted_f1", "samples_precision"} <= set(fixed)
    calibrated = task.calibrated(gold, logits)
    assert calibrated.threshold == pytest.approx(0.35) and not calibrated.calibrates
    table = calibrated.predictions(frame(["x", "y", "z"], gold), logits)
    assert table.gold.tolist()[:2] == ["a", "a|c"] and table.predicted.tolist()[:2] == ["a", "a|c"]
    assert calibrated.answers(logits)[1]["labels"] == ["a", "c"]
    text, report = calibrated.report(gold, logits)
    assert "samples avg" in text and report["c"]["support"] == 1


def test_best_threshold_maximises_micro_f1() -> None:
    gold = np.array([[1, 0], [0, 1], [1, 1]])
    probs = np.array([[0.62, 0.2], [0.3, 0.61], [0.64, 0.66]])
    assert best_threshold(gold, probs) == pytest.approx(0.35)


def test_regression_metrics_and_direction() -> None:
    task = Regression(["score"])
    gold = [1.0, 2.0, 3.0, 4.0]
    logits = np.array([[1.5], [2.0], [2.5], [5.0]])
    metrics = task.metrics(gold, logits)
    assert metrics["mae"] == pytest.approx(0.5)
    assert metrics["rmse"] == pytest.approx(np.sqrt((0.25 + 0 + 0.25 + 1) / 4))
    assert metrics["pearson"] == pytest.approx(np.corrcoef(gold, logits[:, 0])[0, 1])
    assert metrics["spearman"] == pytest.approx(1.0)
    assert np.isnan(task.metrics(gold, np.ones((4, 1)))["pearson"])  # constant predictions
    assert task.targets([1, "2.5"]) == [1.0, 2.5]
    assert task.answers(logits[:1]) == [{"value": 1.5}]
    assert not greater_is_better("eval_rmse") and not greater_is_better("eval_mae")
    assert greater_is_better("eval_pearson") and greater_is_better("eval_samples_f1")


def test_make_task_picks_the_head_and_loss() -> None:
    assert make_task(TaskConfig(), ["a", "b"]).problem_type == "single_label_classification"
    multi = make_task(TaskConfig(name="multi_label", threshold=0.4), ["a", "b"])
    assert isinstance(multi, MultiLabel) and multi.threshold == 0.4
    assert multi.problem_type == "multi_label_classification"
    regression = make_task(TaskConfig(name="regression"), ["score"])
    assert regression.outputs == 1 and regression.problem_type == "regression"


# --------------------------------------------------------------------------- data


def test_multi_label_jsonl_and_csv_read_to_label_index_tuples(tmp_path: Path) -> None:
    rows = multi_label_rows(40)
    cfg = custom(train_path=write_jsonl(tmp_path / "m.jsonl", rows))
    splits = load_splits(cfg, 0, "multi_label")
    assert splits.label_names == ASPECTS
    assert [len(f) for f in splits.frames().values()] == [32, 4, 4]  # 10% valid, 10% test
    frame = splits.train.set_index("text")
    for row in rows:
        if row["text"] in frame.index:
            expected = tuple(sorted(ASPECTS.index(a) for a in row["label"]))
            assert frame.loc[row["text"], "label"] == expected
    csv = tmp_path / "m.csv"
    csv.write_text("text,aspects\n便宜又快,价格|物流\n什么都没说,\n做工粗糙,质量\n", "utf-8")
    cfg = custom(
        train_path=str(csv),
        valid_path=str(csv),
        test_path=str(csv),
        label_column="aspects",
        allow_overlap=True,  # one file for all three splits: only its cells matter here
    )
    splits = load_splits(cfg, 0, "multi_label")
    assert splits.train.label.tolist() == [(0, 1), (), (2,)]


def test_regression_reads_numbers_and_splits_seeded(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("text,score\n" + "".join(f"评论{i},{i / 10}\n" for i in range(50)), "utf-8")
    cfg = custom(train_path=str(path), label_column="score", max_train=20)
    splits = load_splits(cfg, 1, "regression")
    assert splits.label_names == ["score"]
    assert [len(f) for f in splits.frames().values()] == [20, 5, 5]
    assert splits.train.label.dtype == np.float64
    again = load_splits(cfg, 1, "regression")
    assert again.test.id.tolist() == splits.test.id.tolist()
    assert set(splits.test.id).isdisjoint(splits.train.id)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "text,label\n好,4.5\n差,pos\n",
            "task=regression needs numeric labels, found 'pos' in column 'label' at line 3",
        ),
        ("text,label\n好,4.5\n差,\n", "missing label in column 'label' at line 3"),
    ],
    ids=["not-a-number", "missing"],
)
def test_regression_on_non_numeric_labels_is_one_line(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "r.csv"
    path.write_text(content, "utf-8")
    with pytest.raises(UserError, match=re.escape(message)) as err:
        load_splits(custom(train_path=str(path)), 0, "regression")
    assert "\n" not in str(err.value)


def test_built_in_class_labels_are_not_numbers_or_label_lists() -> None:
    for task in ("regression", "multi_label"):
        with pytest.raises(UserError, match=f"task={task} needs .* data=fund_reviews has single"):
            load_splits(DataConfig(name="fund_reviews"), 0, task)


def test_multi_label_unknown_labels_in_test_are_one_line(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", multi_label_rows(20))
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "外观好看", "label": ["外观"]}])
    with pytest.raises(UserError, match=r"test\.jsonl: labels \['外观'\] are not among"):
        load_splits(custom(train_path=train, test_path=test), 0, "multi_label")


def test_regression_on_class_labels_stops_before_anything_is_written(compose_cfg, tmp_path) -> None:
    from src.train import train

    with pytest.raises(UserError, match="task=regression needs numeric labels"):
        train(compose_cfg("data=fund_reviews", "task=regression"))
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_task_presets_set_the_optimized_metric(compose_cfg) -> None:
    assert compose_cfg().optimized_metric == "eval_macro_f1"
    assert compose_cfg("task=multi_label").optimized_metric == "eval_micro_f1"
    assert compose_cfg("task=regression").optimized_metric == "eval_rmse"


# --------------------------------------------------------------------------- label cells


def names_by_text(splits: Splits) -> dict[str, tuple[str, ...]]:
    """Each text's labels, by name, over all three splits."""
    frame = pd.concat(splits.frames().values())
    return {
        text: tuple(splits.label_names[i] for i in label)
        for text, label in zip(frame["text"], frame["label"], strict=True)
    }


def test_multi_label_cells_in_every_form_people_write(tmp_path: Path) -> None:
    """JSON lists, lists as pandas writes them to CSV, JSON text in CSV, joined labels."""
    lists = [["价格", "物流"], ["质量"], [], ["物流", "质量"]] * 5
    texts = [f"评论{i}" for i in range(20)]
    expected = {t: tuple(sorted(ls)) for t, ls in zip(texts, lists, strict=True)}
    files = {
        "pandas.csv": lambda p: pd.DataFrame({"text": texts, "label": lists}).to_csv(
            p, index=False
        ),
        "json.csv": lambda p: pd.DataFrame(
            {"text": texts, "label": [json.dumps(ls, ensure_ascii=False) for ls in lists]}
        ).to_csv(p, index=False),
        "joined.tsv": lambda p: pd.DataFrame(
            {"text": texts, "label": ["|".join(ls) for ls in lists]}
        ).to_csv(p, sep="\t", index=False),
        "spaced.jsonl": lambda p: write_jsonl(
            p,
            [
                {"text": t, "label": [f" {x}\t" for x in ls]}
                for t, ls in zip(texts, lists, strict=True)
            ],
        ),
    }
    for name, write in files.items():
        write(tmp_path / name)
        splits = load_splits(custom(train_path=str(tmp_path / name)), 0, "multi_label")
        assert splits.label_names == ASPECTS, name
        assert names_by_text(splits) == expected, name


@pytest.mark.parametrize(
    ("cell", "fact"),
    [
        ('"[""价格"", ""物流"""', "malformed list of labels"),
        ("\"['价格' '物流']\"", "without commas between them"),
        ('"[[""价格""]]"', "a list item ['价格'] of type list"),
        ('"[1.5]"', "a list item 1.5 of type float"),
        ("价格]", "malformed list of labels"),
    ],
    ids=["unclosed", "numpy-print", "nested", "float-item", "stray-bracket"],
)
def test_malformed_multi_label_cells_name_file_and_line(
    tmp_path: Path, cell: str, fact: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"text,label\n好,价格\n差,质量|物流\n中,{cell}\n", "utf-8")
    with pytest.raises(UserError, match=re.escape(fact)) as err:
        load_splits(custom(train_path=str(path)), 0, "multi_label")
    assert "bad.csv" in str(err.value) and "line 4" in str(err.value)


@pytest.mark.parametrize("separator", [",", "、"])
def test_multi_label_cells_joined_by_another_separator_are_refused(
    tmp_path: Path, separator: str
) -> None:
    path = tmp_path / "joined.csv"
    cells = [separator.join(ASPECTS[: 1 + i % 3]) for i in range(30)]
    pd.DataFrame({"text": [f"评论{i}" for i in range(30)], "label": cells}).to_csv(
        path, index=False
    )
    with pytest.raises(UserError, match=re.escape(f"data.label_separator={separator!r}")):
        load_splits(custom(train_path=str(path)), 0, "multi_label")
    cfg = custom(train_path=str(path), label_separator=separator)
    assert load_splits(cfg, 0, "multi_label").label_names == sorted(ASPECTS)


def test_regression_takes_no_label_names(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"data\.label_names=.* does not apply to task=regression"):
        load_splits(custom(train_path="unread.csv", label_names=["a", "b"]), 0, "regression")


# --------------------------------------------------------------------------- splits per task


def test_multi_label_splits_and_caps_keep_every_label_share(tmp_path: Path) -> None:
    """Iterative stratification: even a label on 5% of the rows lands in every split."""
    rows = [
        {
            "text": f"评论{i}",
            "label": ["a"] * (i % 2 == 0) + ["b"] * (i % 10 < 3) + ["c"] * (i % 20 == 1),
        }
        for i in range(200)
    ]
    cfg = custom(train_path=write_jsonl(tmp_path / "m.jsonl", rows))
    splits = load_splits(cfg, 0, "multi_label")
    assert [len(f) for f in splits.frames().values()] == [160, 20, 20]
    total = {name: sum(name in r["label"] for r in rows) for name in "abc"}  # a 100, b 60, c 10
    for split, frame in splits.frames().items():
        share = len(frame) / len(rows)
        for i, name in enumerate(splits.label_names):
            count = sum(i in label for label in frame["label"])
            assert abs(count - total[name] * share) <= 1, (split, name, count)
    capped = load_splits(custom(train_path=cfg.train_path, max_train=40), 0, "multi_label")
    assert len(capped.train) == 40
    assert [sum(i in label for label in capped.train["label"]) for i in range(3)] == [20, 12, 2]
    again = load_splits(cfg, 0, "multi_label")
    assert again.test["id"].tolist() == splits.test["id"].tolist()


def test_regression_splits_and_caps_span_the_range_of_the_target(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("text,score\n" + "".join(f"评论{i},{i}\n" for i in range(100)), "utf-8")
    cfg = custom(train_path=str(path), label_column="score")
    splits = load_splits(cfg, 3, "regression")
    assert sorted(int(v) // 10 for v in splits.test["label"]) == list(range(10))  # one per decile
    capped = load_splits(
        custom(train_path=str(path), label_column="score", max_train=20), 3, "regression"
    )
    deciles = np.quantile(splits.train["label"], np.linspace(0, 1, 11))
    counts = np.histogram(capped.train["label"], bins=deciles)[0]
    assert counts.tolist() == [2] * 10


# --------------------------------------------------------------------------- same checks for all


CELLS = {"single_label": ("a", "b"), "multi_label": (["a"], ["a", "b"]), "regression": (1.0, 2.5)}


def task_rows(task: str, n: int, tag: str = "") -> list[dict]:
    """n rows alternating between the task's two labels, with ids."""
    return [
        {"uid": f"{tag}{i}", "text": f"{tag}评论{i}", "label": CELLS[task][i % 2]} for i in range(n)
    ]


@pytest.mark.parametrize("task", list(CELLS))
@pytest.mark.parametrize(
    ("case", "fact"),
    [
        pytest.param(case, fact, id=case)
        for case, fact in [
            ("duplicate-id", "duplicate ids in column 'uid'"),
            ("shared-id", "also occurs in"),
            ("empty-text", "missing or empty text"),
            ("overlap", "are also training texts"),
            ("same-file", "is the training file itself"),
            ("one-label", "only one class|one value"),
            ("too-few-rows", "too few"),
        ]
    ],
)
def test_every_task_gets_the_same_data_checks(
    tmp_path: Path, task: str, case: str, fact: str
) -> None:
    train, test = task_rows(task, 20), task_rows(task, 10, tag="t")
    if case == "duplicate-id":
        train[3]["uid"] = train[0]["uid"]
    elif case == "shared-id":
        test[0]["uid"] = train[0]["uid"]
    elif case == "empty-text":
        test[4]["text"] = " "
    elif case == "overlap":
        test[0]["text"], test[1]["text"] = train[5]["text"], train[6]["text"]
    elif case == "one-label":
        train, test = ([{**r, "label": CELLS[task][0]} for r in rs] for rs in (train, test))
    elif case == "too-few-rows":
        train, test = train[:2], []
    if task == "multi_label" and case == "one-label":
        train[0]["label"] = []  # names come from data.label_names, a and b
    paths = {"train_path": write_jsonl(tmp_path / "train.jsonl", train)}
    if test:
        paths["test_path"] = write_jsonl(tmp_path / "test.jsonl", test)
    if case == "same-file":
        paths["test_path"] = paths["train_path"]
    names = ["a", "b"] if task == "multi_label" and case == "one-label" else None
    cfg = custom(**paths, id_column="uid", label_names=names)
    with pytest.raises(UserError, match=fact) as err:
        load_splits(cfg, 0, task)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("task", ["single_label", "multi_label"])
def test_an_evaluation_class_missing_from_train_stops_every_class_task(
    tmp_path: Path, task: str
) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", task_rows(task, 20))
    extra = "c" if task == "single_label" else ["c"]
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "新的", "label": extra}])
    cfg = custom(train_path=train, test_path=test, label_names=["a", "b", "c"])
    with pytest.raises(
        UserError, match=r"test file .*test\.jsonl has labels \['c'\] that never occur"
    ):
        load_splits(cfg, 0, task)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow  # a whole run; the multi-label head's tests run by default
def test_multi_label_run(store: Store, tmp_path: Path) -> None:
    """task=multi_label on tiny_bert: BCE head, threshold tuned on validation, set-based metrics."""
    data = write_jsonl(tmp_path / "aspects.jsonl", multi_label_rows(80))
    run = train_run(
        store,
        "model=tiny_bert",
        "task=multi_label",
        "data=custom",
        f"data.train_path={data}",
        "tracking.log_model=false",
    )
    metrics = run.data.metrics
    for name in ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "threshold"):
        assert 0 <= metrics[f"test_{name}"] <= 1 and f"eval_{name}" in metrics
    assert metrics["best_eval_micro_f1"] == metrics["eval_micro_f1"]  # one epoch
    table = predictions(store, run, tmp_path)
    assert list(table.columns) == ["id", "gold", "predicted", *(f"p_{a}" for a in ASPECTS)]
    report = store.client().download_artifacts(
        run.info.run_id, "test_classification_report.txt", str(tmp_path)
    )
    assert "samples avg" in Path(report).read_text()


@pytest.mark.slow
def test_regression_run(store: Store, tmp_path: Path) -> None:
    """task=regression on tiny_qwen2: one output, MSE; MAE / RMSE / Pearson / Spearman."""
    path = tmp_path / "scores.csv"
    rows = [
        (r["text"], 1 + len(r["label"]) + (i % 3) / 2) for i, r in enumerate(multi_label_rows(60))
    ]
    path.write_text("text,score\n" + "".join(f"{t},{s}\n" for t, s in rows), "utf-8")
    run = train_run(
        store,
        "task=regression",
        "data=custom",
        f"data.train_path={path}",
        "data.label_column=score",
        "trainer.lr=1e-3",
        "tracking.log_model=false",
    )
    metrics = run.data.metrics
    assert {"test_mae", "test_rmse", "test_pearson", "test_spearman", "best_eval_rmse"} <= set(
        metrics
    )
    table = predictions(store, run, tmp_path)
    assert metrics["test_mae"] == pytest.approx(
        (table.gold - table.predicted).abs().mean(), rel=1e-6
    )
