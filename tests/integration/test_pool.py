"""pool_mode = session: backend connections reused per role/database/parameters, after reset."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time

import psycopg
import pytest
from conftest import Gateway, GatewayFactory

from pggate.proto.backend import LoginComplete
from pggate.server.inbox import InboxProtocol
from pggate.server.pool import BackendPool, pool_key, socket_quiet

pytestmark = pytest.mark.integration

POOLED = "pool_mode = session\n"


def backend_pid(gateway: Gateway, **options: str) -> int:
    with psycopg.connect(gateway.dsn(**options), autocommit=True) as conn:
        return int(conn.execute("select pg_backend_pid()").fetchone()[0])  # type: ignore[index]


def wait_for_reuse(gateway: Gateway, pid: int, **options: str) -> int:
    """The reset runs after the client has gone; poll until the backend is back in the pool."""
    deadline = time.monotonic() + 10
    while True:
        found = backend_pid(gateway, **options)
        if found == pid or time.monotonic() > deadline:
            return found


def test_backend_is_reused_and_reset(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(conf=POOLED)
    with psycopg.connect(gateway.dsn(user="alice"), autocommit=True) as conn:
        first = conn.execute("select pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        conn.execute("set work_mem = '1234kB'")
        conn.execute("create temp table scratch (x int)")
    with psycopg.connect(gateway.dsn(user="alice"), autocommit=True) as conn:
        deadline = time.monotonic() + 10
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        while pid != first and time.monotonic() < deadline:
            conn.close()
            conn = psycopg.connect(gateway.dsn(user="alice"), autocommit=True)
            pid = conn.execute("select pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        assert pid == first
        assert conn.execute("show work_mem").fetchone() == ("4MB",)
        assert conn.execute("select to_regclass('pg_temp.scratch')").fetchone() == (None,)
        conn.close()


def test_backend_is_never_shared_between_roles(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(conf=POOLED)
    alice = backend_pid(gateway, user="alice")
    assert wait_for_reuse(gateway, alice, user="alice") == alice
    assert backend_pid(gateway, user="bob") != alice
    with psycopg.connect(gateway.dsn(user="bob")) as conn:
        assert conn.execute("select current_user").fetchone() == ("bob",)


def test_client_leaving_inside_a_transaction_closes_the_backend(
    make_gateway: GatewayFactory,
) -> None:
    gateway = make_gateway(conf=POOLED)
    conn = psycopg.connect(gateway.dsn(user="alice"))
    pid = conn.execute("select pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    conn.close()  # psycopg sends Terminate while the transaction is still open
    assert backend_pid(gateway, user="alice") != pid


def test_without_pooling_every_client_gets_a_new_backend(gateway: Gateway) -> None:
    first = backend_pid(gateway)
    assert backend_pid(gateway) != first


def test_a_pooled_backend_that_died_is_never_handed_out(make_gateway: GatewayFactory) -> None:
    """pg_terminate_backend on an idle pooled backend (its FATAL and FIN are in flight): the
    next client gets a new, working backend, as after a crash restart of the whole cluster."""
    gateway = make_gateway(conf=POOLED)
    pooled = backend_pid(gateway, user="alice")
    assert wait_for_reuse(gateway, pooled, user="alice") == pooled
    with psycopg.connect(gateway.dsn(user="postgres"), autocommit=True) as admin:
        admin.execute("select pg_terminate_backend(%s, 5000)", [pooled])
    with psycopg.connect(gateway.dsn(user="alice"), autocommit=True) as conn:
        row = conn.execute("select pg_backend_pid(), current_user").fetchone()
    assert row is not None and row[0] != pooled and row[1] == "alice"


def test_socket_quiet_sees_a_hang_up_before_the_event_loop_does() -> None:
    """The peer closed, the loop has not run since: the protocol still says "open", the
    socket does not (what keeps a just-killed backend out of a client's hands)."""

    async def scenario() -> tuple[bool, bool, bool]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        transport, protocol = await loop.create_connection(InboxProtocol, sock=ours)
        quiet_before = socket_quiet(transport)
        theirs.close()
        seen_by_protocol = protocol.eof  # no loop turn yet
        quiet_after = socket_quiet(transport)
        transport.close()
        return quiet_before, seen_by_protocol, quiet_after

    assert asyncio.run(scenario()) == (True, False, False)


async def released_to_a_pool() -> tuple[BackendPool, socket.socket]:
    """A pool given one backend connection to reset, and the backend's end of it (a socket
    pair standing in for a server, so each test chooses its replies byte for byte)."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    pool = BackendPool()
    login = LoginComplete(b"", 1, b"k" * 4, b"")
    pool.release(pool_key("h", "alice", "db", {}), transport, login, time.monotonic())
    return pool, theirs


def test_a_malformed_reply_to_the_reset_closes_the_backend() -> None:
    """A reply to server_reset_query pggate cannot read (here a DataRow whose value runs past
    its end) closes that backend connection: it is not pooled and no task dies unretrieved."""
    from pggate.proto import codec, codes

    async def scenario() -> tuple[bool, int, bytes]:
        loop = asyncio.get_running_loop()
        pool, theirs = await released_to_a_pool()
        asked = await loop.sock_recv(theirs, 1024)
        broken_row = b"D" + (4 + 2 + 4 + 1).to_bytes(4, "big") + b"\0\1" + (99).to_bytes(4, "big")
        reply = broken_row + b"x" + codec.ready_for_query(codes.TX_IDLE)
        await loop.sock_sendall(theirs, reply)
        await asyncio.sleep(0.2)
        closed = await loop.sock_recv(theirs, 1) == b""
        theirs.close()
        return closed, sum(len(v) for v in pool.idle.values()), asked

    closed, pooled, asked = asyncio.run(scenario())
    assert asked.startswith(b"Q") and b"DISCARD ALL" in asked
    assert closed and pooled == 0


@pytest.mark.parametrize("mid_response", [False, True])
def test_only_a_backend_that_answers_the_marker_second_is_pooled(mid_response: bool) -> None:
    """The reset is followed by a query for a random marker. A backend that was still sending
    its previous result when the client left (the relay's endswith guess fooled by a row
    ending in ReadyForQuery's bytes) answers with that result's end first, so the second
    result is the reset's, not the marker's: closed, never pooled."""
    from pggate.proto import codec, codes

    idle = codec.ready_for_query(codes.TX_IDLE)

    def result(*rows: bytes, tag: bytes) -> bytes:
        data = b"".join(
            b"D"
            + (4 + 2 + 4 + len(row)).to_bytes(4, "big")
            + b"\0\1"
            + len(row).to_bytes(4, "big")
            + row
            for row in rows
        )
        complete = b"C" + (4 + len(tag) + 1).to_bytes(4, "big") + tag + b"\0"
        return data + complete + idle

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        pool, theirs = await released_to_a_pool()
        asked = b""
        with contextlib.suppress(TimeoutError):  # whatever pggate sends within 0.5 s
            async with asyncio.timeout(0.5):
                while True:
                    asked += await loop.sock_recv(theirs, 1024)
        assert b"DISCARD ALL" in asked
        old_tail = result(b"Z\0\0\0\5I", tag=b"SELECT 2") if mid_response else b""
        answer = old_tail + result(tag=b"DISCARD ALL")
        marker = re.search(rb"SELECT E'([0-9a-f]+)'", asked)
        if marker is not None:
            answer += result(marker.group(1), tag=b"SELECT 1")
        await loop.sock_sendall(theirs, answer)
        await asyncio.sleep(0.2)
        pooled = sum(len(v) for v in pool.idle.values())
        theirs.close()
        return pooled

    assert asyncio.run(scenario()) == (0 if mid_response else 1)
