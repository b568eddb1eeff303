"""GSSAPI packet framing under hypothesis, without a KDC.

* :func:`pggate.transport.gss_frames.unwrap_packets`: valid packets cut anywhere come out whole,
  once each, in order; any byte stream cut anywhere yields packets or the caller's oversize
  error, decided as a reference parser of the whole stream decides it.
* The server's :class:`~pggate.transport.gss.GssChannel` and the client's
  :class:`~pggate.transport.gss_client.GssClientHandshake` and ``GssClientCodec`` over a toy
  GSSAPI (tokens and wraps are plain bytes; a real mechanism runs in
  tests/integration/test_gss_sansio.py): any bytes in any chunks end in their one error type,
  never another exception, and a valid exchange round-trips.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from pggate import gss_support
from pggate.transport import gss_frames
from pggate.transport.gss_frames import MAX_DATA_PAYLOAD, MAX_HANDSHAKE_TOKEN, unwrap_packets

LENGTH = struct.Struct("!I")


class Oversize(Exception):
    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length


def frame(payload: bytes) -> bytes:
    return LENGTH.pack(len(payload)) + payload


@st.composite
def cut(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` in chunks (some empty), cut at drawn offsets."""
    offsets = sorted(draw(st.lists(st.integers(0, len(data)), max_size=10)))
    edges = [0, *offsets, len(data)]
    return [data[a:b] for a, b in pairwise(edges)]


BUFFERS = st.sampled_from([bytes, bytearray, memoryview])
PAYLOADS = st.one_of(
    st.binary(max_size=40),
    st.integers(MAX_DATA_PAYLOAD - 2, MAX_DATA_PAYLOAD).map(lambda n: b"x" * n),
)


def reference(stream: bytes) -> tuple[list[bytes], int | None]:
    """The packets of ``stream`` read front to back, and the first oversize length word (the
    end of the reading) if there is one."""
    packets: list[bytes] = []
    pos = 0
    while len(stream) - pos >= 4:
        (length,) = LENGTH.unpack_from(stream, pos)
        if length > MAX_DATA_PAYLOAD:
            return packets, length
        if pos + 4 + length > len(stream):
            break
        packets.append(stream[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return packets, None


@given(st.data(), st.lists(PAYLOADS, max_size=6), BUFFERS)
def test_valid_packets_cut_anywhere_come_out_whole(
    data: st.DataObject, payloads: list[bytes], kind: type[bytes | bytearray | memoryview]
) -> None:
    stream = b"".join(map(frame, payloads))
    opened: list[bytes] = []

    def open_packet(token: bytes) -> bytes:
        assert isinstance(token, bytes)
        opened.append(token)
        return token[::-1]  # something other than the token: the result is what comes out

    buf = bytearray()
    out = []
    fed = 0
    for chunk in data.draw(cut(stream)):
        out.append(unwrap_packets(buf, kind(chunk), open_packet, Oversize))
        fed += len(chunk)
        # What stays buffered is exactly the packet that is not complete yet.
        whole = sum(len(frame(p)) for p in reference(stream[:fed])[0])
        assert bytes(buf) == stream[whole:fed]
    assert opened == payloads
    assert b"".join(out) == b"".join(p[::-1] for p in payloads)
    assert buf == b""


@given(st.data(), st.binary(max_size=60), st.lists(st.binary(max_size=12), max_size=4))
def test_any_stream_gives_packets_or_the_oversize_error(
    data: st.DataObject, noise: bytes, payloads: list[bytes]
) -> None:
    # Valid packets around arbitrary bytes, so that both readings happen often.
    stream = b"".join(map(frame, payloads[:2])) + noise + b"".join(map(frame, payloads[2:]))
    expected, bad = reference(stream)
    opened: list[bytes] = []

    def open_packet(token: bytes) -> bytes:
        opened.append(token)
        return token

    buf = bytearray()
    out = []
    try:
        for chunk in data.draw(cut(stream)):
            out.append(unwrap_packets(buf, chunk, open_packet, Oversize))
    except Oversize as exc:
        event("oversize")
        # Judged from the length word alone, never after its body.
        assert exc.length == bad
        assert opened == expected
        return
    assert bad is None
    assert opened == expected
    assert b"".join(out) == b"".join(expected)


@given(st.integers(MAX_DATA_PAYLOAD + 1, 2**32 - 1), st.integers(0, 3))
def test_an_oversize_word_is_refused_before_its_body(length: int, split: int) -> None:
    word = LENGTH.pack(length)
    buf = bytearray()
    assert unwrap_packets(buf, word[:split], bytes, Oversize) == b""
    with pytest.raises(Oversize) as refused:
        unwrap_packets(buf, word[split:], bytes, Oversize)
    assert refused.value.length == length


def test_limits_are_postgresql_s() -> None:
    assert (MAX_HANDSHAKE_TOKEN, MAX_DATA_PAYLOAD, gss_frames.LENGTH_SIZE) == (65532, 16380, 4)


# --- the channels over a toy GSSAPI ------------------------------------------------------------

needs_gssapi = pytest.mark.skipif(not gss_support.available(), reason="needs python-gssapi")

# Toy tokens: "more" asks for another round (answered "reply"), "ok" completes the context
# (answered "last" or nothing); anything else is a defective token. A wrap is 0x01 + plaintext;
# 0x00 + plaintext is a packet without confidentiality; anything else fails to unwrap.
MORE, OK, REPLY, LAST = b"more", b"ok", b"reply", b"last"
SEALED, CLEAR = b"\x01", b"\x00"
WRAP_LIMIT = 50
DEFECTIVE_TOKEN = 0x00090000  # GSS_S_DEFECTIVE_TOKEN
BAD_MIC = 0x00060000  # GSS_S_BAD_SIG


def gss_error(major: int) -> Exception:
    from gssapi.raw.misc import GSSError

    error: Exception = GSSError(major, 0)
    return error


def toy_step(token: bytes) -> tuple[bytes, bool]:
    """(output token, complete) for one accept/init call."""
    if token == MORE:
        return REPLY, False
    if token.startswith(OK):
        return (LAST if token == OK + LAST else b""), True
    raise gss_error(DEFECTIVE_TOKEN)


def toy_accept(token: bytes, creds: object, context: object) -> Any:
    output, complete = toy_step(token)
    return SimpleNamespace(
        context="ctx",
        delegated_creds=None,
        more_steps=not complete,
        token=output,
        initiator_name="alice",
    )


def toy_unwrap(context: object, token: bytes) -> Any:
    if token[:1] not in (SEALED, CLEAR):
        raise gss_error(BAD_MIC)
    return SimpleNamespace(message=token[1:], encrypted=token[:1] == SEALED)


def toy_wrap(context: object, message: bytes, confidential: bool) -> Any:
    return SimpleNamespace(message=SEALED + message, encrypted=True)


@contextmanager
def toy_server() -> Iterator[None]:
    with mock.patch.multiple(
        "pggate.transport.gss",
        _accept_sec_context=toy_accept,
        _display_name=lambda name, name_type: SimpleNamespace(name=b"alice@EXAMPLE.COM"),
        _wrap_size_limit=lambda context, size, confidential: WRAP_LIMIT,
        _unwrap=toy_unwrap,
        _wrap=toy_wrap,
    ):
        yield


def sealed(plain: bytes) -> bytes:
    return frame(SEALED + plain)


@st.composite
def handshakes(draw: st.DrawFn) -> tuple[list[bytes], bool]:
    """A valid client side: some rounds, then the completing token (maybe with a last token
    for the client)."""
    last = draw(st.booleans())
    return [MORE] * draw(st.integers(0, 3)) + [OK + LAST if last else OK], last


@needs_gssapi
@given(st.data(), handshakes(), st.lists(st.binary(max_size=120), max_size=4))
def test_server_channel_round_trip(
    data: st.DataObject, exchange: tuple[list[bytes], bool], plains: list[bytes]
) -> None:
    from pggate.transport.gss import GssChannel

    tokens, last = exchange
    stream = b"".join(map(frame, tokens)) + b"".join(map(sealed, plains))
    chunks = data.draw(cut(stream))
    head = data.draw(st.integers(0, len(chunks)))  # these arrived behind GSSENCRequest
    with toy_server():
        channel = GssChannel(None, b"".join(chunks[:head]))
        sent, done = channel.handshake()
        received = []
        for chunk in chunks[head:]:
            if done:
                received.append(channel.feed(chunk))
            else:
                more, done = channel.receive_handshake(chunk)
                sent += more
        assert done and channel.handshake_done
        received.append(channel.feed(b""))  # plaintext that came in behind the last token
        rounds = len(tokens) - 1
        assert sent == frame(REPLY) * rounds + (frame(LAST) if last else b"")
        assert b"".join(received) == b"".join(plains)
        assert channel.info.gss_principal == "alice@EXAMPLE.COM"
        # What the server sends: packets of at most the wrap limit, which open to the text.
        text = b"".join(plains)
        packets, bad = reference(channel.encrypt(text))
        assert bad is None
        assert all(0 < len(p) <= WRAP_LIMIT + 1 and p[:1] == SEALED for p in packets)
        assert b"".join(p[1:] for p in packets) == text


@needs_gssapi
@given(
    st.data(),
    handshakes(),
    st.binary(max_size=40),
    st.lists(st.binary(max_size=20), max_size=3),
    st.booleans(),
)
def test_server_channel_takes_any_bytes_or_fails_with_gss_error(
    data: st.DataObject,
    exchange: tuple[list[bytes], bool],
    noise: bytes,
    packets: list[bytes],
    in_handshake: bool,
) -> None:
    """Arbitrary bytes during the handshake or after it: only GssError, and a failed channel
    stays failed."""
    from pggate.transport.gss import GssChannel, GssError, IllegalChannelUse, State

    tokens, _ = exchange
    framed = [frame(p) for p in packets]
    if in_handshake:
        stream = noise + b"".join(framed)
    else:
        stream = b"".join(map(frame, tokens)) + noise + b"".join(framed)
    with toy_server():
        channel = GssChannel(None)
        try:
            for chunk in data.draw(cut(stream)):
                if channel.handshake_done:
                    channel.feed(chunk)
                else:
                    channel.receive_handshake(chunk)
        except GssError as exc:
            event("server: GssError")
            assert exc.message and exc.output == b""
            assert channel.state is State.FAILED
            with pytest.raises(IllegalChannelUse):
                channel.feed(b"more")
            with pytest.raises(IllegalChannelUse):
                channel.encrypt(b"more")
            return
        event(f"server: {channel.state.value}")
        assert channel.state in (State.HANDSHAKE, State.OPEN)


@st.composite
def server_bytes(draw: st.DrawFn) -> bytes:
    """What a server might answer a GSSENCRequest'd client: often a valid exchange first,
    then toy tokens, sealed packets, an error packet, an oversize word, noise, in any mix."""
    valid = b""
    if draw(st.booleans()):
        tokens, _ = draw(handshakes())
        valid = b"".join(map(frame, tokens))
    parts = draw(
        st.lists(
            st.one_of(
                st.sampled_from([frame(MORE), frame(OK), frame(OK + LAST)]),
                st.just(b"E\0\0\0\x10SFATAL\0Mno\0\0"),
                st.integers(MAX_HANDSHAKE_TOKEN - 1, 2**32 - 1).map(LENGTH.pack),
                st.binary(max_size=16),
                st.binary(max_size=16).map(sealed),
            ),
            max_size=6,
        )
    )
    return valid + b"".join(parts)


class ToyInitiator:
    """The client's _Initiator over the toy mechanism: the first call sends MORE."""

    context = "ctx"

    def step(self, token: bytes | None, prefix: str) -> tuple[bytes, bool]:
        from pggate.transport.gss_client import GssClientError

        if token is None:
            return MORE, False
        try:
            return toy_step(token)
        except Exception as exc:
            raise GssClientError(f"{prefix}: {exc}") from None


@needs_gssapi
@given(st.data(), server_bytes())
def test_client_handshake_and_codec_take_any_server_bytes(data: st.DataObject, raw: bytes) -> None:
    """pqsecure_open_gss and pg_GSS_read: whatever the server sends, in any chunks, the client
    ends in GssClientError or goes on; never another exception."""
    from pggate.transport.gss_client import GssClientCodec, GssClientError, GssClientHandshake

    client = object.__new__(GssClientHandshake)
    client._initiator = ToyInitiator()  # type: ignore[assignment]
    client._buf = bytearray()
    client._done = False
    client._max_chunk = 0
    codec: GssClientCodec | None = None
    with mock.patch("gssapi.raw.message.wrap_size_limit", lambda *args: WRAP_LIMIT):
        assert client.start() == frame(MORE)
        try:
            for chunk in data.draw(cut(raw)):
                if codec is None:
                    client.feed(chunk)
                    if client.done:
                        event("client: context established")
                        codec = client.codec()
                        codec._unwrap = toy_unwrap
                        codec._wrap = toy_wrap
                        codec.feed(b"")
                else:
                    codec.feed(chunk)
        except GssClientError as exc:
            event("client: GssClientError")
            assert exc.message
            return
    event("client: codec open" if codec is not None else "client: handshaking")
    if codec is not None:
        # An established codec round-trips through the toy wrap.
        text = data.draw(st.binary(max_size=200))
        assert codec.max_plaintext_chunk == WRAP_LIMIT
        peer = bytearray()
        assert unwrap_packets(peer, codec.encrypt(text), lambda t: t[1:], Oversize) == text
