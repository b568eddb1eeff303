"""SCRAM pass-through: pggate logs in to a backend that does not trust it, as the client's role,
with the keys recovered from the client's own SCRAM login (never the password)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import DEBIAN_PG_BINDIR, Backend, GatewayFactory, login_error

from pggate import embedded

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def strict_backend() -> Iterator[Backend]:
    """A PostgreSQL that trusts only its superuser on the socket; everyone else needs SCRAM."""
    base = Path(tempfile.mkdtemp(prefix="pggate-strict-"))
    os.chmod(base, 0o755)
    bindir = str(DEBIAN_PG_BINDIR) if (DEBIAN_PG_BINDIR / "postgres").exists() else None
    cluster = embedded.EmbeddedCluster(
        data_dir=base / "pgdata",
        socket_dir=base / "run",
        bindir=embedded.find_postgres_bindir(bindir),
        run_as=embedded.run_as_user(),
    )
    cluster.init()
    cluster.start()
    backend = Backend(cluster)
    backend.execute(
        "SET password_encryption = 'scram-sha-256'",
        "CREATE ROLE carol LOGIN PASSWORD 'carol-secret-1'",
    )
    hba = cluster.data_dir / "pg_hba.conf"
    hba.write_text("local all postgres trust\nlocal all all scram-sha-256\n")
    backend.execute("SELECT pg_reload_conf()")
    try:
        yield backend
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_scram_client_is_passed_through(
    strict_backend: Backend, make_gateway: GatewayFactory
) -> None:
    gateway = make_gateway(
        hba="host all all 127.0.0.1/32 scram-sha-256\n",
        conf=f"backend = '{strict_backend.conninfo}'\n",
    )
    dsn = gateway.dsn(user="carol", password="carol-secret-1")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select current_user").fetchone() == ("carol",)
    assert "carol-secret-1" not in gateway.log()


def test_trusted_client_cannot_reach_a_strict_backend(
    strict_backend: Backend, make_gateway: GatewayFactory
) -> None:
    gateway = make_gateway(conf=f"backend = '{strict_backend.conninfo}'\n")
    sqlstate, message = login_error(gateway.port, user="carol")
    assert (sqlstate, message) == ("08006", "could not log in to the backend server")
    assert "neither a password for this role nor SCRAM keys" in gateway.log()
