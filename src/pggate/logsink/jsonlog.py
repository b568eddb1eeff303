"""One log record as PostgreSQL 18's ``jsonlog`` writes it (jsonlog.c: write_jsonlog).

The same keys, in the same order, with the same rule for absent values: a key whose value the
process does not have is left out, as appendJSONKeyValue leaves out a NULL. ``user`` and
``dbname`` appear once a session's StartupMessage has been read, ``remote_host`` and
``remote_port`` for a session's lines, ``application_name`` when a session set one. pggate has
no ps display, virtual transaction or parallel leader (``ps``, ``vxid``, ``leader_pid`` are
left out) and no transaction or query: ``txid`` and ``query_id`` are 0, as in PostgreSQL's
postmaster lines. ``internal_query``, ``context``, ``statement`` and the source location never
apply to pggate's messages. One key is pggate's own: ``backtrace``, the Python traceback of an
internal error (PostgreSQL writes backtraces to the stderr format only).

Strings are escaped as escape_json does (``"``, ``\\``, and control characters; nothing else),
numbers written bare; no spaces. The caller ends the line with a newline.
"""

from __future__ import annotations

import json

from pggate.logsink.prefix import Line


def _string(value: str) -> str:
    """escape_json: the same escapes as JSON's minimal set, UTF-8 (and raw bytes) unescaped."""
    return json.dumps(value, ensure_ascii=False)


def json_record(
    line: Line,
    number: int,
    *,
    severity: str,
    message: str,
    detail: str | None,
    hint: str | None,
    backtrace: str | None,
) -> str:
    """The JSON object of one record, ``number`` being its ``line_num``."""
    session = line.session
    parts = [f'{{"timestamp":{_string(line.log_time)}']
    if session is not None and session.user is not None:
        parts.append(f'"user":{_string(session.user)}')
    if session is not None and session.database is not None:
        parts.append(f'"dbname":{_string(session.database)}')
    parts.append(f'"pid":{line.pid}')
    if session is not None and session.remote_host:
        parts.append(f'"remote_host":{_string(session.remote_host)}')
        port = session.remote_port
        if port:
            # PostgreSQL writes the port unquoted (a number).
            parts.append(f'"remote_port":{port if port.isdigit() else _string(port)}')
    parts.append(f'"session_id":{_string(line.session_id)}')
    parts.append(f'"line_num":{number}')
    parts.append(f'"session_start":{_string(line.start_time)}')
    parts.append('"txid":0')
    parts.append(f'"error_severity":{_string(severity)}')
    parts.append(f'"state_code":{_string(line.sqlstate)}')
    parts.append(f'"message":{_string(message)}')
    if detail:
        parts.append(f'"detail":{_string(detail)}')
    if hint:
        parts.append(f'"hint":{_string(hint)}')
    if backtrace:
        parts.append(f'"backtrace":{_string(backtrace)}')
    if session is not None and session.application_name:
        parts.append(f'"application_name":{_string(session.application_name)}')
    parts.append(f'"backend_type":{_string(line.backend_type)}')
    parts.append('"query_id":0')
    return ",".join(parts) + "}"
