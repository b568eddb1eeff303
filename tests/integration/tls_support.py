"""Helpers for the TLS integration tests: PostgreSQL's SSL test certificate set made with
pggate.certs at test time (shared/protocol.md §9.1), a recording TCP relay, raw-socket
protocol helpers, and client-side SSL contexts.

No test functions here."""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import functools
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from pggate.proto import codec, codes
from pggate.tls import certs

# Host names as in PostgreSQL's src/test/ssl (pg-ssltest.test), ours under a test-only TLD.
DOMAIN = "pggate-test.test"
CN_HOST = f"common-name.{DOMAIN}"
ALT_HOSTS = (f"dns1.alt-name.{DOMAIN}", f"dns2.alt-name.{DOMAIN}", f"*.wildcard.{DOMAIN}")
CLIENT_DN_EXTRA: dict[str, str | list[str]] = {"O": "PGDG", "OU": "Testing"}
CLIENT_DN = "CN=alice-dn,OU=Testing,O=PGDG"
SERVER_PASSPHRASE = "secret1"


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, written as ``<stem>.crt`` / ``<stem>.key``."""

    cert: x509.Certificate
    key: certs.PrivateKey
    crt: Path
    key_path: Path

    @property
    def serial(self) -> int:
        return self.cert.serial_number


def _write(directory: Path, stem: str, cert: x509.Certificate, key: certs.PrivateKey) -> Pair:
    crt, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    certs.write_cert(crt, cert)
    certs.write_key(key_path, key)
    return Pair(cert, key, crt, key_path)


def custom_server_cert(
    ca: tuple[x509.Certificate, certs.PrivateKey],
    common_name: str | None,
    dns_names: tuple[str, ...] = (),
    *,
    extra: dict[str, str | list[str]] | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[x509.Certificate, certs.PrivateKey]:
    """A server certificate make_server_cert refuses to make on purpose: no subjectAltName
    (CN only, or no name at all), or a validity window in the past."""
    ca_cert, ca_key = ca
    key = certs.generate_key()
    now = certs.utcnow()
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(certs.build_name(common_name, extra))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
    )
    if dns_names:
        sans = x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names])
        builder = builder.add_extension(sans, False)
    return builder.sign(ca_key, hashes.SHA256()), key


@dataclass
class Pki:
    """The certificate set, after src/test/ssl/conf (protocol.md §9.1), in ``directory``."""

    directory: Path
    server_ca: Path
    client_ca: Path
    other_ca: Path
    server_cn_only: Pair
    server_multiple_alt_names: Pair
    server_no_names: Pair
    server_expired: Pair
    server_a: Pair
    server_b: Pair
    server_password_key: Path
    client: Pair
    client_revoked: Pair
    client_dn: Pair
    client_wrong_ca: Pair
    client_crl: Path
    client_crl_dir: Path


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    server_ca = certs.make_ca("Test CA for pggate SSL regression test server certs")
    client_ca = certs.make_ca("Test CA for pggate SSL regression test client certs")
    other_ca = certs.make_ca("Some other CA")
    for name, (cert, _key) in {
        "server_ca": server_ca,
        "client_ca": client_ca,
        "other_ca": other_ca,
    }.items():
        certs.write_cert(directory / f"{name}.crt", cert)

    past = certs.utcnow() - dt.timedelta(days=60)
    server_cn_only = _write(directory, "server-cn-only", *custom_server_cert(server_ca, CN_HOST))
    password_key = directory / "server-password.key"
    certs.write_key(password_key, server_cn_only.key, SERVER_PASSPHRASE.encode())
    client = _write(directory, "client", *certs.make_client_cert(*client_ca, "alice"))
    client_revoked = _write(
        directory, "client-revoked", *certs.make_client_cert(*client_ca, "alice")
    )
    crl = certs.revoke(*client_ca, None, [client_revoked.serial])
    certs.write_crl(directory / "client.crl", crl)
    certs.hash_dir_link(directory / "client-crldir", crl)
    return Pki(
        directory=directory,
        server_ca=directory / "server_ca.crt",
        client_ca=directory / "client_ca.crt",
        other_ca=directory / "other_ca.crt",
        server_cn_only=server_cn_only,
        server_multiple_alt_names=_write(
            directory,
            "server-multiple-alt-names",
            *custom_server_cert(server_ca, CN_HOST, ALT_HOSTS),
        ),
        server_no_names=_write(
            directory,
            "server-no-names",
            *custom_server_cert(server_ca, None, extra={"OU": "pggate test suite"}),
        ),
        server_expired=_write(
            directory,
            "server-expired",
            *custom_server_cert(
                server_ca, CN_HOST, not_before=past, not_after=past + dt.timedelta(days=30)
            ),
        ),
        server_a=_write(
            directory, "server-a", *certs.make_server_cert(*server_ca, [f"a.{DOMAIN}"], [])
        ),
        server_b=_write(
            directory, "server-b", *certs.make_server_cert(*server_ca, [f"b.{DOMAIN}"], [])
        ),
        server_password_key=password_key,
        client=client,
        client_revoked=client_revoked,
        client_dn=_write(
            directory,
            "client-dn",
            *certs.make_client_cert(*client_ca, "alice-dn", dn_extra=CLIENT_DN_EXTRA),
        ),
        client_wrong_ca=_write(
            directory, "client-wrong-ca", *certs.make_client_cert(*other_ca, "alice")
        ),
        client_crl=directory / "client.crl",
        client_crl_dir=directory / "client-crldir",
    )


def install_server_cert(directory: Path, pair: Pair, key: Path | None = None) -> None:
    """Copy a certificate and key to ``directory``/server.crt and server.key (mode 0600)."""
    (directory / "server.crt").write_bytes(pair.crt.read_bytes())
    target = directory / "server.key"
    target.write_bytes((key or pair.key_path).read_bytes())
    target.chmod(0o600)


# --- client-side contexts ---------------------------------------------------------------------


def client_context(
    *,
    cafile: Path | None = None,
    cert: Pair | None = None,
    alpn: list[str] | None = None,
    maximum: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A client context: verify-ca against ``cafile`` (no host name check), else no
    verification (libpq's sslmode=require); optional client certificate, ALPN, version cap,
    TLS <= 1.2 cipher list."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if cafile is None:
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cafile=str(cafile))
    if cert is not None:
        ctx.load_cert_chain(str(cert.crt), str(cert.key_path))
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if maximum is not None:
        ctx.maximum_version = maximum
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


# --- libpq facts psycopg does not expose -----------------------------------------------------


@functools.cache
def _bundled_libpq() -> ctypes.CDLL:
    """The libpq psycopg's binary package loaded (dlopen of the same path: the same handle)."""
    import psycopg_binary

    libs = Path(psycopg_binary.__file__).parent.parent / "psycopg_binary.libs"
    lib = ctypes.CDLL(str(next(libs.glob("libpq-*.so*"))))
    lib.PQsslAttribute.restype = ctypes.c_char_p
    lib.PQsslAttribute.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return lib


def ssl_attribute(conn: psycopg.Connection[Any], name: str) -> str | None:
    """libpq's PQsslAttribute (``protocol``, ``cipher``, ``key_bits``...) of a connection."""
    pgconn: Any = conn.pgconn  # the implementation's PGconn has the pointer; the ABC does not
    value = _bundled_libpq().PQsslAttribute(pgconn.pgconn_ptr, name.encode())
    return None if value is None else value.decode()


# --- raw protocol -----------------------------------------------------------------------------


def recv_exactly(sock: socket.socket | ssl.SSLSocket, size: int, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def read_until_eof(sock: socket.socket | ssl.SSLSocket, timeout: float = 10.0) -> bytes:
    """Everything the peer sends until it closes (a reset counts as the end)."""
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return data
        if not chunk:
            return data
        data += chunk
    raise TimeoutError(f"peer did not close; got {data!r}")


def read_message(sock: socket.socket | ssl.SSLSocket) -> tuple[bytes, bytes]:
    """One backend message (type, body)."""
    header = recv_exactly(sock, 5)
    assert len(header) == 5, f"connection closed, got {header!r}"
    length = int.from_bytes(header[1:], "big")
    body = recv_exactly(sock, length - 4)
    return header[:1], body


def error_fields(body: bytes) -> dict[str, str]:
    return codec.parse_error_fields(body)


def startup(**params: str) -> bytes:
    return codec.startup_message(codes.PROTOCOL_3_0, params)


# --- recording relay --------------------------------------------------------------------------


@dataclass
class Flow:
    """One relayed TCP connection: what the client sent, and what the server sent."""

    upstream: bytearray = field(default_factory=bytearray)
    downstream: bytearray = field(default_factory=bytearray)


class RecordingRelay:
    """A man in the middle on 127.0.0.1: forwards every connection to ``target_port`` and
    records both directions, to check what an eavesdropper on the wire would see."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.flows: list[Flow] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = [self._listener]
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            flow = Flow()
            with self._lock:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self.flows.append(flow)
                self._sockets += [client, server]
                for src, dst, record in (
                    (client, server, flow.upstream),
                    (server, client, flow.downstream),
                ):
                    thread = threading.Thread(
                        target=self._pump, args=(src, dst, record), daemon=True
                    )
                    self._threads.append(thread)
                    thread.start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, record: bytearray) -> None:
        try:
            while True:
                readable, _, _ = select.select([src], [], [], 0.5)
                if not readable:
                    if src.fileno() < 0:
                        return
                    continue
                data = src.recv(65536)
                if not data:
                    break
                record += data
                dst.sendall(data)
        except (OSError, ValueError):
            return
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def wire(self) -> bytes:
        """Every byte seen, both directions, all connections."""
        with self._lock:
            return b"".join(bytes(f.upstream) + bytes(f.downstream) for f in self.flows)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)
