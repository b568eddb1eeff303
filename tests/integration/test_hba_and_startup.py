"""pg_hba.conf decisions, startup-packet abuse, limits and reload, seen from real clients."""

from __future__ import annotations

import re
import socket
import struct
import time

import psycopg
import pytest
from conftest import (
    Gateway,
    GatewayFactory,
    free_port,
    login_error,
    read_all,
    startup_packet,
)

pytestmark = pytest.mark.integration

READY_IDLE = b"Z\x00\x00\x00\x05I"


def raw_exchange(port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout) as sock:
        sock.sendall(payload)
        return read_all(sock, timeout)


def read_until_ready(sock: socket.socket) -> bytes:
    """What the server sends up to its first ReadyForQuery (idle), which must come."""
    reply = read_all(sock, until=READY_IDLE)
    assert READY_IDLE in reply, reply
    return reply


def assert_still_serving(gateway: Gateway) -> None:
    with psycopg.connect(gateway.dsn()) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_no_matching_line_gives_postgresql_text(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(hba="host all alice 127.0.0.1/32 trust\n")
    assert login_error(gateway.port, user="bob", database="appdb") == (
        "28000",
        'no pg_hba.conf entry for host "127.0.0.1", user "bob", database "appdb", no encryption',
    )
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry for host"):
        psycopg.connect(gateway.dsn(user="bob", dbname="appdb"))
    with psycopg.connect(gateway.dsn(user="alice", dbname="appdb")) as conn:
        assert conn.execute("select current_user").fetchone() == ("alice",)


def test_reject_line_and_first_match_wins(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(
        hba="""\
        host appdb alice 127.0.0.1/32 reject
        host all   all   127.0.0.1/32 trust
        """
    )
    assert login_error(gateway.port, user="alice", database="appdb") == (
        "28000",
        'pg_hba.conf rejects connection for host "127.0.0.1", user "alice", database "appdb", '
        "no encryption",
    )
    with psycopg.connect(gateway.dsn(user="alice", dbname="postgres")):
        pass
    assert "Connection matched file" in gateway.log()


def test_hostssl_line_never_matches_plaintext(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(hba="hostssl all all 127.0.0.1/32 trust\n")
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        psycopg.connect(gateway.dsn())
    assert "hostssl record cannot match because SSL is disabled" in gateway.log()


def test_role_membership_is_looked_up_in_the_backend(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(
        hba="""\
        host all +staff     127.0.0.1/32 trust
        host samerole all   127.0.0.1/32 trust
        host postgres postgres 127.0.0.1/32 trust
        """
    )
    with psycopg.connect(gateway.dsn(user="bob", dbname="appdb")) as conn:  # bob is in staff
        assert conn.execute("select current_user").fetchone() == ("bob",)
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
        psycopg.connect(gateway.dsn(user="alice", dbname="appdb"))
    with psycopg.connect(gateway.dsn(user="bob", dbname="staff")):  # samerole
        pass


def test_method_not_in_this_build_is_refused_by_name(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(hba="host all all 127.0.0.1/32 pam\n")
    sqlstate, message = login_error(gateway.port)
    assert sqlstate == "28000"
    assert 'authentication method "pam"' in message


def test_reload_applies_new_hba_and_keeps_sessions(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway()
    with psycopg.connect(gateway.dsn(user="alice")) as kept:
        gateway.write_hba("host all bob 127.0.0.1/32 trust\n")
        gateway.reload()
        with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
            psycopg.connect(gateway.dsn(user="alice"))
        with psycopg.connect(gateway.dsn(user="bob")):
            pass
        assert kept.execute("select current_user").fetchone() == ("alice",)


def test_broken_hba_on_reload_keeps_the_old_rules(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway()
    gateway.write_hba("host all all 127.0.0.1/32 trust\nhost all all nonsense/99 trust\n")
    gateway.reload(expect="were not reloaded")
    assert "line 2 of configuration file" in gateway.log()
    assert_still_serving(gateway)


def test_garbage_and_truncated_packets_do_not_disturb_others(gateway: Gateway) -> None:
    # bad length: PostgreSQL closes without a word
    assert raw_exchange(gateway.port, struct.pack("!I", 3)) == b""
    assert raw_exchange(gateway.port, struct.pack("!I", 20000) + b"x" * 100, timeout=5) == b""
    # truncated startup packet then EOF
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(startup_packet(user="postgres")[:10])
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == b""
    # random junk
    assert raw_exchange(gateway.port, b"\x00\x00\x00\x10" + b"\xff" * 12)[:1] in (b"", b"E")
    # a client that stays in the middle of a packet does not block anyone
    with socket.create_connection(("127.0.0.1", gateway.port)) as stuck:
        stuck.sendall(b"\x00\x00")
        assert_still_serving(gateway)
    assert_still_serving(gateway)


def test_unsupported_protocol_version(gateway: Gateway) -> None:
    reply = raw_exchange(gateway.port, startup_packet(version=(4 << 16), user="postgres"))
    assert reply[:1] == b"E"
    assert b"C0A000" in reply
    assert b"unsupported frontend protocol 4.0: server supports 3.0 to 3.2" in reply
    v2 = raw_exchange(gateway.port, startup_packet(version=(2 << 16), user="postgres"))
    assert v2 == b"EFATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.2\n\0"


def test_missing_user_name(gateway: Gateway) -> None:
    reply = raw_exchange(gateway.port, startup_packet(database="postgres"))
    assert b"C28000" in reply
    assert b"no PostgreSQL user name specified in startup packet" in reply


def test_ssl_and_gss_requests_answered_n_then_plaintext_works(gateway: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), 10) as sock:
        sock.sendall(struct.pack("!II", 8, 80877104))  # GSSENCRequest
        assert sock.recv(1) == b"N"
        sock.sendall(struct.pack("!II", 8, 80877103))  # SSLRequest
        assert sock.recv(1) == b"N"
        sock.sendall(startup_packet(user="postgres", database="postgres"))
        reply = read_until_ready(sock)
        assert reply.startswith(b"R\x00\x00\x00\x08\x00\x00\x00\x00")


def test_repeated_ssl_request_is_an_unsupported_protocol(gateway: Gateway) -> None:
    ssl_request = struct.pack("!II", 8, 80877103)
    with socket.create_connection(("127.0.0.1", gateway.port), 10) as sock:
        sock.sendall(ssl_request)
        assert sock.recv(1) == b"N"
        sock.sendall(ssl_request)
        reply = read_all(sock)
    assert b"unsupported frontend protocol 1234.5679: server supports 3.0 to 3.2" in reply


def test_unencrypted_data_after_ssl_request(gateway: Gateway) -> None:
    reply = raw_exchange(
        gateway.port, struct.pack("!II", 8, 80877103) + startup_packet(user="postgres")
    )
    assert reply[:1] == b"N"
    assert b"C08P01" in reply
    assert b"received unencrypted data after SSL request" in reply


def test_protocol_3_2_negotiation_and_long_cancel_key(gateway: Gateway) -> None:
    version = (3 << 16) | 3
    with socket.create_connection(("127.0.0.1", gateway.port), 10) as sock:
        sock.sendall(startup_packet(version=version, user="postgres", **{"_pq_.x": "1"}))
        reply = read_until_ready(sock)
    assert reply.startswith(b"v" + struct.pack("!III", 19, (3 << 16) | 2, 1) + b"_pq_.x\0")
    key_at = reply.index(b"K")
    (length,) = struct.unpack("!I", reply[key_at + 1 : key_at + 5])
    assert length == 4 + 4 + 32  # PostgreSQL 18 gives 3.2 clients 32-byte cancel keys


def test_cancel_request_with_a_wrong_key_is_ignored(gateway: Gateway) -> None:
    with psycopg.connect(gateway.dsn()) as conn:
        pid = conn.info.backend_pid
        bogus = struct.pack("!IIII", 16, 80877102, pid, 12345)
        assert raw_exchange(gateway.port, bogus) == b""
        assert conn.execute("select 1").fetchone() == (1,)


def test_max_connections(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(conf="max_connections = 2\n")
    first = psycopg.connect(gateway.dsn())
    second = psycopg.connect(gateway.dsn())
    try:
        assert login_error(gateway.port) == ("53300", "sorry, too many clients already")
    finally:
        first.close()
        second.close()
    deadline = time.monotonic() + 10
    while True:  # the slots are given back as the sessions close
        try:
            psycopg.connect(gateway.dsn()).close()
            break
        except psycopg.OperationalError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_authentication_timeout_closes_silent_clients(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(conf="authentication_timeout = 1\n")
    with socket.create_connection(("127.0.0.1", gateway.port), 10) as sock:
        started = time.monotonic()
        assert read_all(sock, timeout=10) == b""
        assert time.monotonic() - started < 5
    assert_still_serving(gateway)


def test_backend_unreachable_gives_08006(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(conf=f"backend = 'host=127.0.0.1 port={free_port()} sslmode=disable'\n")
    sqlstate, _ = login_error(gateway.port)
    assert sqlstate == "08006"
    with pytest.raises(psycopg.OperationalError):  # and again: the gateway is still up
        psycopg.connect(gateway.dsn())
    assert gateway.process.poll() is None


def test_connection_and_disconnection_log_lines(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(conf="log_disconnections = on\n")
    with psycopg.connect(gateway.dsn(user="alice", application_name="logcheck")):
        pass
    gateway.wait_for_log("disconnection: session time:")
    log = gateway.log()
    assert "connection received: host=127.0.0.1 port=" in log
    assert 'connection authenticated: user="alice" method=trust (' in log
    assert "connection authorized: user=alice database=postgres application_name=logcheck" in log
    assert re.search(
        r"disconnection: session time: 0:00:\d\d\.\d{3} user=alice database=postgres "
        r"host=127\.0\.0\.1 port=\d+",
        log,
    )
