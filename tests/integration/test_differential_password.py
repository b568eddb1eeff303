"""Password logins against real PostgreSQL 15 and against pggate with the same roles, stored
verifiers and pg_hba.conf: libpq must report the same outcome (role or FATAL text)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import DEBIAN_PG_BINDIR, Backend, Gateway, GatewayFactory
from reference import create_objects, libpq_outcome, reference_server

pytestmark = pytest.mark.integration

HBA = """\
host scramdb all 127.0.0.1/32 scram-sha-256
host md5db   all 127.0.0.1/32 md5
host cleardb all 127.0.0.1/32 password
host postgres postgres 127.0.0.1/32 trust
"""
ROLES = (
    "SET password_encryption = 'scram-sha-256'",
    "CREATE ROLE dp_scram LOGIN PASSWORD 'scram-pass'",
    "CREATE ROLE dp_expired LOGIN PASSWORD 'expired-pass' VALID UNTIL '2001-01-01'",
    "CREATE ROLE dp_nologin NOLOGIN PASSWORD 'nologin-pass'",
    "CREATE ROLE dp_nopass LOGIN",
    "SET password_encryption = 'md5'",
    "CREATE ROLE dp_md5 LOGIN PASSWORD 'md5-pass'",
)
DATABASES = ("scramdb", "md5db", "cleardb")


@pytest.fixture(scope="module")
def postgres15() -> Iterator[int]:
    if not (DEBIAN_PG_BINDIR / "postgres").exists():
        pytest.skip("Debian's PostgreSQL 15 is not installed")
    with reference_server(DEBIAN_PG_BINDIR, hba=HBA) as cluster:
        create_objects(cluster.conninfo, ROLES, DATABASES)
        yield cluster.port


@pytest.fixture(scope="module")
def same_objects(backend: Backend) -> None:
    create_objects(backend.conninfo, ROLES, DATABASES)


@pytest.fixture
def gateway(make_gateway: GatewayFactory, same_objects: None) -> Gateway:
    return make_gateway(hba=HBA)


def outcome(port: int, **options: str) -> str:
    values = {
        "host": "127.0.0.1",
        "port": str(port),
        "sslmode": "disable",
        "gssencmode": "disable",
        "connect_timeout": "10",
    }
    return libpq_outcome({**values, **options})


CASES: list[tuple[str, str, str, dict[str, str]]] = [
    ("dp_scram", "scramdb", "scram-pass", {}),
    ("dp_scram", "scramdb", "wrong", {}),
    ("dp_ghost", "scramdb", "whatever", {}),
    ("dp_expired", "scramdb", "expired-pass", {}),
    ("dp_nopass", "scramdb", "x", {}),
    ("dp_nologin", "scramdb", "nologin-pass", {}),
    ("dp_md5", "scramdb", "md5-pass", {}),
    ("dp_md5", "md5db", "md5-pass", {}),
    ("dp_md5", "md5db", "wrong", {}),
    ("dp_scram", "md5db", "scram-pass", {}),
    ("dp_scram", "md5db", "scram-pass", {"require_auth": "md5"}),
    ("dp_md5", "md5db", "md5-pass", {"require_auth": "scram-sha-256"}),
    ("dp_scram", "cleardb", "scram-pass", {}),
    ("dp_md5", "cleardb", "md5-pass", {}),
    ("dp_md5", "cleardb", "wrong", {}),
    ("dp_scram", "cleardb", "scram-pass", {"require_auth": "scram-sha-256"}),
    ("dp_scram", "scramdb", "scram-pass", {"channel_binding": "require"}),
    ("dp_scram", "scramdb", "", {}),
]


@pytest.mark.parametrize(("user", "database", "password", "extra"), CASES)
def test_same_outcome_as_postgresql_15(
    user: str,
    database: str,
    password: str,
    extra: dict[str, str],
    postgres15: int,
    gateway: Gateway,
) -> None:
    options = {"user": user, "dbname": database, "password": password, **extra}
    expected = outcome(postgres15, **options)
    actual = outcome(gateway.port, **options)
    assert actual == expected, f"\nPostgreSQL 15: {expected}\npggate:        {actual}"
