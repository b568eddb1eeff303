"""Simple-query catalog look-ups over pggate's own backend connection (sans-IO).

pggate needs a few facts only the backend knows (role membership for ``+role`` and
``samerole`` in pg_hba.conf, password verifiers later). The queries are fixed, schema-qualified
text with the one variable part passed as an escaped literal, so nothing a client sends can
change what runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pggate.proto import codec
from pggate.proto.errors import ProtocolViolation
from pggate.proto.messages import wire_str

MSG_QUERY = b"Q"
MSG_DATA_ROW = b"D"
MAX_RESULT_MESSAGE_LENGTH = 1 << 24


def quote_literal(value: str) -> str:
    """An E'' literal: safe whatever standard_conforming_strings says."""
    if "\0" in value:
        raise ValueError("a NUL byte cannot be part of an SQL literal")
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def simple_query(sql: str) -> bytes:
    """A Query ('Q') message."""
    body = sql.encode() + b"\0"
    return MSG_QUERY + (len(body) + 4).to_bytes(4, "big") + body


def role_memberships_sql(user: str) -> str:
    """Every role ``user`` belongs to, directly or indirectly, itself included (hba is_member)."""
    return (
        "WITH RECURSIVE m(roleid) AS ("
        " SELECT oid FROM pg_catalog.pg_roles WHERE rolname = "
        + quote_literal(user)
        + " UNION SELECT a.roleid FROM pg_catalog.pg_auth_members a JOIN m ON a.member = m.roleid"
        ") SELECT r.rolname FROM pg_catalog.pg_roles r JOIN m ON r.oid = m.roleid"
    )


@dataclass(slots=True)
class QueryResult:
    """Collects the rows (text format) of one simple query up to ReadyForQuery."""

    rows: list[list[str | None]] = field(default_factory=list)
    error: dict[str, str] | None = None
    done: bool = False
    status: bytes = b""  # the ReadyForQuery transaction status: I, T or E
    _buffer: bytearray = field(default_factory=bytearray)

    def receive(self, data: bytes) -> bool:
        """Feed bytes; True once ReadyForQuery has arrived."""
        self._buffer += data
        while not self.done:
            parsed, consumed = codec.read_message(
                self._buffer, max_length=MAX_RESULT_MESSAGE_LENGTH
            )
            if parsed is None:
                break
            kind, body = parsed
            if kind == MSG_DATA_ROW:
                self.rows.append(_parse_data_row(bytes(body)))
            elif kind == b"E":
                self.error = codec.parse_error_fields(bytes(body))
            elif kind == b"Z":
                self.done = True
                self.status = bytes(body[:1])
            del self._buffer[:consumed]
        return self.done

    @property
    def idle(self) -> bool:
        """The backend is outside any transaction block."""
        return self.status == b"I"

    def rest(self) -> bytes:
        """What came after this result's ReadyForQuery (the next result's start)."""
        return bytes(self._buffer)


def _parse_data_row(body: bytes) -> list[str | None]:
    """A DataRow's values as libpq's getAnotherTuple reads them: -1 is NULL, another negative
    length an empty value; a value past the body's end, or bytes after the last one, are a
    broken message. The text is decoded losslessly (:func:`wire_str`): pggate's own
    connections use the backend's default client_encoding, which need not be UTF-8."""
    if len(body) < 2:
        raise ProtocolViolation("malformed DataRow from backend")
    count = int.from_bytes(body[:2], "big")
    pos = 2
    values: list[str | None] = []
    for _ in range(count):
        if pos + 4 > len(body):
            raise ProtocolViolation("malformed DataRow from backend")
        length = int.from_bytes(body[pos : pos + 4], "big", signed=True)
        pos += 4
        if length == -1:
            values.append(None)
            continue
        length = max(length, 0)
        if pos + length > len(body):
            raise ProtocolViolation("malformed DataRow from backend")
        values.append(wire_str(body[pos : pos + length]))
        pos += length
    if pos != len(body):
        raise ProtocolViolation("malformed DataRow from backend")
    return values
