"""Sans-IO TLS channel: :class:`ssl.SSLObject` over two :class:`ssl.MemoryBIO`.

Owns one connection's TLS state: the handshake (fed with whatever bytes already arrived,
including a ClientHello pipelined behind SSLRequest or a direct-TLS one), record
encryption/decryption, close_notify, and the peer facts PostgreSQL extracts after the handshake
(``be-secure-openssl.c:be_tls_open_server``: ALPN, version, cipher, client certificate, its CN
and RFC 2253 DN), reported as a :class:`~pggate.transport.channel.ChannelInfo`.  Bytes in,
bytes out: the server layer does the socket I/O.

Hot path (``feed``/``encrypt`` after login): one BIO write, one ``SSLObject`` call per record,
one BIO read; no per-message allocation beyond the bytes themselves.
"""

from __future__ import annotations

import ssl
from typing import Final

from cryptography import x509

from pggate.tls import x509names
from pggate.tls.reasons import PROTOCOL_REASONS
from pggate.transport.channel import ChannelError, ChannelInfo, ChannelKind

# What goes through a memory BIO at a time (see feed): a bound on what each BIO keeps, large
# enough that a chunk of up to 64 KiB (plus its records' overhead, when fed) is one call.
_SLICE = 65536
_FEED_SLICE = _SLICE + 4096
# One SSL_read returns at most one record (<= 16 KiB of plaintext); a larger buffer only costs
# allocation, a smaller one would split records across calls.
_READ_SIZE = 16384 + 1024


class TlsError(ChannelError):
    """A TLS failure after the handshake: ``message`` is OpenSSL's reason, ``output`` the
    records (an alert) OpenSSL queued for the peer. The server logs the reason alone, where
    PostgreSQL's be_tls_read writes ``SSL error: %s``."""


class TlsHandshakeError(TlsError):
    """The handshake failed: ``message`` is OpenSSL's reason (``certificate verify failed``).

    The server logs :attr:`log_message` (also ``str(err)``) with :attr:`log_detail` (also
    ``detail``), writes :attr:`output` (the fatal alert), and closes without a PostgreSQL
    message.  ``protocol_hint`` asks for PostgreSQL's HINT ``This may indicate that the client
    does not support any SSL protocol version between %s and %s.``; ``verify_message`` is
    X509_verify_cert_error_string of a rejected client certificate.
    """

    def __init__(
        self,
        message: str,
        *,
        output: bytes = b"",
        protocol_hint: bool = False,
        verify_message: str | None = None,
        log_message: str | None = None,
    ) -> None:
        # verify_cb's DETAIL for a rejected client certificate.  PostgreSQL's reads
        # "Client certificate verification failed at depth %d: %s." and adds the failed
        # certificate's subject, serial and issuer; _ssl reports only the verify result, so the
        # depth and the certificate data are left out rather than guessed.
        detail = (
            None
            if verify_message is None
            else f"Client certificate verification failed: {verify_message}."
        )
        super().__init__(message, output=output, detail=detail, protocol_hint=protocol_hint)
        self.verify_message = verify_message
        self._log_message = log_message

    def __str__(self) -> str:
        return self.log_message

    @property
    def log_message(self) -> str:
        return self._log_message or f"could not accept SSL connection: {self.message}"

    @property
    def log_detail(self) -> str | None:
        return self.detail


_HANDSHAKING: Final = ChannelInfo(kind=ChannelKind.SSL)


def _reason(exc: ssl.SSLError) -> str:
    # SSLerrmessage prints ERR_reason_error_string; _ssl gives the reason's code name, which
    # is that string upper-cased with underscores.
    if exc.reason:
        return exc.reason.lower().replace("_", " ")
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
        return "EOF detected"
    return str(exc)


class TlsChannel:
    """One TLS connection, sans-IO.

    Server use: ``TlsChannel(ctx, initial)``; ``handshake()`` until done, writing its output
    each time and ``feed``-ing received bytes in between; then ``feed(b"")`` once to collect
    plaintext that came in with the handshake; then ``feed``/``encrypt`` per read/write.
    ``feed`` may queue records for the peer (TLS 1.3 KeyUpdate answers); every ``encrypt``
    carries them, and ``pending_output()`` collects them when nothing is being written.

    ``end_point_hash`` is the ``tls-server-end-point`` hash of the certificate ``context``
    presents (loaded with it, see :class:`pggate.policy.TlsState`); :attr:`info` reports it,
    so SCRAM-SHA-256-PLUS binds to the certificate this connection was offered.
    """

    __slots__ = (
        "_cn",
        "_context",
        "_der",
        "_dn",
        "_done",
        "_end_point_hash",
        "_in",
        "_obj",
        "_out",
        "peer_closed",
    )

    transparent: Final = False

    def __init__(
        self,
        context: ssl.SSLContext,
        initial: bytes = b"",
        *,
        server_side: bool = True,
        server_hostname: str | None = None,
        end_point_hash: bytes | None = None,
    ) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        self._context = context
        self._done = False
        self._der: bytes | None = None
        self._cn: str | None = None
        self._dn: str | None = None
        self._end_point_hash = end_point_hash
        #: the peer sent close_notify
        self.peer_closed = False
        if initial:
            self._in.write(initial)

    # -- handshake ---------------------------------------------------------------------------

    @property
    def handshake_done(self) -> bool:
        return self._done

    def handshake(self) -> tuple[bytes, bool]:
        """Advance the handshake with the bytes fed so far: (bytes to send, done)."""
        if self._done:
            return self._out.read(), True
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            return self._out.read(), False
        except ssl.SSLError as exc:
            raise TlsHandshakeError(
                _reason(exc),
                output=self._out.read(),
                protocol_hint=exc.reason in PROTOCOL_REASONS,
                verify_message=getattr(exc, "verify_message", None),
            ) from exc
        self._extract_peer()
        self._done = True
        return self._out.read(), True

    def _extract_peer(self) -> None:
        der = self._obj.getpeercert(binary_form=True)
        if der is None:
            return
        try:
            subject = x509names.certificate_subject(der)
        except (IndexError, ValueError) as exc:
            raise TlsHandshakeError(
                "could not parse the client certificate subject", output=self.close()
            ) from exc
        cn = x509names.common_name(subject)
        if cn is not None:
            # CVE-2009-4034: PostgreSQL compares strlen with the ASN.1 length.
            if b"\0" in cn:
                raise TlsHandshakeError(
                    "SSL certificate's common name contains embedded null",
                    output=self.close(),
                    log_message="SSL certificate's common name contains embedded null",
                )
            self._cn = cn.decode("utf-8", "surrogateescape")
        self._dn = x509names.rfc2253(subject)
        if "\0" in self._dn:
            raise TlsHandshakeError(
                "SSL certificate's distinguished name contains embedded null",
                output=self.close(),
                log_message="SSL certificate's distinguished name contains embedded null",
            )
        self._der = der

    # -- data --------------------------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """Raw bytes in, plaintext out.  Before the handshake is done: buffered, ``b""``."""
        if len(data) > _FEED_SLICE and self._done:
            # In slices: OpenSSL's memory BIO keeps the capacity it ever needed, so one
            # 256 KB read would pin 256 KB for the rest of the session.
            view = memoryview(data)
            return b"".join(
                self._feed(view[start : start + _FEED_SLICE])
                for start in range(0, len(data), _FEED_SLICE)
            )
        return self._feed(data)

    def _feed(self, data: bytes | memoryview) -> bytes:
        if data:
            self._in.write(data)
        if not self._done:
            return b""
        read = self._obj.read
        try:
            chunk = read(_READ_SIZE)
        except ssl.SSLWantReadError:
            return b""
        except ssl.SSLZeroReturnError:
            self.peer_closed = True
            return b""
        except ssl.SSLError as exc:
            raise TlsError(_reason(exc), output=self._out.read()) from exc
        if not self._in.pending:
            if not chunk:  # _ssl returns b"" for a clean close_notify
                self.peer_closed = True
            return chunk
        parts = [chunk]
        try:
            while chunk and self._in.pending:
                chunk = read(_READ_SIZE)
                parts.append(chunk)
            if not chunk:
                self.peer_closed = True
        except ssl.SSLWantReadError:
            pass  # a partial record stays in the BIO for the next feed
        except ssl.SSLZeroReturnError:
            self.peer_closed = True
        except ssl.SSLError as exc:
            raise TlsError(_reason(exc), output=self._out.read()) from exc
        return b"".join(parts)

    def encrypt(self, data: bytes) -> bytes:
        """Plaintext in, records out (plus anything already queued for the peer)."""
        write, read = self._obj.write, self._out.read
        try:
            if len(data) <= _SLICE:
                write(data)
                return read()
            # In slices, the outgoing BIO emptied after each (see feed).
            view, parts = memoryview(data), []
            for start in range(0, len(data), _SLICE):
                write(view[start : start + _SLICE])
                parts.append(read())
        except ssl.SSLError as exc:
            raise TlsError(_reason(exc), output=self._out.read()) from exc
        return b"".join(parts)

    def pending_output(self) -> bytes:
        return self._out.read()

    def close(self) -> bytes:
        """Our close_notify (be_tls_close: SSL_shutdown without waiting for the peer's)."""
        try:
            self._obj.unwrap()
        except ssl.SSLWantReadError:
            pass  # ours is queued; we do not wait for the peer's
        except ssl.SSLError:
            pass  # no usable session (failed handshake): nothing to say
        return self._out.read()

    # -- facts after the handshake -----------------------------------------------------------

    @property
    def info(self) -> ChannelInfo:
        """The handshake's facts (kind only, until the handshake is done). Made on each call
        (a login asks a few times) rather than kept for the connection's life: an idle
        connection's memory is what a front door is measured by."""
        if not self._done:
            return _HANDSHAKING
        obj = self._obj
        cipher = obj.cipher()
        issuer = serial = None
        if self._der is not None:
            # Only the subject is needed for authentication and read byte for byte above;
            # issuer and serial are reported as be_tls_get_peer_issuer_name/_serial do.
            try:
                cert = x509.load_der_x509_certificate(self._der)
                issuer, serial = x509names.rfc2253(cert.issuer), str(cert.serial_number)
            except (ValueError, x509.InvalidVersion):
                pass  # OpenSSL accepted what cryptography cannot parse: leave them unknown
        return ChannelInfo(
            kind=ChannelKind.SSL,
            tls_version=obj.version(),
            cipher=cipher[0] if cipher else None,
            bits=cipher[2] if cipher else None,
            alpn=obj.selected_alpn_protocol(),
            peer_cert_verified=self.peer_cert_verified,
            peer_common_name=self._cn,
            peer_subject_dn=self._dn,
            peer_issuer_dn=issuer,
            peer_serial=serial,
            end_point_hash=self._end_point_hash,
        )

    @property
    def alpn(self) -> str | None:
        return self._obj.selected_alpn_protocol()

    @property
    def version(self) -> str | None:
        return self._obj.version()

    @property
    def cipher(self) -> tuple[str, int] | None:
        c = self._obj.cipher()
        return (c[0], c[2]) if c else None

    @property
    def peer_cert_der(self) -> bytes | None:
        return self._der

    @property
    def peer_cert_verified(self) -> bool:
        """A certificate was presented and verified (PostgreSQL's ``peer_cert_valid``): with
        verification on, a presented certificate that fails aborts the handshake."""
        return self._der is not None and self._context.verify_mode != ssl.CERT_NONE

    @property
    def peer_common_name(self) -> str | None:
        return self._cn

    @property
    def peer_dn_rfc2253(self) -> str | None:
        return self._dn


__all__ = ["TlsChannel", "TlsError", "TlsHandshakeError"]
