"""Specification of src.task.heads: single-label, multi-label and regression heads, their labels."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.config.schema import DataConfig, TaskConfig
from src.errors import UserError
from src.task.heads import MultiLabel, Regression, SingleLabel, load_task_splits, make_task
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
    task = TaskConfig(name="multi_label")
    splits = load_task_splits(task, custom(train_path=write_jsonl(tmp_path / "m.jsonl", rows)), 0)
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
        train_path=str(csv), valid_path=str(csv), test_path=str(csv), label_column="aspects"
    )
    splits = load_task_splits(task, cfg, 0)
    assert splits.train.label.tolist() == [(0, 1), (), (2,)]


def test_regression_reads_numbers_and_splits_seeded(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("text,score\n" + "".join(f"评论{i},{i / 10}\n" for i in range(50)), "utf-8")
    cfg = custom(train_path=str(path), label_column="score", max_train=20)
    splits = load_task_splits(TaskConfig(name="regression"), cfg, seed=1)
    assert splits.label_names == ["score"]
    assert [len(f) for f in splits.frames().values()] == [20, 5, 5]
    assert splits.train.label.dtype == np.float64
    again = load_task_splits(TaskConfig(name="regression"), cfg, seed=1)
    assert again.test.id.tolist() == splits.test.id.tolist()
    assert set(splits.test.id).isdisjoint(splits.train.id)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "text,label\n好,4.5\n差,pos\n",
            "task=regression needs numeric labels, found 'pos' in column 'label' at line 3",
        ),
        ("text,label\n好,4.5\n差,\n", "task=regression needs numeric labels, found nan"),
    ],
)
def test_regression_on_non_numeric_labels_is_one_line(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "r.csv"
    path.write_text(content, "utf-8")
    with pytest.raises(UserError, match=re.escape(message)) as err:
        load_task_splits(TaskConfig(name="regression"), custom(train_path=str(path)), 0)
    assert "\n" not in str(err.value)


def test_built_in_class_labels_are_not_numbers_or_label_lists() -> None:
    for task in ("regression", "multi_label"):
        with pytest.raises(UserError, match=f"task={task} needs .* data=fund_reviews has single"):
            load_task_splits(TaskConfig(name=task), DataConfig(name="fund_reviews"), 0)


def test_multi_label_unknown_labels_in_test_are_one_line(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", multi_label_rows(20))
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "外观好看", "label": ["外观"]}])
    with pytest.raises(UserError, match=r"test\.jsonl: labels \['外观'\] are not among"):
        load_task_splits(
            TaskConfig(name="multi_label"), custom(train_path=train, test_path=test), 0
        )


def test_regression_on_class_labels_stops_before_anything_is_written(compose_cfg, tmp_path) -> None:
    from src.train import train

    with pytest.raises(UserError, match="task=regression needs numeric labels"):
        train(compose_cfg("data=fund_reviews", "task=regression"))
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_task_presets_set_the_optimized_metric(compose_cfg) -> None:
    assert compose_cfg().optimized_metric == "eval_macro_f1"
    assert compose_cfg("task=multi_label").optimized_metric == "eval_micro_f1"
    assert compose_cfg("task=regression").optimized_metric == "eval_rmse"


# --------------------------------------------------------------------------- end to end


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
