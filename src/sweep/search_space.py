"""Hydra sweep syntax <-> Optuna distributions, and values <-> override strings."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    IntervalSweep,
    Override,
    QuotedString,
    RangeSweep,
    Transformer,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from src.config.errors import UserError


@dataclass
class SearchSpace:
    """What each trial samples (`distributions`) and the overrides every trial gets (`fixed`)."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)
    # The same overrides as key -> value text (None for a deletion, ``~key``).
    fixed_values: dict[str, str | None] = field(default_factory=dict)

    def describe(self) -> str:
        """One line per parameter, e.g. ``trainer.lr: float [1e-05, 0.0005] log``."""
        lines = [f"{k}: {describe_distribution(d)}" for k, d in self.distributions.items()]
        lines += [f"fixed: {f}" for f in self.fixed]
        return "\n".join(lines)


def parse_search_space(
    params: Mapping[str, Any] | None,
    arguments: Sequence[str],
    config_loader: Any = None,
) -> SearchSpace:
    """Merge the configured params and the command-line overrides (which win) into a space."""
    parser = OverridesParser.create(config_loader=config_loader)
    merged: dict[str, Override] = {}
    lines = [_param_line(str(k), v) for k, v in (params or {}).items()]
    for line in [*lines, *arguments]:
        try:
            override = parser.parse_override(line)
        except Exception as exc:
            raise UserError(f"cannot parse sweep parameter {line!r}: {exc}") from exc
        override.config_loader = config_loader
        key = override.get_key_element().lstrip("+~")
        merged.pop(key, None)  # a later (command-line) override replaces an earlier one
        merged[key] = override
    space = SearchSpace()
    for override in merged.values():
        if override.is_sweep_override():
            name = override.get_key_element()
            space.distributions[name] = to_distribution(override)
        else:
            assert override.input_line is not None
            space.fixed.append(override.input_line)
            value = None if override.is_delete() else override.get_value_element_as_str()
            space.fixed_values[override.get_key_element()] = value
    return space


def _param_line(key: str, value: Any) -> str:
    """A ``key=value`` override line from one entry of ``hydra.sweeper.params``."""
    if isinstance(value, str):
        return f"{key}={value}"
    if value is None or isinstance(value, bool | int | float):
        return f"{key}={format_value(value)}"
    raise UserError(
        f"hydra.sweeper.params.{key}: give a string in Hydra's sweep syntax "
        f"(e.g. 'choice(a,b)' or 'interval(0,1)'), got {value!r}"
    )


def to_distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one Hydra sweep override."""
    name = override.get_key_element()
    value = override.value()
    if override.is_choice_sweep():
        choices = _unique(override.sweep_iterator(transformer=_choice_value))
        if not choices:
            raise UserError(f"{name}: the choice is empty")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        return _range_distribution(name, value)
    if isinstance(value, IntervalSweep):
        assert value.start is not None and value.end is not None
        log = "log" in value.tags
        if not value.start < value.end:
            raise UserError(f"{name}: interval({value.start}, {value.end}) is empty")
        if log and value.start <= 0:
            raise UserError(f"{name}: a log interval must start above 0, got {value.start}")
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise UserError(f"{name}: unsupported sweep {override.input_line!r}")


def _range_distribution(name: str, sweep: RangeSweep) -> BaseDistribution:
    """``range(a, b, step)`` (Hydra's: `b` excluded) as an ordered distribution with that step:
    integers an IntDistribution, floats a FloatDistribution; ``shuffle(range(...))`` a
    categorical, as in hydra-optuna-sweeper."""
    values = list(sweep.range())
    if not values:
        raise UserError(f"{name}: range({sweep.start}, {sweep.stop}, {sweep.step}) is empty")
    if sweep.shuffle:
        return CategoricalDistribution(_unique(values))
    log = "log" in sweep.tags
    if all(isinstance(v, int) for v in values) and isinstance(sweep.step, int):
        if log and (abs(sweep.step) != 1 or min(values) <= 0):
            raise UserError(f"{name}: a log range needs step 1 and a start above 0")
        return IntDistribution(min(values), max(values), log=log, step=abs(sweep.step))
    if log:
        raise UserError(
            f"{name}: Optuna has no stepped log scale for floats; use tag(log, interval(a, b))"
        )
    low, high, step = _float_steps(sweep, len(values))
    return FloatDistribution(low, high, step=step)


def _float_steps(sweep: RangeSweep, n: int) -> tuple[float, float, float]:
    """Low, high and step of a float range's `n` values, in decimal arithmetic (Hydra's own
    steps from the binary floats, so range(0.1, 0.4, 0.1) would end at 0.30000000000000004)."""
    step = Decimal(str(sweep.step))
    first = Decimal(str(sweep.start))
    last = first + (n - 1) * step
    return float(min(first, last)), float(max(first, last)), float(abs(step))


def _choice_value(x: Any) -> CategoricalChoiceType:
    """A choice as Optuna stores it: numbers, bools and None as such, else override text."""
    if x is None or isinstance(x, bool | int | float):
        return x
    if isinstance(x, QuotedString):
        return x.with_quotes()
    text = Transformer.str(x)
    if isinstance(x, str) and _parsed_choice(text) != x:
        return quote(x)  # e.g. the string "3" given as choice(a, '3'): keep it a string
    return text


def _unique(values: Iterable[Any]) -> list[Any]:
    """Drop repeats, keep order (1 and True stay distinct)."""
    out: list[Any] = []
    seen: set[tuple[type, Any]] = set()
    for v in values:
        if (type(v), v) not in seen:
            seen.add((type(v), v))
            out.append(v)
    return out


def format_value(value: Any) -> str:
    """A sampled value as the value part of a Hydra override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return str(value)  # categorical strings are kept in override syntax already


def param_overrides(params: Mapping[str, Any]) -> list[str]:
    """``key=value`` overrides of a trial's parameters."""
    return [f"{k}={format_value(v)}" for k, v in params.items()]


_INTERPOLATION = re.compile(r"\$\{")


def quote(text: str) -> str:
    """A Hydra single-quoted string whose parsed value is exactly `text`."""
    # Backslashes are literal except in front of a quote (or the closing quote), where
    # they must be doubled; quotes are escaped; ``${`` would start an interpolation.
    body = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    body = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, body)
    body = _INTERPOLATION.sub(r"\\${", body)
    return f"'{body}'"


def describe_distribution(dist: BaseDistribution) -> str:
    """A short human-readable form of a distribution."""
    if isinstance(dist, CategoricalDistribution):
        return "choice(" + ", ".join(format_value(c) for c in dist.choices) + ")"
    if isinstance(dist, IntDistribution | FloatDistribution):
        kind = "int" if isinstance(dist, IntDistribution) else "float"
        text = f"{kind} [{format_value(dist.low)}, {format_value(dist.high)}]"
        if dist.log:
            text += " log"
        if dist.step is not None and not (kind == "int" and dist.step == 1):
            text += f" step {format_value(dist.step)}"
        return text
    return repr(dist)


def coerce(name: str, value: Any, dist: BaseDistribution) -> Any:
    """Convert a user-given value (e.g. from ``enqueue``) to the distribution's type."""
    try:
        if isinstance(dist, IntDistribution):
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if isinstance(dist, FloatDistribution):
            return float(value)
    except (TypeError, ValueError):
        raise UserError(
            f"{name}={value!r} is not a number for {describe_distribution(dist)}"
        ) from None
    assert isinstance(dist, CategoricalDistribution)
    for choice in dist.choices:
        if type(choice) is type(value) and choice == value:
            return choice
    for choice in dist.choices:
        if _parsed_choice(choice) == value or format_value(choice) == format_value(value):
            return choice
    raise UserError(f"{name}={value!r} is not one of {describe_distribution(dist)}")


def _parsed_choice(choice: Any) -> Any:
    """The value Hydra would give a categorical choice stored as override text."""
    if not isinstance(choice, str):
        return choice
    try:
        return OverridesParser.create().parse_override(f"k={choice}").value()
    except Exception:
        return choice


def grid_space(space: SearchSpace) -> dict[str, list[Any]]:
    """The GridSampler search space: every parameter must be a finite list."""
    grid: dict[str, list[Any]] = {}
    for name, dist in space.distributions.items():
        if isinstance(dist, CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            grid[name] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            low, step = Decimal(str(dist.low)), Decimal(str(dist.step))
            count = int((Decimal(str(dist.high)) - low) / step) + 1
            grid[name] = [float(low + i * step) for i in range(count)]
        else:
            raise UserError(
                f"sampler grid: {name} is {describe_distribution(dist)}; "
                "use choice(...) or range(...) for every parameter"
            )
    return grid


def grid_size(space: SearchSpace) -> int:
    """How many cells a grid over `space` has (1 without a parameter: the one job)."""
    return math.prod(len(values) for values in grid_space(space).values())


def grid_jobs(lines: Sequence[str]) -> list[list[str]] | None:
    """Each job's overrides of a grid over the override `lines` (a later line for a key replaces
    an earlier one), in the order Hydra's basic sweeper runs them; None when a sweep does not
    list its values (an interval: no grid)."""
    axes: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(list(lines)):
        key = override.get_key_element()
        if override.is_discrete_sweep():
            axes[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        elif override.is_sweep_override():
            return None
        else:
            axes[key] = [str(override.input_line)]
    return [list(job) for job in itertools.product(*axes.values())]
