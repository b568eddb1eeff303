"""A Protocol that buffers bytes for a coroutine, used until a session reaches the relay.

The pre-relay phase (negotiation, startup, authentication, backend login) is a conversation,
clearest written as a coroutine; the relay phase is pure callbacks. Both sides of a session start
on an :class:`InboxProtocol` and are switched to relay protocols with ``transport.set_protocol``
once the session is established.
"""

from __future__ import annotations

import asyncio
from typing import cast


class InboxProtocol(asyncio.Protocol):
    """Collect received bytes and let one coroutine wait for them."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.inbox = bytearray()
        self.eof = False
        self.lost_error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.inbox += data
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.lost_error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_for_data(self) -> bool:
        """Wait until more bytes arrive; False when the peer has gone and nothing is left."""
        if self.inbox:
            return True
        if self.eof:
            return False
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        return bool(self.inbox) or not self.eof

    def take(self) -> bytes:
        """Remove and return everything buffered so far."""
        data = bytes(self.inbox)
        self.inbox.clear()
        return data

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
