"""The mechanics of pggate's server log, PostgreSQL's elog.c output side.

``fields`` (who a line is about: a session's MyProcPort, or the process), ``prefix``
(log_line_prefix), ``jsonlog`` (jsonlog.c's object), ``syslog`` (write_syslog and the socket to
the system logger), ``zones`` (log_timezone names), ``replies`` (a FATAL line's SQLSTATE), and
``sink`` (the handler that writes each record to the destinations). :mod:`pggate.logs` builds
them from the settings; nothing here reads a Config.
"""

from __future__ import annotations

from pggate.logsink.fields import SESSION, SessionFields, about
from pggate.logsink.replies import sqlstate_sent

__all__ = ["SESSION", "SessionFields", "about", "sqlstate_sent"]
