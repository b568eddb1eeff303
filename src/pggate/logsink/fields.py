"""Who a log line is about: the session whose task logs it, or pggate's process itself.

PostgreSQL fills a line's per-session fields from ``MyProcPort`` (user, database, remote host
and port, application_name) and counts lines per process (elog.c:log_status_format's static
``log_line_number``, reset when ``MyProcPid`` changes; jsonlog.c keeps its own counter). In
PostgreSQL a session *is* a process; in pggate many sessions share one process, so each session
carries its own :class:`SessionFields` (made at accept, filled in as the login learns the
startup packet), and a line logged from a session's task finds them through the
:data:`SESSION` context variable. Lines logged outside any session (start, reload, shutdown,
the embedded cluster's watchdog) use :data:`PROCESS`, as PostgreSQL's postmaster lines do.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Protocol

# GetBackendTypeDesc() as get_backend_type_for_log() prints it (%b, jsonlog backend_type): a
# session's lines are those of PostgreSQL's "client backend"; pggate's own lines, outside any
# session, are the postmaster's (every serving process, supervisor or worker).
CLIENT_BACKEND = "client backend"
POSTMASTER = "postmaster"

_connections = itertools.count(1)


class StartupFacts(Protocol):
    """What a session's log fields read from its StartupMessage (proto.messages)."""

    @property
    def user(self) -> str: ...

    @property
    def database(self) -> str: ...

    @property
    def application_name(self) -> str | None: ...


def clean_ascii(text: str) -> str:
    """PostgreSQL 16+'s pg_clean_ascii as check_application_name applies it: every byte outside
    printable ASCII (32..126) becomes ``\\xNN`` (the UTF-8 bytes of a character, or the raw byte
    the client sent)."""
    if text.isascii() and text.isprintable():
        return text
    raw = text.encode("utf-8", "surrogateescape")
    return "".join(chr(b) if 32 <= b <= 126 else f"\\x{b:02x}" for b in raw)


@dataclass(slots=True, eq=False)
class LineCounters:
    """log_line_number of log_status_format (one per prefix written, DETAIL and HINT lines
    included) and of write_jsonlog (one per record)."""

    prefix_lines: int = 0
    json_lines: int = 0


@dataclass(slots=True, eq=False)
class SessionFields(LineCounters):
    """One client connection's ``MyProcPort`` and ``MyStartTime``, as its log lines show them.

    ``user``, ``database`` and ``application_name`` are None until the StartupMessage has been
    read (PostgreSQL's Port has no names before ProcessStartupPacket either).
    """

    remote_host: str = ""
    remote_port: str = ""
    local_host: str = ""
    start: float = 0.0  # wall-clock accept time: the session's MyStartTime
    number: int = 0  # this process's connection number, for the session id
    user: str | None = None
    database: str | None = None
    application_name: str = ""

    @classmethod
    def accepted(cls, host: str, port: str, sockname: object) -> SessionFields:
        """The fields of a connection just accepted from ``host``/``port`` on ``sockname`` (the
        transport's local address: a (host, port, ...) tuple, or a Unix socket's name)."""
        local = str(sockname[0]) if isinstance(sockname, tuple) and sockname else "[local]"
        return cls(
            remote_host=host,
            remote_port=port,
            local_host=local,
            start=time.time(),
            number=next(_connections),
        )

    def follow(self, remote_host: str, startup: StartupFacts | None) -> None:
        """What the login has learnt so far: the client's host name once ``log_hostname`` has
        resolved it, and the names of the StartupMessage once it has been read."""
        self.remote_host = remote_host
        if startup is not None and self.user is None:
            self.user = startup.user
            self.database = startup.database
            self.application_name = clean_ascii(startup.application_name or "")

    def session_id(self, pid: int) -> str:
        """%c and jsonlog's session_id. PostgreSQL prints ``%lx.%x`` of the backend's start
        time and PID; a pggate process serves many sessions, so the id is the session's start
        time, the process ID and the process's connection number, in hex: unique per
        connection, and its first two parts read like a PostgreSQL session id."""
        return f"{int(self.start):x}.{pid:x}.{self.number:x}"


@dataclass(slots=True, eq=False)
class ProcessFields(LineCounters):
    """The serving process's own ``MyStartTime`` and line counters, for lines outside any
    session; reset in a forked child (a worker), as log_status_format resets them when
    ``MyProcPid`` changes."""

    start: float = field(default_factory=time.time)

    def reset(self) -> None:
        self.prefix_lines = self.json_lines = 0
        self.start = time.time()

    @staticmethod
    def session_id(pid: int, start: float) -> str:
        """PostgreSQL's ``%lx.%x`` of the process's start time and PID."""
        return f"{int(start):x}.{pid:x}"


PROCESS = ProcessFields()
os.register_at_fork(after_in_child=PROCESS.reset)

# The session a task serves; set by the session's own task (server/session.py), so it never
# leaks into the listener or another session.
SESSION: contextvars.ContextVar[SessionFields | None] = contextvars.ContextVar(
    "pggate_log_session", default=None
)

# The LogRecord attribute (``extra=about(fields)``) naming the session of a line logged from
# a callback outside the session's task (the relay's end of a session).
RECORD_ATTRIBUTE = "log_session"


def about(fields: SessionFields) -> dict[str, object]:
    """``extra=`` for a line about ``fields``'s session, logged outside its task."""
    return {RECORD_ATTRIBUTE: fields}
