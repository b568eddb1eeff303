"""Real clients through pggate to a real PostgreSQL: queries, COPY, cancel, concurrency."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time

import asyncpg
import pg8000.native
import psycopg
import pytest
from conftest import Gateway, GatewayFactory, login_error

pytestmark = pytest.mark.integration


def test_psql_runs_a_query(gateway: Gateway) -> None:
    result = subprocess.run(
        ["psql", gateway.dsn(), "-XAtc", "select current_user, 40 + 2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "postgres|42"


def test_psycopg_connects_as_the_requested_role(gateway: Gateway) -> None:
    with psycopg.connect(gateway.dsn(user="alice", dbname="appdb")) as conn:
        row = conn.execute("select current_user, current_database()").fetchone()
    assert row == ("alice", "appdb")


def test_psycopg_sees_backend_parameters(gateway: Gateway) -> None:
    with psycopg.connect(gateway.dsn(application_name="via-gate")) as conn:
        assert conn.info.parameter_status("application_name") == "via-gate"
        assert conn.info.parameter_status("server_version")
        assert conn.info.backend_pid > 0
        assert conn.execute("show application_name").fetchone() == ("via-gate",)


def test_asyncpg_query_and_prepared_statements(gateway: Gateway) -> None:
    async def main() -> list[int]:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=gateway.port, user="bob", database="postgres", ssl=False
        )
        try:
            stmt = await conn.prepare("select generate_series(1, $1::int)")
            return [r[0] for r in await stmt.fetch(5)]
        finally:
            await conn.close()

    assert asyncio.run(main()) == [1, 2, 3, 4, 5]


def test_pg8000_query(gateway: Gateway) -> None:
    conn = pg8000.native.Connection(
        "alice", host="127.0.0.1", port=gateway.port, database="appdb", ssl_context=None
    )
    try:
        assert conn.run("select :a::int * 2", a=21) == [[42]]
    finally:
        conn.close()


def test_copy_out_and_in_100_megabytes(gateway: Gateway) -> None:
    total = 100 * 1024 * 1024
    line = b"x" * 1023 + b"\n"
    rows = total // len(line)
    with psycopg.connect(gateway.dsn()) as conn:
        received = 0
        query = f"copy (select repeat('x', 1023) from generate_series(1, {rows})) to stdout"
        with conn.cursor().copy(query) as copy:
            for chunk in copy:
                received += len(chunk)
        assert received == rows * len(line)

        conn.execute("create temp table sink (t text)")
        with conn.cursor().copy("copy sink from stdin") as copy:
            block = line * 1024
            for _ in range(rows // 1024):
                copy.write(block)
        count = conn.execute("select count(*), sum(length(t)) from sink").fetchone()
    assert count == (rows // 1024 * 1024, rows // 1024 * 1024 * 1023)


def test_cancel_through_the_gateway(gateway: Gateway) -> None:
    with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
        timer = threading.Timer(0.5, conn.cancel_safe)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("select pg_sleep(30)")
        timer.join()
        assert time.monotonic() - started < 20
        assert conn.execute("select 1").fetchone() == (1,)


def test_asyncpg_timeout_cancels_the_query(gateway: Gateway) -> None:
    async def main() -> int:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=gateway.port, user="postgres", ssl=False
        )
        try:
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetch("select pg_sleep(30)", timeout=0.5)
            value = await conn.fetchval("select 7")
            assert isinstance(value, int)
            return value
        finally:
            await conn.close()

    assert asyncio.run(main()) == 7


def test_two_hundred_concurrent_sessions(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(conf="max_connections = 250\n")

    async def one(i: int) -> int:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=gateway.port, user="postgres", ssl=False, timeout=60
        )
        try:
            await conn.execute("select pg_sleep(0.2)")
            return int(await conn.fetchval("select $1::int", i))
        finally:
            await conn.close()

    async def main() -> list[int]:
        return await asyncio.gather(*(one(i) for i in range(200)))

    assert sorted(asyncio.run(main())) == list(range(200))


def test_backend_error_after_login_reaches_the_client(gateway: Gateway) -> None:
    with pytest.raises(psycopg.OperationalError, match='database "nosuchdb" does not exist'):
        psycopg.connect(gateway.dsn(dbname="nosuchdb"))
    with pytest.raises(psycopg.OperationalError, match='role "nologin_role" is not permitted'):
        psycopg.connect(gateway.dsn(user="nologin_role"))
    with pytest.raises(psycopg.OperationalError, match='role "ghost" does not exist'):
        psycopg.connect(gateway.dsn(user="ghost"))
    with pytest.raises(psycopg.OperationalError, match="unrecognized configuration parameter"):
        psycopg.connect(gateway.dsn(options="'-c no_such_setting=1'"))
    # and the gateway keeps serving
    with psycopg.connect(gateway.dsn()) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_sqlstate_of_backend_errors_is_preserved(gateway: Gateway) -> None:
    assert login_error(gateway.port, database="nosuchdb") == (
        "3D000",
        'database "nosuchdb" does not exist',
    )
    assert login_error(gateway.port, user="ghost") == ("28000", 'role "ghost" does not exist')


def test_fast_shutdown_sends_the_backends_fatal(make_gateway: GatewayFactory) -> None:
    """SIGINT: like PostgreSQL's fast shutdown, clients get FATAL 57P01 at a message boundary."""
    gateway = make_gateway()
    conn = psycopg.connect(gateway.dsn(), autocommit=True)
    try:
        assert conn.execute("select 1").fetchone() == (1,)
        assert gateway.stop(signal.SIGINT) == 0
        with pytest.raises(
            psycopg.OperationalError, match="terminating connection due to administrator command"
        ):
            conn.execute("select 1")
    finally:
        conn.close()
