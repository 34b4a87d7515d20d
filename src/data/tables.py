"""Your files as tables: JSON / JSON Lines / CSV / TSV rows by line (or JSON item) number, and
their id, text and label columns, checked.

A header never silently picks the wrong column: column names lose surrounding whitespace, and a
name given twice (a CSV header `label,text,label`, a JSON object with a key twice, or `label` and
` label`) is an error naming it, as are CSV rows with more fields than the header (pandas would
take the first field as a row index and shift every column).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.errors import UserError, regular_file

TABLE_FORMATS = (".json", ".jsonl", ".csv", ".tsv")
_SHOWN = 5  # offending rows or values an error message lists
_SHAPE = {  # what a JSON file must hold, by what its rows are numbered by
    "line": "each line must be one JSON object",
    "item": "the file must hold one JSON array of objects",
}


@dataclass(frozen=True)
class Column:
    """One column of a file as read: its cells, and how a message names the file and its rows."""

    path: str
    name: str
    cells: list[Any]
    index: pd.Index  # the line (or JSON item) number of each cell

    def at(self, rows: Sequence[int] | Sequence[bool] | np.ndarray) -> str:
        """'lines 3, 7 and 2 more' for the rows at these positions (or this mask)."""
        return rows_text(self.index[np.asarray(rows)])


def rows_text(index: pd.Index) -> str:
    """'lines 3, 7 and 2 more' for the first few entries of a line- or item-number index."""
    numbers = [str(n) for n in index[:_SHOWN]]
    more = f" and {len(index) - _SHOWN} more" if len(index) > _SHOWN else ""
    kind = index.name or "row"
    return f"{kind}{'s' if len(index) > 1 else ''} {', '.join(numbers)}{more}"


def is_missing(value: Any) -> bool:
    """Whether a cell is empty: None, NaN or pandas' NA."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


# --------------------------------------------------------------------------- reading


def read_table(path: str | Path, *, str_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Rows of a .json / .jsonl / .csv / .tsv file, indexed by line (or JSON item) number."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise UserError(
            f"{path}: unsupported file type {suffix or '(none)'!r};"
            f" use one of {', '.join(TABLE_FORMATS)}"
        )
    regular_file(path)
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, sep="," if suffix == ".csv" else "\t", str_columns=str_columns)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8"
        ) from e
    kind = "line" if suffix == ".jsonl" else "item"
    rows = json_rows(text, where=str(path), kind=kind)
    return pd.DataFrame([r for _, r in rows], index=pd.Index([n for n, _ in rows], name=kind))


class _RepeatedKey(dict[str, Any]):
    """A JSON object in which a key occurs twice (json keeps only the last value)."""

    repeated = ""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object with its keys stripped, marked when a (stripped) key occurs twice."""
    obj: dict[str, Any] = {}
    repeated = []
    for key, value in pairs:
        if key.strip() in obj:
            repeated.append(key.strip())
        obj[key.strip()] = value
    if not repeated:
        return obj
    marked = _RepeatedKey(obj)
    marked.repeated = repeated[0]
    return marked


def _decode(text: str, *, where: str, kind: str, line: int = 1) -> Any:
    """JSON text as Python values; one line naming the file line on malformed JSON."""
    try:
        return json.loads(text, object_pairs_hook=_object)
    except json.JSONDecodeError as e:
        at = line + e.lineno - 1
        raise UserError(
            f"{where}:{at}: malformed JSON on line {at} ({e.msg}, column {e.colno}); {_SHAPE[kind]}"
        ) from e


def json_rows(text: str, *, where: str, kind: str) -> list[tuple[int, dict[str, Any]]]:
    """(number, object) for each row of JSON Lines (kind "line") or a JSON array (kind "item")."""
    if kind == "line":
        numbered = [
            (n, _decode(line, where=where, kind=kind, line=n))
            for n, line in enumerate(text.splitlines(), start=1)
            if line.strip()
        ]
    else:
        data = _decode(text, where=where, kind=kind)
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise UserError(
                f'{where}: expected a JSON array of objects (or {{"data": [...]}}),'
                f" found a JSON {type(data).__name__}"
            )
        numbered = list(enumerate(data, start=1))
    for number, row in numbered:
        place = f"{where}:{number}" if kind == "line" else where
        if not isinstance(row, dict):
            raise UserError(
                f"{place}: {kind} {number} is of type {type(row).__name__}, not an object with"
                f" the text and label fields; {_SHAPE[kind]}"
            )
        if isinstance(row, _RepeatedKey):
            raise UserError(
                f"{place}: {kind} {number} gives the key {row.repeated!r} twice, and JSON readers"
                f" keep only the last; give each key once"
            )
    return numbered


def _read_csv(path: Path, *, sep: str, str_columns: Sequence[str]) -> pd.DataFrame:
    """A CSV / TSV file as rows indexed by their line number; blank lines are skipped."""
    try:
        names = _csv_header(path, sep)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(index=pd.Index([], name="line"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        frame = _csv(
            path,
            sep,
            header=0,
            names=names,
            index_col=False,  # never take a first field as the row index (shifting every column)
            dtype={c: str for c in str_columns if c in names},
        )
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
        _csv(path, sep, header=None, dtype=str)  # raises naming the first line that is too long
        raise UserError(
            f"{path}: some rows have more fields than the header's {len(names)}; quote fields"
            " that contain the separator"
        )
    frame.index = pd.Index(np.arange(len(frame)) + 2, name="line")
    return frame[~frame.isna().all(axis=1)]


def _csv_header(path: Path, sep: str) -> list[str]:
    """The header's column names, stripped; an error naming any name given twice."""
    first = _csv(path, sep, header=None, nrows=1, dtype=str)
    names = [
        f"Unnamed: {i}" if is_missing(v) else str(v).strip()
        for i, v in enumerate(first.iloc[0].tolist())
    ]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(
            f"{path}: the header names the column(s) {repeated} more than once (columns:"
            f" {', '.join(names)}); a reader would silently use one of them: rename or drop"
            f" the extra ones"
        )
    return names


def _csv(path: Path, sep: str, **options: Any) -> pd.DataFrame:
    """pandas' read_csv with our settings; one line for malformed or non-UTF-8 files."""
    try:
        return pd.read_csv(
            path,
            sep=sep,
            keep_default_na=False,  # a review reading "NA" stays a text
            na_values=[""],
            skip_blank_lines=False,  # keeps row i on line i + 2
            encoding="utf-8-sig",
            **options,
        )
    except pd.errors.ParserError as e:
        raise UserError(
            f"{path}: malformed {'CSV' if sep == ',' else 'TSV'} ({str(e).strip()}); quote fields"
            f" that contain the separator, quotes or line breaks"
        ) from e
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8"
        ) from e


# --------------------------------------------------------------------------- columns


def require_columns(frame: pd.DataFrame, wanted: dict[str, str], path: str) -> None:
    """Raise UserError naming the file's columns when a wanted column (by setting) is absent."""
    for key, column in wanted.items():
        if column not in frame.columns:
            there = ", ".join(map(str, frame.columns)) or "(none)"
            raise UserError(
                f"{path}: no column {column!r} (data.{key}); its columns are: {there};"
                f" set data.{key} to one of them"
            )


def texts(frame: pd.DataFrame, column: str, path: str) -> list[str]:
    """The text column, checked: no missing, empty or non-string texts."""
    values = frame[column]
    missing = [
        (not isinstance(v, str) and is_missing(v)) or (isinstance(v, str) and not v.strip())
        for v in values
    ]
    if any(missing):
        raise UserError(
            f"{path}: missing or empty text in column {column!r} at"
            f" {rows_text(frame.index[missing])}; fill in or remove those rows"
        )
    wrong = [not isinstance(v, str) for v in values]
    if any(wrong):
        first = values[wrong].iloc[0]
        raise UserError(
            f"{path}: texts in column {column!r} must be strings, found {first!r}"
            f" ({type(first).__name__}) at {rows_text(frame.index[wrong])}"
        )
    return [str(v) for v in values]


def ids(frame: pd.DataFrame, column: str | None, split: str, path: str) -> list[str]:
    """The id column as stripped strings (checked: present, unique), or "<split>-<row number>"."""
    if not column:
        return [f"{split}-{i}" for i in range(1, len(frame) + 1)]
    values = [None if is_missing(v) else str(v).strip() for v in frame[column]]
    missing = [not v for v in values]
    if any(missing):
        raise UserError(
            f"{path}: missing id in column {column!r} at {rows_text(frame.index[missing])}"
        )
    found = pd.Series(values, index=frame.index)
    repeated = found[found.duplicated(keep=False)]
    if not repeated.empty:
        shown = sorted(set(repeated))[:_SHOWN]
        raise UserError(
            f"{path}: duplicate ids in column {column!r}: {shown}"
            f" at {rows_text(repeated.index)}; ids must be unique"
        )
    return [str(v) for v in values]
