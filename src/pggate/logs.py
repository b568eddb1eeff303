"""pggate's server log, set up from the logging settings as PostgreSQL sets up its own.

Lines keep PostgreSQL's shape and words (``2026-12-08 00:31:28.325 UTC [8328] LOG:  ...`` with
the default ``log_line_prefix = '%m [%p] '`` and ``log_timezone = 'UTC'``): DBAs grep for
``FATAL:`` and ``connection authorized:``, and their habits and tools keep working. The
settings ``log_destination`` (stderr, jsonlog, syslog), ``log_line_prefix``, ``log_timezone``,
``syslog_facility``, ``syslog_ident``, ``syslog_sequence_numbers``, ``syslog_split_messages``
and pggate's ``log_file`` take effect at start (:func:`configure`) and on every reload
(:func:`reload`, which also reopens the files for logrotate); the mechanics are in
:mod:`pggate.logsink`. Before the configuration is read, and in the commands other than
``serve``, lines go to standard error with the defaults (:func:`setup_logging`).

Fail closed: a log file that cannot be opened, or syslog without a system logger, stops
``serve`` at start (FATAL, naming the file or the socket), is a problem for ``pggate check``
(:func:`problems`), and on reload is logged as an error while the previous destinations stay.
Secrets are never passed to the logger.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from pggate.errors import ConfigError
from pggate.logsink import SESSION, SessionFields, about, sqlstate_sent
from pggate.logsink.sink import Destinations, ServerLog, Sink, json_file_name
from pggate.logsink.syslog import DEFAULT_ADDRESS, SyslogSocket
from pggate.logsink.zones import ZoneRefused, find_zone
from pggate.pgtext import os_error_text

if TYPE_CHECKING:
    from pggate.config import Config

FATAL = logging.CRITICAL
LOGGER = "pggate"

log = logging.getLogger("pggate.logs")


@dataclass(frozen=True, slots=True)
class Plan:
    """Where lines go under one configuration; building it (:func:`open_sink`) opens them."""

    destinations: Destinations
    zone: tzinfo
    text_file: Path | None = None
    json_file: Path | None = None
    syslog: tuple[str, str] | None = None  # (syslog_facility, syslog_ident)


DEFAULT_PLAN = Plan(Destinations(), ZoneInfo("UTC"))

_handler: ServerLog | None = None
_plan: Plan = DEFAULT_PLAN


def plan(cfg: Config) -> Plan:
    """The destinations ``cfg`` asks for (its values were validated when it was loaded)."""
    try:
        zone = find_zone(cfg.log_timezone)
    except ZoneRefused:
        raise ConfigError(
            f'invalid value for parameter "log_timezone": "{cfg.log_timezone}"',
            parameter="log_timezone",
        ) from None
    chosen = cfg.log_destination
    destinations = Destinations(
        stderr="stderr" in chosen,
        jsonlog="jsonlog" in chosen,
        syslog="syslog" in chosen,
        line_prefix=cfg.log_line_prefix,
        sequence_numbers=cfg.syslog_sequence_numbers,
        split_messages=cfg.syslog_split_messages,
    )
    log_file = cfg.path(cfg.log_file) if cfg.log_file else None
    return Plan(
        destinations,
        zone,
        text_file=log_file if destinations.stderr else None,
        json_file=json_file_name(log_file) if log_file and destinations.jsonlog else None,
        syslog=(cfg.syslog_facility, cfg.syslog_ident) if destinations.syslog else None,
    )


def _file_error(path: Path, reason: str) -> ConfigError:
    """syslogger.c's logfile_open message."""
    return ConfigError(
        f'could not open log file "{path}": {reason}',
        parameter="log_file",
        hint="Set log_file to a file pggate can write, or to '' for standard error.",
    )


def _syslog_error(address: str, reason: str) -> ConfigError:
    return ConfigError(
        f'could not connect to the system logger at "{address}": {reason}',
        parameter="log_destination",
        hint='Start a syslog daemon, or remove "syslog" from log_destination.',
    )


def open_sink(chosen: Plan, syslog_address: str = DEFAULT_ADDRESS) -> Sink:
    """Open what ``chosen`` names: the files (created 0600, appended to) and the connection to
    the system logger; raises ConfigError naming what could not be opened."""
    syslog = None
    if chosen.syslog is not None:
        syslog = SyslogSocket(*chosen.syslog, address=syslog_address)
        try:
            syslog.connect()
        except OSError as exc:
            raise _syslog_error(syslog_address, os_error_text(exc)) from None
    try:
        return Sink(
            chosen.destinations,
            chosen.zone,
            text_file=chosen.text_file,
            json_file=chosen.json_file,
            syslog=syslog,
        )
    except OSError as exc:
        if syslog is not None:
            syslog.close()
        path = Path(exc.filename) if exc.filename else chosen.text_file or chosen.json_file
        raise _file_error(path or Path(), os_error_text(exc)) from None


def _install(sink: Sink, chosen: Plan) -> None:
    global _handler, _plan
    if _handler is None:
        _handler = ServerLog(sink)
        root = logging.getLogger(LOGGER)
        root.handlers[:] = [_handler]
        root.propagate = False
    else:
        _handler.replace(sink)
    _plan = chosen


def setup_logging(level: int = logging.INFO) -> None:
    """Send pggate's log to standard error in PostgreSQL's default format, until (and unless)
    ``serve`` configures its destinations."""
    global _handler
    previous, _handler = _handler, None
    if previous is not None:
        previous.close()
    _install(open_sink(DEFAULT_PLAN), DEFAULT_PLAN)
    logging.getLogger(LOGGER).setLevel(level)


def configure(cfg: Config) -> None:
    """``serve``'s start: put ``cfg``'s destinations in force; raises ConfigError (fatal)."""
    chosen = plan(cfg)
    _install(open_sink(chosen), chosen)


def reload(cfg: Config) -> None:
    """A reload (SIGHUP): ``cfg``'s destinations, every file opened again (so a file logrotate
    renamed is left behind and the name is created anew). What cannot be opened is logged as an
    error and the previous destinations stay. Nothing when this process never configured its
    destinations (a gateway driven in-process, as the unit tests do: their log capture stays)."""
    if _handler is None:
        return
    try:
        configure(cfg)
    except ConfigError as exc:
        report(log, logging.ERROR, exc)


def reopen() -> None:
    """The destinations in force, opened again (the supervisor of ``workers = N`` on SIGHUP:
    it reads no configuration, its workers do)."""
    chosen = _plan
    try:
        _install(open_sink(chosen), chosen)
    except ConfigError as exc:
        report(log, logging.ERROR, exc)


def _writable(path: Path) -> str | None:
    """Why ``path`` could not be opened for appending (strerror), without creating it."""
    if path.is_dir():
        return os_error_text(IsADirectoryError())
    if path.exists():
        return None if os.access(path, os.W_OK) else os_error_text(PermissionError())
    if not path.parent.is_dir():
        return os_error_text(FileNotFoundError())
    writable = os.access(path.parent, os.W_OK | os.X_OK)
    return None if writable else os_error_text(PermissionError())


def problems(cfg: Config, syslog_address: str = DEFAULT_ADDRESS) -> list[ConfigError]:
    """For ``pggate check``: what :func:`configure` would refuse, found without writing."""
    try:
        chosen = plan(cfg)
    except ConfigError as exc:
        return [exc]
    found: list[ConfigError] = []
    for path in (chosen.text_file, chosen.json_file):
        reason = None if path is None else _writable(path)
        if path is not None and reason is not None:
            found.append(_file_error(path, reason))
    if chosen.syslog is not None:
        probe = SyslogSocket(*chosen.syslog, address=syslog_address)
        try:
            probe.connect()
        except OSError as exc:
            found.append(_syslog_error(syslog_address, os_error_text(exc)))
        finally:
            probe.close()
    return found


def enter_session(fields: SessionFields) -> None:
    """Mark the calling task as serving ``fields``'s session: its lines carry the session's
    user, database, host, session id and line numbers (call it first thing in the task)."""
    SESSION.set(fields)


def report(logger: logging.Logger, level: int, err: BaseException) -> None:
    """Log an error with the DETAIL and HINT lines it carries (config and TLS errors do)."""
    extra = {name: getattr(err, name, None) for name in ("detail", "hint")}
    logger.log(level, "%s", err, extra=extra)


__all__ = [
    "FATAL",
    "LOGGER",
    "Plan",
    "SessionFields",
    "about",
    "configure",
    "enter_session",
    "open_sink",
    "plan",
    "problems",
    "reload",
    "reopen",
    "report",
    "setup_logging",
    "sqlstate_sent",
]
