"""libpq connection strings for the ``backend`` setting.

pggate reads the same two forms libpq accepts (``key=value ...`` and ``postgresql://`` URIs) so
that a DBA can paste the conninfo they already use. Only the keys pggate acts on are kept; an
unknown key is an error, as it is for libpq.

Fail closed: every accepted keyword has its whole libpq meaning. What pggate cannot do yet (TLS
to a TCP backend, several hosts) is refused with a HINT rather than silently weakened: libpq's
default ``sslmode=prefer`` on TCP would try TLS first, so a TCP backend must say
``sslmode=disable`` explicitly. On a Unix socket libpq never uses TLS, and neither does pggate.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

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


DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_APPLICATION_NAME = "pggate"
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_BACKEND_HOP_HINT = (
    "TLS to the backend is not implemented yet; on a trusted network write sslmode=disable, "
    "or reach the backend over a Unix socket (host=/path/to/socket/dir)."
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
    # None: wait as long as the OS does (libpq's connect_timeout=0); pggate's default is 10 s.
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT
    application_name: str = DEFAULT_APPLICATION_NAME

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
    for pair in parts.query.split("&") if parts.query else ():
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(
                f'missing key/value separator "=" in URI query parameter: "{unquote(key)}"'
            )
        # libpq's conninfo_uri_decode: %XX only; a '+' stays a '+' (unlike HTML forms).
        result[unquote(key)] = unquote(value)
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
            # libpq quotes the rest of the string; only its first word, which may not be a
            # secret's neighbour, is shown here.
            word = text[pos:].split()[0]
            raise ConfigError(f'missing "=" after "{word}" in connection info string')
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


def _refuse(message: str, *, hint: str | None = None) -> ConfigError:
    return ConfigError(message, parameter="backend", hint=hint)


def _connect_timeout(text: str | None) -> float | None:
    """libpq's parse_int_param and its connect_timeout rule: <= 0 waits forever, 1 means 2."""
    if text is None:
        return DEFAULT_CONNECT_TIMEOUT
    stripped = text.strip()
    body = stripped[1:] if stripped[:1] in ("+", "-") else stripped
    if not (body.isascii() and body.isdigit()) or not -(2**31) <= int(stripped) < 2**31:
        raise _refuse(f'invalid integer value "{text}" for connection option "connect_timeout"')
    seconds = int(stripped)
    if seconds <= 0:
        return None
    return float(max(seconds, 2))


def backend_address(text: str, defaults: Mapping[str, str] | None = None) -> BackendAddress:
    """Validate a conninfo string and turn it into a BackendAddress, or refuse it."""
    values = dict(defaults or {})
    values.update(parse_conninfo(text))
    for key in values:
        if key not in KNOWN_KEYS:
            raise _refuse(f'invalid connection option "{key}"')
    for key in ("host", "hostaddr", "port"):
        if "," in values.get(key, ""):
            raise _refuse(
                f'several hosts or ports in "{key}" are not supported yet',
                hint="Name one backend host; multi-host failover is not implemented yet.",
            )
    hostaddr = values.get("hostaddr") or None
    if hostaddr is not None:
        try:
            ipaddress.ip_address(hostaddr)
        except ValueError:
            raise _refuse(f'could not parse network address "{hostaddr}"') from None
    host = hostaddr or values.get("host") or "/var/run/postgresql"
    port_text = values.get("port") or "5432"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _refuse(f'invalid port number: "{port_text}"')
    unix_socket = host.startswith("/")
    sslmode = values.get("sslmode")
    if sslmode is not None and sslmode not in SSLMODES:
        raise _refuse(f'invalid sslmode value: "{sslmode}"')
    if not unix_socket:
        if sslmode is None:
            raise _refuse(
                "a TCP backend without sslmode means libpq's sslmode=prefer, "
                "which pggate cannot honour",
                hint=_BACKEND_HOP_HINT,
            )
        if sslmode != "disable":
            raise _refuse(f'sslmode "{sslmode}" is not supported yet', hint=_BACKEND_HOP_HINT)
    # With sslmode=disable or on a Unix socket libpq never uses TLS, so its TLS files have no
    # effect there either; anywhere else they were refused with sslmode above.
    return BackendAddress(
        host=host,
        port=int(port_text),
        user=values.get("user") or None,
        dbname=values.get("dbname") or None,
        password=values.get("password") or None,
        sslmode="disable",
        connect_timeout=_connect_timeout(values.get("connect_timeout")),
        application_name=values.get("application_name") or DEFAULT_APPLICATION_NAME,
    )
