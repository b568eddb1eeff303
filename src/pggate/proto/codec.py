"""Bytes ⇄ protocol messages for the startup phase and the login exchange (sans-IO).

Parsers take a buffer and return ``(result, consumed)``; ``(None, 0)`` means "need more bytes".
A malformed packet raises :class:`~pggate.proto.errors.ClientError` (PostgreSQL would send a FATAL)
or :class:`~pggate.errors.SilentClose` (PostgreSQL logs and hangs up); nothing else escapes for
any input. Encoders return complete messages as ``bytes``.

The client-facing rules are PostgreSQL 18's ``src/backend/tcop/backend_startup.c``
(ProcessStartupPacket, ProcessCancelRequestPacket); see shared/protocol.md §1 and §7.
"""

from __future__ import annotations

import struct
from collections.abc import Container, Mapping, Sequence
from typing import Final

from pggate.errors import SilentClose
from pggate.proto import codes
from pggate.proto.errors import ClientError, ProtocolViolation
from pggate.proto.messages import (
    CancelRequest,
    GSSENCRequest,
    SSLRequest,
    StartupMessage,
    StartupPacket,
    apply_replication_value,
    wire_bytes,
    wire_str,
)

Buffer = bytes | bytearray | memoryview

_INT32: Final = struct.Struct("!I")
# Every GSSAPI-encrypted packet is an Int32 length, then the token (be-secure-gssapi.c).
GSS_PACKET_LENGTH: Final = _INT32
_PAIR: Final = struct.Struct("!II")
LENGTH_WORD_SIZE: Final = _INT32.size
_NUL: Final = b"\0"
_TYPE_SIZE: Final = 1  # a typed message starts with one type byte, then its Int32 length
_HEADER_SIZE: Final = _TYPE_SIZE + _INT32.size
# A CancelRequest body is code + pid, then the key (CancelRequestPacket, pqcomm.h).
_CANCEL_FIXED_SIZE: Final = _PAIR.size

DEFAULT_CANCEL_KEY_LENGTHS: Final = range(1, codes.MAX_CANCEL_KEY_LENGTH + 1)


class V2ProtocolError(ClientError):
    """``unsupported frontend protocol`` for a major version below 3.

    PostgreSQL sets FrontendProtocol to the requested version before the check, so for 2.0 (or
    0.x, 1.x) elog.c:send_message_to_frontend falls back to the pre-3.0 format; render this with
    :func:`render_error` (or :func:`v2_error_response`), never :func:`error_response`.
    """


class InvalidMessageLength(ProtocolViolation, SilentClose):
    """A typed message whose length word is < 4 or above the caller's limit.

    pqcomm.c:pq_getmessage reports this as COMMERROR (08P01, server log only) and returns EOF,
    after which the backend exits without a word (auth.c treats it as STATUS_EOF). So it is both a
    ProtocolViolation (its SQLSTATE and text) and a SilentClose (what PostgreSQL does about it):
    a handler of either kind catches it; the faithful reaction is to log and close.
    """

    def __init__(self) -> None:
        super().__init__("invalid message length")


def _protocol_text(version: int) -> str:
    return f"{codes.protocol_major(version)}.{codes.protocol_minor(version)}"


def unsupported_protocol(version: int) -> ClientError:
    """The FATAL 0A000 for a version (or repeated/unknown request code) PG18 does not speak.

    The v2 format applies below major 3 only: PG18 sets ``FrontendProtocol = Min(proto, 3.2)``,
    so 4.x and the 1234.x request codes still get a v3 ErrorResponse.
    """
    earliest = codes.protocol_major(codes.PROTOCOL_EARLIEST)
    message = (
        f"unsupported frontend protocol {_protocol_text(version)}: "
        f"server supports {earliest}.0 to {_protocol_text(codes.PROTOCOL_LATEST)}"
    )
    if codes.protocol_major(version) < codes.protocol_major(codes.PROTOCOL_EARLIEST):
        return V2ProtocolError(codes.SQLSTATE_FEATURE_NOT_SUPPORTED, message)
    return ClientError(codes.SQLSTATE_FEATURE_NOT_SUPPORTED, message)


def require_user_name(message: StartupMessage) -> None:
    """ProcessStartupPacket's last check: a non-empty ``user`` (FATAL 28000).

    It runs *after* NegotiateProtocolVersion has been queued, which is why the negotiator calls
    it separately (``require_user=False``) and sends ``v`` first.
    """
    if not message.user:
        raise ClientError(
            codes.SQLSTATE_INVALID_AUTHORIZATION,
            "no PostgreSQL user name specified in startup packet",
        )


def parse_startup_packet(
    buf: Buffer,
    *,
    allow_cancel_key_lengths: Container[int] = DEFAULT_CANCEL_KEY_LENGTHS,
    require_user: bool = True,
) -> tuple[StartupPacket | None, int]:
    """One untyped startup-phase packet: ``Int32 length`` (incl. itself), ``Int32 code``, body.

    The length is judged as soon as its four bytes are in, before the body, like PostgreSQL
    (which never waits for 10 MB that it would refuse anyway).
    """
    if len(buf) < _INT32.size:
        return None, 0
    (length,) = _INT32.unpack_from(buf, 0)
    # PostgreSQL reads the word as int32 and subtracts 4; a huge unsigned value is negative there
    # and fails the same test.
    body_length = length - _INT32.size
    if body_length < _INT32.size or body_length > codes.MAX_STARTUP_PACKET_LENGTH:
        raise SilentClose("invalid length of startup packet")
    if len(buf) < length:
        return None, 0
    body = bytes(buf[_INT32.size : length])
    (code,) = _INT32.unpack_from(body, 0)

    if code == codes.CANCEL_REQUEST_CODE:
        return _parse_cancel(body, allow_cancel_key_lengths), length
    # The special codes are dispatched on the code alone: ProcessStartupPacket never checks that
    # an SSLRequest/GSSENCRequest is exactly 8 bytes, so a longer one is still a request.
    if code == codes.NEGOTIATE_SSL_CODE:
        return SSLRequest(), length
    if code == codes.NEGOTIATE_GSS_CODE:
        return GSSENCRequest(), length

    if codes.protocol_major(code) != codes.protocol_major(codes.PROTOCOL_LATEST):
        raise unsupported_protocol(code)
    message = _parse_parameters(code, body)
    if require_user:
        require_user_name(message)
    return message, length


def _parse_cancel(body: bytes, allowed: Container[int]) -> CancelRequest:
    # ProcessCancelRequestPacket (PG18): at least code + pid, then a 1..256-byte key.
    if len(body) < _CANCEL_FIXED_SIZE:
        raise SilentClose("invalid length of cancel request packet")
    key = body[_CANCEL_FIXED_SIZE:]
    if not (0 < len(key) <= codes.MAX_CANCEL_KEY_LENGTH) or len(key) not in allowed:
        raise SilentClose("invalid length of cancel key in cancel request packet")
    _, pid = _PAIR.unpack_from(body, 0)
    if pid == 0:
        # procsignal.c:SendCancelRequest refuses PID 0 before any lookup.
        raise SilentClose("invalid cancel request with PID 0")
    return CancelRequest(pid, key)


def _parse_parameters(version: int, body: bytes) -> StartupMessage:
    """The name/value scan of ProcessStartupPacket, reproduced step for step.

    PostgreSQL appends a NUL after the body, so a string that runs to the end of the packet is
    terminated by the packet end. The scan stops at an empty name (the terminator) or at a name
    with no room for a value; the terminator must then sit exactly on the last byte. One quirk
    follows and is kept: a final non-NUL byte is read as a name without a value and accepted.
    """
    end = len(body)
    offset = _INT32.size
    parameters: list[tuple[str, str]] = []
    protocol_options: list[str] = []
    walsender = db_walsender = False

    def cstring_end(start: int) -> int:
        nul = body.find(_NUL, start)
        return end if nul < 0 else nul

    while offset < end:
        if body[offset] == 0:
            break  # the packet terminator
        name_end = cstring_end(offset)
        value_offset = name_end + 1
        if value_offset >= end:
            break  # a name without a value: the layout check below complains
        value_end = cstring_end(value_offset)
        name = wire_str(body[offset:name_end])
        value = wire_str(body[value_offset:value_end])
        if name == codes.PARAM_REPLICATION:
            # Validated in place: a bad value is FATAL before the layout check.
            walsender, db_walsender = apply_replication_value(value, walsender, db_walsender)
        if name.startswith(codes.PROTOCOL_OPTION_PREFIX):
            protocol_options.append(name)
        else:
            parameters.append((name, value))
        offset = value_end + 1

    if offset != end - 1:
        raise ProtocolViolation("invalid startup packet layout: expected terminator as last byte")
    return StartupMessage(version, tuple(parameters), tuple(protocol_options))


def read_message(buf: Buffer, *, max_length: int) -> tuple[tuple[bytes, memoryview] | None, int]:
    """One typed message: ``Byte1 type``, ``Int32 length`` (incl. itself, not the type), body.

    ``max_length`` bounds the length word as pq_getmessage's ``maxlen`` does. The body is a view
    of ``buf`` when ``buf`` is immutable; for a ``bytearray`` it views a copy, so the caller may
    resize its buffer while holding the result.
    """
    if len(buf) < _HEADER_SIZE:
        return None, 0
    (length,) = _INT32.unpack_from(buf, _TYPE_SIZE)
    if length < _INT32.size or length > max_length:
        raise InvalidMessageLength()
    total = _TYPE_SIZE + length
    if len(buf) < total:
        return None, 0
    kind = bytes(buf[:_TYPE_SIZE])
    if isinstance(buf, bytearray):
        body = memoryview(bytes(buf[_HEADER_SIZE:total]))
    else:
        body = memoryview(buf)[_HEADER_SIZE:total]
    return (kind, body), total


# --- encoders -------------------------------------------------------------------------------


def _cstring(text: str) -> bytes:
    raw = wire_bytes(text)
    if _NUL in raw:
        raise ValueError(f"protocol string contains NUL: {text!r}")
    return raw + _NUL


def _message(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return kind + _INT32.pack(_INT32.size + len(body)) + body


def _packet(code: int, payload: bytes = b"") -> bytes:
    """An untyped startup-phase packet (frontend side)."""
    return _INT32.pack(_PAIR.size + len(payload)) + _INT32.pack(code) + payload


def _error_fields(err: ClientError) -> bytes:
    # elog.c:send_message_to_frontend order: S, V, C, M, D, H. No F/L/R: they name a source line
    # of one PostgreSQL build, which pggate is not, and clients do not interpret them.
    fields = [
        (codes.FIELD_SEVERITY, err.severity),
        (codes.FIELD_SEVERITY_NONLOCALIZED, err.severity),
        (codes.FIELD_SQLSTATE, err.sqlstate),
        (codes.FIELD_MESSAGE, err.message),
        (codes.FIELD_DETAIL, err.detail),
        (codes.FIELD_HINT, err.hint),
    ]
    return b"".join(code + _cstring(value) for code, value in fields if value is not None) + (
        codes.FIELD_TERMINATOR
    )


def error_response(err: ClientError) -> bytes:
    """ErrorResponse (``E``); ``log_detail`` is never sent."""
    return _message(codes.MSG_ERROR_RESPONSE, _error_fields(err))


def notice_response(notice: ClientError) -> bytes:
    """NoticeResponse (``N``): same fields as an error, severity e.g. WARNING or NOTICE."""
    return _message(codes.MSG_NOTICE_RESPONSE, _error_fields(notice))


def v2_error_response(text: str) -> bytes:
    """A pre-3.0 error: ``E``, ``FATAL:  <text>\\n``, NUL; no length word (elog.c, v2 branch)."""
    return codes.MSG_ERROR_RESPONSE + _cstring(f"{codes.SEVERITY_FATAL}:  {text}\n")


def render_error(err: ClientError) -> bytes:
    """The bytes PostgreSQL would send for ``err``: v2 format for :class:`V2ProtocolError`."""
    if isinstance(err, V2ProtocolError):
        return v2_error_response(err.message)
    return error_response(err)


def authentication_request(code: int, payload: bytes = b"") -> bytes:
    """AuthenticationXXX (``R``): Int32 request code, then the method's payload."""
    return _message(codes.MSG_AUTHENTICATION, _INT32.pack(code), payload)


def authentication_ok() -> bytes:
    return authentication_request(codes.AUTH_OK)


def parameter_status(name: str, value: str) -> bytes:
    return _message(codes.MSG_PARAMETER_STATUS, _cstring(name), _cstring(value))


def backend_key_data(pid: int, key: bytes) -> bytes:
    """BackendKeyData (``K``): Int32 pid + key (4 bytes before protocol 3.2, up to 256 after)."""
    return _message(codes.MSG_BACKEND_KEY_DATA, _INT32.pack(pid), key)


def ready_for_query(status: bytes) -> bytes:
    if status not in (codes.TX_IDLE, codes.TX_IN_BLOCK, codes.TX_FAILED):
        raise ValueError(f"invalid transaction status {status!r}")
    return _message(codes.MSG_READY_FOR_QUERY, status)


def negotiate_protocol_version(version: int, unsupported_options: Sequence[str]) -> bytes:
    """NegotiateProtocolVersion (``v``): newest version offered, count, option names."""
    return _message(
        codes.MSG_NEGOTIATE_PROTOCOL_VERSION,
        _PAIR.pack(version, len(unsupported_options)),
        *(_cstring(option) for option in unsupported_options),
    )


# Frontend side: pggate logging in to (or cancelling on) its backend.


def startup_message(version: int, parameters: Mapping[str, str]) -> bytes:
    pairs = b"".join(_cstring(name) + _cstring(value) for name, value in parameters.items())
    return _packet(version, pairs + _NUL)


def cancel_request(pid: int, key: bytes) -> bytes:
    return _packet(codes.CANCEL_REQUEST_CODE, _INT32.pack(pid) + key)


def ssl_request() -> bytes:
    return _packet(codes.NEGOTIATE_SSL_CODE)


def gssenc_request() -> bytes:
    return _packet(codes.NEGOTIATE_GSS_CODE)


def password_message(data: bytes) -> bytes:
    """PasswordMessage / SASLInitialResponse / SASLResponse / GSSResponse (``p``), body as given."""
    return _message(codes.MSG_PASSWORD, data)


def sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    """SASLInitialResponse: mechanism name, Int32 length of the data, the data."""
    return password_message(_cstring(mechanism) + _INT32.pack(len(data)) + data)


def terminate() -> bytes:
    return _message(codes.MSG_TERMINATE)


# --- decoders of backend messages -----------------------------------------------------------


class _Reader:
    """Cursor over one message body; any overrun is libpq's length-disagreement error."""

    __slots__ = ("_body", "_kind", "_pos")

    def __init__(self, kind: bytes, body: Buffer) -> None:
        self._kind = kind
        self._body = bytes(body)
        self._pos = 0

    def fail(self) -> ProtocolViolation:
        # fe-protocol3.c's wording for a body that does not match its own length word.
        return ProtocolViolation(
            f'message contents do not agree with length in message type "{wire_str(self._kind)}"'
        )

    def int32(self) -> int:
        if self._pos + _INT32.size > len(self._body):
            raise self.fail()
        (value,) = _INT32.unpack_from(self._body, self._pos)
        self._pos += _INT32.size
        return int(value)

    def byte(self) -> int:
        if self._pos >= len(self._body):
            raise self.fail()
        self._pos += 1
        return self._body[self._pos - 1]

    def cstring(self) -> str:
        nul = self._body.find(_NUL, self._pos)
        if nul < 0:
            raise self.fail()
        text = wire_str(self._body[self._pos : nul])
        self._pos = nul + 1
        return text

    def rest(self) -> bytes:
        data = self._body[self._pos :]
        self._pos = len(self._body)
        return data

    def end(self) -> None:
        if self._pos != len(self._body):
            raise self.fail()


def parse_error_fields(body: Buffer) -> dict[str, str]:
    """ErrorResponse/NoticeResponse body → {field code: value}, e.g. {"C": "28P01", ...}."""
    reader = _Reader(codes.MSG_ERROR_RESPONSE, body)
    fields: dict[str, str] = {}
    while (code := reader.byte()) != 0:
        fields[chr(code)] = reader.cstring()
    reader.end()
    return fields


def _field(fields: Mapping[str, str], code: bytes) -> str | None:
    return fields.get(chr(code[0]))


def client_error_from_fields(fields: Mapping[str, str]) -> ClientError:
    """A backend's ErrorResponse as a ClientError, to relay it (fields beyond S/V/C/M/D/H drop).

    The non-localized severity V is preferred: pggate renders both S and V from one value.
    """
    severity = _field(fields, codes.FIELD_SEVERITY_NONLOCALIZED)
    if severity is None:
        severity = _field(fields, codes.FIELD_SEVERITY)
    sqlstate = _field(fields, codes.FIELD_SQLSTATE)
    message = _field(fields, codes.FIELD_MESSAGE)
    return ClientError(
        codes.SQLSTATE_INTERNAL_ERROR if sqlstate is None else sqlstate,
        "missing error text" if message is None else message,  # elog.c's text for no message
        severity=codes.SEVERITY_FATAL if severity is None else severity,
        detail=_field(fields, codes.FIELD_DETAIL),
        hint=_field(fields, codes.FIELD_HINT),
    )


def parse_authentication(body: Buffer) -> tuple[int, bytes]:
    """AuthenticationXXX body → (request code, payload)."""
    reader = _Reader(codes.MSG_AUTHENTICATION, body)
    return reader.int32(), reader.rest()


def parse_parameter_status(body: Buffer) -> tuple[str, str]:
    reader = _Reader(codes.MSG_PARAMETER_STATUS, body)
    name, value = reader.cstring(), reader.cstring()
    reader.end()
    return name, value


def parse_backend_key_data(body: Buffer) -> tuple[int, bytes]:
    """BackendKeyData body → (pid, key); the key must be 1..256 bytes (PG18 libpq's bound)."""
    reader = _Reader(codes.MSG_BACKEND_KEY_DATA, body)
    pid, key = reader.int32(), reader.rest()
    if not 0 < len(key) <= codes.MAX_CANCEL_KEY_LENGTH:
        raise ProtocolViolation(
            f"received invalid BackendKeyData message: cancel key with length {len(key)} "
            "not allowed"
        )
    return pid, key


def sasl_mechanism(body: Buffer) -> tuple[bytes, int]:
    """SASLInitialResponse's mechanism name and where its data length starts.

    Split from :func:`sasl_initial_data` because auth-scram.c scram_init checks the mechanism
    before the rest of the message is read, and its error comes first.
    """
    data = bytes(body)
    nul = data.find(_NUL)
    if nul < 0:
        raise ProtocolViolation("invalid string in message")  # pq_getmsgrawstring
    return data[:nul], nul + 1


def sasl_initial_data(body: Buffer, pos: int) -> bytes | None:
    """The rest of a SASLInitialResponse: Int32 length (-1: no data), then the data."""
    data = bytes(body)
    if len(data) - pos < _INT32.size:
        raise ProtocolViolation("insufficient data left in message")  # pq_getmsgint
    length = int.from_bytes(data[pos : pos + _INT32.size], "big", signed=True)
    pos += _INT32.size
    initial: bytes | None = None
    if length != -1:
        if length < 0 or length > len(data) - pos:
            raise ProtocolViolation("insufficient data left in message")  # pq_getmsgbytes
        initial = data[pos : pos + length]
        pos += length
    if pos != len(data):
        raise ProtocolViolation("invalid message format")  # pq_getmsgend
    return initial


def parse_negotiate_protocol_version(body: Buffer) -> tuple[int, list[str]]:
    """NegotiateProtocolVersion body → (newest version offered, unsupported option names)."""
    reader = _Reader(codes.MSG_NEGOTIATE_PROTOCOL_VERSION, body)
    version, count = reader.int32(), reader.int32()
    options: list[str] = []
    for _ in range(count):  # a lying count runs out of body and fails in cstring()
        options.append(reader.cstring())
    reader.end()
    return version, options
