"""pggate logging in to its backend (proto/backend.py), fed scripted backend bytes."""

from __future__ import annotations

import struct

import pytest

from pggate.proto import codec, codes
from pggate.proto.backend import BackendLogin, LoginComplete, LoginFailed
from pggate.proto.errors import ClientError
from pggate.proto.query import QueryResult, quote_literal, role_memberships_sql


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


OK = codec.authentication_ok()
PARAMS = codec.parameter_status("server_version", "18.6") + codec.parameter_status(
    "client_encoding", "UTF8"
)
KEY = codec.backend_key_data(4242, b"\x01\x02\x03\x04")
READY = codec.ready_for_query(b"I")


def login() -> BackendLogin:
    return BackendLogin(user="alice", parameters={"user": "alice", "database": "db"})


def test_startup_is_protocol_3_0_with_the_parameters() -> None:
    packet = login().startup()
    assert packet[4:8] == struct.pack("!I", codes.PROTOCOL_3_0)
    assert b"user\0alice\0database\0db\0\0" in packet


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_trust_login_collects_the_burst_without_the_key(chunk: int) -> None:
    machine = login()
    stream = OK + PARAMS + KEY + READY
    outcome = None
    for start in range(0, len(stream), chunk):
        reply, outcome = machine.receive(stream[start : start + chunk])
        assert reply == b""
        if outcome is not None:
            break
    assert isinstance(outcome, LoginComplete)
    assert outcome.burst == PARAMS + READY
    assert (outcome.backend_pid, outcome.backend_key) == (4242, b"\x01\x02\x03\x04")
    assert outcome.leftover == b""


def test_backend_error_is_kept_verbatim() -> None:
    error = codec.error_response(ClientError("3D000", 'database "db" does not exist'))
    _, outcome = login().receive(OK + error)
    assert isinstance(outcome, LoginFailed)
    assert outcome.error_message == error
    assert (outcome.error.sqlstate, outcome.error.message) == (
        "3D000",
        'database "db" does not exist',
    )


def test_password_request_without_a_password_is_a_connection_failure() -> None:
    with pytest.raises(ClientError) as info:
        login().receive(codec.authentication_request(codes.AUTH_CLEARTEXT_PASSWORD))
    assert info.value.sqlstate == "08006"
    assert info.value.log_detail is not None and "password" in info.value.log_detail


def test_md5_answer() -> None:
    machine = BackendLogin(user="alice", parameters={}, password="secret")
    reply, _ = machine.receive(codec.authentication_request(codes.AUTH_MD5_PASSWORD, b"salt"))
    # md5(md5("secretalice") + "salt"), computed independently with the same recipe
    import hashlib

    inner = hashlib.md5(b"secretalice").hexdigest().encode()
    expected = b"md5" + hashlib.md5(inner + b"salt").hexdigest().encode() + b"\0"
    assert reply == message(b"p", expected)


def test_quote_literal_cannot_be_escaped() -> None:
    assert quote_literal("a'b\\c") == "E'a''b\\\\c'"
    assert "E'x'' OR true --'" in role_memberships_sql("x' OR true --")
    with pytest.raises(ValueError):
        quote_literal("nul\0")


def test_query_result_rows_and_errors() -> None:
    row = message(b"D", struct.pack("!H", 2) + struct.pack("!I", 3) + b"abc" + b"\xff\xff\xff\xff")
    result = QueryResult()
    assert not result.receive(row[:5])
    assert result.receive(row[5:] + message(b"C", b"SELECT 1\0") + READY)
    assert result.rows == [["abc", None]]
    failed = QueryResult()
    failed.receive(codec.error_response(ClientError("42P01", "nope")) + READY)
    assert failed.error is not None and failed.error["C"] == "42P01"
