"""The SQLSTATE of a FATAL line: the one the client was sent with it.

PostgreSQL logs and sends one ErrorData, so a FATAL line's ``%e`` (jsonlog ``state_code``) is
the SQLSTATE of the ErrorResponse the client received. pggate's login machine hands the shell
a closing batch of bytes (login/commands.py ``Close.error``: the ErrorResponse, possibly behind
AuthenticationOk or NegotiateProtocolVersion) together with its log line; the SQLSTATE is read
back from the last ErrorResponse of those bytes, so it cannot differ from what the client saw.
"""

from __future__ import annotations

from pggate.proto import codec, codes
from pggate.proto.errors import ClientError

# A pre-3.0 error (codec.v2_error_response): "E", "FATAL:  text\n", NUL, no length word.
_V2_ERROR = codes.MSG_ERROR_RESPONSE + codes.SEVERITY_FATAL.encode() + b":  "


def sqlstate_sent(data: bytes | None) -> str | None:
    """The C field of the last ErrorResponse in ``data``; None when there is none."""
    if not data:
        return None
    if data.startswith(_V2_ERROR):
        # pggate sends the pre-3.0 format only for codec.V2ProtocolError, which is always
        # "unsupported frontend protocol" (0A000), as ProcessStartupPacket's ereport.
        return codes.SQLSTATE_FEATURE_NOT_SUPPORTED
    found = None
    view = memoryview(data)
    while view:
        try:
            message, used = codec.read_message(view, max_length=len(view))
            if message is None:
                return found
            kind, body = message
            if kind == codes.MSG_ERROR_RESPONSE:
                found = codec.parse_error_fields(body).get("C", found)
        except ClientError:  # not a well-formed message: nothing more to read
            return found
        view = view[used:]
    return found
