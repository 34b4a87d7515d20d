"""User-facing errors: one clear line, raised before any training starts."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
