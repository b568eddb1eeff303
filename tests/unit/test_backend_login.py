"""pggate logging in to its backend (proto/backend.py), fed scripted backend bytes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

import pytest

from pggate.proto import codec, codes, password_math
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
    inner = hashlib.md5(b"secretalice").hexdigest().encode()
    expected = b"md5" + hashlib.md5(inner + b"salt").hexdigest().encode() + b"\0"
    assert reply == message(b"p", expected)


def test_password_math_matches_rfc_7677() -> None:
    # RFC 7677 section 3: user "user", password "pencil", the one SCRAM-SHA-256 example.
    salted = password_math.salted_password(
        b"pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096
    )
    nonce = b"rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth_message = (
        b"n=user,r=rOprNGfwEbeRWgbNEkqO,r=%s,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=%s"
    )
    auth_message %= (nonce, nonce)
    key = password_math.client_key(salted)
    proof = password_math.client_proof(key, auth_message)
    assert base64.b64encode(proof) == b"dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    server_signature = password_math.scram_signature(password_math.server_key(salted), auth_message)
    assert base64.b64encode(server_signature) == b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    # The server's way back (auth-scram.c verify_client_proof): ClientKey from the proof.
    client_signature = password_math.scram_signature(password_math.stored_key(key), auth_message)
    assert password_math.xor_keys(proof, client_signature) == key


def _scram_key_login(tamper: bool) -> tuple[bytes, LoginComplete | LoginFailed | None]:
    """A pass-through login with ClientKey/ServerKey; the server side computed independently."""
    salt, iterations = b"0123456789abcdef", 4096
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    machine = BackendLogin(user="alice", parameters={}, scram_keys=(client_key, server_key))

    sasl = codec.authentication_request(codes.AUTH_SASL, b"SCRAM-SHA-256\0\0")
    initial, _ = machine.receive(sasl)
    mechanism = codes.SCRAM_SHA_256.encode() + b"\0"
    assert initial[5 : 5 + len(mechanism)] == mechanism
    client_first = initial[5 + len(mechanism) + 4 :]
    assert client_first.startswith(b"n,,n=,r=")
    server_first = b"r=%s%s,s=%s,i=%d" % (
        client_first[8:],
        b"servernonce",
        base64.b64encode(salt),
        iterations,
    )
    sent, _ = machine.receive(codec.authentication_request(codes.AUTH_SASL_CONTINUE, server_first))
    without_proof, _, proof = sent[5:].partition(b",p=")
    assert without_proof == b"c=biws,r=" + client_first[8:] + b"servernonce"
    auth_message = b",".join((client_first[3:], server_first, without_proof))
    stored_key = hashlib.sha256(client_key).digest()
    signature = hmac.digest(stored_key, auth_message, "sha256")
    recovered = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
    assert hashlib.sha256(recovered).digest() == stored_key  # the backend accepts the proof
    verifier = hmac.digest(server_key, auth_message, "sha256")
    server_final = b"v=" + base64.b64encode(bytes(32) if tamper else verifier)
    reply, _ = machine.receive(codec.authentication_request(codes.AUTH_SASL_FINAL, server_final))
    assert reply == b""
    return machine.receive(OK + KEY + READY)


def test_scram_key_login_proves_and_verifies() -> None:
    reply, outcome = _scram_key_login(tamper=False)
    assert reply == b"" and isinstance(outcome, LoginComplete)


def test_scram_key_login_refuses_a_wrong_server_signature() -> None:
    with pytest.raises(ClientError) as info:
        _scram_key_login(tamper=True)
    assert info.value.log_detail == "incorrect server signature"


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
