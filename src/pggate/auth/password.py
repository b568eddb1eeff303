"""Password authentication exchanges: ``password``, ``md5`` and ``scram-sha-256`` (sans-IO).

Each exchange is a small state machine (one :class:`State` enum, one transition table per kind):
:meth:`Exchange.start` gives the AuthenticationRequest to send, :meth:`Exchange.receive` takes one
client message (type byte and body) and answers :class:`Send` (more bytes for the client, keep
going), :class:`Success` (bytes to send before AuthenticationOk, which the session sends) or
:class:`Failure` (the FATAL to send). The session does the I/O and the clock;
:func:`choose_exchange` picks the exchange as auth.c ``CheckPWChallengeAuth`` does.

The SCRAM server is written here rather than with scramp's ``ScramServer``: PostgreSQL's clients
send an empty ``n=`` user name (libpq ``n,,n=,r=...``), which scramp refuses, and PostgreSQL's
checks, their order and their SQLSTATEs/texts (auth-scram.c ``read_client_first_message``,
``read_client_final_message``, auth-sasl.c ``CheckSASLAuth``) are what a client must see. The
parser walks the message byte by byte like auth-scram.c's ``read_attr_value`` /
``read_any_attr``, so its DETAILs are PostgreSQL's. scramp supplies SASLprep (verifiers.py) and
is the reference client in the tests.

Security invariants kept here: every length is checked before use (SASL messages ≤ 1024 bytes,
password packets ≤ 65535, the length word included as PostgreSQL counts it); every secret
comparison is ``hmac.compare_digest``; an unknown role, a role without a usable password, an
expired one, or an MD5-only role under SCRAM runs a *doomed* exchange with the mock salt and
fails exactly like a wrong password, the reason going to the log only; ``SCRAM-SHA-256-PLUS`` is
offered only when a TLS certificate hash is given, and a client that says ``y`` (binding
supported, server thought not to) on TLS is refused (downgrade).
"""

from __future__ import annotations

import abc
import base64
import enum
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Final

from pggate.auth import verifiers
from pggate.auth.cert import method_failure
from pggate.auth.verifiers import PasswordType, RoleSecret, ScramSecret
from pggate.hba.methods import AuthMethod
from pggate.proto import codec, codes, password_math
from pggate.proto.errors import ClientError, ProtocolViolation
from pggate.statetable import look_up

Body = bytes | bytearray | memoryview


# --- outcomes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``data`` (an AuthenticationRequest) to the client and wait for its next message."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Success:
    """Authenticated: send ``final`` (SASLFinal, or nothing), then AuthenticationOk."""

    final: bytes


@dataclass(frozen=True, slots=True)
class Failure:
    """Send ``error`` (FATAL) and close; ``error.log_detail`` is for the log only."""

    error: ClientError


Outcome = Send | Success | Failure


# --- the state machine -------------------------------------------------------------------------


class State(enum.Enum):
    NEW = "new"
    AWAIT_PASSWORD = "awaiting password message"
    AWAIT_SASL_INITIAL = "awaiting SASLInitialResponse"
    AWAIT_CLIENT_FIRST = "awaiting client-first-message"
    AWAIT_CLIENT_FINAL = "awaiting client-final-message"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Input(enum.Enum):
    START = "start"  # the authentication request is sent
    RECEIVE = "receive"  # a client message arrives
    NO_INITIAL_RESPONSE = "no initial response"  # SASLInitialResponse with length -1
    CLIENT_FIRST = "client-first-message"  # server-first-message sent
    ACCEPT = "accept"
    REJECT = "reject"


Table = Mapping[tuple[State, Input], State]

_S, _E = State, Input
PASSWORD_TRANSITIONS: Final[Table] = {
    (_S.NEW, _E.START): _S.AWAIT_PASSWORD,
    (_S.AWAIT_PASSWORD, _E.RECEIVE): _S.AWAIT_PASSWORD,
    (_S.AWAIT_PASSWORD, _E.ACCEPT): _S.SUCCEEDED,
    (_S.AWAIT_PASSWORD, _E.REJECT): _S.FAILED,
}
SCRAM_TRANSITIONS: Final[Table] = {
    (_S.NEW, _E.START): _S.AWAIT_SASL_INITIAL,
    (_S.AWAIT_SASL_INITIAL, _E.RECEIVE): _S.AWAIT_SASL_INITIAL,
    (_S.AWAIT_SASL_INITIAL, _E.NO_INITIAL_RESPONSE): _S.AWAIT_CLIENT_FIRST,
    (_S.AWAIT_SASL_INITIAL, _E.CLIENT_FIRST): _S.AWAIT_CLIENT_FINAL,
    (_S.AWAIT_SASL_INITIAL, _E.REJECT): _S.FAILED,
    (_S.AWAIT_CLIENT_FIRST, _E.RECEIVE): _S.AWAIT_CLIENT_FIRST,
    (_S.AWAIT_CLIENT_FIRST, _E.CLIENT_FIRST): _S.AWAIT_CLIENT_FINAL,
    (_S.AWAIT_CLIENT_FIRST, _E.REJECT): _S.FAILED,
    (_S.AWAIT_CLIENT_FINAL, _E.RECEIVE): _S.AWAIT_CLIENT_FINAL,
    (_S.AWAIT_CLIENT_FINAL, _E.ACCEPT): _S.SUCCEEDED,
    (_S.AWAIT_CLIENT_FINAL, _E.REJECT): _S.FAILED,
}


class Exchange(abc.ABC):
    """Common driving logic; the subclasses say what the messages mean."""

    TRANSITIONS: ClassVar[Table]
    method: ClassVar[AuthMethod]  # the pg_hba.conf method whose failure text this exchange sends

    def __init__(self, user: str) -> None:
        self.user = user
        self.state = State.NEW

    def _move(self, event: Input) -> None:
        self.state = look_up(self.TRANSITIONS, type(self).__name__, self.state, event)

    def start(self) -> bytes:
        """The AuthenticationRequest that opens the exchange."""
        self._move(Input.START)
        return self._request()

    def receive(self, message_type: bytes, body: Body) -> Outcome:
        """One client message: its type byte and its body (after the length word)."""
        if len(message_type) != 1:
            raise ValueError("message_type must be one byte")
        self._move(Input.RECEIVE)
        try:
            outcome = self._step(message_type, bytes(body))
        except ClientError as err:
            outcome = Failure(err)
        if isinstance(outcome, Failure):
            self._move(Input.REJECT)
        elif isinstance(outcome, Success):
            self._move(Input.ACCEPT)
        return outcome

    @abc.abstractmethod
    def _request(self) -> bytes:
        """The AuthenticationRequest of this method."""

    @abc.abstractmethod
    def _step(self, message_type: bytes, body: bytes) -> Outcome:
        """Interpret one message; a :class:`Send` must have made its own move (``_send``)."""

    def _send(self, event: Input, data: bytes) -> Send:
        self._move(event)
        return Send(data)

    def _password_failure(self, log_detail: str | None) -> Failure:
        return Failure(method_failure(self.method, self.user, log_detail=log_detail))


# --- password and md5 --------------------------------------------------------------------------


def _length_word(body: bytes) -> int:
    """The message's Int32 length word, which counts itself: what pq_getmessage's ``maxlen``
    bounds (pqcomm.c: ``len > maxlen`` before ``len -= 4``), so a body may have at most
    ``maxlen - 4`` bytes (1020 for SASL, 65531 for a password packet)."""
    return len(body) + codec.LENGTH_WORD_SIZE


def _password_packet(message_type: bytes, body: bytes) -> bytes:
    """auth.c recv_password_packet: the NUL-terminated password, checked as PostgreSQL does."""
    if message_type != codes.MSG_PASSWORD:
        raise ProtocolViolation(f"expected password response, got message type {message_type[0]}")
    if _length_word(body) > codes.MAX_AUTH_TOKEN_LENGTH:
        # pq_getmessage: logged, then EOF; PostgreSQL exits without a word.
        raise codec.InvalidMessageLength()
    if not body or body.find(b"\0") != len(body) - 1:
        raise ProtocolViolation("invalid password packet size")
    if len(body) == 1:
        raise ClientError(codes.SQLSTATE_INVALID_PASSWORD, "empty password returned by client")
    return body[:-1]


def _no_match(user: str) -> str:
    return f'Password does not match for user "{user}".'


def _usable_password(
    secret: RoleSecret | None, user: str, now: datetime
) -> tuple[str | None, str | None]:
    """crypt.c get_role_password: (the stored verifier, None) or (None, log-only reason)."""
    problem = verifiers.secret_problem(secret, user, now)
    if problem is not None or secret is None:
        return None, problem
    return secret.rolpassword, None


class CleartextExchange(Exchange):
    """Method ``password`` (auth.c CheckPasswordAuth, crypt.c plain_crypt_verify)."""

    TRANSITIONS = PASSWORD_TRANSITIONS
    method = AuthMethod.PASSWORD

    def __init__(self, user: str, secret: RoleSecret | None, *, now: datetime) -> None:
        super().__init__(user)
        self._shadow, self._problem = _usable_password(secret, user, now)

    def _request(self) -> bytes:
        return codec.authentication_request(codes.AUTH_CLEARTEXT_PASSWORD)

    def _step(self, message_type: bytes, body: bytes) -> Outcome:
        password = _password_packet(message_type, body)
        if self._shadow is None:
            return self._password_failure(self._problem)
        kind = verifiers.password_type(self._shadow)
        if kind is PasswordType.SCRAM_SHA_256:
            scram = verifiers.parse_scram_secret(self._shadow)
            assert scram is not None  # password_type parsed it
            matched = verifiers.scram_verify_plain(password, scram)
        elif kind is PasswordType.MD5:
            computed = verifiers.md5_secret(password, self.user)
            matched = hmac.compare_digest(computed, self._shadow.encode("ascii"))
        else:
            return self._password_failure(
                f'Password of user "{self.user}" is in unrecognized format.'
            )
        if not matched:
            return self._password_failure(_no_match(self.user))
        return Success(b"")


class Md5Exchange(Exchange):
    """Method ``md5`` for a role whose stored secret is MD5 (auth.c CheckMD5Auth).

    Also the doomed exchange for a role without a usable password when
    ``password_encryption = md5`` (CheckPWChallengeAuth).
    """

    TRANSITIONS = PASSWORD_TRANSITIONS
    method = AuthMethod.MD5

    def __init__(
        self,
        user: str,
        secret: RoleSecret | None,
        salt: bytes | None = None,
        *,
        now: datetime,
    ) -> None:
        super().__init__(user)
        if salt is None:
            salt = secrets.token_bytes(codes.MD5_SALT_LENGTH)
        if len(salt) != codes.MD5_SALT_LENGTH:
            raise ValueError("the MD5 salt is 4 bytes")
        self.salt = salt
        self._shadow, self._problem = _usable_password(secret, user, now)

    def _request(self) -> bytes:
        return codec.authentication_request(codes.AUTH_MD5_PASSWORD, self.salt)

    def _step(self, message_type: bytes, body: bytes) -> Outcome:
        response = _password_packet(message_type, body)
        if self._shadow is None:
            return self._password_failure(self._problem)
        if not verifiers.is_md5_secret(self._shadow):
            return self._password_failure(
                f'User "{self.user}" has a password that cannot be used with MD5 authentication.'
            )
        expected = password_math.md5_response(self._shadow.encode("ascii"), self.salt)
        if not hmac.compare_digest(response, expected):
            return self._password_failure(_no_match(self.user))
        return Success(b"")


# --- SCRAM-SHA-256 -----------------------------------------------------------------------------

_MALFORMED: Final = "malformed SCRAM message"
_CBIND_NONE: Final = {ord("n"): b"biws", ord("y"): b"eSws"}  # base64 of "n,," / "y,,"


def _malformed(detail: str) -> ProtocolViolation:
    return ProtocolViolation(_MALFORMED, detail=detail)


def _sanitize_char(c: int) -> str:
    """auth-scram.c sanitize_char: printable ASCII quoted, anything else in hex."""
    return f"'{chr(c)}'" if 0x21 <= c <= 0x7E else f"0x{c:02x}"


def _sanitize_str(raw: bytes) -> str:
    """auth-scram.c sanitize_str: printable ASCII kept, others '?', at most 30 characters."""
    return "".join(chr(c) if 0x21 <= c <= 0x7E else "?" for c in raw[:30])


def _is_printable(raw: bytes) -> bool:
    """RFC 5802 ``printable``: %x21-2B / %x2D-7E."""
    return all(0x21 <= c <= 0x7E and c != 0x2C for c in raw)


class _Cursor:
    """A SCRAM message read like auth-scram.c: the end of the bytes reads as NUL.

    Callers guarantee the message has no NUL of its own (checked first, as PostgreSQL does).
    """

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else 0

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def _value(self) -> bytes:
        comma = self.data.find(b",", self.pos)
        end = len(self.data) if comma < 0 else comma
        value = self.data[self.pos : end]
        self.pos = end + 1 if comma >= 0 else end
        return value

    def attr_value(self, attr: str) -> bytes:
        """read_attr_value: ``<attr>=<value>`` up to a comma (consumed) or the end."""
        c = self.peek()
        if c != ord(attr):
            raise _malformed(f'Expected attribute "{attr}" but found "{_sanitize_char(c)}".')
        self.pos += 1
        if self.peek() != ord("="):
            raise _malformed(f'Expected character "=" for attribute "{attr}".')
        self.pos += 1
        return self._value()

    def any_attr(self) -> tuple[int, bytes]:
        """read_any_attr: any ``ALPHA=value``."""
        c = self.peek()
        if c == 0:
            raise _malformed("Attribute expected, but found end of string.")
        if not (ord("A") <= c <= ord("Z") or ord("a") <= c <= ord("z")):
            raise _malformed(
                f'Attribute expected, but found invalid character "{_sanitize_char(c)}".'
            )
        self.pos += 1
        if self.peek() != ord("="):
            raise _malformed(f'Expected character "=" for attribute "{chr(c)}".')
        self.pos += 1
        return c, self._value()


@dataclass(frozen=True, slots=True)
class _ClientFirst:
    cbind_flag: int  # ord('n'), ord('y') or ord('p')
    bare: bytes
    nonce: bytes


@dataclass(frozen=True, slots=True)
class _ClientFinal:
    channel_binding: bytes
    nonce: bytes
    proof: bytes
    without_proof: bytes


class ScramExchange(Exchange):
    """SCRAM-SHA-256 and, over TLS, SCRAM-SHA-256-PLUS (auth-sasl.c, auth-scram.c).

    ``tls_end_point_hash``: the connection's ``tls-server-end-point`` hash of *our* certificate,
    given exactly when the connection is TLS (it enables PLUS and the ``y`` downgrade check).
    ``mock_nonce``: the gateway's secret for mock salts (PostgreSQL: the cluster's mock
    authentication nonce), constant for the gateway's life so that mock salts are stable.
    ``mock_iterations``: the iteration count a mock secret advertises; PostgreSQL uses its
    ``scram_iterations``, so that the count does not tell which roles exist.
    After success, :attr:`channel_bound` tells whether PLUS was used and :attr:`client_key` /
    :attr:`server_key` are the keys PostgreSQL 18 keeps for SCRAM pass-through.
    """

    TRANSITIONS = SCRAM_TRANSITIONS
    method = AuthMethod.SCRAM_SHA_256

    def __init__(
        self,
        user: str,
        secret: RoleSecret | None,
        *,
        now: datetime,
        tls_end_point_hash: bytes | None,
        mock_nonce: bytes,
        mock_iterations: int = codes.SCRAM_DEFAULT_ITERATIONS,
    ) -> None:
        super().__init__(user)
        if tls_end_point_hash is not None and not tls_end_point_hash:
            raise ValueError("an empty tls-server-end-point hash")
        self._cb_hash = tls_end_point_hash
        shadow, problem = _usable_password(secret, user, now)
        parsed = None if shadow is None else verifiers.parse_scram_secret(shadow)
        if shadow is not None and parsed is None:
            problem = f'User "{user}" does not have a valid SCRAM secret.'
        # scram_init: without a valid secret, go through the motions with a mock one.
        self.doomed = parsed is None
        self._secret: ScramSecret = parsed or verifiers.mock_scram_secret(
            user, mock_nonce, mock_iterations
        )
        self._problem = problem
        self._cb_in_use = False
        self._first: _ClientFirst | None = None
        self._server_first = b""
        self._server_nonce = b""
        self.channel_bound = False
        self.client_key: bytes | None = None
        self.server_key: bytes | None = None

    @property
    def mechanisms(self) -> tuple[str, ...]:
        """scram_get_mechanisms: PLUS first, and only over TLS."""
        if self._cb_hash is None:
            return (codes.SCRAM_SHA_256,)
        return (codes.SCRAM_SHA_256_PLUS, codes.SCRAM_SHA_256)

    def _request(self) -> bytes:
        payload = b"".join(name.encode("ascii") + b"\0" for name in self.mechanisms) + b"\0"
        return codec.authentication_request(codes.AUTH_SASL, payload)

    def _step(self, message_type: bytes, body: bytes) -> Outcome:
        if message_type != codes.MSG_PASSWORD:
            raise ProtocolViolation(f"expected SASL response, got message type {message_type[0]}")
        if _length_word(body) > codes.MAX_SASL_MESSAGE_LENGTH:
            # pq_getmessage refuses it (logged), CheckSASLAuth returns STATUS_ERROR: the client
            # sees an ordinary password failure.
            return self._password_failure("invalid message length")
        if self.state is State.AWAIT_SASL_INITIAL:
            data = self._initial_response(body)
            if data is None:
                # No Initial Client Response: an empty challenge, the client-first comes next.
                return self._send(
                    Input.NO_INITIAL_RESPONSE,
                    codec.authentication_request(codes.AUTH_SASL_CONTINUE),
                )
        else:
            data = body
        return self._exchange(data)

    def _initial_response(self, body: bytes) -> bytes | None:
        """SASLInitialResponse: mechanism (NUL-terminated), Int32 length (-1: none), data."""
        mechanism, pos = codec.sasl_mechanism(body)
        # scram_init: checked before the rest of the message is read.
        if mechanism == codes.SCRAM_SHA_256_PLUS.encode() and self._cb_hash is not None:
            self._cb_in_use = True
        elif mechanism != codes.SCRAM_SHA_256.encode():
            raise ProtocolViolation("client selected an invalid SASL authentication mechanism")
        return codec.sasl_initial_data(body, pos)

    def _exchange(self, data: bytes) -> Outcome:
        """scram_exchange for one non-NULL input."""
        if not data:
            raise _malformed("The message is empty.")
        if b"\0" in data:
            raise _malformed("Message length does not match input length.")
        if self._first is None:
            self._first = self._read_client_first(data)
            self._server_nonce = base64.b64encode(secrets.token_bytes(codes.SCRAM_RAW_NONCE_LENGTH))
            self._server_first = b"r=%s%s,s=%s,i=%d" % (
                self._first.nonce,
                self._server_nonce,
                self._secret.salt_b64.encode("ascii"),
                self._secret.iterations,
            )
            return self._send(
                Input.CLIENT_FIRST,
                codec.authentication_request(codes.AUTH_SASL_CONTINUE, self._server_first),
            )
        final = self._read_client_final(data)
        if not hmac.compare_digest(final.nonce, self._first.nonce + self._server_nonce):
            raise ProtocolViolation("invalid SCRAM response", detail="Nonce does not match.")
        auth_message = b",".join((self._first.bare, self._server_first, final.without_proof))
        # Computed even when doomed, so that an unknown role costs the same time (auth-scram.c).
        signature = password_math.scram_signature(self._secret.stored_key, auth_message)
        key = password_math.xor_keys(final.proof, signature)
        proof_ok = hmac.compare_digest(password_math.stored_key(key), self._secret.stored_key)
        if not proof_ok or self.doomed:
            # PostgreSQL sends no e=invalid-proof: the failure reads like any wrong password.
            return self._password_failure(self._problem)
        self.channel_bound = self._cb_in_use
        self.client_key = key
        self.server_key = self._secret.server_key
        verifier = password_math.scram_signature(self._secret.server_key, auth_message)
        return Success(
            codec.authentication_request(codes.AUTH_SASL_FINAL, b"v=" + base64.b64encode(verifier))
        )

    def _read_client_first(self, data: bytes) -> _ClientFirst:
        """auth-scram.c read_client_first_message: gs2 header, then the bare message."""
        cur = _Cursor(data)
        flag = cur.peek()
        if flag in _CBIND_NONE:
            if self._cb_in_use:
                raise _malformed(
                    "The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not "
                    "include channel binding data."
                )
            if flag == ord("y") and self._cb_hash is not None:
                raise ClientError(
                    codes.SQLSTATE_INVALID_AUTHORIZATION,
                    "SCRAM channel binding negotiation error",
                    detail="The client supports SCRAM channel binding but thinks the server does "
                    "not.  However, this server does support channel binding.",
                )
            cur.pos += 1
            if cur.peek() != ord(","):
                raise _malformed(
                    f'Comma expected, but found character "{_sanitize_char(cur.peek())}".'
                )
            cur.pos += 1
        elif flag == ord("p"):
            if not self._cb_in_use:
                raise _malformed(
                    "The client selected SCRAM-SHA-256 without channel binding, but the SCRAM "
                    "message includes channel binding data."
                )
            cb_type = cur.attr_value("p")
            if cb_type != codes.SCRAM_CHANNEL_BINDING_TYPE.encode():
                raise ProtocolViolation(
                    f'unsupported SCRAM channel-binding type "{_sanitize_str(cb_type)}"'
                )
        else:
            raise _malformed(f'Unexpected channel-binding flag "{_sanitize_char(flag)}".')
        if cur.peek() == ord("a"):
            raise ClientError(
                codes.SQLSTATE_FEATURE_NOT_SUPPORTED,
                "client uses authorization identity, but it is not supported",
            )
        if cur.peek() != ord(","):
            raise _malformed(
                f'Unexpected attribute "{_sanitize_char(cur.peek())}" in client-first-message.'
            )
        cur.pos += 1
        bare = data[cur.pos :]
        if cur.peek() == ord("m"):
            raise ClientError(
                codes.SQLSTATE_FEATURE_NOT_SUPPORTED,
                "client requires an unsupported SCRAM extension",
            )
        cur.attr_value("n")  # ignored: the role is the startup packet's user
        nonce = cur.attr_value("r")
        if not _is_printable(nonce):
            raise ProtocolViolation("non-printable characters in SCRAM nonce")
        while not cur.at_end():  # extensions: none supported, ignored
            cur.any_attr()
        return _ClientFirst(flag, bare, nonce)

    def _read_client_final(self, data: bytes) -> _ClientFinal:
        """auth-scram.c read_client_final_message."""
        assert self._first is not None
        cur = _Cursor(data)
        channel_binding = cur.attr_value("c")
        if self._cb_in_use:
            assert self._cb_hash is not None
            cbind_input = b"p=%s,," % codes.SCRAM_CHANNEL_BINDING_TYPE.encode() + self._cb_hash
            if not hmac.compare_digest(channel_binding, base64.b64encode(cbind_input)):
                raise ClientError(
                    codes.SQLSTATE_INVALID_AUTHORIZATION, "SCRAM channel binding check failed"
                )
        elif _CBIND_NONE.get(self._first.cbind_flag) != channel_binding:
            raise ProtocolViolation(
                "unexpected SCRAM channel-binding attribute in client-final-message"
            )
        nonce = cur.attr_value("r")
        while True:  # extensions are skipped up to the proof
            proof_start = cur.pos - 1
            attr, value = cur.any_attr()
            if attr == ord("p"):
                break
        proof = password_math.b64decode_strict(value)
        if proof is None or len(proof) != codes.SCRAM_KEY_LENGTH:
            raise _malformed("Malformed proof in client-final-message.")
        if not cur.at_end():
            raise _malformed("Garbage found at the end of client-final-message.")
        return _ClientFinal(channel_binding, nonce, proof, data[:proof_start])


# --- method selection --------------------------------------------------------------------------


def choose_exchange(
    method: AuthMethod,
    user: str,
    secret: RoleSecret | None,
    *,
    now: datetime,
    tls_end_point_hash: bytes | None,
    password_encryption: str,
    mock_nonce: bytes,
    mock_iterations: int = codes.SCRAM_DEFAULT_ITERATIONS,
) -> Exchange:
    """The exchange PostgreSQL runs for a pg_hba.conf password method (auth.c).

    ``password`` is cleartext. ``md5`` and ``scram-sha-256`` follow CheckPWChallengeAuth: MD5
    only when the method is ``md5`` and the stored secret is MD5 (or, with no usable secret, when
    ``password_encryption`` is ``md5``); every other case runs SCRAM, doomed when the secret is
    missing, expired or not SCRAM.
    """
    if password_encryption not in (PasswordType.MD5, PasswordType.SCRAM_SHA_256):
        raise ValueError(f"invalid password_encryption: {password_encryption!r}")
    if method is AuthMethod.PASSWORD:
        return CleartextExchange(user, secret, now=now)
    if method not in (AuthMethod.MD5, AuthMethod.SCRAM_SHA_256):
        raise ValueError(f"not a password method: {method!r}")
    shadow, _ = _usable_password(secret, user, now)
    kind = PasswordType(password_encryption) if shadow is None else verifiers.password_type(shadow)
    if method is AuthMethod.MD5 and kind is PasswordType.MD5:
        return Md5Exchange(user, secret, now=now)
    return ScramExchange(
        user,
        secret,
        now=now,
        tls_end_point_hash=tls_end_point_hash,
        mock_nonce=mock_nonce,
        mock_iterations=mock_iterations,
    )


__all__ = [
    "CleartextExchange",
    "Exchange",
    "Failure",
    "Input",
    "Md5Exchange",
    "Outcome",
    "ScramExchange",
    "Send",
    "State",
    "Success",
    "choose_exchange",
]
