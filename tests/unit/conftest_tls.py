"""Certificates made at test time for the TLS tests, and a memory pipe between two channels
(no test functions here; a local helper so these tests do not depend on pggate.certs)."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, Unpack

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pggate.tls.context import TlsSettings, build_server_context
from pggate.transport.tls import TlsChannel

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
# The hashes these tests sign with (of those the x509 builders take).
SigningHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512


@dataclass
class Issued:
    cert: x509.Certificate
    key: PrivateKey
    cert_path: Path
    key_path: Path

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def new_key(kind: str) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def cn(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def signing_hash(algorithm: hashes.HashAlgorithm | None) -> SigningHash:
    """``algorithm`` (default SHA-256) as the x509 builders' ``sign`` takes it."""
    algorithm = algorithm or hashes.SHA256()
    if not isinstance(algorithm, SigningHash):
        raise TypeError(f"these tests do not sign with {algorithm.name}")
    return algorithm


def cert_builder(
    subject: x509.Name, key: PrivateKey, *, issuer: Issued | None, ca: bool = False
) -> x509.CertificateBuilder:
    """A certificate of ``subject`` for ``key``, issued by ``issuer`` (None: by ``subject``
    itself), with a random serial number, valid from five minutes ago for a day, and critical
    BasicConstraints; not yet signed."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )


def sign(
    builder: x509.CertificateBuilder,
    signer: PrivateKey,
    algorithm: hashes.HashAlgorithm | None = None,
    *,
    pss: bool = False,
) -> x509.Certificate:
    """``builder`` signed by ``signer`` with ``algorithm`` (default SHA-256; an ed25519 key
    signs without one), with RSA-PSS padding when ``pss``."""
    digest = signing_hash(algorithm)
    if isinstance(signer, ed25519.Ed25519PrivateKey):
        return builder.sign(signer, None)
    if pss:
        return builder.sign(
            signer,
            digest,
            rsa_padding=padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size),
        )
    return builder.sign(signer, digest)


def write_issued(
    directory: Path,
    stem: str,
    cert: x509.Certificate,
    key: PrivateKey,
    passphrase: bytes | None = None,
) -> Issued:
    """``cert`` and ``key`` written to ``stem``.crt and ``stem``.key (PKCS#8, mode 0600,
    encrypted with ``passphrase`` when given) in ``directory``."""
    cert_path = directory / f"{stem}.crt"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    key_path.chmod(0o600)
    return Issued(cert, key, cert_path, key_path)


class KeyOptions(TypedDict, total=False):
    """How a certificate's key is made (``kind``: ec, rsa, ed25519), signed and stored."""

    kind: str
    algorithm: hashes.HashAlgorithm | None
    pss: bool
    passphrase: bytes | None


class CertFactory:
    """A CA in ``directory`` issuing server and client certificates and CRLs."""

    def __init__(self, directory: Path, ca_name: str = "Test CA") -> None:
        self.dir = directory
        self.ca = self._issue(cn(ca_name), "ca", ca=True, issuer=None)

    def _issue(
        self,
        subject: x509.Name,
        stem: str,
        *,
        ca: bool = False,
        issuer: Issued | None,
        server_names: tuple[str, ...] = (),
        client: bool = False,
        **options: Unpack[KeyOptions],
    ) -> Issued:
        key = new_key(options.get("kind", "ec"))
        builder = cert_builder(subject, key, issuer=issuer, ca=ca)
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
        if server_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in server_names]),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        if client:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False
            )
        cert = sign(
            builder,
            issuer.key if issuer else key,
            options.get("algorithm"),
            pss=options.get("pss", False),
        )
        return write_issued(self.dir, stem, cert, key, options.get("passphrase"))

    def server(self, stem: str = "server", **kw: Unpack[KeyOptions]) -> Issued:
        return self._issue(cn("localhost"), stem, issuer=self.ca, server_names=("localhost",), **kw)

    def client(self, stem: str, subject: x509.Name | str, **kw: Unpack[KeyOptions]) -> Issued:
        name = cn(subject) if isinstance(subject, str) else subject
        return self._issue(name, stem, issuer=self.ca, client=True, **kw)

    def crl(self, *revoked: Issued, stem: str = "root") -> Path:
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ca.cert.subject)
            .last_update(now - datetime.timedelta(minutes=5))
            .next_update(now + datetime.timedelta(days=1))
        )
        for issued in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(issued.cert.serial_number)
                .revocation_date(now - datetime.timedelta(minutes=1))
                .build()
            )
        crl = builder.sign(self.ca.key, hashes.SHA256())
        path = self.dir / f"{stem}.crl"
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return path

    def settings(self, server: Issued, **kw: Any) -> TlsSettings:
        """``server``'s files and ``kw``, any other TlsSettings fields (Any: no annotation can
        forward a dataclass's fields through **kwargs short of copying them; TlsSettings
        checks the names at run time)."""
        return TlsSettings(
            ssl_cert_file=str(server.cert_path), ssl_key_file=str(server.key_path), **kw
        )

    def server_context(self, server: Issued | None = None, **kw: Any) -> ssl.SSLContext:
        issued = server or self.server()
        return build_server_context(self.settings(issued, **kw), reloading=False, prompt=None)

    def client_context(
        self, cert: Issued | None = None, *, alpn: list[str] | None = None
    ) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(self.ca.cert_path))
        ctx.set_alpn_protocols(["postgresql"] if alpn is None else alpn)
        if cert is not None:
            ctx.load_cert_chain(str(cert.cert_path), str(cert.key_path))
        return ctx


def client_channel(ctx: ssl.SSLContext) -> TlsChannel:
    return TlsChannel(ctx, server_side=False, server_hostname="localhost")


def handshake(client: TlsChannel, server: TlsChannel, *, rounds: int = 10) -> None:
    """Drive both handshakes through memory until both are done."""
    for _ in range(rounds):
        out, client_done = client.handshake()
        server.feed(out)
        out, server_done = server.handshake()
        client.feed(out)
        if client_done and server_done:
            return
    raise AssertionError("handshake did not finish")


def connect(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> tuple[TlsChannel, TlsChannel]:
    client, server = client_channel(client_ctx), TlsChannel(server_ctx)
    handshake(client, server)
    return client, server
