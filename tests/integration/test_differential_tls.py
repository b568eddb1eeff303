"""The same TLS clients against real PostgreSQL 15 (Debian's, built with OpenSSL) and against
pggate, both with the same certificates, ssl_ca_file, ssl_crl_file and pg_hba.conf: what libpq
reports must be the same (success as the same role, or the same FATAL)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import DEBIAN_PG_BINDIR, Gateway, GatewayFactory, free_port, wait_for_port
from tls_support import CN_HOST, Pki, make_pki

from pggate import embedded

pytestmark = pytest.mark.integration

HBA = """\
hostssl   sslonly  all    127.0.0.1/32 trust
hostnossl plainonly all   127.0.0.1/32 trust
hostssl   certdb   all    127.0.0.1/32 cert
hostssl   verifydb all    127.0.0.1/32 trust clientcert=verify-full
hostssl   cadb     all    127.0.0.1/32 trust clientcert=verify-ca
host      postgres postgres 127.0.0.1/32 trust
"""
DATABASES = ("sslonly", "plainonly", "certdb", "verifydb", "cadb")


class TlsCluster(embedded.EmbeddedCluster):
    """The embedded cluster on TCP with TLS, for comparison with pggate."""

    def _settings(self, quoted: bool = True) -> dict[str, str]:
        settings = super()._settings(quoted)
        settings["listen_addresses"] = "'127.0.0.1'" if quoted else "127.0.0.1"
        return settings


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    base = Path(tempfile.mkdtemp(prefix="pggate-diff-pki-"))
    os.chmod(base, 0o755)
    yield make_pki(base / "pki")
    shutil.rmtree(base, ignore_errors=True)


def tls_files(directory: Path, pki: Pki, owner: str | None) -> str:
    """Copy server cert/key, client CA and CRL into ``directory``; the settings naming them."""
    pair = pki.server_cn_only
    for name, source in (
        ("server.crt", pair.crt),
        ("server.key", pair.key_path),
        ("root.crt", pki.client_ca),
        ("root.crl", pki.client_crl),
    ):
        target = directory / name
        target.write_bytes(source.read_bytes())
        target.chmod(0o600)
        if owner is not None:
            shutil.chown(target, owner)
    return (
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
        "ssl_ca_file = 'root.crt'\nssl_crl_file = 'root.crl'\n"
    )


@pytest.fixture(scope="module")
def postgres15(pki: Pki) -> Iterator[int]:
    if not (DEBIAN_PG_BINDIR / "postgres").exists():
        pytest.skip("Debian's PostgreSQL 15 (built with OpenSSL) is not installed")
    base = Path(tempfile.mkdtemp(prefix="pggate-pg15-"))
    os.chmod(base, 0o755)
    port = free_port()
    user = embedded.run_as_user()
    cluster = TlsCluster(
        data_dir=base / "pgdata",
        socket_dir=base / "run",
        bindir=DEBIAN_PG_BINDIR,
        run_as=user,
        port=port,
    )
    cluster.init()
    conf = cluster.data_dir / "postgresql.conf"
    settings = tls_files(cluster.data_dir, pki, user)
    conf.write_text(conf.read_text() + settings)
    hba = cluster.data_dir / "pg_hba.conf"
    hba.write_text(hba.read_text() + HBA)
    cluster.start()
    try:
        wait_for_port(port, time.monotonic() + 30, None)
        with psycopg.connect(cluster.conninfo, autocommit=True) as conn:
            conn.execute("CREATE ROLE alice LOGIN")
            conn.execute("CREATE ROLE bob LOGIN")
            for database in DATABASES:
                conn.execute(f"CREATE DATABASE {database}".encode())
        yield port
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def databases(backend: object) -> None:
    """The same databases on the backend pggate fronts."""
    from conftest import Backend

    assert isinstance(backend, Backend)
    with psycopg.connect(backend.conninfo, autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("select datname from pg_database")}
        for database in DATABASES:
            if database not in existing:
                conn.execute(f"CREATE DATABASE {database}".encode())


@pytest.fixture
def gateway(make_gateway: GatewayFactory, pki: Pki, databases: None) -> Gateway:
    def install_tls(directory: Path) -> None:
        conf = directory / "pggate.conf"
        conf.write_text(conf.read_text() + tls_files(directory, pki, None))

    return make_gateway(hba=HBA, setup=install_tls)


def outcome(port: int, **options: str) -> str:
    """'ok as ROLE' or the server's FATAL text as libpq reports it (port numbers removed)."""
    values = {
        "host": CN_HOST,
        "hostaddr": "127.0.0.1",
        "port": str(port),
        "gssencmode": "disable",
        "connect_timeout": "10",
    }
    values.update(options)
    dsn = " ".join(f"{key}={value}" for key, value in values.items())
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("select current_user").fetchone()
            return f"ok as {row[0] if row else '?'}"
    except psycopg.OperationalError as exc:
        text = re.sub(r"port \d+", "port N", str(exc))
        return text.split("failed: ", 1)[-1].strip()


def client_cert(pki: Pki, name: str) -> dict[str, str]:
    pair = getattr(pki, name)
    return {"sslcert": str(pair.crt), "sslkey": str(pair.key_path)}


CASES: list[tuple[str, str, str, str | None]] = [
    # (user, database, sslmode, client certificate)
    ("alice", "sslonly", "require", None),
    ("alice", "sslonly", "disable", None),
    ("alice", "plainonly", "require", None),
    ("alice", "plainonly", "prefer", None),
    ("alice", "certdb", "require", None),
    ("alice", "certdb", "require", "client"),
    ("bob", "certdb", "require", "client"),
    ("alice", "certdb", "require", "client_revoked"),
    ("alice", "certdb", "require", "client_wrong_ca"),
    ("alice", "verifydb", "require", "client"),
    ("bob", "verifydb", "require", "client"),
    ("bob", "cadb", "require", "client"),
    ("bob", "cadb", "require", None),
]


@pytest.mark.parametrize(("user", "database", "sslmode", "cert"), CASES)
def test_same_outcome_as_postgresql_15(
    user: str,
    database: str,
    sslmode: str,
    cert: str | None,
    pki: Pki,
    postgres15: int,
    gateway: Gateway,
) -> None:
    options = {"user": user, "dbname": database, "sslmode": sslmode}
    if cert is not None:
        options.update(client_cert(pki, cert))
    expected = outcome(postgres15, **options)
    actual = outcome(gateway.port, **options)
    assert actual == expected, textwrap.dedent(f"""
        PostgreSQL 15: {expected}
        pggate:        {actual}""")
