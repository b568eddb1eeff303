"""pggate as a client logging in to its backend PostgreSQL (sans-IO).

After pggate has authenticated a client itself, it opens a backend connection as the requested
role. This state machine produces the StartupMessage, answers the backend's authentication
request (the backend path is expected to trust pggate; a password from the ``backend`` conninfo
is used for cleartext/MD5/SCRAM requests), and collects the post-authentication burst
(ParameterStatus, BackendKeyData, notices) up to ReadyForQuery. The burst is kept as raw bytes so
that the client sees exactly what the backend said, except for BackendKeyData, which pggate
replaces with its own key (the client must cancel through pggate).

A backend ErrorResponse during login is kept verbatim, so the client receives PostgreSQL's own
message (``database "x" does not exist``, ``role "y" is not permitted to log in``...).

The SCRAM and MD5 arithmetic is :mod:`pggate.proto.password_math`'s, shared with pggate's server
side; the SCRAM client is :mod:`pggate.proto.scram_client`. What the backend may ask for is
libpq's to decide (fe-auth.c ``check_expected_areq``: ``require_auth`` and ``channel_binding``),
and :class:`AuthPolicy` carries those settings; pggate adds one rule of its own: no cleartext
password over a link that is neither encrypted (TLS, GSSAPI) nor a local socket unless
``require_auth`` names ``password`` (libpq would send it).

AuthenticationGSS is answered as fe-auth.c's ``pg_GSS_startup``/``pg_GSS_continue`` do, by a
:class:`GssAuthClient` the caller supplies (:mod:`pggate.transport.gss_client` holds the
GSSAPI calls; this module makes none): one GSSResponse per output token, libpq's texts for
each failure.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from pggate.proto import codec, codes, password_math, query
from pggate.proto.errors import ClientError, ProtocolViolation
from pggate.proto.scram_client import Binding, ScramClient, ScramClientError, ScramKeys

# Backend messages during login are small; anything larger is a broken backend.
MAX_LOGIN_MESSAGE_LENGTH = 1 << 20


class LoginState(enum.Enum):
    AUTHENTICATING = "authenticating"
    RECEIVING_BURST = "receiving_burst"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class LoginComplete:
    """The backend is ready: ``burst`` is what to forward to the client (without 'K')."""

    burst: bytes
    backend_pid: int
    backend_key: bytes
    leftover: bytes  # bytes after ReadyForQuery (none expected; relayed if present)
    # The ParameterStatus values the backend reported (GUC_REPORT settings, e.g. its
    # server_version and, from PostgreSQL 16, scram_iterations).
    parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoginFailed:
    """The backend refused: ``error_message`` is its ErrorResponse, to relay verbatim."""

    error: ClientError
    error_message: bytes


ChannelBinding = Literal["disable", "prefer", "require"]

# libpq's AUTH_REQ codes grouped as require_auth names them (fe-connect.c pqConnectOptions2).
REQUIRE_AUTH_METHODS: Final[Mapping[str, frozenset[int]]] = {
    "password": frozenset({codes.AUTH_CLEARTEXT_PASSWORD}),
    "md5": frozenset({codes.AUTH_MD5_PASSWORD}),
    "gss": frozenset({codes.AUTH_GSS, codes.AUTH_GSS_CONTINUE}),
    "sspi": frozenset({codes.AUTH_SSPI, codes.AUTH_GSS_CONTINUE}),
    "scram-sha-256": frozenset({codes.AUTH_SASL, codes.AUTH_SASL_CONTINUE, codes.AUTH_SASL_FINAL}),
}
DEFAULT_MAX_ITERATIONS: Final = 100_000


@dataclass(frozen=True, slots=True)
class RequireAuth:
    """A validated ``require_auth`` as the requests the server may make (the same
    ``allowed_auth_methods`` bitmask fe-connect.c builds) and whether it must authenticate."""

    text: str
    allowed: frozenset[int]
    auth_required: bool
    names_password: bool  # "password" listed itself: pggate's cleartext rule (see above)

    @classmethod
    def from_methods(
        cls, text: str, methods: Iterable[str], *, allow_none: bool, names_password: bool
    ) -> RequireAuth:
        """From the conninfo's method names (``oauth``, which pggate never answers, allows
        no request: a SASL request then fails as a SCRAM-only list would)."""
        allowed = frozenset().union(*(REQUIRE_AUTH_METHODS.get(m, frozenset()) for m in methods))
        return cls(text, allowed, not allow_none, names_password)


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """What pggate lets its backend ask for, from the ``backend`` conninfo."""

    channel_binding: ChannelBinding = "prefer"
    require_auth: RequireAuth | None = None
    max_iterations: int = DEFAULT_MAX_ITERATIONS


@dataclass(frozen=True, slots=True)
class LinkSecurity:
    """What the link to the backend protects: ``end_point_hash`` is the backend certificate's
    tls-server-end-point hash when TLS is in use; ``local`` is a Unix socket; ``gss`` is
    GSSAPI encryption (libpq's ``gssapi_used`` before any authentication request)."""

    tls: bool = False
    end_point_hash: bytes | None = None
    local: bool = False
    gss: bool = False


class GssAuthFailure(Exception):
    """A :class:`GssAuthClient` could not go on; the message is libpq's text
    (``GSSAPI continuation error: ...``, ``host name must be specified``, ...)."""


class GssAuthClient(Protocol):
    """pggate's GSSAPI initiator for one backend login (fe-auth.c pg_GSS_startup/continue).

    ``step(None)`` starts the context (AuthenticationGSS), ``step(token)`` continues it with
    the server's AuthenticationGSSContinue; each returns (the token to send, possibly empty;
    whether the context is complete) or raises :class:`GssAuthFailure`. ``started`` is true
    once a context exists."""

    @property
    def started(self) -> bool: ...

    def step(self, token: bytes | None) -> tuple[bytes, bool]: ...


PLAIN_TCP: Final = LinkSecurity()


_AREQ_DESCRIPTION: Final[Mapping[int, str]] = {
    codes.AUTH_CLEARTEXT_PASSWORD: "server requested a cleartext password",
    codes.AUTH_MD5_PASSWORD: "server requested a hashed password",
    codes.AUTH_GSS: "server requested GSSAPI authentication",
    codes.AUTH_GSS_CONTINUE: "server requested GSSAPI authentication",
    codes.AUTH_SSPI: "server requested SSPI authentication",
    codes.AUTH_SASL: "server requested SASL authentication",
    codes.AUTH_SASL_CONTINUE: "server requested SASL authentication",
    codes.AUTH_SASL_FINAL: "server requested SASL authentication",
}


@dataclass(slots=True)
class BackendLogin:
    """Drive one backend login: call :meth:`startup`, then feed bytes to :meth:`receive`."""

    user: str
    parameters: Mapping[str, str]
    password: str | None = field(default=None, repr=False)
    scram_keys: tuple[bytes, bytes] | None = field(default=None, repr=False)  # Client, Server
    policy: AuthPolicy = AuthPolicy()
    link: LinkSecurity = PLAIN_TCP
    # pggate's GSSAPI initiator toward this host; None: GSSAPI is not available to pggate.
    gss: GssAuthClient | None = field(default=None, repr=False)
    state: LoginState = LoginState.AUTHENTICATING
    _buffer: bytearray = field(default_factory=bytearray)
    _burst: bytearray = field(default_factory=bytearray)
    _key: tuple[int, bytes] | None = None
    _reported: dict[str, str] = field(default_factory=dict)
    _scram: ScramClient | None = None
    _finished_auth: bool = False  # libpq's client_finished_auth

    def startup(self) -> bytes:
        """The StartupMessage; always protocol 3.0 (the client-facing version is pggate's)."""
        return codec.startup_message(codes.PROTOCOL_3_0, self.parameters)

    def receive(self, data: bytes) -> tuple[bytes, LoginComplete | LoginFailed | None]:
        """Feed backend bytes; returns (bytes to send to the backend, outcome or None)."""
        self._buffer += data
        replies = bytearray()
        while self.state in (LoginState.AUTHENTICATING, LoginState.RECEIVING_BURST):
            parsed, consumed = codec.read_message(self._buffer, max_length=MAX_LOGIN_MESSAGE_LENGTH)
            if parsed is None:
                break
            raw = bytes(self._buffer[:consumed])
            del self._buffer[:consumed]
            kind, body = parsed
            outcome = self._handle(kind, bytes(body), raw, replies)
            if outcome is not None:
                return bytes(replies), outcome
        return bytes(replies), None

    def _handle(
        self, kind: bytes, body: bytes, raw: bytes, replies: bytearray
    ) -> LoginComplete | LoginFailed | None:
        if kind == codes.MSG_ERROR_RESPONSE:
            self.state = LoginState.FAILED
            fields = codec.parse_error_fields(body)
            return LoginFailed(codec.client_error_from_fields(fields), raw)
        if self.state is LoginState.AUTHENTICATING:
            if kind == codes.MSG_NEGOTIATE_PROTOCOL_VERSION:
                return None  # only possible for options we never send; harmless
            if kind != codes.MSG_AUTHENTICATION:
                raise ProtocolViolation(f"backend sent message type {kind!r} during authentication")
            request, payload = codec.parse_authentication(body)
            self._check_expected(request)
            if request == codes.AUTH_OK:
                self.state = LoginState.RECEIVING_BURST
            else:
                replies += self._answer(request, payload)
            return None
        if kind == codes.MSG_BACKEND_KEY_DATA:
            self._key = codec.parse_backend_key_data(body)
        elif kind == codes.MSG_READY_FOR_QUERY:
            self._burst += raw
            self.state = LoginState.DONE
            pid, key = self._key if self._key is not None else (0, b"")
            return LoginComplete(
                bytes(self._burst), pid, key, bytes(self._buffer), dict(self._reported)
            )
        else:
            if kind == codes.MSG_PARAMETER_STATUS:
                name, value = codec.parse_parameter_status(body)
                self._reported[name] = value
            self._burst += raw
        return None

    def _check_expected(self, request: int) -> None:
        """fe-auth.c check_expected_areq: require_auth, then channel_binding=require."""
        required = self.policy.require_auth
        if required is not None:
            reason = None
            if request == codes.AUTH_OK:
                # GSSAPI encryption authenticated both ends already: require_auth=gss is met
                # without an AuthenticationGSS exchange (libpq's gssapi_used).
                gss_done = self.link.gss and codes.AUTH_GSS in required.allowed
                if required.auth_required and not self._finished_auth and not gss_done:
                    reason = "server did not complete authentication"
            elif request not in required.allowed:
                reason = _AREQ_DESCRIPTION.get(
                    request, "server requested an unknown authentication type"
                )
            if reason is not None:
                raise _login_error(
                    f'authentication method requirement "{required.text}" failed: {reason}'
                )
        if self.policy.channel_binding == "require":
            if request == codes.AUTH_OK:
                if self._scram is None or not (self._scram.bound and self._scram.finished):
                    raise _login_error(
                        "channel binding required, but server authenticated client without "
                        "channel binding"
                    )
            elif request not in REQUIRE_AUTH_METHODS["scram-sha-256"]:
                raise _login_error(
                    "channel binding required but not supported by server's authentication request"
                )

    def _answer(self, request: int, payload: bytes) -> bytes:
        """pg_fe_sendauth: answer an authentication request from the backend."""
        try:
            if request == codes.AUTH_SASL:
                return self._start_scram(payload)
            if request in (codes.AUTH_SASL_CONTINUE, codes.AUTH_SASL_FINAL):
                if self._scram is None:
                    raise _login_error(
                        "fe_sendauth: invalid authentication request from server: "
                        "AUTH_REQ_SASL_CONT without AUTH_REQ_SASL"
                    )
                if request == codes.AUTH_SASL_CONTINUE:
                    return codec.password_message(self._scram.client_final(payload))
                self._scram.server_final(payload)
                self._finished_auth = True
                return b""
        except ScramClientError as exc:
            raise _login_error(str(exc)) from None
        if request in (codes.AUTH_CLEARTEXT_PASSWORD, codes.AUTH_MD5_PASSWORD):
            return self._send_password(request, payload)
        if request in (codes.AUTH_GSS, codes.AUTH_GSS_CONTINUE):
            return self._answer_gss(request, payload)
        raise _login_error(f"authentication method {request} not supported")

    def _answer_gss(self, request: int, payload: bytes) -> bytes:
        """pg_GSS_startup (AuthenticationGSS) and pg_GSS_continue (AuthenticationGSSContinue):
        the output token, if any, as GSSResponse; a complete context finishes the
        authentication (libpq's client_finished_auth)."""
        gss = self.gss
        if gss is None:
            raise _login_error("GSSAPI authentication not supported")
        if request == codes.AUTH_GSS and gss.started:
            raise _login_error("duplicate GSS authentication request")
        # A continuation without a context is a first call, its payload unread (libpq).
        token = payload if gss.started else None
        try:
            output, complete = gss.step(token)
        except GssAuthFailure as exc:
            raise _login_error(str(exc)) from None
        if complete:
            self._finished_auth = True
        return codec.password_message(output) if output else b""

    def _send_password(self, request: int, payload: bytes) -> bytes:
        """pg_password_sendauth, after pggate's own cleartext rule."""
        if self.password is None:
            raise _no_credentials(request)
        self._finished_auth = True
        if request == codes.AUTH_CLEARTEXT_PASSWORD:
            link = self.link
            required = self.policy.require_auth
            encrypted = link.tls or link.gss or link.local
            if not encrypted and not (required and required.names_password):
                raise _login_error(
                    "server requested a cleartext password over an unencrypted connection; "
                    "pggate does not send it unless the backend conninfo says "
                    "require_auth=password (or use TLS: sslmode=require or stronger)"
                )
            return codec.password_message(self.password.encode() + b"\0")
        # fe-auth.c pg_password_sendauth: the verifier pg_authid would hold, then the answer.
        stored = password_math.pg_md5_encrypt(self.password.encode(), self.user.encode())
        return codec.password_message(password_math.md5_response(stored, payload[:4]) + b"\0")

    def _start_scram(self, payload: bytes) -> bytes:
        """pg_SASL_init: choose the mechanism (-PLUS over TLS unless disabled) and answer."""
        binding_policy = self.policy.channel_binding
        tls = self.link.tls
        if binding_policy == "require" and not tls:
            raise ScramClientError("channel binding required, but SSL not in use")
        if self._scram is not None:
            raise ScramClientError("duplicate SASL authentication request")
        mechanisms = [m.decode("utf-8", "replace") for m in payload.split(b"\0") if m]
        plus = False
        plain = False
        for mechanism in mechanisms:
            if mechanism == codes.SCRAM_SHA_256_PLUS:
                if not tls:
                    raise ScramClientError(
                        "server offered SCRAM-SHA-256-PLUS authentication over a non-SSL connection"
                    )
                plus = plus or binding_policy != "disable"
            elif mechanism == codes.SCRAM_SHA_256:
                plain = True
        if not (plus or plain):
            raise ScramClientError(
                "none of the server's SASL authentication mechanisms are supported"
            )
        if binding_policy == "require" and not plus:
            raise ScramClientError(
                "channel binding is required, but server did not offer an authentication "
                "method that supports channel binding"
            )
        secret: str | ScramKeys
        if self.scram_keys is not None:
            secret = ScramKeys(*self.scram_keys)
        elif self.password is not None:
            secret = self.password
        else:
            raise _no_credentials(codes.AUTH_SASL)
        if plus:
            if self.link.end_point_hash is None:
                # fe-secure-openssl.c pgtls_get_peer_certificate_hash, e.g. for Ed25519.
                raise ScramClientError("could not find digest for NID UNDEF")
            binding = Binding.BOUND
        elif tls and binding_policy != "disable":
            binding = Binding.NOT_OFFERED
        else:
            binding = Binding.NONE
        self._scram = ScramClient(
            secret,
            binding=binding,
            end_point_hash=self.link.end_point_hash if plus else None,
            max_iterations=self.policy.max_iterations,
        )
        first = self._scram.client_first()
        return codec.sasl_initial_response(self._scram.mechanism, first)


@dataclass(slots=True)
class LoginRefresh:
    """What a pooled backend reports *now*: an idle connection hears no news, so before it is
    judged against target_session_attrs again, an empty query makes the server send the
    ParameterStatus of anything that changed (``in_hot_standby`` after a promotion, a reloaded
    ``default_transaction_read_only``) ahead of its ReadyForQuery (postgres.c ReadyForQuery,
    ReportChangedGUCOptions). The refreshed login carries them, in its parameters and in the
    greeting the next client gets, just before ReadyForQuery."""

    login: LoginComplete
    _buffer: bytearray = field(default_factory=bytearray)
    _statuses: bytearray = field(default_factory=bytearray)
    _reported: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def request() -> bytes:
        return query.simple_query("")

    def receive(self, data: bytes) -> LoginComplete | None:
        """Feed the backend's answer; the refreshed login once ReadyForQuery arrives."""
        self._buffer += data
        while True:
            parsed, consumed = codec.read_message(self._buffer, max_length=MAX_LOGIN_MESSAGE_LENGTH)
            if parsed is None:
                return None
            raw = bytes(self._buffer[:consumed])
            del self._buffer[:consumed]
            kind, body = parsed
            if kind == codes.MSG_ERROR_RESPONSE:
                error = codec.client_error_from_fields(codec.parse_error_fields(body))
                raise _login_error(f"pooled backend refused an empty query: {error.message}")
            if kind == codes.MSG_PARAMETER_STATUS:
                name, value = codec.parse_parameter_status(body)
                self._reported[name] = value
                self._statuses += raw
            elif kind == codes.MSG_READY_FOR_QUERY:
                login = self.login
                cut = len(login.burst) - codes.READY_FOR_QUERY_SIZE
                return LoginComplete(
                    login.burst[:cut] + bytes(self._statuses) + login.burst[cut:],
                    login.backend_pid,
                    login.backend_key,
                    login.leftover,
                    {**login.parameters, **self._reported},
                )
            # EmptyQueryResponse and notices say nothing the next client needs.


def refused_by_pggate(err: ClientError, where: str) -> ClientError:
    """What a client is told when pggate gave up on its backend login itself (``err`` raised by
    :meth:`BackendLogin.receive`), with ``where`` (the host and libpq's words) for the log. A
    protocol violation is the backend's, not the client's: 08006, never 08P01."""
    if isinstance(err, ProtocolViolation):
        return _login_error(where)
    err.log_detail = where
    return err


def _login_error(detail: str) -> ClientError:
    return ClientError(
        codes.SQLSTATE_CONNECTION_FAILURE,
        "could not log in to the backend server",
        log_detail=detail,
    )


def _no_credentials(request: int) -> ClientError:
    return _login_error(
        f"The backend asked for authentication (request {request}) and pggate has neither a "
        "password for this role nor SCRAM keys from the client's own SCRAM login; give pggate "
        "a trust path to the backend, or use scram-sha-256 for this role."
    )
