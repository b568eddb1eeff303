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

Under socket activation (``systemd.listen_fds``) the workers do not bind: the supervisor holds
the sockets systemd passed, and every worker, the restarted ones too, accepts on those same
sockets (the kernel gives each connection to one of them).

Only the supervisor speaks to systemd (sd_notify(3); the unit files say ``NotifyAccess=main``):
it is the main PID, and only it knows about all the workers. Each worker reports to it over a
private datagram socket (:class:`ReportChannel`) each time it serves a configuration: once its
listening sockets are open and its signal handlers in place, and after each reload, with the
CLOCK_MONOTONIC time at which it started reading that configuration. :class:`Readiness` turns
those reports into ``READY=1``: at start when every worker serves, and after a SIGHUP
(announced at once as ``RELOADING=1``) when every worker serves a configuration read after the
supervisor passed the SIGHUP on. A report's arrival raises SIGIO in the supervisor
(``O_ASYNC``), which its ``sigtimedwait`` loop waits for beside the other signals.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from pggate import logs
from pggate.server import systemd

log = logging.getLogger("pggate.workers")

WORKER_BITS = 6  # up to 64 workers (the workers setting's maximum)
RESTART_DELAY_FIRST = 0.1  # the wait before the second start of a crash loop
RESTART_DELAY_MAX = 10.0
STABLE_SECONDS = 10.0  # a worker that ran this long before it died is no crash loop
POLL_SECONDS = 1.0  # the supervisor wakes at least this often (stop deadline, lost SIGCHLD)
STOP_GRACE = 90.0
REPORT_TIMEOUT = 5.0  # seconds a worker's report may wait for room in the supervisor's queue
_SIGNALS = {signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGIO}


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


class ReportChannel:
    """Workers → supervisor: "I serve a configuration read at time T" (see the module
    docstring). A socketpair made before the first fork, so only pggate's own processes hold
    it (close-on-exec: the embedded cluster and other programs never do).

    Create it in the supervisor's main thread before any other thread starts (the embedded
    cluster's watchdog): it blocks SIGIO there, the threads started later inherit the block,
    and so SIGIO, whose default action ends the process, reaches only the supervisor's
    ``sigtimedwait``. A report raises SIGIO (``O_ASYNC``, owner: the supervisor) on arrival."""

    def __init__(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGIO})
        self.receiver, self.sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.receiver.setblocking(False)
        fcntl.fcntl(self.receiver, fcntl.F_SETOWN, os.getpid())
        flags = fcntl.fcntl(self.receiver, fcntl.F_GETFL)
        fcntl.fcntl(self.receiver, fcntl.F_SETFL, flags | os.O_ASYNC)
        self.sender.settimeout(REPORT_TIMEOUT)

    def in_worker(self) -> None:
        """After fork, in a worker: it only sends."""
        self.receiver.close()

    def close(self) -> None:
        """In the supervisor, once every worker has ended: no SIGIO is raised after this, and
        one still pending is consumed, so that unblocking SIGIO cannot end the process."""
        self.receiver.close()
        self.sender.close()
        signal.sigtimedwait({signal.SIGIO}, 0)

    def report(self, loaded_ns: int, applied: bool = True) -> None:
        """In a worker: it serves the configuration it started reading at ``loaded_ns``
        (CLOCK_MONOTONIC ns); ``applied`` is False after a reload that kept the previous one."""
        data = f"{os.getpid()} {loaded_ns} {int(applied)}".encode()
        try:
            self.sender.send(data)
        except OSError as exc:
            log.warning("could not report to the supervisor: %s", exc)

    def receive(self) -> list[tuple[int, int, bool]]:
        """In the supervisor: every report waiting, as (worker PID, loaded_ns, applied)."""
        reports: list[tuple[int, int, bool]] = []
        while True:
            try:
                data = self.receiver.recv(256)
            except BlockingIOError:
                return reports
            fields = data.split()
            if len(fields) == 3 and all(f.isdigit() for f in fields):
                reports.append((int(fields[0]), int(fields[1]), fields[2] == b"1"))


def _now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


@dataclass
class Readiness:
    """What the supervisor tells systemd about its ``count`` workers (no I/O: each method
    returns the notification fields to send, or None).

    ``since`` is the time (CLOCK_MONOTONIC ns) a configuration must have been read at or
    after for a worker to count as serving it: 0 at start, the moment a SIGHUP was passed on
    during a reload, None when nothing is awaited. A reload waits for every worker slot: a
    worker restarted meanwhile re-reads the files before its first report
    (``_replay_reload``), so its report counts."""

    count: int
    supervisor: int  # MAINPID
    since: int | None = 0
    announced: bool = False  # the READY=1 of the start has been sent
    stopping_mode: str | None = None
    serving: dict[int, tuple[int, bool]] = field(default_factory=dict)  # pid -> (loaded, applied)

    def reported(self, pid: int, loaded_ns: int, applied: bool) -> None:
        self.serving[pid] = (loaded_ns, applied)

    def gone(self, pid: int) -> None:
        self.serving.pop(pid, None)

    def reloading(self, now_ns: int) -> list[str] | None:
        """A SIGHUP is being passed on at ``now_ns``: RELOADING=1 (Type=notify-reload). Before
        the start is announced nothing is sent, and the start's READY=1 waits for this reload
        too; while stopping, nothing."""
        if self.stopping_mode is not None:
            return None
        self.since = now_ns
        if not self.announced:
            return None
        return [
            "RELOADING=1",
            f"MONOTONIC_USEC={now_ns // 1000}",
            "STATUS=reloading configuration files",
        ]

    def stopping(self, mode: str) -> list[str] | None:
        """Shutdown in ``mode`` (smart, fast) begins: STOPPING=1, once per mode; a smart
        shutdown may turn fast, never the other way."""
        if self.stopping_mode == mode or self.stopping_mode == "fast":
            return None
        self.stopping_mode = mode
        self.since = None
        return ["STOPPING=1", f"STATUS=shutting down ({mode})"]

    def check(self, workers: Collection[int]) -> list[str] | None:
        """READY=1 once every one of ``count`` running ``workers`` serves a configuration read
        since ``since``."""
        if self.since is None or len(workers) < self.count:
            return None
        loads = [self.serving.get(pid) for pid in workers]
        if any(load is None or load[0] < self.since for load in loads):
            return None
        self.since = None
        status = f"accepting connections ({self.count} workers)"
        if not all(load is not None and load[1] for load in loads):
            status += "; configuration files not reloaded, see the log"
        fields = ["READY=1", f"STATUS={status}"]
        if not self.announced:
            self.announced = True
            fields.append(f"MAINPID={self.supervisor}")
        return fields


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
    channel: ReportChannel
    readiness: Readiness
    children: dict[int, int] = field(default_factory=dict)  # pid -> index
    stopping: signal.Signals | None = None
    deadline: float | None = None  # SIGKILL for whatever still runs after it
    reloads: int = 0  # SIGHUPs passed on

    def spawn(self, index: int) -> None:
        replay = self.reloads > 0
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            self.channel.in_worker()
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
            self.readiness.gone(pid)
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
        fields = self.readiness.stopping("smart" if sig == signal.SIGTERM else "fast")
        if fields is not None:
            systemd.notify(*fields)
        self.stopping = sig
        self.deadline = self.deadline or time.monotonic() + STOP_GRACE
        for slot in self.slots:
            slot.due = None
        self.forward(sig)

    def reload(self) -> None:
        """SIGHUP: announce the reload, then pass it on (in that order: a worker's report of
        the new configuration must come after the time the reload is measured from)."""
        self.reloads += 1
        logs.reopen()  # the supervisor's own lines: log files reopened (logrotate)
        fields = self.readiness.reloading(_now_ns())
        if fields is not None:
            systemd.notify(*fields)
        self.forward(signal.SIGHUP)

    def collect_reports(self) -> None:
        for pid, loaded_ns, applied in self.channel.receive():
            if pid in self.children:
                self.readiness.reported(pid, loaded_ns, applied)
        fields = self.readiness.check(self.children)
        if fields is not None:
            systemd.notify(*fields)

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


def supervise(count: int, run_worker: Callable[[int], int], channel: ReportChannel) -> int:
    """Fork ``count`` workers running ``run_worker(index)`` (which report on ``channel``);
    returns when all have stopped."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    readiness = Readiness(count, os.getpid())
    sup = _Supervisor(run_worker, [_Slot() for _ in range(count)], channel, readiness)
    for index in range(count):
        sup.spawn(index)
    while sup.running():
        info = signal.sigtimedwait(_SIGNALS, sup.wait_seconds())
        if sup.deadline is not None and time.monotonic() > sup.deadline:
            sup.forward(signal.SIGKILL)
        if info is None or info.si_signo == signal.SIGCHLD:
            sup.reap()
        elif info.si_signo == signal.SIGHUP:
            sup.reload()
        elif info.si_signo != signal.SIGIO:
            sup.stop(signal.Signals(info.si_signo))
        sup.collect_reports()  # on every wake-up: a SIGIO may stand for several reports
        if sup.stopping is None:
            sup.start_due()
    channel.close()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    return 0
