"""A GSSAPI-encrypted backend connection as an ordinary asyncio transport of plaintext.

After ``pqsecure_open_gss`` (:class:`~pggate.transport.gss_client.GssClientHandshake`) every
byte to and from the backend is wrapped in GSSAPI packets. :class:`GssTransport` hides that
from everything above it, as asyncio's ``sslproto`` hides TLS behind ``loop.start_tls``: it
takes the raw socket transport's protocol slot (an inner protocol unwraps what arrives and
hands the plaintext to the application's protocol) and wraps each ``write`` before passing it
on. The backend login, the pool and the relay see a transport of plaintext and never ask how
it is protected; the relay's hot path for plain and TLS backends is unchanged, a GSSAPI backend
costs one ``gss_wrap``/``gss_unwrap`` per packet.

Flow control is the raw transport's: ``pause_reading``/``resume_reading`` and the write buffer
limits are passed down, ``pause_writing``/``resume_writing`` passed up. A GSSAPI failure
(``GSSAPI unwrap error``, a packet sent without confidentiality) is logged with libpq's text
and aborts the connection; the application's protocol sees ``connection_lost`` with the error.
GSSAPI has no close message of its own: ``close`` closes the socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from pggate.transport.gss_client import GssClientError

log = logging.getLogger("pggate.backend")

Buffer = bytes | bytearray | memoryview


class Codec(Protocol):
    """What wraps and unwraps (:class:`~pggate.transport.gss_client.GssClientCodec`)."""

    def encrypt(self, data: Buffer) -> bytes: ...

    def feed(self, data: Buffer) -> bytes: ...


class _RawSide(asyncio.Protocol):
    """The raw socket's protocol: unwraps and forwards to the application's protocol."""

    __slots__ = ("owner",)

    def __init__(self, owner: GssTransport) -> None:
        self.owner = owner

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        try:
            plain = owner.codec.feed(data)
        except GssClientError as err:
            owner.fail(err)
            return
        if plain:
            owner.protocol.data_received(plain)

    def eof_received(self) -> bool | None:
        keep_open: bool | None = self.owner.protocol.eof_received()
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        owner = self.owner
        owner.protocol.connection_lost(exc if exc is not None else owner.error)

    def pause_writing(self) -> None:
        self.owner.protocol.pause_writing()

    def resume_writing(self) -> None:
        self.owner.protocol.resume_writing()


class GssTransport(asyncio.Transport):
    """Plaintext over ``raw``, a socket transport whose bytes are GSSAPI packets.

    ``protocol`` receives the plaintext; the caller tells it about this transport (for an
    :class:`~pggate.server.inbox.InboxProtocol`, ``connection_made(transport)``), then feeds
    it what ``codec.feed(b"")`` holds (packets that came in behind the handshake).
    """

    __slots__ = ("codec", "error", "protocol", "raw")

    def __init__(self, raw: asyncio.Transport, codec: Codec, protocol: asyncio.BaseProtocol):
        super().__init__()
        self.raw = raw
        self.codec = codec
        self.protocol: Any = protocol  # an asyncio.Protocol (data_received, eof_received)
        self.error: GssClientError | None = None
        raw.set_protocol(_RawSide(self))

    def fail(self, err: GssClientError) -> None:
        """A GSSAPI failure: nothing more can be read or written on this connection."""
        if self.error is None:
            self.error = err
            log.warning("GSSAPI-encrypted backend connection failed: %s", err.message)
        self.raw.abort()

    # --- asyncio.WriteTransport -----------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data or self.error is not None:
            return
        try:
            wrapped = self.codec.encrypt(data)
        except GssClientError as err:
            self.fail(err)
            return
        self.raw.write(wrapped)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        self.raw.write_eof()

    def can_write_eof(self) -> bool:
        return self.raw.can_write_eof()

    def abort(self) -> None:
        self.raw.abort()

    def get_write_buffer_size(self) -> int:
        return self.raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.raw.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.raw.set_write_buffer_limits(high=high, low=low)

    # --- asyncio.ReadTransport ------------------------------------------------------------

    def is_reading(self) -> bool:
        return self.raw.is_reading()

    def pause_reading(self) -> None:
        self.raw.pause_reading()

    def resume_reading(self) -> None:
        self.raw.resume_reading()

    # --- asyncio.BaseTransport ------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.raw.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self.raw.is_closing()

    def close(self) -> None:
        self.raw.close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol  # type: ignore[no-any-return]


__all__ = ["Codec", "GssTransport"]
