"""A real PostgreSQL on a loopback TCP port, to compare pggate with (the differential tests).

No test functions here: ``reference_server`` starts a throwaway cluster with a given
pg_hba.conf, settings and files; ``libpq_outcome`` reduces a login to what a user would compare
(the role, or libpq's error text with port numbers removed); ``create_objects`` makes the same
roles and databases on both servers.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import psycopg
from conftest import free_port, wait_for_port
from kdc import exported

from pggate import embedded


class TcpCluster(embedded.EmbeddedCluster):
    """The embedded cluster, but also listening on 127.0.0.1 (it is a reference server)."""

    def _settings(self, quoted: bool = True) -> dict[str, str]:
        settings = super()._settings(quoted)
        settings["listen_addresses"] = "'127.0.0.1'" if quoted else "127.0.0.1"
        return settings


@contextlib.contextmanager
def reference_server(
    bindir: Path,
    *,
    hba: str,
    ident: str = "",
    prepare: Callable[[TcpCluster, Path], str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[TcpCluster]:
    """Start PostgreSQL from ``bindir`` with ``hba`` appended to its pg_hba.conf.

    ``prepare(cluster, base)`` may install files and returns postgresql.conf lines; ``env`` is
    set while the server starts (it inherits it).
    """
    base = Path(tempfile.mkdtemp(prefix="pggate-reference-"))
    os.chmod(base, 0o755)
    user = embedded.run_as_user()
    cluster = TcpCluster(
        data_dir=base / "pgdata",
        socket_dir=base / "run",
        bindir=embedded.bindir_for_user(bindir, user),
        run_as=user,
        port=free_port(),
    )
    cluster.init()
    data = cluster.data_dir
    settings = prepare(cluster, base) if prepare is not None else ""
    (data / "postgresql.conf").write_text((data / "postgresql.conf").read_text() + settings)
    (data / "pg_hba.conf").write_text((data / "pg_hba.conf").read_text() + hba)
    if ident:
        (data / "pg_ident.conf").write_text(ident)
    with exported(env or {}):
        cluster.start()
    try:
        wait_for_port(cluster.port, time.monotonic() + 30, None)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def owned_copy(source: Path, target: Path, user: str | None) -> None:
    """A 0600 copy the cluster's user owns (keys, keytabs)."""
    target.write_bytes(source.read_bytes())
    target.chmod(0o600)
    if user is not None:
        shutil.chown(target, user)


def create_objects(conninfo: str, roles: Iterable[str], databases: Iterable[str]) -> None:
    """Run each ``CREATE ROLE`` statement whose role is missing, create missing databases."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("select rolname from pg_roles")}
        for statement in roles:
            role = re.search(r"ROLE (\w+)", statement)
            if role is None or role.group(1) not in existing:
                conn.execute(statement.encode())
        present = {row[0] for row in conn.execute("select datname from pg_database")}
        for database in databases:
            if database not in present:
                conn.execute(f"CREATE DATABASE {database}".encode())


def libpq_outcome(
    options: Mapping[str, str],
    describe: Callable[[psycopg.Connection[tuple[object, ...]]], str] | None = None,
) -> str:
    """'ok as ROLE' (plus ``describe(conn)``), or the error as libpq reports it."""
    dsn = " ".join(f"{key}='{value}'" for key, value in options.items())
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("select current_user").fetchone()
            text = f"ok as {row[0] if row else '?'}"
            return text + (describe(conn) if describe is not None else "")
    except psycopg.OperationalError as exc:
        return re.sub(r"port \d+", "port N", str(exc)).split("failed: ", 1)[-1].strip()
