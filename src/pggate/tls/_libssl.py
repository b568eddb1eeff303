"""The ctypes binding to the libssl behind CPython's ``_ssl`` (private to :mod:`pggate.tls`).

Python's :mod:`ssl` cannot express some of what PostgreSQL does (TLS 1.3 ciphersuites, a groups
*list*, a client CA list in CertificateRequest, session cache off, a fatal ALPN mismatch, exact
OpenSSL reasons while loading the key). :class:`LibSSL` reaches the ``SSL_CTX *`` inside an
SSLContext through the very libssl that ``_ssl`` is linked against; :func:`verify_binding`
proves the pointer by round-tripping settings readable through the public API, and
:func:`libssl` answers None when that proof fails, so that the builder falls back to
:mod:`ssl` and says what it could not do. A library made for the job does not exist: pyOpenSSL
builds its own contexts, which CPython's asyncio and ssl.MemoryBIO cannot use.
"""

from __future__ import annotations

import ctypes
import os
import ssl
from functools import cache
from typing import Any

from pggate.proto import codes

SSL_FILETYPE_PEM = 1
SSL_CTRL_SET_SESS_CACHE_MODE = 44
SSL_CTRL_SET_GROUPS_LIST = 92
SSL_CTRL_SET_DH_AUTO = 118
SSL_SESS_CACHE_OFF = 0
SSL_TLSEXT_ERR_OK = 0
SSL_TLSEXT_ERR_ALERT_FATAL = 2
ERR_SYSTEM_FLAG = 0x80000000  # OpenSSL 3 ERR_SYSTEM_FLAG: reason is an errno

PASSWD_CB = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p
)
_ALPN_CB = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_void_p,  # SSL *
    ctypes.POINTER(ctypes.c_void_p),  # const unsigned char **out
    ctypes.POINTER(ctypes.c_ubyte),  # unsigned char *outlen
    ctypes.c_void_p,  # const unsigned char *in
    ctypes.c_uint,  # inlen
    ctypes.c_void_p,  # arg
)

# PG_ALPN_PROTOCOL_VECTOR (pqcomm.h); the callback points OpenSSL into this static buffer.
_ALPN_NAME = codes.ALPN_POSTGRESQL.encode()
_ALPN_BUFFER = ctypes.create_string_buffer(_ALPN_NAME)


def _alpn_offers_postgresql(vector: bytes) -> bool:
    pos = 0
    while pos < len(vector):
        end = pos + 1 + vector[pos]
        if vector[pos + 1 : end] == _ALPN_NAME and end <= len(vector):
            return True
        pos = end
    return False


def _alpn_select(
    _ssl: int | None, out: Any, outlen: Any, inp: int | None, inlen: int, _arg: int | None
) -> int:
    # be-secure-openssl.c:alpn_cb: only "postgresql"; a client offering ALPN without it gets
    # a fatal no_application_protocol alert (RFC 7301), not a silent no-ALPN handshake as
    # Python's own callback would give (ALPACA-style cross-protocol defence).
    if inp is None or not _alpn_offers_postgresql(ctypes.string_at(inp, inlen)):
        return SSL_TLSEXT_ERR_ALERT_FATAL
    out[0] = ctypes.addressof(_ALPN_BUFFER)
    outlen[0] = len(_ALPN_NAME)
    return SSL_TLSEXT_ERR_OK


# Module-lifetime C thunk: OpenSSL keeps the pointer in every context built here.
ALPN_SELECT: Any = _ALPN_CB(_alpn_select)


class LibSSL:
    """The libssl functions pggate needs that :mod:`ssl` does not expose."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        vp, cp, ci, cl, cul = (
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_long,
            ctypes.c_ulong,
        )

        def fn(name: str, restype: Any, *argtypes: Any) -> Any:
            f = getattr(lib, name)
            f.restype = restype
            f.argtypes = list(argtypes)
            return f

        self.use_certificate_chain_file = fn("SSL_CTX_use_certificate_chain_file", ci, vp, cp)
        self.use_private_key_file = fn("SSL_CTX_use_PrivateKey_file", ci, vp, cp, ci)
        self.check_private_key = fn("SSL_CTX_check_private_key", ci, vp)
        self.set_default_passwd_cb = fn("SSL_CTX_set_default_passwd_cb", None, vp, PASSWD_CB)
        self.set_ciphersuites = fn("SSL_CTX_set_ciphersuites", ci, vp, cp)
        self.ctrl = fn("SSL_CTX_ctrl", cl, vp, ci, cl, vp)
        self.load_client_ca_file = fn("SSL_load_client_CA_file", vp, cp)
        self.set_client_ca_list = fn("SSL_CTX_set_client_CA_list", None, vp, vp)
        self.set_alpn_select_cb = fn("SSL_CTX_set_alpn_select_cb", None, vp, _ALPN_CB, vp)
        self.get0_certificate = fn("SSL_CTX_get0_certificate", vp, vp)
        self.i2d_x509 = fn("i2d_X509", ci, vp, ctypes.POINTER(ctypes.c_void_p))
        self.get_options = fn("SSL_CTX_get_options", ctypes.c_uint64, vp)
        self.err_get_error = fn("ERR_get_error", cul)
        self.err_reason = fn("ERR_reason_error_string", cp, cul)
        self.err_clear = fn("ERR_clear_error", None)

    @staticmethod
    def ctx_pointer(ctx: ssl.SSLContext) -> int:
        # CPython's PySSLContext (Modules/_ssl.c): PyObject_HEAD, then ``SSL_CTX *ctx``.
        ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
        if not ptr:
            raise RuntimeError("SSLContext has no SSL_CTX")
        return ptr

    def error_message(self, replacement: str | None = None) -> str:
        """be-secure-openssl.c:SSLerrmessage(ERR_get_error()), then clear the queue so
        :mod:`ssl` never sees our stale errors."""
        code = self.err_get_error()
        self.err_clear()
        if code == 0:
            return replacement or "no SSL error reported"
        reason = self.err_reason(code)
        if reason is not None:
            return str(reason.decode(errors="replace"))
        if code & ERR_SYSTEM_FLAG:
            return os.strerror(code & ~ERR_SYSTEM_FLAG)
        return f"SSL error code {code}"

    def certificate_der(self, ptr: int) -> bytes | None:
        x509_ptr = self.get0_certificate(ptr)
        if not x509_ptr:
            return None
        size = self.i2d_x509(x509_ptr, None)
        if size <= 0:
            return None
        buf = ctypes.create_string_buffer(size)
        cursor = ctypes.c_void_p(ctypes.addressof(buf))
        self.i2d_x509(x509_ptr, ctypes.byref(cursor))
        return buf.raw


def verify_binding(lib: LibSSL) -> bool:
    """Prove the struct layout and the library identity on this interpreter: settings made
    through ctypes must be visible through the public API and vice versa."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ptr = lib.ctx_pointer(probe)
    if lib.get_options(ptr) != int(probe.options):
        return False
    probe.options ^= ssl.OP_NO_TICKET
    if lib.get_options(ptr) != int(probe.options):
        return False
    if lib.set_ciphersuites(ptr, b"TLS_AES_256_GCM_SHA384") != 1:
        return False
    tls13 = [c["name"] for c in probe.get_ciphers() if c["protocol"] == "TLSv1.3"]
    return tls13 == ["TLS_AES_256_GCM_SHA384"]


@cache
def libssl() -> LibSSL | None:
    import _ssl  # the extension module; dlsym on its handle resolves through its own libssl

    try:
        lib = LibSSL(ctypes.CDLL(_ssl.__file__))
        return lib if verify_binding(lib) else None
    except (OSError, AttributeError, RuntimeError):
        return None


def openssl_binding_available() -> bool:
    """Whether the full PostgreSQL feature set (see module docstring) is available."""
    return libssl() is not None
