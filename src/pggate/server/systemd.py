"""systemd's two service protocols, in the standard library only: notifications to the service
manager (sd_notify(3)) and socket activation (sd_listen_fds(3)).

**Notifications.** Under ``Type=notify`` / ``Type=notify-reload`` (systemd.service(5)) systemd
puts the path of a datagram socket in ``$NOTIFY_SOCKET``; a service sends it newline-separated
``NAME=value`` fields: ``READY=1`` once it serves, ``RELOADING=1`` with ``MONOTONIC_USEC=`` (the
CLOCK_MONOTONIC time in µs, which systemd 253+ compares with the time it sent the reload
signal) when a reload starts, ``READY=1`` again when it is done, ``STOPPING=1`` when shutdown
starts, and ``STATUS=`` lines for ``systemctl status``. libsystemd's implementation is a few
lines over a socket, so pggate does not depend on it. pggate takes the variable out of its
environment at start (:func:`claim_notify_socket`, sd_notify's ``unset_environment``): the
embedded PostgreSQL is pggate's child, and a PostgreSQL built with systemd support (Debian's)
would otherwise announce its own ``READY=1`` on pggate's socket. A failed send never reaches
the server: it is logged (WARNING the first time, DEBUG after) and pggate goes on serving.

**Socket activation.** systemd passes listening sockets as descriptors 3, 4, ... with
``LISTEN_PID`` (the process they are for), ``LISTEN_FDS`` (how many) and optionally
``LISTEN_FDNAMES`` (colon-separated names). :func:`listen_fds` follows sd_listen_fds(3) with
``unset_environment = 1``: the variables are removed once read, so no child inherits them;
variables meant for another process are ignored. Unlike sd_listen_fds, each descriptor is then
checked, and pggate refuses to start (fail closed) unless every one is a listening TCP socket:
pggate serves TCP/IP only (its pg_hba.conf matching never sees a Unix-domain client, so a
``local`` line could not apply), and serving fewer sockets than the socket unit asked for would
silently drop a door the operator configured.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import time
from collections.abc import MutableMapping
from dataclasses import dataclass

from pggate.errors import ConfigError

log = logging.getLogger("pggate.systemd")

SD_LISTEN_FDS_START = 3  # sd-daemon.h: the first passed descriptor
SEND_TIMEOUT = 2.0  # seconds a notification may wait for room in systemd's socket queue
_FIELD_NAME = re.compile(r"[A-Z0-9_]+\Z")
_UNKNOWN_NAME = "unknown"  # what sd_listen_fds_with_names() reports without LISTEN_FDNAMES

_ENV_NOTIFY = "NOTIFY_SOCKET"
_ENV_LISTEN = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


# -- notifications (sd_notify(3)) --------------------------------------------------------------


def message(*fields: str) -> bytes:
    """One notification datagram: ``NAME=value`` fields, one per line, in UTF-8.

    A value is one line by definition (a newline would start a new field), so newlines in a
    value (a directory name may hold one) become spaces; undecodable bytes (surrogate escapes
    from the file system) are replaced, since systemd drops a STATUS that is not valid UTF-8.
    A field without ``NAME=`` is a programming error (ValueError)."""
    lines: list[str] = []
    for field in fields:
        name, sep, value = field.partition("=")
        if not sep or not _FIELD_NAME.match(name):
            raise ValueError(f"not a notification field: {field!r}")
        lines.append(f"{name}={' '.join(value.splitlines())}")
    return "\n".join(lines).encode("utf-8", "replace")


def notify_address(value: str) -> str:
    """``$NOTIFY_SOCKET`` as an AF_UNIX address: an absolute path, or ``@name`` for the
    abstract namespace (``\\0name``). Anything else (systemd 254's ``vsock:``, a relative
    path) is a ValueError naming what was given."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    raise ValueError(f'unsupported NOTIFY_SOCKET "{value}" (an absolute path or @name expected)')


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in µs, the clock of ``MONOTONIC_USEC=`` (sd_notify(3))."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class _NotifySocket:
    """Where notifications go: ``$NOTIFY_SOCKET`` as read (and removed) at start."""

    def __init__(self) -> None:
        self.claimed = False
        self.value: str | None = None
        self.failed = False  # a send has failed already: later failures log at DEBUG only

    def current(self) -> str | None:
        return self.value if self.claimed else os.environ.get(_ENV_NOTIFY)


_target = _NotifySocket()


def claim_notify_socket(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Take ``$NOTIFY_SOCKET`` out of the environment (``environ``, default os.environ) and
    keep it for :func:`notify`; returns it (None when pggate does not run under systemd)."""
    env = os.environ if environ is None else environ
    _target.value = env.pop(_ENV_NOTIFY, None) or None
    _target.claimed = True
    _target.failed = False
    return _target.value


def notify(*fields: str) -> bool:
    """Send ``fields`` as one datagram to the service manager (sd_notify(3)); True when sent.

    Without ``$NOTIFY_SOCKET`` this does nothing. Any failure (no such socket, a full queue
    for SEND_TIMEOUT, a malformed address) is logged, at WARNING the first time, and never
    raised: a notification is a courtesy to the service manager, not a reason to stop
    serving."""
    value = _target.current()
    if not value:
        return False
    try:
        data = message(*fields)
        address = notify_address(value)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendto(data, address)
    except (OSError, ValueError) as exc:
        level = logging.DEBUG if _target.failed else logging.WARNING
        _target.failed = True
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        log.log(level, 'could not send notification to "%s": %s', value, reason)
        return False
    return True


# -- socket activation (sd_listen_fds(3)) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListenEnv:
    """What the LISTEN_* variables said: the descriptors passed to this process and their
    names; ``ignored`` says why variables that were there are not for this process."""

    fds: tuple[int, ...] = ()
    names: tuple[str, ...] = ()
    ignored: str | None = None


def take_listen_env(environ: MutableMapping[str, str], pid: int) -> ListenEnv:
    """sd_listen_fds_with_names(unset_environment = 1) without the descriptors themselves:
    parse LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES for process ``pid`` and remove all three
    from ``environ`` whatever they say.

    As sd_listen_fds: no LISTEN_PID, or one naming another process, means no sockets for us
    (``ignored`` says so, for a log line). Unlike it, a malformed value is fatal
    (ConfigError) rather than a return code the caller could overlook: pggate must not start
    without sockets it was given."""
    pid_text, count_text, names_text = (environ.pop(name, None) for name in _ENV_LISTEN)
    if count_text is None and pid_text is None:
        return ListenEnv()
    if pid_text is None:
        return ListenEnv(ignored="LISTEN_FDS is set but LISTEN_PID is not")
    listen_pid = _number("LISTEN_PID", pid_text)
    if listen_pid == 0:
        raise ConfigError(f'invalid LISTEN_PID "{pid_text}" from systemd')
    if listen_pid != pid:
        return ListenEnv(ignored=f"LISTEN_PID is {listen_pid}, not this process ({pid})")
    count = _number("LISTEN_FDS", count_text if count_text is not None else "0")
    fds = tuple(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))
    if names_text is None:
        return ListenEnv(fds, (_UNKNOWN_NAME,) * count)
    names = tuple(names_text.split(":")) if count else ()
    if len(names) != count:
        raise ConfigError(
            f'LISTEN_FDNAMES "{names_text}" names {len(names)} sockets but LISTEN_FDS is {count}'
        )
    return ListenEnv(fds, tuple(name or _UNKNOWN_NAME for name in names))


def _number(name: str, text: str) -> int:
    """A non-negative decimal, as systemd writes these variables (safe_atou)."""
    if not text.isascii() or not text.isdigit():
        raise ConfigError(f'invalid {name} "{text}" from systemd')
    return int(text)


@dataclass(frozen=True, slots=True)
class PassedSocket:
    """A listening socket systemd passed: the socket, its descriptor number, its name (the
    socket unit's FileDescriptorName=, by default the unit's name)."""

    sock: socket.socket
    fd: int
    name: str


_HINT = "pggate.socket must use ListenStream= with an address and port, and Accept=no."


def adopt(fd: int, name: str = _UNKNOWN_NAME) -> PassedSocket:
    """Descriptor ``fd`` as a listening TCP socket, close-on-exec (as sd_listen_fds sets it),
    or ConfigError saying what it is instead."""
    where = f"file descriptor {fd} passed by systemd"
    if name != _UNKNOWN_NAME:
        where += f' ("{name}")'
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        what = {errno.EBADF: "is not open", errno.ENOTSOCK: "is not a socket"}.get(
            exc.errno or 0, f"cannot be used: {exc.strerror}"
        )
        raise ConfigError(f"{where} {what}", hint=_HINT) from None
    problem = _not_listening_tcp(sock)
    if problem is not None:
        sock.detach()  # the descriptor stays as it was; the process is about to exit
        raise ConfigError(f"{where} {problem}", hint=_HINT)
    sock.set_inheritable(False)
    return PassedSocket(sock, fd, name)


def _not_listening_tcp(sock: socket.socket) -> str | None:
    if sock.family == socket.AF_UNIX:
        return "is a Unix-domain socket; pggate serves TCP/IP only"
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return f"is not a TCP/IP socket (address family {sock.family})"
    if sock.type != socket.SOCK_STREAM:
        return "is not a stream socket (a datagram socket: ListenDatagram=?)"
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        return "is not listening (Accept=yes passes connections, not listening sockets)"
    return None


def listen_fds(environ: MutableMapping[str, str] | None = None) -> list[PassedSocket]:
    """The listening sockets systemd passed to this process (none when not socket-activated),
    each checked by :func:`adopt`; the LISTEN_* variables are removed from ``environ``
    (default os.environ) in every case."""
    env = os.environ if environ is None else environ
    passed = take_listen_env(env, os.getpid())
    if passed.ignored is not None:
        log.warning("ignoring the LISTEN_FDS sockets: %s", passed.ignored)
    return [adopt(fd, name) for fd, name in zip(passed.fds, passed.names, strict=True)]


__all__ = [
    "ListenEnv",
    "PassedSocket",
    "adopt",
    "claim_notify_socket",
    "listen_fds",
    "message",
    "monotonic_usec",
    "notify",
    "notify_address",
    "take_listen_env",
]
