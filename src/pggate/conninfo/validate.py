"""From parsed keywords to a BackendTarget: libpq 18's pqConnectOptions2, and the checks libpq
makes only when it connects (port numbers, hostaddr, the integer options), all at once.

Every refusal uses libpq's text; a value that may hold part of a secret (``Parsed.hidden``)
is left out of it. pggate also refuses, when the conninfo is read, a few combinations with
which libpq would fail every connection to a host (libpq's text where it has one, and a
DETAIL saying why): ``gssencmode=require`` or ``channel_binding=require`` on a Unix socket,
``channel_binding=require`` with ``sslmode=disable`` or a require_auth without SCRAM, and
``sslmode=verify-full`` for an entry with a hostaddr but no host name.

Stricter than libpq, each a refusal: ``sslsni`` other than 0 or 1 (libpq reads anything but
"1..." as off), a ``hostaddr`` in inet_aton's shorthands (``127.1``; Python's ipaddress is the
judge, scoped IPv6 included), and a host name containing "@" (a password's tail in a URI).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pggate import gss_support
from pggate.conninfo.keywords import (
    DEFAULT_PORT,
    DEFAULT_SOCKET_DIR,
    KNOWN,
    LIBPQ_KEYWORDS,
    NOT_SUPPORTED,
)
from pggate.conninfo.model import (
    AUTH_METHODS,
    CHANNEL_BINDINGS,
    DEFAULT_APPLICATION_NAME,
    DEFAULT_CONNECT_TIMEOUT,
    GSSENCMODES,
    LOAD_BALANCE_HOSTS,
    MAX_SOCKET_PATH,
    SSLMODES,
    SSLNEGOTIATIONS,
    TARGET_SESSION_ATTRS,
    TLS_VERSIONS,
    BackendSettings,
    BackendTarget,
    HostSpec,
    RequireAuth,
    TcpSettings,
    TlsSettings,
    socket_file,
)
from pggate.conninfo.parse import NOT_SHOWN, parse_marked, refuse
from pggate.errors import ConfigError

Values = Mapping[str, str]
_INT = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)[ \t\n\v\f\r]*")  # strtol, base 10
_INT32 = range(-(2**31), 2**31)
_QUOTED_VALUE = re.compile(r':? "\{value\}"')


def value_error(template: str, value: str, *, hidden: bool = False) -> ConfigError:
    """libpq's message ``template`` with ``{value}`` quoted in it, or, for a value that may
    hold part of a secret, without it and with a DETAIL saying so."""
    if hidden:
        return refuse(_QUOTED_VALUE.sub("", template), detail=NOT_SHOWN)
    return refuse(template.format(value=value))


@dataclass(frozen=True, slots=True)
class Conninfo:
    """The keywords of a conninfo over its defaults; ``hidden``: values errors must not quote."""

    values: Mapping[str, str]
    hidden: frozenset[str] = frozenset()

    def __contains__(self, keyword: str) -> bool:
        return keyword in self.values

    def get(self, keyword: str) -> str | None:
        return self.values.get(keyword)

    def value(self, keyword: str, default: str) -> str:
        return self.values.get(keyword, default)

    def optional(self, keyword: str) -> str | None:
        """A string option where empty means unset, as libpq's ``conn->x && conn->x[0]``."""
        return self.values.get(keyword) or None

    def error(self, keyword: str, template: str, value: str) -> ConfigError:
        """value_error, hiding the value when ``keyword`` may hold part of a secret."""
        return value_error(template, value, hidden=keyword in self.hidden)

    def integer(self, keyword: str, value: str) -> int:
        """pqParseIntParam: strtol's base-10 integer within int32, spaces allowed around it."""
        match = _INT.fullmatch(value)
        if match is None or int(match[1]) not in _INT32:
            raise self.error(
                keyword,
                f'invalid integer value "{{value}}" for connection option "{keyword}"',
                value,
            )
        return int(match[1])

    def choice(self, keyword: str, allowed: tuple[str, ...], default: str) -> str:
        """An enumerated option: libpq's ``invalid %s value: "%s"``."""
        value = self.value(keyword, default)
        if value not in allowed:
            raise self.error(keyword, f'invalid {keyword} value: "{{value}}"', value)
        return value


def conninfo_values(text: str, defaults: Values | None = None) -> Conninfo:
    """``text`` parsed (parse_marked) over ``defaults``, which are checked the same way."""
    for keyword in defaults or {}:
        if keyword not in KNOWN:
            raise refuse(f'invalid connection option "{keyword}"')
    parsed = parse_marked(text)
    return Conninfo({**(defaults or {}), **parsed.values}, parsed.hidden)


def refuse_not_supported(conninfo: Conninfo) -> None:
    """A libpq keyword pggate does not act on is refused, never ignored."""
    for keyword in LIBPQ_KEYWORDS:
        if keyword in conninfo and keyword in NOT_SUPPORTED:
            raise refuse(
                f'connection option "{keyword}" is not supported by pggate',
                detail=NOT_SUPPORTED[keyword] + ".",
            )


def _split(text: str) -> list[str]:
    """parse_comma_separated_list, applied until the end: every comma separates."""
    return text.split(",")


def _hosts(conninfo: Conninfo) -> tuple[HostSpec, ...]:
    """pqConnectOptions2's host array, then PQconnectPoll's per-host port and address checks."""
    host_text = conninfo.value("host", "")
    hostaddr_text = conninfo.value("hostaddr", "")
    if hostaddr_text:
        addrs: list[str] = _split(hostaddr_text)
    else:
        addrs = [""] * (len(_split(host_text)) if host_text else 1)
    names = _split(host_text) if host_text else [""] * len(addrs)
    if len(names) != len(addrs):
        raise refuse(f"could not match {len(names)} host names to {len(addrs)} hostaddr values")
    port_text = conninfo.value("port", "")
    ports = _split(port_text) if port_text else [""]
    if len(ports) == 1:
        ports *= len(addrs)
    elif len(ports) != len(addrs):
        raise refuse(f"could not match {len(ports)} port numbers to {len(addrs)} hosts")
    return tuple(
        _host(conninfo, name, addr, port)
        for name, addr, port in zip(names, addrs, ports, strict=True)
    )


def _host(conninfo: Conninfo, name: str, addr: str, port_text: str) -> HostSpec:
    port = DEFAULT_PORT
    if port_text:
        port = conninfo.integer("port", port_text)
        if not 1 <= port <= 65535:
            raise conninfo.error("port", 'invalid port number: "{value}"', port_text)
    if addr:
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise conninfo.error(
                "hostaddr", 'could not parse network address "{value}"', addr
            ) from None
    host = name or (None if addr else DEFAULT_SOCKET_DIR)
    spec = HostSpec(host=host, hostaddr=addr or None, port=port, port_text=port_text)
    if spec.kind == "unix":
        path = socket_file(spec.connect_host, port)
        if len(path.encode()) > MAX_SOCKET_PATH:
            raise conninfo.error(
                "host",
                'Unix-domain socket path "{value}" is too long '
                f"(maximum {MAX_SOCKET_PATH} bytes)",
                path,
            )
    elif spec.kind == "name" and "@" in spec.connect_host:
        raise refuse(
            'host name contains "@"',
            detail=NOT_SHOWN,
            hint='In a URI, write an "@" inside the password as %40.',
        )
    return spec


def require_auth(text: str, *, hidden: bool = False) -> RequireAuth:
    """pqConnectOptions2's require_auth: methods to allow, or ``!``-methods to forbid (not
    both); ``none`` is the backend asking for nothing; a method may appear once."""
    if not text:
        return RequireAuth()
    allowed: set[str] = set()
    allow_none = False
    negated = False
    for index, part in enumerate(_split(text)):
        method = part
        if method.startswith("!"):
            if index == 0:
                allowed, allow_none = set(AUTH_METHODS), True
            elif not negated:
                raise value_error(
                    'negative require_auth method "{value}" cannot be mixed with '
                    "non-negative methods",
                    part,
                    hidden=hidden,
                )
            negated = True
            method = method[1:]
        elif negated:
            raise value_error(
                'require_auth method "{value}" cannot be mixed with negative methods',
                method,
                hidden=hidden,
            )
        if method == "none":
            duplicate = allow_none != negated
            allow_none = not negated
        elif method in AUTH_METHODS:
            duplicate = (method in allowed) != negated
            (allowed.discard if negated else allowed.add)(method)
        else:
            raise value_error('invalid require_auth value: "{value}"', method, hidden=hidden)
        if duplicate:
            raise value_error(
                'require_auth method "{value}" is specified more than once', part, hidden=hidden
            )
    return RequireAuth(
        methods=frozenset(allowed),
        allow_none=allow_none,
        text=text,
        names_password=not negated and "password" in allowed,
    )


def _tls_version(conninfo: Conninfo, keyword: str, default: str | None) -> str | None:
    """sslVerifyProtocolVersion: TLSv1 to TLSv1.3, any case; empty means no bound."""
    value = conninfo.get(keyword) if keyword in conninfo else default
    if not value:
        return None
    for version in TLS_VERSIONS:
        if value.lower() == version.lower():
            return version
    raise conninfo.error(keyword, f'invalid "{keyword}" value: "{{value}}"', value)


def _tls(conninfo: Conninfo, sslmode: str) -> TlsSettings:
    """sslnegotiation, the sslrootcert=system rule, the protocol range (pqConnectOptions2)."""
    negotiation = conninfo.choice("sslnegotiation", SSLNEGOTIATIONS, "postgres")
    if negotiation == "direct" and sslmode not in ("require", "verify-ca", "verify-full"):
        raise refuse(
            f'weak sslmode "{sslmode}" may not be used with sslnegotiation=direct '
            '(use "require", "verify-ca", or "verify-full")'
        )
    rootcert = conninfo.optional("sslrootcert")
    if rootcert == "system" and sslmode != "verify-full":
        raise refuse(
            f'weak sslmode "{sslmode}" may not be used with sslrootcert=system (use "verify-full")'
        )
    minimum = _tls_version(conninfo, "ssl_min_protocol_version", "TLSv1.2")
    maximum = _tls_version(conninfo, "ssl_max_protocol_version", None)
    if minimum and maximum and TLS_VERSIONS.index(minimum) > TLS_VERSIONS.index(maximum):
        raise refuse("invalid SSL protocol version range")
    sni = conninfo.value("sslsni", "1")
    if sni not in ("0", "1"):  # libpq reads "1..." as on and anything else as off
        raise conninfo.error("sslsni", 'invalid sslsni value: "{value}"', sni)
    return TlsSettings(
        sslnegotiation=negotiation,
        sslrootcert=rootcert,
        sslcert=conninfo.optional("sslcert"),
        sslkey=conninfo.optional("sslkey"),
        sslpassword=conninfo.optional("sslpassword"),
        sslcrl=conninfo.optional("sslcrl"),
        sslcrldir=conninfo.optional("sslcrldir"),
        sslsni=sni == "1",
        min_protocol_version=minimum,
        max_protocol_version=maximum,
    )


def _tcp(conninfo: Conninfo) -> TcpSettings:
    """keepalives (useKeepalives) and the TCP options (setKeepalivesIdle and the rest):
    unset → None, negative → 0."""

    def option(keyword: str) -> int | None:
        value = conninfo.get(keyword)
        return None if value is None else max(conninfo.integer(keyword, value), 0)

    keepalives = conninfo.get("keepalives")
    return TcpSettings(
        keepalives=keepalives is None or conninfo.integer("keepalives", keepalives) != 0,
        keepalives_idle=option("keepalives_idle"),
        keepalives_interval=option("keepalives_interval"),
        keepalives_count=option("keepalives_count"),
        user_timeout=option("tcp_user_timeout"),
    )


def _connect_timeout(conninfo: Conninfo) -> float | None:
    """connect_timeout: pggate's 10 s when unset; <= 0 waits as long as the OS does; 1 means
    2 s (pggate keeps the rounding libpq had before version 18)."""
    value = conninfo.get("connect_timeout")
    if value is None:
        return DEFAULT_CONNECT_TIMEOUT
    seconds = conninfo.integer("connect_timeout", value)
    return None if seconds <= 0 else float(max(seconds, 2))


def _refuse_doomed(target: BackendTarget) -> None:
    """Combinations with which libpq fails every connection to some host."""
    settings = target.settings
    for address in target.addresses():
        if address.is_unix_socket and settings.gssencmode == "require":
            raise refuse(
                "GSSAPI encryption required but it is not supported over a local socket",
                detail=f"The backend {address.describe()} is a Unix socket.",
            )
        if settings.channel_binding == "require" and address.sslmode == "disable":
            raise refuse(
                "channel binding required, but SSL not in use",
                detail=f"pggate never uses TLS to the backend {address.describe()}: "
                + ("it is a Unix socket." if address.is_unix_socket else "sslmode=disable."),
            )
        if target.sslmode == "verify-full" and not address.server_name:
            raise refuse(
                "host name must be specified for a verified SSL connection",
                detail=f"The backend {address.describe()} has a hostaddr but no host.",
            )
    if settings.channel_binding == "require" and not settings.require_auth.allows("scram-sha-256"):
        raise refuse(
            "channel binding required, but require_auth does not allow SCRAM",
            detail="Only SCRAM-SHA-256-PLUS binds the login to the TLS channel.",
        )


def target_from_values(conninfo: Conninfo) -> BackendTarget:
    """pqConnectOptions2 (in its order) and the connect-time checks, as one BackendTarget."""
    hosts = _hosts(conninfo)
    auth = require_auth(
        conninfo.value("require_auth", ""), hidden="require_auth" in conninfo.hidden
    )
    channel_binding = conninfo.choice("channel_binding", CHANNEL_BINDINGS, "prefer")
    # conninfo_add_defaults: sslrootcert=system strengthens the default sslmode.
    default_sslmode = "verify-full" if conninfo.get("sslrootcert") == "system" else "prefer"
    sslmode = conninfo.choice("sslmode", SSLMODES, default_sslmode)
    tls = _tls(conninfo, sslmode)
    gssencmode = conninfo.choice("gssencmode", GSSENCMODES, "prefer")
    session_attrs = conninfo.choice("target_session_attrs", TARGET_SESSION_ATTRS, "any")
    balance = conninfo.choice("load_balance_hosts", LOAD_BALANCE_HOSTS, "disable")
    target = BackendTarget(
        hosts=hosts,
        user=conninfo.optional("user"),
        dbname=conninfo.optional("dbname"),
        password=conninfo.optional("password"),
        passfile=conninfo.optional("passfile"),
        sslmode=sslmode,
        connect_timeout=_connect_timeout(conninfo),
        application_name=conninfo.optional("application_name")
        or conninfo.optional("fallback_application_name")
        or DEFAULT_APPLICATION_NAME,
        target_session_attrs=session_attrs,
        load_balance_hosts=balance,
        settings=BackendSettings(
            tls=tls,
            channel_binding=channel_binding,
            require_auth=auth,
            gssencmode=gssencmode,
            krbsrvname=conninfo.value("krbsrvname", "postgres"),
            tcp=_tcp(conninfo),
            options=conninfo.value("options", ""),
        ),
    )
    _refuse_doomed(target)
    return target


def backend_target(text: str, defaults: Values | None = None) -> BackendTarget:
    """The whole ``backend`` conninfo (over ``defaults``), validated, or a ConfigError."""
    conninfo = conninfo_values(text, defaults)
    refuse_not_supported(conninfo)
    return target_from_values(conninfo)


def unsupported_by_pggate(target: BackendTarget) -> ConfigError | None:
    """What pggate cannot do with this conninfo, refused rather than done weaker.

    pggate is a GSSAPI client only with python-gssapi (the extra ``pggate[gss]``); without it
    ``gssencmode=require`` is refused with libpq's text for a build without GSSAPI, as
    pqConnectOptions2 refuses it (``prefer``, the default, then never tries GSSAPI).
    """
    if target.settings.gssencmode == "require" and not gss_support.available():
        return ConfigError(
            'gssencmode value "require" invalid when GSSAPI support is not compiled in',
            parameter="backend",
            detail=gss_support.missing_detail(),
            hint=gss_support.HINT,
        )
    return None
