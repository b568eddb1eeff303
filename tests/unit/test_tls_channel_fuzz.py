"""TlsChannel (transport/tls.py) under hypothesis: any bytes, before, during and after a real
handshake through memory, cut anywhere. The one contract: a channel returns bytes or raises
ChannelError (the server's one ``except``), never another exception; undamaged traffic cut
anywhere goes through unchanged. Last, a certificate OpenSSL verifies and cryptography refuses
(version 4), on both of pggate's TLS ends.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest
from conftest_tls import CertFactory, client_channel, connect
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import event, given, settings
from hypothesis import strategies as st

from pggate.tls.client import (
    BackendTlsSettings,
    HandshakeFacts,
    check_after_handshake,
    peer_end_point_hash,
)
from pggate.tls.peername import NO_NAME
from pggate.transport import ChannelError
from pggate.transport.tls import TlsChannel, TlsError, TlsHandshakeError


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> CertFactory:
    return CertFactory(tmp_path_factory.mktemp("tls-fuzz"))


@pytest.fixture(scope="module")
def server_ctx(factory: CertFactory) -> ssl.SSLContext:
    return factory.server_context(ssl_ca_file=str(factory.ca.cert_path))


@pytest.fixture(scope="module")
def client_contexts(factory: CertFactory) -> list[ssl.SSLContext]:
    """Without and with a client certificate."""
    return [factory.client_context(), factory.client_context(factory.client("fuzz", "alice"))]


# A handshake's bytes differ from run to run (nonces, keys, signatures), so what is done to them
# is drawn beforehand, as fractions of whatever length they turn out to have: hypothesis then
# sees the same draws for the same example.
FRACTIONS = st.integers(0, 2**16)


def at(fraction: int, size: int) -> int:
    return fraction * size // (2**16 + 1)


@dataclass(frozen=True)
class Cuts:
    fractions: tuple[int, ...]

    def apply(self, data: bytes) -> list[bytes]:
        """``data`` cut (empty chunks included: a read may decrypt to nothing)."""
        edges = [0, *sorted(at(f, len(data) + 1) for f in self.fractions), len(data)]
        return [data[a:b] for a, b in pairwise(edges)]


CUTS = st.lists(FRACTIONS, max_size=6).map(lambda f: Cuts(tuple(f)))


@dataclass(frozen=True)
class Damage:
    how: str
    start: int
    stop: int
    blob: bytes
    bit: int

    def apply(self, data: bytes) -> bytes:
        if not data or self.how == "replace":
            return self.blob
        i = at(self.start, len(data))
        if self.how == "flip":
            return data[:i] + bytes([data[i] ^ self.bit]) + data[i + 1 :]
        if self.how == "cut":
            return data[:i]
        if self.how == "insert":
            return data[:i] + self.blob + data[i:]
        if self.how == "extend":
            return data + self.blob
        j = i + 1 + at(self.stop, len(data) - i)  # drop data[i:j]
        return data[:i] + data[j:]


DAMAGE = st.builds(
    Damage,
    st.sampled_from(["flip", "cut", "insert", "extend", "replace", "drop"]),
    FRACTIONS,
    FRACTIONS,
    st.binary(min_size=1, max_size=24),
    st.integers(1, 255),
)


# A TLS record header (handshake, TLS 1.0 on the wire) in front of noise: OpenSSL reads further.
RECORDISH = st.builds(
    lambda kind, version, body: bytes([kind, 3, version]) + len(body).to_bytes(2, "big") + body,
    st.sampled_from([0x14, 0x15, 0x16, 0x17, 0x18]),
    st.integers(0, 4),
    st.binary(max_size=60),
)


@settings(deadline=None)  # a handshake may take over 200 ms on a busy machine
@given(garbage=st.one_of(st.binary(max_size=80), RECORDISH), cuts=CUTS)
def test_any_bytes_before_a_handshake_end_in_a_handshake_error(
    server_ctx: ssl.SSLContext, garbage: bytes, cuts: Cuts
) -> None:
    pieces = cuts.apply(garbage)
    server = TlsChannel(server_ctx, pieces[0])  # e.g. bytes pipelined behind SSLRequest
    try:
        out, done = server.handshake()
        for chunk in pieces[1:]:
            assert server.feed(chunk) == b""  # nothing is plaintext before the handshake ends
            more, done = server.handshake()
            out += more
    except TlsHandshakeError as exc:
        event("handshake error")
        assert str(exc).startswith("could not accept SSL connection: ")
        assert isinstance(exc, ChannelError)
        return
    event("still waiting")
    assert not done and not server.handshake_done
    assert server.info.tls_version is None  # kind only, until the handshake is done


@settings(deadline=None)  # a handshake may take over 200 ms on a busy machine
@given(
    which=st.integers(0, 1),
    to_server=st.booleans(),
    plan=st.lists(st.tuples(st.none() | DAMAGE, CUTS), min_size=6, max_size=6),
)
def test_damaged_handshake_flights_fail_only_with_channel_errors(
    server_ctx: ssl.SSLContext,
    client_contexts: list[ssl.SSLContext],
    which: int,
    to_server: bool,
    plan: list[tuple[Damage | None, Cuts]],
) -> None:
    """A real handshake whose flights (one direction's) may be damaged and cut anywhere."""
    client, server = client_channel(client_contexts[which]), TlsChannel(server_ctx)
    garbled = False
    try:
        for damage, cuts in plan:
            out, client_done = client.handshake()
            if to_server and out and damage is not None:
                out, garbled = damage.apply(out), True
            for chunk in cuts.apply(out):
                server.feed(chunk)
            back, server_done = server.handshake()
            if not to_server and back and damage is not None:
                back, garbled = damage.apply(back), True
            for chunk in cuts.apply(back):
                client.feed(chunk)
            if client_done and server_done:
                break
    except ChannelError as exc:
        event(f"{type(exc).__name__} on the {'server' if to_server else 'client'}")
        assert garbled, f"an undamaged handshake failed: {exc}"
        assert str(exc)
        return
    if not garbled:
        assert server.handshake_done and client.handshake_done
        assert server.feed(b"") == b""
        assert server.feed(client.encrypt(b"startup")) == b"startup"
        assert (server.info.peer_common_name == "alice") is (which == 1)
    event("done" if server.handshake_done else "waiting")


@settings(deadline=None)  # a handshake may take over 200 ms on a busy machine
@given(
    plains=st.lists(st.binary(max_size=300), max_size=5),
    damage=st.none() | st.none() | DAMAGE,
    goodbye=st.booleans(),
    cuts=CUTS,
    back_cuts=CUTS,
)
def test_any_bytes_after_a_handshake_are_plaintext_or_a_tls_error(
    server_ctx: ssl.SSLContext,
    client_contexts: list[ssl.SSLContext],
    plains: list[bytes],
    damage: Damage | None,
    goodbye: bool,
    cuts: Cuts,
    back_cuts: Cuts,
) -> None:
    client, server = connect(server_ctx, client_contexts[0])
    wire = b"".join(client.encrypt(p) for p in plains) + (client.close() if goodbye else b"")
    garbled = damage is not None
    if damage is not None:
        wire = damage.apply(wire)
    received = []
    try:
        for chunk in cuts.apply(wire):
            received.append(server.feed(chunk))
            server.pending_output()  # a KeyUpdate answer, say: bytes, never an exception
    except ChannelError as exc:
        assert isinstance(exc, TlsError)
        event("TlsError")
        assert garbled, f"undamaged records failed: {exc}"
        assert str(exc)
        return
    text = b"".join(received)
    if garbled:
        event("damage went unnoticed" if text == b"".join(plains) else "plaintext cut short")
        # Whatever came out is a prefix of what was sent: TLS never yields forged bytes.
        assert b"".join(plains).startswith(text)
        return
    assert text == b"".join(plains)
    assert server.peer_closed is goodbye
    # The other way round too, and the server's goodbye after all of it.
    reply = server.encrypt(b"".join(plains)) + server.close()
    assert b"".join(client.feed(c) for c in back_cuts.apply(reply)) == b"".join(plains)
    assert client.peer_closed


# --- a certificate OpenSSL takes and cryptography does not ----------------------------------


def as_version_4(der: bytes, ca_key: ec.EllipticCurvePrivateKey) -> bytes:
    """``der`` re-signed by the CA with its version field saying 4 (INTEGER 3): OpenSSL verifies
    it, cryptography refuses it with InvalidVersion, which is no ValueError."""
    tbs_at = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    tbs_len = der[tbs_at + 1]
    tbs_head = 2 if tbs_len < 0x80 else 2 + (tbs_len & 0x7F)
    size = (
        int.from_bytes(der[tbs_at + 2 : tbs_at + tbs_head], "big") if tbs_len >= 0x80 else tbs_len
    )
    tbs = der[tbs_at : tbs_at + tbs_head + size]
    rest = der[tbs_at + len(tbs) :]
    algorithm = rest[: 2 + rest[1]]
    v4 = tbs.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x03", 1)
    signature = ca_key.sign(v4, ec.ECDSA(hashes.SHA256()))
    body = v4 + algorithm + b"\x03" + der_length(len(signature) + 1) + b"\0" + signature
    return b"\x30" + der_length(len(body)) + body


def der_length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def test_a_verified_version_4_certificate_is_no_exception(
    factory: CertFactory, server_ctx: ssl.SSLContext, tmp_path: Path
) -> None:
    issued = factory.client("v4", "alice")
    assert isinstance(factory.ca.key, ec.EllipticCurvePrivateKey)
    v4 = as_version_4(issued.der, factory.ca.key)
    with pytest.raises(x509.InvalidVersion):
        x509.load_der_x509_certificate(v4)
    pem = tmp_path / "v4.crt"
    pem.write_bytes(ssl.DER_cert_to_PEM_cert(v4).encode())
    ctx = factory.client_context()
    ctx.load_cert_chain(str(pem), str(issued.key_path))
    _client, server = connect(server_ctx, ctx)
    # The server side: OpenSSL verified it; the facts that need cryptography stay unknown.
    info = server.info
    assert info.peer_cert_verified and info.peer_common_name == "alice"
    assert (info.peer_issuer_dn, info.peer_serial) == (None, None)
    # The client side (pggate toward a backend with such a certificate, verify-full): a refusal
    # in libpq's words, never an exception.
    assert (
        check_after_handshake(
            HandshakeFacts("postgresql", v4), BackendTlsSettings(sslmode="verify-full"), "h", False
        )
        == NO_NAME
    )
    with pytest.raises(ValueError):
        peer_end_point_hash(v4)
