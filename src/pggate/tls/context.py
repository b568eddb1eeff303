"""TLS server configuration: PostgreSQL's ``be_tls_init`` as an :class:`ssl.SSLContext` builder.

This module owns turning the ``ssl_*`` settings into a server context with PostgreSQL's exact
semantics and error texts (``be-secure-openssl.c:be_tls_init``, ``be-secure-common.c``): the
certificate chain, the key with its permission rule and passphrase sources, the client CA list,
CRLs, protocol range, TLS <= 1.2 ciphers, TLS 1.3 ciphersuites, key-exchange groups, DH
parameters and the fixed hardening options.  It also owns the server certificate facts the rest
of pggate needs (the DER and RFC 5929 ``tls-server-end-point`` hash for SCRAM-SHA-256-PLUS).
It may touch the filesystem (key permission check, passphrase command); nothing else does TLS
configuration.

Python's :mod:`ssl` cannot express some of what PostgreSQL does; those settings go through the
ctypes binding of :mod:`pggate.tls._libssl`, applied to the ``SSL_CTX *`` inside the
SSLContext, with a fallback to :mod:`ssl` (and a log line saying what it could not do) when the
binding cannot prove itself.
"""

from __future__ import annotations

import base64
import ctypes
import os
import re
import signal
import ssl
import stat
import subprocess
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from pggate.errors import ConfigError
from pggate.proto import codes
from pggate.tls import _der
from pggate.tls._libssl import (
    ALPN_SELECT,
    PASSWD_CB,
    SSL_CTRL_SET_DH_AUTO,
    SSL_CTRL_SET_GROUPS_LIST,
    SSL_CTRL_SET_SESS_CACHE_MODE,
    SSL_FILETYPE_PEM,
    SSL_SESS_CACHE_OFF,
    LibSSL,
    libssl,
    openssl_binding_available,
)

# The prompt OpenSSL itself prints, which PostgreSQL substitutes for %p
# (be-secure-openssl.c:ssl_external_passwd_cb).
PEM_PROMPT = "Enter PEM pass phrase:"
# OpenSSL's PEM_BUFSIZE: the callback buffer, so at most 1023 passphrase bytes (fgets semantics).
_PASSPHRASE_BUFSIZE = 1024

_KEY_PERMISSION_DETAIL = (
    "File must have permissions u=rw (0600) or less if owned by the database user, "
    "or permissions u=rw,g=r (0640) or less if owned by root."
)

# ssl_min_protocol_version / ssl_max_protocol_version enum values (guc_tables.c
# ssl_protocol_versions_info); '' means "no bound" (PG leaves OpenSSL's own limit).
_TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}

_PATH_FIELDS = (
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
    "ssl_crl_file",
    "ssl_crl_dir",
    "ssl_dh_params_file",
)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The inputs of :func:`build_server_context`: PostgreSQL's GUC names and defaults
    (guc_tables.c), every path already absolute ('' = unset)."""

    ssl_cert_file: str
    ssl_key_file: str
    ssl_ca_file: str = ""
    ssl_crl_file: str = ""
    ssl_crl_dir: str = ""
    ssl_passphrase_command: str = ""
    ssl_passphrase_command_supports_reload: bool = False
    ssl_min_protocol_version: str = "TLSv1.2"
    ssl_max_protocol_version: str = ""
    ssl_ciphers: str = "HIGH:MEDIUM:+3DES:!aNULL"
    ssl_tls13_ciphers: str = ""
    ssl_groups: str = "X25519:prime256v1"
    ssl_dh_params_file: str = ""
    ssl_prefer_server_ciphers: bool = True

    @classmethod
    def from_config(cls, cfg: Any) -> TlsSettings:
        """Read the same-named attributes of a ``Config`` (duck-typed); paths via ``cfg.path``."""
        values: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            value = getattr(cfg, name)
            if name in _PATH_FIELDS:
                value = str(cfg.path(value)) if value else ""
            values[name] = value
        return cls(**values)


class TlsConfigError(ConfigError):
    """A TLS setting that cannot be applied (DETAIL/HINT as in any ConfigError)."""


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """The server certificate as loaded: DER, and the tls-server-end-point channel-binding
    hash (None when the signature algorithm names no hash, e.g. Ed25519: no -PLUS then)."""

    der: bytes
    end_point_hash: bytes | None


# Server certificate DER per context, recorded when the context is built.
_SERVER_CERTS: weakref.WeakKeyDictionary[ssl.SSLContext, bytes] = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------------------------
# Key file permissions and passphrases (be-secure-common.c)
# --------------------------------------------------------------------------------------------


def check_key_file_permissions(path: str, *, euid: int | None = None) -> None:
    """be-secure-common.c:check_ssl_key_file_permissions; ``euid`` defaults to ours.

    Mirrors PostgreSQL literally, including that a key owned by *us* must be <= 0600 even
    when we are root (both clauses then apply).
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise TlsConfigError(
            f'could not access private key file "{path}": {exc.strerror}',
            parameter="ssl_key_file",
        ) from exc
    if not stat.S_ISREG(st.st_mode):
        raise TlsConfigError(
            f'private key file "{path}" is not a regular file', parameter="ssl_key_file"
        )
    if os.name == "nt":  # not enforced on Windows (PostgreSQL: #if !defined(WIN32))
        return
    me = os.geteuid() if euid is None else euid
    if st.st_uid not in (me, 0):
        raise TlsConfigError(
            f'private key file "{path}" must be owned by the database user or root',
            parameter="ssl_key_file",
        )
    ours_too_open = st.st_uid == me and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    roots_too_open = st.st_uid == 0 and st.st_mode & (stat.S_IWGRP | stat.S_IXGRP | stat.S_IRWXO)
    if ours_too_open or roots_too_open:
        raise TlsConfigError(
            f'private key file "{path}" has group or world access',
            parameter="ssl_key_file",
            detail=_KEY_PERMISSION_DETAIL,
        )


def expand_passphrase_command(command: str, prompt: str = PEM_PROMPT) -> str:
    """common/percentrepl.c:replace_percent_placeholders with the single placeholder ``p``."""
    out: list[str] = []
    i = 0
    while i < len(command):
        ch = command[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        if i + 1 == len(command):
            raise TlsConfigError(
                f'invalid value for parameter "ssl_passphrase_command": "{command}"',
                parameter="ssl_passphrase_command",
                detail='String ends unexpectedly after escape character "%".',
            )
        nxt = command[i + 1]
        if nxt == "%":
            out.append("%")
        elif nxt == "p":
            out.append(prompt)
        else:
            raise TlsConfigError(
                f'invalid value for parameter "ssl_passphrase_command": "{command}"',
                parameter="ssl_passphrase_command",
                detail=f'String contains unexpected placeholder "%{nxt}".',
            )
        i += 2
    return "".join(out)


def _wait_result_text(returncode: int) -> str:
    # common/wait_error.c:wait_result_to_str (as subprocess reports it)
    if returncode < 0:
        signo = -returncode
        name = signal.strsignal(signo) or "unrecognized signal"
        return f"child process was terminated by signal {signo}: {name}"
    if returncode == 127:
        return "command not found"
    if returncode == 126:
        return "command not executable"
    return f"child process exited with exit code {returncode}"


def run_passphrase_command(command: str, prompt: str = PEM_PROMPT) -> bytes:
    """be-secure-common.c:run_ssl_passphrase_command: run through the shell (popen), take the
    first line of stdout (fgets into OpenSSL's buffer), strip trailing CR/LF."""
    expanded = expand_passphrase_command(command, prompt)
    try:
        done = subprocess.run(expanded, shell=True, stdout=subprocess.PIPE, check=False)
    except OSError as exc:
        raise TlsConfigError(
            f'could not execute command "{expanded}": {exc.strerror}',
            parameter="ssl_passphrase_command",
        ) from exc
    if done.returncode != 0:
        raise TlsConfigError(
            f'command "{expanded}" failed',
            parameter="ssl_passphrase_command",
            detail=_wait_result_text(done.returncode),
        )
    line = done.stdout[: _PASSPHRASE_BUFSIZE - 1]
    newline = line.find(b"\n")
    if newline >= 0:
        line = line[: newline + 1]
    return line.rstrip(b"\r\n")


class _Passphrase:
    """Where the key passphrase comes from (be-secure-openssl.c:default_openssl_tls_init).

    At start: the command if set, else the terminal (``prompt``).  On reload: the command only
    with ssl_passphrase_command_supports_reload, else the dummy callback (empty passphrase,
    remembered so the failure gets its own text).
    """

    def __init__(
        self, settings: TlsSettings, reloading: bool, prompt: Callable[[str], str] | None
    ) -> None:
        command = settings.ssl_passphrase_command
        if reloading and not (command and settings.ssl_passphrase_command_supports_reload):
            command = ""
            self.kind = "dummy"
        else:
            self.kind = "command" if command else ("prompt" if prompt else "none")
        self._command = command
        self._prompt = prompt
        self.called = False
        self.error: BaseException | None = None

    def __call__(self) -> bytes:
        self.called = True
        if self.kind == "command":
            return run_passphrase_command(self._command)
        if self.kind == "prompt" and self._prompt is not None:
            return self._prompt(PEM_PROMPT).encode()[: _PASSPHRASE_BUFSIZE - 1]
        return b""

    def c_callback(self) -> Any:
        def callback(buf: int | None, size: int, _rwflag: int, _userdata: int | None) -> int:
            try:
                secret = self()[: max(size - 1, 0)]
            except BaseException as exc:  # re-raised after OpenSSL returns
                self.error = exc
                return -1
            if buf:
                ctypes.memmove(buf, secret, len(secret))
            return len(secret)

        return PASSWD_CB(callback)

    def failure(self, key_file: str, reason: str) -> TlsConfigError:
        if self.error is not None:
            if not isinstance(self.error, Exception):  # KeyboardInterrupt at the prompt
                raise self.error
            if isinstance(self.error, TlsConfigError):
                return self.error
            return TlsConfigError(
                f'could not load private key file "{key_file}": {self.error}',
                parameter="ssl_key_file",
            )
        if self.called and self.kind == "dummy":
            return TlsConfigError(
                f'private key file "{key_file}" cannot be reloaded because it requires a '
                "passphrase",
                parameter="ssl_key_file",
            )
        if self.called and self.kind == "none":
            return TlsConfigError(
                f'private key file "{key_file}" requires a passphrase and no terminal is '
                "available (set ssl_passphrase_command)",
                parameter="ssl_key_file",
            )
        return TlsConfigError(
            f'could not load private key file "{key_file}": {reason}', parameter="ssl_key_file"
        )


# --------------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """OpenSSL's reason string from a :mod:`ssl` exception: the reason code names are the
    reason strings upper-cased with underscores (``BAD_DECRYPT`` = "bad decrypt")."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    if isinstance(exc, ssl.SSLError) and exc.strerror:
        # A reason Python has no name for: "[X509] PEM lib (_ssl.c:4154)" is OpenSSL's
        # "PEM lib" between Python's library tag and its own source location.
        return _PYTHON_SSL_DECORATION.sub("", exc.strerror)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


_PYTHON_SSL_DECORATION = re.compile(r"^\[[A-Z0-9_]+\] | \(_ssl\.c:\d+\)$")


def build_server_context(
    settings: TlsSettings,
    *,
    reloading: bool,
    prompt: Callable[[str], str] | None,
    log: Callable[[str], None] | None = None,
) -> ssl.SSLContext:
    """A server context configured as be-secure-openssl.c:be_tls_init does, step for step.

    ``reloading`` selects the passphrase rules for SIGHUP; ``prompt`` asks the terminal for
    the key passphrase at start (None: no terminal).  ``log`` receives LOG-level notes that
    do not fail the build (what PostgreSQL logs and carries on from, and any feature this
    interpreter's OpenSSL binding cannot apply).  Raises :class:`TlsConfigError`.
    """
    note = log or (lambda _msg: None)
    lib = libssl()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # Start from OpenSSL's SSL_CTX_new defaults, as PostgreSQL does: Python adds OP_ALL (bug
    # workarounds incl. DONT_INSERT_EMPTY_FRAGMENTS) and server cipher preference.
    ctx.options &= ~(ssl.OP_ALL | ssl.OP_CIPHER_SERVER_PREFERENCE)
    ptr = lib.ctx_pointer(ctx) if lib is not None else 0

    der = _load_cert_and_key(ctx, lib, ptr, settings, _Passphrase(settings, reloading, prompt))

    _set_protocol_range(ctx, settings)

    # Tickets off (stateless and TLS 1.3 stateful), session cache off, compression off,
    # renegotiation off (be_tls_init).  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER is set by _ssl on
    # every SSL object.  OpenSSL 3.0 has no SSL_OP_NO_CLIENT_RENEGOTIATION (LibreSSL only).
    ctx.options |= ssl.OP_NO_TICKET | ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.num_tickets = 0
    if lib is not None:
        lib.ctrl(ptr, SSL_CTRL_SET_SESS_CACHE_MODE, SSL_SESS_CACHE_OFF, None)

    _set_dh(ctx, lib, ptr, settings, reloading, note)
    _set_groups(ctx, lib, ptr, settings, note)

    # TLS <= 1.2 cipher list
    try:
        ctx.set_ciphers(settings.ssl_ciphers)
    except ssl.SSLError as exc:
        raise TlsConfigError(
            "could not set the TLSv1.2 cipher list (no valid ciphers available)",
            parameter="ssl_ciphers",
        ) from exc
    # TLS 1.3 ciphersuites; '' leaves OpenSSL's default.
    if settings.ssl_tls13_ciphers:
        if lib is None:
            raise TlsConfigError(
                f'"ssl_tls13_ciphers" setting "{settings.ssl_tls13_ciphers}" not supported by '
                "this build",
                parameter="ssl_tls13_ciphers",
            )
        if lib.set_ciphersuites(ptr, settings.ssl_tls13_ciphers.encode()) != 1:
            lib.error_message()
            raise TlsConfigError(
                "could not set the TLSv1.3 cipher suites (no valid ciphers available)",
                parameter="ssl_tls13_ciphers",
            )
    if settings.ssl_prefer_server_ciphers:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE

    _set_client_verification(ctx, lib, ptr, settings)

    # ALPN "postgresql" for every TLS connection (be_tls_open_server installs alpn_cb).
    if lib is not None:
        lib.set_alpn_select_cb(ptr, ALPN_SELECT, None)
    else:
        ctx.set_alpn_protocols([codes.ALPN_POSTGRESQL])
        note(
            'OpenSSL binding unavailable: a client offering ALPN without "postgresql" '
            "completes the handshake without ALPN instead of getting a fatal alert"
        )

    _SERVER_CERTS[ctx] = der
    return ctx


def _load_cert_and_key(
    ctx: ssl.SSLContext,
    lib: LibSSL | None,
    ptr: int,
    settings: TlsSettings,
    passphrase: _Passphrase,
) -> bytes:
    """Certificate chain, key permission check, key, key/cert match; returns the leaf DER."""
    cert_file, key_file = settings.ssl_cert_file, settings.ssl_key_file
    if lib is None:
        # Python cannot load the chain without the key: one call, PostgreSQL's key check first.
        check_key_file_permissions(key_file)
        try:
            ctx.load_cert_chain(cert_file, key_file, password=passphrase)
        except (ssl.SSLError, OSError) as exc:
            if passphrase.called or passphrase.error is not None:
                raise passphrase.failure(key_file, _reason(exc)) from exc
            raise TlsConfigError(
                f'could not load server certificate file "{cert_file}" or private key file '
                f'"{key_file}": {_reason(exc)}',
                parameter="ssl_cert_file",
            ) from exc
        return _first_certificate_der(cert_file)

    lib.err_clear()
    if lib.use_certificate_chain_file(ptr, os.fsencode(cert_file)) != 1:
        raise TlsConfigError(
            f'could not load server certificate file "{cert_file}": {lib.error_message()}',
            parameter="ssl_cert_file",
        )
    check_key_file_permissions(key_file)
    callback = passphrase.c_callback()
    lib.set_default_passwd_cb(ptr, callback)
    try:
        loaded = lib.use_private_key_file(ptr, os.fsencode(key_file), SSL_FILETYPE_PEM)
    finally:
        lib.set_default_passwd_cb(ptr, PASSWD_CB())
    if loaded != 1:
        raise passphrase.failure(key_file, lib.error_message())
    if lib.check_private_key(ptr) != 1:
        raise TlsConfigError(
            f"check of private key failed: {lib.error_message()}", parameter="ssl_key_file"
        )
    der = lib.certificate_der(ptr)
    return der if der is not None else _first_certificate_der(cert_file)


def _set_protocol_range(ctx: ssl.SSLContext, settings: TlsSettings) -> None:
    bounds: list[ssl.TLSVersion | None] = []
    for name in ("ssl_min_protocol_version", "ssl_max_protocol_version"):
        value = getattr(settings, name)
        if value and value not in _TLS_VERSIONS:
            raise TlsConfigError(
                f'"{name}" setting "{value}" not supported by this build', parameter=name
            )
        bounds.append(_TLS_VERSIONS.get(value))
    low, high = bounds
    if low is not None and high is not None and low > high:
        raise TlsConfigError(
            "could not set SSL protocol version range",
            parameter="ssl_min_protocol_version",
            detail='"ssl_min_protocol_version" cannot be higher than "ssl_max_protocol_version"',
        )
    # The operator asked for TLSv1/TLSv1.1 explicitly: Python's deprecation warning is noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = low if low is not None else ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = high if high is not None else ssl.TLSVersion.MAXIMUM_SUPPORTED


def _set_dh(
    ctx: ssl.SSLContext,
    lib: LibSSL | None,
    ptr: int,
    settings: TlsSettings,
    reloading: bool,
    note: Callable[[str], None],
) -> None:
    """be-secure-openssl.c:initialize_dh / load_dh_file.  A bad file is fatal at start; on
    reload PostgreSQL logs it and falls back to its built-in 2048-bit group."""
    ctx.options |= ssl.OP_SINGLE_DH_USE | ssl.OP_SINGLE_ECDH_USE
    path = settings.ssl_dh_params_file
    if path:
        try:
            _load_dh_file(ctx, path)
            return
        except TlsConfigError as exc:
            if not reloading:
                raise
            note(str(exc))
    # Built-in group: OpenSSL's automatic RFC 7919 FFDHE group sized to the key (ffdhe2048 for
    # RSA-2048), where PostgreSQL embeds its own fixed 2048-bit group (FILE_DH2048).
    if lib is not None:
        lib.ctrl(ptr, SSL_CTRL_SET_DH_AUTO, 1, None)


def _load_dh_file(ctx: ssl.SSLContext, path: str) -> None:
    """load_dh_file: open, PEM_read_DHparams (both via _ssl's load_dh_params), then
    DH_check's two verdicts recomputed from the numbers: p prime; a suitable generator or a
    safe prime."""
    try:
        ctx.load_dh_params(path)
    except ssl.SSLError as exc:  # (an OSError subclass: first)
        raise TlsConfigError(
            f"could not load DH parameters file: {_reason(exc)}", parameter="ssl_dh_params_file"
        ) from exc
    except OSError as exc:
        raise TlsConfigError(
            f'could not open DH parameters file "{path}": {exc.strerror}',
            parameter="ssl_dh_params_file",
        ) from exc
    p, g, q = _dh_numbers(Path(path).read_text(encoding="ascii", errors="replace"))
    if not _probable_prime(p):
        raise TlsConfigError(
            "invalid DH parameters: p is not prime", parameter="ssl_dh_params_file"
        )
    suitable = 1 < g < p - 1 and (q is None or pow(g, q, p) == 1)
    if not suitable and not _probable_prime((p - 1) // 2):
        raise TlsConfigError(
            "invalid DH parameters: neither suitable generator or safe prime",
            parameter="ssl_dh_params_file",
        )


def _dh_numbers(pem: str) -> tuple[int, int, int | None]:
    """(p, g, q) of the first DH parameters block OpenSSL accepted: PKCS #3 ``DHParameter``
    (p, g[, privateValueLength]) or X9.42 ``DomainParameters`` (p, g, q, ...)."""
    x942 = "-----BEGIN X9.42 DH PARAMETERS-----" in pem
    label = "X9.42 DH PARAMETERS" if x942 else "DH PARAMETERS"
    body = pem.split(f"-----BEGIN {label}-----", 1)[1].split("-----END", 1)[0]
    der = base64.b64decode("".join(body.split()))
    _, pos, end = _der.read(der, 0)  # SEQUENCE
    ints: list[int] = []
    while pos < end and len(ints) < 3:
        _, start, stop = _der.read(der, pos)
        ints.append(int.from_bytes(der[start:stop], "big"))
        pos = stop
    return ints[0], ints[1], (ints[2] if x942 else None)


def _probable_prime(n: int, rounds: int = 40) -> bool:
    """Miller-Rabin with fixed small-prime bases then pseudo-random ones (DH_check uses
    BN_check_prime the same way)."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    if n in small:
        return True
    if any(n % s == 0 for s in small):
        return False
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    seed = int.from_bytes(os.urandom(16), "big")
    for i in range(rounds):
        a = small[i] if i < len(small) else 2 + (seed * (i + 1)) % (n - 3)
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _set_groups(
    ctx: ssl.SSLContext,
    lib: LibSSL | None,
    ptr: int,
    settings: TlsSettings,
    note: Callable[[str], None],
) -> None:
    """be-secure-openssl.c:initialize_ecdh: SSL_CTX_set1_groups_list (a macro over
    SSL_CTX_ctrl(SSL_CTRL_SET_GROUPS_LIST))."""
    groups = settings.ssl_groups
    if lib is not None:
        lib.err_clear()
        if lib.ctrl(ptr, SSL_CTRL_SET_GROUPS_LIST, 0, ctypes.c_char_p(groups.encode())) != 1:
            raise TlsConfigError(
                "could not set group names specified in ssl_groups: "
                + lib.error_message("No valid groups found"),
                parameter="ssl_groups",
                hint="Ensure that each group name is spelled correctly and supported by the "
                "installed version of OpenSSL.",
            )
        return
    first = groups.split(":")[0]
    try:
        ctx.set_ecdh_curve(first)
    except (ValueError, ssl.SSLError) as exc:
        raise TlsConfigError(
            f"could not set group names specified in ssl_groups: {_reason(exc)}",
            parameter="ssl_groups",
        ) from exc
    if ":" in groups:
        note(f'OpenSSL binding unavailable: ssl_groups limited to its first group "{first}"')


def _set_client_verification(
    ctx: ssl.SSLContext, lib: LibSSL | None, ptr: int, settings: TlsSettings
) -> None:
    ca_file = settings.ssl_ca_file
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError(
                f'could not load root certificate file "{ca_file}": {_reason(exc)}',
                parameter="ssl_ca_file",
            ) from exc
        # The CA names go into CertificateRequest (SSL_CTX_set_client_CA_list takes ownership
        # of the list), so a client with a keystore can pick the right certificate.
        if lib is not None:
            names = lib.load_client_ca_file(os.fsencode(ca_file))
            if not names:
                raise TlsConfigError(
                    f'could not load root certificate file "{ca_file}": {lib.error_message()}',
                    parameter="ssl_ca_file",
                )
            lib.set_client_ca_list(ptr, names)
        # Always ask, never require: pg_hba.conf decides later.  PostgreSQL adds
        # SSL_VERIFY_CLIENT_ONCE, which only matters for renegotiation (disabled) and TLS 1.3
        # post-handshake auth (never requested); _ssl cannot represent that mode bit.
        ctx.verify_mode = ssl.CERT_OPTIONAL

    crl_file, crl_dir = settings.ssl_crl_file, settings.ssl_crl_dir
    if crl_file or crl_dir:
        try:
            # SSL_CTX_load_verify_locations == X509_STORE_load_locations on the ctx store.
            ctx.load_verify_locations(cafile=crl_file or None, capath=crl_dir or None)
        except (ssl.SSLError, OSError) as exc:
            if not crl_dir:
                what = f'file "{crl_file}"'
            elif not crl_file:
                what = f'directory "{crl_dir}"'
            else:
                what = f'file "{crl_file}" or directory "{crl_dir}"'
            raise TlsConfigError(
                f"could not load SSL certificate revocation list {what}: {_reason(exc)}",
                parameter="ssl_crl_file" if crl_file else "ssl_crl_dir",
            ) from exc
        # X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_CRL_CHECK_CHAIN


# --------------------------------------------------------------------------------------------
# Server certificate facts
# --------------------------------------------------------------------------------------------


def _first_certificate_der(cert_file: str) -> bytes:
    # SSL_CTX_use_certificate_chain_file: the first certificate in the file is the leaf.
    from cryptography.hazmat.primitives.serialization import Encoding

    certs = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())
    return certs[0].public_bytes(Encoding.DER)


def server_end_point_hash(cert_der: bytes) -> bytes:
    """RFC 5929 section 4.1 tls-server-end-point, as be_tls_get_certificate_hash computes it:
    the certificate hashed with its signature's hash (RSA-PSS: the PSS hash), MD5 and SHA-1
    upgraded to SHA-256.  ValueError when the algorithm names no hash (Ed25519, Ed448)."""
    cert = x509.load_der_x509_certificate(cert_der)
    algorithm = cert.signature_hash_algorithm
    if algorithm is None:
        raise ValueError(
            "could not find digest for the server certificate signature algorithm "
            f"{cert.signature_algorithm_oid.dotted_string}"
        )
    if isinstance(algorithm, (hashes.MD5, hashes.SHA1)):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert_der)
    return digest.finalize()


def certificate_info(source: ssl.SSLContext | str | os.PathLike[str]) -> CertificateInfo:
    """The server certificate of a context built here (exactly what OpenSSL loaded), or the
    leaf of a PEM chain file."""
    if isinstance(source, ssl.SSLContext):
        try:
            der = _SERVER_CERTS[source]
        except KeyError:
            raise ValueError("SSLContext was not built by build_server_context") from None
    else:
        der = _first_certificate_der(os.fspath(source))
    try:
        end_point: bytes | None = server_end_point_hash(der)
    except ValueError:
        end_point = None
    return CertificateInfo(der=der, end_point_hash=end_point)


__all__ = [
    "PEM_PROMPT",
    "CertificateInfo",
    "TlsConfigError",
    "TlsSettings",
    "build_server_context",
    "certificate_info",
    "check_key_file_permissions",
    "expand_passphrase_command",
    "openssl_binding_available",
    "run_passphrase_command",
    "server_end_point_hash",
]
