"""One exception tree for pggate.

Client-visible failures carry PostgreSQL's SQLSTATE and message text so that a client cannot tell
pggate from the server it fronts; operator-only detail (which hba line matched, why a password
check failed) travels separately and goes to the log only.
"""

from __future__ import annotations

from pggate.proto import codes


class PggateError(Exception):
    """Base of every error pggate raises on purpose."""


class ConfigError(PggateError):
    """A problem in a configuration file or setting.

    Rendered like PostgreSQL's own messages: the problem, then
    ``line N of configuration file "F"`` when the place is known. ``detail`` and ``hint`` are
    PostgreSQL's DETAIL and HINT lines: the message alone is its errmsg, they say why and what
    would do.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        parameter: str | None = None,
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.parameter = parameter
        self.detail = detail
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.file is not None and self.line is not None:
            return f'{self.message}, line {self.line} of configuration file "{self.file}"'
        if self.file is not None:
            return f'{self.message} (file "{self.file}")'
        return self.message


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


class SilentClose(PggateError):
    """Close the connection without sending anything (PostgreSQL logs, the client sees EOF).

    PostgreSQL answers some bad startup packets (bad length, truncated packet, cancel requests)
    by closing without a word; the message is for the log.
    """
