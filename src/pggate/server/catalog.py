"""Catalog look-ups on the backend, over short-lived connections as pggate's own role."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from pggate.conninfo import BackendAddress
from pggate.hop.route import DEFAULT_ROLE, Route
from pggate.proto import codec, query
from pggate.proto.backend import LoginFailed
from pggate.server import upstream
from pggate.server.link import LinkFacts

Rows = list[list[str | None]]


async def run_query(route: Route, sql: str, address: BackendAddress | None = None) -> Rows:
    """Run one fixed query as pggate's own role and return its rows (on ``address`` when
    given, else where the conninfo's rules lead)."""
    rows, _ = await run_query_reporting(route, sql, address)
    return rows


async def run_query_reporting(
    route: Route, sql: str, address: BackendAddress | None = None
) -> tuple[Rows, Mapping[str, str]]:
    """run_query, plus the ParameterStatus values the backend reported at login."""
    found = await run_query_on(route, sql, address)
    return found.rows, found.parameters


@dataclass(frozen=True, slots=True)
class Found:
    """A catalog query's rows, and what its login learned: the ParameterStatus values, the
    host it ran on and the link (TLS or not)."""

    rows: Rows
    parameters: Mapping[str, str]
    address: BackendAddress
    link: LinkFacts


async def run_query_on(route: Route, sql: str, address: BackendAddress | None = None) -> Found:
    """run_query with everything the login learned (``check --connect`` shows it)."""
    target = route.target
    role = target.user or DEFAULT_ROLE
    params = {
        "user": role,
        "database": target.dbname or role,
        "application_name": target.application_name,
    }
    session = await upstream.login(route, role, params, address)
    if isinstance(session, LoginFailed):
        raise upstream.backend_unavailable(
            f"catalog login as {role!r} failed: {session.error.message}"
        )
    result = query.QueryResult()
    try:
        session.transport.write(query.simple_query(sql))
        async with asyncio.timeout(route.connect_timeout):
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
    return Found(result.rows, session.login.parameters, session.address, session.link)


async def role_memberships(route: Route, user: str) -> frozenset[str]:
    """All roles ``user`` is a member of (itself included), for ``+role``/``samerole``."""
    try:
        sql = query.role_memberships_sql(user)
        sql.encode()
    except (UnicodeEncodeError, ValueError):
        return frozenset()  # a name the backend cannot hold belongs to no role
    rows = await run_query(route, sql)
    return frozenset(row[0] for row in rows if row[0] is not None)


async def terminate_backends(route: Route, address: BackendAddress, pids: list[int]) -> None:
    """pg_terminate_backend for each PID on ``address`` (fast shutdown); needs pggate's role
    to be allowed."""
    listed = ",".join(str(int(pid)) for pid in pids)
    await run_query(
        route,
        f"SELECT pg_catalog.pg_terminate_backend(pid) FROM unnest(ARRAY[{listed}]::int[]) AS pid",
        address,
    )
