"""One try at a link to the backend: connect, then TLS or GSSAPI encryption if the plan says
so (libpq's way).

The decisions (which host, which encryption, what a failure means) are
:mod:`pggate.hop.plan`'s; this module carries out one :class:`~pggate.hop.plan.Attempt` and
reports how it ended in libpq's words (fe-connect.c ``PQconnectPoll``, fe-secure-openssl.c
``open_client_SSL``, fe-secure-gssapi.c ``pqsecure_open_gss``). The TLS context is built once
per configuration (:mod:`pggate.tls.client`), never per connection.

A GSSAPI-encrypted link is handed on as a :class:`~pggate.server.gss_link.GssTransport`: a
transport of plaintext, like the one ``loop.start_tls`` returns for TLS, so nothing above this
module (login, pool, relay) treats it differently.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from pggate.conninfo import BackendAddress, TcpSettings
from pggate.hop.plan import Attempt, Encryption
from pggate.proto import codec, codes
from pggate.proto.backend import LinkSecurity
from pggate.server.gss_link import GssTransport
from pggate.server.inbox import InboxProtocol
from pggate.tls import client
from pggate.tls.client import BackendTls
from pggate.transport.gss_client import (
    INITIATE_FAILED,
    ClientCredentials,
    GssClientError,
    GssClientHandshake,
    service_name,
)


@dataclass(frozen=True, slots=True)
class LinkFacts:
    """What the login and the logs need to know about an established link."""

    encrypted: bool
    tls_version: str | None = None
    cipher: str | None = None
    # RFC 5929 tls-server-end-point of the backend's certificate, for SCRAM-SHA-256-PLUS.
    server_end_point_hash: bytes | None = None
    gss: bool = False  # GSSAPI encryption (then encrypted, with no TLS facts)
    gss_principal: str | None = None  # pggate's own principal in that context


PLAIN_LINK = LinkFacts(encrypted=False)


class Unreachable(Exception):
    """The host could not be reached (the plan moves on to the next host)."""


class TlsRefused(Exception):
    """The server answered SSLRequest with ``N``; the connection is still good (kept here,
    for plaintext on the same connection when sslmode allows it)."""

    def __init__(self, transport: asyncio.Transport, protocol: InboxProtocol) -> None:
        super().__init__("server does not support SSL")
        self.transport = transport
        self.protocol = protocol


class GssRefused(Exception):
    """The server answered GSSENCRequest with ``N``; the connection is still good (kept here,
    for TLS or plaintext on the same connection when the conninfo allows them)."""

    def __init__(self, transport: asyncio.Transport, protocol: InboxProtocol) -> None:
        super().__init__("server does not support GSSAPI encryption")
        self.transport = transport
        self.protocol = protocol


class LinkFailed(Exception):
    """TLS or GSSAPI encryption could not be set up (the plan may retry another method on a
    new connection)."""


class LinkBroken(Exception):
    """A failure libpq does not retry at all (``error_return``)."""


@dataclass(slots=True)
class Established:
    """A link ready for the startup packet."""

    transport: asyncio.Transport
    protocol: InboxProtocol
    security: LinkSecurity
    facts: LinkFacts = PLAIN_LINK


def tcp_tuner(tcp: TcpSettings) -> Callable[[socket.socket], None]:
    """libpq's keepalives* and tcp_user_timeout as socket options (fe-connect.c
    setKeepalivesIdle & co.); None leaves the system's value."""

    def tune(sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(tcp.keepalives))
        if tcp.keepalives:
            for option, value in (
                (socket.TCP_KEEPIDLE, tcp.keepalives_idle),
                (socket.TCP_KEEPINTVL, tcp.keepalives_interval),
                (socket.TCP_KEEPCNT, tcp.keepalives_count),
            ):
                if value is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, option, value)
        if tcp.user_timeout is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, tcp.user_timeout)

    return tune


async def establish(
    address: BackendAddress,
    attempt: Attempt,
    tls: BackendTls | None,
    kept: Established | None = None,
    gss: ClientCredentials | None = None,
) -> Established:
    """Carry out one attempt of the plan: a new connection (or ``kept``, the one the server
    refused an encryption request on, for ``same_connection``), then TLS or GSSAPI
    encryption if the attempt says so (``gss``: pggate's initiator credentials). Raises
    Unreachable, TlsRefused, GssRefused, LinkFailed or LinkBroken, each of which the plan
    judges."""
    if attempt.same_connection and kept is not None:
        transport, protocol = kept.transport, kept.protocol
    else:
        transport, protocol = await open_socket(address, tune=tcp_tuner(address.settings.tcp))
    if attempt.encryption is Encryption.PLAIN:
        return Established(transport, protocol, LinkSecurity(local=address.is_unix_socket))
    try:
        if attempt.encryption is Encryption.GSS:
            assert gss is not None, "a GSSAPI attempt without initiator credentials"
            return await _secure_gss(address, transport, protocol, gss)
        assert tls is not None, "a TLS attempt without a TLS context"
        if not attempt.direct:
            await request_tls(transport, protocol, address.connect_timeout)
        secured, facts = await start_tls(
            transport,
            protocol,
            tls,
            address.server_name or "",
            direct=attempt.direct,
            timeout=address.connect_timeout,
        )
    except (TlsRefused, GssRefused):
        raise
    except BaseException:
        transport.close()
        raise
    security = LinkSecurity(tls=True, end_point_hash=facts.server_end_point_hash)
    return Established(secured, protocol, security, facts)


async def _secure_gss(
    address: BackendAddress,
    transport: asyncio.Transport,
    protocol: InboxProtocol,
    gss: ClientCredentials,
) -> Established:
    """CONNECTION_GSS_STARTUP: GSSENCRequest, the answer, the handshake, libpq's checks."""
    timeout = address.connect_timeout
    await request_gss(transport, protocol, timeout)
    # Bytes behind 'G' came before the handshake: unencrypted, maybe injected. libpq's
    # handshake reads the socket, not them; it finds them once the context is established.
    behind = protocol.take()
    # PQhost: the host entry, else the hostaddr (pg_GSS_load_servicename).
    target = service_name(address.settings.krbsrvname, address.server_name or address.host)
    try:
        async with asyncio.timeout(timeout):
            secured, principal = await start_gss(transport, protocol, gss, target)
    except TimeoutError:
        raise Unreachable("timeout expired") from None
    if behind:
        secured.close()
        raise LinkBroken("received unencrypted data after GSSAPI encryption response")
    facts = LinkFacts(encrypted=True, gss=True, gss_principal=principal)
    return Established(secured, protocol, LinkSecurity(gss=True), facts)


async def open_socket(
    address: BackendAddress, *, tune: Callable[[socket.socket], None] | None = None
) -> tuple[asyncio.Transport, InboxProtocol]:
    """A raw connection to ``address``, bounded by its connect_timeout (Unreachable if not).

    ``tune`` sets TCP options (keepalives, tcp_user_timeout) as libpq does before connect
    completes; here, right after, before a byte is sent.
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(address.connect_timeout):
            if address.is_unix_socket:
                transport, protocol = await loop.create_unix_connection(
                    InboxProtocol, address.socket_path
                )
            else:
                transport, protocol = await loop.create_connection(
                    InboxProtocol, address.host, address.port
                )
    except TimeoutError:
        raise Unreachable("timeout expired") from None
    except OSError as exc:
        # asyncio's text names the address again; libpq prints strerror (connectFailureMessage).
        raise Unreachable(os.strerror(exc.errno) if exc.errno else str(exc)) from None
    if tune is not None and not address.is_unix_socket:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            tune(sock)
    return transport, protocol


async def _answer(
    transport: asyncio.Transport, protocol: InboxProtocol, request: bytes, timeout: float | None
) -> bytes:
    """Send an encryption request; the server's one-byte answer (left in the inbox)."""
    transport.write(request)
    try:
        async with asyncio.timeout(timeout):
            while not protocol.inbox:
                if not await protocol.wait_for_data():
                    raise LinkBroken("server closed the connection unexpectedly")
    except TimeoutError:
        raise Unreachable("timeout expired") from None
    return bytes(protocol.inbox[:1])


async def request_tls(
    transport: asyncio.Transport, protocol: InboxProtocol, timeout: float | None
) -> None:
    """SSLRequest and the server's one-byte answer (``S`` returns, ``N`` raises TlsRefused)."""
    answer = await _answer(transport, protocol, codec.ssl_request(), timeout)
    if answer == codes.ENCRYPTION_REFUSE:
        protocol.take()
        raise TlsRefused(transport, protocol)
    if answer == codes.MSG_ERROR_RESPONSE:
        # Not read: the server is not authenticated yet (fe-connect.c CONNECTION_SSL_STARTUP).
        raise LinkBroken("server sent an error response during SSL exchange")
    if answer != codes.SSL_ACCEPT:
        raise LinkBroken(
            f"received invalid response to SSL negotiation: {answer.decode('latin-1')}"
        )
    if len(protocol.inbox) > 1:
        # Bytes behind 'S' came before the handshake: unencrypted, maybe injected.
        raise LinkBroken("received unencrypted data after SSL response")
    protocol.take()


async def request_gss(
    transport: asyncio.Transport, protocol: InboxProtocol, timeout: float | None
) -> None:
    """GSSENCRequest and the server's one-byte answer: ``G`` returns with the byte consumed,
    ``N`` raises GssRefused, an error answer (a server older than 12) LinkFailed, anything
    else LinkBroken (fe-connect.c CONNECTION_GSS_STARTUP)."""
    answer = await _answer(transport, protocol, codec.gssenc_request(), timeout)
    if answer == codes.MSG_ERROR_RESPONSE:
        # Not read (the server is not authenticated yet), and unlike after SSLRequest not
        # final: the next method on a new connection.
        raise LinkFailed("server sent an error response during GSS encryption exchange")
    del protocol.inbox[:1]
    if answer == codes.ENCRYPTION_REFUSE:
        raise GssRefused(transport, protocol)
    if answer != codes.GSS_ACCEPT:
        raise LinkBroken(
            f"received invalid response to GSSAPI negotiation: {answer.decode('latin-1')}"
        )


async def start_gss(
    transport: asyncio.Transport,
    protocol: InboxProtocol,
    gss: ClientCredentials,
    target: str,
) -> tuple[GssTransport, str | None]:
    """pqsecure_open_gss over ``transport``: the GSSAPI transport of plaintext and pggate's
    principal in the context. The first ``gss_init_sec_context`` may ask the KDC for a ticket
    (blocking I/O in the GSSAPI library), so it runs in a thread; the others only process the
    server's tokens. A failure is LinkFailed with libpq's text."""
    try:
        credentials = gss.for_context(INITIATE_FAILED)
        handshake = GssClientHandshake(credentials, target)
        first = await asyncio.to_thread(handshake.start)
        if first:
            transport.write(first)
        while not handshake.done:
            if not await protocol.wait_for_data():
                raise LinkFailed("server closed the connection unexpectedly")
            reply = handshake.feed(protocol.take())
            if reply:
                transport.write(reply)
        gss_codec = handshake.codec()
        principal = handshake.principal
    except GssClientError as exc:
        raise LinkFailed(exc.message) from None
    secured = GssTransport(transport, gss_codec, protocol)
    protocol.connection_made(secured)
    try:
        plain = gss_codec.feed(b"")  # packets that came in behind the last handshake token
    except GssClientError as exc:
        secured.close()
        raise LinkBroken(exc.message) from None
    if plain:
        protocol.data_received(plain)
    return secured, principal


async def start_tls(
    transport: asyncio.Transport,
    protocol: InboxProtocol,
    tls: BackendTls,
    host: str,
    *,
    direct: bool,
    timeout: float | None,
) -> tuple[asyncio.Transport, LinkFacts]:
    """The TLS handshake over ``transport``, then libpq's post-handshake checks."""
    loop = asyncio.get_running_loop()
    try:
        server_hostname = client.server_hostname_for_sni(host, tls.settings)
        async with asyncio.timeout(timeout):
            secured = await loop.start_tls(
                transport, protocol, tls.context, server_hostname=server_hostname
            )
    except TimeoutError:
        transport.close()
        raise Unreachable("timeout expired") from None
    except (ssl.SSLError, OSError) as exc:  # first: SSLCertVerificationError is a ValueError
        transport.close()
        detail = getattr(exc, "verify_message", None)
        text = client.describe_handshake_error(exc, tls.settings)
        raise LinkFailed(f"{text}: {detail}" if detail else text) from None
    except (UnicodeError, ValueError) as exc:  # a name Python cannot put in SNI
        transport.close()
        raise LinkFailed(f"could not set SSL Server Name Indication (SNI): {exc}") from None
    if secured is None:  # pragma: no cover - only when the transport closed underneath
        raise LinkFailed("SSL SYSCALL error: EOF detected")
    ssl_object: ssl.SSLObject | None = secured.get_extra_info("ssl_object")
    assert ssl_object is not None
    problem = client.check_after_handshake(ssl_object, tls.settings, host, direct)
    if problem is not None:
        secured.close()
        raise LinkFailed(problem)
    if protocol.inbox:
        secured.close()
        raise LinkBroken("received unencrypted data after SSL response")
    cipher = ssl_object.cipher()
    der = ssl_object.getpeercert(binary_form=True)
    try:
        end_point = client.peer_end_point_hash(der) if der else None
    except ValueError:
        end_point = None  # no binding possible (e.g. Ed25519): -PLUS is simply not offered
    facts = LinkFacts(
        encrypted=True,
        tls_version=ssl_object.version(),
        cipher=cipher[0] if cipher else None,
        server_end_point_hash=end_point,
    )
    return secured, facts


__all__ = [
    "PLAIN_LINK",
    "Established",
    "GssRefused",
    "LinkBroken",
    "LinkFacts",
    "LinkFailed",
    "TlsRefused",
    "Unreachable",
    "establish",
    "open_socket",
    "request_gss",
    "request_tls",
    "start_gss",
    "start_tls",
    "tcp_tuner",
]
