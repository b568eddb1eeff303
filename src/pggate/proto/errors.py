"""Errors the client sees: PostgreSQL's SQLSTATE, severity and texts, sent as ErrorResponse.

Client-visible failures carry PostgreSQL's SQLSTATE and message text so that a client cannot tell
pggate from the server it fronts; operator-only detail (which hba line matched, why a password
check failed) travels separately and goes to the log only.
"""

from __future__ import annotations

from pggate.errors import PggateError
from pggate.proto import codes


class ClientError(PggateError):
    """An error to send to the client as an ErrorResponse (then, for FATAL, close).

    ``log_detail`` is for the server log only and is never sent to the client.
    """

    def __init__(
        self,
        sqlstate: str,
        message: str,
        *,
        severity: str = codes.SEVERITY_FATAL,
        detail: str | None = None,
        hint: str | None = None,
        log_detail: str | None = None,
    ) -> None:
        self.sqlstate = sqlstate
        self.message = message
        self.severity = severity
        self.detail = detail
        self.hint = hint
        self.log_detail = log_detail
        super().__init__(message)


class ProtocolViolation(ClientError):
    """The peer broke the wire protocol (SQLSTATE 08P01)."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(codes.SQLSTATE_PROTOCOL_VIOLATION, message, detail=detail)
