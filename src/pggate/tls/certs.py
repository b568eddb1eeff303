"""Certificates for pggate: a local CA, server and client certificates, CRLs, and their files.

This module owns "the openssl steps of PostgreSQL's docs, done right" (runtime.html, section
"Creating Certificates"): ECDSA P-256 keys by default (handshakes are far cheaper than RSA), RSA
on request, SHA-256 signatures, subjectAltNames for every host name and address, UTC-aware
validity, key files that are never readable by anyone else, and CRLs that PostgreSQL can load as
``ssl_crl_file`` or, under OpenSSL's hashed names, from ``ssl_crl_dir``.

Names are printed the way PostgreSQL prints them (:mod:`pggate.tls.x509names`, re-exported here):
the RFC 2253 form of ``X509_NAME_print_ex(..., XN_FLAG_RFC2253)`` (what ``clientname=DN``
matches in pg_ident.conf) and the ``/CN=...`` form of ``be-secure-openssl.c:X509_NAME_to_cstring``
(its log lines).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import itertools
import os
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypedDict, Unpack

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pggate.directory import layout
from pggate.errors import PggateError
from pggate.tls.x509names import SHORT_NAMES
from pggate.tls.x509names import name_hash as name_hash
from pggate.tls.x509names import oneline as oneline
from pggate.tls.x509names import rfc2253 as rfc2253

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
RSA_SIZES = (2048, 3072, 4096)

ROOT_CERT = layout.ROOT_CERT
ROOT_KEY = layout.ROOT_KEY
ROOT_CRL = layout.ROOT_CRL
SERVER_CERT = layout.SERVER_CERT
SERVER_KEY = layout.SERVER_KEY

CA_DAYS = 3650
LEAF_DAYS = 825  # the longest lifetime Apple and browsers accept for a TLS server certificate
CRL_DAYS = 365  # OpenSSL rejects every client once a CRL's nextUpdate has passed: keep it long
# Backdate notBefore a little so a client whose clock is slightly behind accepts a fresh cert.
CLOCK_SKEW = dt.timedelta(minutes=5)

# build_name's attributes (the ``dn_extra`` keys, ``pggate cert client --dn``): those of the one
# OpenSSL short-name table (x509names.SHORT_NAMES) that cryptography knows (NameOID) and builds
# from text, so not postalAddress (a SEQUENCE of lines) nor x500UniqueIdentifier (a BIT STRING).
_NOT_TEXT = frozenset({"postalAddress", "x500UniqueIdentifier"})
_NAME_OIDS = {
    oid.dotted_string: oid
    for oid in vars(NameOID).values()
    if isinstance(oid, x509.ObjectIdentifier)
}
_OID_BY_SHORT_NAME = {
    short: _NAME_OIDS[dotted]
    for dotted, short in SHORT_NAMES.items()
    if dotted in _NAME_OIDS and short not in _NOT_TEXT
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- keys -----------------------------------------------------------------------------------


def generate_key(key_type: KeyType = "ec", rsa_bits: int = 2048) -> PrivateKey:
    """A new private key: ECDSA P-256, or RSA of one of ``RSA_SIZES`` bits."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        if rsa_bits not in RSA_SIZES:
            sizes = ", ".join(map(str, RSA_SIZES))
            raise PggateError(f"RSA key size must be one of {sizes}, not {rsa_bits}")
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    raise PggateError(f'unknown key type "{key_type}" (expected "ec" or "rsa")')


def key_description(key: PrivateKey | x509.Certificate) -> str:
    """``EC P-256`` or ``RSA 2048``: what ``cert show`` prints for a key."""
    public = key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"EC {curve.get(public.curve.name, public.curve.name)}"
    if isinstance(public, rsa.RSAPublicKey):
        return f"RSA {public.key_size}"
    return type(public).__name__


# --- names ----------------------------------------------------------------------------------


def build_name(
    common_name: str | None, extra: dict[str, str | list[str]] | None = None
) -> x509.Name:
    """A subject name: ``extra`` attributes (OpenSSL short names, in order) then CN, so that the
    RFC 2253 form reads ``CN=...,OU=...,O=...`` as in PostgreSQL's test certificates."""
    attributes: list[x509.NameAttribute[str]] = []
    for short, values in (extra or {}).items():
        oid = _OID_BY_SHORT_NAME.get(short)
        if oid is None:
            known = ", ".join(sorted(_OID_BY_SHORT_NAME))
            raise PggateError(f'unknown name attribute "{short}" (known: {known})')
        for value in [values] if isinstance(values, str) else values:
            attributes.append(_attribute(short, oid, value))
    if common_name is not None:
        attributes.append(_attribute("CN", NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _attribute(short: str, oid: x509.ObjectIdentifier, value: str) -> x509.NameAttribute[str]:
    try:
        return x509.NameAttribute(oid, value)
    except ValueError as exc:
        raise PggateError(f'invalid {short} "{value}": {exc}') from exc


# --- certificates ---------------------------------------------------------------------------


class KeyOptions(TypedDict, total=False):
    """The keywords every ``make_*`` takes (``pggate cert``'s ``--rsa BITS`` and ``--days``):
    unset, an ECDSA P-256 key valid ``CA_DAYS`` (a CA) or ``LEAF_DAYS`` (a leaf)."""

    key_type: KeyType
    rsa_bits: int
    days: int


class ServerOptions(KeyOptions, total=False):
    """A server certificate's keywords: also its CN (unset: the first name or address)."""

    common_name: str | None


def _new_key(options: KeyOptions) -> PrivateKey:
    return generate_key(options.get("key_type", "ec"), options.get("rsa_bits", 2048))


def _issue(
    subject: x509.Name,
    key: PrivateKey,
    issuer: tuple[x509.Certificate, PrivateKey] | None,
    days: int,
    extensions: Iterable[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    """Sign a certificate for ``key``: by ``issuer`` (cert, key), or self-signed when None."""
    if days < 1:
        raise PggateError(f"a certificate must be valid for at least one day, not {days}")
    now = utcnow()
    not_after = now + dt.timedelta(days=days)
    if issuer is None:
        issuer_name, signing_key = subject, key
        authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
    else:
        ca_cert, signing_key = issuer
        _check_ca(ca_cert, signing_key)
        issuer_name = ca_cert.subject
        authority = _authority_key_id(ca_cert, signing_key)
        not_after = min(not_after, ca_cert.not_valid_after_utc)  # never outlive the CA
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(authority, False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    return builder.sign(signing_key, hashes.SHA256())


def _check_ca(ca_cert: x509.Certificate, ca_key: PrivateKey) -> None:
    """Refuse to sign with a key that is not the CA certificate's, or with a non-CA."""
    if ca_cert.public_key() != ca_key.public_key():
        raise PggateError("the CA private key does not match the CA certificate")
    try:
        constraints = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise PggateError(f'"{rfc2253(ca_cert.subject)}" is not a CA certificate')


def _authority_key_id(ca_cert: x509.Certificate, ca_key: PrivateKey) -> x509.AuthorityKeyIdentifier:
    """The CA's own key identifier when it has one (OpenSSL matches AKID to SKID exactly)."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _key_usage(*, ca: bool, key_encipherment: bool = False) -> x509.KeyUsage:
    """digitalSignature, plus keyCertSign and cRLSign for a CA, keyEncipherment on request."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf(
    subject: x509.Name,
    key: PrivateKey,
    issuer: tuple[x509.Certificate, PrivateKey] | None,
    usage: x509.ObjectIdentifier,
    options: KeyOptions,
    *more: tuple[x509.ExtensionType, bool],
) -> tuple[x509.Certificate, PrivateKey]:
    """A leaf certificate: CA:FALSE, the one EKU, ``more``, and the key usages the key type
    needs (keyEncipherment: TLS 1.2 RSA key exchange). No keyCertSign even when self-signed:
    OpenSSL does not need it for a self-signed anchor, and X509_STRICT rejects it on a CA:FALSE
    certificate."""
    key_usage = _key_usage(ca=False, key_encipherment=isinstance(key, rsa.RSAPrivateKey))
    extensions = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (key_usage, True),
        (x509.ExtendedKeyUsage([usage]), False),
        *more,
    ]
    return _issue(subject, key, issuer, options.get("days", LEAF_DAYS), extensions), key


def make_ca(common_name: str, **options: Unpack[KeyOptions]) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed CA that signs leaf certificates only (pathlen 0) and CRLs."""
    key = _new_key(options)
    extensions = [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (_key_usage(ca=True), True),
    ]
    days = options.get("days", CA_DAYS)
    return _issue(build_name(common_name), key, None, days, extensions), key


def split_hosts(hosts: Iterable[str]) -> tuple[list[str], list[str]]:
    """Host names and IP addresses apart, duplicates dropped, order kept."""
    names: dict[str, None] = {}
    ips: dict[str, None] = {}
    for host in hosts:
        try:
            ips[str(ipaddress.ip_address(host))] = None
        except ValueError:
            names[host] = None
    return list(names), list(ips)


def _alt_names(names: Iterable[str], ips: Iterable[str]) -> x509.SubjectAlternativeName:
    general: list[x509.GeneralName] = []
    for name in names:
        ascii_name = name if name.isascii() else name.encode("idna").decode()
        general.append(x509.DNSName(ascii_name))
    for ip in ips:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError as exc:
            raise PggateError(f'invalid IP address "{ip}"') from exc
    if not general:
        raise PggateError("a server certificate needs at least one host name or IP address")
    return x509.SubjectAlternativeName(general)


def _server_cert(
    names: list[str],
    ips: list[str],
    issuer: tuple[x509.Certificate, PrivateKey] | None,
    options: ServerOptions,
) -> tuple[x509.Certificate, PrivateKey]:
    alt_names = _alt_names(names, ips)  # validate before spending time on a key
    key = _new_key(options)
    default_cn = next((host for host in [*names, *ips] if len(host) <= 64), None)
    subject = build_name(options.get("common_name") or default_cn)
    return _leaf(subject, key, issuer, ExtendedKeyUsageOID.SERVER_AUTH, options, (alt_names, False))


def make_server_cert(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    names: list[str],
    ips: list[str],
    **options: Unpack[ServerOptions],
) -> tuple[x509.Certificate, PrivateKey]:
    """A serverAuth certificate for DNS ``names`` and ``ips`` (libpq's verify-full checks the
    SANs and ignores CN when any DNS SAN exists); CN defaults to the first name."""
    return _server_cert(names, ips, (ca_cert, ca_key), options)


def make_self_signed_server_cert(
    names: list[str], ips: list[str], **options: Unpack[ServerOptions]
) -> tuple[x509.Certificate, PrivateKey]:
    """PostgreSQL's quick recipe (a self-signed server.crt, which is its own sslrootcert)."""
    return _server_cert(names, ips, None, options)


def make_client_cert(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    user: str,
    *,
    dn_extra: dict[str, str | list[str]] | None = None,
    **options: Unpack[KeyOptions],
) -> tuple[x509.Certificate, PrivateKey]:
    """A clientAuth certificate with CN=user (what ``cert`` authentication maps), after the
    ``dn_extra`` attributes (e.g. ``{"O": "PGDG", "OU": ["Engineering", "Testing"]}``)."""
    subject = build_name(user, dn_extra)
    key = _new_key(options)
    return _leaf(subject, key, (ca_cert, ca_key), ExtendedKeyUsageOID.CLIENT_AUTH, options)


# --- CRLs -----------------------------------------------------------------------------------


def revoke(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    crl: Path | x509.CertificateRevocationList | None,
    serials: Iterable[int],
    *,
    next_update_days: int = CRL_DAYS,
) -> x509.CertificateRevocationList:
    """A new CRL from the CA: the entries of ``crl`` (a file that may not exist yet, a CRL, or
    None) plus ``serials``, with the next CRL number. No serials just re-signs (a fresh
    nextUpdate). The caller writes it: PostgreSQL reads it at start and on reload."""
    _check_ca(ca_cert, ca_key)
    if isinstance(crl, Path):
        crl = load_crl(crl) if crl.exists() else None
    entries = list(crl) if crl is not None else []
    number = 1
    if crl is not None:
        _check_crl_issuer(crl, ca_cert, ca_key)
        with contextlib.suppress(x509.ExtensionNotFound):
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
    now = utcnow()
    known = {entry.serial_number for entry in entries}
    for serial in dict.fromkeys(serials):
        if serial not in known:
            entries.append(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=next_update_days))
        .add_extension(x509.CRLNumber(number), False)
        .add_extension(_authority_key_id(ca_cert, ca_key), False)
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(ca_key, hashes.SHA256())


def _check_crl_issuer(
    crl: x509.CertificateRevocationList, ca_cert: x509.Certificate, ca_key: PrivateKey
) -> None:
    if crl.issuer != ca_cert.subject or not crl.is_signature_valid(ca_key.public_key()):
        raise PggateError(
            f'the CRL was issued by "{rfc2253(crl.issuer)}", '
            f'not by the CA "{rfc2253(ca_cert.subject)}"'
        )


def is_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether ``ca_cert`` signed ``cert`` (name and signature; no validity or usage checks)."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# --- descriptions ---------------------------------------------------------------------------


def _fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest().upper()


def _colons(hex_digits: str) -> str:
    return ":".join(hex_digits[i : i + 2] for i in range(0, len(hex_digits), 2))


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What ``pggate cert show`` prints about a certificate; ``str()`` is that text."""

    subject: str
    subject_oneline: str
    issuer: str
    issuer_oneline: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    serial: int
    fingerprint_sha256: str
    key: str
    is_ca: bool

    def __str__(self) -> str:
        serial_hex = f"{self.serial:X}"
        lines = [
            f"subject:     {self.subject}",
            f"             {self.subject_oneline}",
            f"issuer:      {self.issuer}",
            f"DNS names:   {', '.join(self.dns_names) or '(none)'}",
            f"IP addrs:    {', '.join(self.ip_addresses) or '(none)'}",
            f"not before:  {self.not_before.isoformat()}",
            f"not after:   {self.not_after.isoformat()}",
            f"serial:      {self.serial} (0x{serial_hex})",
            f"SHA-256:     {_colons(self.fingerprint_sha256)}",
            f"key:         {self.key}{' (CA)' if self.is_ca else ''}",
        ]
        return "\n".join(lines)


def describe(cert: x509.Certificate) -> CertInfo:
    """The facts an operator checks before pointing ``sslrootcert`` or ``ssl_cert_file`` at it."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(sans.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns_names, ips = (), ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertInfo(
        subject=rfc2253(cert.subject),
        subject_oneline=oneline(cert.subject),
        issuer=rfc2253(cert.issuer),
        issuer_oneline=oneline(cert.issuer),
        dns_names=dns_names,
        ip_addresses=ips,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial=cert.serial_number,
        fingerprint_sha256=_fingerprint(cert.public_bytes(serialization.Encoding.DER)),
        key=key_description(cert),
        is_ca=is_ca,
    )


@dataclass(frozen=True, slots=True)
class CrlInfo:
    """What ``pggate cert show`` prints about a CRL; ``str()`` is that text."""

    issuer: str
    last_update: dt.datetime
    next_update: dt.datetime | None
    number: int | None
    revoked: tuple[tuple[int, dt.datetime], ...]

    def __str__(self) -> str:
        next_update = self.next_update.isoformat() if self.next_update else "(none)"
        lines = [
            f"CRL issuer:  {self.issuer}",
            f"CRL number:  {self.number if self.number is not None else '(none)'}",
            f"last update: {self.last_update.isoformat()}",
            f"next update: {next_update}",
            f"revoked:     {len(self.revoked)}",
        ]
        lines += [
            f"  serial {serial} (0x{serial:X}) at {when.isoformat()}"
            for serial, when in self.revoked
        ]
        return "\n".join(lines)


def describe_crl(crl: x509.CertificateRevocationList) -> CrlInfo:
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    return CrlInfo(
        issuer=rfc2253(crl.issuer),
        last_update=crl.last_update_utc,
        next_update=crl.next_update_utc,
        number=number,
        revoked=tuple((entry.serial_number, entry.revocation_date_utc) for entry in crl),
    )


# --- files ----------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file in the same directory, renamed over ``path``: readers see the
    old file or the new one, and the data is never more accessible than ``mode`` (mkstemp
    creates the file 0600 with O_EXCL; it is only widened, never narrowed, afterwards)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_key(path: Path, key: PrivateKey, passphrase: bytes | None = None) -> None:
    """PEM PKCS#8, mode 0600 (PostgreSQL refuses group or world access, be-secure-common.c),
    encrypted when a passphrase is given (``ssl_passphrase_command`` / libpq ``sslpassword``)."""
    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if passphrase:
        encryption = serialization.BestAvailableEncryption(passphrase)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    _write_atomic(path, pem, 0o600)


def write_cert(path: Path, *certs: x509.Certificate) -> None:
    """PEM certificates, leaf first: a chain file as ``ssl_cert_file`` accepts."""
    if not certs:
        raise PggateError(f'no certificate to write to "{path}"')
    _write_atomic(path, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs), 0o644)


def write_crl(path: Path, crl: x509.CertificateRevocationList) -> None:
    _write_atomic(path, crl.public_bytes(serialization.Encoding.PEM), 0o644)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PggateError(f'could not read {what} file "{path}": {exc.strerror}') from exc


def load_certs(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file (a chain or bundle), or the one in a DER file."""
    data = _read(path, "certificate")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise PggateError(f'could not load certificate file "{path}": {exc}') from exc


def load_cert(path: Path) -> x509.Certificate:
    """The first certificate of the file (the leaf of a chain file)."""
    return load_certs(path)[0]


def load_key(path: Path, passphrase: bytes | None = None) -> PrivateKey:
    data = _read(path, "private key")
    loader = serialization.load_pem_private_key
    if b"-----BEGIN" not in data:
        loader = serialization.load_der_private_key
    try:
        key = loader(data, passphrase or None)
    except TypeError as exc:  # encrypted without a passphrase, or a passphrase for a plain key
        raise PggateError(f'could not load private key file "{path}": {exc}') from exc
    except ValueError as exc:
        reason = "bad passphrase or not a private key" if passphrase else str(exc)
        raise PggateError(f'could not load private key file "{path}": {reason}') from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PggateError(f'private key file "{path}" holds an unsupported {type(key).__name__}')
    return key


def load_crl(path: Path) -> x509.CertificateRevocationList:
    data = _read(path, "certificate revocation list")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise PggateError(
            f'could not load certificate revocation list file "{path}": {exc}'
        ) from exc


def hash_dir_link(crl_dir: Path, crl: x509.CertificateRevocationList) -> Path:
    """Write ``crl`` into ``crl_dir`` as ``<issuer-hash>.rN`` (what OpenSSL's by_dir lookup,
    hence ``ssl_crl_dir``, reads), replacing an older CRL of the same issuer; N > 0 only when
    another issuer's name has the same hash."""
    crl_dir.mkdir(parents=True, exist_ok=True)
    base = name_hash(crl.issuer)
    for number in itertools.count():
        path = crl_dir / f"{base}.r{number}"
        if not path.exists() or load_crl(path).issuer == crl.issuer:
            write_crl(path, crl)
            return path
    raise AssertionError("unreachable")


# --- pggate init ----------------------------------------------------------------------------


def load_or_make_ca(directory: Path) -> tuple[x509.Certificate, PrivateKey]:
    """The CA in ``directory`` (root.crt + root.key), created when neither file exists, so that
    an operator can bring their own CA by putting it there first."""
    cert_path, key_path = directory / ROOT_CERT, directory / ROOT_KEY
    if cert_path.exists() and key_path.exists():
        return load_cert(cert_path), load_key(key_path)
    if cert_path.exists() or key_path.exists():
        raise PggateError(f'"{directory}" has only one of {ROOT_CERT} and {ROOT_KEY}')
    ca_cert, ca_key = make_ca(f"pggate local CA {secrets.token_hex(4)}")
    write_key(key_path, ca_key)
    write_cert(cert_path, ca_cert)
    return ca_cert, ca_key


def init_tls(directory: Path, hostnames: list[str]) -> None:
    """What ``pggate init`` calls: root.crt/root.key (the local CA; also PostgreSQL's
    ``ssl_ca_file`` for client certificates) and server.crt/server.key for ``hostnames`` plus
    localhost, 127.0.0.1 and ::1, so ``sslmode=verify-full sslrootcert=DIR/root.crt`` works."""
    ca_cert, ca_key = load_or_make_ca(directory)
    names, ips = split_hosts([*hostnames, "localhost", "127.0.0.1", "::1"])
    cert, key = make_server_cert(ca_cert, ca_key, names, ips)
    write_key(directory / SERVER_KEY, key)
    write_cert(directory / SERVER_CERT, cert)
