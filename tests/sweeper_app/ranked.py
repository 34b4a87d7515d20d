"""A task function for trials on several GPUs (tests/test_devices.py): light, since every rank
imports it again."""

from __future__ import annotations

import os
from typing import Any


def ranked_task(cfg: Any) -> str:
    """What a rank sees; rank 1 prunes the trial when asked (a DDP trial pruned in its ranks)."""
    if cfg.prune and os.environ["RANK"] == "1":
        import optuna

        raise optuna.TrialPruned("pruned at epoch 2: eval_macro_f1=0.1")
    env = os.environ
    return f"rank {env['RANK']} of {env['WORLD_SIZE']} on {env['CUDA_VISIBLE_DEVICES']}"
