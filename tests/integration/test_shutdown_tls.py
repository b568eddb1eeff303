"""Shutdown ends TLS sessions as PostgreSQL does: close_notify before the socket closes.

A raw TLS client (an ``ssl`` socket that does not excuse a bare TCP close) logged in through
pggate reads, after a fast shutdown (SIGINT), FATAL 57P01 and then close_notify, and after a
smart shutdown (SIGTERM) whose grace period runs out, close_notify alone. A session still in
authentication gets close_notify too. psql (libpq 15) reports a fast shutdown exactly as
it reports PostgreSQL 15's own, which sends close_notify after its FATAL (be_tls_close).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import DEBIAN_PG_BINDIR, Backend, Gateway, GatewayFactory
from reference import TcpCluster, owned_copy, reference_server
from tls_support import client_context, error_fields, read_message, startup

from pggate.proto import codec, codes
from pggate.tls import certs

pytestmark = pytest.mark.integration

HBA = "hostssl all all 127.0.0.1/32 trust\n"
CLOSE_NOTIFY = "close_notify"
GRACE_SECONDS = 1.0
SLEEP_SQL = "select pg_sleep(60) /* shutdown_tls */"


def tls_gateway(make_gateway: GatewayFactory, hba: str = HBA) -> Gateway:
    """A gateway with ssl = on and a certificate from pggate's own CA (as ``init`` makes)."""
    return make_gateway(
        hba=hba, conf="ssl = on\n", setup=lambda directory: certs.init_tls(directory, [])
    )


@pytest.fixture
def short_grace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pggate processes started from now on close sessions GRACE_SECONDS after SIGTERM (not
    60 s): the constant is set in the child at interpreter start (sitecustomize)."""
    site = tmp_path / "short-grace"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f"from pggate.server import listener\nlistener.SMART_SHUTDOWN_SECONDS = {GRACE_SECONDS}\n"
    )
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), path])))


def tls_connect(port: int) -> ssl.SSLSocket:
    """SSLRequest, then TLS; a bare TCP close will raise SSLEOFError, not read as the end."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(codec.ssl_request())
    assert raw.recv(1) == codes.SSL_ACCEPT
    return client_context().wrap_socket(raw, suppress_ragged_eofs=False)


def log_in(port: int) -> ssl.SSLSocket:
    """A TLS session in the relay phase (ReadyForQuery received)."""
    tls = tls_connect(port)
    tls.sendall(startup(user="postgres", database="postgres"))
    while read_message(tls)[0] != codes.MSG_READY_FOR_QUERY:
        pass
    return tls


def read_to_end(tls: ssl.SSLSocket, timeout: float = 30.0) -> tuple[bytes, str]:
    """Everything until the connection ends, and how it ended: close_notify, or the error."""
    tls.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = tls.recv(65536)
        except ssl.SSLZeroReturnError:
            return data, CLOSE_NOTIFY
        except OSError as exc:  # SSLEOFError: "EOF occurred in violation of protocol"
            return data, repr(exc)
        if not chunk:  # with suppress_ragged_eofs=False only close_notify reads as b""
            return data, CLOSE_NOTIFY
        data += chunk


def test_fast_shutdown_sends_fatal_then_close_notify(make_gateway: GatewayFactory) -> None:
    gateway = tls_gateway(make_gateway)
    tls = log_in(gateway.port)
    gateway.process.send_signal(signal.SIGINT)
    data, ending = read_to_end(tls)
    tls.close()
    assert ending == CLOSE_NOTIFY
    kind, body = data[:1], data[5:]
    assert kind == codes.MSG_ERROR_RESPONSE, data
    fields = error_fields(body)
    assert (fields["S"], fields["C"]) == ("FATAL", codes.SQLSTATE_ADMIN_SHUTDOWN)
    assert fields["M"] == "terminating connection due to administrator command"
    assert gateway.process.wait(timeout=30) == 0


@pytest.mark.usefixtures("short_grace")
def test_smart_shutdown_closes_with_close_notify_after_the_grace(
    make_gateway: GatewayFactory,
) -> None:
    gateway = tls_gateway(make_gateway)
    tls = log_in(gateway.port)
    gateway.process.send_signal(signal.SIGTERM)
    gateway.wait_for_log("received smart shutdown request")
    started = time.monotonic()
    data, ending = read_to_end(tls)
    tls.close()
    assert (data, ending) == (b"", CLOSE_NOTIFY)
    assert time.monotonic() - started >= GRACE_SECONDS / 2  # the session lived on until then
    assert gateway.process.wait(timeout=30) == 0
    assert "closing them" in gateway.log()


def test_fast_shutdown_during_authentication_sends_close_notify(
    make_gateway: GatewayFactory,
) -> None:
    gateway = tls_gateway(make_gateway, "hostssl all all 127.0.0.1/32 scram-sha-256\n")
    tls = tls_connect(gateway.port)
    tls.sendall(startup(user="alice", database="postgres"))
    assert read_message(tls)[0] == codes.MSG_AUTHENTICATION  # pggate waits for the password
    gateway.process.send_signal(signal.SIGINT)
    assert read_to_end(tls)[1] == CLOSE_NOTIFY
    tls.close()
    assert gateway.process.wait(timeout=30) == 0


# --- psql against PostgreSQL 15 and against pggate --------------------------------------------


def wait_for_sleeper(conninfo: str, timeout: float = 30.0) -> None:
    """Until psql's query runs on the server behind ``conninfo``."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "select count(*) from pg_stat_activity where query = %s and state = 'active'",
                (SLEEP_SQL,),
            ).fetchone()
            if row == (1,):
                return
            time.sleep(0.05)
    raise TimeoutError("psql's query never started")


def psql_during_shutdown(port: int, server_conninfo: str, stop: Callable[[], None]) -> str:
    """psql's stderr when ``stop`` shuts the server down in the middle of its query."""
    psql = subprocess.Popen(
        [
            "psql",
            f"host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=require",
            "-XAtc",
            SLEEP_SQL,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_sleeper(server_conninfo)
        stop()
        _, err = psql.communicate(timeout=60)
    finally:
        if psql.poll() is None:
            psql.kill()
            psql.wait()
    return err


@pytest.fixture
def postgres15_psql_report(tmp_path: Path) -> Iterator[str]:
    if not (DEBIAN_PG_BINDIR / "postgres").exists():
        pytest.skip("Debian's PostgreSQL 15 (built with OpenSSL) is not installed")
    pki = tmp_path / "pki"
    pki.mkdir()
    certs.init_tls(pki, [])

    def install_tls(cluster: TcpCluster, base: Path) -> str:
        for name in ("server.crt", "server.key"):
            owned_copy(pki / name, cluster.data_dir / name, cluster.run_as)
        return "ssl = on\n"

    with reference_server(DEBIAN_PG_BINDIR, hba=HBA, prepare=install_tls) as cluster:
        yield psql_during_shutdown(cluster.port, cluster.conninfo, cluster.stop)


def test_psql_reports_a_fast_shutdown_as_against_postgresql(
    make_gateway: GatewayFactory, backend: Backend, postgres15_psql_report: str
) -> None:
    gateway = tls_gateway(make_gateway)
    through_pggate = psql_during_shutdown(
        gateway.port, backend.conninfo, lambda: gateway.process.send_signal(signal.SIGINT)
    )
    assert through_pggate == postgres15_psql_report
    assert "terminating connection due to administrator command" in through_pggate
    assert gateway.process.wait(timeout=30) == 0
