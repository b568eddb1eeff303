"""SCRAM pass-through: pggate logs in to a backend that does not trust it, as the client's role,
with the keys recovered from the client's own SCRAM login (never the password)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from conftest import Backend, GatewayFactory, debian_bindir, login_error, throwaway_backend

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def strict_backend() -> Iterator[Backend]:
    """A PostgreSQL that trusts only its superuser on the socket; everyone else needs SCRAM."""
    with throwaway_backend("pggate-strict-", debian_bindir()) as backend:
        yield _strict(backend)


def _strict(backend: Backend) -> Backend:
    backend.execute(
        "SET password_encryption = 'scram-sha-256'",
        "CREATE ROLE carol LOGIN PASSWORD 'carol-secret-1'",
    )
    hba = backend.cluster.data_dir / "pg_hba.conf"
    hba.write_text("local all postgres trust\nlocal all all scram-sha-256\n")
    backend.execute("SELECT pg_reload_conf()")
    return backend


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
    # Logged as the session ends, which may be after the client has read its error.
    gateway.wait_for_log("neither a password for this role nor SCRAM keys")
