"""One exception tree for pggate.

Client-visible failures (``proto.errors.ClientError``) carry PostgreSQL's SQLSTATE and message
text; this ground floor holds what every layer shares and imports nothing of pggate.
"""

from __future__ import annotations


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


class SilentClose(PggateError):
    """Close the connection without sending anything (PostgreSQL logs, the client sees EOF).

    PostgreSQL answers some bad startup packets (bad length, truncated packet, cancel requests)
    by closing without a word; the message is for the log.
    """
