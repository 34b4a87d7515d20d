"""A Hugging Face dataset: a Hub id, a local folder of data files (what `datasets.load_dataset`
takes), or a folder written by `save_to_disk` (`datasets.load_from_disk`).

Its `train` / `validation` (or `valid`, `dev`) / `test` splits are ours unless data.splits maps
others; a missing valid or test split is carved out of train like data=custom does. A
`ClassLabel` label column gives its label names (a list of them, for task=multi_label); other
integer labels are text as written, like labels in files. Dataset scripts run code and are
refused (datasets no longer runs them either; we never pass trust_remote_code). Offline
(HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1), a Hub dataset is read from the Hub cache (what
`hf download --repo-type dataset <id>` leaves, at data.revision) or from datasets' own cache of an
earlier load_dataset; when neither has it, one line says what to run where the Hub is reachable.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from src.config.errors import UserError
from src.config.schema import SourceConfig
from src.data.sources.base import SPLIT_NAMES, Origin, Read, Source, encode, table
from src.data.tables import arrow_rows
from src.task.labels import Labels

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

log = logging.getLogger(__name__)

VALID_NAMES = ("validation", "valid", "dev")  # what datasets call a validation split
SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what save_to_disk writes at the top


class HuggingFace(Source):
    """data.path (+ data.config_name, data.revision), split by data.splits."""

    ignored = ("train_path", "valid_path", "test_path")

    def check(self) -> None:
        super().check()
        if not self.cfg.path:
            raise UserError(
                "data=hf needs a dataset: set data.path=<Hub id, data folder or save_to_disk"
                " folder>"
            )
        _refuse_script(self.cfg.path)
        local = Path(self.cfg.path).expanduser().exists()
        if local and self.cfg.revision:
            raise UserError(
                f"data.revision={self.cfg.revision} applies to Hub datasets, but data.path="
                f"{self.cfg.path} is a local folder; set data.revision=null"
            )
        if not _is_saved(self.cfg.path):
            _builder(self.cfg)  # resolves the dataset and its config without reading its rows
        elif self.cfg.config_name:
            raise UserError(
                f"data.config_name={self.cfg.config_name} applies to datasets load_dataset reads,"
                f" but data.path={self.cfg.path} is a save_to_disk folder; set"
                f" data.config_name=null"
            )

    def read(self, labels: Labels) -> Read:
        cfg = self.cfg
        dataset = _load(cfg)
        chosen = chosen_splits(cfg, list(dataset))
        labels = _with_class_names(labels, dataset[chosen["train"]], cfg)
        wheres = {ours: f"{cfg.path}[{theirs}]" for ours, theirs in chosen.items()}
        tables = {
            ours: table(cfg, ours, _rows(dataset[theirs], cfg, wheres[ours]), wheres[ours], labels)
            for ours, theirs in chosen.items()
        }
        frames, names = encode(cfg, tables, wheres, labels, unit="split")
        uri = _uri(str(cfg.path))
        name = Path(uri).name if Path(uri).is_absolute() else uri  # a folder's name, or the id
        origins = {
            ours: Origin(name, uri, theirs, cfg.config_name, cfg.revision)
            for ours, theirs in chosen.items()
        }
        return Read({s: frames.get(s) for s in SPLIT_NAMES}, names, str(cfg.path), origins)


SOURCE = HuggingFace


# --------------------------------------------------------------------------- finding it


def _is_saved(path: str) -> bool:
    """Whether path is a folder written by save_to_disk (a DatasetDict or one Dataset)."""
    return any((Path(path).expanduser() / marker).is_file() for marker in SAVED_MARKERS)


def _uri(path: str) -> str:
    """A local folder's absolute path, else the Hub id as given."""
    local = Path(path).expanduser()
    return str(local.resolve()) if local.exists() else path


def _refuse_script(path: str) -> None:
    """Refuse a dataset script (data.path a .py file, or a folder holding <folder name>.py)."""
    local = Path(path).expanduser()
    script = local if local.suffix == ".py" else local / f"{local.name}.py"
    if script.suffix == ".py" and (local.suffix == ".py" or script.is_file()):
        raise UserError(
            f"data.path={path}: {script.name} is a dataset script, and scripts run code: point"
            f" data.path at the data files (Parquet, CSV, JSON) or a save_to_disk folder instead"
        )


def _builder(cfg: SourceConfig) -> Any:
    """datasets' builder of data.path with data.config_name and data.revision (nothing read)."""
    import datasets

    with _library_errors(cfg):
        path, revision = _where(cfg)
        return datasets.load_dataset_builder(path, name=cfg.config_name, revision=revision)


def _load(cfg: SourceConfig) -> DatasetDict | dict[str, Dataset]:
    """The dataset's splits: from a save_to_disk folder, or through load_dataset."""
    import datasets

    with _library_errors(cfg):
        if _is_saved(str(cfg.path)):
            saved = datasets.load_from_disk(str(Path(str(cfg.path)).expanduser()))
            return saved if isinstance(saved, datasets.DatasetDict) else {"train": saved}
        path, revision = _where(cfg)
        loaded = datasets.load_dataset(path, name=cfg.config_name, revision=revision)
    assert isinstance(loaded, datasets.DatasetDict)  # no split asked for: all of them
    return loaded


def _where(cfg: SourceConfig) -> tuple[str, str | None]:
    """What load_dataset is given: data.path and data.revision, or offline, the Hub cache's
    snapshot of that revision (what `hf download --repo-type dataset` leaves) as a local
    folder. Without one, datasets' own cache of an earlier load_dataset serves (its latest)."""
    import datasets
    from huggingface_hub import snapshot_download

    path = str(cfg.path)
    if Path(path).expanduser().exists() or not datasets.config.HF_HUB_OFFLINE:
        return path, cfg.revision
    try:
        return snapshot_download(
            path, repo_type="dataset", revision=cfg.revision, local_files_only=True
        ), None
    except Exception as exc:  # not in the Hub cache (or no Hub id): datasets' cache may have it
        if cfg.revision:  # which ignores revisions: it would read whatever it holds
            raise ConnectionError(f"revision {cfg.revision} is not in the Hub cache") from exc
        return path, None


@contextmanager
def _library_errors(cfg: SourceConfig) -> Iterator[None]:
    """Turn what datasets raises for a dataset it cannot find, reach or build into one line
    naming the setting (the library's exception is the reason: nothing is read yet)."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        raise UserError(_reason(cfg, exc)) from exc


def _reason(cfg: SourceConfig, exc: Exception) -> str:
    """One line for a dataset datasets could not find, reach or build."""
    import datasets

    path = cfg.path
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, ConnectionError):  # not cached, and the Hub offline or unreachable
        why = (
            "the Hub is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
            if datasets.config.HF_HUB_OFFLINE
            else f"the Hub cannot be reached ({detail})"
        )
        return (
            f"data.path={path}: not in the local Hugging Face caches and {why}; where the Hub is"
            f" reachable, run: hf download --repo-type dataset {path}{_download_args(cfg)}"
            f" (with the same HF_HOME), then run again"
        )
    if "Dataset scripts are no longer supported" in detail:
        return (
            f"data.path={path}: the dataset is a script, and scripts run code: use a dataset of"
            f" data files (Parquet, CSV, JSON), e.g. its refs/convert/parquet revision"
        )
    if isinstance(exc, ValueError) and cfg.config_name and "config" in detail.lower():
        return f"data.config_name={cfg.config_name}: {detail}"
    return f"data.path={path}: cannot load the dataset: {detail}"


def _download_args(cfg: SourceConfig) -> str:
    """`hf download`'s options after the repo id: the revision, if one is set."""
    return f" --revision {cfg.revision}" if cfg.revision else ""


# --------------------------------------------------------------------------- reading it


def chosen_splits(cfg: SourceConfig, present: list[str]) -> dict[str, str]:
    """Our split -> the dataset's split, for each it has: data.splits' mapped splits (which must
    exist, each used once), else the default names among the splits nothing mapped."""
    mapped = {ours: getattr(cfg.splits, ours) for ours in SPLIT_NAMES}
    given = {ours: theirs for ours, theirs in mapped.items() if theirs is not None}
    for ours, theirs in given.items():
        if theirs not in present:
            raise UserError(
                f"data.splits.{ours}={theirs}: {cfg.path} has no such split; its splits:"
                f" {', '.join(present)}"
            )
    used = list(given.values())
    if len(set(used)) < len(used):
        twice = max(used, key=used.count)
        raise UserError(
            f"data.splits: {cfg.path}'s split {twice!r} is mapped twice ({given}); give each of"
            f" ours its own split, or leave valid / test unset to carve them out of train"
        )
    free = [name for name in present if name not in used]
    defaults = {"train": ("train",), "valid": VALID_NAMES, "test": ("test",)}
    chosen = dict(given)
    for ours in SPLIT_NAMES:
        found = [name for name in defaults[ours] if name in free]
        if ours not in chosen and found:
            chosen[ours] = found[0]
    if "train" not in chosen:
        raise UserError(
            f"data.splits.train: {cfg.path} has no split 'train'; its splits:"
            f" {', '.join(present)}; set data.splits.train=<one of them>"
        )
    return chosen


def _class_names(feature: Any) -> list[str] | None:
    """The names of a ClassLabel feature, or of a list of them (multi-label); else None."""
    from datasets import ClassLabel

    inner = getattr(feature, "feature", None)  # List / Sequence of ClassLabel
    for candidate in (feature, inner):
        if isinstance(candidate, ClassLabel):
            return list(candidate.names)
    return None


def _with_class_names(labels: Labels, train: Dataset, cfg: SourceConfig) -> Labels:
    """`labels` naming the classes after the label column's ClassLabel, unless data.label_names
    names them."""
    feature = train.features.get(cfg.label_column)
    names = _class_names(feature) if feature is not None else None
    if names is None or cfg.label_names is not None:
        return labels
    if not hasattr(labels, "given"):
        raise UserError(
            f"data.label_column={cfg.label_column}: {cfg.path}'s labels are classes"
            f" ({', '.join(names[:5])}), not numbers: task=regression needs numeric labels"
        )
    return dataclasses.replace(labels, given=names)  # type: ignore[type-var]


def _rows(split: Dataset, cfg: SourceConfig, where: str) -> pd.DataFrame:
    """A split's rows as the readers of files make them (`arrow_rows`), ClassLabel labels as
    their names."""
    rows = arrow_rows(split.with_format("arrow")[:], where)
    feature = split.features.get(cfg.label_column)
    names = _class_names(feature) if feature is not None else None
    if names is not None:
        rows[cfg.label_column] = [_class_name(cell, names) for cell in rows[cfg.label_column]]
    return rows


def _class_name(cell: Any, names: list[str]) -> Any:
    """A ClassLabel cell (its index as text, `arrow_rows` made it) as its name; -1 (no label)
    as missing; a list of them (multi-label) as a list of names."""
    if isinstance(cell, list):
        return [_class_name(c, names) for c in cell]
    if cell is None:
        return None
    index = int(cell)
    return names[index] if 0 <= index < len(names) else None
