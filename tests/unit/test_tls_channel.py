"""TlsChannel: two channels (server and client) talking through memory, no sockets; the
ChannelInfo a real handshake reports."""

from __future__ import annotations

import dataclasses
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from conftest_tls import CertFactory, client_channel, connect, handshake
from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from pggate.transport import ChannelError, ChannelInfo, ChannelKind
from pggate.transport.tls import TlsChannel, TlsError, TlsHandshakeError


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> CertFactory:
    return CertFactory(tmp_path_factory.mktemp("tls-channel"))


@pytest.fixture(scope="module")
def server_ctx(factory: CertFactory) -> ssl.SSLContext:
    return factory.server_context(ssl_ca_file=str(factory.ca.cert_path))


def test_handshake_and_facts(factory: CertFactory) -> None:
    issued = factory.server("facts")
    client, server = connect(factory.server_context(issued), factory.client_context())
    assert server.handshake_done and client.handshake_done
    assert server.alpn == client.alpn == "postgresql"
    assert server.version == "TLSv1.3"
    assert server.cipher is not None and server.cipher[1] >= 128
    assert server.peer_cert_der is None and not server.peer_cert_verified
    assert server.peer_common_name is None and server.peer_dn_rfc2253 is None
    assert client.peer_cert_der == issued.der and client.peer_cert_verified


def test_data_both_ways_small_and_10mb(factory: CertFactory, server_ctx: ssl.SSLContext) -> None:
    client, server = connect(server_ctx, factory.client_context())
    assert server.feed(client.encrypt(b"Q\x00\x00\x00\x0dselect 1\x00")) == (
        b"Q\x00\x00\x00\x0dselect 1\x00"
    )
    assert client.feed(server.encrypt(b"Z\x00\x00\x00\x05I")) == b"Z\x00\x00\x00\x05I"
    big = os.urandom(10 * 1024 * 1024)
    assert server.feed(client.encrypt(big)) == big
    assert client.feed(server.encrypt(big)) == big


def test_a_large_feed_ending_in_close_notify(
    factory: CertFactory, server_ctx: ssl.SSLContext
) -> None:
    """Fed in slices (a memory BIO keeps its largest size): the data, then the close, whole."""
    client, server = connect(server_ctx, factory.client_context())
    big = os.urandom(300_000)
    assert server.feed(client.encrypt(big) + client.close()) == big
    assert server.peer_closed


def test_records_split_anywhere(factory: CertFactory, server_ctx: ssl.SSLContext) -> None:
    client, server = connect(server_ctx, factory.client_context())
    wire = client.encrypt(b"a" * 40000) + client.encrypt(b"tail")
    got = b"".join(server.feed(wire[i : i + 997]) for i in range(0, len(wire), 997))
    assert got == b"a" * 40000 + b"tail"


def test_client_hello_byte_by_byte(factory: CertFactory, server_ctx: ssl.SSLContext) -> None:
    client = client_channel(factory.client_context())
    server = TlsChannel(server_ctx)
    hello, done = client.handshake()
    assert not done and hello[0] == 0x16
    for i in range(len(hello) - 1):
        assert server.feed(hello[i : i + 1]) == b""
        assert server.handshake() == (b"", False)
    server.feed(hello[-1:])
    flight, done = server.handshake()
    assert flight and not done
    client.feed(flight)
    handshake(client, server)
    assert server.feed(client.encrypt(b"ok")) == b"ok"


def test_pipelined_initial_bytes(factory: CertFactory, server_ctx: ssl.SSLContext) -> None:
    client = client_channel(factory.client_context())
    hello, _ = client.handshake()
    server = TlsChannel(server_ctx, hello)  # e.g. a ClientHello behind SSLRequest
    flight, done = server.handshake()
    assert flight and not done
    client.feed(flight)
    handshake(client, server)
    assert client.feed(server.encrypt(b"R")) == b"R"


def test_plaintext_in_the_handshake_flight_comes_out_of_the_next_feed(
    factory: CertFactory, server_ctx: ssl.SSLContext
) -> None:
    client = client_channel(factory.client_context())
    server = TlsChannel(server_ctx)
    server.feed(client.handshake()[0])
    client.feed(server.handshake()[0])
    finished, client_done = client.handshake()
    assert client_done  # TLS 1.3: the client may send data right behind its Finished
    assert server.feed(finished + client.encrypt(b"startup")) == b""  # still handshaking
    assert server.handshake()[1]
    assert server.feed(b"") == b"startup"


def test_alpn_absent_and_wrong(factory: CertFactory, server_ctx: ssl.SSLContext) -> None:
    client, server = connect(server_ctx, factory.client_context(alpn=[]))
    assert server.alpn is None and client.alpn is None
    # be-secure-openssl.c:alpn_cb: ALPN without "postgresql" is a fatal alert.
    client = client_channel(factory.client_context(alpn=["http/1.1"]))
    server = TlsChannel(server_ctx, client.handshake()[0])
    with pytest.raises(TlsHandshakeError) as caught:
        server.handshake()
    assert caught.value.message == "no application protocol"
    assert caught.value.output  # the alert for the client
    assert caught.value.log_message == "could not accept SSL connection: no application protocol"
    with pytest.raises(TlsHandshakeError, match="no application protocol"):
        client.feed(caught.value.output)
        client.handshake()


def test_client_certificate_verified(factory: CertFactory, server_ctx: ssl.SSLContext) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PGDG"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Testing"),
            x509.NameAttribute(NameOID.COMMON_NAME, "ssltestuser-dn"),
        ]
    )
    cert = factory.client("client-dn", subject)
    _client, server = connect(server_ctx, factory.client_context(cert))
    assert server.peer_cert_verified
    assert server.peer_cert_der == cert.der
    assert server.peer_common_name == "ssltestuser-dn"
    assert server.peer_dn_rfc2253 == "CN=ssltestuser-dn,OU=Testing,OU=Engineering,O=PGDG"


def test_client_certificate_from_unknown_ca(
    factory: CertFactory, server_ctx: ssl.SSLContext, tmp_path: Path
) -> None:
    stranger = CertFactory(tmp_path, "Other CA").client("stranger", "ssltestuser")
    client = client_channel(factory.client_context(stranger))
    server = TlsChannel(server_ctx)
    with pytest.raises(TlsHandshakeError) as caught:
        handshake(client, server)
    assert caught.value.message == "certificate verify failed"
    assert caught.value.verify_message == "unable to get local issuer certificate"


def test_embedded_null_in_common_name(factory: CertFactory, server_ctx: ssl.SSLContext) -> None:
    cert = factory.client("nul", "evil\x00.example")
    client = client_channel(factory.client_context(cert))
    with pytest.raises(TlsHandshakeError) as caught:
        handshake(client, TlsChannel(server_ctx))
    assert caught.value.log_message == "SSL certificate's common name contains embedded null"


def test_close_notify(factory: CertFactory, server_ctx: ssl.SSLContext) -> None:
    client, server = connect(server_ctx, factory.client_context())
    assert client.feed(server.encrypt(b"bye") + server.close()) == b"bye"
    assert client.peer_closed
    assert server.feed(client.close()) == b""
    assert server.peer_closed


def test_not_tls_at_all(server_ctx: ssl.SSLContext) -> None:
    server = TlsChannel(server_ctx, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(TlsHandshakeError) as caught:
        server.handshake()
    assert caught.value.message == "http request"
    server = TlsChannel(server_ctx, b"\x16\x09\x09\x00\x05hello")
    with pytest.raises(TlsHandshakeError) as caught:
        server.handshake()
    assert caught.value.protocol_hint


def test_protocol_mismatch_sets_hint(factory: CertFactory) -> None:
    server_ctx = factory.server_context(ssl_min_protocol_version="TLSv1.3")
    client_ctx = factory.client_context()
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(TlsHandshakeError) as caught:
        connect(server_ctx, client_ctx)
    assert caught.value.protocol_hint
    assert caught.value.message == "unsupported protocol"


def _openssl_rfc2253(cert_path: Path) -> str:
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", str(cert_path)],
        check=True,
        capture_output=True,
    ).stdout
    return out.decode("utf-8").strip().removeprefix("subject=")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_dn_matches_x509_name_print_ex(factory: CertFactory, server_ctx: ssl.SSLContext) -> None:
    tricky = x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")]),
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'A, B+C "q" <x>;y\\z'),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "#lead trail "),
                ]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.LOCALITY_NAME, "Zürich", _type=_ASN1Type.BMPString)]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.EMAIL_ADDRESS, "u@example.org")]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(x509.ObjectIdentifier("1.2.3.4.5"), "odd=val")]
            ),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "org")]),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.COMMON_NAME, " ünïcødé\x01 ")]
            ),
        ]
    )
    cert = factory.client("tricky", tricky)
    _client, server = connect(server_ctx, factory.client_context(cert))
    expected = _openssl_rfc2253(cert.cert_path)
    assert "+" in expected and "\\C3\\BC" in expected and "#" in expected
    assert server.peer_dn_rfc2253 == expected
    assert server.peer_common_name == " ünïcødé\x01 "


def test_channel_info_from_a_real_handshake(
    factory: CertFactory, server_ctx: ssl.SSLContext
) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PGDG"),
            x509.NameAttribute(NameOID.COMMON_NAME, "ssltestuser"),
        ]
    )
    cert = factory.client("info", subject)
    client = client_channel(factory.client_context(cert))
    end_point = bytes(range(32))
    server = TlsChannel(server_ctx, end_point_hash=end_point)
    assert server.info == ChannelInfo(kind=ChannelKind.SSL)  # the kind only, until done
    handshake(client, server)
    info = server.info
    assert info.kind is ChannelKind.SSL
    assert (info.ssl, info.gss) == (True, False)
    assert info.tls_version == "TLSv1.3" == client.version
    assert server.cipher is not None
    assert (info.cipher, info.bits) == server.cipher
    assert info.bits is not None and info.bits >= 128
    assert info.alpn == "postgresql"
    assert info.peer_cert_verified
    assert info.peer_common_name == "ssltestuser"
    assert info.peer_subject_dn == "CN=ssltestuser,O=PGDG"
    assert info.peer_issuer_dn == "CN=Test CA"
    assert info.peer_serial == str(cert.cert.serial_number)  # decimal, as pg_stat_ssl
    assert info.end_point_hash == end_point
    assert (info.gss_principal, info.gss_delegated) == (None, False)
    assert server.info == info
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.cipher = "NULL"  # type: ignore[misc]


def test_channel_info_without_a_client_certificate(
    factory: CertFactory, server_ctx: ssl.SSLContext
) -> None:
    _client, server = connect(server_ctx, factory.client_context(alpn=[]))
    info = server.info
    assert info.ssl and info.alpn is None and info.end_point_hash is None
    assert not info.peer_cert_verified
    assert info.peer_common_name is info.peer_subject_dn is None
    assert info.peer_issuer_dn is info.peer_serial is None


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_channel_info_issuer_and_serial_match_openssl(
    factory: CertFactory, server_ctx: ssl.SSLContext
) -> None:
    cert = factory.client("serial", "ssltestuser")
    _client, server = connect(server_ctx, factory.client_context(cert))
    out = subprocess.run(
        [
            "openssl",
            "x509",
            "-noout",
            "-serial",
            "-issuer",
            "-nameopt",
            "RFC2253",
            "-in",
            str(cert.cert_path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    serial = int(out[0].removeprefix("serial="), 16)
    assert server.info.peer_serial == str(serial)
    assert server.info.peer_issuer_dn == out[1].removeprefix("issuer=")


def test_errors_are_channel_errors(factory: CertFactory, server_ctx: ssl.SSLContext) -> None:
    """One error type for every channel: the bytes owed to the peer, the line to log."""
    server = TlsChannel(server_ctx, b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ChannelError) as handshake_failure:
        server.handshake()
    assert isinstance(handshake_failure.value, TlsHandshakeError)
    assert str(handshake_failure.value) == "could not accept SSL connection: http request"
    assert handshake_failure.value.output == b""  # OpenSSL sends no alert to an HTTP client
    _client, server = connect(server_ctx, factory.client_context())
    server.close()
    with pytest.raises(ChannelError) as data_failure:
        server.encrypt(b"after close_notify")
    assert isinstance(data_failure.value, TlsError)
    assert (str(data_failure.value), data_failure.value.detail) == ("protocol is shutdown", None)
