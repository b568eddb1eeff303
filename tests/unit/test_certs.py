"""pggate.certs without sockets or subprocesses: what is issued, how it is written and read."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pggate.errors import PggateError
from pggate.tls import certs


@pytest.fixture(scope="module")
def ca() -> tuple[x509.Certificate, certs.PrivateKey]:
    return certs.make_ca("Test CA")


_E = TypeVar("_E", bound=x509.ExtensionType)


def _ext(cert: x509.Certificate, kind: type[_E]) -> _E:
    return cert.extensions.get_extension_for_class(kind).value


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """The worst umask: anything the code does not restrict itself ends up world-writable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_ca_is_self_signed_ec_p256_and_limited_to_leaves(
    ca: tuple[x509.Certificate, certs.PrivateKey],
) -> None:
    cert, key = ca
    cert.verify_directly_issued_by(cert)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert _ext(cert, x509.BasicConstraints) == x509.BasicConstraints(ca=True, path_length=0)
    usage = _ext(cert, x509.KeyUsage)
    assert usage.key_cert_sign and usage.crl_sign
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha256"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime >= dt.timedelta(days=certs.CA_DAYS)


@pytest.mark.parametrize("bits", [2048, 3072])
def test_rsa_on_request(bits: int) -> None:
    cert, key = certs.make_ca("RSA CA", key_type="rsa", rsa_bits=bits)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == bits
    assert certs.describe(cert).key == f"RSA {bits}"


def test_rsa_size_is_checked() -> None:
    with pytest.raises(PggateError, match="RSA key size"):
        certs.generate_key("rsa", 1024)


def test_server_cert_has_sans_eku_and_chains(ca: tuple[x509.Certificate, certs.PrivateKey]) -> None:
    ca_cert, ca_key = ca
    cert, key = certs.make_server_cert(
        ca_cert, ca_key, ["db.example.com", "localhost"], ["127.0.0.1", "::1"]
    )
    cert.verify_directly_issued_by(ca_cert)
    assert cert.public_key() == key.public_key()
    sans = _ext(cert, x509.SubjectAlternativeName)
    assert sans.get_values_for_type(x509.DNSName) == ["db.example.com", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert list(_ext(cert, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert _ext(cert, x509.BasicConstraints).ca is False
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "db.example.com"
    assert cert.not_valid_before_utc.tzinfo is dt.UTC
    assert cert.not_valid_before_utc < certs.utcnow() < cert.not_valid_after_utc


def test_server_cert_needs_a_name_and_valid_ips(
    ca: tuple[x509.Certificate, certs.PrivateKey],
) -> None:
    with pytest.raises(PggateError, match="at least one"):
        certs.make_server_cert(*ca, [], [])
    with pytest.raises(PggateError, match=r'invalid IP address "300\.1\.1\.1"'):
        certs.make_server_cert(*ca, ["a"], ["300.1.1.1"])


def test_signing_needs_the_matching_ca_key(ca: tuple[x509.Certificate, certs.PrivateKey]) -> None:
    with pytest.raises(PggateError, match="does not match"):
        certs.make_server_cert(ca[0], certs.generate_key(), ["a"], [])


def test_leaf_never_outlives_its_ca() -> None:
    ca_cert, ca_key = certs.make_ca("short CA", days=10)
    cert, _ = certs.make_client_cert(ca_cert, ca_key, "alice", days=825)
    assert cert.not_valid_after_utc == ca_cert.not_valid_after_utc


def test_self_signed_server_cert() -> None:
    cert, _ = certs.make_self_signed_server_cert(["db"], ["192.0.2.1"])
    cert.verify_directly_issued_by(cert)
    assert _ext(cert, x509.BasicConstraints).ca is False


def test_client_cert_dn_reads_like_postgresql(
    ca: tuple[x509.Certificate, certs.PrivateKey],
) -> None:
    """PostgreSQL's client-dn test certificate, and the DN pg_ident.conf maps for it."""
    extra: dict[str, str | list[str]] = {"O": "PGDG", "OU": ["Engineering", "Testing"]}
    cert, _ = certs.make_client_cert(*ca, "ssltestuser-dn", dn_extra=extra)
    cert.verify_directly_issued_by(ca[0])
    assert list(_ext(cert, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    info = certs.describe(cert)
    assert info.subject == "CN=ssltestuser-dn,OU=Testing,OU=Engineering,O=PGDG"
    assert info.subject_oneline == "/O=PGDG/OU=Engineering/OU=Testing/CN=ssltestuser-dn"


def test_unknown_dn_attribute(ca: tuple[x509.Certificate, certs.PrivateKey]) -> None:
    with pytest.raises(PggateError, match='unknown name attribute "Org"'):
        certs.make_client_cert(*ca, "u", dn_extra={"Org": "x"})


def test_dn_attributes_are_openssl_short_names_made_from_text() -> None:
    """The ``dn_extra`` keys: OpenSSL's short names of the attributes cryptography builds from
    text (not postalAddress, a SEQUENCE, nor x500UniqueIdentifier, a BIT STRING)."""
    known = (
        "C, CN, DC, GN, L, O, OU, SN, ST, UID, businessCategory, dnQualifier, emailAddress, "
        "generationQualifier, initials, jurisdictionC, jurisdictionL, jurisdictionST, "
        "organizationIdentifier, postalCode, pseudonym, serialNumber, street, title, "
        "unstructuredName"
    )
    for short in ("postalAddress", "x500UniqueIdentifier", "description"):
        with pytest.raises(PggateError) as err:
            certs.build_name("u", {short: "x"})
        assert str(err.value) == f'unknown name attribute "{short}" (known: {known})'
    with pytest.raises(PggateError, match=r'invalid C "xyz"'):
        certs.build_name("u", {"C": "xyz"})
    name = certs.build_name("u", {"street": "Main St 1", "jurisdictionC": "DE"})
    assert certs.rfc2253(name) == "CN=u,jurisdictionC=DE,street=Main St 1"


@pytest.mark.parametrize(
    ("value", "rfc2253", "oneline"),
    [
        ("Οδυσσέας", r"CN=\CE\9F\CE\B4\CF\85\CF\83\CF\83\CE\AD\CE\B1\CF\82", "/CN=Οδυσσέας"),
        (
            '#a,b+c"d\\e<f>g;h=i ',
            r"CN=\#a\,b\+c\"d\\e\<f\>g\;h=i\ ",
            r"/CN=\#a\,b\+c\"d\\e\<f\>g\;h=i\ ",
        ),
        ("x\ty", r"CN=x\09y", r"/CN=x\09y"),
    ],
)
def test_names_are_escaped_like_openssl(value: str, rfc2253: str, oneline: str) -> None:
    name = certs.build_name(value)
    assert certs.rfc2253(name) == rfc2253
    assert certs.oneline(name) == oneline


def test_multi_valued_rdn_and_unknown_attribute() -> None:
    name = x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "b"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "A"),
                ]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(x509.ObjectIdentifier("1.2.3.4"), "weird")]
            ),
        ]
    )
    assert certs.rfc2253(name) == "1.2.3.4=#0C057765697264,O=A+CN=b"


@pytest.mark.parametrize(
    ("name", "expected"),
    [  # values from `openssl x509 -subject_hash` (OpenSSL 3.0)
        (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "  Hello   World  ")]), "72c73c2b"),
        (
            certs.build_name("ssltestuser-dn", {"O": "PGDG", "OU": ["Engineering", "Testing"]}),
            "ec97569d",
        ),
        (certs.build_name("Οδυσσέας"), "bfa1d804"),
        (x509.Name([]), "eea339da"),
    ],
)
def test_name_hash_matches_openssl(name: x509.Name, expected: str) -> None:
    assert certs.name_hash(name) == expected


def test_name_hash_is_case_and_space_insensitive_like_openssl() -> None:
    assert certs.name_hash(certs.build_name(" My  CA ")) == certs.name_hash(
        certs.build_name("my ca")
    )


def test_key_file_is_0600_even_with_umask_zero(tmp_path: Path, umask_zero: None) -> None:
    path = tmp_path / "server.key"
    path.write_text("old, world-readable")
    path.chmod(0o644)
    key = certs.generate_key()
    certs.write_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert certs.load_key(path).public_key() == key.public_key()
    assert [p.name for p in tmp_path.iterdir()] == ["server.key"]  # no temporary left behind


def test_cert_file_is_world_readable(
    tmp_path: Path, umask_zero: None, ca: tuple[x509.Certificate, certs.PrivateKey]
) -> None:
    path = tmp_path / "root.crt"
    certs.write_cert(path, ca[0])
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_encrypted_key_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "client.key"
    key = certs.generate_key("rsa")
    certs.write_key(path, key, b"dUmmyP^#+")
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    assert certs.load_key(path, b"dUmmyP^#+").public_key() == key.public_key()
    with pytest.raises(PggateError, match="bad passphrase"):
        certs.load_key(path, b"wrong")
    with pytest.raises(PggateError, match="could not load private key file"):
        certs.load_key(path)


def test_chain_file_round_trip(
    tmp_path: Path, ca: tuple[x509.Certificate, certs.PrivateKey]
) -> None:
    leaf, _ = certs.make_server_cert(*ca, ["db"], [])
    path = tmp_path / "chain.crt"
    certs.write_cert(path, leaf, ca[0])
    assert certs.load_certs(path) == [leaf, ca[0]]
    assert certs.load_cert(path) == leaf


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(PggateError, match=r'could not read certificate file ".*nope\.crt"'):
        certs.load_cert(tmp_path / "nope.crt")
    garbage = tmp_path / "garbage.crl"
    garbage.write_bytes(b"-----BEGIN X509 CRL-----\nnope\n-----END X509 CRL-----\n")
    with pytest.raises(PggateError, match="could not load certificate revocation list file"):
        certs.load_crl(garbage)


def test_revoke_creates_then_updates_the_crl(
    tmp_path: Path, ca: tuple[x509.Certificate, certs.PrivateKey]
) -> None:
    ca_cert, ca_key = ca
    path = tmp_path / "root.crl"
    first = certs.revoke(ca_cert, ca_key, path, [1111], next_update_days=7)
    assert first.is_signature_valid(ca_key.public_key())
    assert first.get_revoked_certificate_by_serial_number(1111) is not None
    assert first.next_update_utc is not None and first.last_update_utc.tzinfo is dt.UTC
    assert first.next_update_utc - first.last_update_utc == dt.timedelta(days=7)
    certs.write_crl(path, first)

    second = certs.revoke(ca_cert, ca_key, path, [2222, 1111])
    assert sorted(entry.serial_number for entry in second) == [1111, 2222]
    assert certs.describe_crl(first).number == 1
    assert certs.describe_crl(second).number == 2
    assert "serial 2222" in str(certs.describe_crl(second))


def test_revoke_refuses_another_cas_crl(ca: tuple[x509.Certificate, certs.PrivateKey]) -> None:
    other = certs.make_ca("Other CA")
    foreign = certs.revoke(*other, None, [1])
    with pytest.raises(PggateError, match="not by the CA"):
        certs.revoke(*ca, foreign, [2])


def test_hash_dir_link_names_and_replaces(
    tmp_path: Path, ca: tuple[x509.Certificate, certs.PrivateKey]
) -> None:
    crl_dir = tmp_path / "crls"
    path = certs.hash_dir_link(crl_dir, certs.revoke(*ca, None, [1]))
    assert path.name == f"{certs.name_hash(ca[0].subject)}.r0"
    again = certs.hash_dir_link(crl_dir, certs.revoke(*ca, None, [1, 2]))
    assert again == path
    assert len(list(certs.load_crl(path))) == 2


def test_describe(ca: tuple[x509.Certificate, certs.PrivateKey]) -> None:
    cert, _ = certs.make_server_cert(*ca, ["db.example.com"], ["192.0.2.1"])
    info = certs.describe(cert)
    assert info.subject == "CN=db.example.com"
    assert info.subject_oneline == "/CN=db.example.com"
    assert info.issuer == "CN=Test CA"
    assert info.dns_names == ("db.example.com",)
    assert info.ip_addresses == ("192.0.2.1",)
    assert info.serial == cert.serial_number
    assert info.key == "EC P-256"
    assert not info.is_ca
    assert len(info.fingerprint_sha256) == 64
    text = str(info)
    for expected in ("CN=db.example.com", "192.0.2.1", "not after", f"{cert.serial_number:X}"):
        assert expected in text


def test_init_tls(tmp_path: Path) -> None:
    certs.init_tls(tmp_path, ["db.example.com", "10.0.0.5"])
    root = certs.load_cert(tmp_path / "root.crt")
    server = certs.load_cert(tmp_path / "server.crt")
    server.verify_directly_issued_by(root)
    info = certs.describe(server)
    assert info.dns_names == ("db.example.com", "localhost")
    assert info.ip_addresses == ("10.0.0.5", "127.0.0.1", "::1")
    for key in ("root.key", "server.key"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600

    certs.init_tls(tmp_path, ["other.example.com"])  # a second run keeps the CA
    assert certs.load_cert(tmp_path / "root.crt") == root
    certs.load_cert(tmp_path / "server.crt").verify_directly_issued_by(root)


def test_init_tls_refuses_half_a_ca(tmp_path: Path) -> None:
    (tmp_path / "root.crt").write_text("")
    with pytest.raises(PggateError, match="only one of"):
        certs.init_tls(tmp_path, [])
