"""Server log lines in PostgreSQL's shape: ``TIMESTAMP [PID] LEVEL:  message``.

DBAs grep PostgreSQL logs for ``FATAL:`` and ``connection authorized:``; pggate writes the same
words so those habits and tools keep working. Secrets are never passed to the logger.
"""

from __future__ import annotations

import logging
import sys
import time

FATAL = logging.CRITICAL
_LEVEL_NAMES = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "LOG",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "FATAL",
}


class PostgresStyleFormatter(logging.Formatter):
    """Format records like PostgreSQL's default ``log_line_prefix = '%m [%p] '``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.created))
        millis = int(record.msecs)
        level = _LEVEL_NAMES.get(record.levelno, record.levelname)
        text = f"{stamp}.{millis:03d} UTC [{record.process}] {level}:  {record.getMessage()}"
        for field in ("detail", "hint"):
            value = getattr(record, field, None)
            if value:
                text += f"\n{stamp}.{millis:03d} UTC [{record.process}] {field.upper()}:  {value}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(level: int = logging.INFO) -> None:
    """Send pggate's log to stderr in PostgreSQL's format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PostgresStyleFormatter())
    root = logging.getLogger("pggate")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def report(logger: logging.Logger, level: int, err: BaseException) -> None:
    """Log an error with the DETAIL and HINT lines it carries (config and TLS errors do)."""
    extra = {name: getattr(err, name, None) for name in ("detail", "hint")}
    logger.log(level, "%s", err, extra=extra)
