"""Before the first job of a multirun: every model preset it will train has its own weights.

A Hydra callback (conf/hydra/default.yaml) expands the multirun's sweeps the way Hydra's sweepers
read them (`hydra.sweeper.params`, then the command line), composes the config of each distinct
model a job can get, and checks that each finds its weights; so the fourth job of a grid does not
fail after three have trained, and one `model.path` does not silently serve several presets.
"""

from __future__ import annotations

import itertools
import sys
from collections import defaultdict
from typing import Any, cast

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.config.errors import UserError
from src.config.schema import ModelConfig

# Sources of weights that name one checkpoint: several presets cannot share one.
SINGLE_CHECKPOINT_KEYS = ("path", "from_run")


class ModelWeightsCheck(Callback):
    """Stops a multirun before its first job (and its MLflow parent run) when a preset's weights
    are missing, with one line."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_models(job_models(config, kwargs.get("config_name")))
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            # Hydra turns a callback's exception into a warning and goes on with the jobs.
            raise SystemExit(2) from None


def job_overrides(config: DictConfig) -> list[list[str]]:
    """The override lists of the jobs, one per distinct model: sweeps over `model`, `model.*`
    or a config group (an experiment may pick the model) are expanded, other sweeps keep their
    first value, intervals (numbers, never weights) are left out."""
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    # The command line as typed: iterating the node would resolve `${...}` in an override.
    arguments += cast(list[str], OmegaConf.to_container(config.hydra.overrides.task))
    axes: dict[str, list[str]] = {}  # later arguments replace earlier ones, as in Hydra's sweepers
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if not override.is_sweep_override():
            axes[key] = [str(override.input_line)]
        elif override.is_discrete_sweep():
            values = [f"{key}={value}" for value in override.sweep_string_iterator()]
            axes[key] = values if may_pick_the_model(override.key_or_group) else values[:1]
        else:
            axes.pop(key, None)
    return [list(job) for job in itertools.product(*axes.values())]


def may_pick_the_model(key: str) -> bool:
    """`model`, a `model.*` value, or a config group (whose options may set the model)."""
    if key == "model" or key.startswith("model."):
        return True
    return "." not in key and bool(GlobalHydra.instance().config_loader().get_group_options(key))


def job_models(config: DictConfig, config_name: str | None) -> list[ModelConfig]:
    """The distinct model configs the multirun's jobs will have."""
    models: dict[str, ModelConfig] = {}
    for overrides in job_overrides(config):
        model = compose(config_name, overrides=overrides).model
        models.setdefault(OmegaConf.to_yaml(model, resolve=True), model)
    return list(models.values())


def check_models(models: list[ModelConfig]) -> None:
    """One checkpoint given for several presets is refused; every preset's weights must be there."""
    from src.model.backbones import check_weights_reachable

    presets: dict[str, set[str]] = defaultdict(set)
    for model in models:
        for key in SINGLE_CHECKPOINT_KEYS:
            if getattr(model, key):
                presets[f"model.{key}={getattr(model, key)}"].add(model.name)
    for source, names in presets.items():
        if len(names) > 1:
            raise UserError(
                f"{source} would serve every model preset of this multirun "
                f"({', '.join(sorted(names))}), so all of them would train the same weights: "
                "give model.root=DIR, where each preset finds its own folder, or run one preset "
                "at a time"
            )
    for model in models:
        check_weights_reachable(model)
