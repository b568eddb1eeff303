"""``ClusterWatchdog``: restart the embedded cluster when its postmaster dies.

PostgreSQL's postmaster restarts its own backends after one of them crashes, but nothing
restarts the postmaster: under pg_ctl or systemd that is the service manager's job. For the
embedded cluster pggate is that manager. A thread (blocking waits must not stall the event loop,
and in ``workers = N`` the supervisor has no event loop) polls the postmaster; when it is gone
without pggate having asked, the thread logs it and starts the cluster again, with a growing
pause between failed attempts (orphaned backends can hold the old shared memory for a moment,
and a cluster that cannot start must not be retried in a tight loop).

While the cluster is down, every worker answers new clients as PostgreSQL does while it starts
up: FATAL 57P03 ``the database system is starting up`` rather than "could not connect" (the
login machine does so whenever the embedded cluster cannot be reached: it is pggate's own, so
it is down only while this thread brings it back, or while pggate itself stops).
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from pggate.embedded.cluster import EmbeddedCluster
from pggate.errors import PggateError

log = logging.getLogger("pggate.embedded")

POLL_INTERVAL = 0.1  # seconds between looks at the postmaster
FIRST_PAUSE = 0.5  # seconds before the second attempt, doubled after each failure
LONGEST_PAUSE = 30.0
STABLE_AFTER = 30.0  # a cluster that ran this long starts again at FIRST_PAUSE
_SIGNALS = {signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT}


class ClusterWatchdog:
    """Watches one started cluster from a thread; :meth:`stop` before stopping the cluster."""

    def __init__(self, cluster: EmbeddedCluster) -> None:
        self.cluster = cluster
        self.restarts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # Signals stay with the main thread (the supervisor waits for them with sigtimedwait;
        # the event loop's handlers run there anyway): the new thread inherits a blocked mask.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            self._thread = threading.Thread(
                target=self._watch, name="pggate-cluster-watchdog", daemon=True
            )
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def stop(self) -> None:
        """No more restarts: pggate is about to stop the cluster itself."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _watch(self) -> None:
        pause = FIRST_PAUSE
        started = time.monotonic()
        while not self._stop.wait(POLL_INTERVAL):
            if self.cluster.is_running():
                continue
            if time.monotonic() - started >= STABLE_AFTER:
                pause = FIRST_PAUSE
            log.error(
                "embedded PostgreSQL has stopped unexpectedly (see %s); restarting it",
                self.cluster.log_path,
            )
            while not self._stop.is_set():
                try:
                    self.cluster.start()
                except PggateError as exc:
                    log.error(
                        "could not restart embedded PostgreSQL: %s; next attempt in %.1f s",
                        exc,
                        pause,
                    )
                    if self._stop.wait(pause):
                        return
                    pause = min(pause * 2, LONGEST_PAUSE)
                    continue
                self.restarts += 1
                started = time.monotonic()
                log.info("embedded PostgreSQL restarted")
                break
