"""Whether a process of this host is alive: shared by sweep workers and orphaned-run detection."""

from __future__ import annotations

import os


def process_start_ticks(pid: int) -> int | None:
    """The start time of a process in clock ticks since boot (Linux), None if unknown."""
    stat = _proc_stat(pid)
    if stat is None or len(stat) < 20:
        return None
    try:
        return int(stat[19])
    except ValueError:
        return None


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, None without /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def process_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether process `pid` of this host runs (not a zombie) and is the one that started then."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    stat = _proc_stat(pid)
    if stat is None:
        # No procfs (kill(pid, 0) is all we have), or the process exited just now.
        return not os.path.isdir("/proc/self")
    if stat and stat[0] in ("Z", "X"):
        return False
    if start_ticks is not None:
        current = process_start_ticks(pid)
        if current is not None and current != start_ticks:
            return False  # the pid was reused by another process
    return True
