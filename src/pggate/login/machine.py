"""One client's login, accept to relay, as a sans-IO state machine (backend_startup.c's
BackendInitialize, postinit.c's PerformAuthentication, auth.c's ClientAuthentication).

The shell feeds :mod:`~pggate.login.events` to :meth:`LoginMachine.feed` and executes the
:mod:`~pggate.login.commands` it returns, in order. The order of a login:

1. ``log_hostname``'s look-up, the ``connection received`` line, ``authentication_timeout``;
2. negotiation (the :class:`~pggate.proto.negotiate.Negotiator` inside), the channel handshakes
   the shell runs, the StartupMessage;
3. admission: FATAL 57P03 while shutting down, 53300 when authenticated sessions already fill
   ``max_connections`` (no slot is taken yet);
4. pg_hba.conf, with role memberships and the verified host name looked up only when the file
   can use them; no match or ``reject`` is FATAL 28000;
5. the matched line's method: certificate checks first, then trust / password / md5 /
   scram-sha-256 (the role's pg_authid row fetched first) / gss / cert, then the certificate
   name check; a failure's log DETAIL names the pg_hba.conf line (auth.c auth_failed);
6. the connection slot: only an authenticated session counts against ``max_connections``, so
   the count is asked again and the slot taken (53300 if the sessions filled up meanwhile);
   until then the connection is bounded by ``max_startup_connections`` in the shell;
7. the backend login (:class:`~pggate.proto.backend.BackendLogin` inside): a backend refusal
   reaches the client verbatim after AuthenticationOk, as PostgreSQL refuses in InitPostgres;
8. pggate's own cancel key, ``connection authorized``, the relay.

Every :class:`~pggate.proto.errors.ClientError` or :class:`~pggate.errors.SilentClose` the inner
pieces raise becomes a :class:`~pggate.login.commands.Close`: a ClientError is sent as an
ErrorResponse and logged as FATAL with its log-only detail; a SilentClose sends nothing and
logs its text, if any. :class:`~pggate.proto.codec.InvalidMessageLength` is both, and is the
latter, as PostgreSQL's pq_getmessage makes it an EOF.

The machine is an Enum and one transition table. An event is an :class:`Input`; decisions
the machine takes on its own (what the negotiator said, which look-up the pg_hba.conf needs,
whether a method needs an exchange) are inputs too, so every move is in :data:`TRANSITIONS`.
A move the table does not list is a bug in the shell and raises :class:`IllegalMove`.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from pggate.auth import cert, password, verifiers
from pggate.errors import SilentClose
from pggate.hba.methods import PASSWORD_METHODS, AuthMethod
from pggate.hop.plan import ConnectPlan, GiveUp, Step
from pggate.login import commands as cmd
from pggate.login import events as ev
from pggate.login import facts
from pggate.proto import codec, codes
from pggate.proto import negotiate as neg
from pggate.proto.backend import BackendLogin, LoginComplete, LoginFailed, refused_by_pggate
from pggate.proto.errors import ClientError, ProtocolViolation
from pggate.proto.messages import StartupMessage
from pggate.statetable import look_up
from pggate.transport.channel import ChannelError, ChannelInfo

if TYPE_CHECKING:
    from ipaddress import IPv4Interface, IPv6Interface

    from pggate.config.model import Config
    from pggate.conninfo import BackendAddress
    from pggate.hba import HbaPolicy, HbaRule, IdentMaps
    from pggate.hop.route import Route

IMPLEMENTED_METHODS: Final = (
    frozenset({AuthMethod.TRUST, AuthMethod.CERT, AuthMethod.GSS}) | PASSWORD_METHODS
)
# Room for the type byte's message: the largest token plus its length word.
MAX_RESPONSE_LENGTH: Final = codes.MAX_AUTH_TOKEN_LENGTH + 4
# ReadyForQuery is the burst's last message: type, length word, status.
_MITM_DETAIL: Final = (
    "This could be either a client-software bug or evidence of an attempted man-in-the-middle "
    "attack."
)


@dataclass(frozen=True, slots=True)
class AuthResult:
    """What authentication leaves for the backend login and the ``connection authorized`` line."""

    before_ok: bytes = b""  # SASLFinal or a final GSS token, sent just before AuthenticationOk
    gss_authenticated: bool = False
    gss_principal: str | None = None
    gss_delegated: bool = False
    scram_keys: tuple[bytes, bytes] | None = field(default=None, repr=False)


def mock_iterations(cfg: Config, reported: Mapping[str, str]) -> int:
    """The iteration count a doomed SCRAM exchange advertises: pggate's ``scram_iterations``
    when set, else the backend's (reported at login, PostgreSQL 16+), else the default; so an
    unknown role looks like one whose verifier was made with the current setting."""
    if "scram_iterations" in cfg.explicitly_set:
        return cfg.scram_iterations
    text = reported.get("scram_iterations", "")
    if text.isascii() and text.isdigit() and 0 < int(text) < 2**31:
        return int(text)
    return cfg.scram_iterations


def backend_unavailable(detail: str) -> ClientError:
    """What the client sees when pggate cannot reach its backend (detail goes to the log)."""
    return ClientError(
        codes.SQLSTATE_CONNECTION_FAILURE,
        "could not connect to the backend server",
        log_detail=detail,
    )


def backend_starting_up(detail: str) -> ClientError:
    """What the client sees while pggate restarts the embedded cluster: PostgreSQL's own answer
    during start-up (backend_startup.c, CAC_STARTUP), so clients retry as they would there."""
    return ClientError(
        codes.SQLSTATE_CANNOT_CONNECT_NOW,
        "the database system is starting up",
        log_detail=detail,
    )


# --- the state machine ------------------------------------------------------------------------


class State(enum.Enum):
    NEW = "new"
    RESOLVING_HOST = "resolving the client's host name"  # log_hostname
    NEGOTIATING = "negotiating"  # the Negotiator reads the client's packets
    TLS_HANDSHAKE = "tls handshake"
    DIRECT_TLS_HANDSHAKE = "direct tls handshake"
    GSS_HANDSHAKE = "gss handshake"
    ADMITTING = "admitting"
    LOOKING_UP_ROLES = "looking up roles"
    LOOKING_UP_HOSTNAME = "looking up the host name"
    FETCHING_SECRET = "fetching the role's secret"
    PASSWORD_EXCHANGE = "password exchange"
    PREPARING_GSS = "preparing the gss exchange"
    GSS_EXCHANGE = "gss exchange"
    CLAIMING_SLOT = "claiming a connection slot"
    CONNECTING_BACKEND = "connecting to the backend"
    BACKEND_LOGIN = "logging in to the backend"
    REGISTERING_CANCEL_KEY = "registering the cancel key"
    RELAYING = "relaying"
    CLOSED = "closed"


class Input(enum.Enum):
    # Events from the shell.
    START = "start"
    START_RESOLVING = "start, log_hostname on"
    HOST_RESOLVED = "remote host resolved"
    CLIENT_DATA = "client data"
    CLIENT_EOF = "client eof"
    CHANNEL_ESTABLISHED = "channel established"
    CHANNEL_FAILED = "channel failed"
    ADMISSION = "admission"
    ROLES = "roles"
    HOSTNAME = "host name"
    SECRET = "secret"
    GSS_EXCHANGE_READY = "gss exchange ready"
    BACKEND_CONNECTED = "backend connected"
    BACKEND_REUSED = "backend reused"
    BACKEND_RETRY = "backend retried"
    BACKEND_DATA = "backend data"
    CANCEL_KEY = "cancel key"
    TIMEOUT = "timeout"
    # The machine's own decisions.
    TLS_ACCEPTED = "SSLRequest accepted"
    DIRECT_TLS = "direct TLS ClientHello"
    GSS_ACCEPTED = "GSSENCRequest accepted"
    STARTUP = "StartupMessage"
    NEED_ROLES = "pg_hba.conf needs roles"
    NEED_HOSTNAME = "pg_hba.conf needs the host name"
    NEED_SECRET = "password method"
    NEED_GSS_EXCHANGE = "gss method without gss encryption"
    AUTHENTICATED = "authenticated"
    SLOT_TAKEN = "connection slot taken"
    LOGGED_IN = "logged in to the backend"
    RELAY = "relay"
    FAIL = "fail"  # every Close: refusals, errors, EOF, timeouts, cancels


_S = State
_I = Input
_HANDSHAKES: Final = (_S.TLS_HANDSHAKE, _S.DIRECT_TLS_HANDSHAKE, _S.GSS_HANDSHAKE)
# States waiting for the shell's answer to a question; client bytes and EOF are kept for later.
_WAITING: Final = (
    _S.ADMITTING,
    _S.CLAIMING_SLOT,
    _S.LOOKING_UP_ROLES,
    _S.LOOKING_UP_HOSTNAME,
    _S.FETCHING_SECRET,
    _S.PREPARING_GSS,
    _S.CONNECTING_BACKEND,
    _S.BACKEND_LOGIN,
    _S.REGISTERING_CANCEL_KEY,
)
_LIVE: Final = tuple(s for s in State if s not in (_S.NEW, _S.RELAYING, _S.CLOSED))
# Where the pg_hba.conf and method decisions are taken.
_DECIDING: Final = (_S.ADMITTING, _S.LOOKING_UP_ROLES, _S.LOOKING_UP_HOSTNAME)


def _rows(
    states: Iterable[State], input_: Input, after: State | None = None
) -> dict[tuple[State, Input], State]:
    """``input_`` in each of ``states``; ``after`` None: stay."""
    return {(state, input_): after or state for state in states}


# (state, input) → next state. Absent = illegal.
TRANSITIONS: Final[dict[tuple[State, Input], State]] = {
    (_S.NEW, _I.START): _S.NEGOTIATING,
    (_S.NEW, _I.START_RESOLVING): _S.RESOLVING_HOST,
    (_S.RESOLVING_HOST, _I.HOST_RESOLVED): _S.NEGOTIATING,
    # Negotiation: the Negotiator decides; a handshake runs in the shell.
    (_S.NEGOTIATING, _I.CLIENT_DATA): _S.NEGOTIATING,
    (_S.NEGOTIATING, _I.CLIENT_EOF): _S.NEGOTIATING,  # the Negotiator's Close follows
    (_S.NEGOTIATING, _I.TLS_ACCEPTED): _S.TLS_HANDSHAKE,
    (_S.NEGOTIATING, _I.DIRECT_TLS): _S.DIRECT_TLS_HANDSHAKE,
    (_S.NEGOTIATING, _I.GSS_ACCEPTED): _S.GSS_HANDSHAKE,
    (_S.NEGOTIATING, _I.STARTUP): _S.ADMITTING,
    **_rows(_HANDSHAKES, _I.CHANNEL_ESTABLISHED, _S.NEGOTIATING),
    **_rows(_HANDSHAKES, _I.CLIENT_EOF),  # logged, then FAIL
    # Waiting for an answer: the client's bytes and EOF wait too (PostgreSQL is not reading).
    **_rows(_WAITING, _I.CLIENT_DATA),
    **_rows(_WAITING, _I.CLIENT_EOF),
    # Authentication exchanges read the client's messages.
    **_rows((_S.PASSWORD_EXCHANGE, _S.GSS_EXCHANGE), _I.CLIENT_DATA),
    **_rows((_S.PASSWORD_EXCHANGE, _S.GSS_EXCHANGE), _I.CLIENT_EOF),
    # Admission and pg_hba.conf.
    (_S.ADMITTING, _I.ADMISSION): _S.ADMITTING,
    (_S.ADMITTING, _I.NEED_ROLES): _S.LOOKING_UP_ROLES,
    (_S.LOOKING_UP_ROLES, _I.ROLES): _S.LOOKING_UP_ROLES,
    **_rows((_S.ADMITTING, _S.LOOKING_UP_ROLES), _I.NEED_HOSTNAME, _S.LOOKING_UP_HOSTNAME),
    (_S.LOOKING_UP_HOSTNAME, _I.HOSTNAME): _S.LOOKING_UP_HOSTNAME,
    # The matched line's method.
    **_rows(_DECIDING, _I.NEED_SECRET, _S.FETCHING_SECRET),
    (_S.FETCHING_SECRET, _I.SECRET): _S.PASSWORD_EXCHANGE,
    **_rows(_DECIDING, _I.NEED_GSS_EXCHANGE, _S.PREPARING_GSS),
    (_S.PREPARING_GSS, _I.GSS_EXCHANGE_READY): _S.GSS_EXCHANGE,
    **_rows(
        (*_DECIDING, _S.PASSWORD_EXCHANGE, _S.GSS_EXCHANGE),
        _I.AUTHENTICATED,
        _S.CLAIMING_SLOT,
    ),
    # Only an authenticated session takes a max_connections slot: the count again, then the slot.
    (_S.CLAIMING_SLOT, _I.ADMISSION): _S.CLAIMING_SLOT,
    (_S.CLAIMING_SLOT, _I.SLOT_TAKEN): _S.CONNECTING_BACKEND,
    # The backend.
    (_S.CONNECTING_BACKEND, _I.BACKEND_CONNECTED): _S.BACKEND_LOGIN,
    (_S.CONNECTING_BACKEND, _I.BACKEND_REUSED): _S.CONNECTING_BACKEND,
    # libpq's next try (another host, or another encryption method): see pggate.hop.plan.
    **_rows((_S.CONNECTING_BACKEND, _S.BACKEND_LOGIN), _I.BACKEND_RETRY, _S.CONNECTING_BACKEND),
    (_S.BACKEND_LOGIN, _I.BACKEND_DATA): _S.BACKEND_LOGIN,
    **_rows((_S.CONNECTING_BACKEND, _S.BACKEND_LOGIN), _I.LOGGED_IN, _S.REGISTERING_CANCEL_KEY),
    (_S.REGISTERING_CANCEL_KEY, _I.CANCEL_KEY): _S.REGISTERING_CANCEL_KEY,
    (_S.REGISTERING_CANCEL_KEY, _I.RELAY): _S.RELAYING,
    # Anything may fail while the login runs; a timer runs from negotiation to the relay.
    **_rows(_LIVE, _I.CHANNEL_FAILED),
    **_rows((s for s in _LIVE if s is not _S.RESOLVING_HOST), _I.TIMEOUT),
    **_rows(_LIVE, _I.FAIL, _S.CLOSED),
}

# Events whose input is fixed (the others are mapped in LoginMachine._input).
_INPUTS: Final[Mapping[type[ev.Event], Input]] = {
    ev.RemoteHostFound: _I.HOST_RESOLVED,
    ev.RemoteHostFailed: _I.HOST_RESOLVED,
    ev.ClientData: _I.CLIENT_DATA,
    ev.ClientEof: _I.CLIENT_EOF,
    ev.ChannelEstablished: _I.CHANNEL_ESTABLISHED,
    ev.ChannelFailed: _I.CHANNEL_FAILED,
    ev.Admission: _I.ADMISSION,
    ev.RolesFound: _I.ROLES,
    ev.RoleLookupFailed: _I.ROLES,
    ev.HostNameChecked: _I.HOSTNAME,
    ev.SecretFound: _I.SECRET,
    ev.SecretLookupFailed: _I.SECRET,
    ev.GssExchangeReady: _I.GSS_EXCHANGE_READY,
    ev.GssExchangeFailed: _I.GSS_EXCHANGE_READY,
    ev.BackendConnected: _I.BACKEND_CONNECTED,
    ev.BackendUnreachable: _I.BACKEND_CONNECTED,
    ev.BackendTlsRefused: _I.BACKEND_CONNECTED,
    ev.BackendGssRefused: _I.BACKEND_CONNECTED,
    ev.BackendLinkFailed: _I.BACKEND_CONNECTED,
    ev.BackendReused: _I.BACKEND_REUSED,
    ev.BackendData: _I.BACKEND_DATA,
    ev.BackendEof: _I.BACKEND_DATA,
    ev.CancelKeyIssued: _I.CANCEL_KEY,
    ev.Timeout: _I.TIMEOUT,
}


class LoginMachine:
    """One connection's login. Feed events with :meth:`feed`; execute the commands.

    ``config``, ``hba`` and ``ident`` are the connection's snapshot (taken once, at accept);
    ``backend`` how to reach the backend (``backend_order``: the host order, shuffled by
    the caller for ``load_balance_hosts=random``); ``host`` and ``port`` the client's
    address as text;
    ``ssl_enabled``/``gss_enabled`` what the negotiator may accept; ``local_interfaces`` this
    host's addresses, needed only when pg_hba.conf has ``samehost``/``samenet``.
    After the StartupMessage, :attr:`startup` is set; :attr:`remote_host` is what log lines
    call the client (its address, or with ``log_hostname`` its host name).
    """

    def __init__(
        self,
        config: Config,
        hba: HbaPolicy,
        ident: IdentMaps,
        backend: Route,
        *,
        host: str,
        port: str,
        ssl_enabled: bool,
        gss_enabled: bool,
        local_interfaces: tuple[IPv4Interface | IPv6Interface, ...] = (),
        backend_order: Sequence[int] | None = None,
    ) -> None:
        self.config = config
        self.hba = hba
        self.ident = ident
        self.backend = backend
        self.host = host
        self.port = port
        self.remote_host = host
        self.local_interfaces = local_interfaces
        self.state = State.NEW
        self.startup: StartupMessage | None = None
        self.protocol = codes.PROTOCOL_3_0
        self.auth = AuthResult()
        self._negotiator = neg.Negotiator(
            ssl_enabled, gss_enabled, trace=config.trace_connection_negotiation
        )
        self._info = ChannelInfo()
        self._plain = bytearray()  # decrypted client bytes not consumed yet
        self._client_eof = False
        self._gss_pending = b""
        self._reverse_name: str | None = None  # a real name from log_hostname's look-up
        self._roles: frozenset[str] | None = None
        self._hostname_checked = False
        self._hostname: str | None = None
        self._rule: HbaRule | None = None
        self._exchange: password.Exchange | None = None
        self._gss_exchange: ev.GssExchange | None = None
        self._backend_login: BackendLogin | None = None
        self._backend_order = backend_order
        self._plan: ConnectPlan | None = None
        self._address: BackendAddress | None = None  # the host of the current attempt
        self._refusal: LoginFailed | None = None  # the backend's latest ErrorResponse
        self._backend_starting = False  # the embedded cluster is being restarted
        self._complete: LoginComplete | None = None
        self._out: list[cmd.Command] = []

    # --- driving ------------------------------------------------------------------------------

    def feed(self, event: ev.Event) -> list[cmd.Command]:
        """One event in; the commands to execute, in order."""
        try:
            self._handle(event)
        except SilentClose as err:  # first: InvalidMessageLength is both, and silent
            self._close(None, cmd.Log(cmd.Level.LOG, str(err)) if str(err) else None)
        except ClientError as err:
            if self._rule is not None and self.state in _AUTHENTICATING:
                _name_the_line(err, self._rule)
            self._fail(err)
        out, self._out = self._out, []
        return out

    def _move(self, input_: Input) -> None:
        self.state = look_up(TRANSITIONS, "login", self.state, input_)

    def _emit(self, *commands: cmd.Command) -> None:
        self._out += commands

    def _close(self, error: bytes | None, log: cmd.Log | None) -> None:
        self._move(Input.FAIL)
        self._emit(cmd.Close(error, log))

    def _fail(self, err: ClientError) -> None:
        """ClientSession._fail: the ErrorResponse, then FATAL with the log-only detail."""
        self._close(
            codec.error_response(err), cmd.Log(cmd.Level.FATAL, err.message, err.log_detail)
        )

    def _log(self, text: str, *, level: cmd.Level = cmd.Level.LOG) -> None:
        self._emit(cmd.Log(level, text))

    def _handle(self, event: ev.Event) -> None:
        if isinstance(event, ev.Start):
            self._start()
            return
        before = self.state
        self._move(_INPUTS[type(event)])
        if isinstance(event, ev.ClientData | ev.ClientEof):
            self._client(event)
        elif isinstance(event, ev.Timeout):
            self._timeout()
        elif isinstance(event, ev.ChannelFailed):
            self._channel_failed(event.error)
        elif isinstance(event, ev.ChannelEstablished):
            self._established(before, event.info)
        elif isinstance(event, ev.RemoteHostFound | ev.RemoteHostFailed):
            self._host_resolved(event)
        elif isinstance(event, ev.Admission):
            self._admit(event)
        elif isinstance(event, ev.RolesFound | ev.RoleLookupFailed | ev.HostNameChecked):
            self._looked_up(event)
        elif isinstance(event, ev.SecretFound | ev.SecretLookupFailed):
            self._secret(event)
        elif isinstance(event, ev.GssExchangeReady | ev.GssExchangeFailed):
            self._gss_ready(event)
        elif isinstance(event, ev.CancelKeyIssued):
            self._relay(event)
        else:
            self._backend_event(event)

    # --- accept and negotiation ---------------------------------------------------------------

    def _start(self) -> None:
        if self.config.log_hostname:
            self._move(Input.START_RESOLVING)
            self._emit(cmd.LookUpRemoteHost())
            return
        self._move(Input.START)
        self._begin()

    def _host_resolved(self, event: ev.RemoteHostFound | ev.RemoteHostFailed) -> None:
        """BackendInitialize's pg_getnameinfo_all: a failure leaves the address (WARNING)."""
        if isinstance(event, ev.RemoteHostFailed):
            self._log(f"pg_getnameinfo_all() failed: {event.reason}", level=cmd.Level.WARNING)
        else:
            self.remote_host = event.name
            try:
                ipaddress.ip_address(event.name.split("%")[0])
            except ValueError:
                self._reverse_name = event.name  # a real name, not the address echoed back
        self._begin()

    def _begin(self) -> None:
        if "receipt" in self.config.log_connections:
            self._log(f"connection received: host={self.remote_host} port={self.port}")
        self._emit(cmd.SetTimeout(self.config.authentication_timeout))

    def _client(self, event: ev.ClientData | ev.ClientEof) -> None:
        if isinstance(event, ev.ClientData):
            self._plain += event.data
        else:
            self._client_eof = True
        if self.state is State.NEGOTIATING:
            data = bytes(self._plain)
            self._plain.clear()
            self._negotiation(
                self._negotiator.receive(data) if data or not self._client_eof else []
            )
            if self._client_eof and self.state is State.NEGOTIATING:
                self._negotiation(self._negotiator.eof())
        elif self.state is State.PASSWORD_EXCHANGE:
            self._password_messages()
        elif self.state is State.GSS_EXCHANGE:
            self._gss_messages()
        elif self.state in _HANDSHAKES:
            self._handshake_eof()

    def _negotiation(self, events: list[neg.Output]) -> None:
        for event in events:
            if isinstance(event, neg.Send):
                self._emit(cmd.SendToClient(event.data))
            elif isinstance(event, neg.Trace):
                self._log(event.text)
            elif isinstance(event, neg.Close):
                # What ProcessStartupPacket answers with an ErrorResponse it reports as FATAL;
                # what it closes silently on is COMMERROR (a LOG line).
                level = cmd.Level.FATAL if event.error else cmd.Level.LOG
                self._close(event.error, cmd.Log(level, event.log) if event.log else None)
            elif isinstance(event, neg.Cancel):
                # Cancels are not subject to pg_hba.conf; the client gets EOF once forwarded.
                self._emit(event)
                self._close(None, None)
            elif isinstance(event, neg.StartTLS):
                self._move(Input.TLS_ACCEPTED)
                self._emit(event)
            elif isinstance(event, neg.StartDirectTLS):
                self._move(Input.DIRECT_TLS)
                self._emit(event)
            elif isinstance(event, neg.StartGSS):
                self._move(Input.GSS_ACCEPTED)
                self._gss_pending = event.pending
                self._emit(event)
            else:
                self._started(event)

    def _established(self, before: State, info: ChannelInfo) -> None:
        self._info = info
        trace = self._negotiator.trace
        if before is State.DIRECT_TLS_HANDSHAKE:
            if info.alpn != codes.ALPN_POSTGRESQL:
                # PostgreSQL 17+: direct TLS requires ALPN, or a client could be fooled into
                # talking to a different TLS service on the same port.
                if trace:
                    self._log(neg.TRACE_DIRECT_REJECTED)
                raise SilentClose(
                    "received direct SSL connection request without ALPN protocol negotiation "
                    "extension"
                )
            if trace:
                self._log(neg.TRACE_DIRECT_ACCEPTED)
            self._negotiator.encryption_established("direct_ssl")
        elif before is State.TLS_HANDSHAKE:
            self._negotiator.encryption_established("ssl")
        else:
            if self._gss_pending:
                # PostgreSQL's secure_open_gssapi never reads its receive buffer: bytes that
                # came with the request end in this FATAL, sent encrypted (protocol.md §1.4).
                raise ProtocolViolation(
                    "received unencrypted data after GSSAPI encryption request",
                    detail=_MITM_DETAIL,
                )
            self._negotiator.encryption_established("gss")

    def _handshake_eof(self) -> None:
        """EOF in a handshake: be_tls_open_server's COMMERROR; GSS logs nothing."""
        if self.state is State.DIRECT_TLS_HANDSHAKE and self._negotiator.trace:
            self._log(neg.TRACE_DIRECT_REJECTED)
        text = "" if self.state is State.GSS_HANDSHAKE else "could not accept SSL connection"
        raise SilentClose(f"{text}: EOF detected" if text else "")

    def _channel_failed(self, err: ChannelError) -> None:
        """The channel's last records (a TLS alert), then PostgreSQL's COMMERROR. A failed
        handshake that may be a version mismatch gets the HINT with the accepted range
        (MIN_OPENSSL_TLS_VERSION / MAX_OPENSSL_TLS_VERSION when unset)."""
        if err.output:
            self._emit(cmd.WriteRaw(err.output))
        hint = None
        handshake = self.state in _HANDSHAKES
        if err.protocol_hint and handshake:
            cfg = self.config
            hint = (
                "This may indicate that the client does not support any SSL protocol version "
                f"between {cfg.ssl_min_protocol_version or 'TLSv1'} and "
                f"{cfg.ssl_max_protocol_version or 'TLSv1.3'}."
            )
        line = cmd.Log(cmd.Level.LOG, str(err), err.detail, hint)
        if self.state is State.DIRECT_TLS_HANDSHAKE and self._negotiator.trace:
            self._emit(line)
            line = cmd.Log(cmd.Level.LOG, neg.TRACE_DIRECT_REJECTED)
        self._close(None, line)

    def _timeout(self) -> None:
        """authentication_timeout: StartupPacketTimeoutHandler exits without a word; the
        backend's connect_timeout is the backend's failure."""
        if self.state in (State.CONNECTING_BACKEND, State.BACKEND_LOGIN):
            # connect_timeout is per host: libpq moves on to the next (try_next_addr).
            self._retry(self._backend_plan().unreachable("timeout expired"))
            return
        self._close(None, None)

    # --- startup, admission, pg_hba.conf ------------------------------------------------------

    def _started(self, event: neg.Startup) -> None:
        self._move(Input.STARTUP)
        # Bytes behind the startup packet belong to the authentication phase.
        self._plain[:0] = event.pending
        if event.negotiate:
            self._emit(cmd.SendToClient(event.negotiate))
        self.startup = event.message
        self.protocol = event.protocol
        self._emit(cmd.CheckAdmission())

    def _admit(self, event: ev.Admission) -> None:
        """The gateway's state, asked twice. After the StartupMessage, PostgreSQL's
        canAcceptConnections: refused while shutting down, or when authenticated sessions
        already fill max_connections; no slot is taken, a connection still authenticating is
        bounded by max_startup_connections instead. Once authenticated: :meth:`_claim`."""
        if self.state is State.CLAIMING_SLOT:
            self._claim(event)
            return
        if event.stopping:
            raise ClientError(
                codes.SQLSTATE_CANNOT_CONNECT_NOW, "the database system is shutting down"
            )
        self._check_room(event)
        self._check_hba()

    def _check_room(self, event: ev.Admission) -> None:
        if event.connections >= self.config.max_connections:
            raise ClientError(
                codes.SQLSTATE_TOO_MANY_CONNECTIONS, "sorry, too many clients already"
            )

    def _claim(self, event: ev.Admission) -> None:
        """Authentication succeeded: take the max_connections slot, unless sessions that
        authenticated meanwhile filled them (53300, before AuthenticationOk). A shutdown that
        began meanwhile does not refuse: as in PostgreSQL, a connection admitted before it
        completes its login."""
        self._check_room(event)
        self._emit(cmd.TakeSlot())
        self._move(Input.SLOT_TAKEN)
        self._plan = self.backend.plan(self._backend_order)
        self._connect(self._plan.start())

    def _looked_up(self, event: ev.RolesFound | ev.RoleLookupFailed | ev.HostNameChecked) -> None:
        if isinstance(event, ev.RoleLookupFailed):
            raise event.error
        if isinstance(event, ev.RolesFound):
            self._roles = event.roles
        else:
            self._hostname_checked = True
            self._hostname = event.name
        self._check_hba()

    def _check_hba(self) -> None:
        """hba.c check_hba, with only the look-ups this pg_hba.conf can use, roles first."""
        startup = self._startup()
        hba = self.hba
        address = ipaddress.ip_address(self.host.split("%")[0])
        if hba.needs_roles and self._roles is None:
            self._move(Input.NEED_ROLES)
            self._emit(cmd.LookUpRoles(startup.user))
            return
        if hba.needs_hostname and not self._hostname_checked:
            self._move(Input.NEED_HOSTNAME)
            self._emit(cmd.LookUpHostName(address, self._reverse_name))
            return
        connection = facts.connection_facts(
            self._info,
            startup,
            address=address,
            hostname=self._hostname,
            roles=self._roles,
            local_interfaces=self.local_interfaces if hba.needs_local_interfaces else (),
        )
        rule = hba.find(connection)
        if rule is None:
            raise ClientError(
                codes.SQLSTATE_INVALID_AUTHORIZATION, hba.describe_rejection(connection, None)
            )
        if rule.method is AuthMethod.REJECT:
            raise ClientError(
                codes.SQLSTATE_INVALID_AUTHORIZATION,
                hba.describe_rejection(connection, rule),
                log_detail=rule.log_detail,
            )
        self._rule = rule
        self._authenticate(rule, startup.user)

    def _startup(self) -> StartupMessage:
        assert self.startup is not None  # set before any state that asks
        return self.startup

    # --- authentication (auth.c ClientAuthentication) ----------------------------------------

    def _authenticate(self, rule: HbaRule, user: str) -> None:
        method = rule.method
        if method not in IMPLEMENTED_METHODS:
            raise ClientError(
                codes.SQLSTATE_INVALID_AUTHORIZATION,
                f'authentication method "{method}" is not supported by this pggate build',
                log_detail=rule.log_detail,
            )
        peer = facts.peer_certificate(self._info)
        cert.check_before_auth(rule, peer, ca_loaded=bool(self.config.ssl_ca_file))
        if method is AuthMethod.CERT:
            assert peer is not None  # check_before_auth demanded a verified certificate
            self._log_authenticated(f'identity="{cert.authenticated_identity(peer)}"', method)
            self._authenticated()
        elif method in PASSWORD_METHODS:
            self._move(Input.NEED_SECRET)
            self._emit(cmd.FetchSecret(user, verifiers.role_secret_sql(user)))
        elif method is AuthMethod.GSS:
            established = facts.gss_identity(self._info)
            if established is not None:
                self._gss_authenticated(*established, b"")
            else:
                self._move(Input.NEED_GSS_EXCHANGE)
                self._emit(cmd.StartGssAuth(user, self.config.gss_accept_delegation))
        else:  # trust
            self._log_authenticated(f'user="{user}"', method)
            self._authenticated()

    def _log_authenticated(self, who: str, method: AuthMethod) -> None:
        if "authentication" in self.config.log_connections:
            rule = self._rule
            assert rule is not None
            where = f"({rule.file}:{rule.line_number})"
            self._log(f"connection authenticated: {who} method={method} {where}")

    def _secret(self, event: ev.SecretFound | ev.SecretLookupFailed) -> None:
        if isinstance(event, ev.SecretLookupFailed):
            raise event.error
        rule = self._rule
        assert rule is not None
        user = self._startup().user
        exchange = password.choose_exchange(
            rule.method,
            user,
            verifiers.parse_role_secret(event.rows),
            now=event.now,
            tls_end_point_hash=facts.scram_binding(self._info),
            password_encryption=self.config.password_encryption,
            mock_nonce=event.mock_nonce,
            mock_iterations=mock_iterations(self.config, event.parameters),
        )
        self._exchange = exchange
        self._emit(cmd.SendToClient(exchange.start()))
        self._password_messages()

    def _next_message(self, max_length: int = MAX_RESPONSE_LENGTH) -> tuple[bytes, bytes] | None:
        """One typed client message, or None until more bytes come. ``max_length`` bounds
        the length word as pq_getmessage's ``maxlen`` (judged as soon as it arrives); at EOF
        :class:`_ClientGone` says whether a message had begun, since the exchanges differ
        there (see each)."""
        parsed, consumed = codec.read_message(self._plain, max_length=max_length)
        if parsed is None:
            if self._client_eof:
                raise _ClientGone(inside=bool(self._plain))
            return None
        kind, body = parsed[0], bytes(parsed[1])
        del self._plain[:consumed]
        return kind, body

    def _password_messages(self) -> None:
        exchange = self._exchange
        assert exchange is not None
        scram = isinstance(exchange, password.ScramExchange)
        # CheckSASLAuth reads with PG_MAX_SASL_MESSAGE_LENGTH, recv_password_packet with
        # PG_MAX_AUTH_TOKEN_LENGTH.
        limit = codes.MAX_SASL_MESSAGE_LENGTH + 4 if scram else MAX_RESPONSE_LENGTH
        try:
            while (message := self._next_message(limit)) is not None:
                outcome = exchange.receive(*message)
                if isinstance(outcome, password.Send):
                    self._emit(cmd.SendToClient(outcome.data))
                elif isinstance(outcome, password.Failure):
                    raise outcome.error
                else:
                    self._password_authenticated(exchange, outcome)
                    return
        except (codec.InvalidMessageLength, _ClientGone) as err:
            # A bad length word or an EOF inside a message is pq_getmessage's EOF (logged as
            # COMMERROR, never sent), and each caller reacts its own way: CheckSASLAuth
            # returns STATUS_ERROR, an ordinary password failure (28P01), except for an EOF
            # where the next message type should be (STATUS_EOF); recv_password_packet
            # returns STATUS_EOF and the backend exits without a word.
            gone_between = isinstance(err, _ClientGone) and not err.inside
            if scram and not gone_between:
                detail = err.message if isinstance(err, codec.InvalidMessageLength) else None
                raise cert.method_failure(
                    exchange.method, self._startup().user, log_detail=detail
                ) from None
            raise SilentClose(str(err)) from None

    def _password_authenticated(
        self, exchange: password.Exchange, outcome: password.Success
    ) -> None:
        keys = None
        if isinstance(exchange, password.ScramExchange) and exchange.client_key:
            assert exchange.server_key is not None
            keys = (exchange.client_key, exchange.server_key)
        self.auth = AuthResult(before_ok=outcome.final, scram_keys=keys)
        user = self._startup().user
        self._log_authenticated(f'identity="{user}"', exchange.method)
        self._authenticated()

    def _gss_ready(self, event: ev.GssExchangeReady | ev.GssExchangeFailed) -> None:
        if isinstance(event, ev.GssExchangeFailed):
            # A keytab GSSAPI cannot use fails the method with the text and log DETAIL its
            # first accept would produce, before AuthenticationGSS is sent.
            raise cert.method_failure(
                AuthMethod.GSS,
                self._startup().user,
                log_detail=f"accepting GSS security context failed: {event.error.detail}",
            )
        self._gss_exchange = event.exchange
        self._emit(cmd.SendToClient(event.exchange.start()))
        self._gss_messages()

    def _gss_messages(self) -> None:
        # Imported here: python-gssapi loads only when a pg_hba.conf line asks for gss.
        from pggate.auth import gss as gss_auth

        exchange = self._gss_exchange
        assert exchange is not None
        try:
            while (message := self._next_message()) is not None:
                outcome = exchange.receive(*message)
                if isinstance(outcome, gss_auth.Send):
                    self._emit(cmd.SendToClient(outcome.data))
                elif isinstance(outcome, gss_auth.Failure):
                    if outcome.output:
                        self._emit(cmd.SendToClient(outcome.output))
                    raise outcome.error
                else:
                    self._gss_authenticated(outcome.principal, outcome.delegated, outcome.output)
                    return
        except (codec.InvalidMessageLength, _ClientGone) as err:
            # pg_GSS_recvauth returns STATUS_ERROR at any EOF and when pq_getmessage refuses
            # the length word: the method fails (FATAL 28000), unlike recv_password_packet.
            detail = err.message if isinstance(err, codec.InvalidMessageLength) else None
            raise cert.method_failure(
                AuthMethod.GSS, self._startup().user, log_detail=detail
            ) from None

    def _gss_authenticated(self, principal: str, delegated: bool, before_ok: bytes) -> None:
        """pg_GSS_checkauth on the principal the handshake or the exchange established."""
        from pggate.auth import gss as gss_auth

        rule = self._rule
        assert rule is not None
        # Logged even if the map check below fails, as PostgreSQL's set_authn_id does.
        self._log_authenticated(f'identity="{principal}"', AuthMethod.GSS)
        gss_auth.authorize_gss_principal(
            principal,
            pg_user=self._startup().user,
            include_realm=rule.include_realm,
            krb_realm=rule.krb_realm,
            usermap=rule.usermap,
            case_insensitive=self.config.krb_caseins_users,
            ident=self.ident,
        )
        self.auth = AuthResult(
            before_ok=before_ok,
            gss_authenticated=True,
            gss_principal=principal,
            gss_delegated=delegated,
        )
        self._authenticated()

    def _authenticated(self) -> None:
        """CheckCertAuth after the method, then the connection slot (see :meth:`_claim`)."""
        rule = self._rule
        assert rule is not None
        peer = facts.peer_certificate(self._info)
        if peer is not None:
            cert.check_name(rule, peer, self._startup().user, self.ident)
        self._move(Input.AUTHENTICATED)
        self._emit(cmd.CheckAdmission())

    # --- the backend --------------------------------------------------------------------------

    def _backend_plan(self) -> ConnectPlan:
        assert self._plan is not None  # made when the connection slot was taken
        return self._plan

    def _connect(self, step: Step) -> None:
        """The plan's next attempt, or the end: the backend's own refusal verbatim when it
        had the last word, else 08006 with every reason in the log."""
        if isinstance(step, GiveUp):
            refusal = self._refusal
            if step.refusal is not None and refusal is not None:
                # As PostgreSQL: authentication succeeded, then InitPostgres refused; except
                # 57P03, which PostgreSQL sends before authentication (BackendStartup).
                before = b""
                if refusal.error.sqlstate != codes.SQLSTATE_CANNOT_CONNECT_NOW:
                    before = self._auth_ok()
                self._close(
                    before + refusal.error_message,
                    cmd.Log(cmd.Level.FATAL, refusal.error.message),
                )
                return
            if self._backend_starting:
                raise backend_starting_up(step.detail)
            raise backend_unavailable(step.detail)
        address = self.backend.addresses[step.host]
        self._address = address
        self._backend_login = None
        self._emit(
            cmd.SetTimeout(address.connect_timeout),
            cmd.ConnectBackend(
                self._startup(),
                address,
                step,
                self.auth.scram_keys,
                refresh=self._backend_plan().wanted != "any",
            ),
        )

    def _retry(self, step: Step) -> None:
        self._move(Input.BACKEND_RETRY)
        self._connect(step)

    def _backend_event(
        self,
        event: ev.BackendConnected
        | ev.BackendUnreachable
        | ev.BackendTlsRefused
        | ev.BackendGssRefused
        | ev.BackendLinkFailed
        | ev.BackendReused
        | ev.BackendData
        | ev.BackendEof,
    ) -> None:
        plan = self._backend_plan()
        if isinstance(event, ev.BackendUnreachable):
            self._backend_starting = event.starting
            self._retry(plan.unreachable(event.reason))
        elif isinstance(event, ev.BackendTlsRefused):
            self._retry(plan.tls_refused())
        elif isinstance(event, ev.BackendGssRefused):
            self._retry(plan.gss_refused())
        elif isinstance(event, ev.BackendLinkFailed):
            if event.final:
                raise backend_unavailable(plan.broken(event.reason).detail)
            self._retry(plan.link_failed(event.reason))
        elif isinstance(event, ev.BackendEof):
            raise backend_unavailable(
                plan.broken("server closed the connection unexpectedly").detail
            )
        elif isinstance(event, ev.BackendReused):
            self._checked_login(event.login, terminate=False)
        elif isinstance(event, ev.BackendConnected):
            startup = self._startup()
            address = self._address
            assert address is not None
            login = self.backend.login(
                address, startup.user, startup.params, event.link, self.auth.scram_keys
            )
            self._backend_login = login
            self._emit(cmd.SetTimeout(address.connect_timeout), cmd.SendToBackend(login.startup()))
        else:
            assert self._backend_login is not None
            try:
                reply, outcome = self._backend_login.receive(event.data)
            except ClientError as err:  # pggate's own refusal (require_auth, ...): libpq's
                where = plan.broken(err.log_detail or err.message).detail
                raise refused_by_pggate(err, where) from None
            if reply:
                self._emit(cmd.SendToBackend(reply))
            if isinstance(outcome, LoginFailed):
                self._refusal = outcome
                error = outcome.error
                self._retry(
                    plan.login_refused(error.sqlstate, error.message, outcome.error_message)
                )
            elif outcome is not None:
                self._checked_login(outcome, terminate=True)

    def _checked_login(self, login: LoginComplete, *, terminate: bool) -> None:
        """CONNECTION_CHECK_TARGET: keep this server, or say goodbye and try the next."""
        retry = self._backend_plan().logged_in(login.parameters)
        if retry is None:
            self._logged_in(login)
            return
        if terminate:
            self._emit(cmd.SendToBackend(codec.terminate()))
        self._retry(retry)

    def _auth_ok(self) -> bytes:
        return self.auth.before_ok + codec.authentication_ok()

    def _logged_in(self, login: LoginComplete) -> None:
        if self._client_eof:
            self._close(None, None)  # the client left while the backend logged in
            return
        self._move(Input.LOGGED_IN)
        self._complete = login
        key_length = (
            codes.CANCEL_KEY_LENGTH_3_2
            if self.protocol >= codes.PROTOCOL_3_2
            else codes.CANCEL_KEY_LENGTH_3_0
        )
        self._emit(
            cmd.SetTimeout(None),
            cmd.RegisterCancelKey(key_length, login.backend_pid, login.backend_key),
        )

    def _relay(self, event: ev.CancelKeyIssued) -> None:
        login = self._complete
        assert login is not None
        startup = self._startup()
        # The burst ends with ReadyForQuery; BackendKeyData goes just before it, as in
        # PostgreSQL. The backend's own key stays inside pggate.
        burst = login.burst
        ready = burst[-codes.READY_FOR_QUERY_SIZE :]
        greeting = (
            self._auth_ok()
            + burst[: -codes.READY_FOR_QUERY_SIZE]
            + codec.backend_key_data(event.pid, event.key)
            + ready
            + login.leftover
        )
        if "authorization" in self.config.log_connections:
            suffix = facts.authorized_suffix(self._info, self.auth)
            self._log(
                f"connection authorized: user={startup.user} database={startup.database} "
                f"application_name={startup.application_name or ''}{suffix}"
            )
        self._move(Input.RELAY)
        pending = bytes(self._plain)
        self._plain.clear()
        self._emit(cmd.StartRelay(greeting, pending, event.pid, login))


class _ClientGone(SilentClose):
    """The client closed while an exchange waited for its next message; ``inside``: after a
    message had begun (its type byte arrived)."""

    def __init__(self, *, inside: bool) -> None:
        super().__init__("")
        self.inside = inside


# Where a ClientError is the method's failure, whose log DETAIL names the pg_hba.conf line.
_AUTHENTICATING: Final = frozenset(
    {
        State.ADMITTING,
        State.LOOKING_UP_ROLES,
        State.LOOKING_UP_HOSTNAME,
        State.FETCHING_SECRET,
        State.PASSWORD_EXCHANGE,
        State.PREPARING_GSS,
        State.GSS_EXCHANGE,
    }
)


def _name_the_line(err: ClientError, rule: HbaRule) -> None:
    """auth.c auth_failed: a failure's log DETAIL ends with the pg_hba.conf line."""
    if rule.log_detail not in (err.log_detail or ""):
        err.log_detail = "\n".join(filter(None, (err.log_detail, rule.log_detail)))


__all__ = [
    "TRANSITIONS",
    "AuthResult",
    "Input",
    "LoginMachine",
    "State",
    "backend_unavailable",
    "mock_iterations",
]
