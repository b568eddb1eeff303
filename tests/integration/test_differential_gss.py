"""Kerberos logins against real PostgreSQL 15 (built with GSSAPI) and against pggate, with the
same keytab, pg_hba.conf and pg_ident.conf: libpq must report the same outcome."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DEBIAN_PG_BINDIR, Backend, Gateway, GatewayFactory
from kdc import Realm
from reference import (
    TcpCluster,
    create_objects,
    libpq_outcome,
    owned_copy,
    reference_server,
)
from test_gss import credentials_cache

pytestmark = pytest.mark.integration

HBA = """\
hostgssenc   gssdb   all 127.0.0.1/32 gss include_realm=0
hostnogssenc plaindb all 127.0.0.1/32 gss include_realm=0
host         anydb   all 127.0.0.1/32 gss include_realm=0
hostgssenc   realmdb all 127.0.0.1/32 gss include_realm=0 krb_realm=EXAMPLE.ORG
hostgssenc   mapdb   all 127.0.0.1/32 gss map=mymap
hostgssenc   trustdb all 127.0.0.1/32 trust
host postgres postgres 127.0.0.1/32 trust
"""
IDENT = "mymap /^(.*)@EXAMPLE\\.COM$ \\1\n"
DATABASES = ("gssdb", "plaindb", "anydb", "realmdb", "mapdb", "trustdb")
ROLES = ("CREATE ROLE test1 LOGIN", "CREATE ROLE test2 LOGIN")


@pytest.fixture(scope="module")
def postgres15(kdc: Realm) -> Iterator[int]:
    if not (DEBIAN_PG_BINDIR / "postgres").exists():
        pytest.skip("Debian's PostgreSQL 15 is not installed")

    # Filled in by prepare(), read by reference_server() when it starts the server.
    server_env: dict[str, str] = {}

    def prepare(cluster: TcpCluster, base: Path) -> str:
        """The keytab, and a krb5.conf and replay cache the cluster's user can use."""
        keytab = cluster.data_dir / "krb5.keytab"
        owned_copy(kdc.keytab, keytab, cluster.run_as)
        (base / "krb5.conf").write_bytes(kdc.krb5_conf.read_bytes())
        (base / "krb5.conf").chmod(0o644)
        (base / "rcache").mkdir()
        if cluster.run_as is not None:
            shutil.chown(base / "rcache", cluster.run_as)
        server_env.update(KRB5_CONFIG=str(base / "krb5.conf"), KRB5RCACHEDIR=str(base / "rcache"))
        return f"krb_server_keyfile = 'FILE:{keytab}'\n"

    with reference_server(
        DEBIAN_PG_BINDIR, hba=HBA, ident=IDENT, prepare=prepare, env=server_env
    ) as cluster:
        create_objects(cluster.conninfo, ROLES, DATABASES)
        yield cluster.port


@pytest.fixture(scope="module")
def same_objects(backend: Backend) -> None:
    create_objects(backend.conninfo, ROLES, DATABASES)


@pytest.fixture
def gateway(make_gateway: GatewayFactory, kdc: Realm, same_objects: None) -> Gateway:
    return make_gateway(hba=HBA, ident=IDENT, conf=f"krb_server_keyfile = '{kdc.keytab}'\n")


@pytest.fixture(scope="module")
def ticket(kdc: Realm) -> Path:
    return kdc.kinit("test1", "secret1")


def outcome(port: int, ccache: Path, **options: str) -> str:
    values = {
        "host": "localhost",
        "hostaddr": "127.0.0.1",
        "port": str(port),
        "sslmode": "disable",
        "connect_timeout": "10",
    }
    with credentials_cache(ccache):
        return libpq_outcome(
            {**values, **options},
            lambda conn: f", encrypted={conn.info.pgconn.used_gssapi}",
        )


CASES: list[tuple[str, str, str]] = [
    # (user, database, gssencmode)
    ("test1", "gssdb", "require"),
    ("test1", "gssdb", "prefer"),
    ("test1", "gssdb", "disable"),
    ("test1", "plaindb", "prefer"),
    ("test1", "plaindb", "require"),
    ("test1", "anydb", "disable"),
    ("test1", "anydb", "require"),
    ("test2", "anydb", "require"),
    ("test1", "realmdb", "require"),
    ("test1", "mapdb", "require"),
    ("test2", "mapdb", "require"),
    ("test2", "trustdb", "require"),
]


@pytest.mark.parametrize(("user", "database", "gssencmode"), CASES)
def test_same_outcome_as_postgresql_15(
    user: str, database: str, gssencmode: str, ticket: Path, postgres15: int, gateway: Gateway
) -> None:
    options = {"user": user, "dbname": database, "gssencmode": gssencmode}
    expected = outcome(postgres15, ticket, **options)
    actual = outcome(gateway.port, ticket, **options)
    assert actual == expected, f"\nPostgreSQL 15: {expected}\npggate:        {actual}"
