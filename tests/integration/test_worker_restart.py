"""workers = 2, one worker killed with SIGKILL under load (issue 12): only its sessions end, it
is running again within 1 s, the other worker's sessions and cancels are unaffected, and the
new worker serves with the configuration in force (the last one reloaded), not the one pggate
started with."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from dataclasses import dataclass

import psutil
import psycopg
import pytest
from conftest import DEFAULT_HBA, Gateway, GatewayFactory

from pggate.server import workers

pytestmark = pytest.mark.integration

RESTART_LIMIT = 1.0  # seconds from the kill until a new worker process runs (issue 12)
READY = "pggate is ready to accept connections"


def worker_pids(gateway: Gateway) -> dict[int, int]:
    """Worker index -> PID of its latest start, from the supervisor's log lines."""
    found = re.findall(r"worker (\d+) started \(PID (\d+)\)", gateway.log())
    return {int(index): int(pid) for index, pid in found}


def sessions_on_both(gateway: Gateway, each: int) -> dict[int, list[psycopg.Connection]]:
    """At least ``each`` open sessions per worker (the kernel picks the worker per connection;
    the low bits of the PID in BackendKeyData name it)."""
    by_worker: dict[int, list[psycopg.Connection]] = {0: [], 1: []}
    for _ in range(200):
        if all(len(conns) >= each for conns in by_worker.values()):
            return by_worker
        conn = psycopg.connect(gateway.dsn(), autocommit=True)
        by_worker[workers.worker_of_pid(conn.info.backend_pid)].append(conn)
    raise AssertionError(f"sessions per worker: { {k: len(v) for k, v in by_worker.items()} }")


def wait_new_child(supervisor: int, before: set[int], limit: float) -> float:
    """Seconds until a child of ``supervisor`` not in ``before`` runs (fails after ``limit``)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        children = {p.pid for p in psutil.Process(supervisor).children()}
        if children - before:
            return time.monotonic() - start
        time.sleep(0.005)
    raise AssertionError(f"no new worker process within {limit} s")


@dataclass
class QueryLoop:
    """``select 1`` in a loop on one session, in a thread, until stopped."""

    conn: psycopg.Connection
    queries: int = 0
    error: Exception | None = None

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.conn.execute("select 1")
                self.queries += 1
        except Exception as exc:  # the test asserts there was none
            self.error = exc


def refusal(dsn: str) -> str:
    """The error of a login expected to fail ("logged in" when it did not)."""
    try:
        psycopg.connect(dsn).close()
    except psycopg.OperationalError as exc:
        return str(exc)
    return "logged in"


def cancel_long_query(conn: psycopg.Connection) -> float:
    """``select pg_sleep(30)`` cancelled after 0.3 s through pggate; returns how long it ran."""
    timer = threading.Timer(0.3, conn.cancel_safe)
    start = time.monotonic()
    timer.start()
    try:
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("select pg_sleep(30)")
    finally:
        timer.join()
    return time.monotonic() - start


def test_killed_worker_only_loses_its_sessions(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(conf="workers = 2\n")
    gateway.wait_for_log(READY, count=2)
    by_worker = sessions_on_both(gateway, 3)
    try:
        check_kill_under_load(gateway, by_worker)
    finally:
        for conn in by_worker[0] + by_worker[1]:
            conn.close()
    assert gateway.log().count("restarting it") == 1
    assert gateway.stop(signal.SIGTERM) == 0


def check_kill_under_load(gateway: Gateway, by_worker: dict[int, list[psycopg.Connection]]) -> None:
    """Kill worker 0 while a session of worker 1 runs queries; see the module docstring."""
    victim, survivor = 0, 1
    supervisor = gateway.process.pid
    before = {p.pid for p in psutil.Process(supervisor).children()}
    pids = worker_pids(gateway)
    assert set(pids.values()) == before
    backends = [c.execute("select pg_backend_pid()").fetchone() for c in by_worker[survivor]]
    busy = QueryLoop(by_worker[survivor][0])  # a survivor under load across the kill
    stop = threading.Event()
    thread = threading.Thread(target=busy.run, args=(stop,))
    thread.start()
    time.sleep(0.2)

    at_kill = busy.queries
    os.kill(pids[victim], signal.SIGKILL)
    try:
        assert wait_new_child(supervisor, before, RESTART_LIMIT) < RESTART_LIMIT
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    assert busy.error is None
    assert busy.queries > at_kill

    # The killed worker's sessions end: their client connection is closed.
    for conn in by_worker[victim]:
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    # The other worker's sessions go on, each on its own backend as before.
    assert [c.execute("select pg_backend_pid()").fetchone() for c in by_worker[survivor]] == (
        backends
    )
    # A cancel of a survivor's query works, whichever worker receives the CancelRequest.
    for conn in by_worker[survivor]:
        assert cancel_long_query(conn) < 10
        assert conn.execute("select 'after cancel'").fetchone() == ("after cancel",)

    gateway.wait_for_log(READY, count=3)
    assert worker_pids(gateway)[survivor] == pids[survivor]
    assert psutil.Process(pids[survivor]).is_running()
    served_by = set()
    for _ in range(40):
        with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
            served_by.add(workers.worker_of_pid(conn.info.backend_pid))
    assert served_by == {victim, survivor}  # the new worker serves too


def test_restarted_worker_serves_the_reloaded_configuration(
    make_gateway: GatewayFactory,
) -> None:
    """PostgreSQL forks each backend from a postmaster that has re-read pg_hba.conf on SIGHUP;
    a restarted worker must likewise refuse what the reloaded pg_hba.conf refuses."""
    gateway = make_gateway(conf="workers = 2\n")
    gateway.wait_for_log(READY, count=2)
    gateway.write_hba("host all alice 127.0.0.1/32 reject\n" + DEFAULT_HBA)
    gateway.process.send_signal(signal.SIGHUP)
    gateway.wait_for_log("configuration files reloaded", count=2)  # one line per worker

    os.kill(worker_pids(gateway)[0], signal.SIGKILL)
    gateway.wait_for_log(READY, count=3)
    served_by = set()
    for _ in range(40):
        assert "pg_hba.conf rejects connection" in refusal(gateway.dsn(user="alice"))
        with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
            served_by.add(workers.worker_of_pid(conn.info.backend_pid))
    assert served_by == {0, 1}
    assert gateway.stop(signal.SIGTERM) == 0


def test_crash_loop_backs_off_without_blocking_the_supervisor(
    make_gateway: GatewayFactory,
) -> None:
    """A worker killed again right after its restart waits (0.1 s, then 0.2 s, ...), while the
    supervisor keeps restarting the other worker at once and still stops on SIGTERM."""
    gateway = make_gateway(conf="workers = 2\n")
    gateway.wait_for_log(READY, count=2)
    for kills in range(1, 4):
        os.kill(worker_pids(gateway)[0], signal.SIGKILL)
        gateway.wait_for_log(READY, count=2 + kills)
    assert "restarting it in 0.1 s" in gateway.log()
    assert "restarting it in 0.2 s" in gateway.log()
    supervisor = gateway.process.pid
    before = {p.pid for p in psutil.Process(supervisor).children()}
    os.kill(worker_pids(gateway)[1], signal.SIGKILL)  # its first death: at once
    assert wait_new_child(supervisor, before, RESTART_LIMIT) < RESTART_LIMIT
    gateway.wait_for_log(READY, count=6)
    with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert gateway.stop(signal.SIGTERM) == 0
