"""Fine-tuning methods, one class a method: a module of this package defines it (a subclass of
`method.Method` with a `name`), conf/method/<name>.yaml selects it. Nothing else names a method:
the rest of the code asks the object (`method_of`) what it trains, needs and costs.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

from src.config.errors import UserError
from src.config.schema import MethodConfig, ModelConfig
from src.model.methods.method import (
    Method,
    count_parameters,
    export_model,
    is_head_parameter,
    restrict_head,
)

if TYPE_CHECKING:
    from peft import PeftModel
    from torch import nn
    from transformers import PreTrainedModel

__all__ = [
    "Method",
    "apply_method",
    "check_method",
    "check_method_fits",
    "count_parameters",
    "export_model",
    "is_head_parameter",
    "method_named",
    "method_of",
    "methods",
    "register_schemas",
    "restrict_head",
]


@functools.cache
def methods() -> dict[str, type[Method]]:
    """Every method, by name: the named `Method` subclasses each module of this package defines."""
    found: dict[str, type[Method]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, Method)
                and obj.__module__ == module.__name__
                and obj.name
            ):
                found[obj.name] = obj
    return found


def method_named(name: str) -> type[Method]:
    """The class of the method called `name`; an unknown name is the user's mistake."""
    known = methods()
    if name not in known:
        raise UserError(f"method.name={name} is not one of {', '.join(sorted(known))}")
    return known[name]


def method_of(cfg: Any) -> Method:
    """The method object of a `method` config (a MethodConfig or its composed DictConfig), its
    settings typed by the method's own schema (defaults filled in for fields the config lacks)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cls = method_named(str(cfg.name))
    values = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)  # untyped: the
    # schema of another method (or the shared MethodConfig) does not merge into this one's
    try:
        typed = OmegaConf.merge(OmegaConf.structured(cls.schema), values)
    except OmegaConfBaseException as exc:
        raise UserError(
            f"method.name={cfg.name}: {str(exc).splitlines()[0]} (choose it as method={cfg.name})"
        ) from None
    settings = OmegaConf.to_object(typed)
    assert isinstance(settings, MethodConfig)
    return cls(settings)


def register_schemas() -> None:
    """Store each method's schema as `method_<name>_schema` in Hydra's ConfigStore, for its
    yaml's defaults list (`- /method_<name>_schema@_here_`) to type its own fields."""
    from hydra.core.config_store import ConfigStore

    for name, cls in methods().items():
        ConfigStore.instance().store(name=f"method_{name}_schema", node=cls.schema)


def check_method(cfg: MethodConfig) -> None:
    """Reject impossible method settings before anything is loaded."""
    method_of(cfg).check()


def check_method_fits(cfg: MethodConfig, preset: ModelConfig, model: nn.Module) -> None:
    """The method's settings fit this architecture (`model` may live on the meta device)."""
    method_of(cfg).check_fits(preset, model)


def apply_method(
    model: PreTrainedModel, cfg: MethodConfig, preset: ModelConfig
) -> PreTrainedModel | PeftModel:
    """Make the method's parameters trainable."""
    return method_of(cfg).apply(model, preset)
