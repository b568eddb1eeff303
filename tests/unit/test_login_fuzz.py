"""LoginMachine fuzzed with hypothesis: any client bytes, any legal order of the shell's events.

A fuzzed login is a conversation between the machine and three fakes:

* a client (:class:`Client`) writes startup-phase packets (a direct-TLS ClientHello,
  SSLRequest, GSSENCRequest, CancelRequest, StartupMessage of any version with any
  parameters) and answers each authentication request as libpq would (cleartext, MD5, SCRAM
  with or without channel binding, GSS tokens), right or wrong password; any packet may be
  mutated (bytes flipped, cut, added, the length word replaced, the packet doubled or dropped),
  and its bytes reach the machine in chunks of any size, pipelined or one request at a time;
* a shell (:class:`Login`) answers the question each batch ends with (admission, roles, host
  name, the role's pg_authid row, a GSS exchange, the backend, the cancel key) with a drawn
  answer, refusals and failures included, or instead delivers client bytes, the client's EOF,
  a timeout or a channel failure, in any order the transition table allows;
* a backend sends a drawn reply (a login burst, a refusal before or after AuthenticationOk, an
  authentication request pggate cannot answer) in chunks, now and then damaged like the
  client's packets (an ErrorResponse it then sends is relayed as it is, whatever it says).

Which events may be fed is decided from :data:`~pggate.login.TRANSITIONS` alone (:func:`legal`);
at random points an event the table does not allow is fed and must raise
:class:`~pggate.statetable.IllegalMove` and change nothing. After every batch the contract of
commands.py is checked (:meth:`Login.check_batch`): a Close or StartRelay ends its batch and the
login, a question ends its batch, every Close sends nothing or PostgreSQL's ErrorResponse with
a known SQLSTATE (logged with the same text), every silent Close logs a text PostgreSQL logs
for a silent close, nothing but protocol messages reaches the client, and no wrong password or
unusable secret ever authenticates.

The "ci" profile runs each property a few hundred times (a few seconds in all); "fuzz"
(``HYPOTHESIS_PROFILE=fuzz``) 10,000 times.
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Final, TypeVar, get_args

import pytest
import scramp
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from playbook import HOST, PORT, TLS, config, gss_continue, hba, route
from test_backend_login import KEY, OK, PARAMS, READY
from test_negotiate import GSS_REQ, HELLO, SSL_REQ, cancel, startup
from test_password_auth import CERT_HASH, MOCK_NONCE, NOW, PASSWORD, scram_secret

from pggate.auth import gss as gss_auth
from pggate.config import Config
from pggate.hba import HbaPolicy, IdentMaps
from pggate.hop.plan import Encryption
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
    RemoteHostFailed,
    RemoteHostFound,
    RoleLookupFailed,
    RolesFound,
    SecretFound,
    SecretLookupFailed,
    SendToBackend,
    SendToClient,
    Start,
    StartDirectTLS,
    StartGSS,
    StartGssAuth,
    StartRelay,
    StartTLS,
    State,
    Timeout,
)
from pggate.login.machine import Input
from pggate.proto import codec, codes, negotiate
from pggate.proto.backend import PLAIN_TCP, LinkSecurity, LoginComplete
from pggate.proto.errors import ClientError, ProtocolViolation
from pggate.statetable import IllegalMove
from pggate.transport import ChannelError, ChannelInfo, GssError
from pggate.transport.channel import ChannelKind

# --- the table, read independently of the machine ---------------------------------------------

# The input each event is in TRANSITIONS (events.py: a look-up's success and failure answer the
# same question). Start is NEW's alone and is not in this map.
EVENT_INPUT: Final[dict[type[Event], Input]] = {
    RemoteHostFound: Input.HOST_RESOLVED,
    RemoteHostFailed: Input.HOST_RESOLVED,
    ClientData: Input.CLIENT_DATA,
    ClientEof: Input.CLIENT_EOF,
    ChannelEstablished: Input.CHANNEL_ESTABLISHED,
    ChannelFailed: Input.CHANNEL_FAILED,
    Admission: Input.ADMISSION,
    RolesFound: Input.ROLES,
    RoleLookupFailed: Input.ROLES,
    HostNameChecked: Input.HOSTNAME,
    SecretFound: Input.SECRET,
    SecretLookupFailed: Input.SECRET,
    GssExchangeReady: Input.GSS_EXCHANGE_READY,
    GssExchangeFailed: Input.GSS_EXCHANGE_READY,
    BackendConnected: Input.BACKEND_CONNECTED,
    BackendUnreachable: Input.BACKEND_CONNECTED,
    BackendTlsRefused: Input.BACKEND_CONNECTED,
    BackendGssRefused: Input.BACKEND_CONNECTED,
    BackendLinkFailed: Input.BACKEND_CONNECTED,
    BackendReused: Input.BACKEND_REUSED,
    BackendData: Input.BACKEND_DATA,
    BackendEof: Input.BACKEND_DATA,
    CancelKeyIssued: Input.CANCEL_KEY,
    Timeout: Input.TIMEOUT,
}
OVER: Final = (State.CLOSED, State.RELAYING)


def legal(state: State, event: Event) -> bool:
    """May the shell feed ``event`` in ``state``? TRANSITIONS decides, nothing else."""
    if isinstance(event, Start):
        return state is State.NEW
    return (state, EVENT_INPUT[type(event)]) in TRANSITIONS


# Commands that ask the shell a question: the event answering it comes next (commands.py).
QUESTIONS: Final = (
    LookUpRemoteHost,
    StartTLS,
    StartDirectTLS,
    StartGSS,
    CheckAdmission,
    LookUpRoles,
    LookUpHostName,
    FetchSecret,
    StartGssAuth,
    ConnectBackend,
    RegisterCancelKey,
)
SQLSTATES: Final = frozenset(
    value for name, value in vars(codes).items() if name.startswith("SQLSTATE_")
) | {"3D000"}  # the fake backend's refusal; 53300 and 28P01 are in codes already
MITM: Final = (
    "This could be either a client-software bug or evidence of an attempted man-in-the-middle "
    "attack."
)

# --- the fakes' material -----------------------------------------------------------------------

SCRAM_STORED: Final = scram_secret(PASSWORD)
TLS_INFOS: Final = (
    TLS,
    replace(TLS, peer_cert_verified=True, peer_common_name="alice", peer_subject_dn="CN=alice"),
    replace(TLS, peer_common_name="alice", peer_subject_dn="CN=alice"),  # not verified
    replace(TLS, alpn=None, end_point_hash=None),
)
GSS_INFOS: Final = (
    ChannelInfo(kind=ChannelKind.GSS, gss_principal="alice@EXAMPLE.COM"),
    ChannelInfo(kind=ChannelKind.GSS, gss_principal="bob@EXAMPLE.COM", gss_delegated=True),
    ChannelInfo(kind=ChannelKind.GSS),
)
TLS_FAILURE: Final = ChannelError(
    "could not accept SSL connection: unsupported protocol",
    output=b"\x15\x03\x03\x00\x02\x02\x46",
    protocol_hint=True,
)
GSS_FAILURE: Final = GssError(
    "could not accept GSSAPI security context", detail="Unspecified GSS failure"
)
DECRYPT_FAILURE: Final = ChannelError("SSL error: decryption failed or bad record mac")
CATALOG_DOWN: Final = ClientError(
    codes.SQLSTATE_CONNECTION_FAILURE,
    "could not connect to the backend server",
    log_detail="catalog query failed",
)
LOGIN: Final = LoginComplete(PARAMS + READY, 4242, b"\x01\x02\x03\x04", b"", {})
# target_session_attrs reads these two (hop/plan.py server_type_problem).
PRIMARY: Final = {"in_hot_standby": "off", "default_transaction_read_only": "off"}
STANDBY: Final = {"in_hot_standby": "on", "default_transaction_read_only": "off"}
REUSED: Final = (
    LOGIN,
    LoginComplete(PARAMS + READY, 4242, b"\x01\x02\x03\x04", b"", PRIMARY),
    LoginComplete(PARAMS + READY, 4242, b"\x01\x02\x03\x04", b"", STANDBY),
)
TLS_LINK: Final = LinkSecurity(tls=True, end_point_hash=CERT_HASH)

# What PostgreSQL logs when it closes without a word (besides nothing at all).
SILENT_TEXTS: Final = frozenset(
    {
        "incomplete startup packet",
        "invalid length of startup packet",
        "invalid length of cancel request packet",
        "invalid length of cancel key in cancel request packet",
        "invalid cancel request with PID 0",
        "invalid message length",
        "could not accept SSL connection: EOF detected",
        "received direct SSL connection request without ALPN protocol negotiation extension",
        negotiate.TRACE_DIRECT_REJECTED,
        TLS_FAILURE.message,
        GSS_FAILURE.message,
        DECRYPT_FAILURE.message,
    }
)


def error(sqlstate: str, message: str) -> bytes:
    return codec.error_response(ClientError(sqlstate, message))


def sasl_request(*mechanisms: str) -> bytes:
    payload = b"".join(m.encode() + b"\0" for m in mechanisms) + b"\0"
    return codec.authentication_request(codes.AUTH_SASL, payload)


# The backend's reply to each SendToBackend, in order, as a PostgreSQL server sends them.
BACKEND_SCRIPTS: Final[tuple[tuple[bytes, ...], ...]] = (
    (OK + PARAMS + KEY + READY,),
    (OK + PARAMS + KEY + READY + codec.notice_response(ClientError("01000", "left over")),),
    (error("3D000", 'database "db" does not exist'),),
    (OK + PARAMS + error("53300", 'too many connections for role "alice"'),),
    (codec.authentication_request(codes.AUTH_CLEARTEXT_PASSWORD),),
    (codec.authentication_request(codes.AUTH_SSPI),),
    (sasl_request("SCRAM-SHA-256"), error("28P01", 'password authentication failed for user "x"')),
    (codec.notice_response(ClientError("01000", "hello")) + OK + PARAMS + KEY + READY,),
    (error("57P03", "the database system is starting up"),),
    (OK + b"".join(codec.parameter_status(*kv) for kv in PRIMARY.items()) + KEY + READY,),
    (OK + b"".join(codec.parameter_status(*kv) for kv in STANDBY.items()) + KEY + READY,),
)


def secret_rows(variant: str, user: str) -> list[list[str | None]]:
    """A pg_authid answer for ``user`` (verifiers.role_secret_sql's four columns)."""
    rows: dict[str, list[list[str | None]]] = {
        "none": [],
        "scram": [[user, SCRAM_STORED, None, "t"]],
        "md5": [[user, "md5" + codec_md5(raw(PASSWORD + user)).decode(), None, "t"]],
        "nologin": [[user, SCRAM_STORED, None, "f"]],
        "forever": [[user, SCRAM_STORED, "Infinity", "t"]],
        "expired": [[user, SCRAM_STORED, "0", "t"]],
        "null": [[user, None, None, "t"]],
        "garbled": [[user, "SCRAM-SHA-256$4096:garbage", None, "t"]],
        "plaintext": [[user, PASSWORD, None, "t"]],
        "malformed": [[user, None]],
    }
    return rows[variant]


SECRET_VARIANTS: Final = (
    "scram",
    "md5",
    "none",
    "nologin",
    "forever",
    "expired",
    "null",
    "garbled",
    "plaintext",
    "malformed",
)
# Rows a right password may log in with (rolcanlogin is the backend's to judge).
USABLE_SECRETS: Final = frozenset({"scram", "md5", "nologin", "forever"})


class ScriptedGss:
    """A GSS acceptor that answers each GSSResponse with the next scripted outcome (the shape
    of :class:`pggate.auth.gss.GssAuthExchange`, which needs python-gssapi and a keytab)."""

    def __init__(self, outcomes: Sequence[gss_auth.Outcome]) -> None:
        self.outcomes = deque(outcomes)
        self.started = False
        self.tokens: list[bytes] = []

    def start(self) -> bytes:
        assert not self.started, "AuthenticationGSS asked for twice"
        self.started = True
        return codec.authentication_request(codes.AUTH_GSS)

    def receive(
        self, message_type: bytes, body: bytes | bytearray | memoryview
    ) -> gss_auth.Outcome:
        assert self.started and self.outcomes, "a GSSResponse after the exchange ended"
        if message_type != codes.MSG_PASSWORD:
            self.outcomes.clear()
            kind = message_type[0]
            return gss_auth.Failure(ProtocolViolation(f"expected GSS response, got {kind}"))
        self.tokens.append(bytes(body))
        return self.outcomes.popleft()


GSS_FAILED: Final = ClientError(
    codes.SQLSTATE_INVALID_AUTHORIZATION,
    'GSSAPI authentication failed for user "alice"',
    log_detail="accepting GSS security context failed: Unspecified GSS failure",
)
GSS_ENDINGS: Final[tuple[gss_auth.Outcome, ...]] = (
    gss_auth.Success("alice@EXAMPLE.COM", False),
    gss_auth.Success("alice@EXAMPLE.COM", True, gss_continue(b"final token")),
    gss_auth.Success("mallory@EVIL.ORG", False),
    gss_auth.Success("", False),
    gss_auth.Failure(GSS_FAILED),
    gss_auth.Failure(GSS_FAILED, gss_continue(b"error token")),
)


# --- gateways ----------------------------------------------------------------------------------


SOCKET: Final = "host=/run/pg port=5432 user=pggate"


@dataclass(frozen=True)
class Gateway:
    hba_text: str
    ssl: bool = False
    gss: bool = False
    host: str = HOST
    settings: tuple[tuple[str, str], ...] = ()
    backend: str = SOCKET  # the backend conninfo


# Backends of several hosts: libpq's walk over hosts and encryption methods (hop/plan.py).
HOSTS: Final = "host=db1,db2,/run/pg port=5432 user=pggate"


CA: Final = (("ssl_ca_file", "root.crt"),)
GATEWAYS: Final = (
    Gateway("host all all 0.0.0.0/0 trust\n"),
    Gateway("host all all 0.0.0.0/0 trust\n", backend=HOSTS + " target_session_attrs=read-write"),
    Gateway("host all all 0.0.0.0/0 password\n", backend=HOSTS + " sslmode=allow"),
    Gateway(
        "host all all 0.0.0.0/0 scram-sha-256\n",
        backend=HOSTS + " sslmode=require target_session_attrs=prefer-standby",
    ),
    Gateway("host all all 0.0.0.0/0 password\n", ssl=True),
    Gateway("host all all 0.0.0.0/0 md5\n", gss=True),
    Gateway("host all all 0.0.0.0/0 md5\n", settings=(("password_encryption", "md5"),)),
    Gateway("host all all 0.0.0.0/0 scram-sha-256\n", ssl=True, gss=True),
    Gateway(
        "hostssl all all 0.0.0.0/0 scram-sha-256\nhost all all 0.0.0.0/0 reject\n",
        ssl=True,
        settings=(("trace_connection_negotiation", "on"),),
    ),
    Gateway("hostssl all all 0.0.0.0/0 cert\n", ssl=True, settings=CA),
    Gateway("hostssl all all 0.0.0.0/0 trust clientcert=verify-full\n", ssl=True, settings=CA),
    Gateway("hostssl all all 0.0.0.0/0 trust clientcert=verify-ca\n", ssl=True),  # no CA
    Gateway("host all all 0.0.0.0/0 gss include_realm=0\n", gss=True),
    Gateway(
        "hostgssenc all all 0.0.0.0/0 gss\n"
        "host all all 0.0.0.0/0 gss krb_realm=EXAMPLE.COM include_realm=0\n",
        gss=True,
        settings=(("gss_accept_delegation", "on"),),
    ),
    Gateway(
        "host all +staff client.example.com trust\nhost all all 0.0.0.0/0 md5\n",
        settings=(("log_hostname", "on"),),
    ),
    Gateway("host all all samehost trust\nhost all all ::/0 scram-sha-256\n", host="2001:db8::1"),
    Gateway("hostnossl all all 0.0.0.0/0 ident\nhostssl all all 0.0.0.0/0 pam\n", ssl=True),
    Gateway(
        "host replication all 0.0.0.0/0 trust\nhost all all 0.0.0.0/0 reject\n",
        settings=(("log_connections", ""), ("max_connections", "3")),
    ),
)


@cache
def policy(gateway: Gateway) -> tuple[Config, HbaPolicy, Route]:
    return config(**dict(gateway.settings)), hba(gateway.hba_text), route(gateway.backend)


def new_machine(gateway: Gateway) -> LoginMachine:
    cfg, rules, backend = policy(gateway)
    return LoginMachine(
        cfg,
        rules,
        IdentMaps(),
        backend,
        host=gateway.host,
        port=PORT,
        ssl_enabled=gateway.ssl,
        gss_enabled=gateway.gss,
    )


# --- the client --------------------------------------------------------------------------------

T = TypeVar("T")
RARE: Final = 3  # the one value of a drawn integer that picks the rare case

V3_1 = codes.PROTOCOL_3_1
V3_99 = codes.protocol_version(3, 99)
VERSIONS: Final = (
    codes.PROTOCOL_3_0,
    codes.PROTOCOL_3_2,
    V3_1,
    V3_99,
    codes.protocol_version(2, 0),
    codes.protocol_version(4, 0),
)
PARAMETER_NAMES: Final = (
    b"database",
    b"application_name",
    b"replication",
    b"options",
    b"_pq_.test_option",
    b"_pq_.other",
    b"_pq_.\xff\xfe",  # not UTF-8: kept as bytes (wire_str), and named back as sent
    b"client_encoding",
    b"\xc3",
)
PARAMETER_VALUES: Final = (
    b"db",
    b"",
    b"true",
    b"database",
    b"bogus",
    b"x" * 70,
    "é".encode(),
    b"\xff",
)
USERS: Final = (
    "bob",
    "",
    "pggate",
    "a" * 70,
    "ålice",
    b"\xffalice".decode("utf-8", "surrogateescape"),
)


def startup_packet(version: int, pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(name + b"\0" + value + b"\0" for name, value in pairs) + b"\0"
    return struct.pack("!II", 8 + len(body), version) + body


def rarely(rare: st.SearchStrategy[T], usual: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """``usual``, or one time in eight ``rare`` (drawn from the middle of the range: hypothesis
    draws its ends more often; shrinking goes to 0, the usual)."""
    return st.integers(0, 7).flatmap(lambda n: rare if n == RARE else usual)


REQUESTS: Final = st.sampled_from([SSL_REQ, GSS_REQ])


def chunk_sizes(available: int) -> st.SearchStrategy[int]:
    """How much of ``available`` bytes one read gets: all of them, or any part."""
    return st.integers(0, 1).flatmap(
        lambda n: st.just(available) if n == 0 else st.integers(1, available)
    )


@st.composite
def startup_packets(draw: st.DrawFn) -> tuple[bytes, str]:
    """A StartupMessage of a drawn version and parameters; and the user the client thinks it
    is (its password's salt for MD5)."""
    usual = st.sampled_from([codes.PROTOCOL_3_0, codes.PROTOCOL_3_2, V3_99])
    version = draw(rarely(st.sampled_from(VERSIONS) | st.integers(0, 2**32 - 1), usual))
    user = draw(rarely(st.sampled_from(USERS), st.just("alice")))
    pairs: list[tuple[bytes, bytes]] = []
    if draw(st.integers(0, 19)) != RARE:
        pairs.append((b"user", raw(user)))
    for name, value in draw(
        st.lists(st.tuples(st.sampled_from(PARAMETER_NAMES), st.sampled_from(PARAMETER_VALUES)))
    ):
        pairs.append((name, value))
    return startup_packet(version, pairs), user


@dataclass
class Persona:
    user: str
    password: str
    mechanism: str  # "auto": PLUS when offered; or what it names, even if not offered
    initial_response: bool  # the client-first in SASLInitialResponse, or after an empty R 11
    pipelined: bool  # write every startup-phase packet at once, without awaiting answers
    gss_tokens: int


@st.composite
def personas(draw: st.DrawFn, user: str) -> Persona:
    return Persona(
        user=user,
        password=draw(st.sampled_from([PASSWORD, "wrong"])),
        mechanism=draw(
            st.sampled_from(["auto", codes.SCRAM_SHA_256, codes.SCRAM_SHA_256_PLUS, "OAUTHBEARER"])
        ),
        initial_response=draw(st.integers(0, 4)) > 0,
        pipelined=draw(st.integers(0, 4)) == RARE,
        gss_tokens=draw(st.integers(0, 4)),
    )


@st.composite
def preludes(draw: st.DrawFn) -> tuple[list[bytes], str]:
    """The startup-phase packets of one connection, in order, and the client's user name."""
    packets: list[bytes] = []
    if draw(st.integers(0, 9)) == RARE:
        packets.append(HELLO + draw(st.binary(max_size=8)))
    packets += draw(rarely(st.lists(REQUESTS, max_size=3), st.lists(REQUESTS, max_size=1)))
    last = draw(rarely(st.sampled_from(["cancel", "garbage", "nothing"]), st.just("startup")))
    user = "alice"
    if last == "startup":
        packet, user = draw(startup_packets())
        packets.append(packet)
        if draw(st.integers(0, 9)) == RARE:  # a client that does not wait for the request
            packets.append(EAGER_PASSWORD)
    elif last == "cancel":
        pid = draw(st.integers(0, 2**31 - 1))
        packets.append(cancel(pid, draw(st.binary(max_size=300))))
    elif last == "garbage":
        packets.append(draw(st.binary(max_size=40)))
    return packets, user


# In a prelude: the client's PasswordMessage, sent right behind its StartupMessage.
EAGER_PASSWORD: Final = b"(password)"
LENGTH_WORDS: Final = (0, 3, 4, 5, 8, 9, 10_000, 10_004, 65_535, 65_536, 2**31 - 1, 2**32 - 1)


def mutate(data: st.DataObject, packet: bytes, *, typed: bool) -> bytes:
    """``packet`` as it is (mostly), or damaged in one drawn way."""
    if data.draw(st.integers(0, 99), label="intact?") < 90:
        return packet
    how = data.draw(
        st.sampled_from(["flip", "cut", "extend", "replace", "length", "twice", "drop", "insert"])
    )
    if how == "flip" and packet:
        at = data.draw(st.integers(0, len(packet) - 1))
        bit = data.draw(st.integers(1, 255))
        return packet[:at] + bytes([packet[at] ^ bit]) + packet[at + 1 :]
    if how == "cut" and packet:
        return packet[: data.draw(st.integers(0, len(packet) - 1))]
    if how == "extend":
        return packet + data.draw(st.binary(min_size=1, max_size=16))
    if how == "replace":
        return data.draw(st.binary(max_size=64))
    if how == "length":
        at = 1 if typed else 0
        word = data.draw(st.sampled_from(LENGTH_WORDS) | st.integers(0, 2**32 - 1))
        return packet[:at] + struct.pack("!I", word) + packet[at + 4 :]
    if how == "twice":
        return packet * 2
    if how == "insert":
        at = data.draw(st.integers(0, len(packet)))
        return packet[:at] + data.draw(st.binary(min_size=1, max_size=8)) + packet[at:]
    return b""  # drop


def messages(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The typed messages ``data`` consists of, exactly (asserting the framing)."""
    view = bytes(data)
    while view:
        parsed, consumed = codec.read_message(view, max_length=1 << 20)
        assert parsed is not None, f"a cut message: {data!r}"
        yield parsed[0], bytes(parsed[1])
        view = view[consumed:]


class Client:
    """What a libpq-like client writes, in response to what it hears."""

    def __init__(self, data: st.DataObject, prelude: list[bytes], persona: Persona) -> None:
        self.data = data
        self.persona = persona
        self.prelude = deque(prelude)
        self.outbox = bytearray()
        self.awaiting = False  # an answer to a request, or a direct-TLS handshake
        self.scram: scramp.ScramClient | None = None
        self.gss_tokens = persona.gss_tokens
        self.write_prelude()

    def write(self, packet: bytes, *, typed: bool) -> None:
        self.outbox += mutate(self.data, packet, typed=typed)

    def write_prelude(self) -> None:
        while self.prelude and not self.awaiting:
            packet = self.prelude.popleft()
            if packet == EAGER_PASSWORD:
                self.respond(self.persona.password.encode() + b"\0")
                continue
            self.write(packet, typed=False)
            waits = packet in (SSL_REQ, GSS_REQ) or packet.startswith(HELLO)
            self.awaiting = waits and not self.persona.pipelined

    def answered(self) -> None:
        """An S, N or G arrived, or the direct-TLS handshake is done."""
        self.awaiting = False
        self.write_prelude()

    def take(self) -> bytes:
        size = self.data.draw(chunk_sizes(len(self.outbox)), label="chunk")
        chunk = bytes(self.outbox[:size])
        del self.outbox[:size]
        return chunk

    def hear(self, data: bytes) -> None:
        if data in (codes.SSL_ACCEPT, codes.GSS_ACCEPT, codes.ENCRYPTION_REFUSE):
            self.answered()
            return
        for kind, body in messages(data):
            if kind == codes.MSG_AUTHENTICATION:
                self.authenticate(*codec.parse_authentication(body))

    def respond(self, body: bytes) -> None:
        self.write(codec.password_message(body), typed=True)

    def authenticate(self, request: int, payload: bytes) -> None:
        persona = self.persona
        if request == codes.AUTH_CLEARTEXT_PASSWORD:
            self.respond(persona.password.encode() + b"\0")
        elif request == codes.AUTH_MD5_PASSWORD:
            stored = codec_md5(raw(persona.password + persona.user))
            salted = codec_md5(stored + payload[:4])
            self.respond(b"md5" + salted + b"\0")
        elif request == codes.AUTH_SASL:
            self.sasl_start(payload)
        elif request == codes.AUTH_SASL_CONTINUE and self.scram is not None:
            try:
                if not payload:  # the empty challenge after a SASLInitialResponse without data
                    self.respond(self.scram.get_client_first().encode())
                else:
                    self.scram.set_server_first(payload.decode())
                    self.respond(self.scram.get_client_final().encode())
            except (scramp.ScramException, UnicodeError):
                return  # libpq gives up; the machine hears EOF, or nothing
        elif request in (codes.AUTH_GSS, codes.AUTH_GSS_CONTINUE) and self.gss_tokens:
            self.gss_tokens -= 1
            self.respond(b"gss token %d" % self.gss_tokens)

    def sasl_start(self, payload: bytes) -> None:
        """SASLInitialResponse for the persona's mechanism (the server's first: libpq's)."""
        offered = [m.decode() for m in payload.split(b"\0") if m]
        wanted = offered[0] if self.persona.mechanism == "auto" else self.persona.mechanism
        binding = None
        if wanted == codes.SCRAM_SHA_256_PLUS:
            binding = (codes.SCRAM_CHANNEL_BINDING_TYPE, CERT_HASH)
        mechanism = wanted if wanted.startswith("SCRAM") else codes.SCRAM_SHA_256
        persona = self.persona
        try:
            self.scram = scramp.ScramClient(
                [mechanism], persona.user, persona.password, channel_binding=binding
            )
            first = self.scram.get_client_first().encode()
        except (scramp.ScramException, UnicodeError):
            return  # a name SASLprep refuses: libpq would not log in either
        name = wanted.encode() + b"\0"
        if persona.initial_response:
            self.respond(name + len(first).to_bytes(4, "big") + first)
        else:
            self.respond(name + (-1).to_bytes(4, "big", signed=True))


def codec_md5(data: bytes) -> bytes:
    return hashlib.md5(data).hexdigest().encode()


def raw(text: str) -> bytes:
    """A name as the wire has it (wire_str's inverse: undecodable bytes were escaped)."""
    return text.encode("utf-8", "surrogateescape")


# --- the shell ---------------------------------------------------------------------------------


def sample_events() -> list[Event]:
    """One event of each kind, for probing what the table forbids."""
    return [
        Start(),
        RemoteHostFound("client.example.com"),
        RemoteHostFailed("[Errno -2] Name or service not known"),
        ClientData(b"x"),
        ClientEof(),
        ChannelEstablished(TLS),
        ChannelFailed(DECRYPT_FAILURE),
        Admission(False, 0),
        RolesFound(frozenset({"alice"})),
        RoleLookupFailed(CATALOG_DOWN),
        HostNameChecked(None),
        SecretFound([], {}, MOCK_NONCE, NOW),
        SecretLookupFailed(CATALOG_DOWN),
        GssExchangeReady(ScriptedGss([])),
        GssExchangeFailed(GSS_FAILURE),
        BackendConnected(),
        BackendUnreachable("[Errno 111] Connection refused"),
        BackendTlsRefused(),
        BackendGssRefused(),
        BackendLinkFailed("SSL error: certificate verify failed"),
        BackendReused(LOGIN),
        BackendData(b""),
        BackendEof(),
        CancelKeyIssued(4711, b"kkkk"),
        Timeout(),
    ]


SAMPLE_EVENTS: Final = sample_events()


class Login:
    """One fuzzed login: the machine, the client, the shell's bookkeeping and the checks."""

    def __init__(self, data: st.DataObject, gateway: Gateway, client: Client) -> None:
        self.data = data
        self.gateway = gateway
        self.machine = new_machine(gateway)
        self.client = client
        self.question: Command | None = None
        self.backend_script: deque[bytes] = deque()
        self.backend_outbox = bytearray()
        self.backend_garbled = False  # a reply was mutated: its errors are not PostgreSQL's
        self.secret_variant: str | None = None
        self.cancel_key: tuple[int, bytes] | None = None
        self.steps = 0

    # --- feeding ---

    def feed(self, event: Event) -> list[Command]:
        machine = self.machine
        before = machine.state
        assert legal(before, event), (before, event)
        note(f"{before.name} >> {event!r}")
        out = machine.feed(event)
        note(f"   << {out!r}")
        self.check_batch(before, event, out)
        for command in out:
            if isinstance(command, SendToClient):
                self.client.hear(command.data)
            elif isinstance(command, SendToBackend) and self.backend_script:
                if command.data == codec.terminate():
                    continue  # goodbye to a server of the wrong kind: no answer
                reply = self.backend_script.popleft()
                sent = mutate(self.data, reply, typed=True)
                self.backend_garbled |= sent != reply
                self.backend_outbox += sent
            if isinstance(command, QUESTIONS):
                self.question = command
        if isinstance(event, ChannelEstablished) and before is State.DIRECT_TLS_HANDSHAKE:
            self.client.answered()
        return out

    def probe(self) -> None:
        """An event the table forbids here raises IllegalMove and changes nothing."""
        state = self.machine.state
        illegal = [e for e in SAMPLE_EVENTS if not legal(state, e)]
        if not illegal:
            return
        event = self.data.draw(st.sampled_from(illegal), label="illegal event")
        with pytest.raises(IllegalMove):
            self.machine.feed(event)
        assert self.machine.state is state

    def run(self) -> None:
        self.feed(Start())
        while self.machine.state not in OVER:
            self.steps += 1
            self.step()
        for _ in range(2):
            self.probe()  # after a Close or the relay, nothing more is taken

    def step(self) -> None:
        state = self.machine.state
        client = self.client
        options: list[tuple[str, int]] = []
        if self.question is not None:
            options.append(("answer", 100))
        if client.outbox and legal(state, ClientData(b"")):
            options.append(("client", 100))
        if legal(state, ClientData(b"")):
            options.append(("nothing", 1))  # a read that decrypted to nothing
        if self.backend_outbox and legal(state, BackendData(b"")):
            options.append(("backend", 100))
        # Rarely: the login mostly goes on, and ends only when nothing else can happen.
        options += [("eof", 1), ("backend eof", 1), ("timeout", 1), ("fail", 1), ("probe", 1)]
        if self.steps > 200:  # a client or backend that talks forever; end it
            options = [("fail", 1)]
        choice = choose(self.data, options)
        if choice == "probe":
            self.probe()
        elif choice == "answer":
            assert self.question is not None
            event = self.answer(self.question)
            if legal(state, event):
                self.question = None
                self.feed(event)
        elif choice == "client":
            self.feed(ClientData(client.take()))
        elif choice == "nothing":
            self.feed(ClientData(b""))
        elif choice == "backend":
            size = self.data.draw(chunk_sizes(len(self.backend_outbox)), label="backend chunk")
            chunk = bytes(self.backend_outbox[:size])
            del self.backend_outbox[:size]
            self.feed(BackendData(chunk))
        else:
            disruptions: dict[str, Event] = {
                "eof": ClientEof(),
                "backend eof": BackendEof(),
                "timeout": Timeout(),
                "fail": ChannelFailed(DECRYPT_FAILURE),
            }
            event = disruptions[choice]
            if legal(state, event):
                self.feed(event)

    def pick(self, usual: Sequence[Event], rare: Sequence[Event] = ()) -> Event:
        """One of ``usual``, or (one time in eight) of ``rare``."""
        events = st.sampled_from(usual)
        return self.data.draw(rarely(st.sampled_from(rare), events) if rare else events)

    def answer(self, question: Command) -> Event:
        """The shell's drawn answer to ``question``: mostly one a login goes on with."""
        draw = self.data.draw
        if isinstance(question, LookUpRemoteHost):
            found = [RemoteHostFound("client.example.com"), RemoteHostFound(self.gateway.host)]
            return self.pick(found, [RemoteHostFailed("[Errno -2] Name or service not known")])
        if isinstance(question, StartTLS | StartDirectTLS):
            return self.pick(
                [ChannelEstablished(info) for info in TLS_INFOS],
                [ChannelFailed(TLS_FAILURE), ClientEof()],
            )
        if isinstance(question, StartGSS):
            return self.pick(
                [ChannelEstablished(info) for info in GSS_INFOS],
                [ChannelFailed(GSS_FAILURE), ClientEof()],
            )
        if isinstance(question, CheckAdmission):
            # Gateways allow 100 connections, one 3.
            return self.pick(
                [Admission(False, 0), Admission(False, 2)],
                [Admission(True, 0), Admission(False, 3)],
            )
        if isinstance(question, LookUpRoles):
            user = question.user
            return self.pick(
                [RolesFound(frozenset({user, "staff"})), RolesFound(frozenset({user}))],
                [RoleLookupFailed(CATALOG_DOWN)],
            )
        if isinstance(question, LookUpHostName):
            return self.pick(
                [HostNameChecked("client.example.com")],
                [HostNameChecked(None), HostNameChecked("other.example.com")],
            )
        if isinstance(question, FetchSecret):
            if draw(st.integers(0, 19)) == RARE:
                return SecretLookupFailed(CATALOG_DOWN)
            variant = draw(st.sampled_from(SECRET_VARIANTS))
            self.secret_variant = variant
            parameters = draw(st.sampled_from([{}, {"scram_iterations": "4096"}, {"x": "y"}]))
            return SecretFound(secret_rows(variant, question.user), parameters, MOCK_NONCE, NOW)
        if isinstance(question, StartGssAuth):
            if draw(st.integers(0, 9)) == RARE:
                return GssExchangeFailed(GSS_FAILURE)
            sends = draw(st.integers(0, 3))
            steps: list[gss_auth.Outcome] = [
                gss_auth.Send(gss_continue(b"server token %d" % i)) for i in range(sends)
            ]
            return GssExchangeReady(ScriptedGss([*steps, draw(st.sampled_from(GSS_ENDINGS))]))
        if isinstance(question, ConnectBackend):
            unreachable = BackendUnreachable("[Errno 111] Connection refused")
            if question.attempt.encryption is Encryption.TLS:
                event = self.pick(
                    [BackendConnected(TLS_LINK), BackendTlsRefused()],
                    [
                        BackendLinkFailed("SSL error: certificate verify failed"),
                        BackendLinkFailed("received invalid response to SSL negotiation", True),
                        unreachable,
                    ],
                )
            else:
                link = LinkSecurity(local=True) if question.address.is_unix_socket else PLAIN_TCP
                usual: list[Event] = [BackendConnected(link), *map(BackendReused, REUSED)]
                event = self.pick(usual, [unreachable])
            if isinstance(event, BackendConnected):
                # A new link (or the same socket after N): the backend has heard nothing yet.
                self.backend_outbox.clear()
                self.backend_script = deque(draw(st.sampled_from(BACKEND_SCRIPTS)))
            return event
        assert isinstance(question, RegisterCancelKey), question
        length = question.key_length
        key = draw(st.binary(min_size=length, max_size=length))
        self.cancel_key = (draw(st.integers(1, 2**31 - 1)), key)
        return CancelKeyIssued(*self.cancel_key)

    # --- the checks ---

    def check_batch(self, before: State, event: Event, out: list[Command]) -> None:
        state = self.machine.state
        enders = [c for c in out if isinstance(c, Close | StartRelay)]
        assert len(enders) <= 1, "two ends in one batch"
        if enders:
            assert out[-1] is enders[0], "commands after the end of the login"
            assert state is (State.CLOSED if isinstance(enders[0], Close) else State.RELAYING)
        else:
            assert state not in OVER, f"{state} without a Close or StartRelay"
        for index, command in enumerate(out):
            if isinstance(command, QUESTIONS):
                assert index == len(out) - 1, f"{command!r} is not the last of its batch"
            if isinstance(command, Cancel):
                assert out[index + 1 :] == [Close()], "a cancel is followed by a silent close"
            elif isinstance(command, SendToClient):
                self.check_to_client(before, command.data)
            elif isinstance(command, Close):
                check_close(command, relayed=self.backend_garbled)
            elif isinstance(command, StartRelay):
                self.check_relay(command)
            elif isinstance(command, ConnectBackend):
                self.check_authenticated()
            elif isinstance(command, Log):
                assert command.text

    def check_to_client(self, before: State, data: bytes) -> None:
        if data in (codes.SSL_ACCEPT, codes.GSS_ACCEPT, codes.ENCRYPTION_REFUSE):
            assert before is State.NEGOTIATING
            if data == codes.SSL_ACCEPT:
                assert self.gateway.ssl
            if data == codes.GSS_ACCEPT:
                assert self.gateway.gss
            return
        for kind, body in messages(data):
            if kind == codes.MSG_NEGOTIATE_PROTOCOL_VERSION:
                version, options = codec.parse_negotiate_protocol_version(body)
                assert codes.PROTOCOL_3_0 <= version <= codes.PROTOCOL_LATEST
                assert all(o.startswith(codes.PROTOCOL_OPTION_PREFIX) for o in options)
            else:
                assert kind == codes.MSG_AUTHENTICATION, f"{kind!r} sent during the login"
                request, _ = codec.parse_authentication(body)
                assert request in {
                    codes.AUTH_CLEARTEXT_PASSWORD,
                    codes.AUTH_MD5_PASSWORD,
                    codes.AUTH_GSS,
                    codes.AUTH_GSS_CONTINUE,
                    codes.AUTH_SASL,
                    codes.AUTH_SASL_CONTINUE,
                }

    def check_authenticated(self) -> None:
        """No wrong password, no unusable secret logs in."""
        if self.secret_variant is not None:
            assert self.client.persona.password == PASSWORD, "a wrong password authenticated"
            assert self.secret_variant in USABLE_SECRETS, f"{self.secret_variant} authenticated"

    def check_relay(self, relay: StartRelay) -> None:
        assert self.cancel_key is not None
        pid, key = self.cancel_key
        assert relay.cancel_pid == pid
        # The bytes behind ReadyForQuery are the backend's (maybe half a message): relayed.
        leftover = len(relay.login.leftover)
        greeting = list(messages(relay.to_client[: len(relay.to_client) - leftover]))
        ok = (codes.MSG_AUTHENTICATION, (codes.AUTH_OK).to_bytes(4, "big"))
        assert ok in greeting
        keys = [m for m in greeting if m[0] == codes.MSG_BACKEND_KEY_DATA]
        assert keys == [(codes.MSG_BACKEND_KEY_DATA, struct.pack("!I", pid) + key)]
        assert greeting[greeting.index(keys[0]) + 1][0] == codes.MSG_READY_FOR_QUERY


def check_close(close: Close, *, relayed: bool = False) -> None:
    """Nothing, with a text PostgreSQL logs for a silent close (or none); or an ErrorResponse
    with a SQLSTATE, logged with its text, behind only NegotiateProtocolVersion or
    authentication messages. ``relayed``: a garbled backend's error may be relayed, whatever its
    fields say."""
    log = close.log
    if close.error is None:
        assert log is None or log.text in SILENT_TEXTS, log
        return
    assert log is not None and log.level in (Level.LOG, Level.FATAL)
    if close.error == codec.v2_error_response(log.text):
        assert log.text.startswith("unsupported frontend protocol")
        return
    sent = list(messages(close.error))
    assert all(kind in (b"v", b"R") for kind, _ in sent[:-1]), sent
    kind, body = sent[-1]
    assert kind == codes.MSG_ERROR_RESPONSE
    fields = codec.parse_error_fields(body)
    if relayed:
        return
    assert fields["S"] == fields["V"] == codes.SEVERITY_FATAL
    assert fields["C"] in SQLSTATES, fields
    assert fields["M"] == log.text


def choose(data: st.DataObject, options: Sequence[tuple[str, int]]) -> str:
    """One label, drawn with the given weights (shrinking towards the first)."""
    pick = data.draw(st.integers(0, sum(w for _, w in options) - 1), label="step")
    for label, weight in options:
        if pick < weight:
            return label
        pick -= weight
    raise AssertionError("unreachable")


# --- the properties ----------------------------------------------------------------------------

FUZZ_SETTINGS: Final = settings(
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    deadline=None,
)


@FUZZ_SETTINGS
@given(st.data(), st.sampled_from(GATEWAYS))
def test_any_login_ends_in_a_close_or_the_relay(data: st.DataObject, gateway: Gateway) -> None:
    prelude, user = data.draw(preludes(), label="prelude")
    persona = data.draw(personas(user), label="persona")
    Login(data, gateway, Client(data, prelude, persona)).run()


# --- the table, state by state -----------------------------------------------------------------

TRUST: Final = Gateway("host all all 0.0.0.0/0 trust\n", ssl=True, gss=True)
HELLO_ALICE: Final = startup(user="alice", database="db")


SLOT: Final = Admission(False, 0)  # the second count, once authenticated: the slot is free


def started(gateway: Gateway, *events: Event) -> tuple[Gateway, list[Event]]:
    return gateway, [Start(), ClientData(HELLO_ALICE), Admission(False, 0), *events]


def paths() -> dict[State, tuple[Gateway, list[Event]]]:
    """A way into each state: the gateway and the events."""
    gss_method = Gateway("host all all 0.0.0.0/0 gss\n")
    password = Gateway("host all all 0.0.0.0/0 password\n")
    gss_ready = GssExchangeReady(ScriptedGss([GSS_ENDINGS[0]]))
    secret = SecretFound(secret_rows("scram", "alice"), {}, MOCK_NONCE, NOW)
    return {
        State.NEW: (TRUST, []),
        State.RESOLVING_HOST: (
            Gateway(TRUST.hba_text, settings=(("log_hostname", "on"),)),
            [Start()],
        ),
        State.NEGOTIATING: (TRUST, [Start()]),
        State.TLS_HANDSHAKE: (TRUST, [Start(), ClientData(SSL_REQ)]),
        State.DIRECT_TLS_HANDSHAKE: (TRUST, [Start(), ClientData(HELLO)]),
        State.GSS_HANDSHAKE: (TRUST, [Start(), ClientData(GSS_REQ)]),
        State.ADMITTING: (TRUST, [Start(), ClientData(HELLO_ALICE)]),
        State.LOOKING_UP_ROLES: started(Gateway("host all +staff 0.0.0.0/0 trust\n")),
        State.LOOKING_UP_HOSTNAME: started(Gateway("host all all client.example.com trust\n")),
        State.FETCHING_SECRET: started(password),
        State.PASSWORD_EXCHANGE: started(password, secret),
        State.PREPARING_GSS: started(gss_method),
        State.GSS_EXCHANGE: started(gss_method, gss_ready),
        State.CLAIMING_SLOT: started(TRUST),
        State.CONNECTING_BACKEND: started(TRUST, SLOT),
        State.BACKEND_LOGIN: started(TRUST, SLOT, BackendConnected()),
        State.REGISTERING_CANCEL_KEY: started(TRUST, SLOT, BackendReused(LOGIN)),
        State.RELAYING: started(TRUST, SLOT, BackendReused(LOGIN), CancelKeyIssued(4711, b"kkkk")),
        State.CLOSED: (TRUST, [Start(), ClientEof()]),
    }


def reach(state: State) -> LoginMachine:
    gateway, events = paths()[state]
    m = new_machine(gateway)
    for event in events:
        m.feed(event)
    assert m.state is state
    return m


def test_every_event_kind_has_its_input() -> None:
    assert set(get_args(Event)) == {Start, *EVENT_INPUT}


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.name)
def test_the_table_decides_every_event_in_every_state(state: State) -> None:
    """Illegal: IllegalMove naming the state, and nothing changed (the next legal event does
    what it does on an untouched machine). Legal: commands, never an exception."""
    legal_here = [i for i, e in enumerate(sample_events()) if legal(state, e)]
    assert bool(legal_here) is (state not in OVER)
    for index, event in enumerate(sample_events()):
        m = reach(state)
        if index in legal_here:
            for command in m.feed(event):
                if isinstance(command, Close):
                    check_close(command)
            continue
        with pytest.raises(IllegalMove, match=repr(state.value)):
            m.feed(event)
        assert m.state is state
        if legal_here:
            after = m.feed(sample_events()[legal_here[0]])
            untouched = reach(state)
            assert after == untouched.feed(sample_events()[legal_here[0]])
            assert m.state is untouched.state


# --- bytes behind an encryption request --------------------------------------------------------


CODES: Final = {"SSLRequest": codes.NEGOTIATE_SSL_CODE, "GSSENCRequest": codes.NEGOTIATE_GSS_CODE}


def refusal(kind: str) -> tuple[bytes, str]:
    """PostgreSQL's FATAL for bytes behind a ``kind`` answered N (or G): bytes, log text."""
    what = "SSL request" if kind == "SSLRequest" else "GSSAPI encryption request"
    message = f"received unencrypted data after {what}"
    return codec.error_response(ProtocolViolation(message, detail=MITM)), message


@FUZZ_SETTINGS
@given(
    kind=st.sampled_from(sorted(CODES)),
    context=st.sampled_from(["first", "after the other's N", "direct TLS", "direct TLS, one N"]),
    accept=st.booleans(),
    trace=st.booleans(),
    padding=rarely(st.binary(min_size=1, max_size=8), st.just(b"")),
    cut=st.integers(0, 16),
    tail=st.binary(min_size=1, max_size=64),
)
def test_bytes_behind_an_encryption_request_never_reach_the_protocol(
    kind: str, context: str, accept: bool, trace: bool, padding: bytes, cut: int, tail: bytes
) -> None:
    """What the client sent behind SSLRequest/GSSENCRequest before it could know the answer:
    after N, FATAL 08P01 (CVE-2021-23214's server side); after G, that FATAL inside the GSS
    channel; after S, the TLS layer's (the pipelined ClientHello), never plaintext protocol.
    The request may come in two chunks and be longer than 8 bytes (its length is not checked)."""
    other = "GSSENCRequest" if kind == "SSLRequest" else "SSLRequest"
    direct = context.startswith("direct")
    # Inside direct TLS both answers are N, whatever the settings (CVE-2026-14681's fix).
    ssl = direct or (accept and kind == "SSLRequest")
    gss = accept and kind == "GSSENCRequest"
    setting = (("trace_connection_negotiation", "on" if trace else "off"),)
    m = new_machine(Gateway("host all all 0.0.0.0/0 trust\n", ssl=ssl, gss=gss, settings=setting))
    m.feed(Start())
    if direct:
        assert m.feed(ClientData(HELLO)) == [StartDirectTLS(HELLO)]
        m.feed(ChannelEstablished(TLS))
    if context.endswith("N"):
        answer = m.feed(ClientData(struct.pack("!II", 8, CODES[other])))
        assert answer == [*traced(trace, f"{other} rejected"), SendToClient(b"N")]
    request = struct.pack("!II", 8 + len(padding), CODES[kind]) + padding
    if 0 < cut < len(request):
        assert m.feed(ClientData(request[:cut])) == []
        request = request[cut:]
    out = m.feed(ClientData(request + tail))
    if direct or not accept:
        error, message = refusal(kind)
        rejected = traced(trace, f"{kind} rejected")
        assert out == [*rejected, SendToClient(b"N"), Close(error, Log(Level.FATAL, message))]
    elif kind == "SSLRequest":
        accepted = traced(trace, f"{kind} accepted")
        assert out == [*accepted, SendToClient(b"S"), StartTLS(tail)]
        # Nothing of them is left for the plaintext protocol: EOF finds an empty buffer.
        assert m.feed(ChannelEstablished(TLS)) == []
        assert m.feed(ClientEof()) == [Close()]
    else:
        accepted = traced(trace, f"{kind} accepted")
        assert out == [*accepted, SendToClient(b"G"), StartGSS(tail)]
        error, message = refusal(kind)
        out = m.feed(ChannelEstablished(GSS_INFOS[0]))
        assert out == [Close(error, Log(Level.FATAL, message))]
    if direct or not accept or kind == "GSSENCRequest":
        assert m.state is State.CLOSED


def traced(trace: bool, text: str) -> list[Command]:
    return [Log(Level.LOG, text)] if trace else []


# --- chunking ---------------------------------------------------------------------------------


@FUZZ_SETTINGS
@given(st.data(), st.lists(st.integers(1, 64), max_size=8), st.booleans())
def test_chunking_changes_nothing_before_an_encryption_answer(
    data: st.DataObject, cuts: list[int], eof: bool
) -> None:
    """The startup phase's bytes in one piece or in any chunks give the same commands (as long
    as no encryption request is answered: for those, what came with the request matters)."""
    packets, _ = data.draw(preludes(), label="packets")
    password = codec.password_message(PASSWORD.encode() + b"\0")
    packets = [password if p == EAGER_PASSWORD else p for p in packets]
    stream = b"".join(mutate(data, p, typed=False) for p in packets)
    gateway = GATEWAYS[0]
    whole = new_machine(gateway)
    expected = whole.feed(Start()) + whole.feed(ClientData(stream))
    if eof and whole.state not in OVER:
        expected += whole.feed(ClientEof())
    answers = {codes.SSL_ACCEPT, codes.GSS_ACCEPT, codes.ENCRYPTION_REFUSE}
    assume(not any(isinstance(c, SendToClient) and c.data in answers for c in expected))
    assume(not any(isinstance(c, StartDirectTLS) for c in expected))
    chunked = new_machine(gateway)
    actual = chunked.feed(Start())
    rest = stream
    for size in cuts:
        if chunked.state in OVER or not rest:
            break
        actual += chunked.feed(ClientData(rest[:size]))
        rest = rest[size:]
    if rest and chunked.state not in OVER:
        actual += chunked.feed(ClientData(rest))
    if eof and chunked.state not in OVER:
        actual += chunked.feed(ClientEof())
    assert actual == expected
    assert chunked.state is whole.state
