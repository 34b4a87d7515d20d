"""Every use of a library's private API in clfsweep, in one place.

Each entry names the library limitation that forces it. `check_private_api` (run when a sweep
starts, and by tests/test_architecture.py) fails loudly, naming the attribute, when an upgrade of
Hydra, Optuna, transformers or submitit removes one; tests/test_architecture.py also fails when
code outside this module reaches for a private name that is not listed here.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from src.config.errors import UserError

if TYPE_CHECKING:
    from hydra.core.utils import JobReturn
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class PrivateUse:
    """One private attribute of a library that our code uses, and why it has to."""

    owner: str  # the module, `module:Class`, or `module:Class()` for an instance attribute
    attribute: str
    why: str


BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# System attributes Optuna writes on a trial: `enqueue_trial`'s parameters, and the trial a
# RetryFailedTrialCallback re-queued. A trial carrying either was put in the queue on purpose.
OPTUNA_QUEUED_KEYS = ("fixed_params", "failed_trial")

PRIVATE_USES: tuple[PrivateUse, ...] = (
    PrivateUse(
        "hydra.core.utils:JobReturn",
        "_return_value",
        "hydra-core's public JobReturn.return_value writes a line to stderr and re-raises a "
        "failed job's exception; the sweeper records the exception instead",
    ),
    PrivateUse(
        "hydra._internal.utils",
        "get_args_parser",
        "the argument parser @hydra.main uses: which words are overrides, and whether it is a"
        " multirun, before Hydra's lexer prints a diagram for an unquoted value",
    ),
    PrivateUse(
        "hydra._internal.config_loader_impl:ConfigLoaderImpl",
        "_parse_overrides_and_create_caching_repo",
        "Hydra's --help deep-copies its config repository for each of ~110 group listings; we "
        "list them from one copy (hydra-core capped <1.4)",
    ),
    PrivateUse(
        "hydra._internal.core_plugins.basic_launcher",
        "BasicLauncher",
        "the device pool runs only under Hydra's basic launcher; its `_target_` names it",
    ),
    PrivateUse(
        "hydra._internal.core_plugins.basic_sweeper",
        "BasicSweeper",
        "src.train's grid sweeper runs a grid without devices as Hydra's basic sweeper does, by "
        "building it (Hydra registers it under hydra/sweeper=basic, but exports no public class)",
    ),
    PrivateUse(
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher:BaseSubmititLauncher",
        "_EXECUTOR",
        "which submitit cluster (local / slurm) a launcher submits to: we submit a batch as one"
        " job array ourselves to learn each job's outcome",
    ),
    PrivateUse(
        "transformers:PretrainedConfig()",
        "_name_or_path",
        "the saved config's provenance, which PEFT reads when it saves adapters; transformers"
        " sets it only when loading by name",
    ),
    PrivateUse(
        "transformers:Trainer",
        "_get_train_sampler",
        "the Trainer's sampler hook, overridden for length-sorted batches in random order",
    ),
    PrivateUse(
        "transformers:Trainer",
        "_get_eval_sampler",
        "the Trainer's sampler hook, overridden for longest-first evaluation batches",
    ),
    PrivateUse(
        "transformers:PreTrainedModel",
        "_is_distributed_loading_by_transformers",
        "the Trainer leaves a model FSDP2 already shards alone only when this says so; else"
        " accelerate wraps it in DDP, which refuses its DTensors (accelerate runs FSDP itself on"
        " GPUs only; transformers' sharded loading shards before PEFT, whose copy of the head"
        " then fails: src/model/sharding.py)",
    ),
)


def job_result(ret: JobReturn) -> Any:
    """A finished job's return value, or the exception it failed with (not raised)."""
    return ret._return_value


def hydra_args_parser() -> Any:
    """The argparse parser of `@hydra.main` commands."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser()


def hydra_config_loader() -> Any:
    """Hydra's config loader class (its group listings are what `--help` prints)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    return ConfigLoaderImpl


def caching_repository(loader: Any, config_name: str | None, overrides: list[str]) -> Any:
    """The config repository a loader builds for a config name and overrides, or None where
    this Hydra has no such method (the caller then keeps Hydra's own path)."""
    build = getattr(type(loader), "_parse_overrides_and_create_caching_repo", None)
    return None if build is None else build(loader, config_name, overrides)[1]


def submitit_cluster(launcher: Any) -> str:
    """The submitit cluster a hydra-submitit launcher submits to (`local`, `slurm`)."""
    return str(launcher._EXECUTOR)


def set_name_or_path(model: PreTrainedModel, path: str) -> None:
    """Record where a model's weights came from, in the model and its saved config."""
    model.name_or_path = model.config._name_or_path = path


def declare_sharded(model: Any) -> None:
    """Tell the Trainer that `model`'s processes already shard it (FSDP2), as transformers' own
    sharded loading does: it then neither wraps it in DDP nor shards it again, and FSDP2 alone
    reduces the gradients. A PEFT model answers with the model it wraps."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base._is_distributed_loading_by_transformers = True


def check_private_api(import_all: bool = False) -> None:
    """Raise, naming it, if a private attribute we rely on is gone from the installed library.

    Only the libraries this process has loaded are checked unless `import_all` (a sweep's
    parent process never loads transformers; the tests check everything)."""
    for use in PRIVATE_USES:
        module_name, _, owner_name = use.owner.partition(":")
        if not import_all and module_name.split(".")[0] not in sys.modules:
            continue
        try:
            owner: Any = importlib.import_module(module_name)
        except ImportError:
            continue  # an optional library (submitit's launcher) that is not installed
        for part in filter(None, owner_name.removesuffix("()").split(".")):
            owner = getattr(owner, part)
        if owner_name.endswith("()"):
            owner = owner()
        if not hasattr(owner, use.attribute):
            raise UserError(
                f"the installed {module_name.split('.')[0]} has no"
                f" {use.owner.replace(':', '.').removesuffix('()')}."
                f"{use.attribute}, which clfsweep needs ({use.why}); install the version in "
                "pyproject.toml or update src/config/private_api.py"
            )
