"""Every check of a composed config that its types cannot express, run before anything loads.

Each config group's module owns the rules of its values (`check_method` next to the methods,
`check_trainer` next to the TrainingArguments they become, ...); this module runs them all, in
one place, before any data is read, any weight is loaded and any MLflow run exists.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from src.data.mixing import check_mix
from src.errors import UserError
from src.inputs.long_text import check_long_text
from src.inputs.prompts import check_prompt
from src.model.methods import check_method
from src.task.heads import check_task
from src.training.arguments import check_trainer


def check_config(cfg: DictConfig) -> None:
    """Value checks the schema's types cannot express, and a writable output location."""
    check_method(cfg.method)
    check_trainer(cfg.trainer)
    check_task(cfg.task)
    check_prompt(cfg.prompt, cfg.task.name)
    check_long_text(cfg.data, cfg.trainer.max_len)
    check_mix(cfg.data.mix, cfg.task.name)
    from src.training.evaluate import check_optimized_metric  # torch: not at --help

    check_optimized_metric(cfg.optimized_metric)
    for path in (Path(cfg.output_dir), Path(cfg.tracking.dir)):
        existing = nearest_existing(path)
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise UserError(
                f"cannot write to {path}: choose a writable directory (hydra.run.dir, tracking.dir)"
            )


def nearest_existing(path: Path) -> Path:
    """The path itself or its closest existing ancestor."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path
