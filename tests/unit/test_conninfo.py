"""libpq conninfo parsing for the backend setting."""

from __future__ import annotations

import pytest

from pggate.conninfo import backend_address, parse_conninfo
from pggate.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host=/tmp port=5433", {"host": "/tmp", "port": "5433"}),
        (
            "host = db  user='a b' password='it\\'s'",
            {"host": "db", "user": "a b", "password": "it's"},
        ),
        (
            "postgresql://u:p%40ss@db.example:6000/app?sslmode=require",
            {
                "user": "u",
                "password": "p@ss",
                "host": "db.example",
                "port": "6000",
                "dbname": "app",
                "sslmode": "require",
            },
        ),
        ("postgres://[::1]:5432/x", {"host": "::1", "port": "5432", "dbname": "x"}),
        ("", {}),
    ],
)
def test_parse(text: str, expected: dict[str, str]) -> None:
    assert parse_conninfo(text) == expected


def test_backend_address() -> None:
    unix = backend_address("host=/run/pg port=5433 user=gate dbname=postgres")
    assert unix.is_unix_socket and unix.socket_path == "/run/pg/.s.PGSQL.5433"
    assert "password" not in unix.describe()
    tcp = backend_address("hostaddr=127.0.0.1 port=5432 password=x sslmode=disable")
    assert not tcp.is_unix_socket and tcp.password == "x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # The finding: TLS keywords accepted and then ignored, plaintext on the wire.
        (
            "host=db.example.com sslmode=verify-full sslrootcert=/etc/root.crt",
            'sslmode "verify-full" is not supported yet',
        ),
        ("host=127.0.0.1 sslmode=require", 'sslmode "require" is not supported yet'),
        ("host=127.0.0.1 sslmode=prefer", 'sslmode "prefer" is not supported yet'),
        ("host=127.0.0.1 sslmode=allow", 'sslmode "allow" is not supported yet'),
        # libpq's default for TCP is prefer: it would try TLS first.
        ("host=127.0.0.1 port=5432", "a TCP backend without sslmode means libpq's sslmode=prefer"),
        (
            "postgresql://gate@db.example.com/app",
            "a TCP backend without sslmode means libpq's sslmode=prefer",
        ),
        ("host=a,b sslmode=disable", 'several hosts or ports in "host" are not supported yet'),
        ("host=/tmp port=5432,5433", 'several hosts or ports in "port" are not supported yet'),
        ("hostaddr=localhost sslmode=disable", 'could not parse network address "localhost"'),
        ("host=/tmp connect_timeout=5s", 'invalid integer value "5s" for connection option'),
    ],
)
def test_refused_fail_closed(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        backend_address(text)
    assert info.value.message.startswith(message)
    assert info.value.parameter == "backend"
    if "sslmode" in message:
        assert info.value.hint is not None and "sslmode=disable" in info.value.hint


def test_tls_keywords_have_no_effect_where_libpq_uses_no_tls() -> None:
    """libpq ignores sslrootcert/sslcert/sslkey under sslmode=disable and on Unix sockets."""
    tcp = backend_address("host=127.0.0.1 sslmode=disable sslrootcert=/x sslcert=/y sslkey=/z")
    assert tcp.sslmode == "disable"
    unix = backend_address("host=/run/pg sslmode=verify-full sslrootcert=/x")
    assert unix.is_unix_socket


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, 10.0), ("0", None), ("-3", None), ("1", 2.0), ("2", 2.0), ("30", 30.0)],
)
def test_connect_timeout_has_libpqs_meaning(value: str | None, seconds: float | None) -> None:
    text = "host=/tmp" + ("" if value is None else f" connect_timeout={value}")
    assert backend_address(text).connect_timeout == seconds


def test_application_name_is_used_for_pggates_own_connections() -> None:
    assert backend_address("host=/tmp").application_name == "pggate"
    assert backend_address("host=/tmp application_name=gw1").application_name == "gw1"


def test_uri_query_keeps_plus_and_decodes_percent() -> None:
    parsed = parse_conninfo("postgresql:///db?host=/tmp&password=a+b%2Bc")
    assert parsed["password"] == "a+b+c"
    assert parsed["host"] == "/tmp"


def test_errors_never_quote_a_password() -> None:
    with pytest.raises(ConfigError) as info:
        backend_address("password=hunter2 host")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port=99999", 'invalid port number: "99999"'),
        ("bogus=1", 'invalid connection option "bogus"'),
        ("sslmode=sometimes", 'invalid sslmode value: "sometimes"'),
        ("host", 'missing "=" after "host" in connection info string'),
        ("user='unterminated", "unterminated quoted string in connection info string"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        backend_address(text)
    assert info.value.message == message
