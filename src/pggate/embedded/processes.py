"""PostgreSQL's processes seen from outside: lock files, liveness, signals.

The cluster's postmaster is pggate's child only when this pggate started it; one left by an
earlier pggate, or a PID recycled since, is known only through ``postmaster.pid`` and the
socket's lock file. These helpers read those PIDs and tell a live postmaster of a given data
directory from a zombie or an unrelated process. ``alive`` is pggate's one process-liveness
check.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from pathlib import Path

import psutil


def lock_file_pid(path: Path) -> int | None:
    """The PID on the first line of a PostgreSQL lock file, if it has one."""
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except (OSError, UnicodeDecodeError):
        return None
    # Since PostgreSQL 9.x a negative PID would mean a standalone backend; treat it alike.
    return abs(int(first)) if re.fullmatch(r"-?\d+", first) else None


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie holds no resources of the cluster)."""
    try:
        status: str = psutil.Process(pid).status()
        return bool(status != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def is_postmaster(pid: int, data_dir: Path | None) -> bool:
    """Whether ``pid`` is a live ``postgres`` process (working in ``data_dir`` when given).

    PostgreSQL chdirs into its data directory, so its cwd identifies the cluster; a recycled
    PID belongs to some other program or directory. When we may not look, assume it is one:
    a live server's lock file must never be removed.
    """
    if pid == os.getpid() or not alive(pid):
        return False
    try:
        proc = psutil.Process(pid)
        if proc.name() != "postgres":
            return False
        return data_dir is None or os.path.samefile(proc.cwd(), data_dir)
    except psutil.AccessDenied:
        return True
    except (psutil.Error, OSError):
        return False


def children(pid: int) -> list[psutil.Process]:
    """The descendants of ``pid`` (none when it is gone)."""
    try:
        found: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
        return found
    except psutil.Error:
        return []


def send_signal(pid: int, sig: signal.Signals) -> None:
    """``kill(pid, sig)``; a process already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
