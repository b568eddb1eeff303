"""The relay's ends as playbooks: chunks in through ``data_received``, exact bytes out on
in-memory transports, with the plain channel and a real TLS channel, and the pool's observer.
No sockets; an event loop only where a client's end lingers on a timer."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import ssl
from collections.abc import Callable
from typing import ParamSpec, cast

import pytest
from conftest_tls import CertFactory, connect

from pggate.proto import codec, query
from pggate.proto.errors import ClientError
from pggate.proto.farewell import GONE
from pggate.server import relay
from pggate.server.pool import ExitTracker
from pggate.transport import PLAIN, Channel, TlsChannel

P = ParamSpec("P")
QUERY = query.simple_query("select 1")
READY_IDLE = codec.ready_for_query(b"I")
READY_IN_TX = codec.ready_for_query(b"T")
TERMINATE = codec.terminate()


def in_event_loop(test: Callable[P, object]) -> Callable[P, None]:
    """Run a test (plain or async) inside an event loop: a client's end lingers on a timer."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        async def body() -> None:
            result = test(*args, **kwargs)
            if inspect.isawaitable(result):
                await result

        asyncio.run(body())

    return run


class MemoryTransport:
    """The part of asyncio.Transport the relay uses, recording what happens to it."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.eof_written = False
        self.reading = False
        self.protocol: asyncio.BaseProtocol | None = None

    def write(self, data: bytes) -> None:
        self.written += data

    def take(self) -> bytes:
        data = bytes(self.written)
        self.written.clear()
        return data

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def lose(self) -> None:
        """The event loop reports the connection gone (after close(), or the peer's)."""
        assert self.protocol is not None
        self.protocol.connection_lost(None)


class Session:
    """A spliced pair of memory transports and what the gateway's hooks saw."""

    def __init__(self, channel: Channel, observer: relay.Observer | None = None) -> None:
        self.client, self.backend = MemoryTransport(), MemoryTransport()
        self.closed = 0
        client = cast(asyncio.Transport, self.client)
        backend = cast(asyncio.Transport, self.backend)
        self.ends = relay.make_ends(client, backend, channel, observer)
        relay.splice(
            client,
            backend,
            self.ends,
            to_client=b"greeting",
            to_backend=b"pending",
            on_close=self.on_close,
        )

    def on_close(self) -> None:
        self.closed += 1

    def from_client(self, data: bytes) -> None:
        self.ends[0].data_received(data)

    def from_backend(self, data: bytes) -> None:
        self.ends[1].data_received(data)


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> CertFactory:
    return CertFactory(tmp_path_factory.mktemp("relay"))


@pytest.fixture(scope="module")
def server_ctx(factory: CertFactory) -> ssl.SSLContext:
    return factory.server_context()


@pytest.fixture
def tls(factory: CertFactory, server_ctx: ssl.SSLContext) -> tuple[TlsChannel, TlsChannel]:
    """(client, server) channels after an in-memory handshake."""
    return connect(server_ctx, factory.client_context())


# --- plain ----------------------------------------------------------------------------------------


def test_plain_bytes_pass_unchanged_both_ways() -> None:
    s = Session(PLAIN)
    assert (s.client.take(), s.backend.take()) == (b"greeting", b"pending")
    assert s.client.reading and s.backend.reading
    s.from_client(QUERY)
    s.from_backend(READY_IDLE)
    assert (s.backend.take(), s.client.take()) == (QUERY, READY_IDLE)


def test_ends_are_chosen_by_what_the_channel_does_to_bytes(
    tls: tuple[TlsChannel, TlsChannel],
) -> None:
    """The plain hot path is one C-level write per chunk: no channel call in between."""
    for channel, kinds in (
        (PLAIN, (relay.RelayEnd, relay.RelayEnd)),
        (tls[1], (relay.DecryptingEnd, relay.EncryptingEnd)),
    ):
        s = Session(channel)
        client_end, backend_end = s.ends
        assert (type(client_end), type(backend_end)) == kinds
        assert client_end.forward == s.backend.write
        assert backend_end.forward == s.client.write
        assert client_end.look is backend_end.look is None  # no observer, no hook


def test_back_pressure_pauses_the_other_side() -> None:
    s = Session(PLAIN)
    s.ends[1].pause_writing()  # the backend's buffer is full: stop reading the client
    assert not s.client.reading
    s.ends[1].resume_writing()
    assert s.client.reading


def test_client_loss_closes_the_backend_and_drops_the_links() -> None:
    s = Session(PLAIN)
    client_end, backend_end = s.ends
    s.client.lose()
    assert s.backend.closed and s.closed == 1
    assert client_end.peer is backend_end.peer is None
    assert client_end.forward is backend_end.forward is None
    s.from_backend(b"late")  # nowhere to go, and no error
    assert s.client.take() == b"greeting"


@in_event_loop
def test_a_side_gone_during_setup_ends_the_session() -> None:
    client, backend = MemoryTransport(), MemoryTransport()
    backend.closed = True
    ends = relay.make_ends(cast(asyncio.Transport, client), cast(asyncio.Transport, backend), PLAIN)
    calls: list[None] = []
    relay.splice(
        cast(asyncio.Transport, client),
        cast(asyncio.Transport, backend),
        ends,
        to_client=b"",
        to_backend=b"",
        on_close=lambda: calls.append(None),
    )
    assert client.take() == GONE and client.eof_written and not client.reading
    client.lose()
    assert calls == [None]


# --- an encrypted channel -------------------------------------------------------------------------


def test_tls_client_side_is_decrypted_and_backend_side_encrypted(
    tls: tuple[TlsChannel, TlsChannel],
) -> None:
    peer, channel = tls
    s = Session(channel)
    assert s.client.take() == b"greeting"  # already encoded by the session
    s.from_client(peer.encrypt(QUERY))
    assert s.backend.take() == b"pending" + QUERY
    s.from_backend(READY_IDLE)
    assert peer.feed(s.client.take()) == READY_IDLE


def test_tls_records_split_anywhere(tls: tuple[TlsChannel, TlsChannel]) -> None:
    peer, channel = tls
    s = Session(channel)
    s.backend.take()
    wire = peer.encrypt(b"x" * 40000)
    for i in range(0, len(wire), 333):
        s.from_client(wire[i : i + 333])
    assert s.backend.take() == b"x" * 40000


def test_the_clients_close_notify_is_answered_and_the_socket_closed(
    tls: tuple[TlsChannel, TlsChannel],
) -> None:
    peer, channel = tls
    s = Session(channel)
    s.client.take()
    s.from_client(peer.close())
    assert s.client.closed
    assert peer.feed(s.client.take()) == b"" and peer.peer_closed  # our close_notify


@in_event_loop
def test_the_backend_going_sends_close_notify_first(tls: tuple[TlsChannel, TlsChannel]) -> None:
    peer, channel = tls
    s = Session(channel)
    s.client.take(), s.backend.take()
    s.from_backend(SHUTDOWN)  # the backend's last word (fast shutdown), then its close
    s.backend.lose()
    assert s.client.eof_written and not s.client.closed  # lingers for the client's close
    assert peer.feed(s.client.take()) == SHUTDOWN and peer.peer_closed
    s.from_client(peer.encrypt(QUERY))  # a query already on its way: dropped, no reset
    assert s.client.take() == b"" and s.backend.take() == b""
    s.client.lose()
    assert s.closed == 1


@in_event_loop
async def test_a_client_that_never_closes_is_closed_after_the_linger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(relay, "LINGER_SECONDS", 0.01)
    s = Session(PLAIN)
    s.from_backend(SHUTDOWN)
    s.backend.lose()
    assert not s.client.closed
    await asyncio.sleep(0.05)
    assert s.client.closed


# --- a backend that vanishes without a word -------------------------------------------------------

SHUTDOWN = codec.error_response(
    ClientError("57P01", "terminating connection due to administrator command")
)
CRASH_WARNING = codec.notice_response(
    ClientError(
        "57P02",
        "terminating connection because of crash of another server process",
        severity="WARNING",
    )
)


@pytest.mark.parametrize(
    ("backend_says", "pggate_adds"),
    [
        ([], GONE),  # killed while idle (kill -9, the OOM killer)
        ([READY_IDLE, b"T" + b"\0" * 10], b""),  # killed mid-message: nothing can be appended
        ([CRASH_WARNING], GONE),  # another backend crashed (quickdie sends only a WARNING)
        ([SHUTDOWN], b""),  # said its word: relayed, nothing added
        ([b"T" + b"\0" * 10, b"\0" * 5, READY_IDLE], GONE),  # whole again after 'Z'
    ],
)
@in_event_loop
def test_a_backend_gone_without_an_error_ends_the_session_with_08006(
    backend_says: list[bytes], pggate_adds: bytes
) -> None:
    s = Session(PLAIN)
    s.client.take()
    for chunk in backend_says:
        s.from_backend(chunk)
    assert s.client.take() == b"".join(backend_says)
    s.backend.lose()
    assert s.client.take() == pggate_adds and s.client.eof_written


@in_event_loop
def test_a_backend_gone_without_an_error_is_told_through_the_clients_tls(
    tls: tuple[TlsChannel, TlsChannel],
) -> None:
    peer, channel = tls
    s = Session(channel)
    s.client.take()
    s.backend.lose()
    assert peer.feed(s.client.take()) == GONE and peer.peer_closed


@in_event_loop
def test_no_word_is_added_after_the_clients_terminate() -> None:
    s = Session(PLAIN)
    s.from_client(TERMINATE)
    s.client.take()
    s.backend.lose()
    assert s.client.take() == b"" and s.client.eof_written


def test_garbage_from_the_client_is_logged_and_closes(
    tls: tuple[TlsChannel, TlsChannel], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pggate")
    _peer, channel = tls
    s = Session(channel)
    s.client.take()
    s.from_client(b"\x17\x03\x03\x00\x20" + b"x" * 32)
    assert s.client.closed
    assert s.client.take()  # the alert OpenSSL queued for the client
    assert s.backend.take() == b"pending"  # nothing reached the backend
    assert "decryption failed or bad record mac" in caplog.messages


def test_an_encryption_failure_is_logged_and_closes(
    tls: tuple[TlsChannel, TlsChannel], caplog: pytest.LogCaptureFixture
) -> None:
    """The backend's bytes cannot be encrypted (the channel is shut): no exception escapes
    data_received; the failure is logged and the client's socket closed."""
    caplog.set_level(logging.INFO, logger="pggate")
    _peer, channel = tls
    s = Session(channel)
    channel.close()
    s.from_backend(READY_IDLE)
    assert s.client.closed
    assert "protocol is shutdown" in caplog.messages


# --- the pool's observer --------------------------------------------------------------------------


@pytest.fixture(params=["plain", "tls"])
def channel(request: pytest.FixtureRequest, tls: tuple[TlsChannel, TlsChannel]) -> Channel:
    return PLAIN if request.param == "plain" else tls[1]


def wire(channel: Channel, tls: tuple[TlsChannel, TlsChannel], data: bytes) -> bytes:
    """What the client sends for ``data`` on ``channel``."""
    return data if channel.transparent else tls[0].encrypt(data)


def test_a_clean_exit_hands_the_idle_backend_back(
    channel: Channel, tls: tuple[TlsChannel, TlsChannel]
) -> None:
    reused: list[asyncio.Transport] = []
    s = Session(channel, ExitTracker(reused.append))
    s.backend.take()
    s.from_client(wire(channel, tls, QUERY))
    s.from_backend(READY_IDLE)
    s.from_client(wire(channel, tls, TERMINATE))
    assert s.backend.take() == QUERY  # Terminate never reaches a backend kept for reuse
    s.client.lose()
    assert reused == [cast(asyncio.Transport, s.backend)] and not s.backend.closed
    assert s.closed == 1
    assert s.ends[1].transport is None  # the relay let go of it


@pytest.mark.parametrize(
    ("last_ready", "goodbye"),
    [(READY_IN_TX, TERMINATE), (READY_IDLE, b"")],
    ids=["terminate-inside-a-transaction", "no-terminate"],
)
def test_an_unclean_exit_closes_the_backend(
    channel: Channel, tls: tuple[TlsChannel, TlsChannel], last_ready: bytes, goodbye: bytes
) -> None:
    reused: list[asyncio.Transport] = []
    s = Session(channel, ExitTracker(reused.append))
    s.from_client(wire(channel, tls, QUERY))
    s.from_backend(last_ready)
    if goodbye:
        s.from_client(wire(channel, tls, goodbye))
    s.client.lose()
    assert reused == [] and s.backend.closed
