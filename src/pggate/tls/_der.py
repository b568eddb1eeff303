"""The tls package's one DER reader and writer: definite-length TLVs and OBJECT IDENTIFIERs.

Hand-written because the library is unfit for what uses it (:mod:`pggate.tls.x509names`, which
reads a name's attributes as encoded and builds ``X509_NAME_hash``'s canonical encoding):
``cryptography`` decodes a name's values into Python strings, and refuses a certificate whose
subject is not valid in its string type (invalid UTF-8, say) that OpenSSL accepts and
PostgreSQL prints byte for byte; it has no public reader of raw TLVs or OIDs, and its
declarative ``cryptography.hazmat.asn1`` is newer than the ``cryptography>=42`` pggate supports.
Pure: no I/O.
"""

from __future__ import annotations

OBJECT_IDENTIFIER = 0x06
UTF8_STRING = 0x0C
SEQUENCE = 0x30
SET = 0x31
CONTEXT_0 = 0xA0  # [0] EXPLICIT, e.g. a TBSCertificate's version


def read(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, contents start, contents end) of the element at ``der[pos]``; truncated input
    raises IndexError or ValueError."""
    tag = der[pos]
    length = der[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(der[pos : pos + n], "big")
        pos += n
    end = pos + length
    if end > len(der):
        raise ValueError("truncated DER")
    return tag, pos, end


def encode(tag: int, content: bytes) -> bytes:
    """The element ``tag`` around ``content``, its length in DER's shortest form."""
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def dotted_oid(body: bytes) -> str:
    """The dotted form of an OBJECT IDENTIFIER's contents (as ``OBJ_obj2txt`` with no_name)."""
    arcs: list[int] = []
    value = 0
    for byte in body:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]]))
