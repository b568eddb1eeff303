"""pggate as a TLS client of its backend (pggate.tls.client, pggate.tls.peername): libpq 18's
initialize_SSL, open_client_SSL and verify-full rules, over real handshakes in memory."""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import random
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest_tls import CertFactory, Issued, cert_builder, sign, write_issued
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from pggate.errors import ConfigError
from pggate.tls import client as client_module
from pggate.tls.client import (
    BackendTlsConfigError,
    BackendTlsSettings,
    HandshakeFacts,
    build_client_context,
    check_after_handshake,
    describe_handshake_error,
    peer_end_point_hash,
    server_hostname_for_sni,
    verify_peer_name,
)
from pggate.tls.peername import inet_net_ntop, is_ip_address, wildcard_certificate_match

NO_ROOT_HINT = (
    "Either provide the file, use the system's trusted roots with sslrootcert=system, or "
    "change sslmode to disable server certificate verification."
)

# --------------------------------------------------------------------------------------------
# Certificates and handshakes
# --------------------------------------------------------------------------------------------

_SIGNER = ec.generate_private_key(ec.SECP256R1())


def der_tlv(tag: int, content: bytes) -> bytes:
    assert len(content) < 0x80
    return bytes([tag, len(content)]) + content


def make_cert(
    *,
    cn: str | None = None,
    cn_type: _ASN1Type | None = None,
    names: Sequence[x509.GeneralName] = (),
    raw_san: bytes | None = None,
    issuer: Issued | None = None,
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey]:
    """A server certificate: signed by ``issuer`` (else self-signed by a fixed key)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    if cn is None:
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pggate")])
    elif cn_type is None:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    else:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn, cn_type)])
    builder = cert_builder(subject, key, issuer=issuer).add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), False)
    if raw_san is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, raw_san), False
        )
    return sign(builder, issuer.key if issuer else _SIGNER, algorithm), key


def der_of(**kw: object) -> bytes:
    cert, _ = make_cert(**kw)  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.DER)


def dns(*names: str) -> list[x509.GeneralName]:
    return [x509.DNSName(n) for n in names]


def ips(*addresses: str) -> list[x509.GeneralName]:
    return [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]


def issue_server(
    factory: CertFactory, stem: str, *, cn: str, names: Sequence[x509.GeneralName]
) -> Issued:
    cert, key = make_cert(cn=cn, names=names, issuer=factory.ca)
    return write_issued(factory.dir, stem, cert, key)


@dataclass
class Outcome:
    client: ssl.SSLObject
    server: ssl.SSLObject
    client_error: ssl.SSLError | None
    server_error: ssl.SSLError | None
    sni: list[str | None]

    @property
    def ok(self) -> bool:
        return self.client_error is None and self.server_error is None


def handshake(
    client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, server_hostname: str | None = None
) -> Outcome:
    """Both handshakes through MemoryBIO pairs, no sockets; each side's error recorded."""
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda _obj, name, _ctx: sni.append(name)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    sides = [
        client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname),
        server_ctx.wrap_bio(s_in, s_out, server_side=True),
    ]
    wires = [(c_out, s_in), (s_out, c_in)]
    done = [False, False]
    errors: list[ssl.SSLError | None] = [None, None]
    for _ in range(10):
        for i, side in enumerate(sides):
            if not done[i] and errors[i] is None:
                try:
                    side.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    errors[i] = exc
            out, peer_in = wires[i]
            peer_in.write(out.read())
    return Outcome(sides[0], sides[1], errors[0], errors[1], sni)


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> CertFactory:
    return CertFactory(tmp_path_factory.mktemp("tls-client"))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> CertFactory:
    return CertFactory(tmp_path_factory.mktemp("tls-client-stranger"), ca_name="Stranger CA")


@pytest.fixture(scope="module")
def server(factory: CertFactory) -> Issued:
    return issue_server(
        factory, "db1", cn="db1", names=[*dns("localhost", "db1"), *ips("127.0.0.1", "::1")]
    )


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home directory: no ~/.postgresql defaults unless a test puts them there."""
    directory = tmp_path / "home"
    directory.mkdir()
    monkeypatch.setenv("HOME", str(directory))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return directory


def verified(factory: CertFactory, **kw: object) -> BackendTlsSettings:
    options: dict[str, object] = {
        "sslmode": "verify-full",
        "sslrootcert": str(factory.ca.cert_path),
    }
    options.update(kw)
    return BackendTlsSettings(**options)  # type: ignore[arg-type]


def name_hash(name: x509.Name) -> str:
    """OpenSSL's X509_NAME_hash (the hash-dir file name) for names of short plain strings:
    SHA-1 of the canonical encoding (values as lower-cased UTF8String, no outer SEQUENCE)."""
    canon = b""
    for rdn in name.rdns:
        body = b""
        for attr in rdn:
            value = " ".join(str(attr.value).split()).lower().encode()
            arcs = [int(a) for a in attr.oid.dotted_string.split(".")]
            oid = bytes([40 * arcs[0] + arcs[1]])
            for arc in arcs[2:]:
                chunk = [arc & 0x7F]
                arc >>= 7
                while arc:
                    chunk.append(0x80 | (arc & 0x7F))
                    arc >>= 7
                oid += bytes(reversed(chunk))
            body += der_tlv(0x30, der_tlv(0x06, oid) + der_tlv(0x0C, value))
        canon += der_tlv(0x31, body)
    return f"{int.from_bytes(hashlib.sha1(canon).digest()[:4], 'little'):08x}"


# --------------------------------------------------------------------------------------------
# verify-full through real handshakes
# --------------------------------------------------------------------------------------------


def test_verify_full_good_name_alpn_and_sni(factory: CertFactory, server: Issued) -> None:
    settings = verified(factory)
    ctx = build_client_context(settings)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname
    out = handshake(ctx, factory.server_context(server), server_hostname_for_sni("db1", settings))
    assert out.ok
    assert out.sni == ["db1"]
    assert out.client.selected_alpn_protocol() == "postgresql"
    assert out.client.version() == "TLSv1.3"
    assert check_after_handshake(out.client, settings, "db1", direct=True) is None
    assert check_after_handshake(out.client, settings, "DB1", direct=False) is None


def test_verify_full_wrong_name(factory: CertFactory) -> None:
    issued = issue_server(factory, "only-db1", cn="db1", names=dns("db1"))
    settings = verified(factory)
    out = handshake(build_client_context(settings), factory.server_context(issued), "db2")
    assert out.ok  # the chain is fine: the name is libpq's own check, after the handshake
    assert check_after_handshake(out.client, settings, "db2", direct=False) == (
        'server certificate for "db1" does not match host name "db2"'
    )
    # verify-ca checks the chain only
    assert (
        check_after_handshake(out.client, verified(factory, sslmode="verify-ca"), "db2", False)
        is None
    )


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", None),
        ("127.1", None),
        ("::1", None),
        ("0:0::1", None),
        ("localhost", None),
        (
            "127.0.0.2",
            'server certificate for "localhost" (and 3 other names) does not match host name '
            '"127.0.0.2"',
        ),
        (
            "::2",
            'server certificate for "localhost" (and 3 other names) does not match host name "::2"',
        ),
    ],
)
def test_ip_address_hosts(
    factory: CertFactory, server: Issued, host: str, expected: str | None
) -> None:
    settings = verified(factory)
    sni = server_hostname_for_sni(host, settings)
    out = handshake(build_client_context(settings), factory.server_context(server), sni)
    assert out.ok
    assert out.sni == [None if ":" in host or host[0].isdigit() else host]
    assert check_after_handshake(out.client, settings, host, direct=False) == expected


def test_untrusted_ca(factory: CertFactory, stranger: CertFactory, server: Issued) -> None:
    out = handshake(build_client_context(verified(stranger)), factory.server_context(server), "db1")
    assert isinstance(out.client_error, ssl.SSLCertVerificationError)
    assert out.client_error.verify_message == "unable to get local issuer certificate"
    assert describe_handshake_error(out.client_error, verified(stranger)) == (
        "SSL error: certificate verify failed"
    )


def test_revoked_server_certificate_via_crl_file(factory: CertFactory) -> None:
    revoked = issue_server(factory, "revoked-file", cn="db1", names=dns("db1"))
    fine = issue_server(factory, "fine-file", cn="db1", names=dns("db1"))
    crl = factory.crl(revoked, stem="revoked-file")
    settings = verified(factory, sslcrl=str(crl))
    bad = handshake(build_client_context(settings), factory.server_context(revoked), "db1")
    assert isinstance(bad.client_error, ssl.SSLCertVerificationError)
    assert bad.client_error.verify_message == "certificate revoked"
    assert handshake(build_client_context(settings), factory.server_context(fine), "db1").ok


def test_revoked_server_certificate_via_crl_directory(factory: CertFactory, tmp_path: Path) -> None:
    revoked = issue_server(factory, "revoked-dir", cn="db1", names=dns("db1"))
    fine = issue_server(factory, "fine-dir", cn="db1", names=dns("db1"))
    crl_dir = tmp_path / "crls"
    crl_dir.mkdir()
    crl = factory.crl(revoked, stem="revoked-dir")
    (crl_dir / f"{name_hash(factory.ca.cert.subject)}.r0").write_bytes(crl.read_bytes())
    settings = verified(factory, sslcrldir=str(crl_dir))
    bad = handshake(build_client_context(settings), factory.server_context(revoked), "db1")
    assert isinstance(bad.client_error, ssl.SSLCertVerificationError)
    assert bad.client_error.verify_message == "certificate revoked"
    assert handshake(build_client_context(settings), factory.server_context(fine), "db1").ok

    # A CRL directory is consulted during verification: without the issuer's CRL in it, CRL
    # checking is still on and fails, as with libpq.
    empty = tmp_path / "empty"
    empty.mkdir()
    out = handshake(
        build_client_context(verified(factory, sslcrldir=str(empty))),
        factory.server_context(fine),
    )
    assert isinstance(out.client_error, ssl.SSLCertVerificationError)
    assert out.client_error.verify_message == "unable to get certificate CRL"


def test_crl_defaults_and_silent_failures(factory: CertFactory, home: Path, tmp_path: Path) -> None:
    revoked = issue_server(factory, "revoked-home", cn="db1", names=dns("db1"))
    crl = factory.crl(revoked, stem="revoked-home")
    # A CRL file that cannot be loaded is ignored: no CRL checking at all.
    settings = verified(factory, sslcrl=str(tmp_path / "missing.crl"))
    assert handshake(build_client_context(settings), factory.server_context(revoked), "db1").ok
    # ~/.postgresql/root.crl is the default when neither sslcrl nor sslcrldir is given.
    (home / ".postgresql").mkdir()
    (home / ".postgresql" / "root.crl").write_bytes(crl.read_bytes())
    out = handshake(build_client_context(verified(factory)), factory.server_context(revoked), "db1")
    assert isinstance(out.client_error, ssl.SSLCertVerificationError)
    assert out.client_error.verify_message == "certificate revoked"


def test_crl_only_with_a_root_file(factory: CertFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    revoked = issue_server(factory, "revoked-system", cn="db1", names=dns("db1"))
    crl = str(factory.crl(revoked, stem="revoked-system"))
    # require without a root file: no verification, so no CRL either
    plain = BackendTlsSettings(sslmode="require", sslcrl=crl)
    assert handshake(build_client_context(plain), factory.server_context(revoked)).ok
    # sslrootcert=system: OpenSSL's default paths (SSL_CERT_FILE applies); libpq loads no CRL
    monkeypatch.setenv("SSL_CERT_FILE", str(factory.ca.cert_path))
    system = BackendTlsSettings(sslmode="verify-full", sslrootcert="system", sslcrl=crl)
    ctx = build_client_context(system)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    out = handshake(ctx, factory.server_context(revoked), "db1")
    assert out.ok
    assert check_after_handshake(out.client, system, "db1", direct=False) is None


# --------------------------------------------------------------------------------------------
# sslmode and the root certificate file
# --------------------------------------------------------------------------------------------


def test_require_with_root_file_verifies(
    factory: CertFactory, stranger: CertFactory, server: Issued, home: Path
) -> None:
    (home / ".postgresql").mkdir()
    root = home / ".postgresql" / "root.crt"
    root.write_bytes(stranger.ca.cert_path.read_bytes())
    require = BackendTlsSettings(sslmode="require")
    ctx = build_client_context(require)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    out = handshake(ctx, factory.server_context(server))
    assert isinstance(out.client_error, ssl.SSLCertVerificationError)
    root.write_bytes(factory.ca.cert_path.read_bytes())
    out = handshake(build_client_context(require), factory.server_context(server))
    assert out.ok
    # require never checks the name
    assert check_after_handshake(out.client, require, "elsewhere", direct=False) is None


def test_require_without_root_file_does_not_verify(
    factory: CertFactory, stranger: CertFactory
) -> None:
    untrusted = issue_server(stranger, "untrusted", cn="x", names=dns("x"))
    for mode in ("allow", "prefer", "require"):
        settings = BackendTlsSettings(sslmode=mode)
        ctx = build_client_context(settings)
        assert ctx.verify_mode == ssl.CERT_NONE
        out = handshake(ctx, stranger.server_context(untrusted))
        assert out.ok
        assert check_after_handshake(out.client, settings, "db1", direct=False) is None


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_verify_without_root_file(
    mode: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BackendTlsConfigError) as caught:
        build_client_context(BackendTlsSettings(sslmode=mode))
    default = home / ".postgresql" / "root.crt"
    assert caught.value.libpq_message == (
        f'root certificate file "{default}" does not exist\n{NO_ROOT_HINT}'
    )
    assert caught.value.message == f'root certificate file "{default}" does not exist'
    assert caught.value.hint == NO_ROOT_HINT
    assert caught.value.parameter == "backend"
    assert isinstance(caught.value, ConfigError)

    named = tmp_path / "nowhere.crt"
    with pytest.raises(BackendTlsConfigError, match='"' + str(named) + '" does not exist'):
        build_client_context(BackendTlsSettings(sslmode=mode, sslrootcert=str(named)))

    monkeypatch.setattr(client_module, "libpq_home_directory", lambda: None)
    with pytest.raises(BackendTlsConfigError) as caught:
        build_client_context(BackendTlsSettings(sslmode=mode))
    assert caught.value.libpq_message == (
        f"could not get home directory to locate root certificate file\n{NO_ROOT_HINT}"
    )


def test_home_directory_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    monkeypatch.setenv("HOME", "/somewhere")
    assert client_module.libpq_home_directory() == "/somewhere"
    monkeypatch.setenv("HOME", "")
    assert client_module.libpq_home_directory() == pwd.getpwuid(os.geteuid()).pw_dir


def test_unreadable_root_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate\n")
    with pytest.raises(BackendTlsConfigError) as caught:
        build_client_context(BackendTlsSettings(sslmode="require", sslrootcert=str(junk)))
    assert str(caught.value) == (
        f'could not read root certificate file "{junk}": no certificate or crl found'
    )


# --------------------------------------------------------------------------------------------
# Client certificates and keys
# --------------------------------------------------------------------------------------------


def test_client_certificate_with_encrypted_key(factory: CertFactory, server: Issued) -> None:
    alice = factory.client("alice-enc", "alice", passphrase=b"s3cret pass")
    settings = verified(
        factory, sslcert=str(alice.cert_path), sslkey=str(alice.key_path), sslpassword="s3cret pass"
    )
    server_ctx = factory.server_context(server, ssl_ca_file=str(factory.ca.cert_path))
    out = handshake(build_client_context(settings), server_ctx, "db1")
    assert out.ok
    assert out.server.getpeercert(binary_form=True) == alice.der


@pytest.mark.parametrize("password", ["wrong", None, ""])
def test_wrong_or_missing_key_password(factory: CertFactory, password: str | None) -> None:
    alice = factory.client("alice-bad", "alice", passphrase=b"right")
    settings = BackendTlsSettings(
        sslmode="require",
        sslcert=str(alice.cert_path),
        sslkey=str(alice.key_path),
        sslpassword=password,
    )
    with pytest.raises(BackendTlsConfigError) as caught:
        build_client_context(settings)
    assert caught.value.libpq_message == (
        f'could not load private key file "{alice.key_path}": bad decrypt'
    )
    assert "sslpassword" not in repr(settings)
    assert not password or password not in repr(settings)
    assert not password or password not in caught.value.libpq_message


def test_settings_repr_hides_the_password() -> None:
    settings = BackendTlsSettings(sslpassword="hunter2")
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)


def test_client_certificate_defaults_from_home(
    factory: CertFactory, server: Issued, home: Path
) -> None:
    bob = factory.client("bob-home", "bob")
    (home / ".postgresql").mkdir()
    for name, source in (("postgresql.crt", bob.cert_path), ("postgresql.key", bob.key_path)):
        (home / ".postgresql" / name).write_bytes(source.read_bytes())
    (home / ".postgresql" / "postgresql.key").chmod(0o600)
    server_ctx = factory.server_context(server, ssl_ca_file=str(factory.ca.cert_path))
    out = handshake(build_client_context(BackendTlsSettings(sslmode="require")), server_ctx)
    assert out.ok and out.server.getpeercert(binary_form=True) == bob.der


def test_missing_client_certificate_is_skipped(
    factory: CertFactory, server: Issued, tmp_path: Path
) -> None:
    server_ctx = factory.server_context(server, ssl_ca_file=str(factory.ca.cert_path))
    for cert in (tmp_path / "none.crt", server.cert_path / "below"):  # ENOENT, ENOTDIR
        settings = BackendTlsSettings(sslmode="require", sslcert=str(cert), sslkey="/nonexistent")
        out = handshake(build_client_context(settings), server_ctx)
        assert out.ok and out.server.getpeercert(binary_form=True) is None


def test_key_file_rules(factory: CertFactory, tmp_path: Path) -> None:
    carol = factory.client("carol", "carol")

    def attempt(key: Path) -> str:
        settings = BackendTlsSettings(sslcert=str(carol.cert_path), sslkey=str(key))
        with pytest.raises(BackendTlsConfigError) as caught:
            build_client_context(settings)
        return caught.value.libpq_message

    carol.key_path.chmod(0o644)
    try:
        assert attempt(carol.key_path) == (
            f'private key file "{carol.key_path}" has group or world access; file must have '
            "permissions u=rw (0600) or less if owned by the current user, or permissions "
            "u=rw,g=r (0640) or less if owned by root"
        )
        # 0640 is enough for a key owned by root (a system-wide key readable by a group)
        carol.key_path.chmod(0o640)
        if carol.key_path.stat().st_uid == 0:
            build_client_context(
                BackendTlsSettings(sslcert=str(carol.cert_path), sslkey=str(carol.key_path))
            )
        else:
            assert "has group or world access" in attempt(carol.key_path)
    finally:
        carol.key_path.chmod(0o600)
    missing = tmp_path / "missing.key"
    assert attempt(missing) == f'certificate present, but not private key file "{missing}"'
    assert attempt(tmp_path) == f'private key file "{tmp_path}" is not a regular file'
    other = factory.client("carol-other", "carol")
    assert attempt(other.key_path) == (
        f'could not load private key file "{other.key_path}": key values mismatch'
    )


def test_der_key_and_unreadable_certificate(
    factory: CertFactory, server: Issued, tmp_path: Path
) -> None:
    dave = factory.client("dave", "dave")
    der_key = tmp_path / "dave.der"
    der_key.write_bytes(
        dave.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    der_key.chmod(0o600)
    settings = BackendTlsSettings(sslcert=str(dave.cert_path), sslkey=str(der_key))
    server_ctx = factory.server_context(server, ssl_ca_file=str(factory.ca.cert_path))
    out = handshake(build_client_context(settings), server_ctx)
    assert out.ok and out.server.getpeercert(binary_form=True) == dave.der

    junk = tmp_path / "junk.crt"
    junk.write_text("junk\n")
    with pytest.raises(BackendTlsConfigError, match=f'^could not read certificate file "{junk}": '):
        build_client_context(BackendTlsSettings(sslcert=str(junk), sslkey=str(der_key)))


def test_without_the_libssl_binding(
    factory: CertFactory, server: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "libssl", lambda: None)
    erin = factory.client("erin", "erin", passphrase=b"pw")
    settings = BackendTlsSettings(
        sslcert=str(erin.cert_path), sslkey=str(erin.key_path), sslpassword="pw"
    )
    server_ctx = factory.server_context(server, ssl_ca_file=str(factory.ca.cert_path))
    out = handshake(build_client_context(settings), server_ctx)
    assert out.ok and out.server.getpeercert(binary_form=True) == erin.der
    wrong = BackendTlsSettings(
        sslcert=str(erin.cert_path), sslkey=str(erin.key_path), sslpassword="nope"
    )
    with pytest.raises(BackendTlsConfigError, match=r"^could not load private key file"):
        build_client_context(wrong)


# --------------------------------------------------------------------------------------------
# Protocol versions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "server_kw", "between"),
    [
        (
            BackendTlsSettings(sslmode="require", ssl_min_protocol_version="tlsv1.3"),
            {"ssl_max_protocol_version": "TLSv1.2"},
            "tlsv1.3 and TLSv1.3",
        ),
        (
            BackendTlsSettings(sslmode="require", ssl_max_protocol_version="TLSv1.2"),
            {"ssl_min_protocol_version": "TLSv1.3"},
            "TLSv1.2 and TLSv1.2",
        ),
    ],
    ids=["only-13-to-a-12-server", "only-12-to-a-13-server"],
)
def test_protocol_range_refused(
    factory: CertFactory,
    server: Issued,
    settings: BackendTlsSettings,
    server_kw: dict[str, str],
    between: str,
) -> None:
    out = handshake(build_client_context(settings), factory.server_context(server, **server_kw))
    assert out.client_error is not None
    assert describe_handshake_error(out.client_error, settings) == (
        "SSL error: tlsv1 alert protocol version\nThis may indicate that the server does not "
        f"support any SSL protocol version between {between}."
    )


def test_protocol_max_12_to_a_default_server(factory: CertFactory, server: Issued) -> None:
    only_12 = BackendTlsSettings(sslmode="require", ssl_max_protocol_version="TLSv1.2")
    out = handshake(build_client_context(only_12), factory.server_context(server))
    assert out.ok and out.client.version() == "TLSv1.2"
    assert out.client.selected_alpn_protocol() == "postgresql"


def test_protocol_defaults() -> None:
    ctx = build_client_context(BackendTlsSettings(sslmode="require"))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED
    ctx = build_client_context(
        BackendTlsSettings(ssl_min_protocol_version="", ssl_max_protocol_version="TLSv1.3")
    )
    assert ctx.minimum_version == ssl.TLSVersion.MINIMUM_SUPPORTED
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize(
    ("kw", "text"),
    [
        (
            {"ssl_min_protocol_version": "TLSv9"},
            'invalid value "TLSv9" for minimum SSL protocol version',
        ),
        (
            {"ssl_max_protocol_version": "SSLv3"},
            'invalid value "SSLv3" for maximum SSL protocol version',
        ),
    ],
)
def test_invalid_protocol_version(kw: dict[str, str], text: str) -> None:
    with pytest.raises(BackendTlsConfigError) as caught:
        build_client_context(BackendTlsSettings(**kw))  # type: ignore[arg-type]
    assert caught.value.libpq_message == text


# --------------------------------------------------------------------------------------------
# After the handshake; handshake failures
# --------------------------------------------------------------------------------------------


def test_direct_tls_requires_alpn_postgresql(server: Issued) -> None:
    settings = BackendTlsSettings(sslmode="require", sslnegotiation="direct")
    assert (
        check_after_handshake(HandshakeFacts("postgresql", server.der), settings, "h", True) is None
    )
    assert check_after_handshake(HandshakeFacts(None, server.der), settings, "h", True) == (
        "direct SSL connection was established without ALPN protocol negotiation extension"
    )
    assert check_after_handshake(HandshakeFacts("http/1.1", server.der), settings, "h", True) == (
        "SSL connection was established with unexpected ALPN protocol"
    )
    # after an SSLRequest, ALPN is not required
    assert check_after_handshake(HandshakeFacts(None, server.der), settings, "h", False) is None
    assert check_after_handshake(HandshakeFacts("postgresql", None), settings, "h", False) == (
        "certificate could not be obtained: no SSL error reported"
    )
    full = BackendTlsSettings(sslmode="verify-full")
    assert check_after_handshake(HandshakeFacts("postgresql", server.der), full, "", True) == (
        "host name must be specified for a verified SSL connection"
    )


def test_server_refusing_alpn(factory: CertFactory, server: Issued) -> None:
    # A server that does not speak ALPN "postgresql" ends the handshake with a fatal alert.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    out = handshake(ctx, factory.server_context(server))
    assert out.client_error is not None
    text = describe_handshake_error(out.client_error, BackendTlsSettings())
    assert text.startswith("SSL error: ") and "no application protocol" in text
    assert "_ssl.c" not in text and "[" not in text


def test_describe_other_handshake_errors() -> None:
    settings = BackendTlsSettings()
    eof = ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol (_ssl.c:1)")
    expected_eof = (
        "SSL error: unexpected eof while reading"
        if ssl.OPENSSL_VERSION_INFO >= (3,)
        else "SSL SYSCALL error: EOF detected"
    )
    assert describe_handshake_error(eof, settings) == expected_eof
    assert describe_handshake_error(ConnectionResetError(), settings) == expected_eof
    reset = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    assert describe_handshake_error(reset, settings) == (
        "SSL SYSCALL error: Connection reset by peer"
    )
    zero = ssl.SSLZeroReturnError(ssl.SSL_ERROR_ZERO_RETURN, "TLS/SSL connection has been closed")
    assert describe_handshake_error(zero, settings) == "unrecognized SSL error code: 6"


@pytest.mark.parametrize(
    ("host", "sni", "expected"),
    [
        ("db.example.com", True, "db.example.com"),
        ("localhost", True, "localhost"),
        ("1e100.net", True, "1e100.net"),
        ("123.example", True, "123.example"),
        ("127.0.0.1", True, None),
        ("1.2.3", True, None),
        ("::1", True, None),
        ("fe80::1%eth0", True, None),
        ("", True, None),
        ("db.example.com", False, None),
    ],
)
def test_sni(host: str, sni: bool, expected: str | None) -> None:
    assert server_hostname_for_sni(host, BackendTlsSettings(sslsni=sni)) == expected


def test_peer_end_point_hash(factory: CertFactory) -> None:
    for algorithm, digest in (
        (hashes.SHA256(), "sha256"),
        (hashes.SHA384(), "sha384"),
        (hashes.SHA512(), "sha512"),
    ):
        cert, _ = make_cert(cn="x", algorithm=algorithm)
        der = cert.public_bytes(serialization.Encoding.DER)
        assert peer_end_point_hash(der) == hashlib.new(digest, der).digest()
    ed_ca = ed25519.Ed25519PrivateKey.generate()
    issuer = Issued(factory.ca.cert, ed_ca, factory.ca.cert_path, factory.ca.key_path)
    cert, _ = make_cert(cn="x", issuer=issuer)
    with pytest.raises(ValueError, match=r"^could not find digest for NID UNDEF$"):
        peer_end_point_hash(cert.public_bytes(serialization.Encoding.DER))


# --------------------------------------------------------------------------------------------
# Name matching, table-driven (no handshake)
# --------------------------------------------------------------------------------------------


def mismatch(first: str, host: str, others: int = 0) -> str:
    if not others:
        return f'server certificate for "{first}" does not match host name "{host}"'
    noun = "name" if others == 1 else "names"
    return (
        f'server certificate for "{first}" (and {others} other {noun}) '
        f'does not match host name "{host}"'
    )


NUL_NAME = der_tlv(0x82, b"db1\x00.evil.com")


@pytest.mark.parametrize(
    ("cert", "host", "expected"),
    [
        # exact and case-insensitive
        ({"names": dns("db1")}, "db1", None),
        ({"names": dns("DB1.Example.COM")}, "db1.example.com", None),
        ({"names": dns("db1")}, "db2", mismatch("db1", "db2")),
        ({"names": dns("db1", "db2")}, "db3", mismatch("db1", "db3", 1)),
        ({"names": dns("a", "b", "c")}, "d", mismatch("a", "d", 2)),
        # wildcards: a whole leftmost label, one label only
        ({"names": dns("*.example.com")}, "db.example.com", None),
        ({"names": dns("*.example.com")}, "DB.EXAMPLE.COM", None),
        (
            {"names": dns("*.example.com")},
            "a.b.example.com",
            mismatch("*.example.com", "a.b.example.com"),
        ),
        ({"names": dns("*.example.com")}, "example.com", mismatch("*.example.com", "example.com")),
        (
            {"names": dns("db*.example.com")},
            "db1.example.com",
            mismatch("db*.example.com", "db1.example.com"),
        ),
        (
            {"names": dns("*db.example.com")},
            "xdb.example.com",
            mismatch("*db.example.com", "xdb.example.com"),
        ),
        ({"names": dns("*.com")}, "example.com", None),
        # SAN before CN: the CN is ignored when a SAN of the host's kind exists
        ({"cn": "db2", "names": dns("db1")}, "db2", mismatch("db1", "db2")),
        ({"cn": "db2"}, "db2", None),
        ({"cn": "*.example.com"}, "db.example.com", None),
        ({"cn": "db2"}, "db3", mismatch("db2", "db3")),
        ({"cn": "db2", "names": ips("10.0.0.1")}, "db2", None),
        ({"cn": "db3", "names": ips("10.0.0.1")}, "db2", mismatch("10.0.0.1", "db2", 1)),
        ({"cn": "127.0.0.1", "names": dns("localhost")}, "127.0.0.1", None),
        (
            {"cn": "127.0.0.1", "names": [*dns("localhost"), *ips("127.0.0.2")]},
            "127.0.0.1",
            mismatch("localhost", "127.0.0.1", 1),
        ),
        # IP addresses: compared as bytes, inet_aton's IPv4 shorthands, any IPv6 spelling
        ({"names": ips("127.0.0.1")}, "127.1", None),
        ({"names": ips("127.0.0.1")}, "2130706433", None),
        ({"names": ips("2001:db8::1")}, "2001:DB8:0:0::1", None),
        (
            {"names": ips("::ffff:127.0.0.1")},
            "127.0.0.1",
            mismatch("::ffff:127.0.0.1", "127.0.0.1"),
        ),
        ({"names": ips("10.0.0.1")}, "10.0.0.2", mismatch("10.0.0.1", "10.0.0.2")),
        ({"names": dns("127.0.0.1")}, "127.0.0.1", None),
        # nothing to compare with
        ({}, "db1", "could not get server's host name from server certificate"),
        ({"names": dns("db1")}, "", "host name must be specified for a verified SSL connection"),
        # embedded NUL: an error once examined; the first match ends the search
        (
            {"raw_san": der_tlv(0x30, NUL_NAME)},
            "db1",
            "SSL certificate's name contains embedded null",
        ),
        ({"raw_san": der_tlv(0x30, der_tlv(0x82, b"db1") + NUL_NAME)}, "db1", None),
        (
            {"raw_san": der_tlv(0x30, NUL_NAME + der_tlv(0x82, b"db1"))},
            "db1",
            "SSL certificate's name contains embedded null",
        ),
        ({"cn": "db1\x00.evil.com"}, "db1", "SSL certificate's name contains embedded null"),
        # a BMPString CN is UTF-16: NUL bytes, as libpq sees it
        (
            {"cn": "db1", "cn_type": _ASN1Type.BMPString},
            "db1",
            "SSL certificate's name contains embedded null",
        ),
        # an iPAddress that is neither 4 nor 16 bytes
        (
            {"raw_san": der_tlv(0x30, der_tlv(0x87, b"\x01\x02\x03\x04\x05"))},
            "db1",
            "certificate contains IP address with invalid length 5",
        ),
        (
            {"raw_san": der_tlv(0x30, der_tlv(0x87, bytes(8)))},
            "1.2.3.4",
            "certificate contains IP address with invalid length 8",
        ),
        # other SAN kinds are neither examined nor block the CN
        (
            {
                "cn": "db1",
                "names": [x509.RFC822Name("a@b"), x509.UniformResourceIdentifier("https://x")],
            },
            "db1",
            None,
        ),
        # an undecodable SAN extension counts as none
        ({"cn": "db1", "raw_san": b"\x30\x05\x82\x01"}, "db1", None),
    ],
)
def test_peer_name_rules(cert: dict[str, object], host: str, expected: str | None) -> None:
    assert verify_peer_name(der_of(**cert), host) == expected


@pytest.mark.parametrize(
    ("pattern", "string", "expected"),
    [
        (b"*.b.c", b"a.b.c", True),
        (b"*.B.C", b"a.b.c", True),
        (b"*.b.c", b"x.a.b.c", False),
        (b"*.b.c", b"b.c", False),
        (b"*.c", b"a.c", True),
        (b"*.c", b".c", False),
        (b"*.", b"a.", False),
        (b"a.b.c", b"a.b.c", False),
        (b"*.b.c", b"..b.c", True),  # libpq's literal rule: only a dot *left* of the '*' part
    ],
)
def test_wildcard_rule(pattern: bytes, string: bytes, expected: bool) -> None:
    assert wildcard_certificate_match(pattern, string) is expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.1", True),
        ("0x7f.1", True),
        ("::1", True),
        ("::ffff:1.2.3.4", True),
        ("fe80::1%eth0", False),
        ("localhost", False),
        ("1.2.3.4.", False),
        ("", False),
    ],
)
def test_is_ip_address(host: str, expected: bool) -> None:
    assert is_ip_address(host) is expected


@pytest.mark.parametrize(
    ("address", "text"),
    [
        ("10.1.2.3", "10.1.2.3"),
        ("::", "::"),
        ("::1", "::1"),
        ("::2", "::2"),
        ("1::", "1::"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"),
        ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
        ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),
        ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
        ("::1.2.3.4", "::1.2.3.4"),
    ],
)
def test_inet_net_ntop(address: str, text: str) -> None:
    assert inet_net_ntop(ipaddress.ip_address(address).packed) == text


def test_inet_net_ntop_agrees_with_ipaddress_without_embedded_ipv4() -> None:
    rng = random.Random(5929)
    for _ in range(2000):
        words = [rng.choice((0, 0, 0, rng.randrange(1, 0x10000))) for _ in range(8)]
        if not any(words[:5]):
            words[rng.randrange(0, 5)] = rng.randrange(1, 0x10000)
        packed = b"".join(w.to_bytes(2, "big") for w in words)
        assert inet_net_ntop(packed) == ipaddress.IPv6Address(packed).compressed
