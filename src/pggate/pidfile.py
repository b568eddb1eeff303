"""``DIR/pggate.pid``: which process serves a gateway directory (like postmaster.pid).

It lets ``pggate status|reload|stop DIR`` find the server, and stops a second ``pggate serve``
on the same directory, which would start the embedded cluster twice.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil

from pggate.errors import PggateError

PID_FILE = "pggate.pid"


def running_pid(directory: Path) -> int | None:
    """The PID of the live pggate serving ``directory``, if any."""
    try:
        pid = int((directory / PID_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    """True while ``pid`` runs (an exited process its parent has not reaped yet does not)."""
    try:
        status = str(psutil.Process(pid).status())
        return status != str(psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def claim(directory: Path, port: int) -> None:
    """Write our PID, refusing if another live pggate owns the directory."""
    other = running_pid(directory)
    if other is not None and other != os.getpid():
        raise PggateError(
            f'lock file "{directory / PID_FILE}" already exists: '
            f"is another pggate (PID {other}) running in \"{directory}\"?"
        )
    (directory / PID_FILE).write_text(f"{os.getpid()}\n{port}\n")


def release(directory: Path) -> None:
    if running_pid(directory) in (os.getpid(), None):
        with contextlib.suppress(FileNotFoundError):
            (directory / PID_FILE).unlink()
