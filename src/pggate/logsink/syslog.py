"""``log_destination = syslog``: PostgreSQL's write_syslog (elog.c), and a socket to the system
logger that speaks like glibc's syslog(3).

What is sent is the stderr-format text of the record (prefix, message, DETAIL and HINT lines),
as send_message_to_server_log hands it to write_syslog. With ``syslog_split_messages`` (the
default) a message that has a newline — every one does, each line ends in one — or is longer
than PG_SYSLOG_LIMIT (900 bytes) is sent line by line, long lines cut at a word boundary within
900 bytes, never inside a UTF-8 character, each piece as its own syslog message tagged
``[seq-n] `` (``[n] `` without ``syslog_sequence_numbers``); otherwise one message tagged
``[seq] ``. ``seq`` counts messages per process, across reloads.

openlog(ident, LOG_PID | LOG_NDELAY, facility) then syslog(3) send one datagram per message to
``/dev/log``: ``<PRI>Mmm dd hh:mm:ss ident[pid]: text``, PRI being facility + level
(RFC 3164, local time). :class:`SyslogSocket` does the same with a socket of its own, so that
the facility, ident and the connection itself follow a reload, and so that tests can point it
at a socket of theirs. A failed send is retried once on a new connection, then dropped, as
syslog(3) drops it.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time

PG_SYSLOG_LIMIT = 900
DEFAULT_ADDRESS = "/dev/log"

# <syslog.h>: LOG_LOCAL0 .. LOG_LOCAL7 are 16..23, shifted into the facility bits.
FACILITIES = {f"local{n}": (16 + n) << 3 for n in range(8)}
_LOG_CRIT, _LOG_ERR, _LOG_WARNING, _LOG_NOTICE, _LOG_INFO, _LOG_DEBUG = 2, 3, 4, 5, 6, 7
# write_syslog's static seq: one count per process, across reloads (a worker goes on from the
# supervisor's count, as a PostgreSQL backend from the postmaster's).
_sequence = itertools.count(1)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def syslog_level(levelno: int) -> int:
    """send_message_to_server_log's mapping: DEBUGn → LOG_DEBUG, LOG → LOG_INFO, WARNING →
    LOG_NOTICE, ERROR → LOG_WARNING, FATAL → LOG_ERR (PANIC, which pggate never logs, would be
    LOG_CRIT)."""
    if levelno >= logging.CRITICAL:
        return _LOG_ERR
    if levelno >= logging.ERROR:
        return _LOG_WARNING
    if levelno >= logging.WARNING:
        return _LOG_NOTICE
    if levelno >= logging.INFO:
        return _LOG_INFO
    return _LOG_DEBUG


def _clip(data: bytes, length: int) -> int:
    """pg_mbcliplen for UTF-8: the longest prefix of ``data[:length]`` that does not end
    inside a character (continuation bytes are 0b10xxxxxx)."""
    if length >= len(data):
        return length
    start = length
    while start > 0 and data[start] & 0xC0 == 0x80 and length - start < 3:
        start -= 1
    return start if data[start] & 0xC0 != 0x80 else length


def messages(text: str, seq: int, *, split: bool, sequence_numbers: bool) -> list[bytes]:
    """The syslog messages write_syslog sends for ``text``, the ``seq``-th message."""
    line = text.encode("utf-8", "surrogateescape")
    if not (split and (len(line) > PG_SYSLOG_LIMIT or b"\n" in line)):
        tag = f"[{seq}] " if sequence_numbers else ""
        return [tag.encode() + line]
    out: list[bytes] = []
    chunk = 0
    while line:
        if line[:1] == b"\n":
            line = line[1:]
            continue
        newline = line.find(b"\n")
        length = min(newline if newline >= 0 else len(line), PG_SYSLOG_LIMIT)
        length = _clip(line, length)
        if length <= 0:
            break
        if length < len(line) and not line[length : length + 1].isspace():
            cut = length - 1  # try to divide at a word boundary
            while cut > 0 and not line[cut : cut + 1].isspace():
                cut -= 1
            if cut > 0:
                length = cut
        chunk += 1
        tag = f"[{seq}-{chunk}] " if sequence_numbers else f"[{chunk}] "
        out.append(tag.encode() + line[:length])
        line = line[length:]
    return out


def header(priority: int, ident: str, pid: int, now: float) -> bytes:
    """glibc's ``<PRI>Mmm dd hh:mm:ss ident[pid]: `` (``%h %e %T``, local time)."""
    moment = time.localtime(now)
    stamp = (
        f"{_MONTHS[moment.tm_mon - 1]} {moment.tm_mday:2d} "
        f"{moment.tm_hour:02d}:{moment.tm_min:02d}:{moment.tm_sec:02d}"
    )
    return f"<{priority}>{stamp} {ident}[{pid}]: ".encode("utf-8", "surrogateescape")


class SyslogSocket:
    """A datagram connection to the system logger (glibc's openlog with LOG_NDELAY)."""

    def __init__(self, facility: str, ident: str, address: str = DEFAULT_ADDRESS) -> None:
        self.facility = FACILITIES[facility]
        self.ident = ident
        self.address = address
        self._sock: socket.socket | None = None

    def connect(self) -> None:
        """Open the connection now; raises OSError when no logger listens at the address."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.set_inheritable(False)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        self.close()
        self._sock = sock

    def send(self, levelno: int, text: str, *, split: bool, sequence_numbers: bool) -> None:
        """write_syslog(level, text); ``text`` is the record's stderr-format text."""
        seq = next(_sequence)
        head = header(self.facility | syslog_level(levelno), self.ident, os.getpid(), time.time())
        for body in messages(text, seq, split=split, sequence_numbers=sequence_numbers):
            self._send(head + body)

    def _send(self, datagram: bytes) -> None:
        for _ in range(2):
            try:
                if self._sock is None:
                    self.connect()
                assert self._sock is not None
                self._sock.send(datagram)
                return
            except OSError:
                self.close()  # the logger restarted, or is gone: reconnect once, else drop

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
