"""Label-noise finder (the article's C9), the pure core and its scorers.

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
from omegaconf import DictConfig

from src.config.outputs import output_folder, write_text
from src.config.schema import NoiseConfig
from src.data.streams import Stream
from src.errors import UserError
from src.model.presets import check_tfidf

log = logging.getLogger(__name__)


SCORERS = ("tfidf", "model")


def check_noise(cfg: NoiseConfig) -> None:
    """Reject an unknown scorer, fewer than 2 folds and TF-IDF settings scikit-learn refuses."""
    if cfg.scorer not in SCORERS:
        raise UserError(f"noise.scorer={cfg.scorer} is not one of {', '.join(SCORERS)}")
    if cfg.folds < 2:
        raise UserError(f"noise.folds={cfg.folds}: cross-fitting needs at least 2 folds")
    check_tfidf(cfg.tfidf, "noise.tfidf")


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


def tfidf_scorer(cfg: NoiseConfig, label_names: Sequence[str], seed: int) -> FoldScorer:
    """The classical row's pipeline (src.model.baseline) with noise.tfidf's settings, per fold."""
    from src.model.baseline import build_pipeline
    from src.task.heads import SingleLabel

    task = SingleLabel(list(label_names))

    def score(fit: pd.DataFrame, held: pd.DataFrame, fold: int) -> np.ndarray:
        pipeline = build_pipeline(cfg.tfidf, task, seed)
        pipeline.fit(fit.text.tolist(), fit.label.to_numpy())
        out = np.zeros((len(held), task.outputs))
        out[:, pipeline.classes_] = pipeline.predict_proba(held.text.tolist())
        return out

    return score


def model_scorer(cfg: DictConfig, label_names: Sequence[str], workdir: Path) -> FoldScorer:
    """The configured backbone and method (model=, method=, trainer=), fine-tuned per fold as
    src.train fine-tunes; a stratified tenth of each fold's training rows picks the best epoch."""
    import torch

    from src.data.splitting import stratified_split
    from src.model.backbones import load_tokenizer, resolve_backbone
    from src.model.build import build_classifier
    from src.model.methods import export_model
    from src.model.precision import resolve_precision
    from src.task.metrics import classification_metrics
    from src.training.arguments import training_arguments
    from src.training.inference import predict_logits, tokenize
    from src.training.trainer import TokenizedDataset, fit

    n_labels = len(label_names)
    precision = resolve_precision(cfg.trainer.precision)

    def score(train: pd.DataFrame, held: pd.DataFrame, fold: int) -> np.ndarray:
        fit_df, valid_df = stratified_split(
            train, 0.1, cfg.seed, stream=Stream.noise_fold_valid, sub=fold
        )
        backbone = resolve_backbone(cfg.model, fit_df.text.tolist())
        tokenizer = load_tokenizer(backbone)
        built = build_classifier(backbone, tokenizer, cfg.model, cfg.method, label_names, precision)

        def encode(df: pd.DataFrame) -> TokenizedDataset:
            ids = tokenize(df.text.tolist(), tokenizer, cfg.trainer.max_len)
            return TokenizedDataset(ids, df.label.tolist())

        valid_labels = valid_df.label.to_numpy()
        fitted = fit(
            built.model,
            tokenizer,
            encode(fit_df),
            encode(valid_df),
            training_arguments(
                cfg.trainer, workdir / f"fold{fold}", cfg.seed, "eval_macro_f1", precision
            ),
            lambda logits: classification_metrics(valid_labels, logits.argmax(-1), n_labels),
            callbacks=[],
        )
        logits, _ = predict_logits(
            export_model(fitted.model),
            tokenizer,
            encode(held).encodings,
            batch_size=cfg.trainer.eval_batch_size,
        )
        return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()

    return score


def scored_frame(cfg: DictConfig) -> tuple[pd.DataFrame, list[str]]:
    """train (+ valid) rows with a `split` column, and the label names."""
    from src.data.sources import load_splits

    splits = load_splits(cfg.data, cfg.seed)
    parts = [splits.train.assign(split="train")]
    if cfg.noise.include_valid:
        parts.append(splits.valid.assign(split="valid"))
    return pd.concat(parts, ignore_index=True), list(splits.label_names)


def find_suspects(cfg: DictConfig, workdir: Path) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Load, cross-fit, rank: (ranked table, out-of-fold probabilities, label names)."""
    check_noise(cfg.noise)
    frame, names = scored_frame(cfg)
    if cfg.noise.scorer == "tfidf":
        scorer = tfidf_scorer(cfg.noise, names, cfg.seed)
    else:
        scorer = model_scorer(cfg, names, workdir)
    probs = out_of_fold_probs(frame, len(names), scorer, cfg.noise.folds, cfg.seed)
    return rank_suspects(frame, probs, names), probs, names


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
