"""One client connection from accept to relay: the I/O shell of :class:`~pggate.login.LoginMachine`.

The machine decides everything between accept and relay (negotiation, admission, pg_hba.conf,
authentication, the backend login, what to send and log). This module executes its commands
(the socket, TLS and GSS handshakes on the channel, catalog and DNS look-ups, the backend
connection, the pool, cancel keys, the one login timer) and feeds the answers back, then hands
the established session to :mod:`pggate.server.relay`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from pggate import login as lm
from pggate import logs
from pggate.login import State
from pggate.proto import codec, codes
from pggate.proto.backend import PLAIN_TCP, LoginComplete, LoginRefresh
from pggate.proto.errors import ClientError
from pggate.proto.messages import StartupMessage
from pggate.server import authflow, catalog, link, relay
from pggate.server.cancel_keys import CancelKeys
from pggate.server.inbox import InboxProtocol
from pggate.server.pool import BackendPool, PooledBackend, PoolKey, pool_key
from pggate.transport import PLAIN, Channel, ChannelError, GssError, TlsChannel

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from pggate.conninfo import BackendAddress
    from pggate.hop.route import Route
    from pggate.policy import Snapshot

log = logging.getLogger("pggate.session")

_OVER = (State.CLOSED, State.RELAYING)


class SessionHost(Protocol):
    """What a session needs from the gateway that accepted it (server.gateway.Gateway), so
    that this module does not import the gateway, which creates sessions."""

    snapshot: Snapshot
    stopping: bool
    connection_count: int
    handshaking: set[ClientSession]
    unauthenticated: OrderedDict[ClientSession, None]
    local_interfaces: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]
    mock_nonce: authflow.MockNonce
    pool: BackendPool
    cancel_keys: CancelKeys

    def accepted(self, session: ClientSession) -> None: ...

    async def cancel(self, pid: int, key: bytes) -> None: ...

    def is_relaying(self, session: ClientSession) -> bool: ...

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
    ) -> None: ...


def host_order(route: Route) -> list[int] | None:
    """libpq's load_balance_hosts=random: the hosts in a random order, per connection."""
    if route.target.load_balance_hosts != "random":
        return None
    order = list(range(len(route.addresses)))
    random.shuffle(order)
    return order


class ClientSession(InboxProtocol):
    """The pre-relay life of one client connection."""

    def __init__(self, gateway: SessionHost) -> None:
        super().__init__()
        self.gateway = gateway
        # The one snapshot this connection is served with, taken at accept: a reload never
        # mixes old and new files, TLS context and binding hash within one connection.
        self.snapshot: Snapshot = gateway.snapshot
        self.host = "[unknown]"
        self.port = ""
        self.log_fields = logs.SessionFields()  # this connection's log line fields
        self.machine: lm.LoginMachine | None = None
        self.counted = False
        self.ended = False
        self.task: asyncio.Task[None] | None = None
        self.channel: Channel = PLAIN
        self.started = time.monotonic()
        self.deadline: float | None = None  # loop time of the machine's one timer
        self.backend: asyncio.Transport | None = None
        self.backend_inbox: InboxProtocol | None = None
        self.backend_created: float | None = None  # a pooled backend's first login
        self.backend_address: BackendAddress | None = None  # the host of the backend
        # The connection TLS or GSSAPI encryption was refused on (for the plan's next method).
        self.kept_link: link.Established | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.host, self.port = str(peer[0]), str(peer[1])
        self.log_fields = logs.SessionFields.accepted(
            self.host, self.port, transport.get_extra_info("sockname")
        )
        sock = transport.get_extra_info("socket")
        policy = self.snapshot.policy
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if policy.config.tcp_socket_buffer:
                size = policy.config.tcp_socket_buffer
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        self.machine = lm.LoginMachine(
            policy.config,
            policy.hba,
            policy.ident,
            policy.backend,
            host=self.host,
            port=self.port,
            ssl_enabled=self.snapshot.tls.context is not None,
            gss_enabled=self.snapshot.gss.enabled,
            local_interfaces=self.gateway.local_interfaces,
            backend_order=host_order(policy.backend),
        )
        self.task = asyncio.get_running_loop().create_task(self._run())
        # A task cancelled before its first step never runs _run's finally (evict, abort).
        self.task.add_done_callback(lambda _: self._end())
        self.gateway.handshaking.add(self)
        self.gateway.accepted(self)

    @property
    def remote_host(self) -> str:
        """What log lines call the client: its address, or with log_hostname its host name."""
        return self.machine.remote_host if self.machine is not None else self.host

    async def _run(self) -> None:
        machine = self.machine
        assert machine is not None
        logs.enter_session(self.log_fields)
        try:
            await self._login(machine)
        except Exception:
            log.exception("unexpected error in client session from host=%s", self.remote_host)
            error = ClientError(codes.SQLSTATE_INTERNAL_ERROR, "internal error in pggate")
            self.send(codec.error_response(error))
            log.log(lm.Level.FATAL, "%s", error.message)
        finally:
            self._end()

    def _end(self) -> None:
        """The login is over: close the connection unless the relay has taken it (once)."""
        if self.ended:
            return
        self.ended = True
        self.gateway.handshaking.discard(self)
        self.gateway.unauthenticated.pop(self, None)
        if not self.gateway.is_relaying(self):
            self._release()
            if self.backend is not None:
                self.backend.close()
            # The channel's goodbye before the socket goes (be_tls_close: close_notify).
            # OpenSSL 3 clients report a bare EOF as "unexpected eof while reading" (libpq
            # 17+ waits for the close after a CancelRequest sent inside TLS, and fails on
            # that).
            goodbye = self.channel.close()
            if goodbye:
                self.write(goodbye)
            self.close()

    async def _login(self, machine: lm.LoginMachine) -> None:
        """Execute the machine's commands in order; whenever it waits, read what it waits for."""
        pending = deque(machine.feed(lm.Start()))
        while pending or machine.state not in _OVER:
            if pending:
                command = pending.popleft()
                pending.extendleft(reversed(await self._timed(self._execute(command))))
            else:
                pending.extend(await self._timed(self._read()))

    async def _timed(self, step: Awaitable[list[lm.Command]]) -> list[lm.Command]:
        """One step under the machine's timer; on expiry the machine hears Timeout."""
        timer = asyncio.timeout_at(self.deadline)
        try:
            async with timer:
                return await step
        except TimeoutError:
            if not timer.expired():
                raise
        return self._feed(lm.Timeout())

    def _feed(self, *events: lm.Event) -> list[lm.Command]:
        """Feed ``events`` in order, none after the machine is done (a Close or the relay)."""
        machine = self.machine
        assert machine is not None
        out: list[lm.Command] = []
        for event in events:
            if machine.state in _OVER:
                break
            out += machine.feed(event)
        self.log_fields.follow(machine.remote_host, machine.startup)
        return out

    # --- the client ---------------------------------------------------------------------------

    async def _read(self) -> list[lm.Command]:
        """The machine waits: for the backend during its login, else for the client."""
        machine = self.machine
        assert machine is not None
        if machine.state is State.BACKEND_LOGIN:
            inbox = self.backend_inbox
            assert inbox is not None
            if not await inbox.wait_for_data():
                return self._feed(lm.BackendEof())
            return self._feed(*self._client_so_far(), lm.BackendData(inbox.take()))
        while await self.wait_for_data():
            event = self._decrypt(self.take())
            if event is not None:
                return self._feed(event)
            if self.channel.peer_closed:
                break
        return self._feed(lm.ClientEof())

    def _decrypt(self, raw: bytes) -> lm.ClientData | lm.ChannelFailed | None:
        """Raw client bytes through the channel: the plaintext, a failure, or nothing yet."""
        try:
            data = self.channel.feed(raw)
        except ChannelError as err:
            return lm.ChannelFailed(err)
        queued = self.channel.pending_output()
        if queued:
            self.write(queued)
        return lm.ClientData(data) if data else None

    def _client_so_far(self) -> list[lm.Event]:
        """What the client sent while the backend logged in, read without waiting: its bytes
        go to the backend after the greeting; a client already gone gets no relay."""
        events: list[lm.Event] = []
        if self.inbox:
            event = self._decrypt(self.take())
            if event is not None:
                events.append(event)
        if self.eof or self.transport is None or self.transport.is_closing():
            events.append(lm.ClientEof())
        return events

    def send(self, data: bytes) -> None:
        """Write protocol bytes to the client, through its channel."""
        self.write(self.channel.encrypt(data))

    # --- the commands -------------------------------------------------------------------------

    async def _execute(self, command: lm.Command) -> list[lm.Command]:
        """Do what ``command`` says; the machine's commands after the answer, if it has one."""
        gateway = self.gateway
        policy = self.snapshot.policy
        if isinstance(command, lm.Log):
            self._log(command)
        elif isinstance(command, lm.SendToClient):
            self.send(command.data)
        elif isinstance(command, lm.WriteRaw):
            self.write(command.data)
        elif isinstance(command, lm.SetTimeout):
            seconds = command.seconds
            now = asyncio.get_running_loop().time()
            self.deadline = None if seconds is None else now + seconds
        elif isinstance(command, lm.LookUpRemoteHost):
            return self._feed(await self._remote_host(policy.config.authentication_timeout))
        elif isinstance(command, lm.StartTLS | lm.StartDirectTLS):
            return await self._start_tls(command)
        elif isinstance(command, lm.StartGSS):
            return await self._start_gss()
        elif isinstance(command, lm.Cancel):
            await gateway.cancel(command.pid, command.key)
        elif isinstance(command, lm.CheckAdmission):
            return self._feed(lm.Admission(gateway.stopping, gateway.connection_count))
        elif isinstance(command, lm.TakeSlot):
            # Authenticated: a session now, no longer a connection awaiting authentication.
            gateway.connection_count += 1
            self.counted = True
            gateway.unauthenticated.pop(self, None)
        elif isinstance(command, lm.LookUpRoles):
            try:
                roles = await catalog.role_memberships(policy.backend, command.user)
            except ClientError as err:
                return self._feed(lm.RoleLookupFailed(err))
            return self._feed(lm.RolesFound(roles))
        elif isinstance(command, lm.LookUpHostName):
            name = await self._verified_hostname(command.address, command.reverse_name)
            return self._feed(lm.HostNameChecked(name))
        elif isinstance(command, lm.FetchSecret):
            return self._feed(await self._fetch_secret(command.sql))
        elif isinstance(command, lm.StartGssAuth):
            return self._feed(self._gss_exchange(command))
        elif isinstance(command, lm.ConnectBackend):
            return await self._connect_backend(command)
        elif isinstance(command, lm.SendToBackend):
            assert self.backend is not None
            self.backend.write(command.data)
        elif isinstance(command, lm.RegisterCancelKey):
            assert self.backend_address is not None
            pid, key = gateway.cancel_keys.register(
                command.key_length,
                command.backend_pid,
                command.backend_key,
                self.backend_address,
                policy.backend,
            )
            return self._feed(lm.CancelKeyIssued(pid, key))
        elif isinstance(command, lm.StartRelay):
            self._start_relay(command)
        else:
            if command.error:
                self.send(command.error)
            if command.log:
                self._log(command.log, logs.sqlstate_sent(command.error))
        return []

    def _log(self, line: lm.Log, sqlstate: str | None = None) -> None:
        extra = {"detail": line.detail, "hint": line.hint, "sqlstate": sqlstate}
        log.log(line.level, "%s", line.text, extra=extra)

    async def _remote_host(self, limit: float) -> lm.RemoteHostFound | lm.RemoteHostFailed:
        """log_hostname: BackendInitialize's pg_getnameinfo_all without NI_NUMERICHOST.

        As in PostgreSQL the look-up does not count against authentication_timeout; pggate
        still bounds it by that time so a hanging resolver cannot hold the connection forever.
        """
        try:
            async with asyncio.timeout(limit):
                name, _ = await asyncio.get_running_loop().getnameinfo(
                    (self.host, int(self.port or 0)), socket.NI_NUMERICSERV
                )
        except (OSError, UnicodeError, ValueError, TimeoutError) as exc:
            return lm.RemoteHostFailed(str(exc))
        return lm.RemoteHostFound(name)

    async def _verified_hostname(
        self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, name: str | None
    ) -> str | None:
        """Reverse-resolve the client and confirm with a forward look-up (hba.c check_hostname)."""
        loop = asyncio.get_running_loop()
        try:
            if name is None:
                name, _ = await loop.getnameinfo((str(address), 0), socket.NI_NAMEREQD)
            infos = await loop.getaddrinfo(name, None)
        except (OSError, UnicodeError):
            return None
        forward = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
        return name if address in forward else None

    async def _start_tls(self, command: lm.StartTLS | lm.StartDirectTLS) -> list[lm.Command]:
        """Bytes already received behind the request go into the TLS layer (PostgreSQL 17+
        behaviour), never to the plaintext protocol: the CVE-2021-23214 class of attack."""
        tls = self.snapshot.tls
        assert tls.context is not None  # the machine accepts TLS only when it is enabled
        initial = command.pending if isinstance(command, lm.StartTLS) else command.initial
        channel = TlsChannel(tls.context, initial + self.take(), end_point_hash=tls.end_point_hash)
        return await self._establish(channel)

    async def _start_gss(self) -> list[lm.Command]:
        """The GSSAPI encryption handshake. Bytes that came in with the GSSENCRequest are not
        fed to it (secure_open_gssapi reads the socket, never PostgreSQL's receive buffer):
        the machine refuses them once the channel is up."""
        # Imported here: python-gssapi loads only once a client asks for GSS encryption.
        from pggate.transport import gss

        keytab = self.snapshot.gss.keytab
        assert keytab is not None  # the machine accepts GSS only when it is enabled
        try:
            credentials = gss.acceptor_credentials(keytab)
        except ChannelError as err:
            return self._feed(lm.ChannelFailed(err))
        channel = gss.GssChannel(
            credentials, accept_delegation=self.snapshot.policy.config.gss_accept_delegation
        )
        return await self._establish(channel)

    async def _establish(self, channel: Channel) -> list[lm.Command]:
        """Drive a channel's handshake: write what it says, feed it what arrives."""
        try:
            while True:
                raw, done = channel.handshake()
                if raw:
                    self.write(raw)
                if done:
                    break
                if not await self.wait_for_data():
                    return self._feed(lm.ClientEof())
                channel.feed(self.take())
        except ChannelError as err:
            return self._feed(lm.ChannelFailed(err))
        self.channel = channel
        out = self._feed(lm.ChannelEstablished(channel.info))
        if self.machine is not None and self.machine.state not in _OVER:
            event = self._decrypt(b"")  # plaintext that arrived with the handshake
            if event is not None:
                out += self._feed(event)
        return out

    async def _fetch_secret(self, sql: str) -> lm.SecretFound | lm.SecretLookupFailed:
        policy = self.snapshot.policy
        reported: Mapping[str, str] = {}
        try:
            rows, reported = await catalog.run_query_reporting(policy.backend, sql)
        except UnicodeEncodeError:
            rows = []  # a name the backend cannot hold is a role that does not exist
        except ClientError as err:
            return lm.SecretLookupFailed(err)
        nonce = await self.gateway.mock_nonce.get(policy)
        return lm.SecretFound(rows, reported, nonce, datetime.now(UTC))

    def _gss_exchange(self, command: lm.StartGssAuth) -> lm.GssExchangeReady | lm.GssExchangeFailed:
        # Imported here: python-gssapi loads only when a pg_hba.conf line asks for gss.
        from pggate.auth import gss as gss_auth

        try:
            credentials = authflow.acceptor(self.snapshot.gss)
        except GssError as err:
            return lm.GssExchangeFailed(err)
        exchange = gss_auth.GssAuthExchange(
            credentials, user=command.user, accept_delegation=command.accept_delegation
        )
        return lm.GssExchangeReady(exchange)

    async def _connect_backend(self, command: lm.ConnectBackend) -> list[lm.Command]:
        """Carry out one attempt of the machine's plan: a pooled backend for this host, role,
        database and parameters, or a new link (TLS or GSSAPI encryption as the attempt
        says; a GSSAPI-encrypted one is a transport of plaintext like a TLS one)."""
        policy = self.snapshot.policy
        startup, address, attempt = command.startup, command.address, command.attempt
        kept, self.kept_link = self.kept_link, None
        if self.backend is not None and not attempt.same_connection:
            self.backend.close()
            self.backend = self.backend_inbox = None
        self.backend_address = address
        if policy.config.pool_mode == "session" and not attempt.same_connection:
            reused = self.gateway.pool.acquire(self._pool_key(startup))
            if reused is not None:
                login = await self._refreshed(reused) if command.refresh else reused.login
                if login is not None:
                    self.backend, self.backend_created = reused.transport, reused.created
                    return self._feed(*self._client_so_far(), lm.BackendReused(login))
        self.backend_created = None
        route = policy.backend
        try:
            established = await link.establish(address, attempt, route.tls, kept, route.gss)
        except link.Unreachable as exc:
            # The embedded cluster is pggate's own: when it cannot be reached, its postmaster
            # died and embedded/watchdog.py is starting it again.
            return self._feed(lm.BackendUnreachable(str(exc), starting=policy.embedded))
        except link.TlsRefused as exc:
            self.backend, self.backend_inbox = exc.transport, exc.protocol
            self.kept_link = link.Established(exc.transport, exc.protocol, PLAIN_TCP)
            return self._feed(lm.BackendTlsRefused())
        except link.GssRefused as exc:
            self.backend, self.backend_inbox = exc.transport, exc.protocol
            self.kept_link = link.Established(exc.transport, exc.protocol, PLAIN_TCP)
            return self._feed(lm.BackendGssRefused())
        except link.LinkFailed as exc:
            return self._feed(lm.BackendLinkFailed(str(exc)))
        except link.LinkBroken as exc:
            return self._feed(lm.BackendLinkFailed(str(exc), final=True))
        self.backend, self.backend_inbox = established.transport, established.protocol
        return self._feed(lm.BackendConnected(established.security))

    async def _refreshed(self, reused: PooledBackend) -> LoginComplete | None:
        """A pooled backend's login with what its server reports now (LoginRefresh), or None
        (it is closed) when it does not answer properly within connect_timeout."""
        refresh = LoginRefresh(reused.login)
        reused.transport.write(refresh.request())
        try:
            async with asyncio.timeout(self.snapshot.policy.backend.connect_timeout):
                while await reused.protocol.wait_for_data():
                    login = refresh.receive(reused.protocol.take())
                    if login is not None:
                        return login
        except (TimeoutError, ClientError) as exc:
            log.debug("pooled backend dropped: %s", exc)
        reused.transport.close()
        return None

    def _pool_key(self, startup: StartupMessage) -> PoolKey:
        """Pooled backends are per host: a pooled connection is only ever reused on the host
        the plan's attempt names (and then judged against target_session_attrs again)."""
        assert self.backend_address is not None
        return pool_key(
            self.backend_address.describe(), startup.user, startup.database, startup.params
        )

    def _start_relay(self, command: lm.StartRelay) -> None:
        machine = self.machine
        assert machine is not None and machine.startup is not None
        assert self.transport is not None and self.backend is not None
        startup = machine.startup
        observer = None
        if self.snapshot.policy.config.pool_mode == "session":
            created = self.backend_created
            observer = self.gateway.pool.watch(
                self._pool_key(startup),
                command.login,
                time.monotonic() if created is None else created,
            )
        channel = self.channel
        self.gateway.start_relay(
            self,
            self.transport,
            self.backend,
            channel,
            to_client=channel.encrypt(command.to_client),
            to_backend=command.to_backend,
            cancel_pid=command.cancel_pid,
            observer=observer,
        )

    # --- the end ------------------------------------------------------------------------------

    def _release(self) -> None:
        if self.counted:
            self.counted = False
            self.gateway.connection_count -= 1

    def finish(self) -> None:
        """The relayed session has ended: give back its slot, log it if asked."""
        self._release()
        startup = self.machine.startup if self.machine is not None else None
        if self.snapshot.policy.config.log_disconnections and startup is not None:
            elapsed = time.monotonic() - self.started
            hours, rest = divmod(elapsed, 3600)
            minutes, seconds = divmod(rest, 60)
            log.info(
                "disconnection: session time: %d:%02d:%06.3f user=%s database=%s host=%s port=%s",
                hours,
                minutes,
                seconds,
                startup.user,
                startup.database,
                self.remote_host,
                self.port,
                extra=logs.about(self.log_fields),
            )

    def abort(self) -> None:
        """Stop a session that has not reached the relay (shutdown, or closed to make room for
        a new connection). Its task's end (:meth:`_end`) closes the connection, after
        close_notify on TLS; closing here first would cut it."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
        else:
            self.close()


__all__ = ["ClientSession", "relay"]
