"""``workers = N``: N serving processes sharing the port (SO_REUSEPORT) under a supervisor.

The supervisor loads everything once (configuration, TLS context — so a passphrase is asked
once — and the embedded cluster), forks the workers, passes SIGHUP/SIGTERM/SIGINT on, and
restarts a worker that dies unexpectedly. Each worker runs its own event loop and listening
sockets; the kernel spreads new connections across them.

Cancel requests may reach any worker: the low bits of the PID pggate gives a client name the
worker that owns the session, and a worker that receives a cancel for another forwards it over
that worker's private abstract Unix socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

log = logging.getLogger("pggate.workers")

WORKER_BITS = 6  # up to 64 workers (the workers setting's maximum)
RESTART_BACKOFF = 1.0
STOP_GRACE = 90.0
_SIGNALS = {signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT}


def cancel_socket_name(supervisor_pid: int, index: int) -> str:
    """The abstract Unix socket on which worker ``index`` accepts forwarded cancels."""
    return f"\0pggate-{supervisor_pid}-cancel-{index}"


def worker_of_pid(pid: int) -> int:
    return pid & ((1 << WORKER_BITS) - 1)


def supervise(count: int, run_worker: Callable[[int], int]) -> int:
    """Fork ``count`` workers running ``run_worker(index)``; returns when all have stopped."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    children: dict[int, int] = {}  # pid -> index
    stopping: signal.Signals | None = None

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            code = 1
            try:
                code = run_worker(index)
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                os._exit(code)
        children[pid] = index
        log.info("worker %d started (PID %d)", index, pid)

    for index in range(count):
        spawn(index)
    deadline: float | None = None
    while children:
        info = signal.sigtimedwait(_SIGNALS, 1.0)
        if deadline is not None and time.monotonic() > deadline:
            for pid in children:
                os.kill(pid, signal.SIGKILL)
        if info is None or info.si_signo == signal.SIGCHLD:
            _reap(children, stopping is None, spawn)
        elif info.si_signo == signal.SIGHUP:
            _forward(children, signal.SIGHUP)
        else:
            stopping = signal.Signals(info.si_signo)
            deadline = deadline or time.monotonic() + STOP_GRACE
            _forward(children, stopping)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    return 0


def _forward(children: dict[int, int], sig: int) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(children: dict[int, int], restart: bool, spawn: Callable[[int], None]) -> None:
    # Only our workers: the embedded cluster is a child too, reaped by its own owner.
    for pid in list(children):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done == 0:
            continue
        index = children.pop(pid)
        if restart:
            log.warning(
                "worker %d (PID %d) exited with status %d; restarting it",
                index,
                pid,
                os.waitstatus_to_exitcode(status),
            )
            time.sleep(RESTART_BACKOFF)
            spawn(index)
