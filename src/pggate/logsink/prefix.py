"""``log_line_prefix`` expanded as PostgreSQL 18 expands it (elog.c: log_status_format).

Every escape of PostgreSQL 18 is read; what each prints comes from :class:`Line`. Session-only
escapes (``%a %u %d %h %r %i``) print nothing outside a session, or spaces when padded; ``%q``
ends the prefix there. pggate runs no transactions or queries and has no ps display: ``%x`` and
``%Q`` print 0 and ``%v``, ``%i`` and ``%P`` nothing, as PostgreSQL prints them in a process that
has none. Padding (``%10u``, ``%-10u``) is C's ``%*s``: a field narrower than the width is
padded with spaces, on the left for a positive width and on the right for a negative one,
counting bytes. An unknown escape prints nothing; a ``%`` at the end, or a padding with no
escape after it, ends the prefix (PostgreSQL's "format error - ignore it").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo

from pggate.logsink.fields import CLIENT_BACKEND, POSTMASTER, ProcessFields, SessionFields

UNKNOWN = "[unknown]"  # %a %u %d of a session that has no such name (yet)
NO_LOCAL_ADDRESS = "[none]"  # %L outside a session


@dataclass(slots=True)
class Line:
    """What one log line's prefix and JSON object are made from.

    ``created`` and ``millis`` are the record's time (PostgreSQL's ``saved_timeval``, shared by
    every timestamp of one message), ``process_start`` the serving process's start time.
    """

    created: float
    millis: int
    zone: tzinfo
    pid: int
    process_start: float
    sqlstate: str
    session: SessionFields | None

    def stamp(self, seconds: float, pattern: str) -> str:
        """pg_strftime(pattern, pg_localtime(seconds, log_timezone))."""
        return datetime.fromtimestamp(int(seconds), self.zone).strftime(pattern)

    @property
    def log_time(self) -> str:
        """get_formatted_log_time: ``%Y-%m-%d %H:%M:%S.mmm %Z`` (%m, jsonlog's timestamp)."""
        moment = datetime.fromtimestamp(int(self.created), self.zone)
        return f"{moment:%Y-%m-%d %H:%M:%S}.{self.millis:03d} {moment:%Z}"

    @property
    def start_time(self) -> str:
        """get_formatted_start_time: the session's (or process's) start, to the second."""
        start = self.process_start if self.session is None else self.session.start
        return self.stamp(start, "%Y-%m-%d %H:%M:%S %Z")

    @property
    def session_id(self) -> str:
        if self.session is None:
            return ProcessFields.session_id(self.pid, self.process_start)
        return self.session.session_id(self.pid)

    @property
    def backend_type(self) -> str:
        return POSTMASTER if self.session is None else CLIENT_BACKEND


def _pad(text: str, padding: int) -> str:
    """C's ``%*s``: ``abs(padding)`` bytes wide, right-aligned if positive, left if negative."""
    if padding == 0:
        return text
    missing = abs(padding) - len(text.encode("utf-8", "surrogateescape"))
    if missing <= 0:
        return text
    return " " * missing + text if padding > 0 else text + " " * missing


def _read_padding(fmt: str, at: int) -> tuple[int, int] | None:
    """process_log_prefix_padding: an optional ``-`` and digits; (padding, index of the escape
    letter), or None when the format ends first."""
    sign = 1
    if fmt[at] == "-":
        at += 1
        if at >= len(fmt):
            return None
        sign = -1
    value = 0
    while at < len(fmt) and "0" <= fmt[at] <= "9":
        value = value * 10 + ord(fmt[at]) - ord("0")
        at += 1
    if at >= len(fmt):
        return None
    return sign * value, at


def expand(fmt: str, line: Line, number: int) -> str:
    """``fmt`` (log_line_prefix) for ``line``, whose ``%l`` is ``number``."""
    out: list[str] = []
    session = line.session
    at, end = 0, len(fmt)
    while at < end:
        char = fmt[at]
        at += 1
        if char != "%":
            out.append(char)
            continue
        if at >= end:
            break
        char = fmt[at]
        if char == "%":
            out.append("%")
            at += 1
            continue
        padding = 0
        if char <= "9":  # '-', a digit, or (as in C) any other character below '9'
            found = _read_padding(fmt, at)
            if found is None:
                break
            padding, at = found
            char = fmt[at]
        at += 1
        if char == "q":
            if session is None:
                break
            continue
        text = _escape(char, line, number, padding)
        if text is not None:
            out.append(text)
    return "".join(out)


def _escape(char: str, line: Line, number: int, padding: int) -> str | None:
    """One escape's text, padded; None for an escape PostgreSQL does not know."""
    session = line.session
    blank = " " * abs(padding)
    if char in "aud":
        if session is None:
            return blank
        value = {"a": session.application_name, "u": session.user, "d": session.database}[char]
        return _pad(value or UNKNOWN, padding)
    if char == "h":
        return blank if session is None else _pad(session.remote_host, padding)
    if char == "r":
        if session is None:
            return blank
        port = f"({session.remote_port})" if session.remote_port else ""
        return _pad(session.remote_host + port, padding)
    if char == "L":
        return _pad(NO_LOCAL_ADDRESS if session is None else session.local_host, padding)
    if char in "iPv":  # no ps display, parallel leader or virtual transaction in pggate
        return blank
    render = _SIMPLE.get(char)
    return None if render is None else _pad(render(line, number), padding)


# The escapes that print the same inside and outside a session.
_SIMPLE: dict[str, Callable[[Line, int], str]] = {
    "b": lambda line, _: line.backend_type,
    "c": lambda line, _: line.session_id,
    "p": lambda line, _: str(line.pid),
    "l": lambda _, number: str(number),
    "m": lambda line, _: line.log_time,
    "t": lambda line, _: line.stamp(line.created, "%Y-%m-%d %H:%M:%S %Z"),
    "n": lambda line, _: f"{int(line.created)}.{line.millis:03d}",
    "s": lambda line, _: line.start_time,
    "x": lambda _line, _number: "0",  # GetTopTransactionIdIfAny(): none
    "e": lambda line, _: line.sqlstate,
    "Q": lambda _line, _number: "0",  # pgstat_get_my_query_id(): none
}
