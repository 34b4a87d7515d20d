"""Every use of a library's private API in clfsweep, in one place.

Each entry names the library limitation that forces it. `check_private_api` (run when a sweep
starts, and by tests/test_sweeper.py) fails loudly, naming the attribute, when an upgrade of
Optuna or Hydra removes one.
"""

from __future__ import annotations

from typing import Any

from hydra.core.utils import JobReturn

from src.errors import UserError

# (owner, attribute, the library limitation that makes us use it)
PRIVATE_ATTRIBUTES: tuple[tuple[type, str, str], ...] = (
    (
        JobReturn,
        "_return_value",
        "hydra-core's public JobReturn.return_value writes a line to stderr and re-raises a "
        "failed job's exception; the sweeper records the exception instead",
    ),
)


def job_result(ret: JobReturn) -> Any:
    """A finished job's return value, or the exception it failed with (not raised)."""
    return ret._return_value  # see PRIVATE_ATTRIBUTES


def check_private_api() -> None:
    """Raise, naming it, if a private attribute we rely on is gone from the installed library."""
    for owner, attribute, why in PRIVATE_ATTRIBUTES:
        if not hasattr(owner, attribute):
            module = owner.__module__.split(".")[0]
            raise UserError(
                f"the installed {module} has no {owner.__module__}.{owner.__qualname__}."
                f"{attribute}, which clfsweep's sweeper needs ({why}); install the version "
                "in pyproject.toml or update src/sweep/private_api.py"
            )
