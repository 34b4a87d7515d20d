"""The article's 20 fund reviews (10 negative, 10 positive), split as the article split them."""

from __future__ import annotations

import importlib.resources

from src.data.sources.base import SPLIT_NAMES, Origin, Read, Source, display_names, frame
from src.data.tables import json_rows
from src.task.labels import Labels

ASSET = "fund_reviews.jsonl"
LABELS = ["负向", "正向"]  # negative, positive: the article had them swapped


class FundReviews(Source):
    """The article's reviews: 6+6 train, 2+2 valid, 2+2 test, as the article split them."""

    tasks = ("single_label",)
    ignored = ("train_path", "path")

    def read(self, labels: Labels) -> Read:
        asset = importlib.resources.files("src") / "assets" / ASSET
        rows = json_rows(asset.read_text(encoding="utf-8"), where=ASSET, kind="line")
        frames = {}
        for split in SPLIT_NAMES:
            part = [r for _, r in rows if r["split"] == split]
            classes = [LABELS.index(r["label"]) for r in part]
            frames[split] = frame([r["id"] for r in part], [r["text"] for r in part], classes)
        origin = Origin("fund_reviews", str(asset))
        names = display_names(self.cfg, LABELS)
        return Read(dict(frames), names, "fund_reviews", dict.fromkeys(SPLIT_NAMES, origin))


SOURCE = FundReviews
