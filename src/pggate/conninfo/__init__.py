"""libpq connection strings for the ``backend`` setting.

pggate reads the same two forms libpq 18 accepts (``key=value ...`` and ``postgresql://``
URIs), with libpq's exact parsing and its error texts, so that a DBA can paste the conninfo
they already use. Every libpq keyword is recognized; an unknown one is an error, as it is for
libpq, and a libpq keyword pggate does not act on is refused by name (fail closed).

- ``parse``: the parser (PQconninfoParse), ``parse_conninfo``.
- ``model``: the frozen model, ``BackendTarget`` (the whole conninfo, one ``HostSpec`` per
  host) and ``BackendAddress`` (one endpoint and its settings).
- ``validate``: ``backend_target``, pqConnectOptions2's checks and libpq's connect-time ones.
- ``address``: ``backend_address``, today's single-host, no-TLS-on-TCP entry point.
- ``pgpass`` (pure) and ``passfile`` (reads the file): the password file.

Nothing here does I/O except ``passfile.read_pgpass`` and ``passfile.default_passfile``.
"""

from __future__ import annotations

from pggate.conninfo.address import ADDRESS_KEYWORDS, backend_address
from pggate.conninfo.keywords import (
    DEFAULT_PORT,
    DEFAULT_SOCKET_DIR,
    LIBPQ_KEYWORDS,
    NOT_SUPPORTED,
    SECRET_KEYWORDS,
)
from pggate.conninfo.model import (
    AUTH_METHODS,
    DEFAULT_APPLICATION_NAME,
    DEFAULT_CONNECT_TIMEOUT,
    SSLMODES,
    BackendAddress,
    BackendSettings,
    BackendTarget,
    HostSpec,
    RequireAuth,
    TcpSettings,
    TlsSettings,
)
from pggate.conninfo.parse import parse_conninfo
from pggate.conninfo.passfile import default_passfile, read_pgpass
from pggate.conninfo.pgpass import PgpassEntry, lookup_password, parse_pgpass
from pggate.conninfo.validate import backend_target, unsupported_by_pggate

KNOWN_KEYS = ADDRESS_KEYWORDS  # the name this set had before the package

__all__ = [
    "ADDRESS_KEYWORDS",
    "AUTH_METHODS",
    "DEFAULT_APPLICATION_NAME",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_PORT",
    "DEFAULT_SOCKET_DIR",
    "KNOWN_KEYS",
    "LIBPQ_KEYWORDS",
    "NOT_SUPPORTED",
    "SECRET_KEYWORDS",
    "SSLMODES",
    "BackendAddress",
    "BackendSettings",
    "BackendTarget",
    "HostSpec",
    "PgpassEntry",
    "RequireAuth",
    "TcpSettings",
    "TlsSettings",
    "backend_address",
    "backend_target",
    "default_passfile",
    "lookup_password",
    "parse_conninfo",
    "parse_pgpass",
    "read_pgpass",
    "unsupported_by_pggate",
]
