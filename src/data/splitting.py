"""Seeded splits and caps that keep each split like the whole, for every task.

- single_label: stratified by class (each class in every split, at least one example each);
- multi_label: iterative stratification (Sechidis et al., 2011), so that every label keeps its
  share in each split, rare labels first;
- regression: stratified by quantile bins of the target, so each split spans its range.

A valid or test split carved out of the training file keeps all copies of a text on one side
(the first copy decides), so a repeated text never lands in both training and evaluation.
Caps (data.max_train / max_eval / max_test) draw the same way and keep the rows' order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from src.config.errors import UserError
from src.config.schema import SourceConfig
from src.data.checks import text_key
from src.data.streams import Stream, rng

log = logging.getLogger(__name__)

CAPS = {"train": "max_train", "valid": "max_eval", "test": "max_test"}
_CAP_STREAMS = {"train": Stream.cap_train, "valid": Stream.cap_valid, "test": Stream.cap_test}
_MAX_BINS = 10  # regression: deciles of the target at most


def _class_positions(labels: pd.Series) -> list[tuple[Any, np.ndarray]]:
    """(label, row positions) for each distinct label, labels in sorted order."""
    values = labels.to_numpy()
    return [(label, np.flatnonzero(values == label)) for label in sorted(set(values.tolist()))]


def _label_text(label: Any, label_names: Sequence[str] | None) -> str:
    """How an error message names a label."""
    return repr(label_names[label]) if label_names is not None else repr(label)


def _stratified_take(
    df: pd.DataFrame,
    fraction: float,
    draw: np.random.Generator,
    where: str,
    label_names: Sequence[str] | None,
) -> np.ndarray:
    """About `fraction` (at least 1, at most all but 1) of each class's rows, as a mask."""
    take = np.zeros(len(df), dtype=bool)
    for label, positions in _class_positions(df["label"]):
        if len(positions) < 2:
            raise UserError(
                f"{where}: class {_label_text(label, label_names)} has only {len(positions)}"
                f" example, too few for a stratified split; add examples of it, or provide"
                f" data.valid_path and data.test_path"
            )
        k = min(max(1, round(len(positions) * fraction)), len(positions) - 1)
        take[draw.permutation(positions)[:k]] = True
    return take


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
    take = _stratified_take(df, fraction, rng(seed, stream, sub), where, label_names)
    return df[~take].reset_index(drop=True), df[take].reset_index(drop=True)


def _proportional_take(strata: pd.Series, n: int, draw: np.random.Generator) -> np.ndarray:
    """n rows keeping each stratum's share (largest remainder), as a mask."""
    groups = _class_positions(strata)
    quotas = np.array([len(p) for _, p in groups], dtype=float) * n / len(strata)
    counts = np.floor(quotas).astype(int)
    for i in np.argsort(-(quotas - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    take = np.zeros(len(strata), dtype=bool)
    for (_, positions), k in zip(groups, counts, strict=True):
        take[draw.permutation(positions)[:k]] = True
    return take


def stratified_sample(df: pd.DataFrame, n: int, seed: int, *, stream: Stream) -> pd.DataFrame:
    """Seeded subsample of n rows keeping the class proportions (largest remainder); keeps order."""
    if n >= len(df):
        return df
    return df[_proportional_take(df["label"], n, rng(seed, stream))].reset_index(drop=True)


def _value_bins(values: pd.Series, n: int) -> pd.Series:
    """Equal-count bins of the values (by rank), as many as n rows drawn from them can fill."""
    bins = max(1, min(_MAX_BINS, n, len(values) - n))
    ranks = np.argsort(np.argsort(values.to_numpy(), kind="stable"), kind="stable")
    return pd.Series(ranks * bins // len(values))


def _iterative_take(df: pd.DataFrame, n: int, draw: np.random.Generator, width: int) -> np.ndarray:
    """n rows chosen by iterative stratification of their label sets (Sechidis et al., 2011).

    Our own code: iterative-stratification's splitter gives approximate sizes (caps must be
    exact) and builds on scikit-learn internals.
    """
    hot = np.zeros((len(df), width), dtype=bool)
    for row, indices in enumerate(df["label"]):
        hot[row, list(indices)] = True
    room = np.array([len(df) - n, n], dtype=float)  # rows each side still takes: rest, part
    wanted = np.outer(room / len(df), hot.sum(axis=0))  # each label's positives each side wants
    side = np.full(len(df), -1)
    while True:
        left = hot & (side < 0)[:, None]
        counts = left.sum(axis=0)
        if not counts.any():
            break
        rarest = np.flatnonzero(counts == counts[counts > 0].min())
        label = rarest[draw.integers(len(rarest))]
        for row in draw.permutation(np.flatnonzero(left[:, label])):
            open_ = np.flatnonzero(room > 0)
            best = open_[wanted[open_, label] == wanted[open_, label].max()]
            best = best[room[best] == room[best].max()]
            chosen = best[draw.integers(len(best))]
            side[row] = chosen
            room[chosen] -= 1
            wanted[chosen, hot[row]] -= 1
    unlabelled = draw.permutation(np.flatnonzero(side < 0))
    side[unlabelled[: int(room[1])]] = 1
    return side == 1


def _take(df: pd.DataFrame, n: int, draw: np.random.Generator, task: str, width: int) -> np.ndarray:
    """n rows drawn so that the part is like the whole (multi_label / regression), as a mask."""
    if task == "multi_label":
        return _iterative_take(df, n, draw, width)
    return _proportional_take(_value_bins(df["label"], n), n, draw)


def _copy_of(texts: list[str]) -> np.ndarray:
    """For each text, the position of its first copy (as text_key compares texts)."""
    first: dict[str, int] = {}
    return np.array([first.setdefault(text_key(t), i) for i, t in enumerate(texts)])


def _split(
    df: pd.DataFrame,
    copy_of: np.ndarray,
    fraction: float,
    draw: np.random.Generator,
    task: str,
    where: str,
    label_names: Sequence[str],
) -> np.ndarray:
    """About `fraction` of df's rows for the task, as a mask: drawn among the first copies of
    the texts, each text's other copies following its first."""
    firsts = np.flatnonzero(copy_of == np.arange(len(df)))
    rows = df if len(firsts) == len(df) else df.iloc[firsts].reset_index(drop=True)
    if task == "single_label":
        take = _stratified_take(rows, fraction, draw, where, label_names)
    else:
        n = min(max(1, round(len(rows) * fraction)), len(rows) - 1)
        take = _take(rows, n, draw, task, len(label_names))
    chosen = np.zeros(len(df), dtype=bool)
    chosen[firsts] = take
    return chosen[copy_of]


def _check_enough(
    distinct: pd.DataFrame, missing: list[str], task: str, where: str, label_names: Sequence[str]
) -> None:
    """Raise UserError when the distinct training texts cannot give every missing split one."""
    needed = 1 + len(missing)
    if task != "single_label":
        if len(distinct) < needed:
            raise UserError(
                f"{where}: {len(distinct)} distinct training texts are too few to split off"
                f" {' and '.join(missing)} splits; provide data.valid_path and data.test_path"
            )
        return
    for label, positions in _class_positions(distinct["label"]):
        if len(positions) < needed:
            raise UserError(
                f"{where}: class {label_names[label]!r} has only {len(positions)} example(s),"
                f" too few for a stratified split into train and {' and '.join(missing)}"
                f" (needs {needed}); provide data.valid_path and data.test_path,"
                f" or add examples of that class"
            )


def split_missing(
    frames: dict[str, pd.DataFrame | None],
    cfg: SourceConfig,
    seed: int,
    *,
    task: str,
    where: str,
    label_names: Sequence[str],
) -> dict[str, pd.DataFrame]:
    """Carve the missing valid and/or test split out of train, seeded, like the whole."""
    train = frames["train"]
    assert train is not None
    out = {s: f for s, f in frames.items() if f is not None}
    carve = []
    if frames["test"] is None:
        carve.append(("test", cfg.test_fraction, Stream.test_split))
    if frames["valid"] is None:  # with test carved too: a fraction of what the test split left
        share = 1 - cfg.test_fraction if frames["test"] is None else 1
        carve.append(("valid", cfg.valid_fraction / share, Stream.valid_split))
    if not carve:
        return out
    copy_of = _copy_of(train["text"].tolist())
    distinct = train[copy_of == np.arange(len(train))]
    _check_enough(
        distinct, [s for s in ("valid", "test") if frames[s] is None], task, where, label_names
    )
    for split, fraction, stream in carve:
        part = _split(train, copy_of, fraction, rng(seed, stream), task, where, label_names)
        out[split] = train[part].reset_index(drop=True)
        position = np.cumsum(~part) - 1  # of each kept row among the kept rows
        train, copy_of = train[~part].reset_index(drop=True), position[copy_of[~part]]
    out["train"] = train
    return out


def cap(
    frames: dict[str, pd.DataFrame], cfg: SourceConfig, seed: int, *, task: str, width: int
) -> dict[str, pd.DataFrame]:
    """Each split capped at data.max_train / max_eval / max_test, drawn like the whole."""
    capped = {}
    for split, frame in frames.items():
        n, stream = getattr(cfg, CAPS[split]), _CAP_STREAMS[split]
        if n is None or n >= len(frame):
            capped[split] = frame
        elif task == "single_label":
            capped[split] = stratified_sample(frame, n, seed, stream=stream)
        else:
            keep = _take(frame, n, rng(seed, stream), task, width)
            capped[split] = frame[keep].reset_index(drop=True)
        if len(capped[split]) < len(frame):
            log.info("data: %s split capped from %d to %d rows", split, len(frame), n)
    return capped
