"""The settings table and guc.c's value rules: booleans, units, ranges, enums, lists."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from pggate.config.model import Config
from pggate.config.settings import (
    BY_NAME,
    GROUPS,
    SETTINGS,
    Setting,
    SettingError,
    Value,
    default_value,
    lookup,
    parse_bool,
    parse_value,
)
from pggate.pgtext import split_identifier_string

_PYTHON_TYPES = {
    "bool": bool,
    "int": int,
    "real": float,
    "string": str,
    "enum": str,
    "list": frozenset[str],
}


def test_table_is_alphabetical_and_unique() -> None:
    names = [s.name for s in SETTINGS]
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    aliases = [a for s in SETTINGS for a in s.aliases]
    assert not set(aliases) & set(names)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_each_setting_is_well_formed(setting: Setting) -> None:
    assert setting.name == setting.name.lower()
    assert setting.help and setting.group in GROUPS
    assert setting.context in ("postmaster", "sighup")
    value = default_value(setting)
    assert isinstance(
        value, typing.get_origin(_PYTHON_TYPES[setting.kind]) or _PYTHON_TYPES[setting.kind]
    )
    if setting.name.startswith(("ssl", "krb_", "gss_")):
        assert setting.context == "sighup"


def test_config_has_one_field_per_setting_with_the_right_type() -> None:
    hints = typing.get_type_hints(Config)
    fields = [f.name for f in dataclasses.fields(Config)]
    assert fields == ["directory", *(s.name for s in SETTINGS), "explicitly_set"]
    for setting in SETTINGS:
        assert hints[setting.name] == _PYTHON_TYPES[setting.kind], setting.name


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("listen_addresses", "localhost"),
        ("port", 5432),
        ("max_connections", 100),
        ("authentication_timeout", 60),
        ("ssl", False),
        ("ssl_cert_file", "server.crt"),
        ("ssl_key_file", "server.key"),
        ("ssl_min_protocol_version", "TLSv1.2"),
        ("ssl_max_protocol_version", ""),
        ("ssl_ciphers", "HIGH:MEDIUM:+3DES:!aNULL"),
        ("ssl_groups", "X25519:prime256v1"),
        ("ssl_prefer_server_ciphers", True),
        ("krb_server_keyfile", ""),
        ("hba_file", "pg_hba.conf"),
        ("ident_file", "pg_ident.conf"),
        ("log_connections", frozenset()),
        ("password_encryption", "scram-sha-256"),
        ("scram_iterations", 4096),
        ("backend", ""),
        ("workers", 1),
        ("pool_mode", "none"),
    ],
)
def test_defaults_are_postgresqls(name: str, default: Value) -> None:
    assert default_value(BY_NAME[name]) == default


def test_lookup_folds_case_and_follows_aliases() -> None:
    assert lookup("PORT") is BY_NAME["port"]
    assert lookup("ssl_ecdh_curve") is BY_NAME["ssl_groups"]
    assert lookup("SSL_ECDH_CURVE") is BY_NAME["ssl_groups"]
    with pytest.raises(SettingError) as info:
        lookup("shared_buffers")
    assert str(info.value) == 'unrecognized configuration parameter "shared_buffers"'
    assert info.value.parameter == "shared_buffers"


# --- booleans --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("on", True), ("ON", True), ("off", False), ("of", False), ("OfF", False),
        ("true", True), ("t", True), ("Tr", True), ("false", False), ("f", False),
        ("yes", True), ("y", True), ("no", False), ("n", False), ("1", True), ("0", False),
        ("o", None), ("", None), ("onx", None), ("offx", None), ("truex", None), ("10", None),
        ("00", None), (" on", None), ("2", None), ("enable", None),
    ],
)  # fmt: skip
def test_parse_bool(text: str, expected: bool | None) -> None:
    assert parse_bool(text) is expected


def test_bool_error() -> None:
    with pytest.raises(SettingError) as info:
        parse_value(BY_NAME["ssl"], "o")
    assert str(info.value) == 'parameter "ssl" requires a Boolean value'


# --- integers, reals and units -----------------------------------------------------------------

TIMEOUT = "authentication_timeout"
KB = Setting("work_kb", "int", "0", "sighup", GROUPS[0], "memory in kB", unit="kB", min=0,
             max=2**31 - 1)  # fmt: skip
MS_REAL = Setting("delay", "real", "0", "sighup", GROUPS[0], "a real in ms", unit="ms", min=0,
                  max=10)  # fmt: skip


@pytest.mark.parametrize(
    ("setting", "text", "expected"),
    [
        (BY_NAME["port"], "5433", 5433),
        (BY_NAME["port"], " 42", 42),
        (BY_NAME["port"], "+7", 7),
        (BY_NAME["port"], "0x10", 16),
        (BY_NAME["port"], "010", 8),  # strtol base 0: octal
        (BY_NAME["port"], "1e3", 1000),
        (BY_NAME["port"], "99.5", 100),
        (BY_NAME["port"], "98.5", 98),  # rint: halves to even
        (BY_NAME[TIMEOUT], "90", 90),
        (BY_NAME[TIMEOUT], "90s", 90),
        (BY_NAME[TIMEOUT], "1min", 60),
        (BY_NAME[TIMEOUT], "1.5min", 90),
        (BY_NAME[TIMEOUT], "10 min", 600),
        (BY_NAME[TIMEOUT], "10min ", 600),
        (BY_NAME[TIMEOUT], "1500ms", 2),
        (BY_NAME[TIMEOUT], "2500ms", 2),
        (BY_NAME[TIMEOUT], "3000000us", 3),
        (KB, "8MB", 8192),
        (KB, "1GB", 1024 * 1024),
        (KB, "1536B", 2),
        (KB, "1TB", 1024**3),
        (MS_REAL, "2.5", 2.5),
        (MS_REAL, "0.005s", 5.0),
        (MS_REAL, "1500us", 1.5),
    ],
)
def test_numbers(setting: Setting, text: str, expected: float) -> None:
    value = parse_value(setting, text)
    assert value == expected and type(value) is type(expected)


def invalid(name: str, text: str) -> str:
    return f'invalid value for parameter "{name}": "{text}"'


TIME_HINT = 'Valid units for this parameter are "us", "ms", "s", "min", "h", and "d".'
MEMORY_HINT = 'Valid units for this parameter are "B", "kB", "MB", "GB", and "TB".'
RANGE_HINT = "Value exceeds integer range."


@pytest.mark.parametrize(
    ("setting", "text", "message", "hint"),
    [
        (BY_NAME["port"], "abc", invalid("port", "abc"), None),
        (BY_NAME["port"], "", invalid("port", ""), None),
        (BY_NAME["port"], "5432s", invalid("port", "5432s"), None),  # port takes no unit
        (BY_NAME["port"], "08", invalid("port", "08"), None),
        (BY_NAME["port"], "nan", invalid("port", "nan"), None),
        (BY_NAME["port"], "1e400", invalid("port", "1e400"), None),
        (BY_NAME["port"], "1e10", invalid("port", "1e10"), RANGE_HINT),
        (BY_NAME["port"], "inf", invalid("port", "inf"), RANGE_HINT),
        (BY_NAME["port"], "99999999999999999999", invalid("port", "99999999999999999999"),
         RANGE_HINT),
        (BY_NAME["port"], "0",
         '0 is outside the valid range for parameter "port" (1 .. 65535)', None),
        (BY_NAME["port"], "65536",
         '65536 is outside the valid range for parameter "port" (1 .. 65535)', None),
        (BY_NAME["workers"], "65",
         '65 is outside the valid range for parameter "workers" (1 .. 64)', None),
        (BY_NAME[TIMEOUT], "601", '601 s is outside the valid range for parameter '
         '"authentication_timeout" (1 s .. 600 s)', None),
        (BY_NAME[TIMEOUT], "500ms", '0 s is outside the valid range for parameter '
         '"authentication_timeout" (1 s .. 600 s)', None),
        (BY_NAME[TIMEOUT], "1h", '3600 s is outside the valid range for parameter '
         '"authentication_timeout" (1 s .. 600 s)', None),
        (BY_NAME[TIMEOUT], "10 minutes", invalid(TIMEOUT, "10 minutes"), TIME_HINT),
        (BY_NAME[TIMEOUT], "10 MIN", invalid(TIMEOUT, "10 MIN"), TIME_HINT),  # units are exact
        (BY_NAME[TIMEOUT], "10 s s", invalid(TIMEOUT, "10 s s"), TIME_HINT),
        (BY_NAME[TIMEOUT], "10MB", invalid(TIMEOUT, "10MB"), TIME_HINT),
        (KB, "1mb", invalid("work_kb", "1mb"), MEMORY_HINT),
        (MS_REAL, "11", '11 ms is outside the valid range for parameter "delay" '
         "(0 ms .. 10 ms)", None),
        (MS_REAL, "x", invalid("delay", "x"), None),
    ],
)  # fmt: skip
def test_number_errors(setting: Setting, text: str, message: str, hint: str | None) -> None:
    with pytest.raises(SettingError) as info:
        parse_value(setting, text)
    assert str(info.value) == message
    assert info.value.hint == hint
    assert info.value.parameter == setting.name


# --- enums -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("ssl_min_protocol_version", "tlsv1.3", "TLSv1.3"),
        ("ssl_min_protocol_version", "TLSv1", "TLSv1"),
        ("ssl_max_protocol_version", "", ""),
        ("password_encryption", "MD5", "md5"),
        ("password_encryption", "Scram-SHA-256", "scram-sha-256"),
        ("pool_mode", "SESSION", "session"),
    ],
)
def test_enums_fold_case_to_the_canonical_spelling(name: str, text: str, expected: str) -> None:
    assert parse_value(BY_NAME[name], text) == expected


@pytest.mark.parametrize(
    ("name", "text", "hint"),
    [
        ("password_encryption", "on", "Available values: md5, scram-sha-256."),
        ("pool_mode", "transaction", "Available values: none, session."),
        ("ssl_min_protocol_version", "TLSv1.4",
         "Available values: , TLSv1, TLSv1.1, TLSv1.2, TLSv1.3."),
    ],
)  # fmt: skip
def test_enum_errors(name: str, text: str, hint: str) -> None:
    with pytest.raises(SettingError) as info:
        parse_value(BY_NAME[name], text)
    assert str(info.value) == invalid(name, text)
    assert info.value.hint == hint


# --- lists (log_connections) -----------------------------------------------------------------

LEGACY = frozenset({"receipt", "authentication", "authorization"})
ALL = LEGACY | {"setup_durations"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", frozenset()),
        ("  ", frozenset()),
        ("off", frozenset()),
        ("FALSE", frozenset()),
        ("no", frozenset()),
        ("0", frozenset()),
        ("on", LEGACY),
        ("true", LEGACY),
        ("Yes", LEGACY),
        ("1", LEGACY),
        ("all", ALL),
        ("receipt", {"receipt"}),
        ("receipt, Authentication", {"receipt", "authentication"}),
        ('"setup_durations",authorization', {"setup_durations", "authorization"}),
        ("receipt,all", ALL),
    ],
)
def test_log_connections(text: str, expected: frozenset[str]) -> None:
    assert parse_value(BY_NAME["log_connections"], text) == expected


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("on,receipt", 'Cannot specify log_connections option "on" in a list with other options.'),
        ("off, all", 'Cannot specify log_connections option "off" in a list with other options.'),
        ("receipt,on", 'Invalid option "on".'),
        ("bogus", 'Invalid option "bogus".'),
        ("t", 'Invalid option "t".'),  # PG18 accepts only complete legacy words
        ("receipt,,all", 'Invalid list syntax in parameter "log_connections".'),
        ("receipt,", 'Invalid list syntax in parameter "log_connections".'),
        ('"receipt', 'Invalid list syntax in parameter "log_connections".'),
        ("receipt all", 'Invalid list syntax in parameter "log_connections".'),
    ],
)
def test_log_connections_errors(text: str, detail: str) -> None:
    with pytest.raises(SettingError) as info:
        parse_value(BY_NAME["log_connections"], text)
    assert str(info.value) == invalid("log_connections", text)
    assert info.value.detail == detail


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("a", ["a"]),
        (" A , b ", ["a", "b"]),
        ('"Mixed Case", x', ["Mixed Case", "x"]),
        ('"say ""hi"""', ['say "hi"']),
        ('""', [""]),
        ("a,,b", None),
        (",a", None),
        ("a,", None),
        ("a b", None),
        ('"open', None),
        ('"a"b', None),
    ],
)
def test_split_identifier_string(text: str, expected: list[str] | None) -> None:
    assert split_identifier_string(text) == expected


def test_split_guc_list_keeps_case() -> None:
    """SplitGUCList: the same syntax as SplitIdentifierString, names not downcased."""
    assert split_identifier_string(' A , "B""c" ', downcase=False) == ["A", 'B"c']
    assert split_identifier_string(' A , "B""c" ') == ["a", 'B"c']
    assert split_identifier_string("a,,b", downcase=False) is None


def test_string_settings_take_any_text() -> None:
    assert parse_value(BY_NAME["backend"], "host=/tmp port=5432") == "host=/tmp port=5432"


def test_setting_error_at_places_a_copy() -> None:
    error = SettingError("bad", parameter="port", detail="d", hint="h")
    placed = error.at("/f.conf", 3)
    assert str(placed) == 'bad, line 3 of configuration file "/f.conf"'
    assert (placed.parameter, placed.detail, placed.hint) == ("port", "d", "h")
    assert str(error) == "bad"
