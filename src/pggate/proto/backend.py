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
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import scramp

from pggate.errors import ClientError, ProtocolViolation
from pggate.proto import codec, codes

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


@dataclass(frozen=True, slots=True)
class LoginFailed:
    """The backend refused: ``error_message`` is its ErrorResponse, to relay verbatim."""

    error: ClientError
    error_message: bytes


@dataclass(slots=True)
class BackendLogin:
    """Drive one backend login: call :meth:`startup`, then feed bytes to :meth:`receive`."""

    user: str
    parameters: Mapping[str, str]
    password: str | None = None
    state: LoginState = LoginState.AUTHENTICATING
    _buffer: bytearray = field(default_factory=bytearray)
    _burst: bytearray = field(default_factory=bytearray)
    _key: tuple[int, bytes] | None = None
    _scram: scramp.ScramClient | None = None

    def startup(self) -> bytes:
        """The StartupMessage; always protocol 3.0 (the client-facing version is pggate's)."""
        return codec.startup_message(codes.PROTOCOL_3_0, self.parameters)

    def receive(self, data: bytes) -> tuple[bytes, LoginComplete | LoginFailed | None]:
        """Feed backend bytes; returns (bytes to send to the backend, outcome or None)."""
        self._buffer += data
        replies = bytearray()
        while self.state in (LoginState.AUTHENTICATING, LoginState.RECEIVING_BURST):
            parsed, consumed = codec.read_message(
                self._buffer, max_length=MAX_LOGIN_MESSAGE_LENGTH
            )
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
                raise ProtocolViolation(
                    f"backend sent message type {kind!r} during authentication"
                )
            request, payload = codec.parse_authentication(body)
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
            return LoginComplete(bytes(self._burst), pid, key, bytes(self._buffer))
        else:
            self._burst += raw
        return None

    def _answer(self, request: int, payload: bytes) -> bytes:
        """Answer an authentication request from the backend."""
        needs_password = (codes.AUTH_CLEARTEXT_PASSWORD, codes.AUTH_MD5_PASSWORD, codes.AUTH_SASL)
        if request in needs_password and self.password is None:
            raise ClientError(
                codes.SQLSTATE_CONNECTION_FAILURE,
                "could not log in to the backend server",
                log_detail=(
                    f"The backend asked for a password (authentication request {request}) "
                    "and the backend setting has none; give pggate a trust path to the "
                    "backend."
                ),
            )
        if request == codes.AUTH_CLEARTEXT_PASSWORD:
            assert self.password is not None
            return codec.password_message(self.password.encode() + b"\0")
        if request == codes.AUTH_MD5_PASSWORD:
            assert self.password is not None
            inner = hashlib.md5((self.password + self.user).encode()).hexdigest()
            outer = hashlib.md5(inner.encode() + payload[:4]).hexdigest()
            return codec.password_message(b"md5" + outer.encode() + b"\0")
        if request == codes.AUTH_SASL:
            assert self.password is not None
            mechanisms = [m.decode() for m in payload.split(b"\0") if m]
            if "SCRAM-SHA-256" not in mechanisms:
                raise ClientError(
                    codes.SQLSTATE_CONNECTION_FAILURE,
                    "could not log in to the backend server",
                    log_detail=f"backend offered SASL mechanisms {mechanisms}",
                )
            self._scram = scramp.ScramClient(["SCRAM-SHA-256"], self.user, self.password)
            first = self._scram.get_client_first().encode()
            return codec.password_message(
                b"SCRAM-SHA-256\0" + len(first).to_bytes(4, "big") + first
            )
        if request == codes.AUTH_SASL_CONTINUE and self._scram is not None:
            self._scram.set_server_first(payload.decode())
            return codec.password_message(self._scram.get_client_final().encode())
        if request == codes.AUTH_SASL_FINAL and self._scram is not None:
            self._scram.set_server_final(payload.decode())
            return b""
        raise ClientError(
            codes.SQLSTATE_CONNECTION_FAILURE,
            "could not log in to the backend server",
            log_detail=f"unsupported backend authentication request {request}",
        )
