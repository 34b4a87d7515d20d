"""Your files as tables: JSON / JSON Lines / CSV / TSV rows by line (or JSON item) number,
Parquet / Arrow rows by row number, and their id, text and label columns, checked; and plain
text files read line by line. The one reader of every data file a command reads (training
data, data.exclude_file, src.predict's input, src.pretrain's texts).

Every value is read as written:
- Bytes are UTF-8, or UTF-16 / UTF-32 where a byte-order mark declares it; a UTF-8 byte-order mark
  is dropped. Anything else (GBK, Latin-1, UTF-16 without its mark: NUL bytes) is refused naming
  the line and byte.
- A line ends at `\\n`, `\\r\\n` or `\\r`, in every format; nothing else breaks a line (U+2028,
  U+0085 and the other characters `str.splitlines` splits at are text).
- Every CSV / TSV cell is text: `01` and `1` are two labels, `NA`, `null`, `True` and `1e3` are the
  texts they read. An empty cell is empty. JSON values keep their JSON types (a JSON number is a
  number: `1` and `1.0` are one label); `NaN` / `Infinity`, which are not JSON, are refused.
- A CSV follows RFC 4180's quoting (a quote opens a field only at its start; `""` inside is a
  quote), checked strictly: a quote where none can be, or one left open, is refused with its line,
  as is a quoted field whose inner lines are each a whole row (a stray quote that would swallow
  rows). A TSV has no quoting convention: a tab always separates, a line is a row, and a quote is
  a character, except in a field quoted as Python's csv module and pandas write a text that holds
  a quote (`"a ""b"" c"`), or in a file whose header is quoted throughout (every field quoted).
  A row with more or fewer fields than the header is refused with its line; blank lines are
  skipped.
- Texts keep their characters and surrounding whitespace. Labels, ids and column names lose
  surrounding whitespace and are compared in Unicode NFC (`é` written as one character or as `e`
  and a combining accent is one label); NFKC is not applied (it would make `①` and `1` one label).

A header never silently picks the wrong column: a name given twice (a CSV header
`label,text,label`, a JSON object with a key twice, or `label` and ` label`) is an error naming
it.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.config.errors import UserError, regular_file

TABLE_FORMATS = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".arrow")
LINE_END = re.compile(r"\r\n|\r|\n")  # the only line ends of every format we read
_BOMS = (  # byte-order marks and the encoding each declares (UTF-32 LE's starts like UTF-16 LE's)
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_QUOTED = re.compile(r'"((?:[^"]++|"")*+)"')  # a field in quotes, every quote inside doubled
csv.field_size_limit(2**31 - 1)  # a text may be longer than the csv module's default 128 KiB
_SHOWN = 5  # offending rows or values an error message lists
_SHAPE = {  # what a JSON file must hold, by what its rows are numbered by
    "line": "each line must be one JSON object",
    "item": "the file must hold one JSON array of objects",
}
_FIX_CSV = (
    "quote fields that contain the separator, quotes or line breaks, and double a quote inside"
    ' a quoted field ("")'
)
_FIX_TSV = "a TSV has no quoting: a tab always separates fields and a line break always ends a row"


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


def as_name(value: str) -> str:
    """A label, id or column name as compared: Unicode NFC, without surrounding whitespace."""
    return unicodedata.normalize("NFC", value).strip()


# --------------------------------------------------------------------------- bytes and lines


def read_bytes(path: str | Path, what: str) -> bytes:
    """The bytes of a file; one line when it is missing, a folder, a pipe or device, a link loop
    or unreadable (`errors.regular_file`, the one check of a path read as a file).

    `what` names the setting or option that gave the path (`data.train_path`, `--input`).
    """
    path = Path(path)
    try:
        return regular_file(path).read_bytes()
    except UserError as e:
        raise UserError(f"{e}; check {what}") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror}); check {what}") from e


def decode(data: bytes, where: str) -> str:
    """Bytes as text: UTF-8, or the UTF-16 / UTF-32 a byte-order mark declares (mark dropped)."""
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    shown = encoding.removesuffix("-sig").upper()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = len(LINE_END.split(data[: e.start].decode(encoding, "replace")))
        raise UserError(
            f"{where}: line {line} is not {shown} text ({e.reason} at byte {e.start}); save"
            f" the file as UTF-8"
        ) from e
    if "\x00" in text:  # valid UTF-8, but no text holds NUL: UTF-16 or UTF-32 without its mark
        line = len(LINE_END.split(text[: text.index("\x00")]))
        raise UserError(
            f"{where}: line {line} holds a NUL byte, which no text has (UTF-16 without its"
            f" byte-order mark?); save the file as UTF-8"
        )
    return text


def lines(text: str) -> list[str]:
    """The lines of a text, ended by \\n, \\r\\n or \\r (a last line end ends the last line)."""
    found = LINE_END.split(text)
    return found[:-1] if found[-1] == "" else found


def read_lines(path: str | Path, what: str) -> list[tuple[int, str]]:
    """(line number, line) for every line of a plain text file, blank ones included."""
    return numbered_lines(read_bytes(path, what), str(path))


def numbered_lines(data: bytes, where: str) -> list[tuple[int, str]]:
    """(line number, line) for every line of text given as bytes (a file's, or stdin's)."""
    return list(enumerate(lines(decode(data, where)), start=1))


# --------------------------------------------------------------------------- tables


def read_table(path: str | Path, what: str = "the data.*_path setting") -> pd.DataFrame:
    """Rows of a .json / .jsonl / .csv / .tsv file, indexed by line (or JSON item) number, or of a
    .parquet / .arrow file, by row number."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise UserError(
            f"{path}: unsupported file type {suffix or '(none)'!r};"
            f" use one of {', '.join(TABLE_FORMATS)}"
        )
    data = read_bytes(path, what)
    if suffix in (".parquet", ".arrow"):  # binary: no text to decode
        return _read_columnar(path, data)
    text = decode(data, str(path))
    if suffix in (".csv", ".tsv"):
        return _delimited(text, str(path), sep="," if suffix == ".csv" else "\t")
    kind = "line" if suffix == ".jsonl" else "item"
    rows = json_rows(text, where=str(path), kind=kind)
    index = pd.Index([n for n, _ in rows], name=kind)
    # dtype object: a JSON integer column with a gap stays integers (pandas would make floats)
    return pd.DataFrame([r for _, r in rows], index=index, dtype=object)


class _RepeatedKey(dict[str, Any]):
    """A JSON object in which a key occurs twice (json keeps only the last value)."""

    repeated = ""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object with its keys stripped, marked when a (stripped) key occurs twice."""
    obj: dict[str, Any] = {}
    repeated = []
    for key, value in pairs:
        if as_name(key) in obj:
            repeated.append(as_name(key))
        obj[as_name(key)] = value
    if not repeated:
        return obj
    marked = _RepeatedKey(obj)
    marked.repeated = repeated[0]
    return marked


def _not_json(constant: str) -> Any:
    """Refuse NaN / Infinity, which Python's json reads but JSON does not have."""
    raise ValueError(f"{constant} is not a JSON value")


def _decode(text: str, *, where: str, kind: str, line: int = 1) -> Any:
    """JSON text as Python values; one line naming the file line on malformed JSON."""
    try:
        return json.loads(text, object_pairs_hook=_object, parse_constant=_not_json)
    except json.JSONDecodeError as e:
        at = line + e.lineno - 1
        raise UserError(
            f"{where}:{at}: malformed JSON on line {at} ({e.msg}, column {e.colno}); {_SHAPE[kind]}"
        ) from e
    except ValueError as e:
        raise UserError(f"{where}:{line}: malformed JSON ({e}); {_SHAPE[kind]}") from e


def json_rows(text: str, *, where: str, kind: str) -> list[tuple[int, dict[str, Any]]]:
    """(number, object) for each row of JSON Lines (kind "line") or a JSON array (kind "item")."""
    if kind == "line":
        numbered = [
            (n, _decode(line, where=where, kind=kind, line=n))
            for n, line in enumerate(lines(text), start=1)
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


def _delimited(text: str, where: str, sep: str) -> pd.DataFrame:
    """A CSV / TSV text as rows of text cells indexed by the line each row starts on."""
    kind = "CSV" if sep == "," else "TSV"
    records = _csv_records(text, where) if sep == "," else _tsv_records(text)
    records = [(n, fields) for n, fields in records if fields and "".join(fields).strip()]
    if not records:
        return pd.DataFrame(index=pd.Index([], name="line"))
    (_, header), *body = records
    names = _header(header, where)
    fix = _FIX_CSV if sep == "," else _FIX_TSV
    for line, fields in body:
        if len(fields) != len(names):
            raise UserError(
                f"{where}:{line}: malformed {kind}: line {line} has {len(fields)} fields, the"
                f" header {len(names)} ({', '.join(names)}); {fix}"
            )
    index = pd.Index([line for line, _ in body], name="line")
    return pd.DataFrame([fields for _, fields in body], columns=names, index=index, dtype=object)


def _tsv_records(text: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every line of a TSV: fields split at tabs, quotes are text but
    where a field is quoted as Python's csv module and pandas quote one (see _tsv_field)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    records = list(enumerate(reader, start=1))  # no quoting: one line, one row
    quoted_all = bool(records) and all(_QUOTED.fullmatch(f) for f in records[0][1])
    return [
        (n, [_tsv_field(f, quoted_all) if '"' in f else f for f in fields]) for n, fields in records
    ]


def _tsv_field(field: str, quoted_all: bool) -> str:
    """A TSV field as written; unquoted only where a writer quoted it: `"a ""b"" c"` (a text that
    holds a quote, doubled inside), or any `"…"` of a file whose header is quoted throughout."""
    found = _QUOTED.fullmatch(field)
    if found and ('""' in found[1] or quoted_all):
        return found[1].replace('""', '"')
    return field


def _csv_records(text: str, where: str) -> list[tuple[int, list[str]]]:
    """(first line, fields) of every row of a CSV, read strictly (RFC 4180 quoting)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records, start = [], 1
    try:
        for fields in reader:
            if reader.line_num > start:  # only a quoted field spans lines
                _check_swallowed(fields, start, reader.line_num, where)
            records.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as e:
        raise UserError(
            f"{where}:{start}: malformed CSV in the row that starts on line {start} ({e});"
            f" {_FIX_CSV}"
        ) from e
    return records


def _check_swallowed(fields: list[str], start: int, end: int, where: str) -> None:
    """Refuse a quoted field whose inner lines are each a whole row: a quote left open."""
    for field in fields:
        inner = lines(field)[1:-1]  # the lines the field holds whole (not its first or last)
        if inner and all(len(next(csv.reader([line]), [])) == len(fields) for line in inner):
            raise UserError(
                f"{where}:{start}: malformed CSV: a quoted field runs from line {start} to line"
                f" {end} and holds {len(inner)} line(s) that each read as a whole row (a quote"
                f" left open?); {_FIX_CSV}"
            )


def _header(fields: list[str], where: str) -> list[str]:
    """The header's column names, stripped; an error naming any name given twice."""
    names = [as_name(v) or f"Unnamed: {i}" for i, v in enumerate(fields)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(
            f"{where}: the header names the column(s) {repeated} more than once (columns:"
            f" {', '.join(names)}); a reader would silently use one of them: rename or drop"
            f" the extra ones"
        )
    return names


def _read_columnar(path: Path, data: bytes) -> pd.DataFrame:
    """A Parquet or Arrow (IPC file or stream) file's rows, as `arrow_rows` makes them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() == ".parquet":
            table = pq.read_table(pa.BufferReader(data))
        else:
            table = _arrow_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as e:
        kind = path.suffix.lower().lstrip(".").capitalize()
        raise UserError(f"{path}: not a readable {kind} file ({str(e).strip()})") from e
    return arrow_rows(table, str(path))


def arrow_rows(table: Any, where: str) -> pd.DataFrame:
    """An Arrow table's rows numbered from 1, integers as text (`_as_text`), column names
    stripped; a column name given twice is an error naming it."""
    names = [as_name(str(name)) for name in table.column_names]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(
            f"{where}: the column(s) {repeated} occur more than once (columns: {', '.join(names)});"
            f" a reader would silently use one of them: rename or drop the extra ones"
        )
    cells = (c.to_pylist() for c in table.columns)
    columns = {n: [_as_text(v) for v in c] for n, c in zip(names, cells, strict=True)}
    index = pd.Index(np.arange(table.num_rows) + 1, name="row")
    return pd.DataFrame(columns, index=index)


def _arrow_table(source: Any) -> Any:
    """An Arrow IPC file (Feather v2) or stream (what `datasets` caches) as one table."""
    import pyarrow as pa

    try:
        return pa.ipc.open_file(source).read_all()
    except pa.ArrowInvalid:
        source.seek(0)
        return pa.ipc.open_stream(source).read_all()


def _as_text(value: Any) -> Any:
    """An integer cell as the text it stands for (labels are text as written), lists of them
    as lists; other values as they are."""
    if isinstance(value, list):
        return [_as_text(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


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
    """The text column, checked: no missing, empty, non-string or unencodable texts."""
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
    halves = [not _encodable(v) for v in values]
    if any(halves):
        raise UserError(
            f"{path}: texts in column {column!r} at {rows_text(frame.index[halves])} hold half of"
            f" a UTF-16 surrogate pair (a JSON escape like \\ud83d without its partner), which no"
            f" tokenizer can read; fix those escapes"
        )
    return [str(v) for v in values]


def _encodable(text: str) -> bool:
    """Whether a text is whole Unicode (JSON escapes can produce lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def ids(frame: pd.DataFrame, column: str | None, split: str, path: str) -> list[str]:
    """The id column as names (checked: present, unique), or "<split>-<row number>"."""
    if not column:
        return [f"{split}-{i}" for i in range(1, len(frame) + 1)]
    values = [None if is_missing(v) else as_name(str(v)) for v in frame[column]]
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
