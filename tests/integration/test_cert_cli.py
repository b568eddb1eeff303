"""``pggate cert`` end to end: files made by the commands, then used by real TLS (Python's ssl,
i.e. OpenSSL, as PostgreSQL and libpq use it) and, when installed, by the ``openssl`` tool."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pggate.errors import PggateError
from pggate.tls import certs
from pggate.tls.certcli import add_cert_commands

pytestmark = pytest.mark.integration

TIMEOUT = 10.0
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl tool is not installed")


def run(*argv: str | Path) -> int:
    """``pggate cert ...`` as cli.main runs it: PggateError → message on stderr, exit code 1."""
    parser = argparse.ArgumentParser(prog="pggate")
    add_cert_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(arg) for arg in argv])
    try:
        code: int = args.func(args)
    except PggateError as exc:
        print(f"FATAL:  {exc}", file=sys.stderr)
        return 1
    return code


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server cert, alice (good), mallory (revoked, also in a hashed CRL dir)."""
    d = tmp_path_factory.mktemp("pki")
    (d / "pass").write_text("secret1\n")
    steps: list[Sequence[str | Path]] = [
        ("ca", "--dir", d, "--cn", "Test CA"),
        ("server", "--dir", d, "--name", "localhost", "--ip", "127.0.0.1", "--ip", "::1"),
        ("client", "--dir", d, "--user", "alice", "--dn", "O=PGDG", "--dn", "OU=Testing"),
        ("client", "--dir", d, "--user", "bob", "--passphrase-file", d / "pass"),
        ("client", "--dir", d, "--user", "mallory"),
        ("revoke", d / "mallory.crt", "--dir", d, "--crl-dir", d / "crls"),
    ]
    for step in steps:
        assert run("cert", *step) == 0, step
    return d


# --- a tiny TLS server -----------------------------------------------------------------------


@dataclass
class Outcome:
    server_error: BaseException | None = None
    client_error: BaseException | None = None
    received: bytes = b""

    @property
    def ok(self) -> bool:
        return self.server_error is None and self.client_error is None and self.received == b"ok"


@contextlib.contextmanager
def tls_server(server_ctx: ssl.SSLContext) -> Iterator[tuple[int, Outcome]]:
    """A one-connection TLS server on 127.0.0.1 that answers ``ok`` once its handshake
    (including client certificate verification) succeeds; yields its port and the outcome."""
    outcome = Outcome()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(TIMEOUT)
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (OSError, ssl.SSLError) as exc:
                outcome.server_error = exc

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            yield listener.getsockname()[1], outcome
        finally:
            thread.join(TIMEOUT)
            assert not thread.is_alive()


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, host: str) -> Outcome:
    """One connection from ``client_ctx`` (checking ``host``), which reads the server's answer."""
    with tls_server(server_ctx) as (port, outcome):
        try:
            with (
                socket.create_connection(("127.0.0.1", port), TIMEOUT) as raw,
                client_ctx.wrap_socket(raw, server_hostname=host) as tls,
            ):
                outcome.received = tls.recv(2)
        except (OSError, ssl.SSLError) as exc:
            outcome.client_error = exc
    return outcome


def server_context(
    d: Path, *, client_ca: bool = False, crl_file: Path | None = None, crl_dir: Path | None = None
) -> ssl.SSLContext:
    """Like PostgreSQL's be_tls_init: ssl_cert_file/ssl_key_file, and with ``ssl_ca_file`` set
    client certificates verified against it, CRLs from ``ssl_crl_file`` / ``ssl_crl_dir``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "server.crt", d / "server.key")
    if client_ca:
        ctx.load_verify_locations(cafile=d / "root.crt")
        ctx.verify_mode = ssl.CERT_REQUIRED
    if crl_file is not None or crl_dir is not None:
        ctx.load_verify_locations(cafile=crl_file, capath=crl_dir)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def client_context(
    root: Path, cert: Path | None = None, key: Path | None = None, password: str | None = None
) -> ssl.SSLContext:
    """libpq's sslmode=verify-full, plus X509_STRICT (Python 3.13's default) for good measure."""
    ctx = ssl.create_default_context(cafile=root)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if cert is not None:
        ctx.load_cert_chain(cert, key, password)
    return ctx


# --- server certificates -------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_verify_full_succeeds(pki: Path, host: str) -> None:
    outcome = handshake(server_context(pki), client_context(pki / "root.crt"), host)
    assert outcome.ok, outcome


def test_wrong_ca_fails(pki: Path, tmp_path: Path) -> None:
    assert run("cert", "ca", "--dir", tmp_path, "--cn", "Test CA") == 0  # same name, other key
    outcome = handshake(server_context(pki), client_context(tmp_path / "root.crt"), "localhost")
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError)
    assert outcome.received == b""


def test_wrong_host_name_fails(pki: Path) -> None:
    outcome = handshake(server_context(pki), client_context(pki / "root.crt"), "db.example.com")
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError)
    assert "db.example.com" in str(outcome.client_error)


def test_self_signed_rsa_server_cert(tmp_path: Path) -> None:
    argv = ["cert", "server", "--self-signed", "--rsa", "2048", "--name", "localhost"]
    assert run(*argv, "--dir", tmp_path) == 0
    client = client_context(tmp_path / "server.crt")
    assert handshake(server_context(tmp_path), client, "localhost").ok


def test_init_tls_then_verify_full(tmp_path: Path) -> None:
    certs.init_tls(tmp_path, ["db.example.com"])
    client = client_context(tmp_path / "root.crt")
    for host in ("localhost", "127.0.0.1", "db.example.com"):
        assert handshake(server_context(tmp_path), client, host).ok, host


# --- client certificates -------------------------------------------------------------------


def _client(pki: Path, user: str, password: str | None = None) -> ssl.SSLContext:
    return client_context(pki / "root.crt", pki / f"{user}.crt", pki / f"{user}.key", password)


def test_client_cert_verifies_at_the_server(pki: Path) -> None:
    server = server_context(pki, client_ca=True, crl_file=pki / "root.crl")
    assert handshake(server, _client(pki, "alice"), "localhost").ok


def test_missing_client_cert_fails(pki: Path) -> None:
    server = server_context(pki, client_ca=True)
    outcome = handshake(server, client_context(pki / "root.crt"), "localhost")
    assert "certificate" in str(outcome.server_error)
    assert outcome.received == b""


def test_encrypted_client_key(pki: Path) -> None:
    assert b"ENCRYPTED PRIVATE KEY" in (pki / "bob.key").read_bytes()
    server = server_context(pki, client_ca=True)
    assert handshake(server, _client(pki, "bob", "secret1"), "localhost").ok
    with pytest.raises(ssl.SSLError):
        _client(pki, "bob", "wrong")


@pytest.mark.parametrize("crl", ["file", "dir"])
def test_revoked_client_cert_fails(pki: Path, crl: str) -> None:
    where = {"crl_file": pki / "root.crl"} if crl == "file" else {"crl_dir": pki / "crls"}
    server = server_context(pki, client_ca=True, **where)
    assert handshake(server, _client(pki, "alice"), "localhost").ok
    outcome = handshake(server, _client(pki, "mallory"), "localhost")
    assert "certificate revoked" in str(outcome.server_error)
    assert outcome.received == b""


# --- the commands themselves ---------------------------------------------------------------


def test_ca_is_not_replaced_by_accident(pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (pki / "root.crt").read_bytes()
    assert run("cert", "ca", "--dir", pki) == 1
    assert "already exists" in capsys.readouterr().err
    assert (pki / "root.crt").read_bytes() == before


def test_revoke_refuses_a_foreign_certificate(
    pki: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("cert", "server", "--self-signed", "--name", "x", "--dir", tmp_path) == 0
    assert run("cert", "revoke", tmp_path / "server.crt", "--dir", pki) == 1
    assert "was not issued by the CA" in capsys.readouterr().err


def test_missing_ca_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("cert", "client", "--user", "alice", "--dir", tmp_path) == 1
    assert "could not read certificate file" in capsys.readouterr().err


def test_outputs_go_where_asked(pki: Path, tmp_path: Path) -> None:
    out_cert, out_key = tmp_path / "c.pem", tmp_path / "k.pem"
    argv: list[str | Path] = [
        "cert",
        "server",
        "--dir",
        pki,
        "--name",
        "db",
        "--out-cert",
        out_cert,
    ]
    assert run(*argv, "--out-key", out_key) == 0
    certs.load_cert(out_cert).verify_directly_issued_by(certs.load_cert(pki / "root.crt"))
    assert out_key.stat().st_mode & 0o777 == 0o600


def test_show(pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert run("cert", "show", pki / "alice.crt") == 0
    shown = capsys.readouterr().out
    assert "CN=alice,OU=Testing,O=PGDG" in shown
    assert "/O=PGDG/OU=Testing/CN=alice" in shown
    assert "issuer:      CN=Test CA" in shown
    assert "SHA-256:" in shown
    assert run("cert", "show", pki / "root.crl") == 0
    mallory = certs.load_cert(pki / "mallory.crt").serial_number
    assert f"serial {mallory}" in capsys.readouterr().out


# --- the openssl tool agrees ---------------------------------------------------------------


def openssl(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    command = [OPENSSL, *map(str, argv)]
    return subprocess.run(
        command, input="", capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


@needs_openssl
def test_openssl_verify(pki: Path) -> None:
    for leaf in ("server.crt", "alice.crt", "mallory.crt"):
        result = openssl("verify", "-x509_strict", "-CAfile", pki / "root.crt", pki / leaf)
        assert result.returncode == 0, result.stderr


@needs_openssl
def test_openssl_hashed_crl_dir(pki: Path) -> None:
    def verify(leaf: str) -> subprocess.CompletedProcess[str]:
        ca: list[str | Path] = ["-CAfile", pki / "root.crt"]
        return openssl("verify", "-crl_check", *ca, "-CApath", pki / "crls", pki / leaf)

    assert verify("alice.crt").returncode == 0
    revoked = verify("mallory.crt")
    assert revoked.returncode != 0
    assert "certificate revoked" in revoked.stdout + revoked.stderr


@needs_openssl
def test_openssl_hashes_and_names(pki: Path) -> None:
    root, alice = certs.load_cert(pki / "root.crt"), certs.load_cert(pki / "alice.crt")
    assert openssl("x509", "-hash", "-noout", "-in", pki / "root.crt").stdout.strip() == (
        certs.name_hash(root.subject)
    )
    assert openssl("crl", "-hash", "-noout", "-in", pki / "root.crl").stdout.strip() == (
        certs.name_hash(root.subject)
    )
    subject = openssl("x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", pki / "alice.crt")
    assert subject.stdout.rstrip("\n") == f"subject={certs.rfc2253(alice.subject)}"


@needs_openssl
def test_openssl_reads_encrypted_key(pki: Path) -> None:
    result = openssl("pkey", "-in", pki / "bob.key", "-passin", "pass:secret1", "-noout")
    assert result.returncode == 0, result.stderr
    assert openssl("pkey", "-in", pki / "bob.key", "-passin", "pass:nope").returncode != 0


@needs_openssl
def test_openssl_s_client_against_our_server(pki: Path) -> None:
    """The ``openssl`` client (what libpq is built on) verifies the chain and the host name."""
    with tls_server(server_context(pki)) as (port, outcome):
        verify = ["-verify_return_error", "-verify_hostname", "localhost"]
        result = openssl(
            "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", pki / "root.crt", *verify
        )
    assert "Verify return code: 0 (ok)" in result.stdout, result.stdout + result.stderr
    assert outcome.server_error is None
