"""The hot path: bytes both ways between a client and its backend, with back-pressure.

No parsing, no logging, no allocation beyond the bytes themselves. Each end hands what it
receives to ``forward``, the other socket's ``write``, fixed when the session is spliced
(:func:`make_ends`), so a plain chunk costs one ``data_received`` and one C-level ``write``.
Three ends, chosen by what the client's channel does to bytes, never by which channel it is:

* :class:`RelayEnd`: bytes pass as they are (both sides of a session whose channel is
  transparent, i.e. plain);
* :class:`DecryptingEnd`: the client's side of an encrypted session, which feeds the channel
  and forwards the plaintext;
* :class:`EncryptingEnd`: the backend's side of an encrypted session, which forwards what the
  backend says through the channel.

An :class:`Observer` (``pool_mode = session``) is no end of its own: each end calls its hook
(``look``) with every chunk before forwarding it, and the client's end asks it, when the client
has gone, whether to hand the backend over instead of closing it.

When a peer's kernel buffer fills (its transport calls ``pause_writing`` on *our* protocol for
that transport), we stop reading from the other side, and resume when it drains. Both ends
drop their references to each other in ``connection_lost`` so a closed session is freed by
reference counting, not by a full GC.

Ends are closed through :meth:`RelayEnd.close`, so an encrypted client hears the channel's
goodbye first (TLS close_notify, as be_tls_close sends it when a backend exits): when the
gateway closes the session (shutdown), and in answer to the client's own close_notify. Only
after a channel error is the socket just closed.

When the backend goes first (its FATAL at a fast shutdown or ``pg_terminate_backend``, or
pggate's FATAL 08006 for a backend that vanished), the client's end *lingers*
(:meth:`RelayEnd.linger`): goodbye, then a TCP half-close, then what the client still sends is
read and dropped until it closes (or ``LINGER_SECONDS`` pass). A backend that exits closes its
socket at once, and a client that was sending its next query at that moment gets a TCP reset,
which makes its kernel drop the FATAL it had not read yet: "SSL connection has been closed
unexpectedly" instead of the reason. Lingering is pggate doing better than PostgreSQL there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from pggate import logs
from pggate.proto.farewell import LastWord
from pggate.transport import Channel, ChannelError

log = logging.getLogger("pggate.relay")

# Write-buffer thresholds per transport: large enough for a COPY to stream without stalls,
# small enough that an idle or slow client does not pin much memory.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
LINGER_SECONDS = 2.0  # how long a client whose backend has gone may take to close

Forward = Callable[[bytes], None]
#: Notes each chunk of one direction for the session's :class:`LastWord`.
Note = Callable[[bytes], None]
#: An observer's hook for one direction: sees each chunk first; False keeps it back.
Look = Callable[[bytes], bool]


class Observer(Protocol):
    """Watches one relayed session without owning either end (pool tracking).

    ``client_data`` sees the client's plaintext on its way to the backend and may keep a chunk
    back (False); ``backend_data`` sees the backend's bytes on their way to the client. When
    the client's connection is lost, ``reusable`` decides whether the backend stays open; if
    so, the relay detaches it and hands it over with ``reuse`` (after the session's own close
    hook).
    """

    def client_data(self, data: bytes) -> bool: ...

    def backend_data(self, data: bytes) -> bool: ...

    def reusable(self, backend: asyncio.Transport) -> bool: ...

    def reuse(self, backend: asyncio.Transport) -> None: ...


class RelayEnd(asyncio.Protocol):
    """One side of a spliced session; forwards what it receives as it is."""

    __slots__ = (
        "farewell",
        "forward",
        "lingering",
        "look",
        "note",
        "observer",
        "on_close",
        "peer",
        "transport",
    )

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport: asyncio.Transport | None = transport
        self.peer: RelayEnd | None = None
        self.forward: Forward | None = None  # the other side's write; None once it is gone
        self.note: Note = _ignore  # the session's LastWord, for this direction
        self.look: Look | None = None  # the observer's hook for this direction
        self.on_close: Callable[[], None] | None = None
        self.observer: Observer | None = None  # on the client's end, when one watches
        # On the backend's end: what the client still hears when the backend has gone.
        self.farewell: Callable[[], bytes] | None = None
        # On the client's end, once its backend has gone: the timer that ends the wait.
        self.lingering: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        self.note(data)
        look = self.look
        if look is not None and not look(data):
            return
        forward = self.forward
        if forward is not None:
            forward(data)

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

    def goodbye(self) -> bytes:
        """What the client hears last, before the socket closes (nothing, in plaintext)."""
        return b""

    def linger(self) -> None:
        """The client's end, after its backend has gone: goodbye, half-close, then drop what
        still comes until the client closes (see the module's docstring)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.note, self.look, self.forward = _ignore, None, None
        goodbye = self.goodbye()
        if goodbye:
            transport.write(goodbye)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.lingering = asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        farewell = self.farewell
        if farewell is not None and self.forward is not None:
            last = farewell()  # the backend vanished: FATAL 08006 unless it said its word
            if last:
                self.data_received(last)
        if self.lingering is not None:
            self.lingering.cancel()
            self.lingering = None
        peer, on_close, observer = self.peer, self.on_close, self.observer
        self.peer = self.transport = self.forward = self.look = None
        self.on_close = self.observer = None
        kept = None
        if peer is not None:
            peer.peer = None
            peer.forward = None
            other = peer.transport
            if observer is not None and other is not None and observer.reusable(other):
                peer.transport, kept = None, other  # detached: handed over below
            elif self.farewell is not None:
                peer.linger()  # we are the backend's end: the client hears the end calmly
            else:
                peer.close()
        if on_close is not None:
            on_close()
        if kept is not None and observer is not None:
            observer.reuse(kept)


def _ignore(data: bytes) -> None:
    """The note of an end outside a session (never called once :func:`make_ends` ran)."""


def _channel_failed(err: ChannelError, client: asyncio.Transport | None) -> None:
    """Log a channel's failure, send the client what the channel still owes it (a TLS alert),
    and close the client's socket without a goodbye."""
    logs.report(log, logging.INFO, err)
    if client is not None:
        client.write(err.output)
        client.close()


class DecryptingEnd(RelayEnd):
    """The client's side of an encrypted session: what arrives goes through the channel, the
    plaintext is forwarded; the channel's goodbye precedes every close."""

    __slots__ = ("channel",)

    def __init__(self, transport: asyncio.Transport, channel: Channel) -> None:
        super().__init__(transport)
        self.channel = channel

    def data_received(self, data: bytes) -> None:
        if self.lingering is not None:
            return  # the backend has gone; the channel has said goodbye
        channel = self.channel
        try:
            plain = channel.feed(data)
        except ChannelError as err:
            _channel_failed(err, self.transport)
            return
        if plain:
            self.note(plain)
            look = self.look
            if look is None or look(plain):
                forward = self.forward
                if forward is not None:
                    forward(plain)
        if self.transport is not None:
            queued = channel.pending_output()  # e.g. a TLS 1.3 KeyUpdate answer
            if queued:
                self.transport.write(queued)
            if channel.peer_closed:
                self.close()

    def close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            # be_tls_close: close_notify before the socket goes. After a bare TCP close psql 15
            # says "SSL SYSCALL error: EOF detected", not PostgreSQL's "SSL connection has
            # been closed unexpectedly" (test_shutdown_tls compares them).
            transport.write(self.channel.close())
            transport.close()

    def goodbye(self) -> bytes:
        return self.channel.close()


class EncryptingEnd(RelayEnd):
    """The backend's side of an encrypted session: what the backend says goes to the client
    through the client's channel."""

    __slots__ = ("channel",)

    def __init__(self, transport: asyncio.Transport, channel: Channel) -> None:
        super().__init__(transport)
        self.channel = channel

    def data_received(self, data: bytes) -> None:
        self.note(data)
        look = self.look
        if look is not None and not look(data):
            return
        forward = self.forward
        if forward is not None:
            try:
                forward(self.channel.encrypt(data))
            except ChannelError as err:
                _channel_failed(err, None if self.peer is None else self.peer.transport)


def make_ends(
    client: asyncio.Transport,
    backend: asyncio.Transport,
    channel: Channel,
    observer: Observer | None = None,
) -> tuple[RelayEnd, RelayEnd]:
    """The wired pair of protocols for a session (client's end, backend's end)."""
    client_end: RelayEnd
    backend_end: RelayEnd
    if channel.transparent:
        client_end, backend_end = RelayEnd(client), RelayEnd(backend)
    else:
        client_end, backend_end = DecryptingEnd(client, channel), EncryptingEnd(backend, channel)
    client_end.forward, backend_end.forward = backend.write, client.write
    client_end.peer, backend_end.peer = backend_end, client_end
    last_word = LastWord()
    client_end.note, backend_end.note = last_word.client_data, last_word.backend_data
    backend_end.farewell = last_word.farewell
    if observer is not None:
        client_end.look, backend_end.look = observer.client_data, observer.backend_data
        client_end.observer = observer
    return client_end, backend_end


def splice(
    client: asyncio.Transport,
    backend: asyncio.Transport,
    ends: tuple[RelayEnd, RelayEnd],
    *,
    to_client: bytes,
    to_backend: bytes,
    on_close: Callable[[], None],
) -> None:
    """Switch both transports to relaying through ``ends`` (from :func:`make_ends`), after
    flushing bytes already in hand.

    ``to_client`` is already encoded for the wire (through the client's channel).
    """
    client_end, backend_end = ends
    client_end.on_close = on_close
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
