"""One conformance suite for every channel behind the byte-stream interface.

The house rule (shared/style.md): one byte-stream interface over plain, TLS and GSS, nothing
above it branches on which, and one conformance suite runs against each.  Every test here takes
``pair`` — a server :class:`~pggate.transport.Channel` (:data:`~pggate.transport.PLAIN`,
:class:`~pggate.transport.TlsChannel` or :class:`~pggate.transport.gss.GssChannel`) after a
completed in-memory handshake, and a client adapter with ``send(plain) -> raw`` /
``receive(raw) -> plain`` — and asserts the same property on each, with no branch on the kind.

The handshake itself is driven through the shared shape too (``feed`` then ``handshake()``
until done), by one driver for every kind; only the client adapters know their protocol.
GSS needs the real KDC of ``kdc.py``, hence an integration test; everything else is memory.
Garbage is an error only for the encrypted kinds: to the plain channel it is plaintext.
"""

from __future__ import annotations

import os
import ssl
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import gssapi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kdc import Realm
from test_gss_sansio import client_context as gss_client_context
from tls_support import CN_HOST, Pki, make_pki
from tls_support import client_context as tls_client_context

from pggate.tls.context import TlsSettings, build_server_context
from pggate.transport import PLAIN, Channel, ChannelError, ChannelKind, TlsChannel
from pggate.transport.gss import MAX_DATA_PAYLOAD, GssChannel

pytestmark = pytest.mark.integration

KINDS = {"plain": ChannelKind.NONE, "tls": ChannelKind.SSL, "gss": ChannelKind.GSS}
ENCRYPTED = ["tls", "gss"]
LENGTH = struct.Struct("!I")  # PostgreSQL's GSS packet framing (be-secure-gssapi.c)
KB = 1024
MB = 1024 * 1024


class ClientAdapter(Protocol):
    def step(self, incoming: bytes) -> tuple[bytes, bool]:
        """Handshake: the server's bytes in (b"" to start), (bytes to send, done) out."""
        ...

    def send(self, plain: bytes) -> bytes: ...
    def receive(self, raw: bytes) -> bytes: ...


Pair = tuple[Channel, ClientAdapter]


# --- client adapters --------------------------------------------------------------------------


class PlainClient:
    """A client without encryption: nothing to negotiate, bytes as they are."""

    def step(self, incoming: bytes) -> tuple[bytes, bool]:
        return b"", True

    def send(self, plain: bytes) -> bytes:
        return plain

    def receive(self, raw: bytes) -> bytes:
        return raw


class TlsClient:
    """The client side of TLS is a TlsChannel(server_side=False) itself."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.channel = TlsChannel(context, server_side=False, server_hostname=CN_HOST)

    def step(self, incoming: bytes) -> tuple[bytes, bool]:
        self.channel.feed(incoming)
        return self.channel.handshake()

    def send(self, plain: bytes) -> bytes:
        return self.channel.encrypt(plain)

    def receive(self, raw: bytes) -> bytes:
        return self.channel.feed(raw)


class GssClient:
    """libpq's side of gssencmode (fe-secure-gssapi.c): uint32 length + token during the
    handshake, uint32 length + gss_wrap(conf) output after it; a partial packet waits."""

    def __init__(self, context: gssapi.SecurityContext) -> None:
        self.context = context
        self._started = False
        self._buf = bytearray()

    def _packets(self, raw: bytes) -> Iterator[bytes]:
        self._buf += raw
        while len(self._buf) >= LENGTH.size:
            (length,) = LENGTH.unpack_from(self._buf)
            if len(self._buf) < LENGTH.size + length:
                return
            packet = bytes(self._buf[LENGTH.size : LENGTH.size + length])
            del self._buf[: LENGTH.size + length]
            yield packet

    def step(self, incoming: bytes) -> tuple[bytes, bool]:
        out = []
        if not self._started:  # the client sends first (pqsecure_open_gss)
            self._started = True
            out.append(self.context.step())
        for token in self._packets(incoming):
            out.append(self.context.step(token))
        return b"".join(LENGTH.pack(len(t)) + t for t in out if t), self.context.complete

    def send(self, plain: bytes) -> bytes:
        limit = self.context.get_wrap_size_limit(MAX_DATA_PAYLOAD, True)
        out = []
        for i in range(0, len(plain), limit):
            payload = self.context.wrap(plain[i : i + limit], True).message
            out.append(LENGTH.pack(len(payload)) + payload)
        return b"".join(out)

    def receive(self, raw: bytes) -> bytes:
        out = []
        for packet in self._packets(raw):
            result = self.context.unwrap(packet)
            assert result.encrypted
            out.append(result.message)
        return b"".join(out)


def establish(server: Channel, client: ClientAdapter, *, rounds: int = 10) -> None:
    """Both handshakes to completion through the shared shape: feed, then handshake()."""
    out, client_done = client.step(b"")
    for _ in range(rounds):
        server.feed(out)
        reply, server_done = server.handshake()
        out, client_done = client.step(reply)
        if server_done and client_done and not out:
            return
    raise AssertionError("handshake did not finish")


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def ticket(kdc: Realm) -> Path:
    return kdc.kinit("test1")


@pytest.fixture(scope="module")
def connectors(pki: Pki, kdc: Realm, ticket: Path) -> dict[str, Callable[[], Pair]]:
    """kind -> a function making a fresh, established (server channel, client adapter)."""
    server_tls = build_server_context(
        TlsSettings(
            ssl_cert_file=str(pki.server_cn_only.crt),
            ssl_key_file=str(pki.server_cn_only.key_path),
        ),
        reloading=False,
        prompt=None,
    )
    client_tls = tls_client_context(cafile=pki.server_ca, alpn=["postgresql"])
    acceptor = kdc.acceptor_credentials()

    def make(server: Channel, client: ClientAdapter) -> Pair:
        establish(server, client)
        return server, client

    return {
        "plain": lambda: make(PLAIN, PlainClient()),
        "tls": lambda: make(TlsChannel(server_tls), TlsClient(client_tls)),
        "gss": lambda: make(GssChannel(acceptor), GssClient(gss_client_context(kdc, ticket))),
    }


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pair(kind: str, connectors: dict[str, Callable[[], Pair]]) -> Pair:
    return connectors[kind]()


# --- helpers ----------------------------------------------------------------------------------


def to_server(pair: Pair, plain: bytes) -> bytes:
    server, client = pair
    got = server.feed(client.send(plain))
    assert not server.peer_closed
    return got


def to_client(pair: Pair, plain: bytes) -> bytes:
    server, client = pair
    return client.receive(server.encrypt(plain))


# --- the properties ---------------------------------------------------------------------------


def test_round_trip_both_ways(pair: Pair) -> None:
    query = b"Q\x00\x00\x00\x0dselect 1\x00"
    ready = b"Z\x00\x00\x00\x05I"
    assert to_server(pair, query) == query
    assert to_client(pair, ready) == ready
    assert to_server(pair, b"X\x00\x00\x00\x04") == b"X\x00\x00\x00\x04"


@pytest.mark.parametrize(
    "size", [1, 100, 16 * KB, 64 * KB, MB], ids=["1B", "100B", "16KiB", "64KiB", "1MB"]
)
def test_sizes_survive_both_ways(pair: Pair, size: int) -> None:
    data = os.urandom(size)
    assert to_server(pair, data) == data
    assert to_client(pair, data) == data


def test_byte_by_byte_gives_the_same_plaintext(pair: Pair) -> None:
    server, client = pair
    data = os.urandom(20000)  # more than one TLS record and more than one GSS packet
    wire = client.send(data)
    got = b"".join(server.feed(wire[i : i + 1]) for i in range(len(wire)))
    assert got == data
    assert not server.peer_closed
    assert to_server(pair, b"after") == b"after"


def test_several_records_at_once_give_their_concatenation(pair: Pair) -> None:
    server, client = pair
    messages = [b"first", os.urandom(40000), b"", b"third", os.urandom(3)]
    assert server.feed(b"".join(client.send(m) for m in messages)) == b"".join(messages)
    assert not server.peer_closed
    raw = b"".join(server.encrypt(m) for m in messages)
    assert client.receive(raw) == b"".join(messages)


def test_feed_empty_with_nothing_pending(pair: Pair) -> None:
    server, _client = pair
    assert server.feed(b"") == b""  # nothing came with the handshake
    assert server.feed(b"") == b""
    assert to_server(pair, b"data") == b"data"
    assert to_client(pair, b"reply") == b"reply"
    assert server.feed(b"") == b""
    assert not server.peer_closed


def test_pending_output_is_bytes_and_carries_no_plaintext(pair: Pair) -> None:
    server, client = pair

    def check() -> None:
        pending = server.pending_output()
        assert isinstance(pending, bytes)
        assert client.receive(pending) == b""  # only protocol records, never data

    check()
    assert to_server(pair, b"ping") == b"ping"
    check()
    assert to_client(pair, b"pong") == b"pong"
    check()
    assert server.feed(b"") == b""
    check()
    assert to_server(pair, b"again") == b"again"


GARBAGE = {
    "zeros": b"\x00" * 64,
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "ones": b"\xff" * 64,
    # Framed like a real packet of each kind (TLS application_data record header; a GSS
    # length word of 37), with a body no key produced.
    "tls-shaped": b"\x17\x03\x03\x00\x20" + b"x" * 32,
    "gss-shaped": LENGTH.pack(37) + b"\x05\x04" + b"y" * 35,
}


@pytest.mark.parametrize("encrypted", ENCRYPTED)
@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_raises_a_channel_error(
    connectors: dict[str, Callable[[], Pair]], encrypted: str, garbage: bytes
) -> None:
    pair = connectors[encrypted]()
    server, _client = pair
    assert to_server(pair, b"fine so far") == b"fine so far"
    with pytest.raises(ChannelError) as caught:
        server.feed(garbage)
    assert isinstance(caught.value.output, bytes)  # what is still owed to the peer
    assert str(caught.value)  # the line the server logs


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300))
def test_garbage_fuzz_only_channel_errors(
    connectors: dict[str, Callable[[], Pair]], kind: str, data: bytes
) -> None:
    """Any bytes: plaintext, "need more" (b""), or a channel error, never another exception."""
    server, _client = connectors[kind]()
    try:
        got = server.feed(data)
    except ChannelError:
        return
    assert isinstance(got, bytes)


def test_peer_closed_stays_false_during_exchange(pair: Pair) -> None:
    server, client = pair
    assert not server.peer_closed
    for size in (1, 5000, 70000):
        data = os.urandom(size)
        assert server.feed(client.send(data)) == data
        assert not server.peer_closed
        assert client.receive(server.encrypt(data)) == data
        assert not server.peer_closed
    assert server.feed(b"") == b""
    assert not server.peer_closed


def test_encrypt_empty_delivers_nothing(pair: Pair) -> None:
    server, client = pair
    raw = server.encrypt(b"")
    assert isinstance(raw, bytes)
    assert client.receive(raw) == b""
    assert to_client(pair, b"next") == b"next"  # and the stream is still in step
    assert to_server(pair, b"") == b""


def test_info_reports_the_kind_after_the_handshake(pair: Pair, kind: str) -> None:
    server, _client = pair
    assert server.handshake_done
    assert server.info.kind is KINDS[kind]
    assert server.info.ssl == (kind == "tls")
    assert server.info.gss == (kind == "gss")


def test_a_transparent_channel_changes_no_bytes(pair: Pair) -> None:
    """What the relay relies on when it passes a transparent channel's bytes straight on."""
    server, client = pair
    data = os.urandom(5000)
    raw = client.send(data)
    assert (raw == data) is server.transparent
    assert server.feed(raw) == data
    assert (server.encrypt(data) == data) is server.transparent
    assert server.pending_output() == b""


def test_close_is_bytes_without_plaintext(pair: Pair) -> None:
    server, client = pair
    assert to_client(pair, b"last words") == b"last words"
    goodbye = server.close()
    assert isinstance(goodbye, bytes)
    assert client.receive(goodbye) == b""
