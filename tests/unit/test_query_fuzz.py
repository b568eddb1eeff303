"""proto/query.py under hypothesis: the catalog queries' result reader and their literals.

* A result cut anywhere gives the rows, the error fields and the status that were sent, for any
  values (NULL, empty, any bytes: pggate's own connections use the backend's default
  client_encoding, which need not be UTF-8);
* any bytes give rows, or ProtocolViolation (a ClientError, which the callers catch), nothing
  else; a DataRow whose values overrun or underrun its length is refused, as libpq refuses it;
* ``quote_literal`` of any text without NUL reads back as that text (E'' string rules).
"""

from __future__ import annotations

import re
import struct
from itertools import pairwise

from hypothesis import event, given
from hypothesis import strategies as st

from pggate.proto import codec, query
from pggate.proto.errors import ClientError, ProtocolViolation
from pggate.proto.messages import wire_bytes, wire_str

Row = list[bytes | None]


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", 4 + len(body)) + body


def data_row(row: Row) -> bytes:
    body = struct.pack("!H", len(row))
    for value in row:
        body += struct.pack("!i", -1) if value is None else struct.pack("!I", len(value)) + value
    return message(b"D", body)


ROWS = st.lists(st.lists(st.none() | st.binary(max_size=12), max_size=4), max_size=5)
OTHER = st.sampled_from(
    [
        message(b"T", b"\0\0"),
        message(b"C", b"SELECT 1\0"),
        codec.notice_response(ClientError("01000", "a notice")),
        message(b"S", b"x\0y\0"),
        message(b"I", b""),
    ]
)


@st.composite
def cut(draw: st.DrawFn, data: bytes) -> list[bytes]:
    offsets = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    edges = [0, *offsets, len(data)]
    return [data[a:b] for a, b in pairwise(edges)]


@given(st.data(), ROWS, st.lists(OTHER, max_size=3), st.booleans(), st.sampled_from(b"ITE"))
def test_a_result_cut_anywhere_reads_back(
    data: st.DataObject, rows: list[Row], others: list[bytes], failed: bool, status: int
) -> None:
    messages = [data_row(r) for r in rows] + others
    if failed:
        messages.append(codec.error_response(ClientError("42P01", 'relation "x" does not exist')))
    stream = b"".join(messages) + codec.ready_for_query(bytes([status]))
    result = query.QueryResult()
    done = [result.receive(chunk) for chunk in data.draw(cut(stream))]
    # Not done before the last byte of ReadyForQuery, done from it on.
    assert done[-1] and all(done[done.index(True) :])
    assert result.done and result.status == bytes([status])
    assert result.idle is (status == ord("I"))
    assert result.rows == [[None if v is None else wire_str(v) for v in r] for r in rows]
    # Lossless: the values' bytes come back exactly.
    assert [[None if v is None else wire_bytes(v) for v in r] for r in result.rows] == rows
    assert (result.error is not None) is failed
    if result.error is not None:
        assert result.error["C"] == "42P01"


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Mostly result-shaped: rows (some with a lying count or length), other messages, noise."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["row", "bad row", "other", "noise", "Z", "E"]))
        if kind == "row":
            parts.append(data_row(draw(ROWS.filter(bool))[0]))
        elif kind == "bad row":
            count = draw(st.integers(0, 3))
            body = struct.pack("!H", count) + draw(st.binary(max_size=16))
            if draw(st.booleans()):
                body = struct.pack("!H", 1) + struct.pack("!i", draw(st.integers(-3, 20))) + b"ab"
            parts.append(message(b"D", body[: draw(st.integers(0, len(body)))]))
        elif kind == "other":
            parts.append(draw(OTHER))
        elif kind == "E":
            parts.append(message(b"E", draw(st.binary(max_size=12))))
        elif kind == "Z":
            parts.append(message(b"Z", draw(st.binary(max_size=2))))
        else:
            parts.append(draw(st.binary(max_size=12)))
    return b"".join(parts)


def reference_row(body: bytes) -> list[bytes | None] | None:
    """libpq's getAnotherTuple reading, or None where it reports a broken message."""
    if len(body) < 2:
        return None
    count, pos = int.from_bytes(body[:2], "big"), 2
    values: list[bytes | None] = []
    for _ in range(count):
        if pos + 4 > len(body):
            return None
        (length,) = struct.unpack_from("!i", body, pos)
        pos += 4
        if length == -1:
            values.append(None)
            continue
        length = max(length, 0)
        if pos + length > len(body):
            return None
        values.append(body[pos : pos + length])
        pos += length
    return values if pos == len(body) else None


@given(st.data(), streams())
def test_any_bytes_are_rows_or_a_protocol_violation(data: st.DataObject, stream: bytes) -> None:
    result = query.QueryResult()
    try:
        for chunk in data.draw(cut(stream)):
            if result.receive(chunk):
                break
    except ProtocolViolation as exc:
        event(f"refused: {exc.message}")
        assert isinstance(exc, ClientError)
        return
    event("done" if result.done else "waiting")
    # Every DataRow accepted was read as libpq reads it.
    expected = []
    pos = 0
    while True:
        try:
            parsed, used = codec.read_message(
                stream[pos:], max_length=query.MAX_RESULT_MESSAGE_LENGTH
            )
        except ClientError:
            break
        if parsed is None:
            break
        kind, body = parsed
        pos += used
        if kind == b"D":
            row = reference_row(bytes(body))
            assert row is not None, "a broken DataRow was accepted"
            expected.append([None if v is None else wire_str(v) for v in row])
        if kind == b"Z":
            break
    assert result.rows == expected[: len(result.rows)]
    if result.done:
        assert result.rows == expected


@given(st.text().filter(lambda t: "\0" not in t))
def test_a_quoted_literal_reads_back_as_the_text(text: str) -> None:
    literal = query.quote_literal(text)
    assert literal.startswith("E'") and literal.endswith("'")
    inner = literal[2:-1]
    # Inside E'': every quote is doubled and every backslash starts an escape of one character.
    assert re.fullmatch(r"(?:[^'\\]|''|\\\\)*", inner, re.DOTALL), literal
    assert inner.replace("''", "'").replace("\\\\", "\\") == text
    sql = query.role_memberships_sql(text)
    assert sql.count(literal) == 1 and sql.replace(literal, "", 1).count("'") == 0
    q = query.simple_query(sql)
    assert q[:1] == b"Q" and q.endswith(b"\0") and int.from_bytes(q[1:5], "big") == len(q) - 1
