"""The embedded cluster's postmaster dies: pggate logs it, restarts it with backoff, and answers
clients meanwhile as PostgreSQL does while starting up (57P03), in one process and with workers.

To hold the cluster down long enough to see pggate's own answer (PostgreSQL's start-up takes
well under a second), the test hides ``PG_VERSION`` before killing the postmaster: every restart
attempt then fails until it is put back, which also shows the retries and their log lines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest
from conftest import free_port, login_error, start_gateway
from psycopg import pq

pytestmark = pytest.mark.integration


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def select_one(port: int) -> object:
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable"
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute("select 1").fetchone()
    return row[0] if row else None


def init_embedded(directory: Path, settings: str) -> int:
    """``pggate init`` (embedded cluster) plus ``settings``; returns the port."""
    port = free_port()
    command = ["init", str(directory), "--port", str(port), "--listen-addresses", "127.0.0.1"]
    init = subprocess.run(
        [sys.executable, "-m", "pggate", *command],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert init.returncode == 0, init.stderr
    with (directory / "pggate.conf").open("a") as conf:
        conf.write(settings)
    return port


@pytest.mark.parametrize("workers", [1, 2])
def test_dead_postmaster_is_restarted_and_clients_get_57p03_meanwhile(
    public_tmp: Path, workers: int
) -> None:
    directory = public_tmp / "gate"
    port = init_embedded(directory, f"workers = {workers}\nssl = off\n")
    data = directory / "pgdata"
    gateway = start_gateway(directory, port=port, timeout=120)
    try:
        dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable"
        survivor = psycopg.connect(dsn, autocommit=True)
        assert survivor.execute("select 1").fetchone() == (1,)
        old = postmaster_pid(data)

        (data / "PG_VERSION").rename(data / "PG_VERSION.hidden")
        os.kill(old, signal.SIGKILL)
        gateway.wait_for_log("embedded PostgreSQL has stopped unexpectedly")
        gateway.wait_for_log("could not restart embedded PostgreSQL", timeout=20)

        # pggate's own answer while its cluster is down: PostgreSQL's, not "could not connect".
        sqlstate, message = login_error(port)
        assert (sqlstate, message) == ("57P03", "the database system is starting up")
        # The session whose backend lost its postmaster ends; it does not hang.
        with pytest.raises(psycopg.OperationalError):
            survivor.execute("select 1")
        survivor.close()

        (data / "PG_VERSION.hidden").rename(data / "PG_VERSION")
        gateway.wait_for_log("embedded PostgreSQL restarted", timeout=60)
        assert select_one(port) == 1
        new = postmaster_pid(data)
        assert new != old and psutil.pid_exists(new)
        log = gateway.log()
        assert log.count("embedded PostgreSQL has stopped unexpectedly") == 1
        attempts = log.count("could not restart embedded PostgreSQL")
        assert attempts >= 1
        # backoff: the attempts are spaced, not a tight loop (0.5 s, 1 s, 2 s, ...)
        assert attempts < 10, log
    finally:
        code = gateway.stop(signal.SIGTERM)
    assert code == 0, gateway.log()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (data / "postmaster.pid").exists():
        time.sleep(0.1)
    assert not (data / "postmaster.pid").exists(), gateway.log()


def test_sessions_whose_backend_vanished_end_with_an_error_response(public_tmp: Path) -> None:
    """kill -9 of one backend (PostgreSQL then ends every other backend with only a WARNING):
    each session ends with FATAL 08006 from pggate, over TLS and plain alike; a backend that
    says its word (pg_terminate_backend) has that relayed, with nothing added. libpq has a
    SQLSTATE only for an ErrorResponse it received, never for a bare close."""
    directory = public_tmp / "gate"
    port = init_embedded(directory, "")  # TLS on, as pggate init makes it
    gateway = start_gateway(directory, port=port, timeout=120)
    try:
        sessions = [
            psycopg.connect(
                f"host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode={mode}",
                autocommit=True,
            )
            for mode in ("require", "require", "disable", "disable", "disable")
        ]
        victim, tls_bystander, bystander, terminated, admin = sessions
        assert tls_bystander.pgconn.ssl_in_use and not bystander.pgconn.ssl_in_use
        # (info.backend_pid is pggate's own key, not the backend's process)
        target, killed = (
            c.execute("select pg_backend_pid()").fetchone() for c in (terminated, victim)
        )
        assert target is not None and killed is not None
        for conn in sessions[:4]:  # each waits for its result when the end comes
            conn.pgconn.send_query(b"select pg_sleep(60)")
        admin.execute("select pg_terminate_backend(%s, 5000)", target)
        os.kill(killed[0], signal.SIGKILL)
        outcomes = []
        for conn in sessions[:4]:
            result = conn.pgconn.get_result()
            assert result is not None and result.status == pq.ExecStatus.FATAL_ERROR
            fields = (pq.DiagnosticField.SQLSTATE, pq.DiagnosticField.MESSAGE_PRIMARY)
            outcomes.append(tuple((result.error_field(f) or b"").decode() for f in fields))
        for conn in sessions:
            conn.close()
        # PostgreSQL reinitializes after the crash; new sessions work again.
        deadline = time.monotonic() + 60
        while True:
            try:
                assert select_one(port) == 1
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        gateway.stop(signal.SIGINT)
    gone = ("08006", "server closed the connection unexpectedly")
    shutdown = ("57P01", "terminating connection due to administrator command")
    assert outcomes == [gone, gone, gone, shutdown]
