"""workers = N: processes sharing the port, cancel across workers, restart of a dead worker."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import psycopg
import pytest
from conftest import GatewayFactory

pytestmark = pytest.mark.integration


def worker_pids(log: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"worker \d+ started \(PID (\d+)\)", log)]


def test_two_workers_serve_cancel_and_restart(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(conf="workers = 2\n")
    gateway.wait_for_log("started (PID", count=2)
    served_by = set()
    for _ in range(30):
        with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
            served_by.add(conn.info.backend_pid & 63)  # pggate's PID names its worker
    assert served_by == {0, 1}

    # Cancels land on either worker; each must reach the owner of the session.
    for _ in range(6):
        with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
            timer = threading.Timer(0.3, conn.cancel_safe)
            timer.start()
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("select pg_sleep(20)")
            timer.join()

    first = worker_pids(gateway.log())[0]
    os.kill(first, signal.SIGKILL)
    gateway.wait_for_log("restarting it")
    gateway.wait_for_log("started (PID", count=3)
    deadline = time.monotonic() + 10
    while True:
        try:
            with psycopg.connect(gateway.dsn()) as conn:
                assert conn.execute("select 2").fetchone() == (2,)
            break
        except psycopg.OperationalError:
            assert time.monotonic() < deadline
    assert gateway.stop(signal.SIGTERM) == 0
    for pid in worker_pids(gateway.log()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
