"""build_server_context: PostgreSQL's be_tls_init semantics and texts, checked by real
handshakes through TlsChannel pairs in memory."""

from __future__ import annotations

import base64
import ctypes
import hashlib
import os
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest_tls import CertFactory, Issued, client_channel, connect, handshake
from cryptography.hazmat.primitives import hashes

from pggate.errors import ConfigError
from pggate.tls import _libssl
from pggate.tls import context as tlsconf
from pggate.tls.context import (
    PEM_PROMPT,
    TlsConfigError,
    TlsSettings,
    build_server_context,
    certificate_info,
    check_key_file_permissions,
    expand_passphrase_command,
    server_end_point_hash,
)
from pggate.transport.tls import TlsChannel, TlsHandshakeError

PERMISSION_DETAIL = (
    "File must have permissions u=rw (0600) or less if owned by the database user, "
    "or permissions u=rw,g=r (0640) or less if owned by root."
)


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> CertFactory:
    return CertFactory(tmp_path_factory.mktemp("tlsconf"))


@pytest.fixture(scope="module")
def server(factory: CertFactory) -> Issued:
    return factory.server()


@pytest.fixture(scope="module")
def locked(factory: CertFactory) -> Issued:
    return factory.server("server-password", passphrase=b"secret")


def build(settings: TlsSettings, **kw: Any) -> ssl.SSLContext:
    kw.setdefault("reloading", False)
    kw.setdefault("prompt", None)
    return build_server_context(settings, **kw)


def raises(settings: TlsSettings, **kw: Any) -> TlsConfigError:
    with pytest.raises(TlsConfigError) as caught:
        build(settings, **kw)
    assert isinstance(caught.value, ConfigError)
    return caught.value


def test_binding_is_the_interpreters_libssl() -> None:
    # Proven at load by round trips through SSL_CTX_get_options and get_ciphers().
    assert tlsconf.openssl_binding_available()


def test_defaults_build(factory: CertFactory, server: Issued) -> None:
    ctx = build(factory.settings(server))
    assert ctx.options & ssl.OP_NO_TICKET and ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_NO_RENEGOTIATION and ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert ctx.num_tickets == 0
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_NONE  # no ssl_ca_file: no certificate request
    off = build(factory.settings(server, ssl_prefer_server_ciphers=False))
    assert not off.options & ssl.OP_CIPHER_SERVER_PREFERENCE


def test_from_config_resolves_paths(tmp_path: Path) -> None:
    class Cfg:
        def __init__(self) -> None:
            for name, field in TlsSettings.__dataclass_fields__.items():
                setattr(self, name, field.default if isinstance(field.default, (str, bool)) else "")
            self.ssl_cert_file, self.ssl_key_file, self.ssl_crl_dir = "server.crt", "k", ""

        def path(self, value: str) -> Path:
            return tmp_path / value

    settings = TlsSettings.from_config(Cfg())
    assert settings.ssl_cert_file == str(tmp_path / "server.crt")
    assert settings.ssl_key_file == str(tmp_path / "k")
    assert settings.ssl_crl_dir == "" and settings.ssl_groups == "X25519:prime256v1"


# -- key file permissions (be-secure-common.c:check_ssl_key_file_permissions) -------------------


@pytest.mark.parametrize(
    ("mode", "euid", "problem"),
    [
        (0o600, 0, None),  # owned by us (root here)
        (0o400, 0, None),
        (0o640, 4242, None),  # owned by root, we are someone else
        (0o644, 4242, "has group or world access"),
        (0o660, 4242, "has group or world access"),
        (0o640, 0, "has group or world access"),  # ours *and* root's: 0600 applies
        (0o604, 0, "has group or world access"),
    ],
)
def test_key_permission_table(tmp_path: Path, mode: int, euid: int, problem: str | None) -> None:
    key = tmp_path / "k.key"
    key.write_bytes(b"x")
    key.chmod(mode)
    assert os.stat(key).st_uid == os.geteuid() == 0 or pytest.skip("needs root to own files")
    if problem is None:
        check_key_file_permissions(str(key), euid=euid)
        return
    with pytest.raises(TlsConfigError) as caught:
        check_key_file_permissions(str(key), euid=euid)
    assert caught.value.message == f'private key file "{key}" {problem}'
    assert caught.value.detail == PERMISSION_DETAIL
    assert caught.value.parameter == "ssl_key_file"


def test_key_owned_by_someone_else(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    key.write_bytes(b"x")
    key.chmod(0o600)
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    os.chown(key, 4242, 4242)
    with pytest.raises(
        TlsConfigError,
        match=r'^private key file ".*" must be owned by the '
        "database user or root$",
    ):
        check_key_file_permissions(str(key))


def test_key_not_regular_or_missing(tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError) as caught:
        check_key_file_permissions(str(tmp_path))
    assert caught.value.message == f'private key file "{tmp_path}" is not a regular file'
    with pytest.raises(TlsConfigError) as caught:
        check_key_file_permissions(str(tmp_path / "nope"))
    assert caught.value.message == (
        f'could not access private key file "{tmp_path / "nope"}": No such file or directory'
    )


def test_build_applies_the_permission_check(factory: CertFactory, tmp_path: Path) -> None:
    issued = factory.server("open-key")
    issued.key_path.chmod(0o644)
    err = raises(factory.settings(issued))
    assert err.message == f'private key file "{issued.key_path}" has group or world access'
    assert err.detail == PERMISSION_DETAIL


def test_certificate_and_key_errors(factory: CertFactory, server: Issued, tmp_path: Path) -> None:
    other = factory.server("other")
    err = raises(TlsSettings(str(tmp_path / "none.crt"), str(server.key_path)))
    assert err.message.startswith(f'could not load server certificate file "{tmp_path}/none.crt"')
    assert err.parameter == "ssl_cert_file"
    err = raises(TlsSettings(str(server.cert_path), str(other.key_path)))
    # OpenSSL compares the key with the loaded certificate already in SSL_CTX_use_PrivateKey.
    assert err.message == f'could not load private key file "{other.key_path}": key values mismatch'

    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    garbage.chmod(0o600)
    err = raises(TlsSettings(str(server.cert_path), str(garbage)))
    assert err.message.startswith(f'could not load private key file "{garbage}": ')


# -- passphrases ---------------------------------------------------------------------------------


def test_passphrase_command(factory: CertFactory, locked: Issued) -> None:
    build(factory.settings(locked, ssl_passphrase_command="echo secret"))
    err = raises(factory.settings(locked, ssl_passphrase_command="echo wrongpassword"))
    assert err.message.startswith(f'could not load private key file "{locked.key_path}": ')
    assert err.message.endswith(("bad decrypt", "maybe wrong password"))
    err = raises(factory.settings(locked, ssl_passphrase_command="false"))
    assert err.message == 'command "false" failed'
    assert err.detail == "child process exited with exit code 1"
    assert err.parameter == "ssl_passphrase_command"


def test_passphrase_command_placeholders(
    factory: CertFactory, locked: Issued, tmp_path: Path
) -> None:
    assert expand_passphrase_command("x %p %% y") == f"x {PEM_PROMPT} % y"
    with pytest.raises(TlsConfigError) as caught:
        expand_passphrase_command("x %q")
    assert caught.value.detail == 'String contains unexpected placeholder "%q".'
    seen = tmp_path / "prompt"
    command = f"printf '%%s' \"%p\" > {seen}; printf 'secret\\r\\nignored\\n'"
    build(factory.settings(locked, ssl_passphrase_command=command))
    assert seen.read_text() == PEM_PROMPT


def test_terminal_prompt_at_start(factory: CertFactory, locked: Issued) -> None:
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return "secret"

    build(factory.settings(locked), prompt=prompt)
    assert asked and asked[0] == PEM_PROMPT
    err = raises(factory.settings(locked))  # no prompt: no terminal
    assert err.message.startswith(
        f'private key file "{locked.key_path}" requires a passphrase and no terminal'
    )


def test_reload_needs_supports_reload(factory: CertFactory, locked: Issued, server: Issued) -> None:
    text = (
        f'private key file "{locked.key_path}" cannot be reloaded because it requires a passphrase'
    )
    with_command = factory.settings(locked, ssl_passphrase_command="echo secret")
    assert raises(with_command, reloading=True).message == text
    assert (
        raises(factory.settings(locked), reloading=True, prompt=lambda _: "secret").message == text
    )
    build(
        factory.settings(
            locked,
            ssl_passphrase_command="echo secret",
            ssl_passphrase_command_supports_reload=True,
        ),
        reloading=True,
    )
    build(factory.settings(server), reloading=True)  # unencrypted keys reload fine


# -- protocol range, ciphers, groups ------------------------------------------------------------


def test_protocol_range(factory: CertFactory, server: Issued) -> None:
    err = raises(
        factory.settings(
            server, ssl_min_protocol_version="TLSv1.3", ssl_max_protocol_version="TLSv1.2"
        )
    )
    assert err.message == "could not set SSL protocol version range"
    assert err.detail == (
        '"ssl_min_protocol_version" cannot be higher than "ssl_max_protocol_version"'
    )
    err = raises(factory.settings(server, ssl_max_protocol_version="SSLv3"))
    assert err.message == '"ssl_max_protocol_version" setting "SSLv3" not supported by this build'
    ctx = build(
        factory.settings(server, ssl_min_protocol_version="", ssl_max_protocol_version="TLSv1.2")
    )
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_2
    _client, srv = connect(ctx, factory.client_context())
    assert srv.version == "TLSv1.2"


def test_bad_cipher_lists(factory: CertFactory, server: Issued) -> None:
    err = raises(factory.settings(server, ssl_ciphers="NOPE"))
    assert err.message == "could not set the TLSv1.2 cipher list (no valid ciphers available)"
    err = raises(factory.settings(server, ssl_tls13_ciphers="TLS_NOPE"))
    assert err.message == "could not set the TLSv1.3 cipher suites (no valid ciphers available)"
    err = raises(factory.settings(server, ssl_groups="nosuchgroup"))
    assert err.message.startswith("could not set group names specified in ssl_groups: ")
    assert err.hint is not None


def _client_suites(ctx: ssl.SSLContext, suites: str) -> None:
    lib = _libssl.libssl()
    assert lib is not None
    assert lib.set_ciphersuites(lib.ctx_pointer(ctx), suites.encode()) == 1


def test_tls13_ciphersuites_applied(factory: CertFactory, server: Issued) -> None:
    ctx = build(factory.settings(server, ssl_tls13_ciphers="TLS_AES_256_GCM_SHA384"))
    assert [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"] == [
        "TLS_AES_256_GCM_SHA384"
    ]
    restricted = factory.client_context()
    _client_suites(restricted, "TLS_AES_128_GCM_SHA256")
    with pytest.raises(TlsHandshakeError, match="no shared cipher"):
        connect(ctx, restricted)
    _client, srv = connect(ctx, factory.client_context())
    assert srv.cipher is not None and srv.cipher[0] == "TLS_AES_256_GCM_SHA384"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_groups_applied(factory: CertFactory, server: Issued, version: ssl.TLSVersion) -> None:
    ctx = build(factory.settings(server, ssl_groups="secp384r1:prime256v1"))
    outside = factory.client_context()
    outside.maximum_version = version
    outside.set_ecdh_curve("X25519")
    with pytest.raises(TlsHandshakeError):
        connect(ctx, outside)
    inside = factory.client_context()
    inside.maximum_version = version
    inside.set_ecdh_curve("prime256v1")
    _client, srv = connect(ctx, inside)
    assert srv.version == version.name.replace("_", ".")


# -- client certificates, CRLs -------------------------------------------------------------------


def test_crl_revokes_client_certificate(factory: CertFactory, server: Issued) -> None:
    good = factory.client("good", "ssltestuser")
    revoked = factory.client("revoked", "ssltestuser")
    crl = factory.crl(revoked)
    ctx = build(
        factory.settings(server, ssl_ca_file=str(factory.ca.cert_path), ssl_crl_file=str(crl))
    )
    assert ctx.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    assert ctx.verify_flags & ssl.VERIFY_CRL_CHECK_CHAIN
    _client, srv = connect(ctx, factory.client_context(good))
    assert srv.peer_cert_verified and srv.peer_common_name == "ssltestuser"
    _client, srv = connect(ctx, factory.client_context())  # no certificate: still fine
    assert not srv.peer_cert_verified
    with pytest.raises(TlsHandshakeError) as caught:
        handshake(client_channel(factory.client_context(revoked)), TlsChannel(ctx))
    assert caught.value.message == "certificate verify failed"
    assert caught.value.verify_message == "certificate revoked"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to hash a CRL dir")
def test_crl_dir(factory: CertFactory, server: Issued, tmp_path: Path) -> None:
    revoked = factory.client("revoked-dir", "ssltestuser")
    crl = factory.crl(revoked, stem="dir")
    name_hash = subprocess.run(
        ["openssl", "crl", "-hash", "-noout", "-in", str(crl)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    crl_dir = tmp_path / "crls"
    crl_dir.mkdir()
    shutil.copy(crl, crl_dir / f"{name_hash}.r0")
    ctx = build(
        factory.settings(server, ssl_ca_file=str(factory.ca.cert_path), ssl_crl_dir=str(crl_dir))
    )
    with pytest.raises(TlsHandshakeError) as caught:
        handshake(client_channel(factory.client_context(revoked)), TlsChannel(ctx))
    assert caught.value.verify_message == "certificate revoked"


@pytest.mark.parametrize(
    ("missing", "missing_error", "junk", "junk_error"),
    [
        (
            ("ssl_ca_file", "ca.crt"),
            'could not load root certificate file "{}": No such file or directory',
            ("ssl_crl_file", "junk.crl"),
            'could not load SSL certificate revocation list file "{}": ',
        ),
        (
            ("ssl_dh_params_file", "dh.pem"),
            'could not open DH parameters file "{}": No such file or directory',
            ("ssl_dh_params_file", "junk.pem"),
            "could not load DH parameters file: ",
        ),
    ],
    ids=["ca-and-crl", "dh-params"],
)
def test_missing_and_junk_files(
    factory: CertFactory,
    server: Issued,
    tmp_path: Path,
    missing: tuple[str, str],
    missing_error: str,
    junk: tuple[str, str],
    junk_error: str,
) -> None:
    """A file that is not there, then one that holds junk: PostgreSQL's two texts."""
    setting, name = missing
    err = raises(factory.settings(server, **{setting: str(tmp_path / name)}))
    assert err.message == missing_error.format(tmp_path / name)
    setting, name = junk
    (tmp_path / name).write_text("junk\n")
    err = raises(factory.settings(server, **{setting: str(tmp_path / name)}))
    assert err.message.startswith(junk_error.format(tmp_path / name))


def test_junk_dh_params_on_reload(factory: CertFactory, server: Issued, tmp_path: Path) -> None:
    """On reload PostgreSQL logs the problem and keeps its built-in group."""
    junk = tmp_path / "junk.pem"
    junk.write_text("junk\n")
    notes: list[str] = []
    build(factory.settings(server, ssl_dh_params_file=str(junk)), reloading=True, log=notes.append)
    assert notes and notes[0].startswith("could not load DH parameters file: ")


def _dh_pem(p: int, g: int) -> str:
    def tlv(tag: int, body: bytes) -> bytes:
        n = len(body)
        size = bytes([n]) if n < 128 else bytes([0x82]) + n.to_bytes(2, "big")
        return bytes([tag]) + size + body

    def integer(v: int) -> bytes:
        return tlv(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big"))

    der = tlv(0x30, integer(p) + integer(g))
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN DH PARAMETERS-----\n{body}-----END DH PARAMETERS-----\n"


def test_dh_params_checked(factory: CertFactory, server: Issued, tmp_path: Path) -> None:
    composite = tmp_path / "composite.pem"
    composite.write_text(_dh_pem((1 << 2047) + 2311, 2))
    err = raises(factory.settings(server, ssl_dh_params_file=str(composite)))
    assert err.message == "invalid DH parameters: p is not prime"
    if shutil.which("openssl"):
        good = tmp_path / "dh.pem"
        subprocess.run(
            ["openssl", "dhparam", "-dsaparam", "-out", str(good), "2048"],
            check=True,
            capture_output=True,
        )
        build(factory.settings(server, ssl_dh_params_file=str(good)))


def test_python_only_fallback(
    monkeypatch: pytest.MonkeyPatch, factory: CertFactory, server: Issued, locked: Issued
) -> None:
    monkeypatch.setattr(tlsconf, "libssl", lambda: None)
    notes: list[str] = []
    ctx = build(factory.settings(server), log=notes.append)
    assert any("ssl_groups limited" in n for n in notes)
    _client, srv = connect(ctx, factory.client_context())
    assert srv.alpn == "postgresql"
    assert certificate_info(ctx).der == server.der
    build(factory.settings(locked, ssl_passphrase_command="echo secret"))
    err = raises(factory.settings(server, ssl_tls13_ciphers="TLS_AES_256_GCM_SHA384"))
    assert err.parameter == "ssl_tls13_ciphers"


# -- tls-server-end-point --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "algorithm", "pss", "expected"),
    [
        ("ec", hashes.SHA256(), False, "sha256"),
        ("ec", hashes.SHA512(), False, "sha512"),
        ("rsa", hashes.SHA256(), False, "sha256"),
        ("rsa", hashes.SHA384(), True, "sha384"),  # RSA-PSS: the PSS hash
    ],
)
def test_server_end_point_hash(
    tmp_path: Path, kind: str, algorithm: hashes.HashAlgorithm, pss: bool, expected: str
) -> None:
    local = CertFactory(tmp_path)
    local.ca = local._issue(
        local.ca.cert.subject,
        "ca-" + kind,
        ca=True,
        issuer=None,
        kind=kind,
        algorithm=algorithm,
        pss=pss,
    )
    cert = local.server(kind=kind, algorithm=algorithm, pss=pss)
    assert server_end_point_hash(cert.der) == hashlib.new(expected, cert.der).digest()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="cryptography refuses SHA-1 signing")
def test_server_end_point_hash_sha1_becomes_sha256(tmp_path: Path) -> None:
    # RFC 5929 section 4.1: MD5 and SHA-1 signatures hash with SHA-256.
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-sha1",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=old",
            "-keyout",
            str(tmp_path / "k"),
            "-out",
            str(tmp_path / "c"),
            "-outform",
            "DER",
        ],
        check=True,
        capture_output=True,
    )
    der = (tmp_path / "c").read_bytes()
    assert server_end_point_hash(der) == hashlib.sha256(der).digest()


def test_certificate_info(factory: CertFactory, server: Issued, tmp_path: Path) -> None:
    ctx = build(factory.settings(server))
    info = certificate_info(ctx)
    assert info.der == server.der
    assert info.end_point_hash == hashlib.sha256(server.der).digest()
    assert certificate_info(str(server.cert_path)) == info
    with pytest.raises(ValueError):
        certificate_info(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ed = CertFactory(tmp_path, "Ed CA")
    ed.ca = ed._issue(ed.ca.cert.subject, "ed-ca", ca=True, issuer=None, kind="ed25519")
    assert certificate_info(str(ed.server(kind="ed25519").cert_path)).end_point_hash is None


def test_client_ca_list_and_session_cache(factory: CertFactory, server: Issued) -> None:
    # Read back through libssl itself: the CA names go into CertificateRequest
    # (SSL_CTX_set_client_CA_list) and the session cache is off (SSL_CTRL_GET_SESS_CACHE_MODE).
    import _ssl

    raw = ctypes.CDLL(_ssl.__file__)
    raw.SSL_CTX_get_client_CA_list.restype = ctypes.c_void_p
    raw.SSL_CTX_get_client_CA_list.argtypes = [ctypes.c_void_p]
    raw.OPENSSL_sk_num.argtypes = [ctypes.c_void_p]
    lib = _libssl.libssl()
    assert lib is not None
    ctx = build(factory.settings(server, ssl_ca_file=str(factory.ca.cert_path)))
    ptr = lib.ctx_pointer(ctx)
    assert raw.OPENSSL_sk_num(raw.SSL_CTX_get_client_CA_list(ptr)) == 1
    assert lib.ctrl(ptr, 45, 0, None) == 0  # SSL_SESS_CACHE_OFF
    assert ctx.verify_mode == ssl.CERT_OPTIONAL


def test_passphrase_command_runs_once(factory: CertFactory, locked: Issued, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    build(factory.settings(locked, ssl_passphrase_command=f"echo run >> {log}; echo secret"))
    assert log.read_text() == "run\n"


def test_error_queue_left_clean(factory: CertFactory, server: Issued) -> None:
    raises(factory.settings(server, ssl_groups="nosuchgroup"))
    lib = _libssl.libssl()
    assert lib is not None and lib.err_get_error() == 0


def test_a_junk_crl_is_reported_in_openssls_words(
    factory: CertFactory, server: Issued, tmp_path: Path
) -> None:
    """A PEM block that is not a CRL: OpenSSL's reason ("PEM lib"), without Python's library
    tag or its _ssl.c source location."""
    junk = tmp_path / "junk.crl"
    junk.write_text("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
    settings = factory.settings(
        server, ssl_ca_file=str(factory.ca.cert_path), ssl_crl_file=str(junk)
    )
    err = raises(settings)
    assert err.message == f'could not load SSL certificate revocation list file "{junk}": PEM lib'
