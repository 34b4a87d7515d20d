"""Label-noise finder (the article's C9), its pure core: cross-fitting and ranking (the scorers
that train models per fold are src/noise.py's).

Every example of train (+ valid) gets out-of-fold class probabilities: k-fold cross-fitting,
each fold scored by a model that never saw it. An example is a suspect in the confident-learning
sense (Northcutt et al.) when another label clears that label's own confidence threshold (the
mean probability the model gives it on examples carrying it) with more probability than the
given label does. Suspects are ranked by normalised margin: the given label's probability minus
the best other label's (most negative first).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from src.config.errors import UserError
from src.config.outputs import output_folder, write_text
from src.config.schema import NoiseConfig

log = logging.getLogger(__name__)


SCORERS = ("tfidf", "model")


def check_noise(cfg: NoiseConfig) -> None:
    """Reject an unknown scorer and fewer than 2 folds (noise.tfidf: `presets.check_tfidf`)."""
    if cfg.scorer not in SCORERS:
        raise UserError(f"noise.scorer={cfg.scorer} is not one of {', '.join(SCORERS)}")
    if cfg.folds < 2:
        raise UserError(f"noise.folds={cfg.folds}: cross-fitting needs at least 2 folds")


# fold training rows -> held-out rows -> probabilities (held-out rows x labels)
FoldScorer = Callable[[pd.DataFrame, pd.DataFrame, int], np.ndarray]


def out_of_fold_probs(
    frame: pd.DataFrame, n_labels: int, scorer: FoldScorer, folds: int, seed: int
) -> np.ndarray:
    """Class probabilities of every row from a model fitted on the other folds (stratified)."""
    from sklearn.model_selection import StratifiedKFold  # here: config checks import this module

    counts = np.bincount(frame.label.to_numpy(), minlength=n_labels)
    present = counts[counts > 0]
    if present.min() < folds:
        raise UserError(
            f"a class has only {present.min()} examples, fewer than noise.folds={folds}: "
            "lower noise.folds or add examples"
        )
    probs = np.zeros((len(frame), n_labels))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (fit_idx, held_idx) in enumerate(splitter.split(frame.text, frame.label)):
        log.info("fold %d/%d: fitting on %d, scoring %d", k + 1, folds, len(fit_idx), len(held_idx))
        probs[held_idx] = scorer(
            frame.iloc[fit_idx].reset_index(drop=True),
            frame.iloc[held_idx].reset_index(drop=True),
            k,
        )
    return probs


def class_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per class j: the mean probability of j over the examples labelled j (inf if none)."""
    out = np.full(probs.shape[1], np.inf)
    for j in range(probs.shape[1]):
        mask = labels == j
        if mask.any():
            out[j] = probs[mask, j].mean()
    return out


def rank_suspects(
    frame: pd.DataFrame, probs: np.ndarray, label_names: Sequence[str]
) -> pd.DataFrame:
    """Every row with its confident-learning flag, ranked by normalised margin (lowest first)."""
    labels = frame.label.to_numpy()
    n = len(frame)
    given = probs[np.arange(n), labels]
    others = probs.copy()
    others[np.arange(n), labels] = -np.inf
    suggested = others.argmax(axis=1)
    best_other = others[np.arange(n), suggested]
    confident = probs >= class_thresholds(probs, labels)
    confident_probs = np.where(confident, probs, -np.inf)
    confident_label = confident_probs.argmax(axis=1)
    flagged = confident.any(axis=1) & (confident_label != labels)
    table = pd.DataFrame(
        {
            "id": frame.id.to_numpy(),
            "split": frame.get("split", pd.Series(["train"] * n)).to_numpy(),
            "text": frame.text.to_numpy(),
            "given": [label_names[i] for i in labels],
            "suggested": [label_names[i] for i in suggested],
            "p_given": given,
            "p_suggested": best_other,
            "margin": given - best_other,
            "flagged": flagged,
        }
    )
    table = table.sort_values("margin", kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, n + 1))
    return table


def recall_at_k(ranked_ids: Sequence[str], true_ids: set[str], k: int | None = None) -> float:
    """Share of `true_ids` among the first k ranked ids (k defaults to len(true_ids))."""
    k = len(true_ids) if k is None else k
    if not true_ids:
        return float("nan")
    return len(set(list(ranked_ids)[:k]) & true_ids) / len(true_ids)


def write_outputs(
    ranked: pd.DataFrame, frame_probs: np.ndarray, names: list[str], out_dir: Path
) -> dict[str, Path]:
    """suspects.csv (flagged rows, ranked), exclude_ids.txt, out_of_fold.csv (every row)."""
    folder = output_folder(out_dir)
    suspects = ranked[ranked.flagged].drop(columns="flagged")
    return {
        "suspects": write_text(folder / "suspects.csv", suspects.to_csv(index=False)),
        "exclude_ids": write_text(
            folder / "exclude_ids.txt", "".join(f"{i}\n" for i in suspects.id)
        ),
        "out_of_fold": write_text(
            folder / "out_of_fold.csv", ranked.drop(columns="text").to_csv(index=False)
        ),
    }
