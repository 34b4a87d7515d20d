"""A trial on several GPUs: its job run as one process per GPU by torchrun's engine (DDP).

A device pool's worker holding `gpus_per_trial` GPUs runs each trial's task function the way
`torchrun --standalone --nproc-per-node=N` runs a script (`elastic_launch`, the function behind
torchrun), and hands rank 0's return value to the sweeper as the job's own. Each rank re-enters
the job's Hydra context (its config and log); an exception comes back through torchrun's error
file, so a trial pruned in its ranks is PRUNED, not FAILED.
"""

from __future__ import annotations

import importlib
import signal
import sys
import uuid
from collections.abc import Mapping
from typing import Any

import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import configure_log, setup_globals
from hydra.types import TaskFunction
from omegaconf import DictConfig
from torch.distributed.elastic.multiprocessing.errors import record
from torch.distributed.launcher.api import LaunchConfig

from src.config.errors import Interrupted
from src.sweep.devices import restored_signal_handlers

# The signals torchrun's agent takes over while it runs (LaunchConfig.signals_to_handle).
AGENT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class RankFailed(RuntimeError):
    """A rank of a multi-GPU trial failed or died."""


class TorchrunTask:
    """A Hydra task function run on `nproc` GPUs; returns rank 0's value."""

    def __init__(self, task_function: TaskFunction, nproc: int) -> None:
        # The ranks import the function again: by module and name, not by pickle.
        self.task = (task_function.__module__, task_function.__qualname__)
        self.nproc = nproc

    def __call__(self, cfg: DictConfig) -> Any:
        from torch.distributed.elastic.multiprocessing.api import SignalException
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        from torch.distributed.launcher.api import elastic_launch

        hydra_cfg = HydraConfig.instance().cfg
        try:
            with restored_signal_handlers(AGENT_SIGNALS):
                values = elastic_launch(launch_config(self.nproc), run_rank)(
                    self.task, cfg, hydra_cfg
                )
        except SignalException as exc:
            # Ctrl-C or SIGTERM stopped the ranks: stop the worker as that signal does, so the
            # sweep loop re-queues the trial and the command exits with 128 + the signal.
            raise Interrupted(exc.sigval) from None
        except ChildFailedError as exc:
            raise rank_error({rank: f.message for rank, f in exc.failures.items()}) from None
        return values[0]


def launch_config(nproc: int) -> LaunchConfig:
    """What `torchrun --standalone --nproc-per-node=nproc` launches with (torch.distributed.run)."""
    return LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        start_method="spawn",
    )


@record  # writes a rank's exception into torchrun's error file
def run_rank(task: tuple[str, str], cfg: DictConfig, hydra_cfg: DictConfig) -> Any:
    """One rank: the job's Hydra config, resolvers and logging, then its task function."""
    setup_globals()  # ${hydra:...}, ${now:...}
    HydraConfig.instance().set_config(hydra_cfg)
    configure_log(hydra_cfg.hydra.job_logging, hydra_cfg.hydra.verbose)
    return find_task_function(*task)(cfg)


def find_task_function(module: str, qualname: str) -> TaskFunction:
    """The task function found again in a rank's process. `@hydra.main` leaves its wrapper under
    the function's name and the function as the wrapper's `__wrapped__`; a script's module is
    the rank's `__main__` (multiprocessing re-imports it there)."""
    found: Any = sys.modules[module] if module == "__main__" else importlib.import_module(module)
    for name in qualname.split("."):
        found = getattr(found, name)
    task: TaskFunction = getattr(found, "__wrapped__", found)
    return task


def rank_error(messages: Mapping[int, Any]) -> BaseException:
    """The exception a multi-GPU trial ends with: the lowest rank's that raised one (torchrun's
    error file holds ``Type: message``), else the first rank that died (a signal); a pruned
    rank prunes the trial."""
    raised = {r: str(m["message"]) for r, m in messages.items() if isinstance(m, dict)}
    if not raised:
        rank = min(messages)
        return RankFailed(f"rank {rank}: {messages[rank]}")
    rank = min(raised)
    kind, _, detail = raised[rank].partition(": ")
    if kind == optuna.TrialPruned.__name__:
        return optuna.TrialPruned(detail)
    return RankFailed(f"rank {rank}: {raised[rank]}")
