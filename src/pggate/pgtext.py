"""PostgreSQL's small rules for configuration text, one home each.

config/ (pggate.conf) and hba/ (pg_hba.conf, pg_ident.conf) follow the same PostgreSQL habits:
ASCII-only case folding (``pg_strcasecmp``), comma lists (``SplitIdentifierString`` /
``SplitGUCList``), include paths resolved beside the including file
(``conffiles.c:AbsoluteConfigLocation``), ``%m`` rendering of an OS error, and one way of reading
files that the sans-IO parsers receive from their caller. Pure: no I/O here (the disk
implementation of :class:`FileSource` is ``config.files.DiskFiles``).
"""

from __future__ import annotations

import posixpath
from typing import Protocol

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """Case folding as ``pg_strcasecmp`` / ``guc_name_compare`` do it: ASCII letters only."""
    return text.translate(_ASCII_LOWER)


class FileSource(Protocol):
    """What the configuration parsers need from a filesystem, injected by the I/O shell (tests
    hand in an in-memory dictionary)."""

    def read_text(self, path: str) -> str:
        """The whole file as text; raises FileNotFoundError / OSError."""
        ...

    def list_dir(self, path: str) -> list[str]:
        """Names (not paths) of a directory's entries; raises OSError."""
        ...


def absolute_location(location: str, calling_file: str) -> str:
    """``location`` as PostgreSQL resolves it: absolute as-is, else beside ``calling_file``."""
    if posixpath.isabs(location):
        return location
    parent = posixpath.dirname(calling_file)
    return posixpath.normpath(posixpath.join(parent, location))


def os_error_text(exc: BaseException) -> str:
    """What ``%m`` prints for this error (strerror), without the errno number or path."""
    if isinstance(exc, OSError):
        if exc.strerror:
            return exc.strerror
        if isinstance(exc, FileNotFoundError):
            return "No such file or directory"
        if isinstance(exc, PermissionError):
            return "Permission denied"
    return str(exc) or type(exc).__name__


_SCANNER_SPACE = " \t\n\r\f\v"


def split_identifier_string(
    text: str, separator: str = ",", *, downcase: bool = True
) -> list[str] | None:
    """PostgreSQL's SplitIdentifierString: separator-separated identifiers, optionally
    double-quoted ("" is a quote inside); unquoted ones are downcased. None on bad syntax.

    With ``downcase=False`` it is ``SplitGUCList`` (same syntax, names kept as written).
    """
    names: list[str] = []
    pos, end = 0, len(text)

    def skip_space(i: int) -> int:
        while i < end and text[i] in _SCANNER_SPACE:
            i += 1
        return i

    pos = skip_space(pos)
    if pos == end:
        return names  # an empty string is an empty list
    while True:
        if text[pos] == '"':
            parts, pos = [], pos + 1
            while True:
                close = text.find('"', pos)
                if close < 0:
                    return None  # mismatched quotes
                parts.append(text[pos:close])
                pos = close + 1
                if not text.startswith('"', pos):
                    break
                parts.append('"')
                pos += 1
            name = "".join(parts)
        else:
            start = pos
            while pos < end and text[pos] != separator and text[pos] not in _SCANNER_SPACE:
                pos += 1
            if pos == start:
                return None  # empty unquoted name
            name = text[start:pos]
            if downcase:
                name = ascii_lower(name)
        names.append(name)
        pos = skip_space(pos)
        if pos == end:
            return names
        if text[pos] != separator:
            return None
        pos = skip_space(pos + 1)
        if pos == end:
            return None  # a trailing separator promises another name
