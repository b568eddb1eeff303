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
side; this module only speaks the client's half of the exchanges.
"""

from __future__ import annotations

import base64
import enum
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

import scramp

from pggate.proto import codec, codes, password_math
from pggate.proto.errors import ClientError, ProtocolViolation

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


@dataclass(slots=True)
class BackendLogin:
    """Drive one backend login: call :meth:`startup`, then feed bytes to :meth:`receive`."""

    user: str
    parameters: Mapping[str, str]
    password: str | None = None
    scram_keys: tuple[bytes, bytes] | None = None  # ClientKey, ServerKey
    state: LoginState = LoginState.AUTHENTICATING
    _buffer: bytearray = field(default_factory=bytearray)
    _burst: bytearray = field(default_factory=bytearray)
    _key: tuple[int, bytes] | None = None
    _reported: dict[str, str] = field(default_factory=dict)
    _scram: ScramPasswordClient | ScramKeyClient | None = None

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

    def _answer(self, request: int, payload: bytes) -> bytes:
        """Answer an authentication request from the backend."""
        if request == codes.AUTH_SASL:
            return self._start_scram(request, payload)
        if request == codes.AUTH_SASL_CONTINUE and self._scram is not None:
            return codec.password_message(self._scram.client_final(payload))
        if request == codes.AUTH_SASL_FINAL and self._scram is not None:
            self._scram.verify_server_final(payload)
            return b""
        if request in (codes.AUTH_CLEARTEXT_PASSWORD, codes.AUTH_MD5_PASSWORD):
            if self.password is None:
                raise _no_credentials(request)
            if request == codes.AUTH_CLEARTEXT_PASSWORD:
                return codec.password_message(self.password.encode() + b"\0")
            # fe-auth.c pg_password_sendauth: the verifier pg_authid would hold, then the answer.
            stored = password_math.pg_md5_encrypt(self.password.encode(), self.user.encode())
            return codec.password_message(password_math.md5_response(stored, payload[:4]) + b"\0")
        raise _login_error(f"unsupported backend authentication request {request}")

    def _start_scram(self, request: int, payload: bytes) -> bytes:
        """Choose the SASL mechanism and the SCRAM client; the SASLInitialResponse."""
        mechanisms = [m.decode() for m in payload.split(b"\0") if m]
        if codes.SCRAM_SHA_256 not in mechanisms:
            raise _login_error(f"backend offered SASL mechanisms {mechanisms}")
        if self.scram_keys is not None:
            self._scram = ScramKeyClient(*self.scram_keys)
        elif self.password is not None:
            self._scram = ScramPasswordClient(self.user, self.password)
        else:
            raise _no_credentials(request)
        first = self._scram.client_first()
        return codec.password_message(
            codes.SCRAM_SHA_256.encode() + b"\0" + len(first).to_bytes(4, "big") + first
        )


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


class ScramPasswordClient:
    """SCRAM-SHA-256 with a password (pggate's own role, from the backend conninfo).

    scramp runs this whole exchange, SASLprep and Hi() with the backend's iteration count
    included; the wire format (``n=<user>``) and the errors are scramp's.
    """

    def __init__(self, user: str, password: str) -> None:
        self._client = scramp.ScramClient([codes.SCRAM_SHA_256], user, password)

    def client_first(self) -> bytes:
        first: str = self._client.get_client_first()
        return first.encode()

    def client_final(self, server_first: bytes) -> bytes:
        self._client.set_server_first(server_first.decode())
        final: str = self._client.get_client_final()
        return final.encode()

    def verify_server_final(self, server_final: bytes) -> None:
        self._client.set_server_final(server_final.decode())


# The GS2 header without channel binding ("n": the client does not support it; no authzid). It
# opens client-first and, base64-encoded, is the final message's c= (RFC 5802 section 7), which
# with channel binding would also carry the binding data (fe-auth-scram.c
# build_client_final_message).
_GS2_HEADER = "n,,"


def _server_first_attributes(server_first: bytes) -> dict[str, str]:
    """The ``name=value`` attributes of a server-first-message (r, s, i)."""
    return dict(item.split("=", 1) for item in server_first.decode().split(",") if "=" in item)


class ScramKeyClient:
    """SCRAM-SHA-256 with the ClientKey/ServerKey recovered from the client's own SCRAM login.

    PostgreSQL 18's pass-through (libpq scram_client_key): the proof needs only ClientKey, and
    the backend's signature is checked with ServerKey, so pggate can log in as the client's
    role to a backend holding the same SCRAM secret without ever knowing the password (nor
    running Hi(), so the server's iteration count does not matter here).
    """

    def __init__(self, client_key: bytes, server_key: bytes) -> None:
        self._client_key = client_key
        self._server_key = server_key
        self._nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self._first_bare = f"n=,r={self._nonce}"
        self._auth_message = b""

    def client_first(self) -> bytes:
        return f"{_GS2_HEADER}{self._first_bare}".encode()

    def client_final(self, server_first: bytes) -> bytes:
        nonce = _server_first_attributes(server_first).get("r", "")
        if not nonce.startswith(self._nonce) or len(nonce) <= len(self._nonce):
            raise _login_error("backend SCRAM nonce does not extend ours")
        channel_binding = base64.b64encode(_GS2_HEADER.encode()).decode()
        without_proof = f"c={channel_binding},r={nonce}"
        self._auth_message = f"{self._first_bare},{server_first.decode()},{without_proof}".encode()
        proof = password_math.client_proof(self._client_key, self._auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, server_final: bytes) -> None:
        """fe-auth-scram.c verify_server_signature."""
        expected = password_math.scram_signature(self._server_key, self._auth_message)
        text = server_final.decode()
        given = base64.b64decode(text[2:]) if text.startswith("v=") else b""
        if not hmac.compare_digest(expected, given):
            raise _login_error("backend SCRAM server signature does not match")
