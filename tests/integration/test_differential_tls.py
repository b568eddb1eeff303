"""The same TLS clients against real PostgreSQL 15 (Debian's, built with OpenSSL) and against
pggate, both with the same certificates, ssl_ca_file, ssl_crl_file and pg_hba.conf: what libpq
reports must be the same (success as the same role, or the same FATAL)."""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DEBIAN_PG_BINDIR, Backend, Gateway, GatewayFactory
from reference import TcpCluster, create_objects, libpq_outcome, owned_copy, reference_server
from tls_support import CN_HOST, Pki, make_pki

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
ROLES = ("CREATE ROLE alice LOGIN", "CREATE ROLE bob LOGIN")


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
        owned_copy(source, directory / name, owner)
    return (
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
        "ssl_ca_file = 'root.crt'\nssl_crl_file = 'root.crl'\n"
    )


@pytest.fixture(scope="module")
def postgres15(pki: Pki) -> Iterator[int]:
    if not (DEBIAN_PG_BINDIR / "postgres").exists():
        pytest.skip("Debian's PostgreSQL 15 (built with OpenSSL) is not installed")

    def install_tls(cluster: TcpCluster, base: Path) -> str:
        return tls_files(cluster.data_dir, pki, cluster.run_as)

    with reference_server(DEBIAN_PG_BINDIR, hba=HBA, prepare=install_tls) as cluster:
        create_objects(cluster.conninfo, ROLES, DATABASES)
        yield cluster.port


@pytest.fixture(scope="module")
def databases(backend: Backend) -> None:
    """The same databases on the backend pggate fronts."""
    create_objects(backend.conninfo, ROLES, DATABASES)


@pytest.fixture
def gateway(make_gateway: GatewayFactory, pki: Pki, databases: None) -> Gateway:
    def install_tls(directory: Path) -> None:
        conf = directory / "pggate.conf"
        conf.write_text(conf.read_text() + tls_files(directory, pki, None))

    return make_gateway(hba=HBA, setup=install_tls)


def outcome(port: int, **options: str) -> str:
    values = {
        "host": CN_HOST,
        "hostaddr": "127.0.0.1",
        "port": str(port),
        "gssencmode": "disable",
        "connect_timeout": "10",
    }
    return libpq_outcome({**values, **options})


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
