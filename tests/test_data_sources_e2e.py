"""End to end: `python -m src.train` on a Hugging Face dataset in each shape (save_to_disk folder,
folder of Parquet splits, Hub id from the offline cache) and on Parquet files, each MLflow run
showing the datasets it trained, validated and tested on, with source and digest."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.conftest import Store, run_module
from tests.test_data_hf import fill_hub_cache, parquet_folder, reviews, saved_dataset_dict

TINY = ["model=tiny_bert", "trainer.epochs=1", "trainer.max_len=16", "trainer.batch_size=8"]
HUB_ID = "someone/fund-reviews"


def datasets_of(run: mlflow.entities.Run) -> dict[str, tuple[str, dict[str, str], str]]:
    """Context -> (source type, source, digest) of each dataset input of a run."""
    found = {}
    for given in run.inputs.dataset_inputs:
        context = {t.key: t.value for t in given.tags}["mlflow.data.context"]
        dataset = given.dataset
        found[context] = (dataset.source_type, json.loads(dataset.source), dataset.digest)
    return found


@pytest.mark.slow  # four tiny runs (~2 min); test_data_hf checks what they record in-process
def test_runs_on_hf_datasets_and_parquet_files_record_each_split_with_source_and_digest(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "hf-datasets"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    saved = saved_dataset_dict(tmp_path / "saved")
    folder = parquet_folder(tmp_path / "reviews")
    fill_hub_cache(cache, HUB_ID)
    sweep = run_module(
        "src.train", "-m", *TINY, "data=hf", f"data.path={saved},{folder},{HUB_ID}",
        *store.overrides(),
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    train, test = tmp_path / "train.parquet", tmp_path / "test.parquet"
    pd.DataFrame(reviews(40)).to_parquet(train)
    pd.DataFrame(reviews(10, offset=100)).to_parquet(test)
    files = run_module(
        "src.train", *TINY, "data=custom", f"data.train_path={train}", f"data.test_path={test}",
        *store.overrides(),
    )  # fmt: skip
    assert files.returncode == 0, files.stderr[-3000:]

    runs = [run for run in store.runs() if run.inputs.dataset_inputs]
    assert len(runs) == 4 and all(run.info.status == "FINISHED" for run in runs)
    by_path = {run.data.params["data.path"]: datasets_of(run) for run in runs}
    for path, where in ((str(saved), saved), (str(folder), folder), (HUB_ID, HUB_ID)):
        recorded = by_path[path]
        assert set(recorded) == {"training", "validation", "test"}
        for kind, source, digest in recorded.values():
            assert kind == "hugging_face" and digest
            assert source["path"] == (str(Path(where).resolve()) if path != HUB_ID else HUB_ID)
        assert recorded["test"][1]["split"] == ("train" if path == str(folder) else "test")
        assert recorded["validation"][2] != recorded["training"][2]
    assert by_path[str(folder)]["validation"][1]["split"] == "validation"  # dev.parquet
    assert by_path[str(saved)]["validation"][1]["split"] == "train"  # carved out of train
    parquet = by_path["null"]  # data=custom
    assert {kind for kind, _, _ in parquet.values()} == {"local"}
    assert parquet["test"][1]["uri"] == str(test.resolve())
    assert parquet["training"][1]["uri"] == parquet["validation"][1]["uri"] == str(train.resolve())

    saved_run = next(r for r in runs if r.data.params.get("data.path") == str(saved))
    report = store.client().download_artifacts(
        saved_run.info.run_id, "test_classification_report.json", str(tmp_path)
    )
    assert {"neg", "pos"} <= set(json.loads(Path(report).read_text()))  # ClassLabel names
