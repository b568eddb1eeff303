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
    tcp = backend_address("hostaddr=127.0.0.1 port=5432 password=x")
    assert not tcp.is_unix_socket and tcp.password == "x"


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
