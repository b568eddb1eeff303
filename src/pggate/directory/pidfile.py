"""``DIR/pggate.pid`` and ``DIR/pggate.reload.N``: which process serves a gateway directory, and
what its last reload did.

The server holds an exclusive ``flock`` on ``pggate.pid`` from start to exit, and the PID written
inside is trusted only while that lock is held. A file left by a server that died, naming a PID
the kernel has since given to an unrelated process, is *stale*: ``pggate status|reload|stop``
say so and never signal that process, and the next ``pggate serve`` replaces the file. The lock
also stops a second ``pggate serve`` on the same directory (which would start the embedded
cluster twice), as postmaster.pid does for a data directory.

Why ``flock`` and not ``fcntl`` (POSIX) locks: a POSIX lock is not inherited and is dropped when
its process closes *any* descriptor of the file. A flock lock belongs to the open file
description: the descriptor is close-on-exec, so the embedded postmaster never holds it, and a
forked worker closes its inherited copy (``PidLock.forget``) without releasing the supervisor's
lock.

``pggate reload`` learns what its SIGHUP did from ``pggate.reload.N``, which serving process N
(the server itself, or worker N) replaces atomically after each reload: its PID, a generation
that changes with every reload, and the errors it logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pggate.directory import layout
from pggate.errors import PggateError

log = logging.getLogger("pggate.pidfile")

# A ``pggate status`` probe holds the lock for an instant; ``serve`` retries that long.
CLAIM_SECONDS = 1.0
_CLAIM_POLL = 0.01
_MAX_PID_FILE = 4096


@dataclass(frozen=True, slots=True)
class PidFile:
    """What ``DIR/pggate.pid`` says, and whether a live server vouches for it (its lock)."""

    path: Path
    pid: int | None  # the PID written in the file (None: empty or unreadable)
    workers: int
    locked: bool  # a pggate server holds the lock, so ``pid`` serves this directory

    @property
    def stale_note(self) -> str | None:
        """Why the PID in the file is not trusted, when the file names one nobody vouches for."""
        if self.locked or self.pid is None:
            return None
        return (
            f'stale pid file "{self.path}" '
            f"(PID {self.pid} is not a pggate server for this directory)"
        )


def read(directory: Path) -> PidFile | None:
    """The pid file of ``directory`` (None when there is none), checked against its lock."""
    path = directory / layout.PID_FILE
    try:
        with path.open("rb") as file:
            try:
                # Shared and non-blocking: it fails only while a server holds its exclusive lock.
                fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
                locked = False
            except BlockingIOError:
                locked = True
            pid, workers = _parse(file.read(_MAX_PID_FILE))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PggateError(f'could not read lock file "{path}": {exc.strerror}') from None
    return PidFile(path, pid, workers, locked)


def serving(directory: Path, pid: int) -> bool:
    """True while the server ``pid`` still holds the lock of ``directory``."""
    state = read(directory)
    return state is not None and state.locked and state.pid == pid


class PidLock:
    """A serving process's hold on ``DIR/pggate.pid``; see the module docstring."""

    def __init__(self, path: Path, fd: int, workers: int) -> None:
        self.path = path
        self._fd = fd
        self._workers = workers

    def forget(self) -> None:
        """In a forked worker: close the inherited descriptor; the supervisor keeps the lock."""
        os.close(self._fd)

    def release(self) -> None:
        """At exit: remove the pid file (still ours: we hold its lock) and the reload results,
        then unlock."""
        directory = self.path.parent
        with contextlib.suppress(FileNotFoundError):
            if _same_file(self._fd, self.path):
                self.path.unlink()
        for worker in range(self._workers):
            with contextlib.suppress(FileNotFoundError):
                _reload_path(directory, worker).unlink()
        os.close(self._fd)


def claim(directory: Path, port: int, workers: int) -> PidLock:
    """Lock and write ``DIR/pggate.pid`` for this process; refuse if a live pggate holds it."""
    path = directory / layout.PID_FILE
    deadline = time.monotonic() + CLAIM_SECONDS
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise PggateError(f'could not create lock file "{path}": {exc.strerror}') from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(_CLAIM_POLL)
                continue
            other = read(directory)
            holder = other.pid if other is not None else None
            raise PggateError(
                f'lock file "{path}" already exists: is another pggate (PID {holder}) '
                f'running in "{directory}"?'
            ) from None
        if _same_file(fd, path):
            break
        os.close(fd)  # its last server removed it as we locked it: lock the new file
    previous = PidFile(path, _parse(os.pread(fd, _MAX_PID_FILE, 0))[0], 1, locked=False)
    if previous.stale_note is not None:
        log.info("replacing %s", previous.stale_note)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n{port}\n{workers}\n".encode(), 0)
    return PidLock(path, fd, workers)


def _parse(data: bytes) -> tuple[int | None, int]:
    """(PID, workers) from the file's lines: PID, port, workers."""
    lines = data.decode(errors="replace").split("\n")
    try:
        pid = int(lines[0])
    except ValueError:
        return None, 1
    try:
        workers = max(1, int(lines[2]))
    except (ValueError, IndexError):
        workers = 1
    return pid, workers


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino)


# --------------------------------------------------------------------------- reload results


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What one serving process did with a SIGHUP."""

    server: int  # the PID in pggate.pid of the server it belongs to
    pid: int  # the process that reloaded (the server itself, or one of its workers)
    generation: int  # that process's reload count: a new result has a new (pid, generation)
    errors: tuple[str, ...]  # what it logged as errors; empty: every file was reloaded


def write_reload_result(directory: Path, worker: int, result: ReloadResult) -> None:
    """Replace ``DIR/pggate.reload.N`` atomically (a reader never sees half a file)."""
    path = _reload_path(directory, worker)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(
        json.dumps(
            {
                "server": result.server,
                "pid": result.pid,
                "generation": result.generation,
                "errors": list(result.errors),
            }
        )
    )
    os.replace(temporary, path)


def reload_results(directory: Path, workers: int) -> list[ReloadResult | None]:
    """The last reload result of each serving process (None where there is none yet)."""
    return [_read_result(_reload_path(directory, worker)) for worker in range(workers)]


def _read_result(path: Path) -> ReloadResult | None:
    try:
        data = json.loads(path.read_text())
        return ReloadResult(
            server=int(data["server"]),
            pid=int(data["pid"]),
            generation=int(data["generation"]),
            errors=tuple(str(error) for error in data["errors"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _reload_path(directory: Path, worker: int) -> Path:
    return directory / f"{layout.RELOAD_FILE}.{worker}"
