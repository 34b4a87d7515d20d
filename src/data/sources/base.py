"""What every data source answers: its settings' checks, how it reads its splits, which it leaves
to be carved out of train, and where its rows come from (for the run record).

A source is one module of this package named after its yaml's `data.name` (conf/data/<name>.yaml,
or an entry of `data.mix.datasets`), holding one `Source` subclass as `SOURCE`. Nothing else
branches on a source's name: adding one is a module here and a yaml.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from src.config.errors import UserError
from src.config.schema import SourceConfig
from src.data.checks import check_classes, check_shared_ids, warn_conflicts
from src.data.tables import Column, as_name, ids, require_columns, texts
from src.task.labels import Labels, configured_names

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "valid", "test")
_NOT_SOURCES = {"base"}  # modules of this package that are no data source


@dataclass(frozen=True)
class Origin:
    """Where a split's rows come from, as the run record names it (MLflow's dataset source)."""

    name: str  # the data set, e.g. fund_reviews, train.jsonl, user/reviews
    uri: str  # the file, folder or Hub id read
    hub_split: str | None = None  # data=hf: the dataset's split the rows come from
    config_name: str | None = None  # data=hf: the dataset's config
    revision: str | None = None  # data=hf: the Hub revision


@dataclass(frozen=True, eq=False)  # eq: DataFrames have no truth value; compare frames instead
class Read:
    """A data set as read: its frames (None: carved out of train), label names, name and origins."""

    frames: dict[str, pd.DataFrame | None]
    label_names: list[str]
    source: str  # how messages name the data set
    origins: dict[str, Origin]  # of each split read; a carved split has the training split's


class Source:
    """A data source: subclasses read their data and check their own settings."""

    # Built-in sets have one class per text; files and Hub datasets can hold any task's labels.
    tasks: ClassVar[tuple[str, ...]] = ("single_label", "multi_label", "regression")
    # Settings of other sources that mean nothing here (a warning when set).
    ignored: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg

    def check(self) -> None:
        """Refuse this source's bad settings before anything is read (subclasses add theirs)."""
        for key in self.ignored:
            if getattr(self.cfg, key, None):
                log.warning("data.%s is ignored by data=%s", key, self.cfg.name)

    def read(self, labels: Labels) -> Read:
        """The splits it has (labels as `labels` reads them), the others None."""
        raise NotImplementedError


def source_names() -> list[str]:
    """The data sources there are: the modules of this package."""
    package = importlib.import_module(__package__ or "src.data.sources")
    found = pkgutil.iter_modules(package.__path__)
    return sorted(m.name for m in found if m.name not in _NOT_SOURCES)


def source_for(cfg: SourceConfig) -> Source:
    """The source cfg.name names, built with its settings."""
    names = source_names()
    if cfg.name not in names:
        choices = ", ".join(names)
        raise UserError(f"unknown data set data.name={cfg.name!r}; choose one of {choices}")
    module = importlib.import_module(f"{__package__}.{cfg.name}")
    source: Source = module.SOURCE(cfg)
    return source


def frame(ids: Iterable[str], texts: Iterable[str], labels: Iterable[Any]) -> pd.DataFrame:
    """A frame with exactly the columns id, text, label."""
    return pd.DataFrame(
        {
            "id": pd.Series(list(ids), dtype=str),
            "text": pd.Series(list(texts), dtype=str),
            "label": pd.Series(list(labels)),
        }
    )


def display_names(cfg: SourceConfig, default: list[str]) -> list[str]:
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


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Table:
    """One split's table as read: ids, texts, and labels as the task parsed them."""

    ids: list[str]
    texts: list[str]
    labels: list[Any]
    column: Column  # the label column, for messages naming its rows


def table(cfg: SourceConfig, split: str, rows: pd.DataFrame, where: str, labels: Labels) -> Table:
    """A split's rows (indexed by how messages number them) as ids, texts and parsed labels,
    each checked; `where` names the file or dataset split in messages."""
    if rows.empty:
        raise UserError(f"{where}: no rows, so the {split} split would be empty; check the data")
    given = {"text_column": cfg.text_column, "label_column": cfg.label_column}
    if cfg.id_column:
        given["id_column"] = cfg.id_column
    wanted = {key: as_name(name) for key, name in given.items()}  # as the header's names read
    require_columns(rows, wanted, where)
    texts_ = texts(rows, wanted["text_column"], where)
    label = wanted["label_column"]
    column = Column(where, label, rows[label].tolist(), rows.index)
    parsed = labels.parse(column)
    return Table(ids(rows, wanted.get("id_column"), split, where), texts_, parsed, column)


def encode(
    cfg: SourceConfig, tables: dict[str, Table], wheres: dict[str, str], labels: Labels, unit: str
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The splits' frames with labels encoded, and the label names; ids unique across splits,
    evaluation classes seen in training, conflicting labels of one text warned about. `wheres`
    names each split's file (`unit` "file") or dataset split (`unit` "split")."""
    names = labels.names({s: t.labels for s, t in tables.items()}, wheres["train"])
    frames = {}
    for split, t in tables.items():
        encoded = labels.encode(t.labels, names, t.column, wheres["train"])
        warn_conflicts(t.texts, encoded, t.column.index, wheres[split])
        frames[split] = frame(t.ids, t.texts, encoded)
    check_shared_ids(frames, wheres, allow=cfg.allow_overlap)
    kind = {"train": "training", "valid": "valid", "test": "test"}
    described = {s: f"the {kind[s]} {unit} {w}" for s, w in wheres.items()}
    check_classes(frames, labels, names, described)
    present = labels.classes(frames["train"]["label"])
    unused = [n for i, n in enumerate(names) if present is not None and i not in present]
    if unused:
        log.warning("data: labels %s of data.label_names have no training examples", unused)
    return frames, names
