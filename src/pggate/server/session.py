"""One client connection from accept to relay: negotiate, startup, hba, auth, backend login.

The decisions are made by the sans-IO layers (:mod:`pggate.proto.negotiate`, :mod:`pggate.hba`,
:mod:`pggate.proto.backend`); this module performs their I/O, owns the
``authentication_timeout``, and hands the established session to :mod:`pggate.server.relay`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from typing import TYPE_CHECKING, NoReturn

from pggate import logs
from pggate.errors import ClientError, ProtocolViolation, SilentClose
from pggate.hba import HbaRule
from pggate.proto import codec, codes
from pggate.proto import negotiate as neg
from pggate.proto.backend import LoginFailed
from pggate.proto.messages import StartupMessage
from pggate.server import authflow, catalog, facts, relay, upstream
from pggate.server.authflow import AuthResult
from pggate.server.inbox import InboxProtocol
from pggate.server.pool import pool_key
from pggate.transport import PLAIN, Channel, ChannelError, TlsChannel

if TYPE_CHECKING:
    from pggate.policy import Policy, Snapshot, TlsState
    from pggate.server.gateway import Gateway

log = logging.getLogger("pggate.session")


class ClientSession(InboxProtocol):
    """The pre-relay life of one client connection."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self.gateway = gateway
        # The one snapshot this connection is served with, taken at accept: a reload never
        # mixes old and new files, TLS context and binding hash within one connection.
        self.snapshot: Snapshot = gateway.snapshot
        self.host = "[unknown]"
        self.port = ""
        # What log lines call the client: its address, or with log_hostname its host name
        # (PostgreSQL's port->remote_host).
        self.remote_host = self.host
        # A reverse lookup already made for log_hostname (port->remote_hostname), reused by
        # pg_hba.conf host-name matching, which still confirms it with a forward lookup.
        self.remote_hostname: str | None = None
        self.counted = False
        self.task: asyncio.Task[None] | None = None
        self.channel: Channel = PLAIN
        self.auth = AuthResult()
        self.started = time.monotonic()
        self.startup: StartupMessage | None = None
        # Decrypted (or plain) bytes received but not yet consumed by the current phase.
        self.plain = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.host, self.port = str(peer[0]), str(peer[1])
            self.remote_host = self.host
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.gateway.handshaking.add(self)

    async def _run(self) -> None:
        snapshot = self.snapshot
        policy = snapshot.policy
        try:
            if policy.config.log_hostname:
                await self._resolve_remote_host(policy.config.authentication_timeout)
            if "receipt" in policy.config.log_connections:
                log.info("connection received: host=%s port=%s", self.remote_host, self.port)
            try:
                async with asyncio.timeout(policy.config.authentication_timeout):
                    startup, protocol = await self._negotiate()
                    if startup is None:
                        return
                    self.startup = startup
                    self._admit()
                    rule = await self._check_hba(policy, startup)
                    self.auth = await authflow.authenticate(
                        self, snapshot, rule, startup, mock_nonce=self.gateway.mock_nonce
                    )
            except TimeoutError:
                # PostgreSQL's StartupPacketTimeoutHandler: exit without a word.
                return
            await self._open_backend(policy, startup, protocol)
        except SilentClose as err:  # first: some protocol errors are logged, never sent
            if str(err):
                log.info("%s", err)
        except ClientError as err:
            self._fail(err)
        except Exception:
            log.exception("unexpected error in client session from host=%s", self.remote_host)
            self._fail(ClientError(codes.SQLSTATE_INTERNAL_ERROR, "internal error in pggate"))
        finally:
            self.gateway.handshaking.discard(self)
            if not self.gateway.is_relaying(self):
                self._release()
                # The channel's goodbye before the socket goes (be_tls_close: close_notify).
                # OpenSSL 3 clients report a bare EOF as "unexpected eof while reading" (libpq
                # 17+ waits for the close after a CancelRequest sent inside TLS, and fails on
                # that).
                goodbye = self.channel.close()
                if goodbye:
                    self.write(goodbye)
                self.close()

    def send(self, data: bytes) -> None:
        """Write protocol bytes to the client, through its channel."""
        self.write(self.channel.encrypt(data))

    async def receive(self) -> bytes | None:
        """The next protocol bytes from the client (decrypted); None at end of stream."""
        if self.plain:
            data = bytes(self.plain)
            self.plain.clear()
            return data
        return await self._next_chunk()

    async def _next_chunk(self) -> bytes | None:
        """Read from the network (and decrypt); None at end of stream."""
        while await self.wait_for_data():
            channel = self.channel
            try:
                data = channel.feed(self.take())
            except ChannelError as err:
                self.write(err.output)
                logs.report(log, logging.INFO, err)
                raise SilentClose() from None
            queued = channel.pending_output()
            if queued:
                self.write(queued)
            if data:
                return data
            if channel.peer_closed:
                return None
        return None

    async def read_message(self, max_length: int) -> tuple[bytes, bytes]:
        """One typed frontend message (authentication phase). End of stream closes silently,
        as PostgreSQL's recv_password_packet does; a bad length is a protocol violation."""
        while True:
            parsed, consumed = codec.read_message(self.plain, max_length=max_length)
            if parsed is not None:
                kind, body = parsed[0], bytes(parsed[1])
                del self.plain[:consumed]
                return kind, body
            data = await self._next_chunk()
            if data is None:
                raise SilentClose()
            self.plain += data

    async def _negotiate(self) -> tuple[StartupMessage | None, int]:
        """Run the pre-startup exchange until a StartupMessage (or the end of the connection)."""
        tls = self.snapshot.tls
        gss = self.snapshot.gss.enabled
        trace = self.snapshot.policy.config.trace_connection_negotiation
        ssl_enabled = tls.context is not None
        negotiator = neg.Negotiator(ssl_enabled=ssl_enabled, gss_enabled=gss, trace=trace)
        while True:
            data = await self.receive()
            events = negotiator.receive(data) if data is not None else negotiator.eof()
            for event in events:
                if isinstance(event, neg.Send):
                    self.send(event.data)
                elif isinstance(event, neg.Trace):
                    log.info("%s", event.text)
                elif isinstance(event, neg.Close):
                    if event.error:
                        self.send(event.error)
                    if event.log:
                        log.info("%s", event.log)
                    return None, 0
                elif isinstance(event, neg.Cancel):
                    await self.gateway.cancel(event.pid, event.key)
                    return None, 0
                elif isinstance(event, neg.Startup):
                    # Bytes behind the startup packet belong to the authentication phase.
                    self.plain[:0] = event.pending
                    if event.negotiate:
                        self.send(event.negotiate)
                    return event.message, event.protocol
                elif isinstance(event, neg.StartTLS) and ssl_enabled:
                    self.plain[:0] = await self._start_tls(tls, event.pending, direct=False)
                    negotiator.encryption_established("ssl")
                elif isinstance(event, neg.StartDirectTLS) and ssl_enabled:
                    try:
                        self.plain[:0] = await self._start_tls(tls, event.initial, direct=True)
                    except SilentClose:
                        if trace:
                            log.info("%s", neg.TRACE_DIRECT_REJECTED)
                        raise
                    if trace:
                        log.info("%s", neg.TRACE_DIRECT_ACCEPTED)
                    negotiator.encryption_established("direct_ssl")
                elif isinstance(event, neg.StartGSS) and gss:
                    self.plain[:0] = await self._start_gss(event.pending)
                    negotiator.encryption_established("gss")
                else:
                    # The negotiator accepts only what it was told is enabled.
                    raise RuntimeError(f"unexpected negotiation event {event!r}")

    async def _start_tls(self, tls: TlsState, initial: bytes, *, direct: bool) -> bytes:
        """Run the TLS handshake; returns plaintext that arrived with it.

        Bytes already received behind the request go into the TLS layer (PostgreSQL 17+
        behaviour), never to the plaintext protocol: the CVE-2021-23214 class of attack.
        """
        assert tls.context is not None
        channel = TlsChannel(tls.context, initial + self.take(), end_point_hash=tls.end_point_hash)
        await self._establish(channel, "could not accept SSL connection: EOF detected")
        if direct and channel.info.alpn != codes.ALPN_POSTGRESQL:
            # PostgreSQL 17+: direct TLS requires ALPN, or a client could be fooled into
            # talking to a different TLS service on the same port.
            self.write(channel.close())
            raise SilentClose(
                "received direct SSL connection request without ALPN protocol negotiation extension"
            )
        self.channel = channel
        return channel.feed(b"")

    async def _start_gss(self, pending: bytes) -> bytes:
        """Run the GSSAPI encryption handshake; returns plaintext that arrived with it.

        ``pending`` (bytes that came in with the GSSENCRequest) play the part of PostgreSQL's
        receive buffer: ``secure_open_gssapi`` reads its tokens from the socket, never from
        that buffer, so they are not fed to the handshake. Once the context is established,
        ProcessStartupPacket finds them still buffered and sends FATAL 08P01 - encrypted, as
        the channel is now active (shared/protocol.md §1.4). The injected bytes are never
        read as protocol; a legitimate client learns of the attack through its own channel.
        """
        # Imported here: python-gssapi loads only once a client asks for GSS encryption.
        from pggate.transport import gss

        keytab = self.snapshot.gss.keytab
        assert keytab is not None  # the negotiator accepts GSS only when it is enabled
        try:
            credentials = gss.acceptor_credentials(keytab)
        except ChannelError as err:
            self._channel_failed(err)
        channel = gss.GssChannel(
            credentials, accept_delegation=self.snapshot.policy.config.gss_accept_delegation
        )
        await self._establish(channel, "")
        self.channel = channel
        if pending:
            raise ProtocolViolation(
                "received unencrypted data after GSSAPI encryption request",
                detail="This could be either a client-software bug or evidence of an "
                "attempted man-in-the-middle attack.",
            )
        return channel.feed(b"")

    async def _establish(self, channel: Channel, eof_log: str) -> None:
        """Drive a channel's handshake: write what it says, feed it what arrives."""
        try:
            while True:
                out, done = channel.handshake()
                if out:
                    self.write(out)
                if done:
                    return
                if not await self.wait_for_data():
                    raise SilentClose(eof_log)
                channel.feed(self.take())
        except ChannelError as err:
            self._channel_failed(err)

    def _channel_failed(self, err: ChannelError) -> NoReturn:
        """A failed handshake: the bytes the channel still owes the peer (a TLS alert), then
        PostgreSQL's COMMERROR (be_tls_open_server, secure_open_gssapi) and no protocol
        message. A version mismatch gets PostgreSQL's HINT with the accepted range
        (MIN_OPENSSL_TLS_VERSION / MAX_OPENSSL_TLS_VERSION when unset)."""
        if err.output:
            self.write(err.output)
        hint = None
        if err.protocol_hint:
            cfg = self.snapshot.policy.config
            hint = (
                "This may indicate that the client does not support any SSL protocol version "
                f"between {cfg.ssl_min_protocol_version or 'TLSv1'} and "
                f"{cfg.ssl_max_protocol_version or 'TLSv1.3'}."
            )
        log.info("%s", err, extra={"detail": err.detail, "hint": hint})
        raise SilentClose() from None

    def _admit(self) -> None:
        """Count the connection against max_connections (PostgreSQL checks after startup)."""
        gateway = self.gateway
        if gateway.stopping:
            raise ClientError(
                codes.SQLSTATE_CANNOT_CONNECT_NOW, "the database system is shutting down"
            )
        if gateway.connection_count >= self.snapshot.policy.config.max_connections:
            raise ClientError(
                codes.SQLSTATE_TOO_MANY_CONNECTIONS, "sorry, too many clients already"
            )
        gateway.connection_count += 1
        self.counted = True

    def _release(self) -> None:
        if self.counted:
            self.counted = False
            self.gateway.connection_count -= 1

    def finish(self) -> None:
        """The relayed session has ended: give back its slot, log it if asked."""
        self._release()
        if self.snapshot.policy.config.log_disconnections and self.startup is not None:
            elapsed = time.monotonic() - self.started
            hours, rest = divmod(elapsed, 3600)
            minutes, seconds = divmod(rest, 60)
            log.info(
                "disconnection: session time: %d:%02d:%06.3f user=%s database=%s host=%s port=%s",
                hours,
                minutes,
                seconds,
                self.startup.user,
                self.startup.database,
                self.remote_host,
                self.port,
            )

    async def _check_hba(self, policy: Policy, startup: StartupMessage) -> HbaRule:
        hba = policy.hba
        address = ipaddress.ip_address(self.host.split("%")[0])
        roles = None
        if hba.needs_roles:
            roles = await catalog.role_memberships(policy.backend, startup.user)
        hostname = await self._verified_hostname(address) if hba.needs_hostname else None
        connection = facts.connection_facts(
            self.channel.info,
            startup,
            address=address,
            hostname=hostname,
            roles=roles,
            local_interfaces=self.gateway.local_interfaces if hba.needs_local_interfaces else (),
        )
        rule = hba.find(connection)
        if rule is None:
            raise ClientError(
                codes.SQLSTATE_INVALID_AUTHORIZATION, hba.describe_rejection(connection, None)
            )
        if rule.method == "reject":
            raise ClientError(
                codes.SQLSTATE_INVALID_AUTHORIZATION,
                hba.describe_rejection(connection, rule),
                log_detail=f'Connection matched file "{rule.file}" line {rule.line_number}: '
                f'"{rule.raw_line}"',
            )
        return rule

    async def _resolve_remote_host(self, limit: float) -> None:
        """log_hostname: BackendInitialize's pg_getnameinfo_all without NI_NUMERICHOST.

        As in PostgreSQL the look-up does not count against authentication_timeout; pggate
        still bounds it by that time so a hanging resolver cannot hold the connection forever.
        A failed look-up leaves the numeric address (PostgreSQL logs a WARNING).
        """
        try:
            async with asyncio.timeout(limit):
                name, _ = await asyncio.get_running_loop().getnameinfo(
                    (self.host, int(self.port or 0)), socket.NI_NUMERICSERV
                )
        except (OSError, UnicodeError, ValueError, TimeoutError) as exc:
            log.warning("pg_getnameinfo_all() failed: %s", exc)
            return
        self.remote_host = name
        try:
            ipaddress.ip_address(name.split("%")[0])
        except ValueError:
            self.remote_hostname = name  # a real name, not the address echoed back

    async def _verified_hostname(
        self, address: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> str | None:
        """Reverse-resolve the client and confirm with a forward look-up (hba.c check_hostname)."""
        loop = asyncio.get_running_loop()
        try:
            name = self.remote_hostname
            if name is None:
                name, _ = await loop.getnameinfo((str(address), 0), socket.NI_NAMEREQD)
            infos = await loop.getaddrinfo(name, None)
        except (OSError, UnicodeError):
            return None
        forward = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
        return name if address in forward else None

    async def _open_backend(self, policy: Policy, startup: StartupMessage, protocol: int) -> None:
        gateway = self.gateway
        key = pool_key(startup.user, startup.database, startup.params)
        pooled = policy.config.pool_mode == "session"
        reused = gateway.pool.acquire(key) if pooled else None
        auth_ok = self.auth.before_ok + codec.authentication_ok()
        if reused is not None:
            backend, login, created = reused.transport, reused.login, reused.created
        else:
            session = await upstream.login(
                policy.backend, startup.user, startup.params, scram_keys=self.auth.scram_keys
            )
            if isinstance(session, LoginFailed):
                # As PostgreSQL: authentication succeeded, then InitPostgres refused.
                self.send(auth_ok + session.error_message)
                log.log(logs.FATAL, "%s", session.error.message)
                return
            backend, login, created = session.transport, session.login, time.monotonic()
        if self.eof or self.transport is None or self.transport.is_closing():
            backend.close()
            return
        key_length = (
            codes.CANCEL_KEY_LENGTH_3_2
            if protocol >= codes.PROTOCOL_3_2
            else codes.CANCEL_KEY_LENGTH_3_0
        )
        pid, cancel_key = gateway.cancel_keys.register(
            key_length, login.backend_pid, login.backend_key, policy.backend
        )
        # The burst ends with ReadyForQuery; BackendKeyData goes just before it, as in PostgreSQL.
        burst = login.burst
        ready = burst[-6:]
        greeting = auth_ok + burst[:-6] + codec.backend_key_data(pid, cancel_key) + ready
        greeting += login.leftover
        if "authorization" in policy.config.log_connections:
            log.info(
                "connection authorized: user=%s database=%s application_name=%s%s",
                startup.user,
                startup.database,
                startup.application_name or "",
                facts.authorized_suffix(self.channel.info, self.auth),
            )
        channel = self.channel
        pending = bytes(self.plain) + channel.feed(self.take())
        self.plain.clear()
        assert self.transport is not None
        gateway.start_relay(
            self,
            self.transport,
            backend,
            channel,
            to_client=channel.encrypt(greeting),
            to_backend=pending,
            cancel_pid=pid,
            observer=gateway.pool.watch(key, login, created) if pooled else None,
        )

    def _fail(self, err: ClientError) -> None:
        self.send(codec.error_response(err))
        extra = {"detail": err.log_detail} if err.log_detail else None
        log.log(logs.FATAL, "%s", err.message, extra=extra)

    def abort(self) -> None:
        """Stop a session that has not reached the relay (shutdown). Its task's ``finally``
        closes the connection, after close_notify on TLS; closing here first would cut it."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
        else:
            self.close()


__all__ = ["ClientSession", "relay"]
