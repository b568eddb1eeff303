"""login/ as playbooks: events in, the exact commands out, whole logins without sockets.

The :class:`~playbook.Playbook` (mitmproxy's, in small) and the gateway they run against are in
``playbook.py``, shared with the fuzzing of ``test_login_fuzz.py``. The pairing tests run the
machine's backend side against a fake backend whose SCRAM server is pggate's own
:class:`~pggate.auth.password.ScramExchange`.
"""

from __future__ import annotations

import ast
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import replace
from ipaddress import ip_address
from typing import Any

import pytest
import scramp
from playbook import (
    BACKEND,
    HBA,
    HOST,
    PORT,
    TLS,
    Playbook,
    connect_backend,
    gss_continue,
    machine,
    placeholder,
    route,
)
from test_backend_login import KEY, OK, PARAMS, READY
from test_layering import SRC, forbidden_imports
from test_negotiate import GSS_REQ, HELLO, SSL_REQ, cancel, startup
from test_password_auth import (
    CERT_HASH,
    MOCK_NONCE,
    NOW,
    PASSWORD,
    auth_request,
    md5_stored,
    sasl_initial,
    scram_secret,
)

from pggate.auth import gss as gss_auth
from pggate.auth import password
from pggate.auth.verifiers import parse_role_secret, role_secret_sql
from pggate.conninfo import backend_target
from pggate.hop.plan import Attempt, Encryption
from pggate.hop.route import Route
from pggate.login import (
    TRANSITIONS,
    Admission,
    BackendConnected,
    BackendData,
    BackendEof,
    BackendGssRefused,
    BackendLinkFailed,
    BackendReused,
    BackendTlsRefused,
    BackendUnreachable,
    Cancel,
    CancelKeyIssued,
    ChannelEstablished,
    ChannelFailed,
    CheckAdmission,
    ClientData,
    ClientEof,
    Close,
    Command,
    ConnectBackend,
    Event,
    FetchSecret,
    GssExchangeFailed,
    GssExchangeReady,
    HostNameChecked,
    Level,
    Log,
    LoginMachine,
    LookUpHostName,
    LookUpRemoteHost,
    LookUpRoles,
    RegisterCancelKey,
    RemoteHostFound,
    RoleLookupFailed,
    RolesFound,
    SecretFound,
    SecretLookupFailed,
    SendToBackend,
    SendToClient,
    SetTimeout,
    Start,
    StartDirectTLS,
    StartGSS,
    StartGssAuth,
    StartRelay,
    StartTLS,
    State,
    TakeSlot,
    Timeout,
    WriteRaw,
)
from pggate.login.machine import Input
from pggate.proto import codec, codes
from pggate.proto.backend import LinkSecurity, LoginComplete
from pggate.proto.errors import ClientError, ProtocolViolation
from pggate.proto.messages import StartupMessage
from pggate.statetable import IllegalMove
from pggate.transport import ChannelError, ChannelInfo, GssError
from pggate.transport.channel import ChannelKind
from pggate.transport.gss_client import ClientCredentials

WHERE = BACKEND.describe()
CONNECT = SetTimeout(BACKEND.connect_timeout)
# The second count, once authenticated (CheckAdmission again): a slot is free, TakeSlot follows.
SLOT_FREE = Admission(False, 0)
ALICE = StartupMessage(codes.PROTOCOL_3_0, (("user", "alice"), ("database", "db")), ())
HELLO_ALICE = startup(user="alice", database="db")
BACKEND_KEY = (4242, b"\x01\x02\x03\x04")
OUR_KEY = (4711, b"kkkk")
LOGIN = LoginComplete(
    PARAMS + READY, *BACKEND_KEY, b"", {"server_version": "18.6", "client_encoding": "UTF8"}
)
SSL_SUFFIX = " SSL enabled (protocol=TLSv1.3, cipher=TLS_AES_256_GCM_SHA384, bits=256)"
GSS = ChannelInfo(kind=ChannelKind.GSS, gss_principal="alice@EXAMPLE.COM")


# --- a gateway -------------------------------------------------------------------------------


def line(hba_text: str, number: int = 1) -> str:
    raw = hba_text.splitlines()[number - 1]
    return f'Connection matched file "{HBA}" line {number}: "{raw}"'


def authenticated(who: str, method: str, number: int = 1) -> Log:
    return Log(Level.LOG, f"connection authenticated: {who} method={method} ({HBA}:{number})")


def fatal(sqlstate: str, message: str, log_detail: str | None = None) -> Close:
    error = codec.error_response(ClientError(sqlstate, message))
    return Close(error, Log(Level.FATAL, message, log_detail))


def accepted(m: LoginMachine) -> Playbook:
    return (
        Playbook(m)
        >> Start()
        << Log(Level.LOG, f"connection received: host={HOST} port={PORT}")
        << SetTimeout(m.config.authentication_timeout)
    )


def started(m: LoginMachine, packet: bytes = HELLO_ALICE) -> Playbook:
    return accepted(m) >> ClientData(packet) << CheckAdmission()


def to_relay(
    pb: Playbook, *, before_ok: bytes = b"", suffix: str = "", scram_keys: Any = None
) -> Playbook:
    """From ConnectBackend on: a trusting backend, the cancel key, the relay."""
    backend_startup = codec.startup_message(codes.PROTOCOL_3_0, ALICE.params)
    greeting = before_ok + OK + PARAMS + codec.backend_key_data(*OUR_KEY) + READY
    return (
        pb
        >> BackendConnected()
        << CONNECT
        << SendToBackend(backend_startup)
        >> BackendData(OK + PARAMS + KEY + READY)
        << SetTimeout(None)
        << RegisterCancelKey(codes.CANCEL_KEY_LENGTH_3_0, *BACKEND_KEY)
        >> CancelKeyIssued(*OUR_KEY)
        << Log(
            Level.LOG,
            f"connection authorized: user=alice database=db application_name={suffix}",
        )
        << StartRelay(greeting, b"", OUR_KEY[0], LOGIN)
    )


def secret_row(stored: str | None, user: str = "alice") -> list[list[str | None]]:
    return [[user, stored, None, "t"]]


def found(stored: str | None) -> SecretFound:
    return SecretFound(secret_row(stored), {}, MOCK_NONCE, NOW)


def p(body: bytes) -> bytes:
    return codec.password_message(body)


# --- trust, and the refusals before authentication ---------------------------------------------


def test_trust_login_over_plain() -> None:
    m = machine()
    pb = (
        started(m)
        >> Admission(stopping=False, connections=0)
        << authenticated('user="alice"', "trust")
        << CheckAdmission()
        >> SLOT_FREE
        << TakeSlot()
        << CONNECT
        << connect_backend(ALICE)
    )
    assert to_relay(pb)
    assert m.state is State.RELAYING
    assert m.startup == ALICE


def test_pipelined_client_bytes_reach_the_backend_after_the_greeting() -> None:
    m = machine(log_connections="")
    query = codec.password_message(b"not read by pggate")  # any message; relayed untouched
    pb = Playbook(m) >> Start() << SetTimeout(60) >> ClientData(HELLO_ALICE + query)
    pb = (
        pb
        << CheckAdmission()
        >> Admission(False, 3)
        << CheckAdmission()
        >> SLOT_FREE
        << TakeSlot()
        << CONNECT
    )
    pb = pb << connect_backend(ALICE) >> ClientData(b"more") >> BackendReused(LOGIN)
    pb = pb << SetTimeout(None) << RegisterCancelKey(4, *BACKEND_KEY) >> CancelKeyIssued(*OUR_KEY)
    greeting = OK + PARAMS + codec.backend_key_data(*OUR_KEY) + READY
    assert pb << StartRelay(greeting, query + b"more", OUR_KEY[0], LOGIN)


def test_protocol_3_2_gets_a_32_byte_key() -> None:
    m = machine(log_connections="")
    packet = startup(codes.PROTOCOL_3_2, user="alice", database="db")
    pb = Playbook(m) >> Start() << SetTimeout(60) >> ClientData(packet) << CheckAdmission()
    pb = pb >> Admission(False, 0) << CheckAdmission() >> SLOT_FREE << TakeSlot() << CONNECT
    assert pb << connect_backend(StartupMessage(codes.PROTOCOL_3_2, ALICE.parameters, ()))
    assert m.feed(BackendReused(LOGIN)) == [SetTimeout(None), RegisterCancelKey(32, *BACKEND_KEY)]


@pytest.mark.parametrize(
    ("admission", "sqlstate", "text"),
    [
        (Admission(True, 0), "57P03", "the database system is shutting down"),
        (Admission(False, 100), "53300", "sorry, too many clients already"),
    ],
)
def test_admission_refusals(admission: Admission, sqlstate: str, text: str) -> None:
    m = machine()
    assert started(m) >> admission << fatal(sqlstate, text)
    assert m.state is State.CLOSED


TOO_MANY = "sorry, too many clients already"


def test_max_connections_is_the_configured_one() -> None:
    m = machine(max_connections="5")
    pb = started(m) >> Admission(False, 4) << authenticated('user="alice"', "trust")
    pb = pb << CheckAdmission() >> Admission(False, 4) << TakeSlot()
    assert pb << CONNECT << connect_backend(ALICE)
    m = machine(max_connections="5")
    assert started(m) >> Admission(False, 5) << fatal("53300", TOO_MANY)


def test_the_slot_is_taken_only_once_authenticated() -> None:
    """max_connections counts authenticated sessions: the first count takes nothing, the
    pg_hba.conf look-ups and the method run without a slot, and the slot is taken (after a
    second count) in the moves the table lists for it."""
    m = machine("host all +staff 0.0.0.0/0 password\n", max_connections="5")
    pb = started(m) >> Admission(False, 4) << LookUpRoles("alice")
    pb = pb >> RolesFound(frozenset({"alice", "staff"})) << FETCH >> found(scram_secret(PASSWORD))
    pb = pb << SendToClient(codec.authentication_request(codes.AUTH_CLEARTEXT_PASSWORD))
    pb = pb >> ClientData(p(PASSWORD.encode() + b"\0"))
    assert pb << authenticated('identity="alice"', "password") << CheckAdmission()
    claiming = m.state
    assert claiming is State.CLAIMING_SLOT
    assert pb >> Admission(False, 4) << TakeSlot() << CONNECT << connect_backend(ALICE)
    assert m.state is State.CONNECTING_BACKEND
    authenticating = (
        State.ADMITTING,
        State.LOOKING_UP_ROLES,
        State.LOOKING_UP_HOSTNAME,
        State.PASSWORD_EXCHANGE,
        State.GSS_EXCHANGE,
    )
    for state in authenticating:
        assert TRANSITIONS[state, Input.AUTHENTICATED] is State.CLAIMING_SLOT
    assert TRANSITIONS[State.CLAIMING_SLOT, Input.ADMISSION] is State.CLAIMING_SLOT
    assert TRANSITIONS[State.CLAIMING_SLOT, Input.SLOT_TAKEN] is State.CONNECTING_BACKEND
    assert TRANSITIONS[State.CLAIMING_SLOT, Input.FAIL] is State.CLOSED
    assert not [
        key
        for key in TRANSITIONS
        if key[1] is Input.SLOT_TAKEN and key[0] is not State.CLAIMING_SLOT
    ]


def test_sessions_that_filled_up_meanwhile_refuse_the_authenticated_client() -> None:
    """Room at startup, none once authenticated: FATAL 53300 instead of AuthenticationOk (and
    instead of SCRAM's server signature), no slot, no backend; the log line names no
    pg_hba.conf line, since authentication did not fail."""
    m = machine("host all all 0.0.0.0/0 scram-sha-256\n", max_connections="5")
    client = scramp.ScramClient(["SCRAM-SHA-256"], "alice", PASSWORD)
    pb = started(m) >> Admission(False, 4) << FETCH >> found(scram_secret(PASSWORD))
    pb = pb << SendToClient(codec.authentication_request(codes.AUTH_SASL, b"SCRAM-SHA-256\0\0"))
    first = client.get_client_first().encode()
    server_first = placeholder()
    pb = pb >> ClientData(p(sasl_initial(b"SCRAM-SHA-256", first))) << SendToClient(server_first)
    assert pb
    client.set_server_first(auth_request(server_first.value)[1].decode())
    pb = pb >> ClientData(p(client.get_client_final().encode()))
    pb = pb << authenticated('identity="alice"', "scram-sha-256") << CheckAdmission()
    assert pb >> Admission(False, 5) << fatal("53300", TOO_MANY)
    assert m.state is State.CLOSED


def test_a_shutdown_begun_during_authentication_does_not_refuse_the_slot() -> None:
    """As in PostgreSQL, a connection admitted before the shutdown completes its login (fast
    shutdown closes it anyway); only the count is judged again."""
    m = machine()
    pb = started(m) >> Admission(False, 0) << authenticated('user="alice"', "trust")
    pb = pb << CheckAdmission() >> Admission(True, 0) << TakeSlot()
    assert pb << CONNECT << connect_backend(ALICE)


def test_client_bytes_wait_while_the_slot_is_claimed() -> None:
    """The shell answers CheckAdmission at once; if bytes or EOF come first they are kept, as
    in every state that waits for an answer."""
    m = machine(log_connections="")
    pb = Playbook(m) >> Start() << SetTimeout(60) >> ClientData(HELLO_ALICE) << CheckAdmission()
    pb = pb >> Admission(False, 0) << CheckAdmission() >> ClientData(b"Q") >> ClientEof()
    assert pb >> SLOT_FREE << TakeSlot() << CONNECT << connect_backend(ALICE)
    assert m.feed(BackendReused(LOGIN)) == [Close()]  # the client left meanwhile


def test_no_pg_hba_entry() -> None:
    m = machine("hostssl all all 0.0.0.0/0 trust\n")
    text = 'no pg_hba.conf entry for host "192.0.2.10", user "alice", database "db", no encryption'
    assert started(m) >> Admission(False, 0) << fatal("28000", text)


def test_reject_line_names_the_line_in_the_log_only() -> None:
    text = "host all alice 0.0.0.0/0 reject\n"
    m = machine(text)
    message = (
        'pg_hba.conf rejects connection for host "192.0.2.10", user "alice", database "db", '
        "no encryption"
    )
    assert started(m) >> Admission(False, 0) << fatal("28000", message, line(text))


def test_unsupported_method_is_refused_with_its_name() -> None:
    text = "host all all 0.0.0.0/0 ident\n"
    m = machine(text)
    message = 'authentication method "ident" is not supported by this pggate build'
    assert started(m) >> Admission(False, 0) << fatal("28000", message, line(text))


def test_roles_and_host_name_are_looked_up_only_when_needed() -> None:
    text = "host all +staff client.example.com trust\n"
    m = machine(text)
    pb = started(m) >> Admission(False, 0) << LookUpRoles("alice")
    pb = pb >> RolesFound(frozenset({"alice", "staff"}))
    pb = pb << LookUpHostName(ip_address(HOST), None) >> HostNameChecked("client.example.com")
    assert (
        pb
        << authenticated('user="alice"', "trust")
        << CheckAdmission()
        >> SLOT_FREE
        << TakeSlot()
        << CONNECT
        << connect_backend(ALICE)
    )


def test_unverified_host_name_matches_no_line() -> None:
    m = machine("host all all client.example.com trust\n")
    pb = started(m) >> Admission(False, 0) << LookUpHostName(ip_address(HOST), None)
    text = 'no pg_hba.conf entry for host "192.0.2.10", user "alice", database "db", no encryption'
    assert pb >> HostNameChecked(None) << fatal("28000", text)


def test_log_hostname_name_is_reused_for_pg_hba() -> None:
    m = machine("host all all client.example.com trust\n", log_hostname="on")
    pb = Playbook(m) >> Start() << LookUpRemoteHost() >> RemoteHostFound("client.example.com")
    pb = pb << Log(Level.LOG, f"connection received: host=client.example.com port={PORT}")
    pb = pb << SetTimeout(60) >> ClientData(HELLO_ALICE) << CheckAdmission()
    pb = pb >> Admission(False, 0)
    assert pb << LookUpHostName(ip_address(HOST), "client.example.com")
    assert m.remote_host == "client.example.com"


def test_role_lookup_failure_is_the_catalog_error() -> None:
    m = machine("host all +staff 0.0.0.0/0 trust\n")
    error = ClientError("08006", "could not connect to the backend server", log_detail="down")
    pb = started(m) >> Admission(False, 0) << LookUpRoles("alice")
    assert pb >> RoleLookupFailed(error) << fatal("08006", error.message, "down")


# --- password methods --------------------------------------------------------------------------

PW_FAILED = 'password authentication failed for user "alice"'


FETCH = FetchSecret("alice", role_secret_sql("alice"))


def test_cleartext_password_right() -> None:
    text = "host all all 0.0.0.0/0 password\n"
    m = machine(text)
    pb = started(m) >> Admission(False, 0) << FETCH
    pb = pb >> found(scram_secret(PASSWORD))
    pb = pb << SendToClient(codec.authentication_request(codes.AUTH_CLEARTEXT_PASSWORD))
    pb = pb >> ClientData(p(PASSWORD.encode() + b"\0"))
    pb = (
        pb
        << authenticated('identity="alice"', "password")
        << CheckAdmission()
        >> SLOT_FREE
        << TakeSlot()
        << CONNECT
        << connect_backend(ALICE)
    )
    assert to_relay(pb)


def test_cleartext_password_wrong_byte_by_byte() -> None:
    text = "host all all 0.0.0.0/0 password\n"
    m = machine(text)
    pb = started(m) >> Admission(False, 0) << FETCH
    pb = pb >> found(scram_secret(PASSWORD))
    assert pb << SendToClient(codec.authentication_request(codes.AUTH_CLEARTEXT_PASSWORD))
    message = p(b"wrong\0")
    for byte in message[:-1]:
        assert m.feed(ClientData(bytes([byte]))) == []
    detail = 'Password does not match for user "alice".\n' + line(text)
    assert m.feed(ClientData(message[-1:])) == [fatal("28P01", PW_FAILED, detail)]


def test_md5_login() -> None:
    text = "host all all 0.0.0.0/0 md5\n"
    m = machine(text)
    request = placeholder()
    pb = started(m) >> Admission(False, 0) << FETCH
    assert pb >> found(md5_stored(PASSWORD, "alice")) << SendToClient(request)
    code, salt = auth_request(request.value)
    assert code == codes.AUTH_MD5_PASSWORD
    inner = hashlib.md5(f"{PASSWORD}alice".encode()).hexdigest().encode()
    answer = b"md5" + hashlib.md5(inner + salt).hexdigest().encode() + b"\0"
    pb = pb >> ClientData(p(answer)) << authenticated('identity="alice"', "md5")
    assert to_relay(
        pb << CheckAdmission() >> SLOT_FREE << TakeSlot() << CONNECT << connect_backend(ALICE)
    )


def test_unknown_role_fails_like_a_wrong_password() -> None:
    text = "host all all 0.0.0.0/0 password\n"
    m = machine(text)
    pb = started(m) >> Admission(False, 0) << FETCH
    pb = pb >> SecretFound([], {}, MOCK_NONCE, NOW)
    pb = pb << SendToClient(codec.authentication_request(codes.AUTH_CLEARTEXT_PASSWORD))
    detail = 'Role "alice" does not exist.\n' + line(text)
    assert pb >> ClientData(p(b"x\0")) << fatal("28P01", PW_FAILED, detail)


def test_eof_during_the_exchange_closes_silently() -> None:
    m = machine("host all all 0.0.0.0/0 password\n")
    pb = started(m) >> Admission(False, 0) << FETCH >> found(None)
    pb = pb << SendToClient(codec.authentication_request(codes.AUTH_CLEARTEXT_PASSWORD))
    assert pb >> ClientData(p(b"x\0")[:3]) >> ClientEof() << Close()


def test_bad_length_word_closes_silently_for_password() -> None:
    m = machine("host all all 0.0.0.0/0 password\n")
    pb = started(m) >> Admission(False, 0) << FETCH >> found(None)
    pb = pb << SendToClient(codec.authentication_request(codes.AUTH_CLEARTEXT_PASSWORD))
    assert (
        pb
        >> ClientData(b"p\x00\x00\x00\x01")
        << Close(None, Log(Level.LOG, "invalid message length"))
    )


def scram_offered(text: str = "host all all 0.0.0.0/0 scram-sha-256\n") -> LoginMachine:
    m = machine(text)
    pb = started(m) >> Admission(False, 0) << FETCH >> found(scram_secret(PASSWORD))
    assert pb << SendToClient(codec.authentication_request(codes.AUTH_SASL, b"SCRAM-SHA-256\0\0"))
    return m


def test_scram_eof_between_messages_closes_silently() -> None:
    """CheckSASLAuth: EOF instead of a message type is STATUS_EOF, PostgreSQL's silent exit."""
    m = scram_offered()
    assert m.feed(ClientEof()) == [Close()]


@pytest.mark.parametrize("sent", [b"p\0\0", p(sasl_initial("SCRAM-SHA-256", b"n,,n=,r=x"))[:-2]])
def test_scram_eof_inside_a_message_is_a_password_failure(sent: bytes) -> None:
    text = "host all all 0.0.0.0/0 scram-sha-256\n"
    m = scram_offered(text)
    assert m.feed(ClientData(sent)) == []
    assert m.feed(ClientEof()) == [fatal("28P01", PW_FAILED, line(text))]


def test_scram_length_word_over_the_sasl_limit_fails_at_once() -> None:
    text = "host all all 0.0.0.0/0 scram-sha-256\n"
    m = scram_offered(text)
    detail = "invalid message length\n" + line(text)
    header = b"p" + struct.pack("!I", 2000) + b"SCRAM-SHA-256\0"
    assert m.feed(ClientData(header)) == [fatal("28P01", PW_FAILED, detail)]


def test_scram_length_word_over_the_sasl_limit_fails_once_read() -> None:
    """What the machine does today with a whole over-long message: PostgreSQL's answer, late."""
    text = "host all all 0.0.0.0/0 scram-sha-256\n"
    m = scram_offered(text)
    detail = "invalid message length\n" + line(text)
    body = sasl_initial("SCRAM-SHA-256", b"n,,n=,r=" + b"x" * 1100)
    assert m.feed(ClientData(p(body))) == [fatal("28P01", PW_FAILED, detail)]


def test_secret_lookup_failure_names_the_line() -> None:
    text = "host all all 0.0.0.0/0 scram-sha-256\n"
    m = machine(text)
    error = ClientError("08006", "could not connect to the backend server", log_detail="down")
    pb = started(m) >> Admission(False, 0) << FETCH
    assert pb >> SecretLookupFailed(error) << fatal("08006", error.message, "down\n" + line(text))


def scram_login(
    m: LoginMachine, *, plus: bool, stored: str | None = None, tls: bool | None = None
) -> tuple[Playbook, scramp.ScramClient, bytes]:
    """A scram-sha-256 exchange driven by scramp up to the server's final message; ``tls``
    (default: ``plus``) says whether the server offers PLUS."""
    mechanism = "SCRAM-SHA-256-PLUS" if plus else "SCRAM-SHA-256"
    binding = ("tls-server-end-point", CERT_HASH) if plus else None
    client = scramp.ScramClient([mechanism], "alice", PASSWORD, channel_binding=binding)
    tls = plus if tls is None else tls
    offer = b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0" if tls else b"SCRAM-SHA-256\0\0"
    challenge = placeholder()
    pb = (
        Playbook(m)
        >> found(stored or scram_secret(PASSWORD))
        << SendToClient(codec.authentication_request(codes.AUTH_SASL, offer))
        >> ClientData(p(sasl_initial(mechanism, client.get_client_first().encode())))
        << SendToClient(challenge)
    )
    assert pb
    code, server_first = auth_request(challenge.value)
    assert code == codes.AUTH_SASL_CONTINUE
    client.set_server_first(server_first.decode())
    pb = pb >> ClientData(p(client.get_client_final().encode()))
    pb = (
        pb
        << authenticated('identity="alice"', "scram-sha-256")
        << CheckAdmission()
        >> SLOT_FREE
        << TakeSlot()
        << CONNECT
    )
    keys = placeholder()
    assert pb << connect_backend(ALICE, keys)
    assert keys.value == m.auth.scram_keys is not None
    final = m.auth.before_ok
    code, server_final = auth_request(final)
    assert code == codes.AUTH_SASL_FINAL
    client.set_server_final(server_final.decode())  # raises unless ServerSignature is right
    return pb, client, final


def test_scram_login_over_plain_passes_the_keys_on() -> None:
    m = machine("host all all 0.0.0.0/0 scram-sha-256\n")
    assert started(m) >> Admission(False, 0) << FETCH
    pb, _, final = scram_login(m, plus=False)
    assert m.auth.scram_keys is not None
    assert to_relay(pb, before_ok=final)


def tls_requested(m: LoginMachine) -> Playbook:
    """An SSLRequest answered S: the TLS handshake is the shell's to run."""
    return accepted(m) >> ClientData(SSL_REQ) << SendToClient(b"S") << StartTLS(b"")


def gss_requested(m: LoginMachine) -> Playbook:
    """A GSSENCRequest answered G: the GSS handshake is the shell's to run."""
    return accepted(m) >> ClientData(GSS_REQ) << SendToClient(b"G") << StartGSS(b"")


def tls_started(m: LoginMachine, packet: bytes = HELLO_ALICE) -> Playbook:
    pb = tls_requested(m) >> ChannelEstablished(TLS)
    return pb >> ClientData(packet) << CheckAdmission()


def test_scram_plus_over_tls_with_the_end_point_hash() -> None:
    m = machine("hostssl all all 0.0.0.0/0 scram-sha-256\n", ssl=True)
    assert tls_started(m) >> Admission(False, 0) << FETCH
    pb, _, final = scram_login(m, plus=True)
    assert to_relay(pb, before_ok=final, suffix=SSL_SUFFIX)


def test_scram_bad_length_word_is_a_password_failure() -> None:
    text = "host all all 0.0.0.0/0 scram-sha-256\n"
    m = machine(text)
    pb = started(m) >> Admission(False, 0) << FETCH >> found(None)
    pb = pb << SendToClient(codec.authentication_request(codes.AUTH_SASL, b"SCRAM-SHA-256\0\0"))
    detail = "invalid message length\n" + line(text)
    assert pb >> ClientData(b"p\x00\x00\x00\x01") << fatal("28P01", PW_FAILED, detail)


# --- certificates and GSS ----------------------------------------------------------------------


def test_cert_method_with_verified_certificate() -> None:
    text = "hostssl all all 0.0.0.0/0 cert\n"
    m = machine(text, ssl=True, ssl_ca_file="root.crt")
    info = replace(
        TLS, peer_cert_verified=True, peer_common_name="alice", peer_subject_dn="CN=alice"
    )
    pb = tls_requested(m)
    pb = pb >> ChannelEstablished(info) >> ClientData(HELLO_ALICE) << CheckAdmission()
    pb = pb >> Admission(False, 0) << authenticated('identity="CN=alice"', "cert")
    assert to_relay(
        pb << CheckAdmission() >> SLOT_FREE << TakeSlot() << CONNECT << connect_backend(ALICE),
        suffix=SSL_SUFFIX,
    )


def test_clientcert_without_a_certificate() -> None:
    text = "hostssl all all 0.0.0.0/0 trust clientcert=verify-ca\n"
    m = machine(text, ssl=True, ssl_ca_file="root.crt")
    message = "connection requires a valid client certificate"
    pb = tls_started(m) >> Admission(False, 0)
    assert pb << fatal("28000", message, line(text))


def test_clientcert_verify_full_name_mismatch_uses_the_method_text() -> None:
    text = "hostssl all all 0.0.0.0/0 trust clientcert=verify-full\n"
    m = machine(text, ssl=True, ssl_ca_file="root.crt")
    info = ChannelInfo(
        kind=ChannelKind.SSL,
        alpn="postgresql",
        peer_cert_verified=True,
        peer_common_name="bob",
        peer_subject_dn="CN=bob",
    )
    pb = tls_requested(m)
    pb = pb >> ChannelEstablished(info) >> ClientData(HELLO_ALICE) << CheckAdmission()
    detail = (
        'certificate validation (clientcert=verify-full) failed for user "alice": CN mismatch\n'
        + line(text)
    )
    pb = pb >> Admission(False, 0) << authenticated('user="alice"', "trust")
    assert pb << fatal("28000", '"trust" authentication failed for user "alice"', detail)


class FakeGssExchange:
    """A GSS acceptor (the machine takes it in GssExchangeReady) that answers the client's
    tokens with ``outcomes``, in order: a Send per further round trip, then the last word."""

    def __init__(self, *outcomes: gss_auth.Outcome) -> None:
        self.outcomes = list(outcomes)
        self.tokens: list[bytes] = []

    def start(self) -> bytes:
        return codec.authentication_request(codes.AUTH_GSS)

    def receive(
        self, message_type: bytes, body: bytes | bytearray | memoryview
    ) -> gss_auth.Outcome:
        assert message_type == codes.MSG_PASSWORD
        assert self.outcomes, "a token after the exchange ended"
        self.tokens.append(bytes(body))
        return self.outcomes.pop(0)


def test_gss_exchange_through_an_injected_exchange() -> None:
    text = "host all all 0.0.0.0/0 gss include_realm=0\n"
    m = machine(text)
    last = codec.authentication_request(codes.AUTH_GSS_CONTINUE, b"last")
    exchange = FakeGssExchange(gss_auth.Success("alice@EXAMPLE.COM", False, last))
    pb = started(m) >> Admission(False, 0) << StartGssAuth("alice", False)
    pb = (
        pb
        >> GssExchangeReady(exchange)
        << SendToClient(codec.authentication_request(codes.AUTH_GSS))
    )
    pb = pb >> ClientData(p(b"token")) << authenticated('identity="alice@EXAMPLE.COM"', "gss")
    suffix = (
        " GSS (authenticated=yes, encrypted=no, delegated_credentials=no, "
        "principal=alice@EXAMPLE.COM)"
    )
    assert to_relay(
        pb << CheckAdmission() >> SLOT_FREE << TakeSlot() << CONNECT << connect_backend(ALICE),
        before_ok=last,
        suffix=suffix,
    )
    assert exchange.tokens == [b"token"]


def test_gss_exchange_failure_sends_its_token_first() -> None:
    text = "host all all 0.0.0.0/0 gss\n"
    m = machine(text)
    error = ClientError("28000", 'GSSAPI authentication failed for user "alice"', log_detail="no")
    token = codec.authentication_request(codes.AUTH_GSS_CONTINUE, b"err")
    exchange = FakeGssExchange(gss_auth.Failure(error, token))
    pb = started(m) >> Admission(False, 0) << StartGssAuth("alice", False)
    pb = (
        pb
        >> GssExchangeReady(exchange)
        << SendToClient(codec.authentication_request(codes.AUTH_GSS))
    )
    assert (
        pb
        >> ClientData(p(b"t"))
        << SendToClient(token)
        << fatal("28000", error.message, "no\n" + line(text))
    )


def test_gss_keytab_without_keys_fails_the_method_before_asking() -> None:
    text = "host all all 0.0.0.0/0 gss\n"
    m = machine(text)
    pb = started(m) >> Admission(False, 0) << StartGssAuth("alice", False)
    error = GssError("could not accept GSSAPI security context", detail="No key table entry")
    detail = "accepting GSS security context failed: No key table entry\n" + line(text)
    message = 'GSSAPI authentication failed for user "alice"'
    assert pb >> GssExchangeFailed(error) << fatal("28000", message, detail)


def test_gss_encrypted_connection_needs_no_exchange() -> None:
    text = "hostgssenc all all 0.0.0.0/0 gss include_realm=0\n"
    m = machine(text, gss=True)
    pb = gss_requested(m)
    pb = pb >> ChannelEstablished(GSS) >> ClientData(HELLO_ALICE) << CheckAdmission()
    pb = pb >> Admission(False, 0)
    pb = (
        pb
        << authenticated('identity="alice@EXAMPLE.COM"', "gss")
        << CheckAdmission()
        >> SLOT_FREE
        << TakeSlot()
        << CONNECT
        << connect_backend(ALICE)
    )
    suffix = (
        " GSS (authenticated=yes, encrypted=yes, delegated_credentials=no, "
        "principal=alice@EXAMPLE.COM)"
    )
    assert to_relay(pb, suffix=suffix)


def test_bytes_behind_a_gss_request_are_refused_encrypted() -> None:
    m = machine(gss=True)
    pb = accepted(m) >> ClientData(GSS_REQ + b"xyz") << SendToClient(b"G") << StartGSS(b"xyz")
    message = "received unencrypted data after GSSAPI encryption request"
    error = codec.error_response(ProtocolViolation(message, detail=_MITM))
    assert pb >> ChannelEstablished(GSS) << Close(error, Log(Level.FATAL, message))


_MITM = (
    "This could be either a client-software bug or evidence of an attempted man-in-the-middle "
    "attack."
)


# --- channels ----------------------------------------------------------------------------------


def test_direct_tls_without_alpn_is_closed() -> None:
    m = machine(ssl=True, trace_connection_negotiation="on")
    pb = accepted(m) >> ClientData(HELLO) << StartDirectTLS(HELLO)
    text = "received direct SSL connection request without ALPN protocol negotiation extension"
    pb = pb >> ChannelEstablished(ChannelInfo(kind=ChannelKind.SSL))
    assert (
        pb << Log(Level.LOG, "direct SSL connection rejected") << Close(None, Log(Level.LOG, text))
    )


def test_direct_tls_with_alpn_continues_inside_tls() -> None:
    m = machine(ssl=True, trace_connection_negotiation="on")
    pb = accepted(m) >> ClientData(HELLO) << StartDirectTLS(HELLO) >> ChannelEstablished(TLS)
    assert (
        pb
        << Log(Level.LOG, "direct SSL connection accepted")
        >> ClientData(HELLO_ALICE)
        << CheckAdmission()
    )


def test_tls_handshake_failure_writes_the_alert_and_hints_the_versions() -> None:
    m = machine(ssl=True)
    pb = tls_requested(m)
    error = ChannelError(
        "could not accept SSL connection: unsupported protocol",
        output=b"\x15alert",
        protocol_hint=True,
    )
    hint = (
        "This may indicate that the client does not support any SSL protocol version between "
        "TLSv1.2 and TLSv1.3."
    )
    line_ = Log(Level.LOG, str(error), None, hint)
    assert pb >> ChannelFailed(error) << WriteRaw(b"\x15alert") << Close(None, line_)


def test_eof_in_the_tls_handshake() -> None:
    m = machine(ssl=True)
    pb = tls_requested(m)
    eof = Log(Level.LOG, "could not accept SSL connection: EOF detected")
    assert pb >> ClientEof() << Close(None, eof)


# --- the backend -------------------------------------------------------------------------------


def trusted(m: LoginMachine) -> Playbook:
    pb = started(m) >> Admission(False, 0) << authenticated('user="alice"', "trust")
    return pb << CheckAdmission() >> SLOT_FREE << TakeSlot() << CONNECT << connect_backend(ALICE)


def test_backend_refusal_is_relayed_verbatim_after_authentication_ok() -> None:
    m = machine()
    refusal = codec.error_response(ClientError("3D000", 'database "db" does not exist'))
    pb = trusted(m) >> BackendConnected() << CONNECT
    pb = pb << SendToBackend(codec.startup_message(codes.PROTOCOL_3_0, ALICE.params))
    message = 'database "db" does not exist'
    assert pb >> BackendData(OK + refusal) << Close(OK + refusal, Log(Level.FATAL, message))


FAILED_AT = f"connection to {WHERE} failed"


@pytest.mark.parametrize(
    ("events", "detail"),
    [
        (
            [BackendUnreachable("[Errno 2] No such file or directory")],
            f"{FAILED_AT}: [Errno 2] No such file or directory",
        ),
        ([Timeout()], f"{FAILED_AT}: timeout expired"),
        (
            [BackendConnected(), BackendEof()],
            f"{FAILED_AT}: server closed the connection unexpectedly",
        ),
        ([BackendConnected(), Timeout()], f"{FAILED_AT}: timeout expired"),
    ],
)
def test_backend_unreachable(events: Sequence[Event], detail: str) -> None:
    """The backend's failures reach the client as 08006; libpq's words go to the log."""
    m = machine()
    assert trusted(m)
    for event in events[:-1]:
        m.feed(event)
    message = "could not connect to the backend server"
    assert m.feed(events[-1]) == [fatal("08006", message, detail)]


def test_embedded_cluster_being_restarted_answers_as_postgresql_starting_up() -> None:
    """While pggate restarts its embedded cluster, clients get PostgreSQL's own start-up
    refusal (57P03, which clients and poolers retry), not 08006; the reason goes to the log."""
    m = machine()
    assert trusted(m)
    down = BackendUnreachable("[Errno 111] Connection refused", starting=True)
    detail = f"{FAILED_AT}: [Errno 111] Connection refused"
    assert m.feed(down) == [fatal("57P03", "the database system is starting up", detail)]


def test_client_gone_during_backend_login_closes_without_a_word() -> None:
    m = machine()
    assert trusted(m) >> ClientEof() >> BackendReused(LOGIN) << Close()


def test_timeout_before_the_backend_is_silent() -> None:
    m = machine()
    assert started(m) >> Timeout() << Close()


# --- cancel and bad startup packets ------------------------------------------------------------


def test_cancel_request_is_forwarded_then_closed() -> None:
    m = machine()
    assert (
        accepted(m) >> ClientData(cancel(4242, b"\1\2\3\4")) << Cancel(4242, b"\1\2\3\4") << Close()
    )


def test_startup_without_user() -> None:
    m = machine()
    text = "no PostgreSQL user name specified in startup packet"
    error = codec.error_response(ClientError("28000", text))
    assert accepted(m) >> ClientData(startup(database="db")) << Close(error, Log(Level.FATAL, text))


def test_incomplete_startup_packet() -> None:
    m = machine()
    pb = accepted(m) >> ClientData(HELLO_ALICE[:6])
    assert pb >> ClientEof() << Close(None, Log(Level.LOG, "incomplete startup packet"))


def test_eof_before_anything_is_silent() -> None:
    m = machine()
    assert accepted(m) >> ClientEof() << Close()


# --- the table ---------------------------------------------------------------------------------


def test_an_event_the_table_does_not_allow_names_state_and_event() -> None:
    m = machine()
    assert accepted(m)
    with pytest.raises(IllegalMove, match="'backend data' is not allowed in state 'negotiating'"):
        m.feed(BackendData(b""))
    closed = machine()
    assert accepted(closed) >> ClientEof() << Close()
    with pytest.raises(IllegalMove):
        closed.feed(ClientData(b"x"))


def test_every_state_but_the_ends_can_fail() -> None:
    targets = {after for after in TRANSITIONS.values()}
    assert targets == set(State) - {State.NEW}


def test_the_login_package_is_sans_io() -> None:
    modules = sorted((SRC / "login").rglob("*.py"))
    assert modules
    for module in modules:
        label = str(module.relative_to(SRC))
        assert forbidden_imports(module.read_text(encoding="utf-8"), label) == []
        # Nor python-gssapi: it is optional, and GSS objects arrive in events.
        tree = ast.parse(module.read_text(encoding="utf-8"))
        imported = {
            n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
        } | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(name.split(".")[0] == "gssapi" for name in imported), label


# --- pairing: the machine's backend side against a fake backend ------------------------------


class FakeBackend:
    """A backend that asks for SCRAM and checks it with pggate's own SCRAM server."""

    def __init__(self, stored: str) -> None:
        self.scram = password.ScramExchange(
            "alice",
            parse_role_secret(secret_row(stored)),
            now=NOW,
            tls_end_point_hash=None,
            mock_nonce=MOCK_NONCE,
        )
        self.buffer = bytearray()
        self.started = False
        self.refusal: bytes | None = None

    def receive(self, data: bytes) -> bytes:
        self.buffer += data
        if not self.started:
            length = int.from_bytes(self.buffer[:4], "big")
            del self.buffer[:length]
            self.started = True
            return self.scram.start()
        parsed, consumed = codec.read_message(self.buffer, max_length=1 << 16)
        assert parsed is not None
        del self.buffer[:consumed]
        outcome = self.scram.receive(parsed[0], parsed[1])
        if isinstance(outcome, password.Send):
            return outcome.data
        if isinstance(outcome, password.Failure):
            self.refusal = codec.error_response(outcome.error)
            return self.refusal
        return outcome.final + OK + PARAMS + KEY + READY


def pair(m: LoginMachine, backend: FakeBackend) -> list[Command]:
    """Run the backend login: every SendToBackend to the fake, its replies back."""
    out = m.feed(BackendConnected())
    while True:
        sends = [c for c in out if isinstance(c, SendToBackend)]
        if not sends:
            return out
        reply = b"".join(backend.receive(c.data) for c in sends)
        out = m.feed(BackendData(reply))


def test_pairing_scram_pass_through_with_the_clients_keys() -> None:
    stored = scram_secret(PASSWORD)
    m = machine("host all all 0.0.0.0/0 scram-sha-256\n")
    assert started(m) >> Admission(False, 0) << FETCH
    scram_login(m, plus=False, stored=stored)
    out = pair(m, FakeBackend(stored))
    assert out == [SetTimeout(None), RegisterCancelKey(4, *BACKEND_KEY)]


def test_pairing_a_backend_with_another_secret_refuses() -> None:
    m = machine("host all all 0.0.0.0/0 scram-sha-256\n")
    assert started(m) >> Admission(False, 0) << FETCH
    scram_login(m, plus=False)
    backend = FakeBackend(scram_secret("another password"))
    out = pair(m, backend)
    assert backend.refusal is not None
    final = m.auth.before_ok
    assert out == [Close(final + OK + backend.refusal, Log(Level.FATAL, PW_FAILED))]


# --- GSS over several round trips ---------------------------------------------------------------

GSS_SUFFIX = (
    " GSS (authenticated=yes, encrypted=no, delegated_credentials={}, principal=alice@EXAMPLE.COM)"
)


def gss_ready(m: LoginMachine, exchange: FakeGssExchange, *, delegation: bool = False) -> Playbook:
    pb = started(m) >> Admission(False, 0) << StartGssAuth("alice", delegation)
    return pb >> GssExchangeReady(exchange) << SendToClient(codec.authentication_request(7))


def test_gss_exchange_over_several_tokens() -> None:
    """pg_GSS_recvauth's loop: each GSSResponse answered with AuthenticationGSSContinue until
    the context is complete; the acceptor's last token goes just before AuthenticationOk."""
    m = machine("host all all 0.0.0.0/0 gss include_realm=0\n", gss_accept_delegation="on")
    exchange = FakeGssExchange(
        gss_auth.Send(gss_continue(b"server 1")),
        gss_auth.Send(gss_continue(b"server 2")),
        gss_auth.Success("alice@EXAMPLE.COM", True, gss_continue(b"server 3")),
    )
    pb = gss_ready(m, exchange, delegation=True)
    first = p(b"client 1")
    pb = (
        pb
        >> ClientData(first[:3])
        >> ClientData(first[3:])
        << SendToClient(gss_continue(b"server 1"))
    )
    # The second and third tokens in one read: both answered in one batch.
    pb = (
        pb >> ClientData(p(b"client 2") + p(b"client 3")) << SendToClient(gss_continue(b"server 2"))
    )
    pb = (
        pb
        << authenticated('identity="alice@EXAMPLE.COM"', "gss")
        << CheckAdmission()
        >> SLOT_FREE
        << TakeSlot()
        << CONNECT
    )
    pb = pb << connect_backend(ALICE)
    assert to_relay(pb, before_ok=gss_continue(b"server 3"), suffix=GSS_SUFFIX.format("yes"))
    assert exchange.tokens == [b"client 1", b"client 2", b"client 3"]


def test_gss_token_sent_behind_the_startup_packet_is_read_at_once() -> None:
    m = machine("host all all 0.0.0.0/0 gss include_realm=0\n")
    exchange = FakeGssExchange(
        gss_auth.Send(gss_continue(b"server 1")), gss_auth.Success("alice@EXAMPLE.COM", False)
    )
    pb = accepted(m) >> ClientData(HELLO_ALICE + p(b"early")) << CheckAdmission()
    pb = pb >> Admission(False, 0) << StartGssAuth("alice", False)
    pb = pb >> GssExchangeReady(exchange) << SendToClient(codec.authentication_request(7))
    pb = pb << SendToClient(gss_continue(b"server 1"))
    pb = pb >> ClientData(p(b"late")) << authenticated('identity="alice@EXAMPLE.COM"', "gss")
    assert to_relay(
        pb << CheckAdmission() >> SLOT_FREE << TakeSlot() << CONNECT << connect_backend(ALICE),
        suffix=GSS_SUFFIX.format("no"),
    )
    assert exchange.tokens == [b"early", b"late"]


def test_gss_exchange_failing_at_the_second_token() -> None:
    text = "host all all 0.0.0.0/0 gss\n"
    m = machine(text)
    error = ClientError(
        "28000", 'GSSAPI authentication failed for user "alice"', log_detail="defective token"
    )
    exchange = FakeGssExchange(
        gss_auth.Send(gss_continue(b"server 1")),
        gss_auth.Failure(error, gss_continue(b"error token")),
    )
    pb = (
        gss_ready(m, exchange)
        >> ClientData(p(b"client 1"))
        << SendToClient(gss_continue(b"server 1"))
    )
    pb = pb >> ClientData(p(b"client 2")) << SendToClient(gss_continue(b"error token"))
    assert pb << fatal("28000", error.message, "defective token\n" + line(text))


GSS_FAILED = 'GSSAPI authentication failed for user "alice"'
GSS_FATAL = codec.error_response(ClientError("28000", GSS_FAILED))


@pytest.mark.parametrize("length", [1, 70_000])
def test_gss_bad_length_word_fails_the_method(length: int) -> None:
    m = machine("host all all 0.0.0.0/0 gss\n")
    assert gss_ready(m, FakeGssExchange(gss_auth.Send(gss_continue(b"server 1"))))
    out = m.feed(ClientData(b"p" + struct.pack("!I", length)))
    assert [c.error for c in out if isinstance(c, Close)] == [GSS_FATAL], out


@pytest.mark.parametrize("sent", [b"", p(b"client 2")[:3]], ids=["between", "inside"])
def test_gss_eof_during_the_exchange_fails_the_method(sent: bytes) -> None:
    m = machine("host all all 0.0.0.0/0 gss\n")
    exchange = FakeGssExchange(gss_auth.Send(gss_continue(b"server 1")))
    pb = gss_ready(m, exchange) >> ClientData(p(b"client 1"))
    assert pb << SendToClient(gss_continue(b"server 1"))
    if sent:
        assert m.feed(ClientData(sent)) == []
    out = m.feed(ClientEof())
    assert [c.error for c in out if isinstance(c, Close)] == [GSS_FATAL], out


def test_gss_principal_of_another_realm_is_refused_after_the_exchange() -> None:
    text = "host all all 0.0.0.0/0 gss krb_realm=EXAMPLE.COM include_realm=0\n"
    m = machine(text)
    exchange = FakeGssExchange(
        gss_auth.Send(gss_continue(b"server 1")), gss_auth.Success("alice@EVIL.ORG", False)
    )
    pb = (
        gss_ready(m, exchange)
        >> ClientData(p(b"client 1"))
        << SendToClient(gss_continue(b"server 1"))
    )
    pb = pb >> ClientData(p(b"client 2")) << authenticated('identity="alice@EVIL.ORG"', "gss")
    detail = "GSSAPI realm (EVIL.ORG) and configured realm (EXAMPLE.COM) don't match\n" + line(text)
    assert pb << fatal("28000", 'GSSAPI authentication failed for user "alice"', detail)


def test_backend_refusal_after_a_gss_exchange_sends_the_last_token_first() -> None:
    m = machine("host all all 0.0.0.0/0 gss include_realm=0\n")
    last = gss_continue(b"last")
    exchange = FakeGssExchange(gss_auth.Success("alice@EXAMPLE.COM", False, last))
    pb = gss_ready(m, exchange) >> ClientData(p(b"client 1"))
    pb = (
        pb
        << authenticated('identity="alice@EXAMPLE.COM"', "gss")
        << CheckAdmission()
        >> SLOT_FREE
        << TakeSlot()
        << CONNECT
    )
    pb = pb << connect_backend(ALICE) >> BackendConnected() << CONNECT
    pb = pb << SendToBackend(codec.startup_message(codes.PROTOCOL_3_0, ALICE.params))
    message = 'role "alice" is not permitted to log in'
    refusal = codec.error_response(ClientError("28000", message))
    assert pb >> BackendData(OK + refusal) << Close(last + OK + refusal, Log(Level.FATAL, message))


# --- NegotiateProtocolVersion (PostgreSQL 18's backend_startup.c) -------------------------------


def negotiate_protocol_version(version: int, *options: str) -> bytes:
    """``v`` as SendNegotiateProtocolVersion builds it, by hand: Int32 length, Int32
    FrontendProtocol (= Min(requested, 3.2)), Int32 count, the option names as strings."""
    names = b"".join(name.encode() + b"\0" for name in options)
    return b"v" + struct.pack("!III", 12 + len(names), version, len(options)) + names


def version(major: int, minor: int) -> int:
    return (major << 16) | minor


@pytest.mark.parametrize(
    ("requested", "options", "negotiate", "key_length"),
    [
        # A newer minor: told the newest there is (PG≤17 said 3.0), then spoken to in 3.2.
        ((3, 99), (), negotiate_protocol_version(version(3, 2)), 32),
        ((3, 3), (), negotiate_protocol_version(version(3, 2)), 32),
        # _pq_. options: all unknown in PG18, named back in packet order.
        (
            (3, 0),
            ("_pq_.b", "_pq_.a"),
            negotiate_protocol_version(version(3, 0), "_pq_.b", "_pq_.a"),
            4,
        ),
        ((3, 1), ("_pq_.x",), negotiate_protocol_version(version(3, 1), "_pq_.x"), 4),
        ((3, 2), ("_pq_.x",), negotiate_protocol_version(version(3, 2), "_pq_.x"), 32),
        ((3, 99), ("_pq_.x",), negotiate_protocol_version(version(3, 2), "_pq_.x"), 32),
        # 3.0, 3.1 and 3.2 without options: nothing to negotiate (3.1 is spoken as 3.0).
        ((3, 0), (), None, 4),
        ((3, 1), (), None, 4),
        ((3, 2), (), None, 32),
    ],
)
def test_negotiate_protocol_version_then_a_whole_login(
    requested: tuple[int, int], options: tuple[str, ...], negotiate: bytes | None, key_length: int
) -> None:
    m = machine(log_connections="")
    params = {"user": "alice", "database": "db"}
    packet = startup(version(*requested), **params, **{name: "on" for name in options})
    pb = Playbook(m) >> Start() << SetTimeout(60) >> ClientData(packet)
    if negotiate is not None:
        pb = pb << SendToClient(negotiate)
    pb = (
        pb
        << CheckAdmission()
        >> Admission(False, 0)
        << CheckAdmission()
        >> SLOT_FREE
        << TakeSlot()
        << CONNECT
    )
    message = StartupMessage(version(*requested), tuple(params.items()), options)
    pb = pb << connect_backend(message) >> BackendConnected() << CONNECT
    # The backend is always asked for 3.0, without the client's _pq_. options.
    pb = pb << SendToBackend(codec.startup_message(codes.PROTOCOL_3_0, params))
    pb = pb >> BackendData(OK + PARAMS + KEY + READY) << SetTimeout(None)
    pb = pb << RegisterCancelKey(key_length, *BACKEND_KEY)
    key = bytes(range(key_length))
    greeting = OK + PARAMS + codec.backend_key_data(OUR_KEY[0], key) + READY
    assert pb >> CancelKeyIssued(OUR_KEY[0], key) << StartRelay(greeting, b"", OUR_KEY[0], LOGIN)
    assert m.protocol == (codes.PROTOCOL_3_2 if key_length == 32 else codes.PROTOCOL_3_0)


def test_negotiate_protocol_version_goes_before_the_missing_user_error() -> None:
    """ProcessStartupPacket queues ``v`` before it checks the user name; the FATAL flushes both."""
    m = machine()
    text = "no PostgreSQL user name specified in startup packet"
    packet = startup(version(3, 99), database="db", **{"_pq_.x": "1"})
    sent = negotiate_protocol_version(version(3, 2), "_pq_.x") + codec.error_response(
        ClientError("28000", text)
    )
    assert accepted(m) >> ClientData(packet) << Close(sent, Log(Level.FATAL, text))


@pytest.mark.parametrize(
    ("requested", "sent"),
    [
        # Major 4: no NegotiateProtocolVersion, a v3 ErrorResponse (FrontendProtocol = 3.2).
        (
            (4, 0),
            codec.error_response(
                ClientError(
                    "0A000", "unsupported frontend protocol 4.0: server supports 3.0 to 3.2"
                )
            ),
        ),
        # Major 2: the pre-3.0 error format, no length word.
        ((2, 0), b"EFATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.2\n\0"),
    ],
)
def test_an_unsupported_major_version_is_not_negotiated(
    requested: tuple[int, int], sent: bytes
) -> None:
    m = machine()
    text = f"unsupported frontend protocol {requested[0]}.0: server supports 3.0 to 3.2"
    packet = startup(version(*requested), user="alice", **{"_pq_.x": "1"})
    assert accepted(m) >> ClientData(packet) << Close(sent, Log(Level.FATAL, text))


def test_negotiate_protocol_version_inside_tls() -> None:
    m = machine("hostssl all all 0.0.0.0/0 trust\n", ssl=True, log_connections="")
    packet = startup(version(3, 99), user="alice", database="db")
    pb = Playbook(m) >> Start() << SetTimeout(60) >> ClientData(SSL_REQ) << SendToClient(b"S")
    pb = pb << StartTLS(b"") >> ChannelEstablished(TLS) >> ClientData(packet)
    assert pb << SendToClient(negotiate_protocol_version(version(3, 2))) << CheckAdmission()


# --- the rest of the logins: every method over the channels it is used on ---------------------


def test_trust_login_over_direct_tls() -> None:
    m = machine("hostssl all all 0.0.0.0/0 trust\n", ssl=True)
    pb = accepted(m) >> ClientData(HELLO) << StartDirectTLS(HELLO) >> ChannelEstablished(TLS)
    pb = pb >> ClientData(HELLO_ALICE) << CheckAdmission() >> Admission(False, 0)
    pb = (
        pb
        << authenticated('user="alice"', "trust")
        << CheckAdmission()
        >> SLOT_FREE
        << TakeSlot()
        << CONNECT
        << connect_backend(ALICE)
    )
    assert to_relay(pb, suffix=SSL_SUFFIX)


def test_trust_login_over_gss_encryption() -> None:
    m = machine("hostgssenc all all 0.0.0.0/0 trust\n", gss=True)
    pb = gss_requested(m)
    pb = pb >> ChannelEstablished(GSS) >> ClientData(HELLO_ALICE) << CheckAdmission()
    pb = pb >> Admission(False, 0) << authenticated('user="alice"', "trust")
    suffix = " GSS (authenticated=no, encrypted=yes, delegated_credentials=no)"
    assert to_relay(
        pb << CheckAdmission() >> SLOT_FREE << TakeSlot() << CONNECT << connect_backend(ALICE),
        suffix=suffix,
    )


def test_md5_login_over_tls() -> None:
    m = machine("hostssl all all 0.0.0.0/0 md5\n", ssl=True)
    request = placeholder()
    pb = tls_started(m) >> Admission(False, 0) << FETCH
    assert pb >> found(md5_stored(PASSWORD, "alice")) << SendToClient(request)
    _, salt = auth_request(request.value)
    inner = hashlib.md5(f"{PASSWORD}alice".encode()).hexdigest().encode()
    answer = b"md5" + hashlib.md5(inner + salt).hexdigest().encode() + b"\0"
    pb = pb >> ClientData(p(answer)) << authenticated('identity="alice"', "md5")
    assert to_relay(
        pb << CheckAdmission() >> SLOT_FREE << TakeSlot() << CONNECT << connect_backend(ALICE),
        suffix=SSL_SUFFIX,
    )


def test_scram_without_plus_over_tls() -> None:
    """A client that does not bind the channel (libpq channel_binding=disable) says ``n``."""
    m = machine("hostssl all all 0.0.0.0/0 scram-sha-256\n", ssl=True)
    assert tls_started(m) >> Admission(False, 0) << FETCH
    pb, _, final = scram_login(m, plus=False, tls=True)
    assert to_relay(pb, before_ok=final, suffix=SSL_SUFFIX)


def test_scram_over_gss_encryption_offers_no_plus() -> None:
    m = machine("hostgssenc all all 0.0.0.0/0 scram-sha-256\n", gss=True)
    pb = gss_requested(m)
    pb = pb >> ChannelEstablished(GSS) >> ClientData(HELLO_ALICE) << CheckAdmission()
    assert pb >> Admission(False, 0) << FETCH
    pb, _, final = scram_login(m, plus=False)
    suffix = " GSS (authenticated=no, encrypted=yes, delegated_credentials=no)"
    assert to_relay(pb, before_ok=final, suffix=suffix)


def test_scram_client_thinking_tls_has_no_binding_is_refused() -> None:
    """The ``y`` flag over TLS: a downgrade (auth-scram.c read_client_first_message)."""
    text = "hostssl all all 0.0.0.0/0 scram-sha-256\n"
    m = machine(text, ssl=True)
    pb = tls_started(m) >> Admission(False, 0) << FETCH >> found(None)
    offer = b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"
    pb = pb << SendToClient(codec.authentication_request(codes.AUTH_SASL, offer))
    message = "SCRAM channel binding negotiation error"
    detail = (
        "The client supports SCRAM channel binding but thinks the server does not.  However, "
        "this server does support channel binding."
    )
    error = codec.error_response(ClientError("28000", message, detail=detail))
    first = sasl_initial("SCRAM-SHA-256", b"y,,n=,r=abcdef")
    assert pb >> ClientData(p(first)) << Close(error, Log(Level.FATAL, message, line(text)))


def test_peer_lines_never_match_a_tcp_connection() -> None:
    """``peer`` is for local sockets only (a ``host`` line with it does not load); pggate
    listens on TCP, so a ``local`` line is passed over."""
    text = "local all all peer\nhost all all 0.0.0.0/0 reject\n"
    m = machine(text)
    message = (
        'pg_hba.conf rejects connection for host "192.0.2.10", user "alice", database "db", '
        "no encryption"
    )
    pb = started(m) >> Admission(False, 0)
    assert pb << fatal("28000", message, line(text, 2))


@pytest.mark.parametrize("method", ["pam", "radius radiusservers=a radiussecrets=b"])
def test_other_unsupported_methods_are_refused_with_their_names(method: str) -> None:
    text = f"host all all 0.0.0.0/0 {method}\n"
    m = machine(text)
    name = method.split()[0]
    message = f'authentication method "{name}" is not supported by this pggate build'
    assert started(m) >> Admission(False, 0) << fatal("28000", message, line(text))


def test_no_pg_hba_entry_names_the_encryption() -> None:
    m = machine("hostnossl all all 0.0.0.0/0 trust\n", ssl=True)
    text = 'no pg_hba.conf entry for host "192.0.2.10", user "alice", database "db", SSL encryption'
    assert tls_started(m) >> Admission(False, 0) << fatal("28000", text)
    m = machine("hostnogssenc all all 0.0.0.0/0 trust\n", gss=True)
    pb = gss_requested(m)
    pb = pb >> ChannelEstablished(GSS) >> ClientData(HELLO_ALICE) << CheckAdmission()
    text = 'no pg_hba.conf entry for host "192.0.2.10", user "alice", database "db", GSS encryption'
    assert pb >> Admission(False, 0) << fatal("28000", text)


KEY_32 = bytes(range(32))


@pytest.mark.parametrize("layer", ["tls", "gss", "after N"])
def test_cancel_request_in_any_layer_is_forwarded_then_closed(layer: str) -> None:
    m = machine(ssl=layer == "tls", gss=layer == "gss")
    if layer == "tls":
        pb = tls_requested(m) >> ChannelEstablished(TLS)
    elif layer == "gss":
        pb = gss_requested(m) >> ChannelEstablished(GSS)
    else:
        pb = accepted(m) >> ClientData(SSL_REQ) << SendToClient(b"N")
    # A 3.2 client's 32-byte key; no pg_hba.conf, no reply, the connection just closes.
    assert pb >> ClientData(cancel(4242, KEY_32)) << Cancel(4242, KEY_32) << Close()


# --- the backend walk: libpq's hosts and encryption methods (hop/plan.py) ----------------------

HOSTS = route("host=db1,db2 port=5432 user=pggate sslmode=prefer")
DB1, DB2 = HOSTS.addresses
BACKEND_STARTUP = codec.startup_message(codes.PROTOCOL_3_0, ALICE.params)
TLS_FIRST, PLAINTEXT = Encryption.TLS, Encryption.PLAIN


def attempt(host: int, encryption: Encryption, *, same_connection: bool = False) -> ConnectBackend:
    """The machine's ConnectBackend for host ``host`` of HOSTS."""
    address = HOSTS.addresses[host]
    return ConnectBackend(
        ALICE, address, Attempt(host, encryption, same_connection=same_connection)
    )


def walking(m: LoginMachine) -> Playbook:
    """Up to the first attempt: db1, TLS first (sslmode=prefer)."""
    pb = Playbook(m) >> Start() << SetTimeout(60) >> ClientData(HELLO_ALICE) << CheckAdmission()
    pb = (
        pb
        >> Admission(False, 0)
        << CheckAdmission()
        >> SLOT_FREE
        << TakeSlot()
        << SetTimeout(DB1.connect_timeout)
    )
    return pb << attempt(0, TLS_FIRST)


def test_backend_walk_falls_back_to_plaintext_then_to_the_next_host() -> None:
    """``N`` to SSLRequest: plaintext on the same connection; 57P03: the next host, TLS first
    again; the greeting comes from the server that took the login."""
    m = machine(backend=HOSTS, log_connections="")
    pb = walking(m) >> BackendTlsRefused() << SetTimeout(DB1.connect_timeout)
    pb = pb << attempt(0, PLAINTEXT, same_connection=True)
    pb = pb >> BackendConnected() << SetTimeout(DB1.connect_timeout)
    pb = pb << SendToBackend(BACKEND_STARTUP)
    starting = codec.error_response(ClientError("57P03", "the database system is starting up"))
    pb = pb >> BackendData(starting) << SetTimeout(DB2.connect_timeout)
    pb = pb << attempt(1, TLS_FIRST)
    pb = pb >> BackendConnected(LinkSecurity(tls=True, end_point_hash=CERT_HASH))
    pb = pb << SetTimeout(DB2.connect_timeout) << SendToBackend(BACKEND_STARTUP)
    pb = pb >> BackendData(OK + PARAMS + KEY + READY) << SetTimeout(None)
    pb = pb << RegisterCancelKey(4, *BACKEND_KEY) >> CancelKeyIssued(*OUR_KEY)
    greeting = OK + PARAMS + codec.backend_key_data(*OUR_KEY) + READY
    assert pb << StartRelay(greeting, b"", OUR_KEY[0], LOGIN)


def test_backend_walk_relays_the_refusal_that_ends_it() -> None:
    """A refusal on the last method of the last host is the backend's word: relayed verbatim
    after AuthenticationOk, as PostgreSQL refuses in InitPostgres."""
    m = machine(backend=HOSTS, log_connections="")
    refused = BackendUnreachable("[Errno 111] Connection refused")
    pb = walking(m) >> refused << SetTimeout(DB2.connect_timeout)
    pb = pb << attempt(1, TLS_FIRST)
    pb = pb >> BackendLinkFailed("SSL error: certificate verify failed")
    pb = pb << SetTimeout(DB2.connect_timeout) << attempt(1, PLAINTEXT)
    pb = pb >> BackendConnected() << SetTimeout(DB2.connect_timeout)
    message = 'role "alice" is not permitted to log in'
    refusal = codec.error_response(ClientError("28000", message))
    pb = pb << SendToBackend(BACKEND_STARTUP) >> BackendData(refusal)
    assert pb << Close(OK + refusal, Log(Level.FATAL, message))


def test_backend_walk_ending_on_a_server_starting_up_relays_its_57p03() -> None:
    """The last host is starting up: its own FATAL 57P03 reaches the client, as PostgreSQL
    sends it, before any AuthenticationOk (clients retry on 57P03, not on 08006)."""
    m = machine(backend=HOSTS, log_connections="")
    refused = BackendUnreachable("[Errno 111] Connection refused")
    pb = walking(m) >> refused << SetTimeout(DB2.connect_timeout)
    pb = pb << attempt(1, TLS_FIRST) >> BackendTlsRefused() << SetTimeout(DB2.connect_timeout)
    pb = pb << attempt(1, PLAINTEXT, same_connection=True)
    pb = pb >> BackendConnected() << SetTimeout(DB2.connect_timeout)
    message = "the database system is starting up"
    starting = codec.error_response(ClientError("57P03", message))
    pb = pb << SendToBackend(BACKEND_STARTUP) >> BackendData(starting)
    assert pb << Close(starting, Log(Level.FATAL, message))


def test_backend_walk_ending_without_a_server_is_08006_with_every_reason() -> None:
    m = machine(backend=HOSTS, log_connections="")
    pb = walking(m) >> BackendUnreachable("[Errno 111] Connection refused")
    pb = pb << SetTimeout(DB2.connect_timeout) << attempt(1, TLS_FIRST)
    pb = pb >> BackendLinkFailed("SSL error: certificate verify failed")
    pb = pb << SetTimeout(DB2.connect_timeout) << attempt(1, PLAINTEXT)
    detail = "\n".join(
        [
            'connection to host "db1" port 5432 failed: [Errno 111] Connection refused',
            'connection to host "db2" port 5432 failed: SSL error: certificate verify failed',
            'connection to host "db2" port 5432 failed: timeout expired',
        ]
    )
    assert pb >> Timeout() << fatal("08006", "could not connect to the backend server", detail)


# --- GSSAPI encryption toward the backend (gssencmode) -----------------------------------------


class GssCredentialsPresent(ClientCredentials):
    """pg_GSS_have_cred_cache says yes (no GSSAPI call: the machine only plans with it)."""

    def acquire(self) -> Any:
        return object()


GSS_ROUTE = Route(
    backend_target("host=db1 port=5432 user=pggate sslmode=prefer"), gss=GssCredentialsPresent()
)
(GSS_DB,) = GSS_ROUTE.addresses


def gss_attempt(encryption: Encryption, *, same_connection: bool = False) -> ConnectBackend:
    return ConnectBackend(ALICE, GSS_DB, Attempt(0, encryption, same_connection=same_connection))


def test_backend_walk_tries_gss_first_then_tls_and_plaintext_on_the_same_connection() -> None:
    """``N`` to GSSENCRequest, then ``N`` to SSLRequest, all on one connection (libpq's
    ENCRYPTION_NEGOTIATION_FAILED); the startup goes out in plaintext."""
    m = machine(backend=GSS_ROUTE, log_connections="")
    pb = Playbook(m) >> Start() << SetTimeout(60) >> ClientData(HELLO_ALICE) << CheckAdmission()
    pb = (
        pb
        >> Admission(False, 0)
        << CheckAdmission()
        >> SLOT_FREE
        << TakeSlot()
        << SetTimeout(GSS_DB.connect_timeout)
    )
    pb = pb << gss_attempt(Encryption.GSS)
    pb = pb >> BackendGssRefused() << SetTimeout(GSS_DB.connect_timeout)
    pb = pb << gss_attempt(Encryption.TLS, same_connection=True)
    pb = pb >> BackendTlsRefused() << SetTimeout(GSS_DB.connect_timeout)
    pb = pb << gss_attempt(Encryption.PLAIN, same_connection=True)
    pb = pb >> BackendConnected() << SetTimeout(GSS_DB.connect_timeout)
    assert pb << SendToBackend(BACKEND_STARTUP)


def test_backend_gssencmode_require_without_credentials_is_08006() -> None:
    class NoCredentials(ClientCredentials):
        def acquire(self) -> Any:
            return None

    route_ = Route(backend_target("host=db1 gssencmode=require"), gss=NoCredentials())
    m = machine(backend=route_, log_connections="")
    pb = Playbook(m) >> Start() << SetTimeout(60) >> ClientData(HELLO_ALICE) << CheckAdmission()
    detail = "GSSAPI encryption required but no credential cache"
    assert (
        pb
        >> Admission(False, 0)
        << CheckAdmission()
        >> SLOT_FREE
        << TakeSlot()
        << fatal("08006", "could not connect to the backend server", detail)
    )
