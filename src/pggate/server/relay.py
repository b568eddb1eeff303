"""The hot path: bytes both ways between a client and its backend, with back-pressure.

No parsing, no logging, no allocation beyond the bytes themselves: each ``data_received`` is
one ``write`` to the peer. When a peer's kernel buffer fills (its transport calls
``pause_writing`` on *our* protocol for that transport), we stop reading from the other side,
and resume when it drains. Both ends drop their references to each other in
``connection_lost`` so a closed session is freed by reference counting, not by a full GC.

Ends are closed through :meth:`RelayEnd.close`, so an encrypted client hears the channel's
goodbye first (TLS close_notify, as be_tls_close sends it when a backend exits): when its
backend goes (a FATAL, fast shutdown), when the gateway closes the session (shutdown), and in
answer to the client's own close_notify. Only after a channel error is the socket just closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from pggate import logs
from pggate.transport import CHANNEL_ERRORS
from pggate.transport.tls import TlsChannel

if TYPE_CHECKING:
    from pggate.transport.gss import GssChannel

Channel: TypeAlias = "TlsChannel | GssChannel"

log = logging.getLogger("pggate.relay")

# Write-buffer thresholds per transport: large enough for a COPY to stream without stalls,
# small enough that an idle or slow client does not pin much memory.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class RelayEnd(asyncio.Protocol):
    """One side of a spliced session; forwards what it receives to ``peer``."""

    __slots__ = ("_on_close", "peer", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport: asyncio.Transport | None = transport
        self.peer: RelayEnd | None = None
        self._on_close: Callable[[], None] | None = None

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close our side; connection_lost closes the peer

    def pause_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.resume_reading()

    def close(self) -> None:
        """Close this side (after the channel's goodbye, on an encrypted client side)."""
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        peer, on_close = self.peer, self._on_close
        self.peer = None
        self.transport = None
        self._on_close = None
        if peer is not None:
            peer.peer = None
            peer.close()
        if on_close is not None:
            on_close()


class TlsClientEnd(RelayEnd):
    """The client side of an encrypted (TLS or GSS) session: decrypt, forward plaintext."""

    __slots__ = ("channel",)

    def __init__(self, transport: asyncio.Transport, channel: Channel) -> None:
        super().__init__(transport)
        self.channel = channel

    def data_received(self, data: bytes) -> None:
        channel = self.channel
        try:
            plain = channel.feed(data)
        except CHANNEL_ERRORS as err:
            logs.report(log, logging.INFO, err)
            if self.transport is not None:
                self.transport.write(getattr(err, "output", b""))
                self.transport.close()
            return
        if plain:
            self.forward(plain)
        if self.transport is not None:
            queued = channel.pending_output()  # e.g. a TLS 1.3 KeyUpdate answer
            if queued:
                self.transport.write(queued)
            if channel.peer_closed:
                self.close()

    def forward(self, plain: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(plain)

    def close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            # be_tls_close: close_notify before the socket goes. After a bare TCP close psql 15
            # says "SSL SYSCALL error: EOF detected", not PostgreSQL's "SSL connection has
            # been closed unexpectedly" (test_shutdown_tls compares them).
            transport.write(self.channel.close())
            transport.close()


class TlsBackendEnd(RelayEnd):
    """The backend side of an encrypted session: encrypt what the backend says for the client."""

    __slots__ = ("channel",)

    def __init__(self, transport: asyncio.Transport, channel: Channel) -> None:
        super().__init__(transport)
        self.channel = channel

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(self.channel.encrypt(data))


def make_ends(
    client: asyncio.Transport, backend: asyncio.Transport, channel: Channel | None
) -> tuple[RelayEnd, RelayEnd]:
    """The pair of protocols for a session: plain, or through the client's channel."""
    if channel is None:
        return RelayEnd(client), RelayEnd(backend)
    return TlsClientEnd(client, channel), TlsBackendEnd(backend, channel)


def splice(
    client: asyncio.Transport,
    backend: asyncio.Transport,
    ends: tuple[RelayEnd, RelayEnd],
    *,
    to_client: bytes,
    to_backend: bytes,
    on_close: Callable[[], None],
) -> None:
    """Switch both transports to relaying through ``ends`` (from :func:`make_ends`, or the
    pool's variants), after flushing bytes already in hand.

    ``to_client`` is already encoded for the wire (encrypted when the session has a channel).
    """
    client_end, backend_end = ends
    client_end.peer, backend_end.peer = backend_end, client_end
    client_end._on_close = on_close
    for transport, end in ((client, client_end), (backend, backend_end)):
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        transport.set_protocol(end)
    if to_client:
        client.write(to_client)
    if to_backend:
        backend.write(to_backend)
    # Either side may have gone away while the session was being set up.
    for transport, end in ((client, client_end), (backend, backend_end)):
        if transport.is_closing():
            end.connection_lost(None)
            break
    else:
        client.resume_reading()
        backend.resume_reading()
