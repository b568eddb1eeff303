"""proto/negotiate.py as playbooks: bytes in, the exact events out (protocol.md §1–§2, §7)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pggate.proto import codec, codes
from pggate.proto.errors import ClientError, ProtocolViolation
from pggate.proto.messages import StartupMessage
from pggate.proto.negotiate import (
    TRANSITIONS,
    Cancel,
    Close,
    EncryptionKind,
    Input,
    Negotiator,
    Output,
    Send,
    StartDirectTLS,
    StartGSS,
    StartTLS,
    Startup,
    State,
    Trace,
)
from pggate.statetable import IllegalMove

V3_0 = codes.PROTOCOL_3_0
V3_2 = codes.PROTOCOL_3_2

SSL_REQ = struct.pack("!II", 8, 80877103)
GSS_REQ = struct.pack("!II", 8, 80877104)
HELLO = bytes.fromhex("160301020001")  # the start of a TLS ClientHello record
S, G, N = Send(b"S"), Send(b"G"), Send(b"N")
MITM = (
    "This could be either a client-software bug or evidence of an attempted man-in-the-middle "
    "attack."
)


def startup(version: int = V3_0, **params: str) -> bytes:
    pairs = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items())
    return struct.pack("!II", 9 + len(pairs), version) + pairs + b"\0"


def cancel(pid: int = 4242, key: bytes = b"\1\2\3\4") -> bytes:
    return struct.pack("!III", 12 + len(key), 80877102, pid) + key


def started(version: int = V3_0, **params: str) -> Startup:
    """The Startup event expected for ``startup(version, **params)``."""
    message = StartupMessage(version, tuple(params.items()), ())
    return Startup(message, None, codes.PROTOCOL_3_2 if version >= V3_2 else V3_0)


def fatal(sqlstate: str, message: str, detail: str | None = None) -> Close:
    return Close(codec.error_response(ClientError(sqlstate, message, detail=detail)), message)


def repeated(code: int) -> Close:
    return fatal("0A000", f"unsupported frontend protocol 1234.{code}: server supports 3.0 to 3.2")


# A playbook step: bytes to receive (expecting these events), or a handshake the shell finished.
Step = tuple[bytes, Sequence[Output]] | EncryptionKind


def play(negotiator: Negotiator, *steps: Step) -> None:
    for step in steps:
        if isinstance(step, str):
            negotiator.encryption_established(step)
        else:
            data, expected = step
            assert negotiator.receive(data) == list(expected), data


# --- single requests ---------------------------------------------------------------------------


def test_ssl_accepted_then_startup_inside_tls() -> None:
    n = Negotiator(ssl_enabled=True, gss_enabled=False)
    play(n, (SSL_REQ, [S, StartTLS(b"")]))
    assert n.state is State.TLS_HANDSHAKE
    play(n, "ssl", (startup(user="u"), [started(user="u")]))
    assert n.state.value == "started"


def test_pipelined_client_hello_goes_to_tls() -> None:
    # PG17+ feeds bytes received behind the SSLRequest into the handshake (raw_buf).
    n = Negotiator(ssl_enabled=True, gss_enabled=True)
    play(n, (SSL_REQ + HELLO, [S, StartTLS(HELLO)]))


def test_ssl_refused_then_plain_startup() -> None:
    n = Negotiator(ssl_enabled=False, gss_enabled=False)
    play(n, (SSL_REQ, [N]), (startup(user="u"), [started(user="u")]))


@pytest.mark.parametrize(
    ("request_", "text"),
    [
        (SSL_REQ, "received unencrypted data after SSL request"),
        (GSS_REQ, "received unencrypted data after GSSAPI encryption request"),
    ],
)
def test_data_buffered_after_n_is_fatal(request_: bytes, text: str) -> None:
    n = Negotiator(ssl_enabled=False, gss_enabled=False)
    play(n, (request_ + startup(user="u"), [N, fatal("08P01", text, MITM)]))
    assert n.state is State.CLOSED


def test_data_after_n_golden_bytes() -> None:
    # protocol.md §1.4 (obs-15.18 and obs-18.6), minus the build-specific F/L/R fields.
    n = Negotiator(ssl_enabled=False, gss_enabled=False)
    events = n.receive(SSL_REQ + b"x")
    assert events[0] == N
    close = events[1]
    assert isinstance(close, Close) and close.error == (
        b"E\x00\x00\x00\xa9SFATAL\0VFATAL\0C08P01\0"
        b"Mreceived unencrypted data after SSL request\0"
        b"DThis could be either a client-software bug or evidence of an attempted "
        b"man-in-the-middle attack.\0\0"
    )


def test_gss_accepted() -> None:
    n = Negotiator(ssl_enabled=False, gss_enabled=True)
    play(n, (GSS_REQ, [G, StartGSS(b"")]), "gss", (startup(user="u"), [started(user="u")]))


def test_gss_pending_bytes_are_handed_to_the_shell() -> None:
    n = Negotiator(ssl_enabled=False, gss_enabled=True)
    play(n, (GSS_REQ + b"\0\0\0\x10token", [G, StartGSS(b"\0\0\0\x10token")]))


def test_request_split_across_reads() -> None:
    n = Negotiator(ssl_enabled=True, gss_enabled=False)
    play(n, *[(bytes([b]), []) for b in SSL_REQ[:-1]], (SSL_REQ[-1:], [S, StartTLS(b"")]))


# --- the order rules (§1.3, §1.6 fixed semantics) --------------------------------------------

SSL_ON, SSL_OFF, GSS_ON, GSS_OFF = (True, None), (False, None), (None, True), (None, False)

ORDER_RULES: list[tuple[str, bool, bool, list[Step]]] = [
    ("GSS N then SSL S", True, False, [(GSS_REQ, [N]), (SSL_REQ, [S, StartTLS(b"")]), "ssl"]),
    ("GSS N then SSL N", False, False, [(GSS_REQ, [N]), (SSL_REQ, [N])]),
    ("SSL N then GSS G", False, True, [(SSL_REQ, [N]), (GSS_REQ, [G, StartGSS(b"")]), "gss"]),
    ("SSL N then GSS N", False, False, [(SSL_REQ, [N]), (GSS_REQ, [N])]),
    ("SSL N, SSL again", False, True, [(SSL_REQ, [N]), (SSL_REQ, [repeated(5679)])]),
    ("GSS N, GSS again", True, False, [(GSS_REQ, [N]), (GSS_REQ, [repeated(5680)])]),
    (
        "CVE-2026-6479: SSL N, GSS N, SSL",
        False,
        False,
        [(SSL_REQ, [N]), (GSS_REQ, [N]), (SSL_REQ, [repeated(5679)])],
    ),
    (
        "CVE-2026-6479: GSS N, SSL N, GSS",
        False,
        False,
        [(GSS_REQ, [N]), (SSL_REQ, [N]), (GSS_REQ, [repeated(5680)])],
    ),
    ("SSL in TLS", True, True, [(SSL_REQ, [S, StartTLS(b"")]), "ssl", (SSL_REQ, [repeated(5679)])]),
    ("GSS in TLS", True, True, [(SSL_REQ, [S, StartTLS(b"")]), "ssl", (GSS_REQ, [repeated(5680)])]),
    ("SSL in GSS", True, True, [(GSS_REQ, [G, StartGSS(b"")]), "gss", (SSL_REQ, [repeated(5679)])]),
    ("GSS in GSS", True, True, [(GSS_REQ, [G, StartGSS(b"")]), "gss", (GSS_REQ, [repeated(5680)])]),
    (
        "SSL N, GSS G, SSL in GSS",
        False,
        True,
        [(SSL_REQ, [N]), (GSS_REQ, [G, StartGSS(b"")]), "gss", (SSL_REQ, [repeated(5679)])],
    ),
    (
        "GSS N, SSL S, GSS in TLS",
        True,
        False,
        [(GSS_REQ, [N]), (SSL_REQ, [S, StartTLS(b"")]), "ssl", (GSS_REQ, [repeated(5680)])],
    ),
]


@pytest.mark.parametrize(
    ("ssl", "gss", "steps"), [row[1:] for row in ORDER_RULES], ids=[row[0] for row in ORDER_RULES]
)
def test_order_rules(ssl: bool, gss: bool, steps: list[Step]) -> None:
    n = Negotiator(ssl_enabled=ssl, gss_enabled=gss)
    play(n, *steps)
    if n.state is not State.CLOSED:
        play(n, (startup(user="u"), [started(user="u")]))


# --- direct TLS (§2) ---------------------------------------------------------------------------


def test_direct_tls() -> None:
    n = Negotiator(ssl_enabled=True, gss_enabled=True)
    play(n, (HELLO, [StartDirectTLS(HELLO)]), "direct_ssl")
    assert n.state is State.DIRECT_TLS
    play(n, (startup(user="u"), [started(user="u")]))


def test_direct_tls_on_the_first_byte_alone() -> None:
    n = Negotiator(ssl_enabled=True, gss_enabled=False)
    play(n, (b"\x16", [StartDirectTLS(b"\x16")]))


def test_direct_tls_rejected_when_ssl_is_off() -> None:
    # ProcessSSLStartup logs the rejection only under trace_connection_negotiation.
    n = Negotiator(ssl_enabled=False, gss_enabled=True)
    play(n, (HELLO, [Close(None, None)]))
    traced = Negotiator(ssl_enabled=False, gss_enabled=True, trace=True)
    play(traced, (HELLO, [Close(None, "direct SSL connection rejected")]))


@pytest.mark.parametrize(
    ("ssl", "gss", "packet", "events"),
    [
        (True, False, SSL_REQ, [Trace("SSLRequest accepted"), Send(b"S")]),
        (False, False, SSL_REQ, [Trace("SSLRequest rejected"), Send(b"N")]),
        (False, True, GSS_REQ, [Trace("GSSENCRequest accepted"), Send(b"G")]),
        (True, False, GSS_REQ, [Trace("GSSENCRequest rejected"), Send(b"N")]),
    ],
)
def test_trace_connection_negotiation(
    ssl: bool, gss: bool, packet: bytes, events: list[Output]
) -> None:
    """ProcessStartupPacket's LOG lines, before the one-byte answer; none without trace."""
    traced = Negotiator(ssl_enabled=ssl, gss_enabled=gss, trace=True).receive(packet)
    assert traced[: len(events)] == events
    quiet = Negotiator(ssl_enabled=ssl, gss_enabled=gss).receive(packet)
    assert not any(isinstance(event, Trace) for event in quiet)
    assert quiet[0] == events[1]


@pytest.mark.parametrize(
    ("first", "first_events", "second", "second_events"),
    [
        (SSL_REQ, [N], GSS_REQ, [N]),
        (GSS_REQ, [N], SSL_REQ, [N]),
        (SSL_REQ, [N], SSL_REQ, [repeated(5679)]),
        (GSS_REQ, [N], GSS_REQ, [repeated(5680)]),
    ],
)
def test_requests_inside_direct_tls_are_refused(
    first: bytes, first_events: list[Output], second: bytes, second_events: list[Output]
) -> None:
    # ssl_in_use → N; GSSENCRequest → N despite GSS being available (CVE-2026-14681 fix).
    n = Negotiator(ssl_enabled=True, gss_enabled=True)
    play(n, (HELLO, [StartDirectTLS(HELLO)]), "direct_ssl", (first, first_events))
    play(n, (second, second_events))
    if n.state is not State.CLOSED:
        assert n.state is State.ENCRYPTED
        play(n, (SSL_REQ, [repeated(5679)]))


def test_buffered_data_after_n_inside_direct_tls_is_fatal() -> None:
    n = Negotiator(ssl_enabled=True, gss_enabled=True)
    play(
        n,
        (HELLO, [StartDirectTLS(HELLO)]),
        "direct_ssl",
        (
            GSS_REQ + startup(user="u"),
            [N, fatal("08P01", "received unencrypted data after GSSAPI encryption request", MITM)],
        ),
    )


@pytest.mark.parametrize("prefix", [[(SSL_REQ, [N])], [(GSS_REQ, [N])]])
def test_tls_byte_after_the_first_packet_is_a_length_word(prefix: list[Step]) -> None:
    n = Negotiator(ssl_enabled=False, gss_enabled=False)
    play(n, *prefix, (HELLO, [Close(None, "invalid length of startup packet")]))


def test_tls_byte_inside_tls_is_a_length_word() -> None:
    n = Negotiator(ssl_enabled=True, gss_enabled=False)
    play(
        n,
        (SSL_REQ, [S, StartTLS(b"")]),
        "ssl",
        (HELLO, [Close(None, "invalid length of startup packet")]),
    )


# --- cancel at every stage (§7) ---------------------------------------------------------------

STAGES: dict[str, tuple[bool, bool, list[Step]]] = {
    "plain": (False, False, []),
    "after SSL N": (False, False, [(SSL_REQ, [N])]),
    "after GSS N": (False, False, [(GSS_REQ, [N])]),
    "after both N": (False, False, [(SSL_REQ, [N]), (GSS_REQ, [N])]),
    "inside TLS": (True, False, [(SSL_REQ, [S, StartTLS(b"")]), "ssl"]),
    "inside GSS": (False, True, [(GSS_REQ, [G, StartGSS(b"")]), "gss"]),
    "inside GSS after SSL N": (False, True, [(SSL_REQ, [N]), (GSS_REQ, [G, StartGSS(b"")]), "gss"]),
    "inside direct TLS": (True, True, [(HELLO, [StartDirectTLS(HELLO)]), "direct_ssl"]),
    "inside direct TLS after N": (
        True,
        True,
        [(HELLO, [StartDirectTLS(HELLO)]), "direct_ssl", (SSL_REQ, [N])],
    ),
}


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("key", [b"\1\2\3\4", bytes(range(32))])
def test_cancel_at_every_stage(stage: str, key: bytes) -> None:
    ssl, gss, steps = STAGES[stage]
    n = Negotiator(ssl_enabled=ssl, gss_enabled=gss)
    play(n, *steps, (cancel(77, key), [Cancel(77, key)]))
    assert n.state is State.STARTED


@pytest.mark.parametrize("stage", list(STAGES))
def test_startup_at_every_stage(stage: str) -> None:
    ssl, gss, steps = STAGES[stage]
    n = Negotiator(ssl_enabled=ssl, gss_enabled=gss)
    play(n, *steps, (startup(user="u", database="d"), [started(user="u", database="d")]))


@pytest.mark.parametrize(
    ("data", "log"),
    [
        (cancel(0), "invalid cancel request with PID 0"),
        (cancel(key=b""), "invalid length of cancel key in cancel request packet"),
        (cancel(key=bytes(257)), "invalid length of cancel key in cancel request packet"),
        (struct.pack("!II", 8, 80877102), "invalid length of cancel request packet"),
    ],
)
def test_bad_cancel_closes_silently(data: bytes, log: str) -> None:
    play(Negotiator(True, True), (data, [Close(None, log)]))


# --- bad packets -------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 3, 7, 10005, 0xFFFFFFFF])
def test_bad_length(length: int) -> None:
    play(
        Negotiator(True, True),
        (struct.pack("!I", length), [Close(None, "invalid length of startup packet")]),
    )


@pytest.mark.parametrize("body", [b"", b"user\0u\0", b"user\0u\0\0\0", b"user\0"])
def test_bad_layout(body: bytes) -> None:
    data = struct.pack("!II", 8 + len(body), V3_0) + body
    layout = "invalid startup packet layout: expected terminator as last byte"
    play(Negotiator(True, True), (data, [fatal("08P01", layout)]))


def test_bad_replication_value() -> None:
    err = ClientError(
        "22023",
        'invalid value for parameter "replication": "maybe"',
        hint='Valid values are: "false", 0, "true", 1, "database".',
    )
    play(
        Negotiator(True, True),
        (startup(user="u", replication="maybe"), [Close(codec.error_response(err), err.message)]),
    )


def test_missing_user() -> None:
    play(
        Negotiator(True, True),
        (
            startup(database="d"),
            [fatal("28000", "no PostgreSQL user name specified in startup packet")],
        ),
    )


def test_missing_user_after_negotiation_sends_v_first() -> None:
    # NegotiateProtocolVersion is queued before the user check; the FATAL flushes both.
    error = fatal("28000", "no PostgreSQL user name specified in startup packet")
    assert error.error is not None
    v = codec.negotiate_protocol_version(V3_2, ["_pq_.x"])
    play(
        Negotiator(True, True),
        (
            startup(codes.protocol_version(3, 5), **{"_pq_.x": "1"}),
            [Close(v + error.error, error.log)],
        ),
    )


def test_v2_protocol_gets_a_v2_error() -> None:
    expected = b"EFATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.2\n\0"
    log = "unsupported frontend protocol 2.0: server supports 3.0 to 3.2"
    play(
        Negotiator(True, True),
        (startup(codes.protocol_version(2, 0), user="u"), [Close(expected, log)]),
    )


def test_unknown_request_code_gets_a_v3_error() -> None:
    data = struct.pack("!II", 8, codes.protocol_version(1234, 5681))
    play(Negotiator(True, True), (data, [repeated(5681)]))


# --- protocol 3.2 and _pq_ options -----------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "options", "negotiate", "protocol"),
    [
        (0, [], None, V3_0),
        (1, [], None, V3_0),  # PG18 accepts 3.1 silently and treats it as < 3.2
        (2, [], None, V3_2),
        (5, [], (V3_2, []), V3_2),
        (0, ["_pq_.foo"], (V3_0, ["_pq_.foo"]), V3_0),
        (1, ["_pq_.foo"], (codes.PROTOCOL_3_1, ["_pq_.foo"]), V3_0),
        (2, ["_pq_.a", "_pq_.b"], (V3_2, ["_pq_.a", "_pq_.b"]), V3_2),
        (9, ["_pq_.x"], (V3_2, ["_pq_.x"]), V3_2),
    ],
)
def test_protocol_negotiation(
    minor: int,
    options: list[str],
    negotiate: tuple[int, list[str]] | None,
    protocol: int,
) -> None:
    version = codes.protocol_version(3, minor)
    data = startup(version, user="u", **dict.fromkeys(options, "on"))
    [event] = Negotiator(True, True).receive(data)
    assert isinstance(event, Startup)
    assert event.message == StartupMessage(version, (("user", "u"),), tuple(options))
    assert event.protocol == protocol
    if negotiate is None:
        assert event.negotiate is None
    else:
        assert event.negotiate == codec.negotiate_protocol_version(*negotiate)


def test_observed_negotiate_bytes_for_pg18() -> None:
    # protocol.md §1.2 step 8, obs-18.6: 3.5 + _pq_.x.
    [event] = Negotiator(False, False).receive(
        startup(codes.protocol_version(3, 5), user="u", **{"_pq_.x": "1"})
    )
    assert isinstance(event, Startup)
    assert event.negotiate == b"v\0\0\0\x13\0\x03\0\x02\0\0\0\x01_pq_.x\0"


def test_bytes_behind_the_startup_packet_are_passed_on() -> None:
    n = Negotiator(True, True)
    [event] = n.receive(startup(user="u") + b"p\0\0\0\x08pw\0")
    assert isinstance(event, Startup) and event.pending == b"p\0\0\0\x08pw\0"


def test_startup_byte_by_byte() -> None:
    data = startup(user="u", database="d")
    n = Negotiator(True, True)
    play(n, *[(bytes([b]), []) for b in data[:-1]], (data[-1:], [started(user="u", database="d")]))


# --- EOF ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "tail", "log"),
    [
        ([], b"", None),  # port scanners, health checks: no complaint
        ([], b"\0", "incomplete startup packet"),
        ([], b"\0\0\0", "incomplete startup packet"),
        ([], startup(user="u")[:-1], "incomplete startup packet"),
        ([(SSL_REQ, [N])], b"", None),
        ([(SSL_REQ, [N])], b"\0\0", None),  # partial length word once something was answered
        ([(SSL_REQ, [N])], b"\0\0\0\x10", "incomplete startup packet"),
        ([(GSS_REQ, [N])], b"\0", None),
    ],
)
def test_eof(steps: list[Step], tail: bytes, log: str | None) -> None:
    n = Negotiator(False, False)
    play(n, *steps, (tail, []))
    assert n.eof() == [Close(None, log)]
    assert n.state is State.CLOSED


def test_eof_inside_direct_tls_counts_as_nothing_answered() -> None:
    n = Negotiator(True, True)
    play(n, (HELLO, [StartDirectTLS(HELLO)]), "direct_ssl", (b"\0", []))
    assert n.eof() == [Close(None, "incomplete startup packet")]


@pytest.mark.parametrize(
    ("request_", "ssl", "gss"),
    [(SSL_REQ, True, False), (GSS_REQ, False, True), (HELLO, True, False)],
)
def test_eof_during_handshake(request_: bytes, ssl: bool, gss: bool) -> None:
    n = Negotiator(ssl, gss)
    n.receive(request_)
    assert n.eof() == [Close(None, None)]


# --- illegal moves ------------------------------------------------------------------------------


def test_bytes_during_handshake_are_illegal() -> None:
    n = Negotiator(True, False)
    n.receive(SSL_REQ)
    with pytest.raises(IllegalMove, match="'data' is not allowed in state 'tls handshake'"):
        n.receive(HELLO)


def test_wrong_handshake_kind_is_illegal() -> None:
    n = Negotiator(True, True)
    n.receive(SSL_REQ)
    with pytest.raises(IllegalMove) as err:
        n.encryption_established("gss")
    assert err.value.state is State.TLS_HANDSHAKE and err.value.event is Input.GSS_ESTABLISHED


@pytest.mark.parametrize("data", [startup(user="u"), cancel(), b"\x16"])
def test_nothing_after_the_end(data: bytes) -> None:
    n = Negotiator(ssl_enabled=False, gss_enabled=False)
    n.receive(data)
    assert n.state in (State.STARTED, State.CLOSED)
    with pytest.raises(IllegalMove):
        n.receive(b"more")
    with pytest.raises(IllegalMove):
        n.eof()


def test_established_without_a_handshake_is_illegal() -> None:
    with pytest.raises(IllegalMove, match="'ssl established' is not allowed in state 'fresh'"):
        Negotiator(True, True).encryption_established("ssl")


def test_transition_table_shape() -> None:
    # Terminal states have no moves; every state is the target of some move or the start.
    sources = {state for state, _ in TRANSITIONS}
    assert State.STARTED not in sources and State.CLOSED not in sources
    targets = {after for _, after in TRANSITIONS.values()}
    assert set(State) == targets | {State.FRESH}
    # Cancel, startup and EOF are accepted wherever packets are read.
    for state, input_ in TRANSITIONS:
        if input_ is Input.DATA:
            for other in (Input.CANCEL, Input.STARTUP, Input.EOF, Input.BAD_PACKET):
                assert (state, other) in TRANSITIONS


# --- fuzzing -----------------------------------------------------------------------------------

_pieces = st.one_of(
    st.sampled_from(
        [SSL_REQ, GSS_REQ, HELLO, cancel(), cancel(0), startup(user="u"), startup(V3_2, user="u")]
    ),
    st.binary(max_size=24),
)

_TERMINAL = (Cancel, Startup, Close)
_HANDSHAKES: dict[type, EncryptionKind] = {
    StartTLS: "ssl",
    StartDirectTLS: "direct_ssl",
    StartGSS: "gss",
}


@given(st.booleans(), st.booleans(), st.lists(_pieces, max_size=6), st.booleans())
def test_fuzz_negotiator(ssl: bool, gss: bool, chunks: list[bytes], eof: bool) -> None:
    """Any byte stream yields events only; handshakes complete; it ends in at most one end."""
    n = Negotiator(ssl, gss)
    for chunk in chunks:
        events = n.receive(chunk)
        assert all(
            isinstance(e, (Send, StartTLS, StartDirectTLS, StartGSS, *_TERMINAL)) for e in events
        )
        assert sum(isinstance(e, _TERMINAL) for e in events) <= 1
        for event in events:
            if isinstance(event, Send):
                assert event.data in (b"S", b"G", b"N")
            kind = _HANDSHAKES.get(type(event))
            if kind is not None:
                n.encryption_established(kind)
        if events and isinstance(events[-1], _TERMINAL):
            assert n.state in (State.STARTED, State.CLOSED)
            return
    if eof:
        [close] = n.eof()
        assert isinstance(close, Close) and close.error is None


@given(st.binary(min_size=1, max_size=60), st.data())
def test_fuzz_chunking_does_not_matter_for_one_packet(tail: bytes, data: st.DataObject) -> None:
    """A single packet gives the same events however it is split (nothing precedes it)."""
    stream = (
        startup(user="u", x=tail.hex()) if tail[0] % 2 else struct.pack("!I", len(tail) + 4) + tail
    )
    whole = Negotiator(True, True).receive(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    n = Negotiator(True, True)
    events: list[Output] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        if n.state not in (State.STARTED, State.CLOSED):
            events += n.receive(stream[start:end])
    assert events == whole


def test_protocol_violation_is_a_client_error() -> None:
    # The negotiator renders both through codec.render_error.
    assert issubclass(ProtocolViolation, ClientError)
