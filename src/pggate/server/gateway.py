"""The shared state of one serving process: the current snapshot, counts, cancel keys, live
sessions."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from collections import OrderedDict
from collections.abc import Sequence

import psutil

from pggate.conninfo import BackendAddress
from pggate.directory import pidfile
from pggate.hop.route import Route
from pggate.policy import Snapshot
from pggate.proto import codec
from pggate.proto.errors import ClientError
from pggate.server import catalog, pool, relay, upstream, workers
from pggate.server.authflow import MockNonce
from pggate.server.cancel_keys import CancelKeys
from pggate.server.session import ClientSession
from pggate.transport import Channel

log = logging.getLogger("pggate.gateway")

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
# During a flood of new connections, at most one line per interval names a connection closed
# to make room; the others are counted, and the count is logged when the interval ends.
EVICTION_LOG_INTERVAL = 10.0


def local_interfaces() -> tuple[Interface, ...]:
    """Addresses and netmasks of this host's interfaces, for samehost/samenet."""
    found: list[Interface] = []
    for addresses in psutil.net_if_addrs().values():
        for entry in addresses:
            if entry.netmask is None:
                continue
            try:
                found.append(
                    ipaddress.ip_interface(f"{entry.address.split('%')[0]}/{entry.netmask}")
                )
            except ValueError:
                continue
    return tuple(found)


async def forward_cancel(socket_name: str, pid: int, key: bytes) -> None:
    """Hand a cancel request to the worker that owns the session."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, socket_name)
        await loop.sock_sendall(sock, codec.cancel_request(pid, key))
    except OSError as exc:
        log.warning("could not forward cancel request to its worker: %s", exc)
    finally:
        sock.close()


class EvictionLog:
    """The LOG lines of connections closed to make room (:meth:`Gateway.accepted`): the first
    one names its host; during a flood the rest of the interval is one summary line."""

    def __init__(self) -> None:
        self.quiet_until = 0.0  # loop time
        self.suppressed = 0

    def closed(self, host: str, port: str, bound: int) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now < self.quiet_until:
            self.suppressed += 1
            return
        log.info(
            "closing connection from host=%s port=%s to make room: "
            "max_startup_connections (%d) connections are awaiting authentication",
            host,
            port,
            bound,
        )
        self.quiet_until = now + EVICTION_LOG_INTERVAL
        loop.call_at(self.quiet_until, self._summary)

    def _summary(self) -> None:
        if self.suppressed:
            log.info(
                "closed %d more connections awaiting authentication to make room in the last "
                "%.0f s",
                self.suppressed,
                EVICTION_LOG_INTERVAL,
            )
            self.suppressed = 0


class Gateway:
    """State shared by all sessions of one process. ``snapshot`` is what new connections are
    served with; a reload replaces it with one assignment (:meth:`install`)."""

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        worker: int = 0,
        supervisor_pid: int | None = None,
    ) -> None:
        self.mock_nonce = MockNonce()
        self.worker = worker
        self.supervisor_pid = supervisor_pid  # set when several workers share the port
        self.pool = pool.BackendPool()
        self.reload_generation = 0
        self.install(snapshot)
        self.connection_count = 0
        self.stopping = False
        self.cancel_keys = CancelKeys(worker=worker)
        self.handshaking: set[ClientSession] = set()
        # Connections not yet past authentication, oldest first (max_startup_connections).
        self.unauthenticated: OrderedDict[ClientSession, None] = OrderedDict()
        self.evictions = EvictionLog()
        self.listen_sockets = 1  # set by the listener (the file-descriptor budget's backlogs)
        self.relaying: dict[ClientSession, tuple[relay.RelayEnd, relay.RelayEnd]] = {}
        self.local_interfaces = local_interfaces()
        self.idle = asyncio.Event()
        self.idle.set()

    def install(self, snapshot: Snapshot) -> None:
        """Serve new connections with ``snapshot``; established ones keep theirs."""
        self.snapshot = snapshot
        cfg = snapshot.policy.config
        self.pool.configure(
            cfg.pool_size, cfg.server_idle_timeout, cfg.server_lifetime, cfg.server_reset_query
        )
        if cfg.pool_mode != "session":
            self.pool.close_all()

    def reloaded(self, errors: Sequence[str]) -> None:
        """Publish what a SIGHUP did for ``pggate reload`` (``DIR/pggate.reload.N``): the
        errors logged, empty when every file was reloaded."""
        self.reload_generation += 1
        result = pidfile.ReloadResult(
            server=self.supervisor_pid or os.getpid(),
            pid=os.getpid(),
            generation=self.reload_generation,
            errors=tuple(errors),
        )
        try:
            pidfile.write_reload_result(self.snapshot.policy.config.directory, self.worker, result)
        except OSError as exc:
            log.warning("could not record the result of the reload: %s", exc)

    def new_session(self) -> ClientSession:
        return ClientSession(self)

    def accepted(self, session: ClientSession) -> None:
        """A new connection awaits authentication. With ``max_startup_connections`` of them
        already, the one that has waited longest is closed to make room, without a word (as
        authentication_timeout's expiry): a flood of connections that never authenticate can
        neither lock out real clients nor exhaust descriptors. Authenticated sessions leave
        this set (session.py, TakeSlot) and count against max_connections instead. O(1) per
        accept; a lowered bound after a reload is caught up on the next accept."""
        bound = self.snapshot.policy.config.max_startup_connections
        waiting = self.unauthenticated
        while len(waiting) >= bound:
            oldest, _ = waiting.popitem(last=False)
            self.evictions.closed(oldest.remote_host, oldest.port, bound)
            oldest.abort()
        waiting[session] = None

    def is_relaying(self, session: ClientSession) -> bool:
        return session in self.relaying

    def start_relay(
        self,
        session: ClientSession,
        client: asyncio.Transport,
        backend: asyncio.Transport,
        channel: Channel,
        *,
        to_client: bytes,
        to_backend: bytes,
        cancel_pid: int,
        observer: relay.Observer | None = None,
    ) -> None:
        ends = relay.make_ends(client, backend, channel, observer)
        self.relaying[session] = ends
        self.idle.clear()

        def closed() -> None:
            self.cancel_keys.forget(cancel_pid)
            if self.relaying.pop(session, None) is not None:
                session.finish()
            if not self.relaying:
                self.idle.set()

        relay.splice(
            client, backend, ends, to_client=to_client, to_backend=to_backend, on_close=closed
        )

    async def cancel(self, pid: int, key: bytes) -> None:
        owner = workers.worker_of_pid(pid)
        if self.supervisor_pid is not None and owner != self.worker:
            await forward_cancel(workers.cancel_socket_name(self.supervisor_pid, owner), pid, key)
            return
        target = self.cancel_keys.match(pid, key)
        if target is None:
            return
        if not target.backend_key:
            # The backend sent no BackendKeyData (a pooler in front of PostgreSQL may not):
            # there is nothing to cancel with, and a key-less CancelRequest is malformed.
            log.info("cancel request for process %d not forwarded: its backend gave no key", pid)
            return
        await upstream.send_cancel(
            target.route, target.backend, target.backend_pid, target.backend_key
        )

    async def terminate_backends(self, timeout: float) -> None:
        """Fast shutdown as PostgreSQL does it: each session's backend sends its clients FATAL
        57P01 "terminating connection due to administrator command", through the relay, at a
        message boundary; pggate itself could only cut the stream mid-message."""
        hosts: dict[tuple[Route, BackendAddress], set[int]] = {}
        for target in self.cancel_keys.targets.values():
            hosts.setdefault((target.route, target.backend), set()).add(target.backend_pid)
        if not hosts:
            return
        try:
            for (route, address), pids in hosts.items():
                await catalog.terminate_backends(route, address, sorted(pids))
            async with asyncio.timeout(timeout):
                await self.idle.wait()
        except (ClientError, TimeoutError) as exc:
            log.info("closing remaining sessions without a FATAL: %s", exc)

    def close_all(self) -> None:
        """Drop every session now (after the smart shutdown's grace, or fast shutdown's wait for
        backends to go); an encrypted client hears the channel's goodbye first."""
        for session in list(self.handshaking):
            session.abort()
        for client, backend in list(self.relaying.values()):
            client.close()
            backend.close()
        self.pool.close_all()
