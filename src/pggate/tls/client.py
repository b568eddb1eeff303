"""pggate as a TLS client of its backend, with libpq 18's meanings and texts.

``fe-secure-openssl.c:initialize_SSL`` becomes :func:`build_client_context`, built once per
configuration (libpq builds one per connection; the outcome is the same because everything it
loads comes from the connection options and the files they name). ``open_client_SSL``'s checks
after the handshake are :func:`check_after_handshake`; its failure texts for a handshake that
did not finish are :func:`describe_handshake_error`. The verify-full name check itself lives in
:mod:`pggate.tls.peername`. The I/O (SSLRequest or direct TLS, the allow/prefer fallbacks) is
the caller's.

It may touch the filesystem (certificate and key files, their permissions, the home directory).
"""

from __future__ import annotations

import ctypes
import errno
import os
import ssl
import stat
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from pggate.errors import ConfigError
from pggate.proto import codes
from pggate.tls._libssl import PASSWD_CB, SSL_FILETYPE_PEM, libssl
from pggate.tls.context import server_end_point_hash
from pggate.tls.peername import NO_NAME, verify_peer_name
from pggate.tls.reasons import PROTOCOL_REASONS

_SSL_FILETYPE_ASN1 = 2
# fe-secure-openssl.c: MIN_OPENSSL_TLS_VERSION / MAX_OPENSSL_TLS_VERSION, for the hint below.
_MIN_TLS, _MAX_TLS = "TLSv1", "TLSv1.3"
_TLS_VERSIONS = {
    "tlsv1": ssl.TLSVersion.TLSv1,
    "tlsv1.1": ssl.TLSVersion.TLSv1_1,
    "tlsv1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1.3": ssl.TLSVersion.TLSv1_3,
}
_CHECK_KEY_REASONS = frozenset({"NO_CERTIFICATE_ASSIGNED", "NO_PRIVATE_KEY_ASSIGNED"})
_NO_ROOT_HINT = (
    "Either provide the file, use the system's trusted roots with sslrootcert=system, or "
    "change sslmode to disable server certificate verification."
)


@dataclass(frozen=True, slots=True)
class BackendTlsSettings:
    """libpq's TLS connection options, as the conninfo parser validated them.

    None or "" means "not given": libpq's default applies (files under ``~/.postgresql/`` of
    the user pggate runs as, see :func:`libpq_home_directory`). Paths are used as given.
    ``sslpassword`` never appears in a repr or an error.
    """

    sslmode: str = "prefer"
    sslnegotiation: str = "postgres"
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    sslpassword: str | None = field(default=None, repr=False)
    sslcrl: str | None = None
    sslcrldir: str | None = None
    ssl_min_protocol_version: str | None = "TLSv1.2"
    ssl_max_protocol_version: str | None = None
    sslsni: bool = True


class BackendTlsConfigError(ConfigError):
    """A TLS option for the backend that cannot be applied (``parameter="backend"``).

    ``libpq_message`` is libpq's whole text; ``message`` its first line and ``hint`` the
    second line when there is one (libpq prints both lines, without SQL-style labels).
    """

    def __init__(self, libpq_message: str) -> None:
        first, _, rest = libpq_message.partition("\n")
        super().__init__(first, parameter="backend", hint=rest or None)
        self.libpq_message = libpq_message


def libpq_home_directory() -> str | None:
    """fe-connect.c:pqGetHomeDirectory (libpq 18): ``$HOME`` if set and not empty, else the
    effective user's home directory from the password database; None when neither exists."""
    home = os.environ.get("HOME")
    if home:
        return home
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_dir
    except (ImportError, KeyError):
        return None


def _reason(exc: BaseException) -> str:
    """What libpq's SSLerrmessage prints for this error: OpenSSL's reason string, which
    :mod:`ssl` puts between ``[LIB: REASON] `` and `` (_ssl.c:N)``; errno text otherwise."""
    if isinstance(exc, ssl.SSLError):
        text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        if text.startswith("["):
            text = text.partition("] ")[2] or text
        cut = text.rfind(" (_ssl.c:")
        if cut >= 0:
            text = text[:cut]
        verify = getattr(exc, "verify_message", None)
        if verify and text.endswith(f": {verify}"):
            text = text[: -len(verify) - 2]
        return text
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _home_file(home: str | None, name: str) -> str:
    return os.path.join(home, ".postgresql", name) if home else ""


def _exists(path: str) -> bool:
    try:
        os.stat(path)
    except (OSError, ValueError):
        return False
    return True


def build_client_context(settings: BackendTlsSettings) -> ssl.SSLContext:
    """An SSLContext for the backend hop, configured as ``initialize_SSL`` configures libpq's.

    * Protocol range from ``ssl_min/max_protocol_version`` (case-insensitive); unset means
      OpenSSL's own bound. OpenSSL's default cipher list and options, as libpq leaves them.
    * Trust: ``sslrootcert=system`` loads OpenSSL's default paths (``SSL_CERT_FILE`` /
      ``SSL_CERT_DIR`` apply); otherwise the file (default ``~/.postgresql/root.crt``) is
      loaded when it exists, *whatever the sslmode*: with a root file, require (and prefer,
      allow) verify the chain as verify-ca does (libpq's historical rule). verify-ca and
      verify-full without one are refused. Only with a root file: the CRL file and/or CRL
      directory (default ``~/.postgresql/root.crl`` when neither is given), checked for the
      whole chain; a CRL that cannot be loaded is silently ignored, as libpq does.
    * The client certificate (default ``~/.postgresql/postgresql.crt``) when that file exists;
      a missing one is silently skipped, even when named. Its key (default
      ``~/.postgresql/postgresql.key``) must not be group/world accessible (root-owned: at most
      0640); PEM, else DER; decrypted with ``sslpassword`` (never a terminal prompt).
    * ALPN ``postgresql`` always offered; no host-name check by OpenSSL
      (``check_hostname`` off: :func:`check_after_handshake` checks libpq's way).

    Raises :class:`BackendTlsConfigError` with libpq's text.
    """
    needs_home = not (
        settings.sslcert
        and settings.sslkey
        and settings.sslrootcert
        and (settings.sslcrl or settings.sslcrldir)
    )
    home = libpq_home_directory() if needs_home else None

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # SSL_CTX_new's defaults, as libpq keeps them: Python adds OP_ALL (bug workarounds) and
    # its own stricter TLS <= 1.2 cipher list.
    ctx.options &= ~ssl.OP_ALL
    ctx.set_ciphers("DEFAULT")
    _set_protocol_range(ctx, settings)
    have_root = _load_trust(ctx, settings, home)
    _load_client_certificate(ctx, settings, home)
    if have_root:
        ctx.verify_mode = ssl.CERT_REQUIRED  # SSL_VERIFY_PEER with verify_cb == default
    ctx.set_alpn_protocols([codes.ALPN_POSTGRESQL])
    return ctx


def _set_protocol_range(ctx: ssl.SSLContext, settings: BackendTlsSettings) -> None:
    for which, value in (
        ("minimum", settings.ssl_min_protocol_version),
        ("maximum", settings.ssl_max_protocol_version),
    ):
        if not value:
            bound = (
                ssl.TLSVersion.MINIMUM_SUPPORTED
                if which == "minimum"
                else ssl.TLSVersion.MAXIMUM_SUPPORTED
            )
        elif value.lower() in _TLS_VERSIONS:
            bound = _TLS_VERSIONS[value.lower()]
        else:
            raise BackendTlsConfigError(f'invalid value "{value}" for {which} SSL protocol version')
        try:
            # TLSv1/TLSv1.1 asked for explicitly: Python's deprecation warning is noise.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                if which == "minimum":
                    ctx.minimum_version = bound
                else:
                    ctx.maximum_version = bound
        except (ValueError, ssl.SSLError) as exc:
            raise BackendTlsConfigError(
                f"could not set {which} SSL protocol version: {_reason(exc)}"
            ) from exc


def _load_trust(ctx: ssl.SSLContext, settings: BackendTlsSettings, home: str | None) -> bool:
    """Root certificates and CRLs; True when the server's chain is to be verified."""
    root = settings.sslrootcert or _home_file(home, "root.crt")
    if root == "system":
        try:
            ctx.set_default_verify_paths()  # SSL_CTX_set_default_verify_paths
        except ssl.SSLError as exc:
            raise BackendTlsConfigError(
                f"could not load system root certificate paths: {_reason(exc)}"
            ) from exc
        return True
    if root and _exists(root):
        try:
            ctx.load_verify_locations(cafile=root)
        except (ssl.SSLError, OSError) as exc:
            raise BackendTlsConfigError(
                f'could not read root certificate file "{root}": {_reason(exc)}'
            ) from exc
        crl_file = settings.sslcrl or None
        crl_dir = settings.sslcrldir or None
        if not crl_file and not crl_dir and home:
            crl_file = _home_file(home, "root.crl")
        if crl_file or crl_dir:
            # X509_STORE_load_locations on the context's store: the file's CRLs (and any
            # certificates in it) now; a directory is an OpenSSL hash-dir lookup (CRLs found by
            # issuer-name hash as <hash>.r0, <hash>.r1, ...) consulted during verification,
            # so a directory lacking the issuer's CRL fails verification ("unable to get
            # certificate CRL") exactly as with libpq.
            try:
                ctx.load_verify_locations(cafile=crl_file, capath=crl_dir)
            except (ssl.SSLError, OSError):
                pass  # "if not found, silently ignore; we do not require CRL"
            else:
                # X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL
                ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
        return True
    if settings.sslmode.startswith("v"):  # verify-ca, verify-full
        if not root:
            raise BackendTlsConfigError(
                "could not get home directory to locate root certificate file\n" + _NO_ROOT_HINT
            )
        raise BackendTlsConfigError(
            f'root certificate file "{root}" does not exist\n{_NO_ROOT_HINT}'
        )
    return False


def _check_key_file(key: str) -> None:
    try:
        st = os.stat(key)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise BackendTlsConfigError(
                f'certificate present, but not private key file "{key}"'
            ) from exc
        raise BackendTlsConfigError(
            f'could not stat private key file "{key}": {exc.strerror}'
        ) from exc
    if not stat.S_ISREG(st.st_mode):
        raise BackendTlsConfigError(f'private key file "{key}" is not a regular file')
    if os.name == "nt" or sys.platform == "cygwin":
        return
    if st.st_uid == 0:
        too_open = st.st_mode & (stat.S_IWGRP | stat.S_IXGRP | stat.S_IRWXO)
    else:
        too_open = st.st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    if too_open:
        raise BackendTlsConfigError(
            f'private key file "{key}" has group or world access; file must have permissions '
            "u=rw (0600) or less if owned by the current user, or permissions u=rw,g=r (0640) "
            "or less if owned by root"
        )


def _load_client_certificate(
    ctx: ssl.SSLContext, settings: BackendTlsSettings, home: str | None
) -> None:
    cert = settings.sslcert or _home_file(home, "postgresql.crt")
    if not cert:
        return
    try:
        os.stat(cert)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return  # no client certificate; the server may or may not accept that
        raise BackendTlsConfigError(
            f'could not open certificate file "{cert}": {exc.strerror}'
        ) from exc
    key = settings.sslkey or _home_file(home, "postgresql.key")
    secret = (settings.sslpassword or "").encode()
    lib = libssl()
    if lib is None:
        _load_client_certificate_fallback(ctx, cert, key, secret)
        return
    ptr = lib.ctx_pointer(ctx)
    lib.err_clear()
    if lib.use_certificate_chain_file(ptr, os.fsencode(cert)) != 1:
        raise BackendTlsConfigError(
            f'could not read certificate file "{cert}": {lib.error_message()}'
        )
    if key:
        _check_key_file(key)

        # PQdefaultSSLKeyPassHook_OpenSSL: sslpassword, cut to the buffer; "" when none
        # (libpq would let OpenSSL prompt on the terminal: pggate never does).
        def give_password(buf: int | None, size: int, _rw: int, _data: int | None) -> int:
            part = secret[: max(size - 1, 0)]
            if buf:
                ctypes.memmove(buf, part, len(part))
            return len(part)

        callback = PASSWD_CB(give_password)
        lib.set_default_passwd_cb(ptr, callback)
        try:
            path = os.fsencode(key)
            if lib.use_private_key_file(ptr, path, SSL_FILETYPE_PEM) != 1:
                first = lib.error_message()
                if lib.use_private_key_file(ptr, path, _SSL_FILETYPE_ASN1) != 1:
                    lib.err_clear()
                    raise BackendTlsConfigError(f'could not load private key file "{key}": {first}')
        finally:
            lib.set_default_passwd_cb(ptr, PASSWD_CB())
    if lib.check_private_key(ptr) != 1:
        raise BackendTlsConfigError(
            f'certificate does not match private key file "{key}": {lib.error_message()}'
        )


def _load_client_certificate_fallback(
    ctx: ssl.SSLContext, cert: str, key: str, secret: bytes
) -> None:
    """Without the libssl binding: :mod:`ssl` loads chain and key in one call (PEM keys
    only); the texts are told apart as well as its exceptions allow."""
    try:
        x509.load_pem_x509_certificates(Path(cert).read_bytes())
    except (OSError, ValueError) as exc:
        raise BackendTlsConfigError(
            f'could not read certificate file "{cert}": {_reason(exc)}'
        ) from exc
    if not key:
        raise BackendTlsConfigError(
            'certificate does not match private key file "": no private key assigned'
        )
    _check_key_file(key)
    try:
        ctx.load_cert_chain(cert, key, password=lambda: secret)
    except (ssl.SSLError, OSError) as exc:
        # SSL_CTX_check_private_key's own failures; a same-type key that does not match
        # already fails SSL_CTX_use_PrivateKey_file ("key values mismatch"), as in libpq.
        if isinstance(exc, ssl.SSLError) and exc.reason in _CHECK_KEY_REASONS:
            raise BackendTlsConfigError(
                f'certificate does not match private key file "{key}": {_reason(exc)}'
            ) from exc
        raise BackendTlsConfigError(
            f'could not load private key file "{key}": {_reason(exc)}'
        ) from exc


@dataclass(frozen=True, slots=True)
class BackendTls:
    """The backend TLS of one snapshot: libpq's settings and the context built from them."""

    settings: BackendTlsSettings
    context: ssl.SSLContext

    @classmethod
    def build(cls, settings: BackendTlsSettings) -> BackendTls:
        """Once per configuration (BackendTlsConfigError names the file and libpq's reason)."""
        return cls(settings, build_client_context(settings))


def server_hostname_for_sni(host: str, settings: BackendTlsSettings) -> str | None:
    """The ``server_hostname`` to give ``wrap_bio``/``start_tls``: libpq sends SNI when
    ``sslsni=1`` and ``host`` is neither empty nor an IP literal (only digits and dots, or any
    colon; RFC 6066). Python IDNA-encodes it and refuses what it cannot encode (an empty
    label, a leading dot) with UnicodeError/ValueError, where libpq would send the bytes."""
    if not settings.sslsni or not host:
        return None
    if all(ch in "0123456789." for ch in host) or ":" in host:
        return None
    return host


@dataclass(frozen=True, slots=True)
class HandshakeFacts:
    """What :func:`check_after_handshake` needs from a finished handshake."""

    alpn: str | None
    peer_cert_der: bytes | None

    @classmethod
    def of(cls, tls: ssl.SSLObject | ssl.SSLSocket) -> HandshakeFacts:
        return cls(tls.selected_alpn_protocol(), tls.getpeercert(binary_form=True))


def check_after_handshake(
    tls: ssl.SSLObject | ssl.SSLSocket | HandshakeFacts,
    settings: BackendTlsSettings,
    host: str,
    direct: bool,
) -> str | None:
    """``open_client_SSL`` after ``SSL_connect`` succeeded: None, or libpq's text of why the
    connection must be dropped. ``direct``: this TLS session started without SSLRequest
    (sslnegotiation=direct), so ALPN ``postgresql`` is mandatory. ``host``: libpq's ``host``
    of this entry ("" if only ``hostaddr`` was given), checked under verify-full."""
    facts = tls if isinstance(tls, HandshakeFacts) else HandshakeFacts.of(tls)
    if direct:
        if facts.alpn is None:
            return (
                "direct SSL connection was established without ALPN protocol negotiation extension"
            )
        if facts.alpn != codes.ALPN_POSTGRESQL:
            return "SSL connection was established with unexpected ALPN protocol"
    if facts.peer_cert_der is None:
        return "certificate could not be obtained: no SSL error reported"
    if settings.sslmode != "verify-full":
        return None
    try:
        return verify_peer_name(facts.peer_cert_der, host)
    except ValueError:
        # OpenSSL took a certificate pggate cannot read (a v4 one, say): no name to check.
        return NO_NAME


def describe_handshake_error(exc: BaseException, settings: BackendTlsSettings) -> str:
    """libpq's text (``open_client_SSL``) for a handshake that raised ``exc``: ``SSL error:
    <OpenSSL reason>`` (a failed verification is ``SSL error: certificate verify failed``;
    the reason itself is ``exc.verify_message``), plus the protocol-range line after a version
    failure; ``SSL SYSCALL error: ...`` for socket errors. An EOF mid-handshake is OpenSSL 3's
    ``unexpected eof while reading`` (SSL_R_UNEXPECTED_EOF_WHILE_READING, what libpq 18 prints
    there), older OpenSSL's ``SSL SYSCALL error: EOF detected``; asyncio reports it as
    SSLEOFError or as a ConnectionResetError without an errno."""
    if isinstance(exc, ssl.SSLZeroReturnError):
        return f"unrecognized SSL error code: {ssl.SSL_ERROR_ZERO_RETURN}"
    eof = isinstance(exc, ssl.SSLEOFError) or (
        isinstance(exc, ConnectionResetError) and exc.errno is None
    )
    if eof:
        if ssl.OPENSSL_VERSION_INFO >= (3,):
            return "SSL error: unexpected eof while reading"
        return "SSL SYSCALL error: EOF detected"
    if isinstance(exc, ssl.SSLSyscallError):
        return "SSL SYSCALL error: EOF detected"
    if isinstance(exc, ssl.SSLError):
        text = f"SSL error: {_reason(exc)}"
        if exc.reason in PROTOCOL_REASONS:
            low = settings.ssl_min_protocol_version
            high = settings.ssl_max_protocol_version
            text += (
                "\nThis may indicate that the server does not support any SSL protocol version "
                f"between {_MIN_TLS if low is None else low} and "
                f"{_MAX_TLS if high is None else high}."
            )
        return text
    if isinstance(exc, OSError) and exc.strerror:
        return f"SSL SYSCALL error: {exc.strerror}"
    return "SSL SYSCALL error: EOF detected"


def peer_end_point_hash(cert_der: bytes) -> bytes:
    """RFC 5929 ``tls-server-end-point`` of the backend's certificate for SCRAM-SHA-256-PLUS
    (``pgtls_get_peer_certificate_hash``; computed by :mod:`pggate.tls.context`): the
    certificate hashed with its signature's hash (RSA-PSS: the PSS hash), MD5/SHA-1 upgraded to
    SHA-256. ValueError with libpq's text when the signature names no hash (Ed25519, Ed448)
    or is unknown; ValueError too when ``cert_der`` is not a certificate."""
    try:
        cert = x509.load_der_x509_certificate(cert_der)
    except x509.InvalidVersion as exc:  # not a ValueError, unlike every other refusal
        raise ValueError(str(exc)) from exc
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm as exc:
        raise ValueError("could not determine server certificate signature algorithm") from exc
    if algorithm is None:
        raise ValueError("could not find digest for NID UNDEF")  # OBJ_nid2sn(NID_undef)
    return server_end_point_hash(cert_der)


__all__ = [
    "BackendTls",
    "BackendTlsConfigError",
    "BackendTlsSettings",
    "HandshakeFacts",
    "build_client_context",
    "check_after_handshake",
    "describe_handshake_error",
    "libpq_home_directory",
    "peer_end_point_hash",
    "server_hostname_for_sni",
    "verify_peer_name",
]
