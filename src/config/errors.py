"""User-facing errors: one clear line each (docs/errors.md), raised before any training starts
where possible; a full disk while saving is turned into one too; how a path or a record we read
is checked. `src.cli.boundary.report_user_error` is the one way any command ends on one."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

# What SLURM, Kubernetes and `docker stop` send (SIGTERM), and Ctrl-C (SIGINT).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite: the run stops at that step."""


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop by a signal: runs in progress end KILLED with this reason.

    A KeyboardInterrupt, so everything that already treats Ctrl-C as a stop (Optuna trials
    failed and re-queued by the sweep loop) treats SIGTERM alike. `runs`: the MLflow runs it
    ended, for the one line that reports it; `unmarked`: those the store did not let it end.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal = signal.Signals(signum).name
        super().__init__(f"killed by {self.signal}: the process was asked to stop")
        self.runs: list[str] = []
        self.unmarked: list[str] = []


# Code a stop waits for: a store's transaction (not an artifact upload, which may take minutes).
# A write to MLflow's SQLite store cut half-way kept its lock in this process, and marking the
# run KILLED then waited for it (20 s) and failed: about one stop in ten that landed in a write.
STORE_MODULES = ("sqlalchemy.", "optuna.storages.")
RETRY_STOP_S = 0.05


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise `Interrupted` in the main thread, once it is out of a store's
    write; a second signal while the first is being handled ends the process at once (the
    default action)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        if in_store_write(frame):  # the same signal again in a moment
            again = threading.Timer(RETRY_STOP_S, os.kill, (os.getpid(), signum))
            again.daemon = True
            again.start()
            return
        stopping.append(signum)
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        # Not after a stop: an enclosing block's handler (a sweep's job runs inside the
        # command's) would turn a second signal during the clean-up into another stop.
        if not stopping:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def in_store_write(frame: FrameType | None) -> bool:
    """Whether `frame` or a caller of it runs a store's code (STORE_MODULES)."""
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(STORE_MODULES):
            return True
        frame = frame.f_back
    return False


@contextmanager
def disk_space_guard(where: Path | str, what: str) -> Iterator[None]:
    """Turn "no space left on device" while writing `what` into one line (a UserError)."""
    try:
        yield
    except UserError:
        raise
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


def writable_place(path: Path) -> bool:
    """Whether this process can create or write `path`: a file can be made in its closest
    existing ancestor (tried for real: permission bits do not stop root, read-only mounts do)."""
    existing = path.expanduser().resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return False
    try:
        with tempfile.TemporaryFile(dir=existing):
            return True
    except OSError:
        return False


def regular_file(path: Path, setting: str | None = None) -> Path:
    """`path` if it is a file this process can read; else one line saying what it is instead
    (missing, a folder, a FIFO or device, a symlink loop, unreadable), naming the setting."""
    shown = f"{setting}={path}" if setting else str(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(
            f"{shown}: cannot read it: file not found ({path.absolute()} does not exist)"
        ) from None
    except RuntimeError as exc:  # Python's own symlink-loop error on some versions
        raise UserError(f"{shown}: cannot be followed ({exc}); point it at a file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(
                f"{shown}: is a loop of symbolic links that never reaches a file; point it at "
                "the file itself"
            ) from None
        if exc.errno == errno.ENOTDIR:
            raise UserError(f"{shown}: a part of that path is a file, not a folder") from None
        raise UserError(f"{shown}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{shown}: is a folder, not a file; give the file inside it")
    if not stat.S_ISREG(mode):
        raise UserError(
            f"{shown}: is not a regular file (a FIFO, socket or device), which would be read "
            "once or never end: give a file"
        )
    if not os.access(path, os.R_OK):
        raise UserError(f"{shown}: cannot be read (permission denied)")
    return path


def json_record(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in one of the files we write and read back (a checkpoint's records, a
    pretraining run's lineage, a model's config); one cut short, not JSON or not an object is
    one line naming the file, never a traceback."""
    try:
        text = regular_file(path).read_text(encoding="utf-8")
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        cut = isinstance(exc, json.JSONDecodeError) and (
            exc.msg.startswith("Unterminated") or exc.pos >= len(text.rstrip())
        )
        raise UserError(
            f"{path}: {what} is {'cut short' if cut else 'not valid JSON'} ({exc}); the folder "
            "was not written completely (interrupted, or a full disk): write or download it again"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: {what} holds {type(data).__name__}, not a JSON object")
    return data
