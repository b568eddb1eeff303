"""Catalog look-ups on the backend, over short-lived connections as pggate's own role."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from pggate.conninfo import BackendAddress
from pggate.proto import codec, query
from pggate.proto.backend import LoginFailed
from pggate.server import upstream

DEFAULT_ROLE = "postgres"


Rows = list[list[str | None]]


async def run_query(address: BackendAddress, sql: str) -> Rows:
    """Run one fixed query as pggate's own role and return its rows."""
    rows, _ = await run_query_reporting(address, sql)
    return rows


async def run_query_reporting(address: BackendAddress, sql: str) -> tuple[Rows, Mapping[str, str]]:
    """run_query, plus the ParameterStatus values the backend reported at login."""
    role = address.user or DEFAULT_ROLE
    params = {
        "user": role,
        "database": address.dbname or role,
        "application_name": address.application_name,
    }
    session = await upstream.login(address, role, params)
    if isinstance(session, LoginFailed):
        raise upstream.backend_unavailable(
            f"catalog login as {role!r} failed: {session.error.message}"
        )
    result = query.QueryResult()
    try:
        session.transport.write(query.simple_query(sql))
        async with asyncio.timeout(address.connect_timeout):
            while not result.receive(session.protocol.take()):
                if not await session.protocol.wait_for_data():
                    raise upstream.backend_unavailable("backend closed during catalog query")
    except TimeoutError:
        raise upstream.backend_unavailable("catalog query timed out") from None
    finally:
        session.transport.write(codec.terminate())
        session.transport.close()
    if result.error is not None:
        raise upstream.backend_unavailable(f"catalog query failed: {result.error.get('M')}")
    return result.rows, session.login.parameters


async def role_memberships(address: BackendAddress, user: str) -> frozenset[str]:
    """All roles ``user`` is a member of (itself included), for ``+role``/``samerole``."""
    try:
        sql = query.role_memberships_sql(user)
        sql.encode()
    except (UnicodeEncodeError, ValueError):
        return frozenset()  # a name the backend cannot hold belongs to no role
    rows = await run_query(address, sql)
    return frozenset(row[0] for row in rows if row[0] is not None)


async def terminate_backends(address: BackendAddress, pids: list[int]) -> None:
    """pg_terminate_backend for each PID (fast shutdown); needs pggate's role to be allowed."""
    listed = ",".join(str(int(pid)) for pid in pids)
    await run_query(
        address,
        f"SELECT pg_catalog.pg_terminate_backend(pid) FROM unnest(ARRAY[{listed}]::int[]) AS pid",
    )
