"""The one byte-stream interface over plain, TLS and GSS, and what a channel tells the server.

* :class:`Channel`: the shape every channel has (``handshake``, ``feed`` raw → plaintext,
  ``encrypt`` plaintext → raw, ``pending_output``, ``peer_closed``, ``close``, ``info``). The
  server holds a channel from accept on; :data:`PLAIN` is the channel of an unencrypted
  connection, so "no encryption" is a channel like the others, never ``None``.
* :class:`ChannelError`: every failure of every channel. It carries the bytes still owed to
  the peer (a TLS alert; GSS sends nothing) and the log line PostgreSQL writes.
* :class:`ChannelInfo`: the facts a completed handshake established (kind, TLS version,
  cipher, ALPN, the client certificate, the GSS principal, our certificate's
  ``tls-server-end-point`` hash). pg_hba.conf's ``hostssl``/``hostgssenc``, the ``cert``,
  ``gss`` and SCRAM-SHA-256-PLUS logins and the ``connection authorized`` line read it, and
  nothing else about the channel.

Nothing here imports python-gssapi (the optional extra pggate[gss]).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Protocol

from pggate.errors import PggateError


class ChannelKind(enum.Enum):
    """The encryption of a connection, as pg_hba.conf's connection types tell them apart."""

    NONE = "none"
    SSL = "ssl"
    GSS = "gss"


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """What a connection's handshake established (``be-secure-openssl.c`` and
    ``be-secure-gssapi.c`` fill the same facts into PostgreSQL's ``Port``).

    TLS: ``tls_version`` (``be_tls_get_version``), ``cipher`` and ``bits``
    (``be_tls_get_cipher``, ``be_tls_get_cipher_bits``), ``alpn``; for a client certificate,
    ``peer_cert_verified`` (``peer_cert_valid``), ``peer_common_name`` (``peer_cn``),
    ``peer_subject_dn`` (``peer_dn``, RFC 2253), ``peer_issuer_dn`` and ``peer_serial``
    (decimal, as ``be_tls_get_peer_serial``); ``end_point_hash`` is RFC 5929's
    ``tls-server-end-point`` of *our* certificate on this connection (None: no -PLUS, also
    for a certificate whose signature names no hash).
    GSS: ``gss_principal`` (``gss_display_name`` of the initiator), ``gss_delegated``
    (credentials delegated and ``gss_accept_delegation`` on).
    """

    kind: ChannelKind = ChannelKind.NONE
    tls_version: str | None = None
    cipher: str | None = None
    bits: int | None = None
    alpn: str | None = None
    peer_cert_verified: bool = False
    peer_common_name: str | None = None
    peer_subject_dn: str | None = None
    peer_issuer_dn: str | None = None
    peer_serial: str | None = None
    end_point_hash: bytes | None = None
    gss_principal: str | None = None
    gss_delegated: bool = False

    @property
    def ssl(self) -> bool:
        """TLS is in use (pg_hba.conf ``hostssl``; ``port->ssl_in_use``)."""
        return self.kind is ChannelKind.SSL

    @property
    def gss(self) -> bool:
        """GSSAPI encryption is in use (pg_hba.conf ``hostgssenc``; ``gss->enc``)."""
        return self.kind is ChannelKind.GSS


class ChannelError(PggateError):
    """A channel failed; the connection is over.

    Send :attr:`output` (records a channel still owes the peer, such as a TLS alert; empty
    for GSS, which has no error message), log ``str(err)`` with :attr:`detail` as DETAIL, and
    close the socket. PostgreSQL logs these as COMMERROR and sends no protocol message.
    ``protocol_hint``: the failure may be a protocol-version mismatch, after which PostgreSQL
    adds a HINT naming the accepted range (``be_tls_open_server``).
    """

    def __init__(
        self,
        message: str,
        *,
        output: bytes = b"",
        detail: str | None = None,
        protocol_hint: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.output = output
        self.detail = detail
        self.protocol_hint = protocol_hint


class Channel(Protocol):
    """The server side of one connection's byte stream.

    ``handshake()`` until done (writing its output each time, ``feed``-ing received bytes in
    between); then ``feed(b"")`` once for plaintext that came in with the handshake; then
    ``feed`` per read and ``encrypt`` per write. ``feed`` may queue records for the peer
    (``pending_output``); ``peer_closed`` says the peer ended the stream inside the channel
    (TLS close_notify); ``close()`` is our goodbye. Any :class:`ChannelError` is final.

    ``transparent``: ``feed`` and ``encrypt`` return their input and nothing is ever queued,
    so a relay may pass bytes straight between sockets (the plain channel). It describes what
    the channel does to bytes, not which channel it is; nothing above this interface asks that.
    """

    @property
    def info(self) -> ChannelInfo: ...

    @property
    def transparent(self) -> bool: ...

    @property
    def handshake_done(self) -> bool: ...

    @property
    def peer_closed(self) -> bool: ...

    def handshake(self) -> tuple[bytes, bool]: ...

    def feed(self, data: bytes) -> bytes: ...

    def encrypt(self, data: bytes) -> bytes: ...

    def pending_output(self) -> bytes: ...

    def close(self) -> bytes: ...


class PlainChannel:
    """No encryption: bytes pass unchanged; there is no handshake and no goodbye."""

    __slots__ = ()

    info: Final = ChannelInfo()
    transparent: Final = True
    handshake_done: Final = True
    peer_closed: Final = False  # a plain peer ends the stream by closing TCP

    def handshake(self) -> tuple[bytes, bool]:
        return b"", True

    def feed(self, data: bytes) -> bytes:
        return data

    def encrypt(self, data: bytes) -> bytes:
        return data

    def pending_output(self) -> bytes:
        return b""

    def close(self) -> bytes:
        return b""


#: The channel of every unencrypted connection (it has no state).
PLAIN: Final = PlainChannel()


__all__ = [
    "PLAIN",
    "Channel",
    "ChannelError",
    "ChannelInfo",
    "ChannelKind",
    "PlainChannel",
]
