"""GssChannel and GssAuthExchange against real Kerberos contexts, all in memory.

A client ``gssapi.SecurityContext`` (libpq's flags: MUTUAL|REPLAY|SEQUENCE|CONF|INTEG, target
``postgres@localhost``) with a ticket from the test KDC talks to the sans-IO server pieces
through byte strings only: no sockets, no pggate process. What PostgreSQL's
``be-secure-gssapi.c`` and ``auth.c:pg_GSS_recvauth`` require is asserted byte for byte.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from pathlib import Path

import gssapi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kdc import Realm

from pggate.auth.gss import (
    ExchangeState,
    Failure,
    GssAuthExchange,
    Send,
    Success,
)
from pggate.errors import SilentClose
from pggate.proto import codes
from pggate.proto.errors import ProtocolViolation
from pggate.statetable import IllegalMove
from pggate.transport.gss import (
    MAX_DATA_PAYLOAD,
    MAX_HANDSHAKE_TOKEN,
    GssChannel,
    GssError,
    IllegalChannelUse,
    State,
)

pytestmark = pytest.mark.integration

F = gssapi.RequirementFlag
# fe-secure-gssapi.c GSS_REQUIRED_FLAGS
LIBPQ_FLAGS = (
    F.mutual_authentication
    | F.replay_detection
    | F.out_of_sequence_detection
    | F.confidentiality
    | F.integrity
)
LENGTH = struct.Struct("!I")
MB = 1024 * 1024


# --- helpers ----------------------------------------------------------------------------------


def frame(payload: bytes) -> bytes:
    return LENGTH.pack(len(payload)) + payload


def unframe(data: bytes) -> list[bytes]:
    """Split a complete run of length-prefixed packets."""
    packets = []
    pos = 0
    while pos < len(data):
        (length,) = LENGTH.unpack_from(data, pos)
        packets.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + length
    assert pos == len(data), "trailing partial packet"
    return packets


def client_context(realm: Realm, ccache: Path, *, delegate: bool = False) -> gssapi.SecurityContext:
    flags = LIBPQ_FLAGS | F.delegate_to_peer if delegate else LIBPQ_FLAGS
    return gssapi.SecurityContext(
        usage="initiate",
        name=gssapi.Name(realm.target_name, gssapi.NameType.hostbased_service),
        creds=realm.initiator_credentials(ccache),
        flags=flags,
    )


def establish(channel: GssChannel, client: gssapi.SecurityContext) -> int:
    """Run the handshake the way libpq does (pqsecure_open_gss); returns the round trips."""
    token = client.step()
    rounds = 0
    while True:
        rounds += 1
        out, done = channel.receive_handshake(frame(token))
        token = None
        for reply in unframe(out):
            token = client.step(reply)
        if done:
            assert client.complete
            assert not token
            return rounds
        assert token, "server wants more but the client has nothing to say"


@pytest.fixture(scope="module")
def ticket(kdc: Realm) -> Path:
    return kdc.kinit("test1")


@pytest.fixture(scope="module")
def forwardable_ticket(kdc: Realm) -> Path:
    return kdc.kinit("test1", forwardable=True)


@pytest.fixture
def pair(kdc: Realm, ticket: Path) -> Iterator[tuple[GssChannel, gssapi.SecurityContext]]:
    channel = GssChannel(kdc.acceptor_credentials())
    client = client_context(kdc, ticket)
    establish(channel, client)
    yield channel, client


def client_send(client: gssapi.SecurityContext, data: bytes, *, encrypt: bool = True) -> bytes:
    limit = client.get_wrap_size_limit(MAX_DATA_PAYLOAD, encrypt)
    return b"".join(
        frame(client.wrap(data[i : i + limit], encrypt).message) for i in range(0, len(data), limit)
    )


def client_receive(client: gssapi.SecurityContext, raw: bytes) -> bytes:
    out = []
    for packet in unframe(raw):
        result = client.unwrap(packet)
        assert result.encrypted
        out.append(result.message)
    return b"".join(out)


# --- handshake --------------------------------------------------------------------------------


def test_handshake_reports_the_principal(kdc: Realm, ticket: Path) -> None:
    channel = GssChannel(kdc.acceptor_credentials())
    assert channel.state is State.HANDSHAKE
    assert channel.principal is None
    assert establish(channel, client_context(kdc, ticket)) == 1  # krb5: AP-REQ, AP-REP
    assert channel.handshake_done
    assert channel.principal == "test1@EXAMPLE.COM"
    assert channel.delegated_credentials is False
    assert 0 < channel.max_plaintext_chunk < MAX_DATA_PAYLOAD
    assert channel.handshake() == (b"", True)


def test_default_acceptor_uses_krb5_ktname(kdc: Realm, ticket: Path) -> None:
    # None = GSS_C_NO_CREDENTIAL, as PostgreSQL; the fixture exported KRB5_KTNAME.
    channel = GssChannel(None)
    establish(channel, client_context(kdc, ticket))
    assert channel.principal == "test1@EXAMPLE.COM"


def test_initial_bytes_and_split_tokens(kdc: Realm, ticket: Path) -> None:
    client = client_context(kdc, ticket)
    first = frame(client.step())
    # Part of the first packet came in behind GSSENCRequest; the rest arrives byte by byte.
    channel = GssChannel(kdc.acceptor_credentials(), first[:3])
    assert channel.handshake() == (b"", False)
    for i in range(3, len(first) - 1):
        assert channel.receive_handshake(first[i : i + 1]) == (b"", False)
    out, done = channel.receive_handshake(first[-1:])
    assert done
    client.step(unframe(out)[0])
    assert client.complete


def test_bytes_behind_the_last_token_are_data(kdc: Realm, ticket: Path) -> None:
    client = client_context(kdc, ticket)
    channel = GssChannel(kdc.acceptor_credentials())
    # PostgreSQL reads one handshake packet at a time: what follows is be_gssapi_read's.
    out, done = channel.receive_handshake(frame(client.step()) + b"\x00\x00")
    assert done
    client.step(unframe(out)[0])
    assert channel.feed(b"") == b""
    assert channel.feed(b"\x00\x05") == b""  # with the buffered bytes: a 5-byte packet
    with pytest.raises(GssError) as info:
        channel.feed(b"abcde")
    assert info.value.message == "GSSAPI unwrap error"


def test_delegation_needs_accept_delegation(kdc: Realm, forwardable_ticket: Path) -> None:
    off = GssChannel(kdc.acceptor_credentials())
    establish(off, client_context(kdc, forwardable_ticket, delegate=True))
    assert off.delegated_credentials is False
    assert off.delegated_creds is None

    on = GssChannel(kdc.acceptor_credentials(), accept_delegation=True)
    establish(on, client_context(kdc, forwardable_ticket, delegate=True))
    assert on.delegated_credentials is True
    assert on.delegated_creds is not None

    plain = GssChannel(kdc.acceptor_credentials(), accept_delegation=True)
    establish(plain, client_context(kdc, forwardable_ticket))
    assert plain.delegated_credentials is False


def test_oversize_handshake_token_is_rejected(kdc: Realm) -> None:
    channel = GssChannel(kdc.acceptor_credentials())
    # Refused on the length word alone, before the body arrives.
    with pytest.raises(GssError) as info:
        channel.receive_handshake(LENGTH.pack(70000))
    assert info.value.message == "oversize GSSAPI packet sent by the client (70000 > 65532)"
    assert info.value.detail is None
    assert channel.state is State.FAILED
    with pytest.raises(IllegalChannelUse):
        channel.handshake()


def test_largest_handshake_token_reaches_gssapi(kdc: Realm) -> None:
    channel = GssChannel(kdc.acceptor_credentials())
    header = LENGTH.pack(MAX_HANDSHAKE_TOKEN)
    assert channel.receive_handshake(header + b"\x60" * 1000) == (b"", False)
    with pytest.raises(GssError) as info:
        channel.receive_handshake(b"\x60" * (MAX_HANDSHAKE_TOKEN - 1000))
    # Not oversize: the garbage token went to gss_accept_sec_context, which refused it.
    assert info.value.message == "could not accept GSSAPI security context"
    assert info.value.detail and ": " in info.value.detail
    assert info.value.log_message.startswith("could not accept GSSAPI security context: ")


def test_ticket_for_another_service_is_refused(kdc: Realm, ticket: Path) -> None:
    kdc.kadmin("addprinc -randkey postgres/elsewhere")  # not in the keytab
    client = gssapi.SecurityContext(
        usage="initiate",
        name=gssapi.Name("postgres@elsewhere", gssapi.NameType.hostbased_service),
        creds=kdc.initiator_credentials(ticket),
        flags=LIBPQ_FLAGS,
    )
    channel = GssChannel(kdc.acceptor_credentials())
    with pytest.raises(GssError) as info:
        channel.receive_handshake(frame(client.step()))
    assert info.value.message == "could not accept GSSAPI security context"


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300))
def test_handshake_fuzz(kdc: Realm, data: bytes) -> None:
    channel = GssChannel(kdc.acceptor_credentials())
    try:
        out, done = channel.receive_handshake(data)
    except GssError:
        assert channel.state is State.FAILED
    else:
        assert (out, done) == (b"", False)


# --- data phase -------------------------------------------------------------------------------


def test_data_both_ways(pair: tuple[GssChannel, gssapi.SecurityContext]) -> None:
    channel, client = pair
    assert channel.feed(client_send(client, b"Q\x00\x00\x00\x0dSELECT 1\x00")) == (
        b"Q\x00\x00\x00\x0dSELECT 1\x00"
    )
    assert client_receive(client, channel.encrypt(b"Z\x00\x00\x00\x05I")) == b"Z\x00\x00\x00\x05I"
    assert channel.encrypt(b"") == b""
    assert channel.feed(b"") == b""


def test_one_megabyte_each_way(pair: tuple[GssChannel, gssapi.SecurityContext]) -> None:
    channel, client = pair
    payload = random.Random(1).randbytes(MB)

    raw = channel.encrypt(payload)
    packets = unframe(raw)
    assert all(len(p) + 4 <= codes.GSS_MAX_PACKET_SIZE for p in packets)
    assert len(packets) == -(-MB // channel.max_plaintext_chunk)
    assert client_receive(client, raw) == payload
    assert channel.encrypt(memoryview(payload)[:100]) != b""  # any buffer type

    sent = client_send(client, payload)
    # Random cuts: packet boundaries never line up with reads.
    rng = random.Random(2)
    received = []
    pos = 0
    while pos < len(sent):
        step = rng.randint(1, 40000)
        received.append(channel.feed(sent[pos : pos + step]))
        pos += step
    assert b"".join(received) == payload


def test_byte_by_byte_and_trailing_partial(pair: tuple[GssChannel, gssapi.SecurityContext]) -> None:
    channel, client = pair
    first = client_send(client, b"first")
    second = client_send(client, b"second")
    got = [channel.feed(first[i : i + 1]) for i in range(len(first))]
    assert got[-1] == b"first" and not any(got[:-1])
    # A whole packet plus the start of the next: the whole one now, the rest later.
    assert channel.feed(second + first[:0]) == b"second"
    third = client_send(client, b"third")
    assert channel.feed(third[:7]) == b""
    assert channel.feed(bytearray(third[7:])) == b"third"


def test_largest_data_packet_waits_for_its_body(
    pair: tuple[GssChannel, gssapi.SecurityContext],
) -> None:
    channel, _client = pair
    assert channel.feed(LENGTH.pack(MAX_DATA_PAYLOAD)) == b""
    assert channel.feed(b"\x00" * (MAX_DATA_PAYLOAD - 1)) == b""
    assert channel.state is State.OPEN


def test_oversize_data_length_word(kdc: Realm, ticket: Path) -> None:
    channel = GssChannel(kdc.acceptor_credentials())
    establish(channel, client_context(kdc, ticket))
    with pytest.raises(GssError) as info:
        channel.feed(LENGTH.pack(MAX_DATA_PAYLOAD + 1))
    assert info.value.message == "oversize GSSAPI packet sent by the client (16381 > 16380)"
    assert channel.state is State.FAILED
    with pytest.raises(IllegalChannelUse):
        channel.feed(b"")
    with pytest.raises(IllegalChannelUse):
        channel.encrypt(b"x")


def test_packet_without_confidentiality_is_rejected(
    pair: tuple[GssChannel, gssapi.SecurityContext],
) -> None:
    channel, client = pair
    with pytest.raises(GssError) as info:
        channel.feed(client_send(client, b"integrity only", encrypt=False))
    assert info.value.message == "incoming GSSAPI message did not use confidentiality"


def test_tampered_packet_is_rejected(pair: tuple[GssChannel, gssapi.SecurityContext]) -> None:
    channel, client = pair
    packet = bytearray(client_send(client, b"payload"))
    packet[-1] ^= 1
    with pytest.raises(GssError) as info:
        channel.feed(bytes(packet))
    assert info.value.message == "GSSAPI unwrap error"
    assert info.value.detail


def test_replayed_packet_is_rejected(pair: tuple[GssChannel, gssapi.SecurityContext]) -> None:
    channel, client = pair
    packet = client_send(client, b"once")
    assert channel.feed(packet) == b"once"
    with pytest.raises(GssError):
        channel.feed(packet)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=200))
def test_data_fuzz(kdc: Realm, ticket: Path, data: bytes) -> None:
    channel = GssChannel(kdc.acceptor_credentials())
    establish(channel, client_context(kdc, ticket))
    try:
        assert channel.feed(data) == b""
    except GssError:
        assert channel.state is State.FAILED


def test_feed_before_open_buffers(kdc: Realm) -> None:
    channel = GssChannel(kdc.acceptor_credentials())
    assert channel.feed(b"\x00\x00") == b""
    with pytest.raises(IllegalChannelUse):
        channel.encrypt(b"x")


# --- AuthenticationGSS / GSSContinue (no encryption) ------------------------------------------


def auth_request(message: bytes) -> tuple[int, bytes]:
    assert message[:1] == b"R"
    (length, code) = struct.unpack_from("!II", message, 1)
    assert length == len(message) - 1
    return code, message[9:]


def test_exchange_end_to_end(kdc: Realm, ticket: Path) -> None:
    exchange = GssAuthExchange(kdc.acceptor_credentials(), user="test1")
    assert exchange.start() == b"R\x00\x00\x00\x08\x00\x00\x00\x07"
    client = client_context(kdc, ticket)
    outcome = exchange.receive(b"p", client.step())
    assert isinstance(outcome, Success)
    assert outcome.principal == "test1@EXAMPLE.COM"
    assert outcome.delegated is False
    code, token = auth_request(outcome.output)
    assert code == codes.AUTH_GSS_CONTINUE
    assert client.step(token) is None
    assert client.complete
    assert exchange.state is ExchangeState.DONE
    with pytest.raises(IllegalMove):
        exchange.receive(b"p", b"")


def test_exchange_in_steps(kdc: Realm, ticket: Path) -> None:
    exchange = GssAuthExchange(None, user="test1")
    with pytest.raises(IllegalMove):
        exchange.receive(b"p", b"")
    exchange.start()
    with pytest.raises(IllegalMove):
        exchange.start()
    client = client_context(kdc, ticket)
    token = client.step()
    outcome = exchange.receive(b"p", memoryview(token))
    while isinstance(outcome, Send):  # krb5 finishes in one step; SPNEGO may not
        outcome = exchange.receive(b"p", client.step(auth_request(outcome.data)[1]))
    assert isinstance(outcome, Success)


def test_exchange_delegation(kdc: Realm, forwardable_ticket: Path) -> None:
    for accept, delegate, expected in [
        (True, True, True),
        (False, True, False),
        (True, False, False),
    ]:
        exchange = GssAuthExchange(
            kdc.acceptor_credentials(), user="test1", accept_delegation=accept
        )
        exchange.start()
        client = client_context(kdc, forwardable_ticket, delegate=delegate)
        outcome = exchange.receive(b"p", client.step())
        assert isinstance(outcome, Success)
        assert outcome.delegated is expected
        assert (outcome.delegated_creds is not None) is expected


def test_exchange_wrong_message_type(kdc: Realm) -> None:
    exchange = GssAuthExchange(kdc.acceptor_credentials(), user="test1")
    exchange.start()
    outcome = exchange.receive(b"Q", b"SELECT 1\x00")
    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, ProtocolViolation)
    assert outcome.error.sqlstate == "08P01"
    assert outcome.error.message == "expected GSS response, got message type 81"
    assert outcome.output == b""


def test_exchange_bad_token(kdc: Realm) -> None:
    exchange = GssAuthExchange(kdc.acceptor_credentials(), user="test1")
    exchange.start()
    outcome = exchange.receive(b"p", b"\x60\x01garbage")
    assert isinstance(outcome, Failure)
    assert outcome.error.sqlstate == "28000"
    assert outcome.error.message == 'GSSAPI authentication failed for user "test1"'
    assert outcome.error.log_detail
    assert outcome.error.log_detail.startswith("accepting GSS security context failed: ")


def test_exchange_token_too_long(kdc: Realm) -> None:
    exchange = GssAuthExchange(kdc.acceptor_credentials(), user="test1")
    exchange.start()
    # PG_MAX_AUTH_TOKEN_LENGTH bounds the length word (which counts itself), as
    # pq_getmessage does: a 65532-byte token has length word 65536, one too many.
    outcome = exchange.receive(b"p", b"\x00" * (codes.MAX_AUTH_TOKEN_LENGTH - 3))
    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, SilentClose)
    assert GssAuthExchange.MAX_MESSAGE_LENGTH == 65535
    longest = GssAuthExchange(kdc.acceptor_credentials(), user="test1")
    longest.start()
    accepted = longest.receive(b"p", b"\x00" * (codes.MAX_AUTH_TOKEN_LENGTH - 4))
    assert isinstance(accepted, Failure)  # garbage, but judged by GSSAPI, not by length
    assert not isinstance(accepted.error, SilentClose)
