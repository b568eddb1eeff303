"""What :class:`~pggate.login.LoginMachine` asks the I/O shell to do, in order.

Every command is a frozen value. The shell executes a batch in order; a command that asks a
question (a look-up, a connection, a cancel key) is answered by the event its docstring names,
fed back before anything else. :class:`Close` is always last in its batch, and after it the
machine takes no more events. The three encryption commands are the negotiator's own
(:class:`~pggate.proto.negotiate.StartTLS`, ``StartDirectTLS``, ``StartGSS``), as is
:class:`~pggate.proto.negotiate.Cancel`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from pggate.conninfo import BackendAddress
from pggate.hop.plan import Attempt
from pggate.proto.backend import LoginComplete
from pggate.proto.messages import StartupMessage
from pggate.proto.negotiate import Cancel, StartDirectTLS, StartGSS, StartTLS


class Level(enum.IntEnum):
    """A log line's level; the values are the :mod:`logging` levels the shell logs at
    (pggate's ``FATAL`` is ``logging.CRITICAL``, written ``FATAL:`` by logs.py)."""

    LOG = 20
    WARNING = 30
    FATAL = 50


@dataclass(frozen=True, slots=True)
class Log:
    """One server log line, with PostgreSQL's DETAIL and HINT lines when given."""

    level: Level
    text: str
    detail: str | None = None
    hint: str | None = None


@dataclass(frozen=True, slots=True)
class SendToClient:
    """Protocol bytes for the client: through the channel (encrypted once one is set)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class WriteRaw:
    """Bytes for the client's socket as they are: a failed channel's last records (TLS alert)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SetTimeout:
    """(Re)arm the connection's one deadline ``seconds`` from now; None disarms it. On expiry
    feed :class:`~pggate.login.events.Timeout`."""

    seconds: float | None


@dataclass(frozen=True, slots=True)
class LookUpRemoteHost:
    """``log_hostname``: reverse-resolve the client's address (bounded by the shell). Answer
    :class:`~pggate.login.events.RemoteHostFound` or ``RemoteHostFailed``."""


@dataclass(frozen=True, slots=True)
class CheckAdmission:
    """Report the gateway's state now: answer :class:`~pggate.login.events.Admission` at once
    (no await in between, so that the count cannot change before :class:`TakeSlot`). Asked
    twice: after the StartupMessage (a cheap refusal, no slot taken) and when authentication
    has succeeded (then :class:`TakeSlot` follows, unless the sessions are full)."""


@dataclass(frozen=True, slots=True)
class TakeSlot:
    """The connection has authenticated: count it against ``max_connections`` (given back
    when it ends), and no longer against ``max_startup_connections``, the bound of
    connections still in negotiation, startup or authentication."""


@dataclass(frozen=True, slots=True)
class LookUpRoles:
    """The roles ``user`` is a member of, for pg_hba.conf. Answer
    :class:`~pggate.login.events.RolesFound` or ``RoleLookupFailed``."""

    user: str


@dataclass(frozen=True, slots=True)
class LookUpHostName:
    """hba.c check_hostname: reverse-resolve ``address`` (unless ``reverse_name`` is already
    known from ``log_hostname``) and confirm with a forward look-up. Answer
    :class:`~pggate.login.events.HostNameChecked`."""

    address: IPv4Address | IPv6Address
    reverse_name: str | None


@dataclass(frozen=True, slots=True)
class FetchSecret:
    """Run ``sql`` (the role's pg_authid row) as pggate's own role, and get the mock SCRAM
    nonce. Answer :class:`~pggate.login.events.SecretFound` or ``SecretLookupFailed``."""

    user: str
    sql: str


@dataclass(frozen=True, slots=True)
class StartGssAuth:
    """Build the GSSAPI exchange for method ``gss`` (acceptor credentials of the keytab).
    Answer :class:`~pggate.login.events.GssExchangeReady` or ``GssExchangeFailed``."""

    user: str
    accept_delegation: bool


@dataclass(frozen=True, slots=True)
class ConnectBackend:
    """A backend connection to ``address`` for ``startup``'s role, database and parameters,
    carried out as ``attempt`` says (:mod:`pggate.hop.plan`): a pooled one (answer
    :class:`~pggate.login.events.BackendReused`) or a new link (``BackendConnected``, or
    ``BackendUnreachable`` / ``BackendTlsRefused`` / ``BackendGssRefused`` /
    ``BackendLinkFailed``). The executor drops the backend it holds first, unless
    ``attempt.same_connection``. ``scram_keys`` are
    for the pool key only; the machine answers the backend's SCRAM with them itself.
    ``refresh``: a pooled backend must report its current ParameterStatus first
    (:class:`~pggate.proto.backend.LoginRefresh`), because target_session_attrs judges it."""

    startup: StartupMessage
    address: BackendAddress
    attempt: Attempt
    scram_keys: tuple[bytes, bytes] | None = field(default=None, repr=False)
    refresh: bool = False


@dataclass(frozen=True, slots=True)
class SendToBackend:
    data: bytes


@dataclass(frozen=True, slots=True)
class RegisterCancelKey:
    """Give the client a (pid, key) of pggate's own for the backend's pair. Answer
    :class:`~pggate.login.events.CancelKeyIssued`."""

    key_length: int
    backend_pid: int
    backend_key: bytes


@dataclass(frozen=True, slots=True)
class StartRelay:
    """The login is done: splice client and backend. ``to_client`` is plaintext (encrypt it
    through the channel), ``to_backend`` the client's bytes already received behind the login;
    ``login`` is the backend's, for the pool."""

    to_client: bytes
    to_backend: bytes
    cancel_pid: int
    login: LoginComplete


@dataclass(frozen=True, slots=True)
class Close:
    """Send ``error`` (plaintext, through the channel) if any, write ``log`` if any, then end:
    the channel's goodbye, close the socket and any backend connection."""

    error: bytes | None = None
    log: Log | None = None


Command = (
    Log
    | SendToClient
    | WriteRaw
    | SetTimeout
    | LookUpRemoteHost
    | StartTLS
    | StartDirectTLS
    | StartGSS
    | Cancel
    | CheckAdmission
    | TakeSlot
    | LookUpRoles
    | LookUpHostName
    | FetchSecret
    | StartGssAuth
    | ConnectBackend
    | SendToBackend
    | RegisterCancelKey
    | StartRelay
    | Close
)

__all__ = [
    "Cancel",
    "CheckAdmission",
    "Close",
    "Command",
    "ConnectBackend",
    "FetchSecret",
    "Level",
    "Log",
    "LookUpHostName",
    "LookUpRemoteHost",
    "LookUpRoles",
    "RegisterCancelKey",
    "SendToBackend",
    "SendToClient",
    "SetTimeout",
    "StartDirectTLS",
    "StartGSS",
    "StartGssAuth",
    "StartRelay",
    "StartTLS",
    "TakeSlot",
    "WriteRaw",
]
