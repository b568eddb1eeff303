"""The settings table and PostgreSQL's rules for turning a value's text into a value.

One declarative, alphabetical table: PostgreSQL's own names, defaults, ranges, units and
contexts wherever PostgreSQL has the parameter (guc_tables.c), plus a few gateway-only ones.
Values are parsed as ``guc.c`` parses them (parse_bool, parse_int with units, parse_real, enum
lookup, list check hooks) and rejected with its messages, so an operator's postgresql.conf habits
and error searches carry over.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from pggate.errors import ConfigError
from pggate.pgtext import ascii_lower, split_identifier_string

Kind = Literal["bool", "int", "real", "string", "enum", "list"]
Context = Literal["postmaster", "sighup"]
Value = bool | int | float | str | frozenset[str]

INT_MAX = 2**31 - 1
INT_MIN = -(2**31)

# Sections of the rendered sample file, in the order they appear there.
CONNECTIONS = "Connections"
AUTHENTICATION = "Authentication"
SSL = "SSL"
GSSAPI = "GSSAPI"
LOGGING = "Logging"
GATEWAY = "Gateway (pggate only)"
GROUPS = (CONNECTIONS, AUTHENTICATION, SSL, GSSAPI, LOGGING, GATEWAY)


class SettingError(ConfigError):
    """A bad parameter name or value, with PostgreSQL's DETAIL and HINT (see ConfigError)."""

    def at(self, file: str | None, line: int | None, *, suffix: str = "") -> SettingError:
        """The same error placed where the value came from."""
        return SettingError(
            self.message + suffix,
            file=file,
            line=line,
            parameter=self.parameter,
            detail=self.detail,
            hint=self.hint,
        )


@dataclass(frozen=True, slots=True)
class Setting:
    """One parameter. ``default`` is written as in the file and parsed like any other value.

    ``unit`` is the base unit of an int/real (``s``, ``ms``, ``kB``...): values may carry any unit
    of the same family and are converted to it. ``choices`` are an enum's values or a list's
    items; ``shorthands`` are list words standing for several items (``all``); ``alone`` are
    whole-value spellings accepted only by themselves (log_connections' old booleans);
    ``refused`` are list items PostgreSQL accepts and pggate does not, each with the DETAIL that
    says so. ``list_messages`` picks the DETAIL texts of a bad list: ``options`` as PG18's
    validate_log_connections_options words them, ``key words`` as the check hooks of other list
    settings do (check_log_destination: "List syntax is invalid.", "Unrecognized key word").
    """

    name: str
    kind: Kind
    default: str
    context: Context
    group: str
    help: str
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    shorthands: tuple[tuple[str, tuple[str, ...]], ...] = ()
    alone: tuple[tuple[str, tuple[str, ...]], ...] = ()
    aliases: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()
    list_messages: Literal["options", "key words"] = "options"


_TLS_VERSIONS = ("", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_CONNECTION_ASPECTS = ("receipt", "authentication", "authorization", "setup_durations")
_LEGACY_ON = ("receipt", "authentication", "authorization")
_LOG_DESTINATIONS = ("stderr", "jsonlog", "syslog")
_SYSLOG_FACILITIES = tuple(f"local{n}" for n in range(8))

# fmt: off
SETTINGS: tuple[Setting, ...] = (
    Setting("authentication_timeout", "int", "1min", "sighup", AUTHENTICATION,
            "Maximum time to complete client authentication.", unit="s", min=1, max=600),
    Setting("backend", "string", "", "postmaster", GATEWAY,
            "libpq conninfo of the PostgreSQL server sessions are relayed to; "
            "empty means the embedded cluster in DIR/pgdata."),
    Setting("backend_krb_client_keyfile", "string", "", "sighup", GSSAPI,
            "Sets the location of the Kerberos client key file pggate authenticates to the "
            "backend with (gssencmode, gss); empty means GSSAPI's default initiator "
            "credentials (KRB5CCNAME), as libpq."),
    Setting("backend_scram_max_iterations", "int", "100000", "sighup", GATEWAY,
            "Most SCRAM iterations a backend may demand when pggate logs in with a password "
            "(a hostile server could otherwise burn the gateway's CPU).",
            min=4096, max=2147483647),
    Setting("gss_accept_delegation", "bool", "off", "sighup", GSSAPI,
            "Sets whether GSSAPI delegation should be accepted from the client."),
    Setting("hba_file", "string", "pg_hba.conf", "postmaster", AUTHENTICATION,
            "Sets the server's \"hba\" configuration file."),
    Setting("ident_file", "string", "pg_ident.conf", "postmaster", AUTHENTICATION,
            "Sets the server's \"ident\" configuration file."),
    Setting("krb_caseins_users", "bool", "off", "sighup", GSSAPI,
            "Sets whether Kerberos and GSSAPI user names should be treated as case-insensitive."),
    Setting("krb_server_keyfile", "string", "", "sighup", GSSAPI,
            "Sets the location of the Kerberos server key file; empty (unlike PostgreSQL's "
            "FILE:/etc/krb5.keytab) means GSSAPI is not configured."),
    Setting("listen_addresses", "string", "localhost", "postmaster", CONNECTIONS,
            "Sets the host name or IP address(es) to listen to; comma-separated, '*' for all."),
    Setting("log_connections", "list", "", "sighup", LOGGING,
            "Logs specified aspects of connection establishment and setup: "
            "receipt, authentication, authorization, setup_durations, all.",
            choices=_CONNECTION_ASPECTS,
            shorthands=(("all", _CONNECTION_ASPECTS),),
            alone=(("off", ()), ("false", ()), ("no", ()), ("0", ()),
                   ("on", _LEGACY_ON), ("true", _LEGACY_ON), ("yes", _LEGACY_ON),
                   ("1", _LEGACY_ON))),
    Setting("log_destination", "list", "stderr", "sighup", LOGGING,
            "Sets the destination for server log output: stderr, jsonlog and syslog, in any "
            "combination ('' logs nothing). jsonlog writes one JSON object per line with "
            "PostgreSQL's keys. Without log_file, stderr and jsonlog lines go to standard "
            "error. csvlog is not supported.",
            choices=_LOG_DESTINATIONS, list_messages="key words",
            refused=(("csvlog", 'Log destination "csvlog" is not supported by pggate.'),)),
    Setting("log_disconnections", "bool", "off", "sighup", LOGGING,
            "Logs end of a session, including duration."),
    Setting("log_file", "string", "", "sighup", GATEWAY,
            "File the log is appended to; empty means standard error. stderr lines go to this "
            "file and jsonlog lines to the same name with .log replaced by .json (or .json "
            "added), as PostgreSQL names its files. Every reload (SIGHUP) reopens it, so "
            "logrotate can move it away; each line is written whole, so workers share it. "
            "Created with mode 0600."),
    Setting("log_hostname", "bool", "off", "sighup", LOGGING,
            "Logs the host name in the connection logs."),
    Setting("log_line_prefix", "string", "%m [%p] ", "sighup", LOGGING,
            "Controls information prefixed to each log line, with PostgreSQL's escapes: %m %t "
            "%n %p %l %c %s %e %b %q %% and, in a session, %u %d %a %h %r %L; padding as in "
            "%-10u. pggate has no transactions, queries or ps display: %x and %Q print 0, %v "
            "%i and %P nothing. %c is the session's start time, pggate's process ID and the "
            "process's connection number, in hex (outside a session: start time and PID, as "
            "in PostgreSQL)."),
    Setting("log_timezone", "string", "UTC", "sighup", LOGGING,
            "Sets the time zone to use in log messages: a name of the IANA time zone database, "
            "in any case. pggate defaults to UTC (PostgreSQL's initdb writes the system's "
            "zone)."),
    Setting("max_connections", "int", "100", "postmaster", CONNECTIONS,
            "Sets the maximum number of concurrent connections.", min=1, max=262143),
    Setting("max_startup_connections", "int", "1000", "sighup", GATEWAY,
            "Most connections not yet authenticated per serving process (negotiation, TLS or "
            "GSSAPI handshake, startup packet, authentication; cancel requests while open). "
            "When a new connection arrives and this many are waiting, the one that has waited "
            "longest is closed without a word to make room. Only authenticated sessions count "
            "against max_connections, from the backend login on.",
            min=1, max=262143),
    Setting("password_encryption", "enum", "scram-sha-256", "sighup", AUTHENTICATION,
            "Chooses the algorithm for encrypting passwords.",
            choices=("md5", "scram-sha-256")),
    Setting("pool_mode", "enum", "none", "sighup", GATEWAY,
            "Whether backend connections are reused: none (one per client session) or session.",
            choices=("none", "session")),
    Setting("pool_size", "int", "20", "sighup", GATEWAY,
            "Most idle backend connections kept per role, database and startup parameters "
            "when pool_mode is session.", min=0, max=100000),
    Setting("port", "int", "5432", "postmaster", CONNECTIONS,
            "Sets the TCP port the server listens on.", min=1, max=65535),
    Setting("postgres_bindir", "string", "", "postmaster", GATEWAY,
            "Directory of the PostgreSQL binaries that run the embedded cluster; "
            "empty means find them."),
    Setting("scram_iterations", "int", "4096", "sighup", AUTHENTICATION,
            "Sets the iteration count for SCRAM secret generation.", min=1, max=INT_MAX),
    Setting("server_idle_timeout", "int", "10min", "sighup", GATEWAY,
            "Closes pooled backend connections idle longer than this.",
            unit="s", min=1, max=86400 * 7),
    Setting("server_lifetime", "int", "1h", "sighup", GATEWAY,
            "Closes pooled backend connections older than this instead of reusing them.",
            unit="s", min=1, max=86400 * 365),
    Setting("server_reset_query", "string", "DISCARD ALL", "sighup", GATEWAY,
            "Runs on a backend connection before another client gets it (pool_mode session)."),
    Setting("ssl", "bool", "off", "sighup", SSL,
            "Enables SSL connections."),
    Setting("ssl_ca_file", "string", "", "sighup", SSL,
            "Location of the SSL certificate authority file."),
    Setting("ssl_cert_file", "string", "server.crt", "sighup", SSL,
            "Location of the SSL server certificate file."),
    Setting("ssl_ciphers", "string", "HIGH:MEDIUM:+3DES:!aNULL", "sighup", SSL,
            "Sets the list of allowed TLSv1.2 (and lower) ciphers."),
    Setting("ssl_crl_dir", "string", "", "sighup", SSL,
            "Location of the SSL certificate revocation list directory."),
    Setting("ssl_crl_file", "string", "", "sighup", SSL,
            "Location of the SSL certificate revocation list file."),
    Setting("ssl_dh_params_file", "string", "", "sighup", SSL,
            "Location of the SSL DH parameters file."),
    Setting("ssl_groups", "string", "X25519:prime256v1", "sighup", SSL,
            "Sets the group(s) to use for Diffie-Hellman key exchange.",
            aliases=("ssl_ecdh_curve",)),
    Setting("ssl_key_file", "string", "server.key", "sighup", SSL,
            "Location of the SSL server private key file."),
    Setting("ssl_max_protocol_version", "enum", "", "sighup", SSL,
            "Sets the maximum SSL/TLS protocol version to use; empty means no limit.",
            choices=_TLS_VERSIONS),
    Setting("ssl_min_protocol_version", "enum", "TLSv1.2", "sighup", SSL,
            "Sets the minimum SSL/TLS protocol version to use.", choices=_TLS_VERSIONS),
    Setting("ssl_passphrase_command", "string", "", "sighup", SSL,
            "Command to obtain passphrases for SSL."),
    Setting("ssl_passphrase_command_supports_reload", "bool", "off", "sighup", SSL,
            "Controls whether \"ssl_passphrase_command\" is called during server reload."),
    Setting("ssl_prefer_server_ciphers", "bool", "on", "sighup", SSL,
            "Give priority to server ciphersuite order."),
    Setting("ssl_tls13_ciphers", "string", "", "sighup", SSL,
            "Sets the list of allowed TLSv1.3 cipher suites; empty means OpenSSL's default."),
    Setting("syslog_facility", "enum", "local0", "sighup", LOGGING,
            "Sets the syslog \"facility\" to be used when syslog enabled.",
            choices=_SYSLOG_FACILITIES),
    Setting("syslog_ident", "string", "pggate", "sighup", LOGGING,
            "Sets the program name used to identify pggate's messages in syslog (PostgreSQL's "
            "default is postgres)."),
    Setting("syslog_sequence_numbers", "bool", "on", "sighup", LOGGING,
            "Add sequence number to syslog messages to avoid duplicate suppression."),
    Setting("syslog_split_messages", "bool", "on", "sighup", LOGGING,
            "Split messages sent to syslog by lines and to fit into 1024 bytes."),
    Setting("tcp_socket_buffer", "int", "0", "sighup", GATEWAY,
            "Socket send and receive buffer size for client connections (SO_SNDBUF, "
            "SO_RCVBUF), as PgBouncer's tcp_socket_buffer; 0 leaves them to the kernel's "
            "autotuning. Bounds the kernel memory a client that stops reading can pin (up to "
            "the kernel's tcp_wmem maximum, 4 MB by default, per connection).",
            unit="B", min=0, max=2147483647),
    Setting("trace_connection_negotiation", "bool", "off", "postmaster", LOGGING,
            "Logs details of pre-authentication connection handshake."),
    Setting("workers", "int", "1", "postmaster", GATEWAY,
            "Number of gateway processes sharing the listening port (SO_REUSEPORT).",
            min=1, max=64),
)
# fmt: on

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
_ALIASES: dict[str, str] = {alias: s.name for s in SETTINGS for alias in s.aliases}


def lookup(name: str) -> Setting:
    """The setting called ``name`` (any case, or an alias), or PostgreSQL's complaint."""
    folded = ascii_lower(name)
    setting = BY_NAME.get(_ALIASES.get(folded, folded))
    if setting is None:
        raise SettingError(f'unrecognized configuration parameter "{name}"', parameter=name)
    return setting


# --- booleans ------------------------------------------------------------------------------

_BOOL_WORDS = (("true", True), ("false", False), ("yes", True), ("no", False))


def parse_bool(text: str) -> bool | None:
    """PostgreSQL's parse_bool: any unique prefix of true/false/yes/no/on/off, any case, or
    exactly 1/0; None if it is not a boolean."""
    folded = ascii_lower(text)
    if folded in ("1", "0"):
        return folded == "1"
    if folded in ("on", "off") or (len(folded) >= 2 and "off".startswith(folded)):
        return folded == "on"  # "o" alone is ambiguous; "of" is off
    for word, value in _BOOL_WORDS:
        if folded and word.startswith(folded):
            return value
    return None


# --- numbers and units -----------------------------------------------------------------------

# Size of each unit in the smallest one of its family, largest first (guc.c's conversion
# tables); a value may carry any unit of its setting's family.
_UNIT_FAMILIES: tuple[tuple[tuple[str, float], ...], ...] = (
    (("d", 86_400e6), ("h", 3_600e6), ("min", 60e6), ("s", 1e6), ("ms", 1e3), ("us", 1.0)),
    (("TB", 1024.0**4), ("GB", 1024.0**3), ("MB", 1024.0**2), ("kB", 1024.0), ("B", 1.0)),
)
_MEMORY_UNITS_HINT = 'Valid units for this parameter are "B", "kB", "MB", "GB", and "TB".'
_TIME_UNITS_HINT = 'Valid units for this parameter are "us", "ms", "s", "min", "h", and "d".'
_MAX_UNIT_LEN = 3
_C_SPACE = " \t\n\v\f\r"

# strtol(value, &end, 0): optional space and sign, then hex, octal or decimal digits.
_STRTOL = re.compile(r"[ \t\n\v\f\r]*([-+]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
# strtod: decimal with optional exponent, or inf/infinity/nan.
_STRTOD = re.compile(
    r"[ \t\n\v\f\r]*[-+]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
    r"|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])"
)
_LONG_MAX = 2**63 - 1
_LONG_MAX_DIGITS = len(str(_LONG_MAX))


def _rint(x: float) -> float:
    """C rint() in the default rounding mode: halves to even, non-finite unchanged."""
    return float(round(x)) if math.isfinite(x) else x


def _strtol(text: str) -> tuple[float, str] | None:
    m = _STRTOL.match(text)
    if m is None:
        return None
    sign, digits = m.groups()
    if digits[:2] in ("0x", "0X"):
        number = int(digits, 16)
    elif digits.startswith("0"):
        number = int(digits, 8)
    elif len(digits) > _LONG_MAX_DIGITS:
        return None  # ERANGE, judged before int() (which refuses over 4300 digits)
    else:
        number = int(digits)
    if number > _LONG_MAX:
        return None  # ERANGE: the caller re-parses as a float
    return float(-number if sign == "-" else number), text[m.end() :]


def _strtod(text: str) -> tuple[float, str] | None:
    m = _STRTOD.match(text)
    if m is None:
        return None
    value = float(m.group())
    if math.isinf(value) and "n" not in m.group().lower():
        return None  # overflow is ERANGE; only a spelled-out infinity is accepted
    return value, text[m.end() :]


def _convert_unit(value: float, rest: str, base_unit: str) -> float | None:
    """convert_to_base_unit: ``rest`` is one unit (and optional spaces); None if it isn't."""
    length = 0
    while length < min(len(rest), _MAX_UNIT_LEN) and rest[length] not in _C_SPACE:
        length += 1
    unit = rest[:length]
    if not unit or rest[length:].strip(_C_SPACE):
        return None  # no unit, a unit too long, or garbage after it
    family = next(f for f in _UNIT_FAMILIES if any(u == base_unit for u, _ in f))
    base_size = dict(family)[base_unit]
    for i, (name, size) in enumerate(family):
        if name == unit:
            converted = value * (size / base_size)
            if i + 1 < len(family):
                # Round fractions to the next smaller unit: "1.5min" is 90s, not 90.000001s.
                smaller = family[i + 1][1] / base_size
                converted = _rint(converted / smaller) * smaller
            return converted
    return None


def _unit_hint(base_unit: str) -> str:
    is_time = any(u == base_unit for u, _ in _UNIT_FAMILIES[0])
    return _TIME_UNITS_HINT if is_time else _MEMORY_UNITS_HINT


def _invalid(
    setting: Setting, text: str, *, detail: str | None = None, hint: str | None = None
) -> SettingError:
    return SettingError(
        f'invalid value for parameter "{setting.name}": "{text}"',
        parameter=setting.name,
        detail=detail,
        hint=hint,
    )


def _number(setting: Setting, text: str, parsed: tuple[float, str] | None) -> float:
    """The common tail of parse_int and parse_real: NaN check, optional unit."""
    if parsed is None or math.isnan(parsed[0]):
        raise _invalid(setting, text)
    value, rest = parsed
    rest = rest.lstrip(_C_SPACE)
    if not rest:
        return value
    if setting.unit is None:
        raise _invalid(setting, text)
    converted = _convert_unit(value, rest, setting.unit)
    if converted is None:
        raise _invalid(setting, text, hint=_unit_hint(setting.unit))
    return converted


def _out_of_range(setting: Setting, value: float) -> SettingError:
    """PostgreSQL's range message: ints as %d, reals as %g, each with the base unit."""

    def show(number: float | None) -> str:
        assert number is not None  # only settings with a range get here
        text = str(int(number)) if setting.kind == "int" else f"{number:g}"
        return f"{text} {setting.unit}" if setting.unit else text

    return SettingError(
        f'{show(value)} is outside the valid range for parameter "{setting.name}" '
        f"({show(setting.min)} .. {show(setting.max)})",
        parameter=setting.name,
    )


def _parse_int(setting: Setting, text: str) -> int:
    parsed = _strtol(text)
    if parsed is None or parsed[1][:1] in (".", "e", "E"):
        # As guc.c: a decimal point, an exponent or an overflow means "read it as a float".
        parsed = _strtod(text)
    value = _rint(_number(setting, text, parsed))
    if not INT_MIN <= value <= INT_MAX:
        raise _invalid(setting, text, hint="Value exceeds integer range.")
    result = int(value)
    if not _in_range(setting, result):
        raise _out_of_range(setting, result)
    return result


def _parse_real(setting: Setting, text: str) -> float:
    value = _number(setting, text, _strtod(text))
    if not _in_range(setting, value):
        raise _out_of_range(setting, value)
    return value


def _in_range(setting: Setting, value: float) -> bool:
    return (setting.min is None or value >= setting.min) and (
        setting.max is None or value <= setting.max
    )


# --- enums and lists -------------------------------------------------------------------------


def _parse_enum(setting: Setting, text: str) -> str:
    folded = ascii_lower(text)
    for choice in setting.choices:
        if ascii_lower(choice) == folded:
            return choice
    available = ", ".join(setting.choices)
    raise _invalid(setting, text, hint=f"Available values: {available}.")


def _parse_list(setting: Setting, text: str) -> frozenset[str]:
    """A list setting, validated as PG18's validate_log_connections_options (log_connections)
    or the list check hooks (check_log_destination) do, by ``setting.list_messages``."""
    keywords = setting.list_messages == "key words"
    items = split_identifier_string(text)
    if items is None:
        syntax = f'Invalid list syntax in parameter "{setting.name}".'
        raise _invalid(setting, text, detail="List syntax is invalid." if keywords else syntax)
    if not items:
        return frozenset()
    alone = dict(setting.alone)
    first = ascii_lower(items[0])
    if first in alone:
        if len(items) > 1:
            raise _invalid(
                setting,
                text,
                detail=f'Cannot specify {setting.name} option "{items[0]}" '
                "in a list with other options.",
            )
        return frozenset(alone[first])
    shorthands = dict(setting.shorthands)
    result: set[str] = set()
    for item in items:
        folded = ascii_lower(item)
        if folded in setting.choices:
            result.add(folded)
        elif folded in shorthands:
            result.update(shorthands[folded])
        elif folded in dict(setting.refused):
            raise _invalid(setting, text, detail=dict(setting.refused)[folded])
        else:
            unknown = (
                f'Unrecognized key word: "{item}".' if keywords else f'Invalid option "{item}".'
            )
            raise _invalid(setting, text, detail=unknown)
    return frozenset(result)


def parse_value(setting: Setting, text: str) -> Value:
    """``text`` (as written in the file or after ``-c``) as the setting's Python value."""
    if setting.kind == "bool":
        value = parse_bool(text)
        if value is None:
            raise SettingError(
                f'parameter "{setting.name}" requires a Boolean value', parameter=setting.name
            )
        return value
    if setting.kind == "int":
        return _parse_int(setting, text)
    if setting.kind == "real":
        return _parse_real(setting, text)
    if setting.kind == "enum":
        return _parse_enum(setting, text)
    if setting.kind == "list":
        return _parse_list(setting, text)
    return text


def default_value(setting: Setting) -> Value:
    """The setting's default, parsed like any value (a unit test checks that each parses)."""
    return parse_value(setting, setting.default)
