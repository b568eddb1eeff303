"""libpq 18's ``sslmode=verify-full`` host-name check, byte for byte.

A port of ``fe-secure-openssl.c:pgtls_verify_peer_name_matches_certificate_guts`` and
``fe-secure-common.c`` (``pq_verify_peer_name_matches_certificate`` with its texts,
``pq_verify_peer_name_matches_certificate_name`` / ``_ip``, ``wildcard_certificate_match``) and
of the ``pg_inet_net_ntop`` formatting libpq prints certificate addresses with.

The rules (libpq 17 and later):

* the host is an IP address when ``inet_aton`` (IPv4, with its shorthands such as ``127.1``)
  or ``inet_pton(AF_INET6)`` accepts it, else a DNS name;
* every dNSName and iPAddress SAN is examined in certificate order, whatever the host's kind:
  names compare case-insensitively (ASCII) or as a ``*.`` wildcard covering one whole leftmost
  label; addresses compare as bytes with the host converted (a DNS host never matches one);
* the subject CN (the first one) is consulted only when no SAN has the host's kind, so an IP
  host may still match the CN of a certificate whose SANs are all dNSNames;
* the first match ends the search; an embedded NUL in a name, or an address that is neither 4
  nor 16 bytes, is an error however the other names compare.

The certificate's bytes are read as OpenSSL hands them to libpq (the raw contents of each
string, whatever its ASN.1 type), which :mod:`cryptography`'s decoded values cannot give:
cryptography reads the certificate, this module walks its ``tbsCertificate`` DER.
"""

from __future__ import annotations

import socket

from cryptography import x509

_SAN_OID = bytes.fromhex("551d11")  # 2.5.29.17 subjectAltName
_CN_OID = bytes.fromhex("550403")  # 2.5.4.3 commonName
_SEQUENCE, _SET, _OID, _OCTET_STRING = 0x30, 0x31, 0x06, 0x04
_EXPLICIT_0, _EXPLICIT_3 = 0xA0, 0xA3
_DNS_NAME, _IP_ADDRESS = 0x82, 0x87  # GeneralName [2] IA5String, [7] OCTET STRING (implicit)

NO_HOST = "host name must be specified for a verified SSL connection"
NO_NAME = "could not get server's host name from server certificate"
EMBEDDED_NULL = "SSL certificate's name contains embedded null"


class _Malformed(ValueError):
    pass


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(tag, content start, content end) of each DER element in ``der[start:end]``."""
    out: list[tuple[int, int, int]] = []
    pos = start
    while pos < end:
        if pos + 2 > end or der[pos] & 0x1F == 0x1F:
            raise _Malformed
        tag, length, pos = der[pos], der[pos + 1], pos + 2
        if length & 0x80:
            count = length & 0x7F
            if not 0 < count <= 4 or pos + count > end:
                raise _Malformed
            length, pos = int.from_bytes(der[pos : pos + count], "big"), pos + count
        if pos + length > end:
            raise _Malformed
        out.append((tag, pos, pos + length))
        pos += length
    return out


def _one(der: bytes, start: int, end: int, tag: int) -> tuple[int, int]:
    items = _children(der, start, end)
    if len(items) != 1 or items[0][0] != tag:
        raise _Malformed
    return items[0][1], items[0][2]


def _tbs_parts(cert_der: bytes) -> tuple[bytes, tuple[int, int], list[tuple[int, int, int]]]:
    """The tbsCertificate, its subject's span and its top-level elements."""
    try:
        tbs = x509.load_der_x509_certificate(cert_der).tbs_certificate_bytes
    except x509.InvalidVersion as exc:  # not a ValueError: a version OpenSSL may still take
        raise _Malformed from exc
    start, end = _one(tbs, 0, len(tbs), _SEQUENCE)
    items = _children(tbs, start, end)
    first = 1 if items and items[0][0] == _EXPLICIT_0 else 0  # version [0], v1 omits it
    if len(items) < first + 6 or items[first + 4][0] != _SEQUENCE:
        raise _Malformed
    # serial, signature, issuer, validity, subject, subjectPublicKeyInfo, [1], [2], [3]
    subject = items[first + 4]
    return tbs, (subject[1], subject[2]), items[first + 6 :]


def _subject_alt_names(tbs: bytes, rest: list[tuple[int, int, int]]) -> list[tuple[int, bytes]]:
    """(tag, contents) of each dNSName and iPAddress SAN, in order.

    As ``X509_get_ext_d2i(..., NULL, NULL)``: no SAN when the extension is missing, occurs more
    than once or does not decode.
    """
    values: list[tuple[int, int]] = []
    for tag, start, end in rest:
        if tag != _EXPLICIT_3:
            continue
        seq_start, seq_end = _one(tbs, start, end, _SEQUENCE)
        for ext_tag, ext_start, ext_end in _children(tbs, seq_start, seq_end):
            fields = _children(tbs, ext_start, ext_end) if ext_tag == _SEQUENCE else []
            if fields and fields[0][0] == _OID and tbs[fields[0][1] : fields[0][2]] == _SAN_OID:
                if fields[-1][0] != _OCTET_STRING:
                    return []
                values.append((fields[-1][1], fields[-1][2]))
    if len(values) != 1:
        return []
    try:
        start, end = _one(tbs, values[0][0], values[0][1], _SEQUENCE)
        names = _children(tbs, start, end)
    except _Malformed:
        return []
    return [(tag, tbs[s:e]) for tag, s, e in names if tag in (_DNS_NAME, _IP_ADDRESS)]


def _first_common_name(tbs: bytes, subject: tuple[int, int]) -> bytes | None:
    """The contents of the first commonName in the subject (X509_NAME_get_index_by_NID)."""
    for rdn_tag, rdn_start, rdn_end in _children(tbs, *subject):
        if rdn_tag != _SET:
            raise _Malformed
        for _, ava_start, ava_end in _children(tbs, rdn_start, rdn_end):
            ava = _children(tbs, ava_start, ava_end)
            if len(ava) == 2 and ava[0][0] == _OID and tbs[ava[0][1] : ava[0][2]] == _CN_OID:
                return tbs[ava[1][1] : ava[1][2]]
    return None


def _ipv4(host: str) -> bytes | None:
    try:
        return socket.inet_aton(host)  # the C library's inet_aton, shorthands and all
    except (OSError, ValueError):
        return None


def _ipv6(host: str) -> bytes | None:
    try:
        return socket.inet_pton(socket.AF_INET6, host)
    except (OSError, ValueError):
        return None


def is_ip_address(host: str) -> bool:
    """fe-secure-openssl.c:is_ip_address."""
    return _ipv4(host) is not None or _ipv6(host) is not None


def wildcard_certificate_match(pattern: bytes, string: bytes) -> bool:
    """fe-secure-common.c:wildcard_certificate_match, literally: ``*.`` then the rest of the
    pattern matching the end of the string; no dot left of the part the ``*`` covers."""
    lenpat, lenstr = len(pattern), len(string)
    if lenpat < 3 or pattern[:2] != b"*.":
        return False
    if lenpat > lenstr:
        return False
    if pattern[1:].lower() != string[lenstr - lenpat + 1 :].lower():
        return False
    return string.find(b".") >= lenstr - lenpat


def inet_net_ntop(address: bytes) -> str:
    """port/inet_net_ntop.c:pg_inet_net_ntop for a 4- or 16-byte address with a full mask."""
    if len(address) == 4:
        return ".".join(str(b) for b in address)
    words = [address[i] << 8 | address[i + 1] for i in range(0, 16, 2)]
    best_base, best_len, cur_base, cur_len = -1, 0, -1, 0
    for i, word in enumerate(words):
        if word == 0:
            if cur_base == -1:
                cur_base, cur_len = i, 1
            else:
                cur_len += 1
        elif cur_base != -1:
            if best_base == -1 or cur_len > best_len:
                best_base, best_len = cur_base, cur_len
            cur_base = -1
    if cur_base != -1 and (best_base == -1 or cur_len > best_len):
        best_base, best_len = cur_base, cur_len
    if best_base != -1 and best_len < 2:
        best_base = -1
    out = ""
    for i, word in enumerate(words):
        if best_base != -1 and best_base <= i < best_base + best_len:
            if i == best_base:
                out += ":"
            continue
        if i != 0:
            out += ":"
        if (
            i == 6
            and best_base == 0
            and (
                best_len == 6
                or (best_len == 7 and words[7] != 1)
                or (best_len == 5 and words[5] == 0xFFFF)
            )
        ):
            out += ".".join(str(b) for b in address[12:])
            break
        out += f"{word:x}"
    if best_base != -1 and best_base + best_len == 8:
        out += ":"
    return out


def _display(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def _match_name(name: bytes, host: bytes) -> bool | str:
    """pq_verify_peer_name_matches_certificate_name: True/False, or libpq's error text."""
    if b"\0" in name:
        return EMBEDDED_NULL
    return name.lower() == host.lower() or wildcard_certificate_match(name, host)


def _match_ip(address: bytes, host: str) -> bool | str:
    """pq_verify_peer_name_matches_certificate_ip: True/False, or libpq's error text."""
    if len(address) == 4:
        return _ipv4(host) == address
    if len(address) == 16:
        return _ipv6(host) == address
    return f"certificate contains IP address with invalid length {len(address)}"


def verify_peer_name(cert_der: bytes, host: str) -> str | None:
    """None when ``host`` matches the certificate as libpq 18's verify-full requires, else
    libpq's error text (one line, no trailing newline).

    ``host`` is libpq's ``host`` for the entry being tried (not ``hostaddr``), "" when none was
    given. ``cert_der`` is the server's leaf certificate; ValueError if it is not one.
    """
    if not host:
        return NO_HOST
    host_bytes = host.encode("utf-8", "surrogateescape")
    host_is_ip = is_ip_address(host)
    try:
        tbs, subject, rest = _tbs_parts(cert_der)
        sans = _subject_alt_names(tbs, rest)
        common_name = _first_common_name(tbs, subject)
    except _Malformed as exc:
        raise ValueError("malformed certificate") from exc

    examined: list[str] = []
    check_cn = True
    result: bool | str = False
    for tag, value in sans:
        if (tag == _IP_ADDRESS) == host_is_ip:
            check_cn = False  # a SAN of the host's own kind: no fallback to the CN
        if tag == _DNS_NAME:
            result = _match_name(value, host_bytes)
            shown = _display(value)
        else:
            result = _match_ip(value, host)
            shown = inet_net_ntop(value) if len(value) in (4, 16) else ""
        if result is not False:
            break
        examined.append(shown)
    else:
        if check_cn and common_name is not None:
            result = _match_name(common_name, host_bytes)
            if result is False:
                examined.append(_display(common_name))

    if isinstance(result, str):
        return result
    if result:
        return None
    if len(examined) > 1:
        others = len(examined) - 1
        noun = "name" if others == 1 else "names"
        return (
            f'server certificate for "{examined[0]}" (and {others} other {noun}) '
            f'does not match host name "{host}"'
        )
    if examined:
        return f'server certificate for "{examined[0]}" does not match host name "{host}"'
    return NO_NAME


__all__ = [
    "EMBEDDED_NULL",
    "NO_HOST",
    "NO_NAME",
    "inet_net_ntop",
    "is_ip_address",
    "verify_peer_name",
    "wildcard_certificate_match",
]
