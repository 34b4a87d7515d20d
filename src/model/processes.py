"""How many processes a run shares its work with: torchrun's $WORLD_SIZE, read in one place."""

from __future__ import annotations

import os

WORLD_SIZE_ENV = "WORLD_SIZE"  # torch.distributed's launcher sets it in every process of a job


def under_torchrun() -> bool:
    """Whether this process is one of a torchrun job's."""
    return WORLD_SIZE_ENV in os.environ


def world_size() -> int:
    """The processes of this job: torchrun's count, 1 outside torchrun."""
    return int(os.environ.get(WORLD_SIZE_ENV, "1"))
