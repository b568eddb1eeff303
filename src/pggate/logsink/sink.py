"""Where pggate's log records go: elog.c's send_message_to_server_log for pggate.

One :class:`ServerLog` handler sits on the ``pggate`` logger. For each record it builds what
the configured destinations need, once: the stderr-format text (``log_line_prefix`` before the
message and before each DETAIL and HINT line, continuation lines indented with a tab as
append_with_tabs does) for ``stderr`` and ``syslog``, and the JSON object for ``jsonlog``. It
then writes syslog first, jsonlog, then stderr, as PostgreSQL does.

Without ``log_file``, stderr and jsonlog lines go to standard error (PostgreSQL without
logging_collector writes jsonlog as stderr lines; pggate writes the JSON itself). With
``log_file``, stderr lines are appended to that file and jsonlog lines to the file of the same
name ending in ``.json`` (``.log`` replaced, else appended: syslogger.c's logfile_getname).
Each record is one write(2) on a descriptor opened with O_APPEND, so the processes of
``workers = N`` can share the files without cutting each other's lines. A new :class:`Sink` is
built on every start and reload (which reopens the files, for logrotate) and swapped in with
one assignment; a write error is ignored, as write_console ignores it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path

from pggate.logsink import fields
from pggate.logsink.jsonlog import json_record
from pggate.logsink.prefix import Line, expand
from pggate.logsink.syslog import SyslogSocket

DEFAULT_PREFIX = "%m [%p] "
# errstart's default SQLSTATE by level, for a record that names none.
_SUCCESSFUL_COMPLETION, _WARNING, _INTERNAL_ERROR = "00000", "01000", "XX000"
_TRACEBACKS = logging.Formatter()


def severity(levelno: int) -> str:
    """error_severity() for a :mod:`logging` level: pggate's INFO is PostgreSQL's LOG and its
    CRITICAL is FATAL; every DEBUGn is written DEBUG."""
    if levelno >= logging.CRITICAL:
        return "FATAL"
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno >= logging.WARNING:
        return "WARNING"
    if levelno >= logging.INFO:
        return "LOG"
    return "DEBUG"


def default_sqlstate(levelno: int) -> str:
    """errstart: ERRCODE_INTERNAL_ERROR from ERROR up, ERRCODE_WARNING for WARNING,
    ERRCODE_SUCCESSFUL_COMPLETION below."""
    if levelno >= logging.ERROR:
        return _INTERNAL_ERROR
    if levelno >= logging.WARNING:
        return _WARNING
    return _SUCCESSFUL_COMPLETION


def json_file_name(path: Path) -> Path:
    """logfile_getname(..., ".json"): ``.log`` replaced by ``.json``, else ``.json`` added."""
    name = path.name
    stem = name[:-4] if len(name) > 4 and name.endswith(".log") else name
    return path.with_name(stem + ".json")


def _encode(text: str) -> bytes:
    """The bytes PostgreSQL would write: UTF-8, a client's raw bytes as they came."""
    return text.encode("utf-8", "surrogateescape")


def _with_tabs(text: str) -> str:
    """append_with_tabs: a tab after every newline, so no continuation looks like a line."""
    return text.replace("\n", "\n\t")


class Output:
    """One place lines are written to: standard error, or a file opened for appending."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.fd: int | None = None
        if path is not None:
            # PostgreSQL's log_file_mode default, 0600; O_APPEND: each write lands at the end.
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self.fd = os.open(path, flags, 0o600)

    def write(self, data: bytes) -> None:
        fd = self.fd
        if fd is None:
            try:
                fd = sys.stderr.fileno()
            except (AttributeError, ValueError, OSError):  # stderr replaced by a text buffer
                sys.stderr.write(data.decode("utf-8", "surrogateescape"))
                sys.stderr.flush()
                return
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError:
            pass  # as write_console: nowhere better to complain

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class Destinations:
    """The logging settings in force (log_destination and friends, already validated)."""

    stderr: bool = True
    jsonlog: bool = False
    syslog: bool = False
    line_prefix: str = DEFAULT_PREFIX
    sequence_numbers: bool = True
    split_messages: bool = True


class Sink:
    """The destinations of one configuration, with their open files and syslog connection."""

    def __init__(
        self,
        destinations: Destinations,
        zone: tzinfo,
        *,
        text_file: Path | None = None,
        json_file: Path | None = None,
        syslog: SyslogSocket | None = None,
    ) -> None:
        self.destinations = destinations
        self.zone = zone
        self.syslog = syslog
        self.text_out: Output | None = None
        self.json_out: Output | None = None
        try:
            if destinations.stderr:
                self.text_out = Output(text_file)
            if destinations.jsonlog:
                self.json_out = Output(json_file)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        for output in (self.text_out, self.json_out):
            if output is not None:
                output.close()
        if self.syslog is not None:
            self.syslog.close()

    def write(self, record: logging.LogRecord) -> None:
        """send_message_to_server_log for one record."""
        dest = self.destinations
        session: fields.SessionFields | None = getattr(record, fields.RECORD_ATTRIBUTE, None)
        if session is None:
            session = fields.SESSION.get()
        counters: fields.LineCounters = fields.PROCESS if session is None else session
        sqlstate = getattr(record, "sqlstate", None) or default_sqlstate(record.levelno)
        line = Line(
            created=record.created,
            millis=int(record.msecs),
            zone=self.zone,
            pid=record.process or os.getpid(),
            process_start=fields.PROCESS.start,
            sqlstate=sqlstate,
            session=session,
        )
        level = severity(record.levelno)
        message = record.getMessage()
        detail: str | None = getattr(record, "detail", None)
        hint: str | None = getattr(record, "hint", None)
        backtrace = None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = _TRACEBACKS.formatException(record.exc_info)
            backtrace = record.exc_text
        text = ""
        if dest.stderr or dest.syslog:
            lines = [(f"{level}:  ", message)]
            lines += [
                (label, body) for label, body in (("DETAIL:  ", detail), ("HINT:  ", hint)) if body
            ]
            for label, body in lines:
                counters.prefix_lines += 1
                prefix = expand(dest.line_prefix, line, counters.prefix_lines)
                text += prefix + label + _with_tabs(body) + "\n"
            if backtrace:
                text += backtrace + "\n"
        if self.syslog is not None:
            self.syslog.send(
                record.levelno,
                text,
                split=dest.split_messages,
                sequence_numbers=dest.sequence_numbers,
            )
        if self.json_out is not None:
            counters.json_lines += 1
            obj = json_record(
                line,
                counters.json_lines,
                severity=level,
                message=message,
                detail=detail,
                hint=hint,
                backtrace=backtrace,
            )
            self.json_out.write(_encode(obj + "\n"))
        if self.text_out is not None:
            self.text_out.write(_encode(text))


class ServerLog(logging.Handler):
    """The ``pggate`` logger's one handler; :attr:`sink` is replaced whole on reconfiguration
    (Handler.handle holds the handler's lock around each record, so the line counters and the
    syslog sequence of a process advance one record at a time, threads included)."""

    def __init__(self, sink: Sink) -> None:
        super().__init__()
        self.sink = sink

    def replace(self, sink: Sink) -> None:
        """Swap in ``sink`` and close the previous one's files and connection."""
        with self.lock or contextlib.nullcontext():
            previous, self.sink = self.sink, sink
        if previous is not sink:
            previous.close()

    def close(self) -> None:
        """Close the files and the syslog connection (logging.shutdown at exit calls this)."""
        with self.lock or contextlib.nullcontext():
            self.sink.close()
        super().close()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.write(record)
        except Exception:
            self.handleError(record)
