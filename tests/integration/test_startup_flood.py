"""A pre-authentication flood (slowloris) against a running pggate (issue 12, scenario 2).

Connections that never authenticate have their own bound, ``max_startup_connections``: when it
is full, the one that has waited longest is closed to make room. Only authenticated sessions
count against ``max_connections``. So a flood of silent and trickling connections can neither
lock real clients out (PostgreSQL itself can be) nor make pggate run out of descriptors, and
never touches established sessions.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import (
    Gateway,
    GatewayFactory,
    login_error,
    prepare_gateway_dir,
    read_all,
    startup_packet,
)

from pggate.proto import codec, codes
from pggate.tls import certs

pytestmark = pytest.mark.integration

BOUND = 50
IDLE = 200
TRICKLING = 20
CANARIES = 5
TLS_ONLY_HBA = "hostssl all all 127.0.0.1/32 trust\n"
PASSWORD_FOR_ALICE = "host all alice 127.0.0.1/32 password\nhost all all 127.0.0.1/32 trust\n"
PASSWORD_REQUEST = codec.authentication_request(codes.AUTH_CLEARTEXT_PASSWORD)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


def closed_by_server(sock: socket.socket) -> bool:
    """Has pggate closed this connection (EOF or reset)? Never blocks."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
    if not poller.poll(0):
        return False
    try:
        data = sock.recv(1, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    assert data == b"", f"pggate said something to a silent client: {data!r}"
    return True


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.contextmanager
def trickling(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that send a StartupMessage one byte a second (it never ends
    within the test)."""
    packet = startup_packet(user="postgres", database="postgres")
    socks = [socket.create_connection(("127.0.0.1", port), 5) for _ in range(count)]
    stop = threading.Event()

    def drip() -> None:
        for index in range(len(packet)):
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.sendall(packet[index : index + 1])
            if stop.wait(1.0):
                return

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        yield socks
    finally:
        stop.set()
        thread.join(5)
        for sock in socks:
            sock.close()


def canary(gateway: Gateway) -> float:
    """A TLS login and ``select 1``; returns how long it took."""
    started = time.monotonic()
    with psycopg.connect(
        gateway.dsn(sslmode="require", gssencmode="disable", connect_timeout="5"),
        autocommit=True,
    ) as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("select 1").fetchone() == (1,)
    return time.monotonic() - started


def tls_setup(directory: Path) -> None:
    certs.init_tls(directory, [])


def test_flood_closes_the_oldest_unauthenticated_and_never_a_session(
    make_gateway: GatewayFactory,
) -> None:
    gateway = make_gateway(
        hba=TLS_ONLY_HBA,
        conf=f"ssl = on\nmax_startup_connections = {BOUND}\nmax_connections = 3\n",
        setup=tls_setup,
    )
    pid = gateway.process.pid
    dsn = gateway.dsn(sslmode="require", gssencmode="disable")
    with (
        psycopg.connect(dsn, autocommit=True) as first,
        psycopg.connect(dsn, autocommit=True) as second,
    ):
        before = open_descriptors(pid)
        idle = [socket.create_connection(("127.0.0.1", gateway.port), 5) for _ in range(IDLE)]
        try:
            # Accepted in order: the first IDLE - BOUND are closed to make room, oldest first.
            wait_until(lambda: closed_by_server(idle[IDLE - BOUND - 1]), what="the flood")
            with trickling(gateway.port, TRICKLING) as trickle:
                wait_until(
                    lambda: closed_by_server(idle[IDLE - BOUND + TRICKLING - 1]),
                    what="the trickling connections to make room",
                )
                # A flood of connections cannot make pggate hold more than the bound.
                assert open_descriptors(pid) <= before + BOUND + 5
                times = [canary(gateway) for _ in range(CANARIES)]
                assert max(times) < 1.0, times
                # The first canary's connection was the one over the bound (it displaced the
                # oldest idle one) and left the bound once authenticated: BOUND - 1 remain,
                # the newest ones.
                survivors = BOUND - 1 - TRICKLING
                wait_until(lambda: closed_by_server(idle[IDLE - survivors - 1]))
                closed = [closed_by_server(sock) for sock in idle]
                assert closed == [True] * (IDLE - survivors) + [False] * survivors
                assert not any(closed_by_server(sock) for sock in trickle)
                # The sessions authenticated before the flood never noticed it.
                assert first.execute("select 1").fetchone() == (1,)
                assert second.execute("select 2").fetchone() == (2,)
        finally:
            for sock in idle:
                sock.close()
    log = gateway.log()
    # One line names a connection closed to make room; the rest of the flood is counted,
    # not logged one by one.
    assert log.count("closing connection from host=127.0.0.1") == 1, log
    assert "max_startup_connections (50) connections are awaiting authentication" in log


def authenticating(port: int) -> socket.socket:
    """A connection past its StartupMessage, asked for a password it never sends."""
    sock = socket.create_connection(("127.0.0.1", port), 5)
    sock.sendall(startup_packet(user="alice", database="postgres"))
    assert read_all(sock, until=PASSWORD_REQUEST) == PASSWORD_REQUEST
    return sock


def test_max_connections_counts_only_authenticated_sessions(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(
        hba=PASSWORD_FOR_ALICE,
        conf=f"max_startup_connections = {BOUND}\nmax_connections = 2\n",
    )
    # Connections still authenticating take no slot: more of them than max_connections wait
    # in the password exchange while two sessions log in.
    waiting = [authenticating(gateway.port) for _ in range(5)]
    try:
        first = psycopg.connect(gateway.dsn())
        second = psycopg.connect(gateway.dsn())
        try:
            # The sessions are full, the bound of unauthenticated ones is not: 53300 at once.
            started = time.monotonic()
            assert login_error(gateway.port) == ("53300", "sorry, too many clients already")
            assert time.monotonic() - started < 1.0
            assert not any(closed_by_server(sock) for sock in waiting)
        finally:
            first.close()
            second.close()
    finally:
        for sock in waiting:
            sock.close()
    # The slots are given back as the sessions close.
    wait_until(lambda: _logs_in(gateway), what="a free slot")


def test_settings_beyond_the_open_files_limit_refuse_to_start(tmp_path: Path) -> None:
    """Fail closed: with a hard limit of 4096 open files, 2 x 2000 connections awaiting
    authentication cannot fit, and serve says which parameter before it listens."""
    directory = tmp_path / "gw"
    port = prepare_gateway_dir(
        directory, "host=/nonexistent user=postgres", conf="max_startup_connections = 2000\n"
    )

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))

    result = subprocess.run(
        [sys.executable, "-m", "pggate", "serve", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=low_limit,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert (
        "FATAL:  max_startup_connections (2000) and max_connections (100) need more file "
        "descriptors than this process may open" in result.stderr
    )
    assert "DETAIL:  System allows 4096, pggate needs at least 5288" in result.stderr
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), 1):
        pass


def _logs_in(gateway: Gateway) -> bool:
    try:
        psycopg.connect(gateway.dsn()).close()
    except psycopg.OperationalError:
        return False
    return True
