"""libpq connection strings for the ``backend`` setting.

pggate reads the same two forms libpq accepts (``key=value ...`` and ``postgresql://`` URIs) so
that a DBA can paste the conninfo they already use. Only the keys pggate acts on are kept; an
unknown key is an error, as it is for libpq.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from pggate.errors import ConfigError

# Keys pggate understands for its backend connection.
KNOWN_KEYS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "user",
        "dbname",
        "password",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "connect_timeout",
        "application_name",
    }
)


@dataclass(frozen=True, slots=True)
class BackendAddress:
    """Where and how pggate reaches its backend PostgreSQL."""

    host: str  # a directory (Unix socket) when it starts with '/'
    port: int
    user: str | None = None  # pggate's own role, used for catalog look-ups
    dbname: str | None = None
    password: str | None = None
    sslmode: str = "disable"
    connect_timeout: float = 10.0

    @property
    def is_unix_socket(self) -> bool:
        return self.host.startswith("/")

    @property
    def socket_path(self) -> str:
        return f"{self.host}/.s.PGSQL.{self.port}"

    def describe(self) -> str:
        """A log-safe description (never the password)."""
        if self.is_unix_socket:
            return f'Unix socket "{self.socket_path}"'
        return f'host "{self.host}" port {self.port}'


def parse_conninfo(text: str) -> dict[str, str]:
    """Split a libpq conninfo string (key/value or URI form) into a dict."""
    stripped = text.strip()
    if stripped.startswith(("postgresql://", "postgres://")):
        return _parse_uri(stripped)
    return _parse_keyword_value(stripped)


def _parse_uri(text: str) -> dict[str, str]:
    parts = urlsplit(text)
    result: dict[str, str] = {}
    if parts.username:
        result["user"] = unquote(parts.username)
    if parts.password:
        result["password"] = unquote(parts.password)
    host = parts.netloc.rpartition("@")[2]
    if host:
        name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if name and port.isdigit():
            result["host"], result["port"] = unquote(name).strip("[]"), port
        else:
            result["host"] = unquote(host).strip("[]")
    if parts.path.strip("/"):
        result["dbname"] = unquote(parts.path.lstrip("/"))
    result.update(parse_qsl(parts.query, keep_blank_values=True))
    return result


def _parse_keyword_value(text: str) -> dict[str, str]:
    result: dict[str, str] = {}
    pos, end = 0, len(text)
    while pos < end:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            break
        eq = text.find("=", pos)
        if eq < 0:
            raise ConfigError(f'missing "=" after "{text[pos:]}" in connection info string')
        key = text[pos:eq].strip()
        pos = eq + 1
        while pos < end and text[pos].isspace():
            pos += 1
        value_chars: list[str] = []
        if pos < end and text[pos] == "'":
            pos += 1
            while True:
                if pos >= end:
                    raise ConfigError("unterminated quoted string in connection info string")
                char = text[pos]
                if char == "\\" and pos + 1 < end:
                    value_chars.append(text[pos + 1])
                    pos += 2
                elif char == "'":
                    pos += 1
                    break
                else:
                    value_chars.append(char)
                    pos += 1
        else:
            while pos < end and not text[pos].isspace():
                if text[pos] == "\\" and pos + 1 < end:
                    pos += 1
                value_chars.append(text[pos])
                pos += 1
        result[key] = "".join(value_chars)
    return result


def backend_address(text: str, defaults: Mapping[str, str] | None = None) -> BackendAddress:
    """Validate a conninfo string and turn it into a BackendAddress."""
    values = dict(defaults or {})
    values.update(parse_conninfo(text))
    for key in values:
        if key not in KNOWN_KEYS:
            raise ConfigError(f'invalid connection option "{key}"', parameter="backend")
    host = values.get("hostaddr") or values.get("host") or "/var/run/postgresql"
    port_text = values.get("port") or "5432"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f'invalid port number: "{port_text}"', parameter="backend")
    sslmode = values.get("sslmode", "disable")
    if sslmode not in ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"):
        raise ConfigError(f'invalid sslmode value: "{sslmode}"', parameter="backend")
    timeout_text = values.get("connect_timeout", "10")
    try:
        timeout = float(timeout_text)
    except ValueError:
        raise ConfigError(
            f'invalid integer value "{timeout_text}" for connection option "connect_timeout"',
            parameter="backend",
        ) from None
    return BackendAddress(
        host=host,
        port=int(port_text),
        user=values.get("user") or None,
        dbname=values.get("dbname") or None,
        password=values.get("password") or None,
        sslmode=sslmode,
        connect_timeout=timeout if timeout > 0 else 10.0,
    )
