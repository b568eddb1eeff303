"""Backend connection reuse (``pool_mode = session``).

PostgreSQL forks a process per connection; a secure front door that reuses backend connections
accepts new TLS clients faster than PostgreSQL can fork. A backend connection is reused only by
a client with the same role, database and startup parameters (so its session defaults are
exactly what that client asked for), after ``server_reset_query`` succeeded on it (and a query
for a random marker, sent with it, came back second: the proof that nothing of the previous
client's response was still on its way), and only if the previous client left cleanly: it sent
Terminate while the backend was idle outside a transaction. Anything else closes the backend
instead. A backend is never shared between roles.

The relay learns "idle" and "clean exit" from the last bytes of each chunk (ReadyForQuery ``I``
ends the backend's chunk; Terminate is the client's whole last chunk), which costs one
``endswith`` per chunk and no message parsing. :class:`ExitTracker` watches a session as the
relay's observer: the ends show it every chunk before forwarding it; it owns neither end.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import select
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pggate.proto import codec, codes, query
from pggate.proto.backend import LoginComplete
from pggate.proto.errors import ProtocolViolation
from pggate.server.inbox import InboxProtocol

log = logging.getLogger("pggate.pool")

PoolKey = tuple[str, str, str, tuple[tuple[str, str], ...]]
IDLE_READY = codec.ready_for_query(codes.TX_IDLE)
TERMINATE = codec.terminate()
RESET_TIMEOUT = 10.0
SWEEP_INTERVAL = 5.0


def pool_key(host: str, user: str, database: str, parameters: Mapping[str, str]) -> PoolKey:
    """Backends are reused per backend host, role, database and startup parameters."""
    return (host, user, database, tuple(sorted(parameters.items())))


@dataclass(slots=True)
class PooledBackend:
    """An idle, reset backend connection and what its login told the first client."""

    transport: asyncio.Transport
    protocol: InboxProtocol
    login: LoginComplete
    created: float
    idle_since: float = 0.0

    def usable(self) -> bool:
        return (
            not self.protocol.eof
            and not self.protocol.inbox
            and not self.transport.is_closing()
            and socket_quiet(self.transport)
        )


def socket_quiet(transport: asyncio.Transport) -> bool:
    """Nothing to read and no hang-up on an idle backend's socket.

    The event loop learns of a backend that died a moment ago (``kill -9``, a crash restart,
    ``pg_ctl restart -m fast``: its FATAL or FIN is already in the kernel) only on its next
    turn; one ``poll(2)`` here keeps such a connection from being handed to a client."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)
    return not poller.poll(0)


class ExitTracker:
    """The pool's :class:`~pggate.server.relay.Observer` of one relayed session: what the relay
    saw that decides whether the backend may be reused, and the hand-over when the client
    leaves. It keeps the client's Terminate away from the backend."""

    __slots__ = ("_release", "backend_idle", "client_clean_exit")

    def __init__(self, release: Callable[[asyncio.Transport], None]) -> None:
        self._release = release
        self.backend_idle = True
        self.client_clean_exit = False

    def client_data(self, data: bytes) -> bool:
        if data == TERMINATE:
            self.client_clean_exit = True
            return False
        self.backend_idle = False  # a request is on its way; idle again at its ReadyForQuery
        return True

    def backend_data(self, data: bytes) -> bool:
        self.backend_idle = data.endswith(IDLE_READY)
        return True

    def reusable(self, backend: asyncio.Transport) -> bool:
        """The client has gone: the backend may be reset and kept only after a Terminate
        while it was idle."""
        return self.client_clean_exit and self.backend_idle and not backend.is_closing()

    def reuse(self, backend: asyncio.Transport) -> None:
        self._release(backend)


@dataclass(slots=True)
class BackendPool:
    """Idle backend connections by (role, database, startup parameters)."""

    size: int = 20
    idle_timeout: float = 600.0
    lifetime: float = 3600.0
    reset_query: str = "DISCARD ALL"
    idle: dict[PoolKey, list[PooledBackend]] = field(default_factory=dict)
    _sweeper: asyncio.TimerHandle | None = None

    def configure(self, size: int, idle_timeout: float, lifetime: float, reset: str) -> None:
        self.size, self.idle_timeout, self.lifetime = size, idle_timeout, lifetime
        self.reset_query = reset

    def acquire(self, key: PoolKey) -> PooledBackend | None:
        entries = self.idle.get(key)
        now = time.monotonic()
        while entries:
            entry = entries.pop()
            if entry.usable() and now - entry.created < self.lifetime:
                return entry
            entry.transport.close()
        return None

    def checkin(self, key: PoolKey, entry: PooledBackend) -> None:
        entries = self.idle.setdefault(key, [])
        if len(entries) >= self.size or time.monotonic() - entry.created >= self.lifetime:
            entry.transport.close()
            return
        entry.idle_since = time.monotonic()
        entries.append(entry)
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep)

    def watch(self, key: PoolKey, login: LoginComplete, created: float) -> ExitTracker:
        """The observer for a session relayed over a backend with this ``login``."""

        def release(transport: asyncio.Transport) -> None:
            self.release(key, transport, login, created)

        return ExitTracker(release)

    def release(
        self, key: PoolKey, transport: asyncio.Transport, login: LoginComplete, created: float
    ) -> None:
        """A client left cleanly: reset the backend, then keep it (or close it on failure)."""
        protocol = InboxProtocol()
        transport.set_protocol(protocol)
        protocol.transport = transport
        asyncio.get_running_loop().create_task(
            self._reset(key, PooledBackend(transport, protocol, login, created))
        )

    async def _reset(self, key: PoolKey, entry: PooledBackend) -> None:
        """server_reset_query, then a query for a random marker in the same write: the backend
        is kept only when the reset succeeded, idle, and the *second* result is the marker's.
        The relay judged "idle" from a read's last bytes (ExitTracker); a result whose data
        ended a read with ReadyForQuery's six bytes would fool it, and the old response's
        ReadyForQuery would then pass for the reset's. The marker cannot be fooled so."""
        marker = secrets.token_hex(8)
        reset, check = query.QueryResult(), query.QueryResult()
        entry.transport.write(
            query.simple_query(self.reset_query)
            + query.simple_query(f"SELECT {query.quote_literal(marker)}")
        )
        try:
            async with asyncio.timeout(RESET_TIMEOUT):
                if not await self._read(entry, reset):
                    return
                if not await self._read(entry, check, reset.rest()):
                    return
        except TimeoutError:
            log.info("backend reset timed out; closing the backend connection")
            entry.transport.close()
            return
        except ProtocolViolation as exc:
            log.info("backend reset failed: %s; closing the backend connection", exc)
            entry.transport.close()
            return
        if reset.error is not None or not reset.idle:
            log.info("backend reset failed: %s", (reset.error or {}).get("M", "not idle"))
            entry.transport.close()
            return
        if check.rows != [[marker]] or not check.idle or check.rest():
            log.info("backend reset failed: the backend was not idle; closing it")
            entry.transport.close()
            return
        self.checkin(key, entry)

    @staticmethod
    async def _read(entry: PooledBackend, result: query.QueryResult, first: bytes = b"") -> bool:
        """Read one result whole; False (and the backend closed) if it went away first."""
        data = first + entry.protocol.take()
        while not result.receive(data):
            if not await entry.protocol.wait_for_data():
                entry.transport.close()
                return False
            data = entry.protocol.take()
        return True

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        for key, entries in list(self.idle.items()):
            keep = []
            for entry in entries:
                expired = (
                    now - entry.idle_since >= self.idle_timeout
                    or now - entry.created >= self.lifetime
                )
                if expired or not entry.usable():
                    entry.transport.close()
                else:
                    keep.append(entry)
            if keep:
                self.idle[key] = keep
            else:
                del self.idle[key]
        if self.idle:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)

    def close_all(self) -> None:
        for entries in self.idle.values():
            for entry in entries:
                entry.transport.close()
        self.idle.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
