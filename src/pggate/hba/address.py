"""Numeric host addresses and masks as PostgreSQL reads them from pg_hba.conf.

PostgreSQL asks ``getaddrinfo(AI_NUMERICHOST)``; on glibc that accepts the classic
``inet_aton`` IPv4 spellings too (``127.1``, ``0x7f.0.0.1``, ``010.0.0.1`` is octal), and
anything it rejects is taken as a host name. Masks need not be contiguous: matching is
``(client & mask) == (address & mask)`` (``ip.c:pg_range_sockaddr``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address

IPAddress = IPv4Address | IPv6Address

_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")
_CIDR_BITS = re.compile(r"[ \t\n\r\f\v]*[+-]?[0-9]+")


def _inet_aton(text: str) -> IPv4Address | None:
    """glibc ``inet_aton``: 1 to 4 numbers, the last filling the remaining bytes."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        if not _PART.fullmatch(part):
            return None
        if part[:2] in ("0x", "0X"):
            values.append(int(part[2:] or "0", 16))
        elif part.startswith("0"):
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = 0
    for v in head:
        number = number << 8 | v
    return IPv4Address(number << (8 * (4 - len(head))) | last)


def parse_numeric_host(text: str) -> IPAddress | None:
    """The address ``getaddrinfo(AI_NUMERICHOST)`` would return, or None (a host name)."""
    if ":" in text:
        try:
            address = ipaddress.IPv6Address(text)
        except ValueError:
            return None
        # Zone ids select an interface for link-local sends; they play no part in matching.
        return IPv6Address(int(address))
    return _inet_aton(text)


def cidr_mask(bits_text: str, address: IPAddress) -> IPAddress | None:
    """``ip.c:pg_sockaddr_cidr_mask``: a ``strtol`` number within the family's width."""
    if not _CIDR_BITS.fullmatch(bits_text):
        return None
    bits = int(bits_text.strip())
    width = address.max_prefixlen
    if not 0 <= bits <= width:
        return None
    full = (1 << width) - 1
    value = full ^ (full >> bits)
    return IPv4Address(value) if width == 32 else IPv6Address(value)


def in_range(client: IPAddress, address: IPAddress, mask: IPAddress) -> bool:
    """Same family and equal under the mask; an IPv4 rule never matches an IPv6 client."""
    if client.version != address.version or mask.version != address.version:
        return False
    m = int(mask)
    return (int(client) & m) == (int(address) & m)


class AddressKind(StrEnum):
    ALL = "all"
    SAMEHOST = "samehost"
    SAMENET = "samenet"
    IP = "ip"
    HOSTNAME = "hostname"


@dataclass(frozen=True, slots=True)
class AddressSpec:
    """The ADDRESS column of a host* line.

    ``IP``: ``address`` and ``mask`` (from ``/len`` or a separate mask column).
    ``HOSTNAME``: ``hostname``; a leading ``.`` means "this suffix".
    """

    kind: AddressKind
    address: IPAddress | None = None
    mask: IPAddress | None = None
    hostname: str | None = None
