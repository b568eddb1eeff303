"""The embedded cluster's postmaster dies: pggate logs it, restarts it with backoff, and answers
clients meanwhile as PostgreSQL does while starting up (57P03), in one process and with workers.

To hold the cluster down long enough to see pggate's own answer (PostgreSQL's start-up takes
well under a second), the test hides ``PG_VERSION`` before killing the postmaster: every restart
attempt then fails until it is put back, which also shows the retries and their log lines.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from conftest import free_port, login_error, start_gateway

pytestmark = pytest.mark.integration


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A temp dir the unprivileged cluster user can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="pggate-restart-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def select_one(port: int) -> object:
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable"
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute("select 1").fetchone()
    return row[0] if row else None


@pytest.mark.parametrize("workers", [1, 2])
def test_dead_postmaster_is_restarted_and_clients_get_57p03_meanwhile(
    public_tmp: Path, workers: int
) -> None:
    directory = public_tmp / "gate"
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
        conf.write(f"workers = {workers}\nssl = off\n")
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
