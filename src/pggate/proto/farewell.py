"""``LastWord``: whether a relayed session's backend left without an ErrorResponse.

A backend that exits on purpose says why first (FATAL 57P01 at shutdown or
``pg_terminate_backend``, 57P05 after ``idle_session_timeout``...); the relay passes that on and
closes. A backend killed outright (``kill -9``, the OOM killer), or one ended by the crash of
another (PostgreSQL 14+ sends only a WARNING then, ``quickdie`` in postgres.c), says nothing: the
client connected straight to PostgreSQL would read "server closed the connection unexpectedly"
from libpq. Behind pggate it gets that in words a driver can act on: FATAL 08006 with libpq's
text, so no session ends without an ErrorResponse.

The FATAL may only be appended at a message boundary, and the relay does not parse the stream
(one ``endswith`` per chunk is its budget). So the tracking is cheap and conservative: the
stream is at a boundary after a chunk that ends with ReadyForQuery (as the pool's ExitTracker
assumes), and stays so through chunks that are whole messages, which is checked only on the
first chunk after a boundary (a response's start, or a dying backend's notice). After any chunk
that ends mid-message the stream is "somewhere in a response" until the next ReadyForQuery; a
backend that dies there leaves the client with a bare close, as PostgreSQL's would.

A client that sent Terminate has left on purpose: the backend's close is no news to it.
"""

from __future__ import annotations

from pggate.proto import codec, codes
from pggate.proto.errors import ClientError

_READY_HEAD = codes.MSG_READY_FOR_QUERY + (4 + 1).to_bytes(4, "big")  # 'Z', length 5
_TERMINATE = codec.terminate()
_ERROR = codes.MSG_ERROR_RESPONSE[0]
_HEADER = 5  # type byte and length word

#: What the client hears when its backend vanished without a word (libpq's text for it).
GONE = codec.error_response(
    ClientError(
        codes.SQLSTATE_CONNECTION_FAILURE,
        "server closed the connection unexpectedly",
        detail="This probably means the server terminated abnormally "
        "before or while processing the request.",
    )
)


class LastWord:
    """Watches both directions of one relayed session; :meth:`farewell` when the backend
    has gone."""

    __slots__ = ("at_boundary", "client_left", "last_type", "tail")

    def __init__(self) -> None:
        self.at_boundary = True  # the login's last bytes were ReadyForQuery
        self.last_type = codes.MSG_READY_FOR_QUERY[0]
        self.client_left = False
        self.tail = b""  # the stream's last six bytes when a read was shorter than that

    def backend_data(self, data: bytes) -> None:
        end = data[-6:]
        if len(end) < 6:  # a ReadyForQuery may arrive split over reads
            end = (self.tail + end)[-6:]
        self.tail = end
        if end[:-1] == _READY_HEAD:
            self.at_boundary, self.last_type = True, codes.MSG_READY_FOR_QUERY[0]
        elif self.at_boundary:
            self.last_type = _last_whole_message(data)
            self.at_boundary = self.last_type >= 0

    def client_data(self, data: bytes) -> None:
        if data.endswith(_TERMINATE):
            self.client_left = True

    def farewell(self) -> bytes:
        """The bytes to send the client now that the backend's connection is gone (maybe
        none: it said its word, the client left, or the stream is mid-message)."""
        if self.client_left or not self.at_boundary or self.last_type == _ERROR:
            return b""
        return GONE


def _last_whole_message(data: bytes) -> int:
    """The type byte of the last message when ``data`` is whole messages, else -1."""
    pos, end, last = 0, len(data), -1
    while end - pos >= _HEADER:
        length = int.from_bytes(data[pos + 1 : pos + _HEADER], "big")
        if length < 4:
            return -1
        last, pos = data[pos], pos + 1 + length
    return last if pos == end else -1
