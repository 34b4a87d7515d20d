"""Specification of src.data.tables: every file is read as written, or refused naming the line.

Each test builds a hostile file in tmp_path and reads it through the one reader (directly, or
through load_splits where the labels matter).
"""

from __future__ import annotations

import codecs
import json
import unicodedata
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from src.config.errors import UserError
from src.config.schema import DataConfig
from src.data.sources import excluded_ids, load_splits
from src.data.tables import decode, lines, read_lines, read_table
from src.predict import input_texts
from tests.conftest import Store
from tests.levers import PREDICTIONS, train_run


def refused(path: Path | str, *facts: str) -> str:
    """Assert read_table refuses the file with one line naming every fact; return the line."""
    with pytest.raises(UserError) as info:
        read_table(path)
    message = str(info.value)
    assert "\n" not in message
    for fact in facts:
        assert fact in message, f"{fact!r} not in {message!r}"
    return message


def custom_splits(path: Path, **kwargs: object) -> pd.DataFrame:
    """Every row of a custom data set (all splits), labels as names, read by load_splits."""
    splits = load_splits(DataConfig(name="custom", train_path=str(path), **kwargs), seed=0)
    frame = pd.concat(splits.frames().values())
    return frame.assign(label=[splits.label_names[i] for i in frame.label])


# --------------------------------------------------------------------------- cells as text


def test_csv_label_codes_are_text_as_written(tmp_path: Path) -> None:
    """`01` and `1` were parsed as the number 1: four codes became two classes."""
    path = tmp_path / "codes.csv"
    codes = ["01", "1", "02", "2"]
    path.write_text("text,label\n" + "".join(f"t{i},{codes[i % 4]}\n" for i in range(40)))
    frame = custom_splits(path)
    assert Counter(frame.label) == {"01": 10, "1": 10, "02": 10, "2": 10}


def test_every_csv_cell_reads_as_the_text_written(tmp_path: Path) -> None:
    """pandas turns NA / null / None / empty into NaN, True into a bool, 1e3 into 1000.0."""
    cells = ["NA", "null", "None", "True", "1e3", "0x10", "007", " padded ", "1.0", "", "N/A"]
    path = tmp_path / "cells.csv"
    path.write_text("id,text,label\n" + "".join(f"{c},{c},{c}x\n" for c in cells))
    frame = read_table(path)
    assert frame.text.tolist() == frame.id.tolist() == cells  # an empty cell is empty text
    assert frame.label.tolist() == [f"{c}x" for c in cells]
    assert frame.index.tolist() == list(range(2, 13))  # each row numbered by its line


def test_a_text_keeps_its_characters_and_labels_and_ids_compare_in_nfc(tmp_path: Path) -> None:
    nfc, nfd = "café", unicodedata.normalize("NFD", "café")
    rows = [
        {"id": nfd if i == 0 else f"r{i}", "text": f"  {nfd} {i} ", "label": [nfc, nfd, "x"][i % 3]}
        for i in range(30)
    ]
    path = tmp_path / "forms.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    frame = custom_splits(path, id_column="id")
    assert Counter(frame.label) == {nfc: 20, "x": 10}  # one class, not two that look alike
    assert f"  {nfd} 0 " in frame.text.tolist()  # the text as written: NFD, spaces kept
    assert nfc in frame.id.tolist()
    excluded = custom_splits(path, id_column="id", exclude_ids=[nfc])
    assert len(excluded) == 29


def test_with_label_names_whole_numbers_are_indices_and_padded_ones_are_not(
    tmp_path: Path,
) -> None:
    path = tmp_path / "index.csv"
    path.write_text("text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(20)))
    assert Counter(custom_splits(path, label_names=["neg", "pos"]).label) == {"neg": 10, "pos": 10}
    padded = tmp_path / "padded.csv"
    padded.write_text("text,label\n" + "".join(f"t{i},0{i % 2}\n" for i in range(20)))
    with pytest.raises(UserError, match=r"labels \['00', '01'\] .* not among data.label_names"):
        custom_splits(padded, label_names=["neg", "pos"])


@pytest.mark.parametrize("written", ["1_000", "０.５", "0x10", "1,5"])
def test_a_regression_label_is_a_decimal_numeral_as_written(tmp_path: Path, written: str) -> None:
    """float() reads `1_000` as 1000.0 and full-width digits as digits."""
    path = tmp_path / "scores.csv"
    path.write_text(
        'text,score\n"x",1e3\n' + "".join(f"t{i},{i}.5\n" for i in range(20)) + f'odd,"{written}"\n'
    )
    cfg = DataConfig(name="custom", train_path=str(path), label_column="score")
    with pytest.raises(UserError, match=f"numeric labels, found '{written}'.* line 23"):
        load_splits(cfg, seed=0, task="regression")


def test_json_values_keep_their_json_types(tmp_path: Path) -> None:
    """A JSON integer column with a gap stays integers (pandas made them floats: id "3.0")."""
    path = tmp_path / "typed.json"
    path.write_text(
        json.dumps([{"id": 3, "text": "a"}, {"text": "b"}, {"id": 10**20, "text": "c"}])
    )
    frame = read_table(path)
    assert frame.id.tolist()[0] == 3 and isinstance(frame.id.tolist()[0], int)
    assert frame.id.tolist()[2] == 10**20


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(tmp_path: Path, constant: str) -> None:
    path = tmp_path / "nan.jsonl"
    path.write_text(f'{{"text": "a", "label": "x"}}\n{{"text": "b", "label": {constant}}}\n')
    refused(path, "nan.jsonl:2", f"{constant} is not a JSON value")


def test_a_text_holding_half_a_surrogate_pair_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "half.jsonl"
    rows = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(10)]
    path.write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + '{"text": "\\ud83d", "label": "a"}\n'
    )
    with pytest.raises(UserError, match="line 11 hold half of a UTF-16 surrogate pair"):
        custom_splits(path)


# --------------------------------------------------------------------------- rows as written


def test_a_tsv_has_no_quoting_so_a_lone_quote_swallows_no_row(tmp_path: Path) -> None:
    """pandas opened a quoted field at the first lone `"` and closed it at the next: 34 of 40."""
    texts = [f'he said "hi {i}' if i in (5, 12) else f"text {i}" for i in range(40)]
    path = tmp_path / "quotes.tsv"
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{'ab'[i % 2]}\n" for i, t in enumerate(texts)))
    frame = read_table(path)
    assert frame.text.tolist() == texts and len(frame) == 40


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ('text,label\nok,a\n"Great" product,b\nfine,a\n', "bad.csv:3"),  # quote inside a field
        ('text,label\nok,a\n"never closed,b\nfine,a\n', "bad.csv:3"),  # open to the end
        ('text,label\nok,a\n"opened,a\nrow,b\nrow,a\nclosed",b\nlast,a\n', "bad.csv:3"),  # swallows
    ],
    ids=["quote-in-field", "open-quote", "swallowed-rows"],
)
def test_a_broken_csv_quote_is_refused_with_its_line(
    tmp_path: Path, content: str, line: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    refused(path, line, "malformed CSV")


def test_a_quoted_csv_field_may_hold_line_breaks_and_rows_keep_their_first_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "multi.csv"
    path.write_text('text,label\n"two\nlines, one comma",a\n"say ""hi""",b\nlast,a\n')
    frame = read_table(path)
    assert frame.text.tolist() == ["two\nlines, one comma", 'say "hi"', "last"]
    assert frame.index.tolist() == [2, 4, 5]


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("short.csv", "text,label\na,x\nb\nc,y\n", "short.csv:3"),
        ("long.tsv", "text\tlabel\na\tx\nb\tc\ty\n", "long.tsv:3"),
        ("short.tsv", "text\tlabel\na\tx\nb\n", "short.tsv:3"),
    ],
)
def test_a_row_of_another_width_than_the_header_is_refused(
    tmp_path: Path, name: str, content: str, line: str
) -> None:
    (tmp_path / name).write_text(content)
    refused(tmp_path / name, line, "fields, the header 2")


# --------------------------------------------------------------------------- bytes and line ends

ROWS = [{"id": f"r{i}", "text": f"text {i}", "label": "ab"[i % 2]} for i in range(6)]


def encoded(fmt: str, end: str = "\n") -> str:
    """ROWS written in a format with the given line end."""
    if fmt == "jsonl":
        return "".join(json.dumps(r) + end for r in ROWS)
    if fmt == "json":
        return json.dumps(ROWS, indent=1).replace("\n", end)
    sep = "," if fmt == "csv" else "\t"
    return end.join([sep.join(ROWS[0]), *(sep.join(r.values()) for r in ROWS)]) + end


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl"])
@pytest.mark.parametrize(
    ("mark", "encoding", "end"),
    [
        (codecs.BOM_UTF8, "utf-8", "\r\n"),
        (codecs.BOM_UTF16_LE, "utf-16-le", "\n"),
        (codecs.BOM_UTF16_BE, "utf-16-be", "\r"),
        (b"", "utf-8", "\r"),
    ],
    ids=["utf8-bom-crlf", "utf16le-bom", "utf16be-bom-cr", "cr"],
)
def test_every_format_reads_the_same_rows_whatever_the_mark_and_line_ends(
    tmp_path: Path, fmt: str, mark: bytes, encoding: str, end: str
) -> None:
    path = tmp_path / f"rows.{fmt}"
    path.write_bytes(mark + encoded(fmt, end).encode(encoding))
    frame = read_table(path)
    assert list(frame.columns) == ["id", "text", "label"]  # no BOM in the first name
    assert frame.to_dict("records") == ROWS


def test_jsonl_texts_may_hold_every_character_json_allows(tmp_path: Path) -> None:
    """str.splitlines breaks lines at U+2028, U+0085 and others json.dumps writes raw."""
    texts = [f"a{c}b" for c in "\u2028\u2029\u0085\x0b\x0c\x1c\x1d\x1e"]
    path = tmp_path / "raw.jsonl"
    rows = [{"text": t, "label": "ab"[i % 2]} for i, t in enumerate(texts)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    assert read_table(path).text.tolist() == texts


@pytest.mark.parametrize(
    ("data", "facts"),
    [
        ("text,label\n好,1\n坏,2\n".encode("gbk"), ("line 2", "not UTF-8", "at byte 11")),
        ("text,label\n".encode("utf-16-le"), ("line 1", "NUL", "byte-order mark")),
    ],
    ids=["gbk", "utf16-without-mark"],
)
def test_text_in_another_encoding_is_refused_naming_line_and_byte(
    tmp_path: Path, data: bytes, facts: tuple[str, ...]
) -> None:
    path = tmp_path / "other.csv"
    path.write_bytes(data)
    refused(path, "other.csv", *facts)


def test_only_line_feeds_and_carriage_returns_end_a_line() -> None:
    assert lines("a\r\nb\rc\nd\u2028e\x85f\n") == ["a", "b", "c", "d\u2028e\x85f"]
    assert decode(codecs.BOM_UTF8 + b"x", "f") == "x"


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_data_path_that_is_no_regular_file_is_named_as_such(tmp_path: Path, kind: str) -> None:
    import os

    path = tmp_path / f"data-{kind}.csv"
    path.mkdir() if kind == "folder" else os.mkfifo(path)
    refused(path, str(path), "folder" if kind == "folder" else "not a regular file")


# --------------------------------------------------------------------------- other readers


def test_an_exclude_file_saved_with_a_bom_and_crlf_excludes_its_first_id(tmp_path: Path) -> None:
    path = tmp_path / "exclude.txt"
    path.write_bytes(codecs.BOM_UTF8 + b"neg-01\r\npos-07\r\n")
    assert excluded_ids(DataConfig(name="fund_reviews", exclude_file=str(path))) == {
        "neg-01",
        "pos-07",
    }
    base = load_splits(DataConfig(name="fund_reviews"), 0)
    kept = load_splits(DataConfig(name="fund_reviews", exclude_file=str(path)), 0)
    assert len(pd.concat(base.frames().values())) - len(pd.concat(kept.frames().values())) == 2


def test_an_exclude_table_may_repeat_ids_and_its_ids_are_text(tmp_path: Path) -> None:
    path = tmp_path / "suspects.csv"
    path.write_text("id,rank\n007,1\n007,2\n 8 ,3\n")
    assert excluded_ids(DataConfig(name="custom", exclude_file=str(path))) == {"007", "8"}


def test_text_lines_read_as_written(tmp_path: Path) -> None:
    path = tmp_path / "texts.txt"
    path.write_bytes(codecs.BOM_UTF8 + "一\u2028行\r\n  two  \rthree".encode())
    assert read_lines(path, "--input") == [(1, "一\u2028行"), (2, "  two  "), (3, "three")]


def test_predict_reads_a_data_file_by_its_text_column(tmp_path: Path) -> None:
    """A JSONL given to --input was classified line by line, braces and all."""
    path = tmp_path / "test.jsonl"
    path.write_text('{"id": 1, "text": "好\\u2028评"}\n{"id": 2, "text": "差"}\n', "utf-8")
    assert input_texts(str(path), "text") == ["好\u2028评", "差"]
    with pytest.raises(UserError, match=r"no column 'review'.*--text-column"):
        input_texts(str(path), "review")
    txt = tmp_path / "texts.txt"
    txt.write_bytes(codecs.BOM_UTF8 + b"a\r\nb\r\n")
    assert input_texts(str(txt), "text") == ["a", "b"]


def test_a_tsv_field_quoted_by_python_or_pandas_reads_as_the_text_they_were_given(
    tmp_path: Path,
) -> None:
    texts = ['say "hi"', '"quoted"', 'lone " quote', '"unclosed']
    path = tmp_path / "pandas.tsv"
    pd.DataFrame({"text": texts, "label": list("abab")}).to_csv(path, sep="\t", index=False)
    assert read_table(path).text.tolist() == texts
    every = tmp_path / "all.tsv"
    every.write_text('"text"\t"label"\n"a ""b"""\t"x"\n"plain"\t"y"\n')
    assert read_table(every).to_dict("list") == {"text": ['a "b"', "plain"], "label": ["x", "y"]}


# --------------------------------------------------------------------------- a run, end to end


def test_a_run_on_hostile_files_trains_on_every_row_and_class_as_written(
    store: Store, tmp_path: Path
) -> None:
    """`python -m src.train` on a BOM + CRLF CSV of label codes 01 / 1 / 02 / 2, a TSV test file
    with lone quotes, and a BOM + CRLF exclude file: 4 classes, every row, the first id excluded."""
    codes = ["01", "1", "02", "2"]
    train = tmp_path / "train.csv"
    body = "".join(f'r{i},"评论 {i} 说 ""{codes[i % 4]}""",{codes[i % 4]}\r\n' for i in range(80))
    train.write_bytes(codecs.BOM_UTF8 + f"id,text,label\r\n{body}".encode())
    test = tmp_path / "test.tsv"
    lone = [f'测 "{i} {codes[i % 4]}' for i in range(40)]  # a quote in every text, never closed
    test.write_text(
        "id\ttext\tlabel\n" + "".join(f"t{i}\t{t}\t{codes[i % 4]}\n" for i, t in enumerate(lone))
    )
    exclude = tmp_path / "exclude.txt"
    exclude.write_bytes(codecs.BOM_UTF8 + b"r0\r\n")
    files = [f"data.train_path={train}", f"data.test_path={test}", f"data.exclude_file={exclude}"]
    run = train_run(store, "model=tfidf_logreg", "data=custom", "data.id_column=id", *files)
    table = pd.read_csv(
        store.client().download_artifacts(run.info.run_id, PREDICTIONS, str(tmp_path)), dtype=str
    )
    assert len(table) == 40 and Counter(table.gold) == {c: 10 for c in codes}
    assert sorted(c.removeprefix("p_") for c in table.columns if c.startswith("p_")) == sorted(
        codes
    )
    rows = {
        tag.value: json.loads(inp.dataset.profile)["num_rows"]
        for inp in run.inputs.dataset_inputs
        for tag in inp.tags
        if tag.key == "mlflow.data.context"
    }
    assert rows["training"] + rows["validation"] == 79 and rows["test"] == 40


def test_column_settings_are_compared_as_the_header_reads(tmp_path: Path) -> None:
    """The header's names lose surrounding whitespace and compare in NFC: so do the settings."""
    nfd = unicodedata.normalize("NFD", "é")
    path = tmp_path / "named.csv"
    path.write_text(f"{nfd}, label \n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(20)))
    frame = custom_splits(path, text_column=nfd, label_column=" label")
    assert len(frame) == 20


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_a_text_longer_than_the_csv_modules_default_field_limit_is_read(
    tmp_path: Path, fmt: str
) -> None:
    text = "长" * 200_000
    path = tmp_path / f"long.{fmt}"
    path.write_text(
        f"text{',' if fmt == 'csv' else chr(9)}label\n{text}{',' if fmt == 'csv' else chr(9)}a\n"
    )
    assert read_table(path).text.tolist() == [text]
