"""Your files: a training file and optional valid / test files (else carved out of train), in any
format src.data.tables reads, each checked row by row."""

from __future__ import annotations

from pathlib import Path

from src.config.errors import UserError, regular_file
from src.data.checks import EVAL_SPLITS
from src.data.sources.base import SPLIT_NAMES, Origin, Read, Source, encode, table
from src.data.tables import read_table
from src.task.labels import Labels


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


class Custom(Source):
    """Your files: data.train_path, optional data.valid_path / data.test_path."""

    ignored = ("path",)

    def check(self) -> None:
        super().check()
        if not self.cfg.train_path:
            raise UserError("data=custom needs a training file: set data.train_path=<file>")

    def paths(self) -> dict[str, str]:
        """The file of each split given, by split."""
        cfg = self.cfg
        given = {"train": cfg.train_path, "valid": cfg.valid_path, "test": cfg.test_path}
        return {split: str(path) for split, path in given.items() if path}

    def read(self, labels: Labels) -> Read:
        cfg, paths = self.cfg, self.paths()
        for split, path in paths.items():  # before they are compared by where they lead
            regular_file(Path(path), f"data.{split}_path")
        _check_distinct_files(paths, cfg.allow_overlap)
        tables = {
            split: table(cfg, split, read_table(path), path, labels)
            for split, path in paths.items()
        }
        frames, names = encode(cfg, tables, paths, labels, unit="file")
        name = Path(paths["train"]).name
        origins = {s: Origin(name, str(Path(p).resolve())) for s, p in paths.items()}
        return Read({s: frames.get(s) for s in SPLIT_NAMES}, names, paths["train"], origins)


SOURCE = Custom
