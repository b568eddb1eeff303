"""The pre-startup phase as a sans-IO state machine: encryption requests, cancels, startup.

Bytes in (:meth:`Negotiator.receive`), events out; the I/O shell (server/) executes the events
in order and never parses anything itself. This is PostgreSQL 18's BackendInitialize /
ProcessSSLStartup / ProcessStartupPacket (``src/backend/tcop/backend_startup.c``) with the fixes
of 18.6 applied (shared/protocol.md §1–§2, §7):

* SSLRequest → ``S``/``N``, GSSENCRequest → ``G``/``N``. Each layer is answered at most once;
  an accepted one uses up both (CVE-2026-6479's fixed semantics). A request that may no longer be
  answered is read as a protocol version and gets FATAL 0A000 ``unsupported frontend protocol
  1234.5679`` (…5680), like PostgreSQL.
* A first byte 0x16 is a direct-TLS ClientHello (PG17+). Inside direct TLS both requests are
  answered ``N`` and GSS is never marked in use (CVE-2026-14681 fix).
* After ``N``, bytes already received behind the request were sent in clear before the client
  could know the answer: ``N`` goes out, then FATAL 08P01 (CVE-2021-23214 server side).
* After ``S``, bytes behind the request are the client's pipelined ClientHello and are handed to
  the TLS layer (PG17+ ``secure_open_server`` moves them to ``raw_buf``). The shell's TLS layer
  must then close, logging ``buffered unencrypted data remains after negotiating SSL
  connection``, if any of them are left once the handshake is done.
* After ``G``, bytes behind the request are handed over too (:class:`StartGSS`). PostgreSQL's
  ``secure_open_gssapi`` reads the socket, not its buffer, so for it such bytes can only end in
  the 08P01 FATAL; the shell decides (the first bytes of a GSS token are a length word, so
  feeding them to the GSS layer is the useful reading; refusing them is the strict one).

A move the table does not list (bytes during a handshake, a second startup, a wrong
``encryption_established`` kind) is a bug in the shell and raises :class:`IllegalMove`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal

from pggate.errors import SilentClose
from pggate.proto import codec, codes
from pggate.proto.errors import ClientError, ProtocolViolation
from pggate.proto.messages import (
    CancelRequest,
    GSSENCRequest,
    SSLRequest,
    StartupMessage,
    StartupPacket,
)
from pggate.statetable import look_up

EncryptionKind = Literal["ssl", "direct_ssl", "gss"]

_MITM_DETAIL: Final = (
    "This could be either a client-software bug or evidence of an attempted man-in-the-middle "
    "attack."
)


# --- events (what the shell must do, in order) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``data`` on the current transport."""

    data: bytes


@dataclass(frozen=True, slots=True)
class StartTLS:
    """``S`` has been sent: run the TLS handshake; ``pending`` are its first incoming bytes."""

    pending: bytes


@dataclass(frozen=True, slots=True)
class StartDirectTLS:
    """A direct-TLS ClientHello: handshake (ALPN ``postgresql`` required) from ``initial``."""

    initial: bytes


@dataclass(frozen=True, slots=True)
class StartGSS:
    """``G`` has been sent: run the GSS handshake; ``pending`` arrived behind the request."""

    pending: bytes


@dataclass(frozen=True, slots=True)
class Cancel:
    """Forward a cancel, then close without sending anything.

    libpq's PQcancel waits for that EOF as the sign that the request was delivered, so close
    after forwarding. Cancels are not subject to pg_hba.conf.
    """

    pid: int
    key: bytes


@dataclass(frozen=True, slots=True)
class Startup:
    """The client's StartupMessage; the pre-startup phase is over.

    ``negotiate`` is the NegotiateProtocolVersion to send before anything else (None when none is
    due); ``protocol`` the version pggate speaks with this client (3.0 or 3.2: PG18 accepts 3.1
    silently and treats it as "before 3.2"); ``pending`` bytes the client sent behind the packet,
    which belong to the next phase.
    """

    message: StartupMessage
    negotiate: bytes | None
    protocol: int
    pending: bytes = b""


@dataclass(frozen=True, slots=True)
class Trace:
    """A ``trace_connection_negotiation`` log line (only when the negotiator traces)."""

    text: str


@dataclass(frozen=True, slots=True)
class Close:
    """Send ``error`` (if any) on the current transport, then close; ``log`` is for the log."""

    error: bytes | None
    log: str | None


# What the negotiator asks of its caller (outputs; the machine's inputs are ``Input``).
Output = Send | StartTLS | StartDirectTLS | StartGSS | Cancel | Startup | Close | Trace

# ProcessStartupPacket / ProcessSSLStartup's lines under trace_connection_negotiation.
TRACE_SSL_ACCEPTED = "SSLRequest accepted"
TRACE_SSL_REJECTED = "SSLRequest rejected"
TRACE_GSS_ACCEPTED = "GSSENCRequest accepted"
TRACE_GSS_REJECTED = "GSSENCRequest rejected"
TRACE_DIRECT_ACCEPTED = "direct SSL connection accepted"
TRACE_DIRECT_REJECTED = "direct SSL connection rejected"


# --- the state machine ------------------------------------------------------------------------


class State(enum.Enum):
    FRESH = "fresh"  # nothing answered yet, in clear; a first byte 0x16 is direct TLS
    SSL_REFUSED = "ssl refused"  # in clear, SSLRequest answered N
    GSS_REFUSED = "gss refused"  # in clear, GSSENCRequest answered N
    BOTH_REFUSED = "both refused"  # in clear, both answered N
    TLS_HANDSHAKE = "tls handshake"  # S sent, the shell runs TLS
    GSS_HANDSHAKE = "gss handshake"  # G sent, the shell runs GSS
    DIRECT_TLS_HANDSHAKE = "direct tls handshake"
    DIRECT_TLS = "direct tls"  # in direct TLS, nothing answered (PG: ssl_done = gss_done = false)
    DIRECT_TLS_SSL_REFUSED = "direct tls, ssl refused"
    DIRECT_TLS_GSS_REFUSED = "direct tls, gss refused"
    ENCRYPTED = "encrypted"  # in TLS or GSS with both requests used up
    STARTED = "started"  # Startup or Cancel emitted
    CLOSED = "closed"


class Input(enum.Enum):
    DATA = "data"
    EOF = "eof"
    # Requests, named with the server's setting so that the table alone decides the answer.
    TLS_HELLO_SSL_ON = "direct tls hello, ssl on"
    TLS_HELLO_SSL_OFF = "direct tls hello, ssl off"
    SSL_REQUEST_SSL_ON = "SSLRequest, ssl on"
    SSL_REQUEST_SSL_OFF = "SSLRequest, ssl off"
    GSS_REQUEST_GSS_ON = "GSSENCRequest, gss on"
    GSS_REQUEST_GSS_OFF = "GSSENCRequest, gss off"
    CANCEL = "CancelRequest"
    STARTUP = "StartupMessage"
    STARTUP_WITHOUT_USER = "StartupMessage without user"
    BAD_PACKET = "bad packet"
    # Bytes found buffered right after an N answer (generated by the negotiator itself); the
    # values are PostgreSQL's message texts after "received ".
    CLEARTEXT_AFTER_SSL_N = "unencrypted data after SSL request"
    CLEARTEXT_AFTER_GSS_N = "unencrypted data after GSSAPI encryption request"
    SSL_ESTABLISHED = "ssl established"
    DIRECT_SSL_ESTABLISHED = "direct_ssl established"
    GSS_ESTABLISHED = "gss established"


class Action(enum.Enum):
    BUFFER = enum.auto()
    HANG_UP = enum.auto()
    ACCEPT_SSL = enum.auto()
    REFUSE_SSL = enum.auto()
    ACCEPT_GSS = enum.auto()
    REFUSE_GSS = enum.auto()
    REPEATED_REQUEST = enum.auto()
    START_DIRECT_TLS = enum.auto()
    REJECT_DIRECT_TLS = enum.auto()
    CANCEL = enum.auto()
    STARTUP = enum.auto()
    REJECT_STARTUP = enum.auto()
    REJECT_CLEARTEXT = enum.auto()
    FAIL = enum.auto()
    RESUME = enum.auto()


_S = State
_I = Input
_A = Action
_READING: Final = (
    _S.FRESH,
    _S.SSL_REFUSED,
    _S.GSS_REFUSED,
    _S.BOTH_REFUSED,
    _S.DIRECT_TLS,
    _S.DIRECT_TLS_SSL_REFUSED,
    _S.DIRECT_TLS_GSS_REFUSED,
    _S.ENCRYPTED,
)
# PostgreSQL's ssl_done/gss_done are both false here; an incomplete length word is logged only
# then (ProcessStartupPacket).
_NOTHING_ANSWERED: Final = frozenset({_S.FRESH, _S.DIRECT_TLS})
_SSL_REQUESTS: Final = (_I.SSL_REQUEST_SSL_ON, _I.SSL_REQUEST_SSL_OFF)
_GSS_REQUESTS: Final = (_I.GSS_REQUEST_GSS_ON, _I.GSS_REQUEST_GSS_OFF)


def _rows(
    state: State, inputs: tuple[Input, ...], action: Action, after: State
) -> dict[tuple[State, Input], tuple[Action, State]]:
    return {(state, input_): (action, after) for input_ in inputs}


# (state, input) → (action, next state). Absent = illegal.
TRANSITIONS: Final[dict[tuple[State, Input], tuple[Action, State]]] = {
    # Wherever packets are read: more bytes, EOF, a cancel, the startup packet, garbage.
    **{
        (state, input_): (action, after)
        for state in _READING
        for input_, action, after in (
            (_I.DATA, _A.BUFFER, state),
            (_I.EOF, _A.HANG_UP, _S.CLOSED),
            (_I.CANCEL, _A.CANCEL, _S.STARTED),
            (_I.STARTUP, _A.STARTUP, _S.STARTED),
            (_I.STARTUP_WITHOUT_USER, _A.REJECT_STARTUP, _S.CLOSED),
            (_I.BAD_PACKET, _A.FAIL, _S.CLOSED),
        )
    },
    # Right after an N answer, in whatever state that answer led to.
    **{
        (state, input_): (_A.REJECT_CLEARTEXT, _S.CLOSED)
        for state in _READING
        if state not in _NOTHING_ANSWERED
        for input_ in (_I.CLEARTEXT_AFTER_SSL_N, _I.CLEARTEXT_AFTER_GSS_N)
    },
    # The connection's first byte (ProcessSSLStartup).
    (_S.FRESH, _I.TLS_HELLO_SSL_ON): (_A.START_DIRECT_TLS, _S.DIRECT_TLS_HANDSHAKE),
    (_S.FRESH, _I.TLS_HELLO_SSL_OFF): (_A.REJECT_DIRECT_TLS, _S.CLOSED),
    # In clear, nothing answered: either layer may be tried.
    (_S.FRESH, _I.SSL_REQUEST_SSL_ON): (_A.ACCEPT_SSL, _S.TLS_HANDSHAKE),
    (_S.FRESH, _I.SSL_REQUEST_SSL_OFF): (_A.REFUSE_SSL, _S.SSL_REFUSED),
    (_S.FRESH, _I.GSS_REQUEST_GSS_ON): (_A.ACCEPT_GSS, _S.GSS_HANDSHAKE),
    (_S.FRESH, _I.GSS_REQUEST_GSS_OFF): (_A.REFUSE_GSS, _S.GSS_REFUSED),
    # A refusal uses up only its own layer; the client may try the other one.
    **_rows(_S.SSL_REFUSED, _SSL_REQUESTS, _A.REPEATED_REQUEST, _S.CLOSED),
    (_S.SSL_REFUSED, _I.GSS_REQUEST_GSS_ON): (_A.ACCEPT_GSS, _S.GSS_HANDSHAKE),
    (_S.SSL_REFUSED, _I.GSS_REQUEST_GSS_OFF): (_A.REFUSE_GSS, _S.BOTH_REFUSED),
    **_rows(_S.GSS_REFUSED, _GSS_REQUESTS, _A.REPEATED_REQUEST, _S.CLOSED),
    (_S.GSS_REFUSED, _I.SSL_REQUEST_SSL_ON): (_A.ACCEPT_SSL, _S.TLS_HANDSHAKE),
    (_S.GSS_REFUSED, _I.SSL_REQUEST_SSL_OFF): (_A.REFUSE_SSL, _S.BOTH_REFUSED),
    **_rows(_S.BOTH_REFUSED, _SSL_REQUESTS + _GSS_REQUESTS, _A.REPEATED_REQUEST, _S.CLOSED),
    # An acceptance uses up both layers.
    **_rows(_S.ENCRYPTED, _SSL_REQUESTS + _GSS_REQUESTS, _A.REPEATED_REQUEST, _S.CLOSED),
    # Inside direct TLS: SSLRequest is N (ssl_in_use), GSSENCRequest is N (CVE-2026-14681).
    **_rows(_S.DIRECT_TLS, _SSL_REQUESTS, _A.REFUSE_SSL, _S.DIRECT_TLS_SSL_REFUSED),
    **_rows(_S.DIRECT_TLS, _GSS_REQUESTS, _A.REFUSE_GSS, _S.DIRECT_TLS_GSS_REFUSED),
    **_rows(_S.DIRECT_TLS_SSL_REFUSED, _SSL_REQUESTS, _A.REPEATED_REQUEST, _S.CLOSED),
    **_rows(_S.DIRECT_TLS_SSL_REFUSED, _GSS_REQUESTS, _A.REFUSE_GSS, _S.ENCRYPTED),
    **_rows(_S.DIRECT_TLS_GSS_REFUSED, _GSS_REQUESTS, _A.REPEATED_REQUEST, _S.CLOSED),
    **_rows(_S.DIRECT_TLS_GSS_REFUSED, _SSL_REQUESTS, _A.REFUSE_SSL, _S.ENCRYPTED),
    # Handshakes run in the shell; it reports success, or may report the client's EOF.
    (_S.TLS_HANDSHAKE, _I.SSL_ESTABLISHED): (_A.RESUME, _S.ENCRYPTED),
    (_S.GSS_HANDSHAKE, _I.GSS_ESTABLISHED): (_A.RESUME, _S.ENCRYPTED),
    (_S.DIRECT_TLS_HANDSHAKE, _I.DIRECT_SSL_ESTABLISHED): (_A.RESUME, _S.DIRECT_TLS),
    (_S.TLS_HANDSHAKE, _I.EOF): (_A.HANG_UP, _S.CLOSED),
    (_S.GSS_HANDSHAKE, _I.EOF): (_A.HANG_UP, _S.CLOSED),
    (_S.DIRECT_TLS_HANDSHAKE, _I.EOF): (_A.HANG_UP, _S.CLOSED),
}


_ESTABLISHED: Final[dict[str, Input]] = {
    "ssl": _I.SSL_ESTABLISHED,
    "direct_ssl": _I.DIRECT_SSL_ESTABLISHED,
    "gss": _I.GSS_ESTABLISHED,
}


def negotiate_response(message: StartupMessage) -> bytes | None:
    """The NegotiateProtocolVersion PG18 queues for ``message``, if any.

    Sent when the requested minor is above 3.2's or any ``_pq_.`` option was given (none is
    understood); it carries ``FrontendProtocol = Min(requested, 3.2)`` (PG≤17 sent 3.0).
    """
    newer = codes.protocol_minor(message.version) > codes.protocol_minor(codes.PROTOCOL_LATEST)
    if not newer and not message.protocol_options:
        return None
    return codec.negotiate_protocol_version(
        min(message.version, codes.PROTOCOL_LATEST), message.protocol_options
    )


def effective_protocol(version: int) -> int:
    """The version pggate speaks to the client: 3.2 from 3.2 up, otherwise 3.0 (3.1 included)."""
    return codes.PROTOCOL_3_2 if version >= codes.PROTOCOL_3_2 else codes.PROTOCOL_3_0


class Negotiator:
    """One connection's pre-startup phase. Feed bytes with :meth:`receive`, execute the events.

    ``ssl_enabled``: a TLS context is loaded and the socket is TCP. ``gss_enabled``: GSSAPI is
    available and the socket is TCP (PostgreSQL checks nothing else before answering ``G``).
    ``trace``: PostgreSQL 17's trace_connection_negotiation: say each answer as a Trace event.
    """

    __slots__ = ("_buffer", "gss_enabled", "ssl_enabled", "state", "trace")

    def __init__(self, ssl_enabled: bool, gss_enabled: bool, *, trace: bool = False) -> None:
        self.ssl_enabled = ssl_enabled
        self.gss_enabled = gss_enabled
        self.trace = trace
        self.state = State.FRESH
        self._buffer = bytearray()

    def _move(self, input_: Input) -> Action:
        action, after = look_up(TRANSITIONS, "negotiation", self.state, input_)
        self.state = after
        return action

    def receive(self, data: bytes) -> list[Output]:
        """Bytes from the client (decrypted, once a layer is established)."""
        self._move(Input.DATA)
        self._buffer += data
        events: list[Output] = []
        while self.state in _READING and self._buffer:
            step = self._next_input()
            if step is None:
                break  # need more bytes
            events += self._act(*step)
        return events

    def eof(self) -> list[Output]:
        """The client closed its side (or the shell gave up on a handshake)."""
        had_answer = self.state not in _NOTHING_ANSWERED
        self._move(Input.EOF)
        # ProcessStartupPacket: no data at all → silence; a partial length word → logged only
        # while nothing was answered; a partial packet after a full length word → always logged
        # (a length word that is complete has already been judged by the codec).
        buffered = len(self._buffer)
        if buffered == 0 or (buffered < codec.LENGTH_WORD_SIZE and had_answer):
            return [Close(None, None)]
        return [Close(None, "incomplete startup packet")]

    def encryption_established(self, kind: EncryptionKind) -> None:
        """The shell finished the handshake it was asked for; decrypted bytes follow."""
        self._move(_ESTABLISHED[kind])

    def _next_input(self) -> tuple[Input, StartupPacket | ClientError | SilentClose] | None:
        if self.state is State.FRESH and self._buffer[0] == codes.TLS_HANDSHAKE_RECORD:
            # ProcessSSLStartup peeks this one byte: it cannot start a sane length word.
            hello = Input.TLS_HELLO_SSL_ON if self.ssl_enabled else Input.TLS_HELLO_SSL_OFF
            return hello, SSLRequest()
        try:
            packet, consumed = codec.parse_startup_packet(self._buffer, require_user=False)
        except (ClientError, SilentClose) as exc:
            return Input.BAD_PACKET, exc
        if packet is None:
            return None
        del self._buffer[:consumed]
        if isinstance(packet, SSLRequest):
            ssl = Input.SSL_REQUEST_SSL_ON if self.ssl_enabled else Input.SSL_REQUEST_SSL_OFF
            return ssl, packet
        if isinstance(packet, GSSENCRequest):
            gss = Input.GSS_REQUEST_GSS_ON if self.gss_enabled else Input.GSS_REQUEST_GSS_OFF
            return gss, packet
        if isinstance(packet, CancelRequest):
            return Input.CANCEL, packet
        if not packet.user:
            return Input.STARTUP_WITHOUT_USER, packet
        return Input.STARTUP, packet

    def _take_buffer(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def _act(self, input_: Input, item: StartupPacket | ClientError | SilentClose) -> list[Output]:
        action = self._move(input_)
        if action is Action.ACCEPT_SSL:
            return [
                *self._traced(TRACE_SSL_ACCEPTED),
                Send(codes.SSL_ACCEPT),
                StartTLS(self._take_buffer()),
            ]
        if action is Action.ACCEPT_GSS:
            return [
                *self._traced(TRACE_GSS_ACCEPTED),
                Send(codes.GSS_ACCEPT),
                StartGSS(self._take_buffer()),
            ]
        if action in (Action.REFUSE_SSL, Action.REFUSE_GSS):
            trace = self._traced(
                TRACE_SSL_REJECTED if action is Action.REFUSE_SSL else TRACE_GSS_REJECTED
            )
            if not self._buffer:
                return [*trace, Send(codes.ENCRYPTION_REFUSE)]
            # Bytes behind the request were sent before the client could have seen our answer:
            # plaintext, possibly injected. PostgreSQL sends N, then a FATAL
            # (pq_buffer_remaining_data() > 0 in ProcessStartupPacket).
            cleartext = (
                Input.CLEARTEXT_AFTER_SSL_N
                if action is Action.REFUSE_SSL
                else Input.CLEARTEXT_AFTER_GSS_N
            )
            return [*trace, Send(codes.ENCRYPTION_REFUSE), *self._act(cleartext, item)]
        if action is Action.REJECT_CLEARTEXT:
            return [self._fail(ProtocolViolation(f"received {input_.value}", detail=_MITM_DETAIL))]
        if action is Action.START_DIRECT_TLS:
            return [StartDirectTLS(self._take_buffer())]
        if action is Action.REJECT_DIRECT_TLS:
            # No TLS alert, no PostgreSQL error: the client sees EOF mid-handshake; the log
            # line is ProcessSSLStartup's, written only under trace_connection_negotiation.
            self._buffer.clear()
            return [Close(None, TRACE_DIRECT_REJECTED if self.trace else None)]
        if action is Action.REPEATED_REQUEST:
            # Not answered again: read as protocol version 1234.5679 (or .5680) → FATAL 0A000.
            code = codes.NEGOTIATE_SSL_CODE if input_ in _SSL_REQUESTS else codes.NEGOTIATE_GSS_CODE
            return [self._fail(codec.unsupported_protocol(code))]
        if action is Action.FAIL:
            assert isinstance(item, ClientError | SilentClose)
            return [self._fail(item)]
        if action is Action.CANCEL:
            assert isinstance(item, CancelRequest)
            self._buffer.clear()
            return [Cancel(item.pid, item.key)]
        assert isinstance(item, StartupMessage)
        negotiate = negotiate_response(item)
        if action is Action.REJECT_STARTUP:
            # ProcessStartupPacket queues NegotiateProtocolVersion before the user check, and
            # the FATAL flushes it: the client receives v, then E.
            try:
                codec.require_user_name(item)
            except ClientError as exc:
                self._buffer.clear()
                return [Close((negotiate or b"") + codec.render_error(exc), exc.message)]
        return [Startup(item, negotiate, effective_protocol(item.version), self._take_buffer())]

    def _traced(self, text: str) -> list[Output]:
        return [Trace(text)] if self.trace else []

    def _fail(self, error: ClientError | SilentClose) -> Close:
        self._buffer.clear()
        if isinstance(error, ClientError):
            return Close(codec.render_error(error), error.message)
        return Close(None, str(error))
