"""``workers = N``: N serving processes sharing the port (SO_REUSEPORT) under a supervisor.

The supervisor loads everything once (configuration, TLS context — so a passphrase is asked
once — and the embedded cluster), forks the workers, passes SIGHUP/SIGTERM/SIGINT on, and
restarts a worker that dies unexpectedly. Each worker runs its own event loop and listening
sockets; the kernel spreads new connections across them.

A worker that dies is started again at once, so that only its own sessions are lost (as when
a PostgreSQL backend dies, the others go on). Only a worker that keeps dying soon after its
start (a crash loop) waits before each new start, 0.1 s doubling up to 10 s; the wait is a
deadline of the supervisor's loop, which meanwhile still passes signals on and reaps the
other workers.

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
from dataclasses import dataclass, field

log = logging.getLogger("pggate.workers")

WORKER_BITS = 6  # up to 64 workers (the workers setting's maximum)
RESTART_DELAY_FIRST = 0.1  # the wait before the second start of a crash loop
RESTART_DELAY_MAX = 10.0
STABLE_SECONDS = 10.0  # a worker that ran this long before it died is no crash loop
POLL_SECONDS = 1.0  # the supervisor wakes at least this often (stop deadline, lost SIGCHLD)
STOP_GRACE = 90.0
_SIGNALS = {signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT}


def cancel_socket_name(supervisor_pid: int, index: int) -> str:
    """The abstract Unix socket on which worker ``index`` accepts forwarded cancels."""
    return f"\0pggate-{supervisor_pid}-cancel-{index}"


def worker_of_pid(pid: int) -> int:
    return pid & ((1 << WORKER_BITS) - 1)


def restart_delay(quick_deaths: int) -> float:
    """The wait before starting a worker again after its ``quick_deaths``-th death in a row
    within STABLE_SECONDS of its start: none the first time, then 0.1 s, 0.2 s, ... 10 s."""
    if quick_deaths <= 1:
        return 0.0
    return min(RESTART_DELAY_FIRST * 2.0 ** (quick_deaths - 2), RESTART_DELAY_MAX)


@dataclass
class _Slot:
    """One worker index: when its process started and how it has been dying."""

    started: float = 0.0
    quick_deaths: int = 0  # deaths in a row, each within STABLE_SECONDS of its start
    due: float | None = None  # when it is to be started again (None: running or stopped)


@dataclass
class _Supervisor:
    """The workers' parent: starts them, passes signals on, restarts the ones that die."""

    run_worker: Callable[[int], int]
    slots: list[_Slot]
    children: dict[int, int] = field(default_factory=dict)  # pid -> index
    stopping: signal.Signals | None = None
    deadline: float | None = None  # SIGKILL for whatever still runs after it
    reloads: int = 0  # SIGHUPs passed on

    def spawn(self, index: int) -> None:
        replay = self.reloads > 0
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            code = 1
            try:
                if replay:
                    _replay_reload(index)
                code = self.run_worker(index)
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                os._exit(code)
        self.children[pid] = index
        self.slots[index].started = time.monotonic()
        self.slots[index].due = None
        log.info("worker %d started (PID %d)", index, pid)

    def reap(self) -> None:
        """Collect the workers that ended; schedule each one's new start unless stopping.
        Only our workers: the embedded cluster is a child too, reaped by its own owner."""
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == 0:
                continue
            index = self.children.pop(pid)
            if self.stopping is None:
                self.schedule(index, pid, os.waitstatus_to_exitcode(status))

    def schedule(self, index: int, pid: int, code: int) -> None:
        """Set when worker ``index`` starts again: now, unless it is in a crash loop."""
        slot = self.slots[index]
        now = time.monotonic()
        ran = now - slot.started
        slot.quick_deaths = slot.quick_deaths + 1 if ran < STABLE_SECONDS else 1
        delay = restart_delay(slot.quick_deaths)
        slot.due = now + delay
        if delay == 0:
            log.warning("worker %d (PID %d) exited with status %d; restarting it", index, pid, code)
        else:
            log.warning(
                "worker %d (PID %d) exited with status %d after %.1f s; restarting it in %.1f s",
                index,
                pid,
                code,
                ran,
                delay,
            )

    def start_due(self) -> None:
        now = time.monotonic()
        for index, slot in enumerate(self.slots):
            if slot.due is not None and slot.due <= now:
                self.spawn(index)

    def wait_seconds(self) -> float:
        """Until the next scheduled start, at most POLL_SECONDS."""
        dues = [slot.due for slot in self.slots if slot.due is not None]
        if not dues or self.stopping is not None:
            return POLL_SECONDS
        return max(0.0, min(POLL_SECONDS, min(dues) - time.monotonic()))

    def stop(self, sig: signal.Signals) -> None:
        self.stopping = sig
        self.deadline = self.deadline or time.monotonic() + STOP_GRACE
        for slot in self.slots:
            slot.due = None
        self.forward(sig)

    def forward(self, sig: int) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def running(self) -> bool:
        return bool(self.children) or any(slot.due is not None for slot in self.slots)


def _replay_reload(index: int) -> None:
    """A restarted worker re-reads the configuration, as the others did on the SIGHUPs they
    were sent: the snapshot it was forked with is the one the supervisor loaded at start. The
    serving code takes a SIGHUP that arrives before its event loop runs as a reload to do
    first (listener._defer_sighup); without such a handler the default action would kill it."""
    if callable(signal.getsignal(signal.SIGHUP)):
        signal.raise_signal(signal.SIGHUP)
    else:
        log.warning("worker %d starts with the configuration loaded at start", index)


def supervise(count: int, run_worker: Callable[[int], int]) -> int:
    """Fork ``count`` workers running ``run_worker(index)``; returns when all have stopped."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    sup = _Supervisor(run_worker, [_Slot() for _ in range(count)])
    for index in range(count):
        sup.spawn(index)
    while sup.running():
        info = signal.sigtimedwait(_SIGNALS, sup.wait_seconds())
        if sup.deadline is not None and time.monotonic() > sup.deadline:
            sup.forward(signal.SIGKILL)
        if info is None or info.si_signo == signal.SIGCHLD:
            sup.reap()
        elif info.si_signo == signal.SIGHUP:
            sup.reloads += 1
            sup.forward(signal.SIGHUP)
        else:
            sup.stop(signal.Signals(info.si_signo))
        if sup.stopping is None:
            sup.start_due()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    return 0
