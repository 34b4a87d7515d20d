"""User-facing errors: one clear line each (docs/errors.md), raised before any training starts
where possible; a full disk while saving is turned into one too."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


@contextmanager
def disk_space_guard(where: Path | str, what: str) -> Iterator[None]:
    """Turn "no space left on device" while writing `what` into one line (a UserError)."""
    try:
        yield
    except Exception as exc:
        full = out_of_space(exc)
        if full is None:
            raise
        at = getattr(full, "filename", None) or where
        raise UserError(
            f"no space left on the device while writing {what} ({at}): free space there or "
            "point hydra.run.dir / the MLflow artifact store (tracking.dir) at a larger disk; "
            "what was logged before is intact and no model was registered for this run"
        ) from exc


def out_of_space(exc: BaseException | None) -> BaseException | None:
    """The full-disk (or quota) error among an exception and those it was raised from."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        text = str(exc)
        if "No space left on device" in text or "database or disk is full" in text:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None
