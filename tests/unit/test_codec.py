"""proto/codec.py and proto/messages.py: every parser whole, byte by byte, with trailing bytes,
golden bytes for every encoder, and hypothesis fuzzing of everything that takes untrusted bytes.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pggate.errors import SilentClose
from pggate.proto import codec, codes
from pggate.proto.errors import ClientError, ProtocolViolation
from pggate.proto.messages import (
    CancelRequest,
    GSSENCRequest,
    SSLRequest,
    StartupMessage,
    pg_parse_bool,
    truncate_name,
)

V3_0 = codes.PROTOCOL_3_0
V3_2 = codes.PROTOCOL_3_2


def packet(code: int, payload: bytes = b"") -> bytes:
    """An untyped startup-phase packet, built independently of the codec."""
    return struct.pack("!II", 8 + len(payload), code) + payload


def raw_startup(version: int, body: bytes) -> bytes:
    return struct.pack("!II", 8 + len(body), version) + body


def startup(version: int = V3_0, **params: str) -> bytes:
    pairs = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items())
    return raw_startup(version, pairs + b"\0")


Parser = Callable[[Any], tuple[Any, int]]


def check_parses(parse: Parser, data: bytes, expected: object) -> None:
    """Whole, byte by byte (every proper prefix needs more), with trailing bytes, any buffer."""
    for kind in (bytes, bytearray, memoryview):
        assert parse(kind(data)) == (expected, len(data))
    for cut in range(len(data)):
        assert parse(data[:cut]) == (None, 0), cut
    assert parse(data + b"\x00\x03trailing") == (expected, len(data))


def check_fails(parse: Parser, data: bytes, exc: type[Exception], text: str) -> Exception:
    """The whole packet fails, and so does any longer buffer; returns the exception."""
    with pytest.raises(exc) as whole:
        parse(data)
    with pytest.raises(exc):
        parse(data + b"trailing")
    assert str(whole.value) == text
    return whole.value


def parse_startup(buf: Any) -> tuple[Any, int]:
    return codec.parse_startup_packet(buf)


# --- parse_startup_packet: special codes ----------------------------------------------------


def test_ssl_request() -> None:
    check_parses(parse_startup, packet(codes.NEGOTIATE_SSL_CODE), SSLRequest())


def test_gssenc_request() -> None:
    check_parses(parse_startup, packet(codes.NEGOTIATE_GSS_CODE), GSSENCRequest())


def test_longer_ssl_request_is_still_an_ssl_request() -> None:
    # ProcessStartupPacket dispatches on the code and never checks the request's length.
    check_parses(parse_startup, packet(codes.NEGOTIATE_SSL_CODE, b"junk"), SSLRequest())


@pytest.mark.parametrize("key_length", [1, 4, 32, 256])
def test_cancel_request(key_length: int) -> None:
    key = bytes(range(key_length % 256)) + b"k" * (key_length - key_length % 256)
    data = packet(codes.CANCEL_REQUEST_CODE, struct.pack("!I", 4242) + key)
    assert len(data) == 12 + key_length
    check_parses(parse_startup, data, CancelRequest(4242, key))


@pytest.mark.parametrize(
    ("payload", "log"),
    [
        (b"", "invalid length of cancel request packet"),
        (b"\0\0\x10", "invalid length of cancel request packet"),
        (struct.pack("!I", 4242), "invalid length of cancel key in cancel request packet"),
        (
            struct.pack("!I", 4242) + b"k" * 257,
            "invalid length of cancel key in cancel request packet",
        ),
        (struct.pack("!I", 0) + b"kkkk", "invalid cancel request with PID 0"),
    ],
)
def test_bad_cancel_request_closes_silently(payload: bytes, log: str) -> None:
    check_fails(parse_startup, packet(codes.CANCEL_REQUEST_CODE, payload), SilentClose, log)


def test_cancel_key_lengths_can_be_restricted() -> None:
    data = packet(codes.CANCEL_REQUEST_CODE, struct.pack("!I", 7) + b"k" * 32)
    with pytest.raises(SilentClose, match="invalid length of cancel key"):
        codec.parse_startup_packet(data, allow_cancel_key_lengths={4})
    # The PostgreSQL bound holds even when the caller allows more.
    data = packet(codes.CANCEL_REQUEST_CODE, struct.pack("!I", 7) + b"k" * 300)
    with pytest.raises(SilentClose, match="invalid length of cancel key"):
        codec.parse_startup_packet(data, allow_cancel_key_lengths=range(1000))


# --- parse_startup_packet: lengths and versions ---------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 3, 4, 7, 10005, 0x16030100, 0x7FFFFFFF, 0xFFFFFFFF])
def test_bad_length_is_judged_from_the_length_word_alone(length: int) -> None:
    word = struct.pack("!I", length)
    for cut in range(4):
        assert codec.parse_startup_packet(word[:cut]) == (None, 0)
    check_fails(parse_startup, word, SilentClose, "invalid length of startup packet")


def test_largest_startup_packet() -> None:
    # MAX_STARTUP_PACKET_LENGTH counts the bytes after the length word.
    body = b"user\0bob\0" + b"x" * (10000 - 4 - 9 - 4) + b"\0v\0\0"
    data = raw_startup(V3_0, body)
    assert len(data) == 10004
    msg, consumed = codec.parse_startup_packet(data)
    assert consumed == 10004 and isinstance(msg, StartupMessage)
    assert codec.parse_startup_packet(data[:9000]) == (None, 0)


def test_startup_message() -> None:
    data = startup(user="alice", database="shop", application_name="psql", TimeZone="UTC")
    expected = StartupMessage(
        V3_0,
        (
            ("user", "alice"),
            ("database", "shop"),
            ("application_name", "psql"),
            ("TimeZone", "UTC"),
        ),
        (),
    )
    check_parses(parse_startup, data, expected)
    assert expected.user == "alice" and expected.database == "shop"
    assert expected.application_name == "psql" and expected.options is None
    assert expected.params == {
        "user": "alice",
        "database": "shop",
        "application_name": "psql",
        "TimeZone": "UTC",
    }
    assert expected.replication == codes.REPLICATION_NONE


def test_protocol_options_and_newer_minor_are_parsed() -> None:
    data = startup(codes.protocol_version(3, 7), user="u", **{"_pq_.a": "1", "_pq_.b": "2"})
    expected = StartupMessage(codes.protocol_version(3, 7), (("user", "u"),), ("_pq_.a", "_pq_.b"))
    check_parses(parse_startup, data, expected)


@pytest.mark.parametrize(
    ("major", "minor", "v2"), [(2, 0, True), (0, 0, True), (1, 9, True), (4, 0, False)]
)
def test_unsupported_major_version(major: int, minor: int, v2: bool) -> None:
    data = startup(codes.protocol_version(major, minor), user="u")
    text = f"unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.2"
    err = check_fails(parse_startup, data, ClientError, text)
    assert isinstance(err, ClientError) and err.sqlstate == "0A000"
    assert isinstance(err, codec.V2ProtocolError) is v2


def test_v2_error_golden_bytes() -> None:
    # protocol.md §1.2 step 6, observed on 15.18 and 18.6 (with the 3.2 text of 18).
    err = codec.unsupported_protocol(codes.protocol_version(2, 0))
    expected = b"EFATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.2\n\0"
    assert codec.render_error(err) == expected
    assert codec.v2_error_response(err.message) == expected


def test_unknown_request_code_golden_bytes() -> None:
    # protocol.md §1.2 step 6 (obs-18.6) without the build-specific F/L/R fields.
    err = codec.unsupported_protocol(codes.protocol_version(1234, 5681))
    assert codec.render_error(err) == (
        b"E\x00\x00\x00\x5fSFATAL\0VFATAL\0C0A000\0"
        b"Munsupported frontend protocol 1234.5681: server supports 3.0 to 3.2\0\0"
    )


# --- parse_startup_packet: layout ----------------------------------------------------------

LAYOUT = "invalid startup packet layout: expected terminator as last byte"


@pytest.mark.parametrize(
    "body",
    [
        b"",  # the bare 8-byte packet of protocol.md §1.2 step 7
        b"user\0bob\0",  # no terminator
        b"user\0bob",  # value runs to the end
        b"user\0bob\0\0\0",  # terminator not last
        b"user\0",  # name without value
        b"user",
        b"user\0bob\0\0extra",
    ],
)
def test_bad_layout(body: bytes) -> None:
    err = check_fails(parse_startup, raw_startup(V3_0, body), ProtocolViolation, LAYOUT)
    assert isinstance(err, ClientError) and err.sqlstate == "08P01"


def test_final_non_nul_byte_is_accepted_like_postgresql() -> None:
    # The scan reads a last non-NUL byte as a name with no room for a value, stops on it, and
    # finds it exactly at len - 1: PostgreSQL accepts the packet.
    data = raw_startup(V3_0, b"user\0bob\0X")
    check_parses(parse_startup, data, StartupMessage(V3_0, (("user", "bob"),), ()))


@pytest.mark.parametrize("body", [b"\0", b"database\0d\0\0", b"user\0\0\0"])
def test_missing_user(body: bytes) -> None:
    data = raw_startup(V3_0, body)
    err = check_fails(
        parse_startup, data, ClientError, "no PostgreSQL user name specified in startup packet"
    )
    assert isinstance(err, ClientError) and err.sqlstate == "28000"
    msg, _ = codec.parse_startup_packet(data, require_user=False)
    assert isinstance(msg, StartupMessage) and msg.user == ""


# --- StartupMessage semantics ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "mode"),
    [
        (["true"], "physical"),
        (["on"], "physical"),
        (["yes"], "physical"),
        (["1"], "physical"),
        (["T"], "physical"),
        (["tRu"], "physical"),
        (["y"], "physical"),
        (["database"], "logical"),
        (["false"], "none"),
        (["of"], "none"),
        (["OFF"], "none"),
        (["n"], "none"),
        (["0"], "none"),
        (["true", "false"], "none"),
        (["database", "true"], "logical"),  # am_db_walsender stays set
        (["database", "false"], "none"),
    ],
)
def test_replication(values: list[str], mode: str) -> None:
    body = b"user\0u\0" + b"".join(b"replication\0" + v.encode() + b"\0" for v in values) + b"\0"
    msg, _ = codec.parse_startup_packet(raw_startup(V3_0, body))
    assert isinstance(msg, StartupMessage) and msg.replication == mode


@pytest.mark.parametrize("value", ["", "o", "Database", "truee", "2", "physical", " true"])
def test_bad_replication_value(value: str) -> None:
    data = startup(user="u", replication=value)
    err = check_fails(
        parse_startup,
        data,
        ClientError,
        f'invalid value for parameter "replication": "{value}"',
    )
    assert isinstance(err, ClientError) and err.sqlstate == "22023"
    assert err.hint == 'Valid values are: "false", 0, "true", 1, "database".'


def test_bad_replication_value_wins_over_bad_layout_and_missing_user() -> None:
    # The value is checked in the middle of the scan, before the layout and user checks.
    data = raw_startup(V3_0, b"replication\0maybe\0garbage")
    with pytest.raises(ClientError, match="replication") as err:
        codec.parse_startup_packet(data)
    assert err.value.sqlstate == "22023"


def test_pg_parse_bool() -> None:
    assert [pg_parse_bool(v) for v in ("t", "TRUE", "Yes", "on", "1")] == [True] * 5
    assert [pg_parse_bool(v) for v in ("f", "fAlSe", "no", "off", "0")] == [False] * 5
    assert [pg_parse_bool(v) for v in ("", "o", "onn", "10", "truex", "ja")] == [None] * 6


def test_database_defaults_and_truncation() -> None:
    long_user = "u" * 70
    msg = StartupMessage(V3_0, (("user", long_user), ("database", "")), ())
    assert msg.user == "u" * 63 and msg.database == "u" * 63
    physical = StartupMessage(V3_0, (("user", "u"), ("database", "d"), ("replication", "1")), ())
    assert physical.database == "" and physical.replication == "physical"
    logical = StartupMessage(V3_0, (("user", "u"), ("database", "d"), ("replication", "database")))
    assert logical.database == "d"
    last = StartupMessage(V3_0, (("user", "a"), ("user", "b"), ("options", "-c x=1")), ())
    assert last.user == "b" and last.params["user"] == "b" and last.options == "-c x=1"


def test_truncation_is_a_byte_cut_like_postgresql() -> None:
    # 62 ASCII bytes + "é" (2 bytes): the cut at 63 bytes splits the character, exactly as
    # ProcessStartupPacket does; the bytes survive the round trip to the backend.
    name = "a" * 62 + "é"
    cut = truncate_name(name)
    assert cut.encode("utf-8", "surrogateescape") == b"a" * 62 + b"\xc3"
    assert truncate_name("a" * 63) == "a" * 63
    data = startup(user=name)
    msg, _ = codec.parse_startup_packet(data)
    assert isinstance(msg, StartupMessage) and msg.user == cut


def test_non_utf8_names_round_trip() -> None:
    data = raw_startup(V3_0, b"user\0j\xf6rg\0database\0\xff\0\0")
    msg, _ = codec.parse_startup_packet(data)
    assert isinstance(msg, StartupMessage)
    assert codec.startup_message(V3_0, msg.params) == data


# --- read_message ----------------------------------------------------------------------------


def read(buf: Any) -> tuple[Any, int]:
    parsed, consumed = codec.read_message(buf, max_length=1000)
    if parsed is None:
        return None, consumed
    kind, body = parsed
    return (kind, bytes(body)), consumed


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"p\0\0\0\x09hunt2", (b"p", b"hunt2")),
        (b"X\0\0\0\x04", (b"X", b"")),
        (b"R\0\0\0\x08\0\0\0\0", (b"R", b"\0\0\0\0")),
    ],
)
def test_read_message(data: bytes, expected: tuple[bytes, bytes]) -> None:
    check_parses(read, data, expected)


@pytest.mark.parametrize("length", [0, 3, 1001, 0xFFFFFFFF])
def test_read_message_bad_length(length: int) -> None:
    data = b"p" + struct.pack("!I", length)
    for cut in range(5):
        assert read(data[:cut]) == (None, 0)
    err = check_fails(read, data, codec.InvalidMessageLength, "invalid message length")
    # 08P01 as pq_getmessage reports it, and silent as PostgreSQL handles it.
    assert isinstance(err, ProtocolViolation) and isinstance(err, SilentClose)
    assert err.sqlstate == "08P01"


def test_read_message_length_limit_counts_the_length_word() -> None:
    data = b"p" + struct.pack("!I", 1000) + b"x" * 996
    assert read(data)[1] == 1001


def test_read_message_body_from_bytearray_allows_resizing() -> None:
    buf = bytearray(b"p\0\0\0\x07abcZ")
    parsed, consumed = codec.read_message(buf, max_length=100)
    assert parsed is not None
    del buf[:consumed]  # would raise BufferError if the body viewed the bytearray
    assert bytes(parsed[1]) == b"abc" and buf == b"Z"


def test_read_message_body_from_bytes_is_a_view() -> None:
    data = b"p\0\0\0\x07abc"
    parsed, _ = codec.read_message(data, max_length=100)
    assert parsed is not None and parsed[1].obj is data


# --- encoders: golden bytes -------------------------------------------------------------------


def test_error_response_golden() -> None:
    err = ClientError(
        "28P01",
        'password authentication failed for user "bob"',
        detail="d",
        hint="h",
        log_detail="never sent",
    )
    assert codec.error_response(err) == (
        b"E\x00\x00\x00\x4fSFATAL\0VFATAL\0C28P01\0"
        b'Mpassword authentication failed for user "bob"\0Dd\0Hh\0\0'
    )


def test_unencrypted_data_error_golden() -> None:
    # protocol.md §1.4, observed after N on 15.18 and 18.6, without F/L/R.
    err = ProtocolViolation(
        "received unencrypted data after SSL request",
        detail=(
            "This could be either a client-software bug or evidence of an attempted "
            "man-in-the-middle attack."
        ),
    )
    assert codec.error_response(err) == (
        b"E\x00\x00\x00\xa9SFATAL\0VFATAL\0C08P01\0"
        b"Mreceived unencrypted data after SSL request\0"
        b"DThis could be either a client-software bug or evidence of an attempted "
        b"man-in-the-middle attack.\0\0"
    )


def test_notice_response_golden() -> None:
    notice = ClientError("01000", "hi", severity=codes.SEVERITY_WARNING)
    assert codec.notice_response(notice) == b"N\0\0\0\x22SWARNING\0VWARNING\0C01000\0Mhi\0\0"


def test_encoders_reject_nul_in_strings() -> None:
    with pytest.raises(ValueError):
        codec.parameter_status("a\0b", "c")


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (codec.authentication_ok(), b"R\0\0\0\x08\0\0\0\0"),
        (
            codec.authentication_request(codes.AUTH_SASL, b"SCRAM-SHA-256\0\0"),
            b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0",
        ),
        (
            codec.authentication_request(codes.AUTH_MD5_PASSWORD, b"salt"),
            b"R\0\0\0\x0c\0\0\0\x05salt",
        ),
        (codec.parameter_status("TimeZone", "UTC"), b"S\0\0\0\x11TimeZone\0UTC\0"),
        (codec.backend_key_data(77, b"\1\2\3\4"), b"K\0\0\0\x0c\0\0\0\x4d\1\2\3\4"),
        (codec.ready_for_query(codes.TX_IDLE), b"Z\0\0\0\x05I"),
        # protocol.md §1.2 step 8: PG15 for 3.1 + _pq_.foo, PG18.6 for 3.5 + _pq_.x.
        (
            codec.negotiate_protocol_version(V3_0, ["_pq_.foo"]),
            b"v\0\0\0\x15\0\x03\0\0\0\0\0\x01_pq_.foo\0",
        ),
        (
            codec.negotiate_protocol_version(V3_2, ["_pq_.x"]),
            b"v\0\0\0\x13\0\x03\0\x02\0\0\0\x01_pq_.x\0",
        ),
        (codec.negotiate_protocol_version(V3_2, []), b"v\0\0\0\x0c\0\x03\0\x02\0\0\0\0"),
        (codec.ssl_request(), b"\0\0\0\x08\x04\xd2\x16\x2f"),
        (codec.gssenc_request(), b"\0\0\0\x08\x04\xd2\x16\x30"),
        (codec.cancel_request(5, b"abcd"), b"\0\0\0\x10\x04\xd2\x16\x2e\0\0\0\x05abcd"),
        (codec.password_message(b"pw\0"), b"p\0\0\0\x07pw\0"),
        (codec.terminate(), b"X\0\0\0\x04"),
        (
            codec.startup_message(V3_0, {"user": "u", "database": "d"}),
            b"\0\0\0\x1b\0\x03\0\0user\0u\0database\0d\0\0",
        ),
    ],
)
def test_encoder_golden(encoded: bytes, expected: bytes) -> None:
    assert encoded == expected


def test_ready_for_query_rejects_bad_status() -> None:
    with pytest.raises(ValueError):
        codec.ready_for_query(b"X")


def test_frontend_packets_parse_back() -> None:
    assert codec.parse_startup_packet(codec.ssl_request())[0] == SSLRequest()
    assert codec.parse_startup_packet(codec.gssenc_request())[0] == GSSENCRequest()
    key = bytes(range(32))
    assert codec.parse_startup_packet(codec.cancel_request(9, key))[0] == CancelRequest(9, key)
    data = codec.startup_message(V3_2, {"user": "u", "_pq_.x": "y"})
    assert codec.parse_startup_packet(data)[0] == StartupMessage(
        V3_2, (("user", "u"),), ("_pq_.x",)
    )


# --- decoders of backend messages ---------------------------------------------------------------


def body_of(message: bytes) -> bytes:
    parsed, consumed = codec.read_message(message, max_length=1 << 20)
    assert parsed is not None and consumed == len(message)
    return bytes(parsed[1])


def test_error_fields_round_trip() -> None:
    err = ClientError("3D000", 'database "x" does not exist', detail="dd", hint="hh")
    fields = codec.parse_error_fields(body_of(codec.error_response(err)))
    assert fields == {
        "S": "FATAL",
        "V": "FATAL",
        "C": "3D000",
        "M": 'database "x" does not exist',
        "D": "dd",
        "H": "hh",
    }
    back = codec.client_error_from_fields(fields)
    assert (back.sqlstate, back.message, back.severity, back.detail, back.hint) == (
        "3D000",
        'database "x" does not exist',
        "FATAL",
        "dd",
        "hh",
    )
    assert codec.error_response(back) == codec.error_response(err)


def test_client_error_from_sparse_and_localized_fields() -> None:
    err = codec.client_error_from_fields({"S": "FATAL"})
    assert (err.sqlstate, err.message, err.severity) == ("XX000", "missing error text", "FATAL")
    err = codec.client_error_from_fields({"S": "FATAL", "V": "ERROR", "C": "42501", "M": ""})
    assert (err.severity, err.message) == ("ERROR", "")
    # Fields pggate does not carry (F, L, R, W...) are read but dropped.
    fields = codec.parse_error_fields(b"SERROR\0Fpostgres.c\0L1\0RMain\0C42000\0Mx\0\0")
    assert fields["F"] == "postgres.c" and codec.client_error_from_fields(fields).message == "x"


@pytest.mark.parametrize("body", [b"", b"SFATAL", b"SFATAL\0", b"SFATAL\0\0x", b"S"])
def test_malformed_error_fields(body: bytes) -> None:
    with pytest.raises(ProtocolViolation, match='message type "E"'):
        codec.parse_error_fields(body)


def test_backend_message_decoders() -> None:
    auth = codec.authentication_request(codes.AUTH_SASL_CONTINUE, b"r=abc")
    assert codec.parse_authentication(body_of(auth)) == (codes.AUTH_SASL_CONTINUE, b"r=abc")
    status = codec.parameter_status("server_version", "18.6")
    assert codec.parse_parameter_status(body_of(status)) == ("server_version", "18.6")
    for key in (b"\1\2\3\4", bytes(32), bytes(256)):
        kd = codec.backend_key_data(123456, key)
        assert codec.parse_backend_key_data(body_of(kd)) == (123456, key)
    nego = codec.negotiate_protocol_version(V3_0, ["_pq_.a", "_pq_.b"])
    assert codec.parse_negotiate_protocol_version(body_of(nego)) == (V3_0, ["_pq_.a", "_pq_.b"])


@pytest.mark.parametrize(
    ("decoder", "body"),
    [
        (codec.parse_authentication, b"\0\0\0"),
        (codec.parse_parameter_status, b"a\0"),
        (codec.parse_parameter_status, b"a\0b\0c"),
        (codec.parse_backend_key_data, b"\0\0\0\1"),
        (codec.parse_backend_key_data, b"\0\0\0\1" + bytes(257)),
        (codec.parse_negotiate_protocol_version, b"\0\3\0\0\0\0\0\2_pq_.a\0"),
        (codec.parse_negotiate_protocol_version, b"\0\3\0\0\xff\xff\xff\xff"),
        (codec.parse_negotiate_protocol_version, b"\0\3\0\0\0\0\0\0x"),
    ],
)
def test_malformed_backend_messages(decoder: Callable[[bytes], object], body: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        decoder(body)


# --- fuzzing ---------------------------------------------------------------------------------

# Inputs biased towards the interesting prefixes: real length words and codes.
_codes = st.sampled_from(
    [
        codes.CANCEL_REQUEST_CODE,
        codes.NEGOTIATE_SSL_CODE,
        codes.NEGOTIATE_GSS_CODE,
        V3_0,
        V3_2,
        codes.protocol_version(2, 0),
        codes.protocol_version(3, 9),
    ]
)


@st.composite
def startup_like(draw: st.DrawFn) -> bytes:
    tail = draw(st.binary(max_size=64))
    length = draw(st.one_of(st.just(8 + len(tail)), st.integers(0, 0xFFFFFFFF)))
    return struct.pack("!II", length, draw(_codes)) + tail


_untrusted = st.one_of(st.binary(max_size=80), startup_like())


@given(_untrusted)
def test_fuzz_parse_startup_packet(data: bytes) -> None:
    try:
        packet_, consumed = codec.parse_startup_packet(data)
    except (ClientError, SilentClose):
        return
    if packet_ is None:
        assert consumed == 0
    else:
        assert 8 <= consumed <= len(data)
        assert isinstance(packet_, SSLRequest | GSSENCRequest | CancelRequest | StartupMessage)


@st.composite
def startup_messages(draw: st.DrawFn) -> StartupMessage:
    # Text as the parser produces it: no NUL, and no lone surrogates (only surrogateescape's
    # U+DC80..U+DCFF stand for undecodable bytes; other surrogates never come off the wire).
    chars = st.characters(exclude_characters="\0", exclude_categories=["Cs"])
    # Not "user" either: a second ("user", "") would rightly refuse the packet (28000).
    names = st.text(chars, min_size=1, max_size=8).filter(
        lambda n: not n.startswith("_pq_.") and n not in ("replication", "user")
    )
    values = st.text(chars, max_size=8)
    params = draw(st.lists(st.tuples(names, values), max_size=5))
    options = draw(st.lists(st.just("_pq_.") | st.text("abc", max_size=3).map("_pq_.".__add__)))
    version = draw(st.sampled_from([V3_0, codes.PROTOCOL_3_1, V3_2, codes.protocol_version(3, 9)]))
    return StartupMessage(version, (("user", "u"), *params), tuple(options))


@given(startup_messages())
def test_fuzz_startup_round_trip(msg: StartupMessage) -> None:
    pairs = dict.fromkeys(msg.protocol_options, "1")
    data = codec.startup_message(msg.version, {**dict(msg.parameters), **pairs})
    parsed, consumed = codec.parse_startup_packet(data)
    assert consumed == len(data)
    assert isinstance(parsed, StartupMessage)
    assert parsed.params == msg.params and parsed.protocol_options == tuple(
        dict.fromkeys(msg.protocol_options)
    )


@given(st.binary(max_size=40), st.integers(0, 64))
def test_fuzz_read_message(data: bytes, max_length: int) -> None:
    try:
        parsed, consumed = codec.read_message(data, max_length=max_length)
    except ProtocolViolation:
        return
    if parsed is None:
        assert consumed == 0
    else:
        kind, body = parsed
        assert len(kind) == 1 and consumed == 5 + len(body) <= len(data)


@given(
    st.sampled_from(
        [
            codec.parse_error_fields,
            codec.parse_authentication,
            codec.parse_parameter_status,
            codec.parse_backend_key_data,
            codec.parse_negotiate_protocol_version,
        ]
    ),
    st.binary(max_size=40),
)
def test_fuzz_backend_decoders(decoder: Callable[[bytes], object], body: bytes) -> None:
    with contextlib.suppress(ProtocolViolation):
        decoder(body)
