"""What the I/O shell tells :class:`~pggate.login.LoginMachine`: what arrived, and the answers
to the machine's questions (see :mod:`pggate.login.commands` for which answers which).

Events are frozen values. A GSSAPI exchange arrives already built (:class:`GssExchangeReady`):
python-gssapi is optional, and this package never imports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from pggate.proto.backend import PLAIN_TCP, LinkSecurity, LoginComplete
from pggate.proto.errors import ClientError
from pggate.transport.channel import ChannelError, ChannelInfo

if TYPE_CHECKING:
    from pggate.auth import gss as gss_auth


class GssExchange(Protocol):
    """The shape of :class:`pggate.auth.gss.GssAuthExchange` the machine drives."""

    def start(self) -> bytes: ...

    def receive(
        self, message_type: bytes, body: bytes | bytearray | memoryview
    ) -> gss_auth.Outcome: ...


@dataclass(frozen=True, slots=True)
class Start:
    """The connection was accepted."""


@dataclass(frozen=True, slots=True)
class RemoteHostFound:
    name: str


@dataclass(frozen=True, slots=True)
class RemoteHostFailed:
    reason: str  # the resolver's error text


@dataclass(frozen=True, slots=True)
class ClientData:
    """Bytes from the client, decrypted by the channel (never raw TLS or GSS records)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ClientEof:
    """The client ended the stream (TCP EOF, or TLS close_notify)."""


@dataclass(frozen=True, slots=True)
class ChannelEstablished:
    """The handshake a Start* command asked for is done; the shell now holds the channel."""

    info: ChannelInfo


@dataclass(frozen=True, slots=True)
class ChannelFailed:
    """The channel failed: during a handshake, decrypting, or getting GSS credentials."""

    error: ChannelError


@dataclass(frozen=True, slots=True)
class Admission:
    """The gateway's state at :class:`~pggate.login.commands.CheckAdmission`: whether it is
    shutting down, and how many authenticated sessions hold a ``max_connections`` slot."""

    stopping: bool
    connections: int


@dataclass(frozen=True, slots=True)
class RolesFound:
    roles: frozenset[str]


@dataclass(frozen=True, slots=True)
class RoleLookupFailed:
    error: ClientError


@dataclass(frozen=True, slots=True)
class HostNameChecked:
    """The client's host name if the reverse look-up was confirmed by a forward one, else None."""

    name: str | None


@dataclass(frozen=True, slots=True)
class SecretFound:
    """The pg_authid rows (none: no such role), the ParameterStatus values of the catalog
    connection (``scram_iterations``), the gateway's mock SCRAM nonce and the time now."""

    rows: Sequence[Sequence[str | None]] = field(repr=False)
    parameters: Mapping[str, str]
    mock_nonce: bytes = field(repr=False)
    now: datetime


@dataclass(frozen=True, slots=True)
class SecretLookupFailed:
    error: ClientError


@dataclass(frozen=True, slots=True)
class GssExchangeReady:
    exchange: GssExchange


@dataclass(frozen=True, slots=True)
class GssExchangeFailed:
    """No acceptor credentials for the keytab (GSSAPI's error); the machine fails the method."""

    error: ChannelError


@dataclass(frozen=True, slots=True)
class BackendConnected:
    """The link the ConnectBackend attempt asked for is up (nothing of the login sent yet):
    ``link`` says whether it is TLS (and the backend certificate's hash) or a local socket."""

    link: LinkSecurity = PLAIN_TCP


@dataclass(frozen=True, slots=True)
class BackendReused:
    """A pooled backend, already logged in as this role with these parameters."""

    login: LoginComplete


@dataclass(frozen=True, slots=True)
class BackendUnreachable:
    """The host could not be reached (refused, unresolvable, timed out)."""

    reason: str  # the connect error's text
    starting: bool = False  # the embedded cluster, being restarted (embedded/watchdog.py)


@dataclass(frozen=True, slots=True)
class BackendTlsRefused:
    """The backend answered SSLRequest with ``N``; the connection is kept for plaintext."""


@dataclass(frozen=True, slots=True)
class BackendGssRefused:
    """The backend answered GSSENCRequest with ``N``; the connection is kept for TLS or
    plaintext."""


@dataclass(frozen=True, slots=True)
class BackendLinkFailed:
    """TLS to the backend failed, in libpq's words; ``final`` when libpq would not try
    anything else (its ``error_return``: an error answer to SSLRequest, bytes behind 'S')."""

    reason: str
    final: bool = False


@dataclass(frozen=True, slots=True)
class BackendData:
    data: bytes


@dataclass(frozen=True, slots=True)
class BackendEof:
    pass


@dataclass(frozen=True, slots=True)
class CancelKeyIssued:
    pid: int
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Timeout:
    """The deadline of the last :class:`~pggate.login.commands.SetTimeout` passed."""


Event = (
    Start
    | RemoteHostFound
    | RemoteHostFailed
    | ClientData
    | ClientEof
    | ChannelEstablished
    | ChannelFailed
    | Admission
    | RolesFound
    | RoleLookupFailed
    | HostNameChecked
    | SecretFound
    | SecretLookupFailed
    | GssExchangeReady
    | GssExchangeFailed
    | BackendConnected
    | BackendReused
    | BackendUnreachable
    | BackendTlsRefused
    | BackendGssRefused
    | BackendLinkFailed
    | BackendData
    | BackendEof
    | CancelKeyIssued
    | Timeout
)

__all__ = [
    "Admission",
    "BackendConnected",
    "BackendData",
    "BackendEof",
    "BackendGssRefused",
    "BackendLinkFailed",
    "BackendReused",
    "BackendTlsRefused",
    "BackendUnreachable",
    "CancelKeyIssued",
    "ChannelEstablished",
    "ChannelFailed",
    "ClientData",
    "ClientEof",
    "Event",
    "GssExchange",
    "GssExchangeFailed",
    "GssExchangeReady",
    "HostNameChecked",
    "RemoteHostFailed",
    "RemoteHostFound",
    "RoleLookupFailed",
    "RolesFound",
    "SecretFound",
    "SecretLookupFailed",
    "Start",
    "Timeout",
]
