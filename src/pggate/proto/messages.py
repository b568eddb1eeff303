"""The startup-phase packets a client can send, as frozen values.

``proto/codec.py`` turns bytes into these and back; ``proto/negotiate.py`` decides what to do with
them. Strings travel as PostgreSQL stores them, raw bytes: they are decoded as UTF-8 with
``surrogateescape`` so that any byte sequence (a LATIN1 user name, a truncated multibyte
character) survives the round trip to the backend unchanged; :func:`wire_bytes` undoes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from pggate.proto import codes
from pggate.proto.errors import ClientError

WIRE_ENCODING: Final = "utf-8"
WIRE_ERRORS: Final = "surrogateescape"


def wire_str(raw: bytes) -> str:
    """Bytes of a protocol string (no NUL) as ``str``, losslessly."""
    return raw.decode(WIRE_ENCODING, WIRE_ERRORS)


def wire_bytes(text: str) -> bytes:
    """The exact bytes :func:`wire_str` decoded (or UTF-8 for ordinary text)."""
    return text.encode(WIRE_ENCODING, WIRE_ERRORS)


def truncate_name(name: str) -> str:
    """Cut a user or database name to NAMEDATALEN-1 bytes as ProcessStartupPacket does.

    backend_startup.c:ProcessStartupPacket writes a NUL at ``name[NAMEDATALEN - 1]``: a plain byte
    cut, *not* pg_mbcliplen (that one is only used by ``namein`` for SQL values). A multibyte
    character can therefore be split; the backend receives and applies the very same cut, so the
    byte-exact result is what must match, not a tidy character boundary.
    """
    raw = wire_bytes(name)
    if len(raw) < codes.NAMEDATALEN:
        return name
    return wire_str(raw[: codes.NAMEDATALEN - 1])


# Keywords of utils/adt/bool.c:parse_bool_with_len: any non-empty prefix of a keyword (ASCII
# case-insensitive) is accepted, except that "o" alone is ambiguous between on and off.
_BOOL_WORDS: Final = ((b"true", True), (b"false", False), (b"yes", True), (b"no", False))


def pg_parse_bool(value: str) -> bool | None:
    """PostgreSQL's parse_bool: True/False, or None when the value is not a boolean."""
    raw = wire_bytes(value).lower()  # bytes.lower folds ASCII only, like pg_strncasecmp
    for word, result in _BOOL_WORDS:
        if raw and word.startswith(raw):
            return result
    # 'o' compares at least two characters, so "o" matches neither "on" nor "off".
    if raw == b"on":
        return True
    if len(raw) >= 2 and b"off".startswith(raw):
        return False
    if raw == b"1":
        return True
    if raw == b"0":
        return False
    return None


def apply_replication_value(value: str, walsender: bool, db_walsender: bool) -> tuple[bool, bool]:
    """One ``replication`` startup parameter applied to (am_walsender, am_db_walsender).

    ProcessStartupPacket: ``database`` sets both flags; a boolean sets only am_walsender (so
    ``replication=database`` followed by ``replication=true`` still means logical); anything else
    is FATAL 22023 at once, in the middle of the parameter scan.
    """
    if value == codes.REPLICATION_DATABASE:
        return True, True
    parsed = pg_parse_bool(value)
    if parsed is None:
        raise ClientError(
            codes.SQLSTATE_INVALID_PARAMETER_VALUE,
            f'invalid value for parameter "{codes.PARAM_REPLICATION}": "{value}"',
            hint='Valid values are: "false", 0, "true", 1, "database".',
        )
    return parsed, db_walsender


@dataclass(frozen=True, slots=True)
class SSLRequest:
    """Code 1234.5679: the client asks for TLS; answered with one byte, ``S`` or ``N``."""


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    """Code 1234.5680: the client asks for GSSAPI encryption; answered ``G`` or ``N``."""


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """Code 1234.5678: cancel the query of backend ``pid`` if ``key`` matches; no reply ever."""

    pid: int
    key: bytes


@dataclass(frozen=True, slots=True)
class StartupMessage:
    """A protocol-3 StartupMessage.

    ``version`` is the raw requested version (3.0, 3.1, 3.2, 3.99...). ``parameters`` holds every
    name/value pair in packet order except protocol options, untruncated (what pggate forwards);
    ``protocol_options`` holds the names that start with ``_pq_.`` (none is understood in PG18,
    so all of them are reported back in NegotiateProtocolVersion).
    """

    version: int
    parameters: tuple[tuple[str, str], ...]
    protocol_options: tuple[str, ...] = ()

    @property
    def params(self) -> dict[str, str]:
        """Parameters by name (a fresh dict); the last of repeated names wins, as in PostgreSQL."""
        return dict(self.parameters)

    def _last(self, name: str) -> str | None:
        for key, value in reversed(self.parameters):
            if key == name:
                return value
        return None

    @property
    def user(self) -> str:
        """The role name, truncated to NAMEDATALEN-1 bytes ("" when absent)."""
        return truncate_name(self._last(codes.PARAM_USER) or "")

    @property
    def replication(self) -> Literal["none", "physical", "logical"]:
        """``none``, ``physical`` or ``logical`` (codes.REPLICATION_*).

        Raises the 22023 ClientError for a value PostgreSQL rejects (the codec never builds such
        a message; a hand-made one can).
        """
        walsender = db_walsender = False
        for key, value in self.parameters:
            if key == codes.PARAM_REPLICATION:
                walsender, db_walsender = apply_replication_value(value, walsender, db_walsender)
        if not walsender:
            return codes.REPLICATION_NONE
        return codes.REPLICATION_LOGICAL if db_walsender else codes.REPLICATION_PHYSICAL

    @property
    def database(self) -> str:
        """The database name as ProcessStartupPacket leaves it.

        Empty or absent → the (untruncated) user name, then cut to NAMEDATALEN-1 bytes; a
        physical-replication walsender is attached to no database, so "".
        """
        if self.replication == codes.REPLICATION_PHYSICAL:
            return ""
        return truncate_name(self._last(codes.PARAM_DATABASE) or self._last(codes.PARAM_USER) or "")

    @property
    def options(self) -> str | None:
        """The ``options`` parameter (command-line switches for the backend), if given."""
        return self._last(codes.PARAM_OPTIONS)

    @property
    def application_name(self) -> str | None:
        """The ``application_name`` parameter, if given (unsanitised; see pg_clean_ascii)."""
        return self._last(codes.PARAM_APPLICATION_NAME)


StartupPacket = SSLRequest | GSSENCRequest | CancelRequest | StartupMessage
