"""What a label is, per task (`task=`): a class name (single_label), a set of class names
(multi_label) or a number (regression).

The data reader (src.data.sources) hands each file's label column here: the task parses the
cells, names the classes and encodes each label as a frame stores it: a class index, a sorted
tuple of class indices, or a float. Label names lose surrounding whitespace, in the files and in
data.label_names (`positive ` is `positive`) and are compared in Unicode NFC; names that then differ
only in case stay separate classes, with a warning giving their counts. A label is the text as
written (CSV and TSV cells are text: `01` and `1` are two classes); with data.label_names, labels
that are all whole numbers naming none of its names are indices into it. JSON numbers are
numbers: `1` and `1.0` are one class.

A multi-label cell is a JSON list (in JSON / JSONL files), a list written as text the way JSON
or Python print one (`["a", "b"]`, `['a', 'b']`, what pandas writes for a column of lists), or
labels joined by data.label_separator (`a|b`); an empty cell is no label. Anything else that
starts or ends with a bracket is refused with its row.
"""

from __future__ import annotations

import ast
import io
import itertools
import json
import logging
import re
import tokenize
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from src.config.errors import UserError
from src.config.schema import SourceConfig
from src.data.tables import Column, as_name, is_missing

log = logging.getLogger(__name__)

# Cells joined by one of these while no cell holds data.label_separator were joined by it.
_OTHER_SEPARATORS = (",", ";", "，", "、", "；")
_WHOLE = re.compile(r"-?(0|[1-9][0-9]*)")  # a whole number as written without padding
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")  # ASCII only


class Labels(Protocol):
    """How a task parses, names and encodes the labels of a data set."""

    task: ClassVar[str]

    def parse(self, column: Column) -> list[Any]:
        """Each cell as a label (a class key, a tuple of names, a float); bad cells raise."""
        ...

    def names(self, parsed: dict[str, list[Any]], train_path: str) -> list[str]:
        """The names of the head's outputs, from data.label_names or the training labels."""
        ...

    def encode(self, labels: list[Any], names: list[str], column: Column, train: str) -> list[Any]:
        """Labels as a frame stores them; labels outside `names` raise naming their rows."""
        ...

    def classes(self, labels: Iterable[Any]) -> set[int] | None:
        """The class indices these encoded labels use; None where labels are numbers."""
        ...


def configured_names(given: Sequence[Any] | None) -> list[str] | None:
    """data.label_names as stripped strings (None stays None)."""
    return None if given is None else [as_name(str(name)) for name in given]


def label_kind(task: str, cfg: SourceConfig) -> Labels:
    """The labels of `task` with data.label_names and data.label_separator of cfg."""
    given = configured_names(cfg.label_names)
    if task == "single_label":
        return ClassLabels(given)
    if task == "multi_label":
        return LabelSets(given, cfg.label_separator)
    if task == "regression":
        if given is not None:
            raise UserError(
                f"data.label_names={given} does not apply to task=regression (its one output is"
                f" named after data.label_column); set data.label_names=null"
            )
        return Numbers(cfg.label_column)
    raise UserError(f"task.name={task!r} is not one of single_label, multi_label, regression")


def warn_case(names: Iterable[str], counts: Counter[str]) -> None:
    """Log label names that differ only in case, with how many rows each has."""
    groups: dict[str, list[str]] = {}
    for name in dict.fromkeys(names):
        groups.setdefault(name.casefold(), []).append(name)
    for group in groups.values():
        if len(group) > 1:
            log.warning(
                "data: labels %s differ only in case and stay separate classes; fix the labels"
                " (or data.label_names) if they are one class",
                ", ".join(f"{name!r} ({counts[name]} rows)" for name in group),
            )


# --------------------------------------------------------------------------- single_label


def _class_key(value: Any) -> int | str | None:
    """A class label as a stripped str or an int; None for a type a class label cannot have."""
    if isinstance(value, str):
        return as_name(value)
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)  # CSV columns with a gap are read as floats
    return None


@dataclass(frozen=True)
class ClassLabels:
    """single_label: one class per text, a name, or an integer (an index into data.label_names)."""

    given: list[str] | None = None
    task: ClassVar[str] = "single_label"

    def parse(self, column: Column) -> list[Any]:
        cells, where = column.cells, f"{column.path}: labels in column {column.name!r}"
        missing = [is_missing(v) or (isinstance(v, str) and not v.strip()) for v in cells]
        if any(missing):
            raise UserError(
                f"{column.path}: missing label in column {column.name!r} at {column.at(missing)};"
                f" fill in or remove those rows"
            )
        keys = [_class_key(v) for v in cells]
        odd = [k is None for k in keys]
        if any(odd):
            first = cells[odd.index(True)]
            several = "; several labels per text: task=multi_label" if _is_list(first) else ""
            raise UserError(
                f"{where} must be strings or integers, found {first!r}"
                f" ({type(first).__name__}) at {column.at(odd)}{several}"
            )
        listed = [isinstance(k, str) and _is_list(k) for k in keys]
        if any(listed):
            raise UserError(
                f"{where} look like lists of labels (e.g. {keys[listed.index(True)]!r}) at"
                f" {column.at(listed)}; for several labels per text use task=multi_label"
            )
        is_int = [isinstance(k, int) for k in keys]
        if any(is_int) and not all(is_int):
            i, s = is_int.index(True), is_int.index(False)
            kind = column.index.name
            raise UserError(
                f"{where} mix integers and strings (e.g. {keys[i]!r} at {kind}"
                f" {column.index[i]}, {keys[s]!r} at {kind} {column.index[s]}); use one type"
            )
        return self._indices(keys)

    def _indices(self, keys: list[Any]) -> list[Any]:
        """Whole numbers written as text that name none of data.label_names, as indices into it."""
        if self.given is None or not keys:
            return keys
        numbers = [isinstance(k, str) and k not in self.given and _WHOLE.fullmatch(k) for k in keys]
        return [int(k) for k in keys] if all(numbers) else keys

    def names(self, parsed: dict[str, list[Any]], train_path: str) -> list[str]:
        keys = [k for labels in parsed.values() for k in labels]
        counts = Counter(str(k) for k in keys)
        if self.given is not None:
            warn_case([*self.given, *counts], counts)
            return list(self.given)
        warn_case(counts, counts)
        train = set(parsed["train"])
        return [str(k) for k in sorted(train, key=_order)]

    def encode(self, labels: list[Any], names: list[str], column: Column, train: str) -> list[Any]:
        if self.given is not None and labels and isinstance(labels[0], int):
            bad = [not 0 <= k < len(names) for k in labels]
            if any(bad):
                raise UserError(
                    f"{column.path}: integer label {labels[bad.index(True)]!r} at {column.at(bad)}"
                    f" is not an index into data.label_names {names} (0..{len(names) - 1})"
                )
            return list(labels)
        position = {n: i for i, n in enumerate(names)}
        bad = [str(k) not in position for k in labels]
        if any(bad):
            unknown = sorted({str(k) for k, b in zip(labels, bad, strict=True) if b})[:5]
            if self.given is not None:
                allowed = (
                    f"are not among data.label_names {names}; fix the labels or data.label_names"
                )
            else:
                allowed = f"never occur in the training file {train} (labels {names}); fix them"
            raise UserError(f"{column.path}: labels {unknown} at {column.at(bad)} {allowed}")
        return [position[str(k)] for k in labels]

    def classes(self, labels: Iterable[Any]) -> set[int] | None:
        return {int(label) for label in labels}


def _order(key: int | str) -> tuple[int, int | str]:
    """Classes in order: whole numbers (typed or written as text) by value, then names."""
    if isinstance(key, int):
        return (0, key)
    return (0, int(key)) if _WHOLE.fullmatch(key) else (1, key)


# --------------------------------------------------------------------------- multi_label


def _is_list(value: Any) -> bool:
    """Whether a cell holds a list of labels: a list, or text that reads as one."""
    if isinstance(value, list | tuple | np.ndarray):
        return True
    if not isinstance(value, str) or not value.strip().startswith("["):
        return False
    try:
        _list_literal(value.strip())
    except ValueError:
        return False
    return True


def _shown(text: str) -> str:
    """A cell as a message shows it: quoted, cut after 60 characters."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _list_literal(text: str) -> list[Any]:
    """A list written as JSON or as a Python literal (read safely: literals only)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = _python_list(text)
    except RecursionError as e:
        raise ValueError(f"malformed list of labels {_shown(text)} (nested too deeply)") from e
    if not isinstance(value, list):
        raise ValueError(f"malformed list of labels {_shown(text)}")
    return value


def _python_list(text: str) -> list[Any]:
    """A Python list or tuple literal such as "['a', 'b']" (what pandas writes for lists)."""
    try:
        node = ast.parse(text, mode="eval").body
        if not isinstance(node, ast.List | ast.Tuple):
            raise ValueError(text)
        value = ast.literal_eval(node)
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError) as e:
        raise ValueError(f"malformed list of labels {_shown(text)}") from e
    if _adjacent_strings(text):  # Python joins 'a' 'b' into 'ab'
        raise ValueError(
            f"malformed list of labels {_shown(text)} (items without commas between them, as"
            f" NumPy prints arrays)"
        )
    return list(value)


def _adjacent_strings(text: str) -> bool:
    """Whether two string literals follow each other with no comma between them."""
    kinds = [
        t.type
        for t in tokenize.generate_tokens(io.StringIO(text).readline)
        if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER, tokenize.COMMENT)
    ]
    return any(a == b == tokenize.STRING for a, b in itertools.pairwise(kinds))


def _label_set(cell: Any, separator: str) -> tuple[str, ...]:
    """One multi-label cell as the sorted distinct stripped names in it."""
    if is_missing(cell):
        return ()
    if isinstance(cell, list | tuple | np.ndarray):
        items = list(cell)
    elif isinstance(cell, str):
        text = cell.strip()
        bracketed = text.startswith("[") or text.endswith("]")
        items = _list_literal(text) if bracketed else text.split(separator)
    elif _class_key(cell) is not None:  # a number: one class named by it (1.0 as 1)
        items = [_class_key(cell)]
    else:
        raise ValueError(f"a label cell {cell!r} of type {type(cell).__name__}")
    for item in items:
        if not isinstance(item, str | int | np.integer) or isinstance(item, bool | np.bool_):
            raise ValueError(f"a list item {item!r} of type {type(item).__name__}")
    return tuple(sorted({as_name(str(item)) for item in items} - {""}))


@dataclass(frozen=True)
class LabelSets:
    """multi_label: any number of class names per text."""

    given: list[str] | None = None
    separator: str = "|"
    task: ClassVar[str] = "multi_label"

    def parse(self, column: Column) -> list[Any]:
        out = []
        for row, cell in enumerate(column.cells):
            try:
                out.append(_label_set(cell, self.separator))
            except ValueError as e:
                raise UserError(
                    f"{column.path}: {e} in column {column.name!r} at {column.at([row])};"
                    f' write the labels as a JSON list like ["a", "b"] or joined by'
                    f" data.label_separator={self.separator!r}"
                ) from e
        self._check_separator(column)
        return out

    def _check_separator(self, column: Column) -> None:
        """Refuse cells evidently joined by another separator than data.label_separator."""
        plain = [isinstance(v, str) and not _is_list(v) for v in column.cells]
        if any(p and self.separator in v for v, p in zip(column.cells, plain, strict=True)):
            return
        for other in _OTHER_SEPARATORS:
            rows = [p and other in v for v, p in zip(column.cells, plain, strict=True)]
            if other != self.separator and any(rows):
                example = column.cells[rows.index(True)]
                raise UserError(
                    f"{column.path}: label cells such as {example!r} at {column.at(rows)} are"
                    f" joined by {other!r}, but no cell contains data.label_separator="
                    f"{self.separator!r}; set data.label_separator={other!r}"
                    f" (or write the labels as JSON lists)"
                )

    def names(self, parsed: dict[str, list[Any]], train_path: str) -> list[str]:
        counts = Counter(name for labels in parsed.values() for row in labels for name in row)
        train = sorted({name for row in parsed["train"] for name in row})
        names = list(self.given) if self.given is not None else train
        warn_case([*names, *counts], counts)
        if len(names) < 2:
            raise UserError(
                f"{train_path}: task=multi_label needs at least 2 labels, found {names}"
            )
        return names

    def encode(self, labels: list[Any], names: list[str], column: Column, train: str) -> list[Any]:
        position = {n: i for i, n in enumerate(names)}
        bad = [any(name not in position for name in row) for row in labels]
        if any(bad):
            unknown = sorted({n for row in labels for n in row if n not in position})[:5]
            known = "data.label_names" if self.given is not None else f"those of {train}"
            raise UserError(
                f"{column.path}: labels {unknown} are not among the labels {names} ({known})"
                f" at {column.at(bad)}"
            )
        return [tuple(sorted(position[name] for name in row)) for row in labels]

    def classes(self, labels: Iterable[Any]) -> set[int] | None:
        return {int(i) for row in labels for i in row}


# --------------------------------------------------------------------------- regression


def _number(value: Any) -> float | None:
    """A finite number given as a number or a decimal numeral (ASCII digits, no `_`, no `0x`);
    None for anything else."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | str | np.number):
        return None
    if isinstance(value, str) and not _DECIMAL.fullmatch(value.strip()):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if np.isfinite(number) else None


@dataclass(frozen=True)
class Numbers:
    """regression: a finite number per text; the one output is named after the label column."""

    column: str
    task: ClassVar[str] = "regression"

    def parse(self, column: Column) -> list[Any]:
        missing = [is_missing(v) or (isinstance(v, str) and not v.strip()) for v in column.cells]
        if any(missing):
            raise UserError(
                f"{column.path}: missing label in column {column.name!r} at {column.at(missing)};"
                f" fill in or remove those rows"
            )
        numbers = [_number(v) for v in column.cells]
        if None in numbers:
            row = numbers.index(None)
            raise UserError(
                f"{column.path}: task=regression needs numeric labels, found"
                f" {column.cells[row]!r} in column {column.name!r} at {column.at([row])}"
            )
        return numbers

    def names(self, parsed: dict[str, list[Any]], train_path: str) -> list[str]:
        return [self.column]

    def encode(self, labels: list[Any], names: list[str], column: Column, train: str) -> list[Any]:
        return [float(label) for label in labels]

    def classes(self, labels: Iterable[Any]) -> set[int] | None:
        return None
