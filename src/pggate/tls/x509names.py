"""X.509 names printed and hashed the way OpenSSL (hence PostgreSQL) does, read from DER.

* :func:`rfc2253`: ``X509_NAME_print_ex(..., XN_FLAG_RFC2253)``, the DN that ``clientname=DN``
  matches in pg_ident.conf and that ``be-secure-openssl.c`` reports for a client certificate;
* :func:`oneline`: the ``/CN=...`` form of ``be-secure-openssl.c:X509_NAME_to_cstring`` (its
  log lines);
* :func:`name_hash`: ``X509_NAME_hash`` (``openssl x509 -hash``, the names in ``ssl_crl_dir``).

Names are read from their DER encoding (:mod:`pggate.tls._der`), never through decoded Python
strings, so that string types, invalid UTF-8 and Latin-1 T61Strings print byte for byte as
OpenSSL prints them. Hence hand-written: cryptography's ``Name.rfc4514_string`` is not OpenSSL's
output (UTF-8 kept, other short names, other escapes), and its ``Certificate.subject`` refuses
values that OpenSSL accepts.

A name is an :class:`x509.Name` or the :data:`Rdns` parsed from DER (:func:`parse_name`, or
:func:`certificate_subject` straight from a certificate, as the TLS layer does after a
handshake). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from pggate.tls import _der

OID_COMMON_NAME = NameOID.COMMON_NAME.dotted_string

# OpenSSL's short names (objects.txt, as OBJ_nid2sn gives them) for the attribute types seen in
# names: the tls package's one table of them (certs.build_name takes the same names). Not
# cryptography's: its names (x509.Name.rfc4514_string) are RFC 4514's few, "STREET" not
# "street", and dotted OIDs for the rest.
SHORT_NAMES: dict[str, str] = {
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
# Any other tag is dumped as #hex DER.
_STRING_CODECS: dict[int, str | None] = {
    _der.UTF8_STRING: None,  # UTF8String: raw bytes
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

# ASN1_MASK_CANON: the string types X509_NAME_hash canonicalises (x_name.c:asn1_string_canon);
# the others (NumericString included) are hashed as they are encoded.
_CANON_TAGS = frozenset({_der.UTF8_STRING, 0x13, 0x14, 0x16, 0x1A, 0x1C, 0x1E})

_ESC_2253 = frozenset(b',+"\\<>;')
_OPENSSL_SPACE = rb"[ \t\n\v\f\r]"


@dataclass(frozen=True, slots=True)
class Attribute:
    """One AttributeTypeAndValue: the OID dotted and as encoded, the value's tag, its contents
    and its whole DER element."""

    oid: str
    oid_der: bytes
    tag: int
    value: bytes
    der: bytes

    @property
    def short_name(self) -> str | None:
        return SHORT_NAMES.get(self.oid)

    def utf8(self) -> bytes | None:
        """The value as ASN1_STRING_to_UTF8 gives it (a UTF8String's bytes as they are); None
        when the tag is not a string type OpenSSL prints."""
        codec = _STRING_CODECS.get(self.tag, "dump")
        if codec == "dump":
            return None
        if codec is None:
            return self.value
        return self.value.decode(codec, "surrogatepass").encode("utf-8", "surrogatepass")


#: A name's RDNs in encoded order, each a tuple of its attributes in encoded order.
Rdns = tuple[tuple[Attribute, ...], ...]


def _rdns_at(der: bytes, pos: int, end: int) -> Rdns:
    """The RDNs of the Name whose contents are ``der[pos:end]``."""
    rdns = []
    while pos < end:
        _, set_pos, set_end = _der.read(der, pos)  # RelativeDistinguishedName (SET)
        attributes = []
        while set_pos < set_end:
            _, atv_pos, atv_end = _der.read(der, set_pos)  # AttributeTypeAndValue
            _, oid_pos, oid_end = _der.read(der, atv_pos)
            tag, value_pos, value_end = _der.read(der, oid_end)
            oid = der[oid_pos:oid_end]
            attributes.append(
                Attribute(
                    _der.dotted_oid(oid),
                    oid,
                    tag,
                    der[value_pos:value_end],
                    der[oid_end:value_end],
                )
            )
            set_pos = atv_end
        rdns.append(tuple(attributes))
        pos = set_end
    return tuple(rdns)


def parse_name(der: bytes) -> Rdns:
    """The RDNs of a DER-encoded Name (malformed input raises IndexError/ValueError)."""
    tag, pos, end = _der.read(der, 0)
    if tag != _der.SEQUENCE:
        raise ValueError("not a Name")
    return _rdns_at(der, pos, end)


def certificate_subject(cert_der: bytes) -> Rdns:
    """The subject's RDNs, read from the certificate DER (one that OpenSSL already parsed, so
    well-formed; malformed input raises IndexError/ValueError)."""
    _, pos, _ = _der.read(cert_der, 0)  # Certificate
    _, pos, tbs_end = _der.read(cert_der, pos)  # TBSCertificate
    tag, _, end = _der.read(cert_der, pos)
    if tag == _der.CONTEXT_0:  # [0] version
        pos = end
    for _skip in range(4):  # serialNumber, signature, issuer, validity
        pos = _der.read(cert_der, pos)[2]
    tag, pos, name_end = _der.read(cert_der, pos)  # subject Name
    if tag != _der.SEQUENCE or name_end > tbs_end:
        raise ValueError("no subject")
    return _rdns_at(cert_der, pos, name_end)


def _rdns(name: x509.Name | Rdns) -> Rdns:
    return parse_name(name.public_bytes()) if isinstance(name, x509.Name) else name


def common_name(name: x509.Name | Rdns) -> bytes | None:
    """The raw value of the first CN, as encoded (PostgreSQL checks it for embedded NULs)."""
    rdns = _rdns(name)
    return next((a.value for rdn in rdns for a in rdn if a.oid == OID_COMMON_NAME), None)


def _escape(data: bytes, *, escape_msb: bool) -> str:
    """OpenSSL's ASN1_STRFLGS_RFC2253 escaping (a_strex.c:do_buf/do_esc_char) of a value's
    UTF-8 form: ,+"\\<>; get a backslash, as do '#' or ' ' first and ' ' last; control bytes,
    DEL and (with ``escape_msb``) every byte >= 0x80 become \\XX. As in do_buf, the last
    character's flag replaces the first's: a value that is just "#" stays unescaped."""
    out = bytearray()
    last = len(data) - 1
    for i, byte in enumerate(data):
        first = i == 0 and i != last
        if byte in _ESC_2253 or (first and byte in b"# ") or (i == last and byte == 0x20):
            out += b"\\" + bytes([byte])
        elif byte < 0x20 or byte == 0x7F or (byte > 0x7F and escape_msb):
            out += b"\\%02X" % byte
        else:
            out.append(byte)
    return out.decode(errors="replace")


def _field(attribute: Attribute, *, escape_msb: bool) -> str:
    """``SN=value``; an attribute OpenSSL cannot name or a non-string value is dumped as
    ``#hex`` DER."""
    short, data = attribute.short_name, attribute.utf8()
    if short is not None and data is not None:
        return f"{short}={_escape(data, escape_msb=escape_msb)}"
    return f"{short or attribute.oid}=#{attribute.der.hex().upper()}"


def rfc2253(name: x509.Name | Rdns) -> str:
    """The name as PostgreSQL prints a DN (``X509_NAME_print_ex`` with ``XN_FLAG_RFC2253``):
    last RDN first, '+' inside one, non-ASCII bytes as ``\\XX``. This is what
    ``clientname=DN`` maps."""
    return ",".join(
        "+".join(_field(attribute, escape_msb=True) for attribute in reversed(rdn))
        for rdn in reversed(_rdns(name))
    )


def oneline(name: x509.Name | Rdns) -> str:
    """The ``/CN=...`` form of PostgreSQL's log lines (``X509_NAME_to_cstring``): encoded order,
    RFC 2253 escaping except that UTF-8 is kept."""
    return "".join(f"/{_field(a, escape_msb=False)}" for rdn in _rdns(name) for a in rdn)


def _canonical_value(attribute: Attribute) -> bytes:
    """x_name.c:asn1_string_canon: strings become lower-cased, space-collapsed UTF8Strings."""
    if attribute.tag not in _CANON_TAGS:
        return attribute.der
    data = attribute.value
    if attribute.tag == _der.UTF8_STRING:  # ASN1_STRING_to_UTF8 wants valid UTF-8
        data = data.decode(errors="replace").encode()
    else:
        data = attribute.utf8() or b""
    data = re.sub(_OPENSSL_SPACE + b"+", b" ", data).strip(b" ")
    # bytes.lower() touches ASCII only, as OpenSSL's canonicalisation does.
    return _der.encode(_der.UTF8_STRING, data.lower())


def _canonical_atv(attribute: Attribute) -> bytes:
    oid = _der.encode(_der.OBJECT_IDENTIFIER, attribute.oid_der)
    return _der.encode(_der.SEQUENCE, oid + _canonical_value(attribute))


def name_hash(name: x509.Name | Rdns) -> str:
    """OpenSSL's X509_NAME_hash (``openssl x509 -hash``): the first four bytes, little-endian,
    of the SHA-1 of the name's canonical encoding (x_name.c:x509_name_canon: each RDN as a DER
    SET, no outer SEQUENCE). cryptography has no such hash, hence it is done here."""
    encoding = b"".join(
        _der.encode(_der.SET, b"".join(sorted(_canonical_atv(attribute) for attribute in rdn)))
        for rdn in _rdns(name)
    )
    digest = hashlib.sha1(encoding, usedforsecurity=False).digest()
    return f"{int.from_bytes(digest[:4], 'little'):08x}"


__all__ = [
    "OID_COMMON_NAME",
    "SHORT_NAMES",
    "Attribute",
    "Rdns",
    "certificate_subject",
    "common_name",
    "name_hash",
    "oneline",
    "parse_name",
    "rfc2253",
]
