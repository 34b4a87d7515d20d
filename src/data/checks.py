"""The checks every data set passes, whatever the task: classes the train split lacks, the same
text in training and evaluation, one text labelled two ways, ids shared by two files.

Texts are compared as `text_key` writes them (Unicode NFKC, case folded, runs of whitespace as
one space), so a copy that differs only in full-width characters, case or spacing still counts.
"""

from __future__ import annotations

import functools
import logging
import unicodedata
from collections.abc import Sequence
from typing import Any

import pandas as pd

from src.config.errors import UserError
from src.data.tables import rows_text
from src.task.labels import Labels

log = logging.getLogger(__name__)

EVAL_SPLITS = ("valid", "test")
# The share of an evaluation split's rows whose text may also be a training text before the
# run stops (data.allow_overlap=true lets it go on): deepchecks' default for the same check.
MAX_OVERLAP = 0.05


@functools.lru_cache(maxsize=1 << 16)  # NFKC is slow (~40 µs a review); loads repeat texts
def text_key(text: str) -> str:
    """A text as the overlap and duplicate checks compare it."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def check_classes(
    frames: dict[str, pd.DataFrame],
    labels: Labels,
    names: list[str],
    where: dict[str, str],
    fix: str = "",
) -> None:
    """Raise UserError for a train split of one class (or one value), or evaluation classes
    the train split lacks; `where` names each split (a file, or a split of a data set)."""
    train = labels.classes(frames["train"]["label"])
    if train is None:
        values = set(frames["train"]["label"])
        if len(values) < 2:
            raise UserError(
                f"{where['train']} has one value ({next(iter(values))!r}) for every row; a"
                f" regression needs varied targets: check data.label_column{fix}"
            )
        return
    if len(train) < 2:
        shown = repr(names[next(iter(train))]) if train else "none"
        raise UserError(
            f"{where['train']} has only one class ({shown}); a classifier needs at least 2:"
            f" check data.label_column and the data{fix}"
        )
    for split in EVAL_SPLITS:
        if split in frames:
            extra = sorted((labels.classes(frames[split]["label"]) or set()) - train)
            if extra:
                raise UserError(
                    f"{where[split]} has labels {[names[i] for i in extra]} that never occur in"
                    f" {where['train']}; add training examples of them or remove them{fix}"
                )


def check_overlap(
    frames: dict[str, pd.DataFrame], train: Sequence[str], source: str, *, allow: bool
) -> None:
    """Stop when more than MAX_OVERLAP of an evaluation split's texts are training texts;
    warn about any smaller overlap, and about texts shared by valid and test."""
    seen = {text_key(t) for t in train}
    for split in EVAL_SPLITS:
        keys = [text_key(t) for t in frames[split]["text"].tolist()]
        shared = sum(k in seen for k in keys)
        if not shared:
            continue
        share = shared / len(keys)
        what = (
            f"{shared} of the {len(keys)} {split} texts of {source} ({share:.0%}) are also"
            f" training texts"
        )
        if share > MAX_OVERLAP and not allow:
            raise UserError(
                f"{what}, so every {split} metric would be inflated: remove them from the {split}"
                f" data (data.exclude_ids / data.exclude_file drop rows by id), or set"
                f" data.allow_overlap=true to go on anyway (above {MAX_OVERLAP:.0%} is refused)"
            )
        log.warning("data: %s; their metrics are inflated", what)
    between = {text_key(t) for t in frames["valid"]["text"].tolist()} & {
        text_key(t) for t in frames["test"]["text"].tolist()
    }
    if between:
        log.warning(
            "data: %d texts of %s are in both the valid and test splits", len(between), source
        )


def warn_conflicts(texts: Sequence[str], labels: Sequence[Any], index: pd.Index, path: str) -> None:
    """Warn about texts that occur more than once in a file with different labels."""
    first: dict[str, int] = {}
    clashing: list[int] = []
    for row, text in enumerate(texts):
        key = text_key(text)
        if key not in first:
            first[key] = row
        elif labels[first[key]] != labels[row]:
            clashing += [first[key], row]
    if clashing:
        rows = sorted(set(clashing))
        log.warning(
            "data: %s repeats texts with different labels at %s; the model learns both labels"
            " for them: fix the labels (python -m src.noise ranks suspects)",
            path,
            rows_text(index[rows]),
        )


def check_shared_ids(
    frames: dict[str, pd.DataFrame], paths: dict[str, str], *, allow: bool
) -> None:
    """Raise UserError (a warning with data.allow_overlap) for an id in two files."""
    seen: dict[str, str] = {}
    for split, frame in frames.items():
        for id_ in frame["id"]:
            if seen.setdefault(id_, split) == split:
                continue
            message = (
                f"{paths[split]}: id {id_!r} also occurs in {paths[seen[id_]]};"
                f" ids must be unique across the train, valid and test files"
            )
            if not allow:
                raise UserError(message)
            log.warning("data: %s (data.allow_overlap=true)", message)
            return
