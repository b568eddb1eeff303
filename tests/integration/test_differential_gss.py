"""Kerberos logins against real PostgreSQL 15 (built with GSSAPI) and against pggate, with the
same keytab, pg_hba.conf and pg_ident.conf: libpq must report the same outcome."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import DEBIAN_PG_BINDIR, Backend, Gateway, GatewayFactory, free_port, wait_for_port
from kdc import Realm
from test_gss import credentials_cache

from pggate import embedded

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


def create_objects(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        roles = {row[0] for row in conn.execute("select rolname from pg_roles")}
        for role in ("test1", "test2"):
            if role not in roles:
                conn.execute(f"CREATE ROLE {role} LOGIN".encode())
        existing = {row[0] for row in conn.execute("select datname from pg_database")}
        for database in DATABASES:
            if database not in existing:
                conn.execute(f"CREATE DATABASE {database}".encode())


class TcpCluster(embedded.EmbeddedCluster):
    def _settings(self, quoted: bool = True) -> dict[str, str]:
        settings = super()._settings(quoted)
        settings["listen_addresses"] = "'127.0.0.1'" if quoted else "127.0.0.1"
        return settings


@pytest.fixture(scope="module")
def postgres15(kdc: Realm) -> Iterator[int]:
    if not (DEBIAN_PG_BINDIR / "postgres").exists():
        pytest.skip("Debian's PostgreSQL 15 is not installed")
    base = Path(tempfile.mkdtemp(prefix="pggate-pg15gss-"))
    os.chmod(base, 0o755)
    port = free_port()
    user = embedded.run_as_user()
    cluster = TcpCluster(
        data_dir=base / "pgdata",
        socket_dir=base / "run",
        bindir=DEBIAN_PG_BINDIR,
        run_as=user,
        port=port,
    )
    cluster.init()
    keytab = cluster.data_dir / "krb5.keytab"
    shutil.copy(kdc.keytab, keytab)
    keytab.chmod(0o600)
    # krb5.conf must be readable by the cluster's user too.
    krb5_conf = base / "krb5.conf"
    shutil.copy(kdc.krb5_conf, krb5_conf)
    krb5_conf.chmod(0o644)
    if user is not None:
        shutil.chown(keytab, user)
    conf = cluster.data_dir / "postgresql.conf"
    conf.write_text(conf.read_text() + f"krb_server_keyfile = 'FILE:{keytab}'\n")
    (cluster.data_dir / "pg_hba.conf").write_text(
        (cluster.data_dir / "pg_hba.conf").read_text() + HBA
    )
    (cluster.data_dir / "pg_ident.conf").write_text(IDENT)
    rcache = base / "rcache"  # the replay cache, writable by the cluster's user
    rcache.mkdir()
    if user is not None:
        shutil.chown(rcache, user)
    server_env = {"KRB5_CONFIG": str(krb5_conf), "KRB5RCACHEDIR": str(rcache)}
    saved = {name: os.environ.get(name) for name in server_env}
    os.environ.update(server_env)
    try:
        cluster.start()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        wait_for_port(port, time.monotonic() + 30, None)
        create_objects(cluster.conninfo)
        yield port
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def same_objects(backend: Backend) -> None:
    create_objects(backend.conninfo)


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
    values.update(options)
    dsn = " ".join(f"{key}={value}" for key, value in values.items())
    with credentials_cache(ccache):
        try:
            with psycopg.connect(dsn) as conn:
                row = conn.execute(
                    "select current_user, coalesce((select encrypted from pg_stat_gssapi "
                    "where pid = pg_backend_pid()), false)"
                ).fetchone()
                assert row is not None
                return f"ok as {row[0]}, encrypted={conn.info.pgconn.used_gssapi}"
        except psycopg.OperationalError as exc:
            return re.sub(r"port \d+", "port N", str(exc)).split("failed: ", 1)[-1].strip()


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
