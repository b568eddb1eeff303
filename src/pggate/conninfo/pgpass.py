"""The password file (``~/.pgpass``, or ``passfile``): libpq's passwordFromFile, without I/O.

A line is ``host:port:database:user:password``; ``\\`` takes the next character literally (so
``\\:`` and ``\\\\``), a field that is exactly ``*`` matches anything (pwdfMatchesString), and
the first matching line wins. A line starting with ``#`` is a comment; trailing CR and LF are
ignored; a line with fewer than five fields never matches; lines may be of any length (libpq
13 and later). Reading the file, with libpq's permission rule, is ``passfile.read_pgpass``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pggate.conninfo.keywords import DEFAULT_PORT, DEFAULT_SOCKET_DIR

_LOCALHOST = "localhost"  # DefaultHost


@dataclass(frozen=True, slots=True)
class PgpassEntry:
    """One usable line; None in a field is the ``*`` wildcard."""

    host: str | None
    port: str | None
    dbname: str | None
    user: str | None
    password: str = field(repr=False)

    def matches(self, host: str, port: str, dbname: str, user: str) -> bool:
        """Whether the line applies (each field equal after unescaping, or ``*``)."""
        wanted = (host, port, dbname, user)
        mine = (self.host, self.port, self.dbname, self.user)
        return all(have is None or have == want for have, want in zip(mine, wanted, strict=True))


def _field(line: str, pos: int) -> tuple[str | None, int] | None:
    """One of the first four fields at ``pos``: its value (None for ``*``) and the position
    after its ``:``; None when the line ends first."""
    if line.startswith("*:", pos):
        return None, pos + 2
    chars: list[str] = []
    end = len(line)
    while pos < end:
        char = line[pos]
        if char == ":":
            return "".join(chars), pos + 1
        if char == "\\":
            pos += 1
            if pos >= end:
                break
            char = line[pos]
        chars.append(char)
        pos += 1
    return None


def _password(rest: str) -> str:
    """The password field: unescaped up to an unescaped ``:``; a final ``\\`` stays."""
    chars: list[str] = []
    pos, end = 0, len(rest)
    while pos < end and rest[pos] != ":":
        if rest[pos] == "\\" and pos + 1 < end:
            pos += 1
        chars.append(rest[pos])
        pos += 1
    return "".join(chars)


def parse_line(line: str) -> PgpassEntry | None:
    """One line (without its newline) as an entry, or None for a comment, an empty line or a
    line that can never match."""
    if line.startswith("#"):
        return None
    line = line.rstrip("\r\n")
    fields: list[str | None] = []
    pos = 0
    for _ in range(4):
        parsed = _field(line, pos)
        if parsed is None:
            return None
        value, pos = parsed
        fields.append(value)
    host, port, dbname, user = fields
    return PgpassEntry(host, port, dbname, user, _password(line[pos:]))


def parse_pgpass(text: str) -> tuple[PgpassEntry, ...]:
    """Every usable line of a password file, in order."""
    entries = (parse_line(line) for line in text.split("\n"))
    return tuple(entry for entry in entries if entry is not None)


def lookup_password(
    entries: Sequence[PgpassEntry], *, host: str, port: str, dbname: str, user: str
) -> str | None:
    """passwordFromFile: the password of the first matching entry, or None.

    ``host`` is libpq's: the host entry (else the hostaddr); "" and the default socket
    directory match ``localhost``, any other socket directory only itself. ``port`` is as
    written, "" meaning 5432. No database or user name: no password. An empty password is no
    password (libpq sends none either).
    """
    if not dbname or not user:
        return None
    if host in ("", DEFAULT_SOCKET_DIR):
        host = _LOCALHOST
    port = port or str(DEFAULT_PORT)
    for entry in entries:
        if entry.matches(host, port, dbname, user):
            return entry.password or None
    return None
