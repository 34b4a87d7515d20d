"""The one writer of the paths a user names (`src.predict --output`, `src.report --out`, the
files `src.noise` and a sweep leave in their folders): what the user named is what is written.

- `-` is standard output.
- A symbolic link is followed: its target is written, the link stays.
- A regular file (or a name not yet taken) is replaced atomically: the new content is written
  beside it and renamed over it only once whole, keeping the old file's permission bits; an
  interrupted or failed write leaves the old file as it was and no part behind.
- Anything else (a pipe, a device such as /dev/null or /dev/stdout, a terminal) is written
  through, never replaced.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from src.config.errors import UserError, writable_place

STDOUT = "-"


def target_of(path: str | Path) -> Path:
    """The file a write to `path` lands in: a symbolic link's (final) target, else the path."""
    return Path(os.path.realpath(Path(path).expanduser()))


def check_output(path: str | Path, option: str) -> None:
    """Raise UserError when `path` cannot be written, found before any work is done."""
    if str(path) == STDOUT:
        return
    target = target_of(path)
    if target.is_dir():
        raise UserError(
            f"{option} {path} is a directory: give a file name, e.g. {Path(path) / 'out.jsonl'}"
        )
    if not target.parent.is_dir():
        raise UserError(
            f"{option} {path}: the folder {target.parent} does not exist; create it first"
        )
    if target.exists() and not target.is_file():
        if not os.access(target, os.W_OK):
            raise UserError(f"{option} {path} cannot be written: choose a writable place")
        return
    if not writable_place(target.parent) or (target.exists() and not os.access(target, os.W_OK)):
        raise UserError(f"{option} {path} cannot be written: choose a writable place")


def output_folder(path: str | Path) -> Path:
    """A folder the user named, created with its parents (a link to a folder is followed)."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"{folder}: cannot create the folder ({e.strerror}); choose another place"
        ) from e
    return folder


@contextmanager
def open_output(path: str | Path, *, binary: bool = False) -> Iterator[IO]:
    """A stream writing what the user named: stdout, a device or pipe (written through), or a
    regular file replaced atomically once the block ends without an exception."""
    if str(path) == STDOUT:
        stream: IO = sys.stdout.buffer if binary else sys.stdout
        yield stream
        stream.flush()
        return
    target = target_of(path)
    if target.exists() and not target.is_file():
        with _open(target, binary) as through:
            yield through
        return
    staging = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with _open(fd, binary) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        if target.exists():
            os.chmod(staging, stat.S_IMODE(target.stat().st_mode))
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write a text (UTF-8) to what the user named; returns the path as given."""
    with open_output(path) as out:
        out.write(text)
    return Path(path)


def _open(file: Path | int, binary: bool) -> IO:
    """A file (or descriptor) opened for writing: bytes, or UTF-8 text without newline changes."""
    if binary:
        return open(file, "wb")
    return open(file, "w", encoding="utf-8", newline="")
