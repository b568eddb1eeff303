"""File descriptors: what a serving process may need, and its open-files limit.

A connection flood must meet ``max_startup_connections`` (the oldest unauthenticated
connection is closed to make room) and ``max_connections`` (53300) before it meets the
process's open-files limit: an ``accept`` failing with EMFILE would refuse real clients too.
So at start pggate raises its soft ``RLIMIT_NOFILE`` to the hard limit, and refuses to start
(and a reload refuses the new values) when the settings could need more than that:

* 2 per connection awaiting authentication: the client's socket, and the backend connection
  of a catalog look-up (pg_hba.conf roles, a role's password verifier) or of a forwarded
  cancel request;
* 2 per session: the client's socket and its backend connection;
* one listen backlog per listening socket: connections accepted in one go before the ones
  they displace are closed;
* a reserve for the rest (the listening sockets themselves, the event loop, the log, the
  lock file, host-name look-ups, the embedded cluster's pipes).

Idle pooled backend connections (``pool_mode = session``) come on top; ``pool_size`` bounds
them per role, database and startup parameters.
"""

from __future__ import annotations

import resource
import sys

from pggate.config import Config
from pggate.errors import ConfigError

PER_STARTUP_CONNECTION = 2
PER_SESSION = 2
RESERVE = 64


def needed(cfg: Config, listeners: int, backlog: int) -> int:
    """The most descriptors ``cfg`` may need with ``listeners`` sockets of ``backlog``."""
    return (
        PER_STARTUP_CONNECTION * cfg.max_startup_connections
        + PER_SESSION * cfg.max_connections
        + backlog * max(listeners, 1)
        + RESERVE
    )


def raise_limit() -> int:
    """Raise the soft open-files limit to the hard one (an unlimited hard limit leaves the
    soft one as it is); returns the soft limit in force (``sys.maxsize``: unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return sys.maxsize
    if hard != resource.RLIM_INFINITY and hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            return soft
        return hard
    return soft


def check(cfg: Config, listeners: int, backlog: int) -> None:
    """Raise :class:`ConfigError` naming ``max_startup_connections`` when ``cfg`` could need
    more descriptors than this process may open (after :func:`raise_limit`)."""
    need = needed(cfg, listeners, backlog)
    allowed = raise_limit()
    if need <= allowed:
        return
    raise ConfigError(
        f"max_startup_connections ({cfg.max_startup_connections}) and max_connections "
        f"({cfg.max_connections}) need more file descriptors than this process may open",
        parameter="max_startup_connections",
        detail=(
            f"System allows {allowed}, pggate needs at least {need}: "
            f"{PER_STARTUP_CONNECTION} per connection awaiting authentication, {PER_SESSION} "
            f"per session, {backlog} per listening socket and {RESERVE} in reserve."
        ),
        hint="Lower max_startup_connections or max_connections, or raise the open-files "
        "limit (ulimit -Hn, systemd's LimitNOFILE).",
    )


__all__ = ["check", "needed", "raise_limit"]
