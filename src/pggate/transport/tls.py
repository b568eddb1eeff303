"""Sans-IO TLS channel: :class:`ssl.SSLObject` over two :class:`ssl.MemoryBIO`.

Owns one connection's TLS state: the handshake (fed with whatever bytes already arrived,
including a ClientHello pipelined behind SSLRequest or a direct-TLS one), record
encryption/decryption, close_notify, and the peer facts PostgreSQL extracts after the handshake
(``be-secure-openssl.c:be_tls_open_server``: ALPN, version, cipher, client certificate, its CN
and RFC 2253 DN).  Bytes in, bytes out: the server layer does the socket I/O.

Hot path (``feed``/``encrypt`` after login): one BIO write, one ``SSLObject`` call per record,
one BIO read; no per-message allocation beyond the bytes themselves.
"""

from __future__ import annotations

import ssl

from pggate.errors import PggateError

# One SSL_read returns at most one record (<= 16 KiB of plaintext); a larger buffer only costs
# allocation, a smaller one would split records across calls.
_READ_SIZE = 16384 + 1024

# OpenSSL reasons after which PostgreSQL adds the protocol-range HINT (be_tls_open_server).
_PROTOCOL_REASONS = frozenset(
    {
        "NO_PROTOCOLS_AVAILABLE",
        "UNSUPPORTED_PROTOCOL",
        "BAD_PROTOCOL_VERSION_NUMBER",
        "UNKNOWN_PROTOCOL",
        "UNKNOWN_SSL_VERSION",
        "UNSUPPORTED_SSL_VERSION",
        "WRONG_SSL_VERSION",
        "WRONG_VERSION_NUMBER",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "VERSION_TOO_HIGH",
        "VERSION_TOO_LOW",
    }
)


class TlsError(PggateError):
    """A TLS failure after the handshake (PostgreSQL logs ``SSL error: %s``)."""

    def __init__(self, message: str, *, output: bytes = b"") -> None:
        super().__init__(message)
        self.message = message
        #: records (an alert) OpenSSL queued for the peer; send them, then close.
        self.output = output

    @property
    def log_message(self) -> str:
        return f"SSL error: {self.message}"


class TlsHandshakeError(TlsError):
    """The handshake failed: ``message`` is OpenSSL's reason (``certificate verify failed``).

    The server logs :attr:`log_message`, writes :attr:`output` (the fatal alert), and closes
    without a PostgreSQL message.  ``protocol_hint`` asks for PostgreSQL's HINT ``This may
    indicate that the client does not support any SSL protocol version between %s and %s.``;
    ``verify_message`` is X509_verify_cert_error_string of a rejected client certificate.
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
        super().__init__(message, output=output)
        self.protocol_hint = protocol_hint
        self.verify_message = verify_message
        self._log_message = log_message

    @property
    def log_message(self) -> str:
        return self._log_message or f"could not accept SSL connection: {self.message}"

    @property
    def log_detail(self) -> str | None:
        """verify_cb's DETAIL for a rejected client certificate.  PostgreSQL's reads
        ``Client certificate verification failed at depth %d: %s.`` and adds the failed
        certificate's subject, serial and issuer; _ssl reports only the verify result, so the
        depth and the certificate data are left out rather than guessed."""
        if self.verify_message is None:
            return None
        return f"Client certificate verification failed: {self.verify_message}."


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
    """

    __slots__ = (
        "_cn",
        "_context",
        "_der",
        "_dn",
        "_done",
        "_in",
        "_obj",
        "_out",
        "peer_closed",
    )

    def __init__(
        self,
        context: ssl.SSLContext,
        initial: bytes = b"",
        *,
        server_side: bool = True,
        server_hostname: str | None = None,
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
                protocol_hint=exc.reason in _PROTOCOL_REASONS,
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
            subject = _subject_entries(der)
        except (IndexError, ValueError) as exc:
            raise TlsHandshakeError(
                "could not parse the client certificate subject", output=self.close()
            ) from exc
        cn = next((raw for _rdn, oid, _tag, raw, _whole in subject if oid == _OID_CN), None)
        if cn is not None:
            # CVE-2009-4034: PostgreSQL compares strlen with the ASN.1 length.
            if b"\0" in cn:
                raise TlsHandshakeError(
                    "SSL certificate's common name contains embedded null",
                    output=self.close(),
                    log_message="SSL certificate's common name contains embedded null",
                )
            self._cn = cn.decode("utf-8", "surrogateescape")
        self._dn = _rfc2253(subject)
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
        try:
            self._obj.write(data)
        except ssl.SSLError as exc:
            raise TlsError(_reason(exc), output=self._out.read()) from exc
        return self._out.read()

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


# ---------------------------------------------------------------------------------------------
# Subject name, read straight from the DER the way OpenSSL prints it
# ---------------------------------------------------------------------------------------------

_OID_CN = "2.5.4.3"

# OpenSSL short names (objects.txt) for the attribute types seen in subject names.
_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.4": "SN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "street",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "title",
    "2.5.4.13": "description",
    "2.5.4.15": "businessCategory",
    "2.5.4.16": "postalAddress",
    "2.5.4.17": "postalCode",
    "2.5.4.18": "postOfficeBox",
    "2.5.4.41": "name",
    "2.5.4.42": "GN",
    "2.5.4.43": "initials",
    "2.5.4.44": "generationQualifier",
    "2.5.4.45": "x500UniqueIdentifier",
    "2.5.4.46": "dnQualifier",
    "2.5.4.65": "pseudonym",
    "2.5.4.72": "role",
    "2.5.4.97": "organizationIdentifier",
    "1.2.840.113549.1.9.1": "emailAddress",
    "1.2.840.113549.1.9.2": "unstructuredName",
    "0.9.2342.19200300.100.1.1": "UID",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL",
    "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
}

# ASN.1 string tags and how their contents become characters (crypto/asn1/a_strex.c tag2nbyte):
# UTF8String is taken byte by byte; one-byte types are Latin-1; BMP is UCS-2, Universal UCS-4.
_STRING_CODECS = {
    0x0C: None,  # UTF8String: raw bytes
    0x12: "latin-1",  # NumericString
    0x13: "latin-1",  # PrintableString
    0x14: "latin-1",  # T61String
    0x16: "latin-1",  # IA5String
    0x17: "latin-1",  # UTCTime
    0x18: "latin-1",  # GeneralizedTime
    0x1A: "latin-1",  # VisibleString
    0x1C: "utf-32-be",  # UniversalString
    0x1E: "utf-16-be",  # BMPString
}

_ESC_2253 = frozenset(b',+"\\<>;')


def _tlv(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, contents start, contents end) of the DER element at ``pos``."""
    tag = buf[pos]
    length = buf[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(buf[pos : pos + n], "big")
        pos += n
    end = pos + length
    if end > len(buf):
        raise ValueError("truncated DER")
    return tag, pos, end


def _oid(body: bytes) -> str:
    arcs: list[int] = []
    value = 0
    for byte in body:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]]))


# (RDN index, attribute OID, value tag, value contents, whole value DER), in DER order.
_Entry = tuple[int, str, int, bytes, bytes]


def _subject_entries(cert_der: bytes) -> list[_Entry]:
    """The subject's attributes, read from the certificate DER (already parsed and verified
    by OpenSSL, so well-formed; malformed input raises IndexError/ValueError)."""
    _, pos, _ = _tlv(cert_der, 0)  # Certificate
    _, pos, tbs_end = _tlv(cert_der, pos)  # TBSCertificate
    tag, _, end = _tlv(cert_der, pos)
    if tag == 0xA0:  # [0] version
        pos = end
    for _skip in range(4):  # serialNumber, signature, issuer, validity
        pos = _tlv(cert_der, pos)[2]
    tag, pos, name_end = _tlv(cert_der, pos)  # subject Name
    if tag != 0x30 or name_end > tbs_end:
        raise ValueError("no subject")
    entries: list[_Entry] = []
    rdn = 0
    while pos < name_end:
        _, set_pos, set_end = _tlv(cert_der, pos)  # RelativeDistinguishedName (SET)
        while set_pos < set_end:
            _, atv_pos, atv_end = _tlv(cert_der, set_pos)  # AttributeTypeAndValue
            _, oid_pos, oid_end = _tlv(cert_der, atv_pos)
            vtag, vpos, vend = _tlv(cert_der, oid_end)
            oid = _oid(cert_der[oid_pos:oid_end])
            entries.append((rdn, oid, vtag, cert_der[vpos:vend], cert_der[oid_end:vend]))
            set_pos = atv_end
        rdn += 1
        pos = set_end
    return entries


def _escape_value(raw: bytes) -> str:
    # a_strex.c do_buf/do_esc_char with ASN1_STRFLGS_RFC2253 (ESC_2253 | ESC_CTRL | ESC_MSB |
    # UTF8_CONVERT): every byte of the UTF-8 form >= 0x80 or a control byte becomes \XX;
    # ,+"\<>; get a backslash; '#' or ' ' first and ' ' last get a backslash.
    out: list[str] = []
    last = len(raw) - 1
    for i, b in enumerate(raw):
        if b in _ESC_2253 or (i == 0 and b in b"# ") or (i == last and b == 0x20):
            out.append("\\" + chr(b))
        elif b < 0x20 or b >= 0x7F:
            out.append(f"\\{b:02X}")
        else:
            out.append(chr(b))
    return "".join(out)


def _rfc2253(entries: list[_Entry]) -> str:
    """X509_NAME_print_ex(..., XN_FLAG_RFC2253): entries last to first, ',' between RDNs and
    '+' inside one, short names, unknown types and unknown attributes dumped as #hex DER."""
    parts: list[str] = []
    prev_rdn: int | None = None
    for rdn, oid, tag, raw, whole in reversed(entries):
        if prev_rdn is not None:
            parts.append("+" if rdn == prev_rdn else ",")
        prev_rdn = rdn
        short = _SHORT_NAMES.get(oid)
        codec = _STRING_CODECS.get(tag, "dump")
        if short is None or codec == "dump":
            value = "#" + whole.hex().upper()
        elif codec is None:
            value = _escape_value(raw)
        else:
            text = raw.decode(codec, "surrogatepass")
            value = _escape_value(text.encode("utf-8", "surrogatepass"))
        parts.append(f"{short or oid}={value}")
    return "".join(parts)


__all__ = ["TlsChannel", "TlsError", "TlsHandshakeError"]
