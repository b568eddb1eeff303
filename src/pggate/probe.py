"""``pggate check --connect``: log in to the backend as serve would, and say what was found.

The login and the queries are the ones serve runs (``server.catalog``), as pggate's own role:
if this succeeds, serve's role look-ups, verifier reads and fast shutdown will work; if a line
says "no", the feature that needs it is named. Nothing here is secret: conninfo passwords are
never printed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pggate import policy as policy_module
from pggate.conninfo import BackendAddress
from pggate.proto.errors import ClientError
from pggate.server import catalog

# One fixed query, no client input: each column answers one of serve's needs.
_PROBE_SQL = (
    "SELECT pg_catalog.version(), "
    "pg_catalog.has_table_privilege('pg_catalog.pg_authid', 'SELECT'), "
    "pg_catalog.has_table_privilege('pg_catalog.pg_auth_members', 'SELECT'), "
    "pg_catalog.has_function_privilege('pg_catalog.pg_control_init()', 'EXECUTE'), "
    "pg_catalog.has_function_privilege(COALESCE("
    "pg_catalog.to_regprocedure('pg_catalog.pg_terminate_backend(integer, bigint)'), "
    "pg_catalog.to_regprocedure('pg_catalog.pg_terminate_backend(integer)')), 'EXECUTE')"
)
_PASSWORD_METHODS = frozenset({"password", "md5", "scram-sha-256"})


@dataclass(slots=True)
class ProbeReport:
    """What ``check --connect`` prints: ``lines`` to show, ``problems`` that fail the check."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _yes(value: str | None) -> bool:
    return value == "t"


def _link(address: BackendAddress) -> str:
    if address.is_unix_socket:
        return "not encrypted (Unix socket; libpq uses no TLS there either)"
    return "not encrypted (sslmode=disable)"


async def probe(policy: policy_module.Policy) -> ProbeReport:
    """Log in as pggate's role and run the probe query; never raises for a backend refusal."""
    address = policy.backend
    report = ProbeReport()
    role = address.user or catalog.DEFAULT_ROLE
    report.lines.append(f'backend: {address.describe()} as role "{role}"')
    try:
        rows, reported = await catalog.run_query_reporting(address, _PROBE_SQL)
    except ClientError as err:
        report.problems.append(f"could not log in to the backend: {err.log_detail or err}")
        return report
    version, authid, members, control, terminate = rows[0]
    report.lines += [
        f"  server: {version}",
        f"  link: {_link(address)}",
        f"  scram_iterations reported: {reported.get('scram_iterations', '(not reported)')}",
    ]
    needs_secrets = any(rule.method in _PASSWORD_METHODS for rule in policy.hba.rules)
    checks = [
        (authid, "pg_authid readable", "password, md5 and scram-sha-256 logins", needs_secrets),
        (members, "role memberships readable", "+role and samerole", policy.hba.needs_roles),
        (control, "pg_control_init() allowed", "stable mock salts for unknown roles", False),
        (terminate, "pg_terminate_backend allowed", "fast shutdown's FATAL to clients", False),
    ]
    for value, what, needed_for, required in checks:
        if _yes(value):
            report.lines.append(f"  {what}: yes")
        elif required:
            report.problems.append(f"{what}: no (needed for {needed_for})")
        else:
            report.lines.append(f"  {what}: no ({needed_for} will not be available)")
    return report


def run(directory: Path, overrides: Mapping[str, str]) -> ProbeReport:
    """Probe a gateway directory's backend. The embedded cluster is started for the probe
    when no server runs it (serve would start it too) and stopped again."""
    from pggate import embedded

    policy = policy_module.load(directory, overrides)
    cluster = None
    if policy.embedded:
        cluster = embedded.EmbeddedCluster.for_gateway(
            directory, bindir=policy.config.postgres_bindir or None
        )
        if cluster.is_running():
            cluster = None
        else:
            cluster.start()
    try:
        return asyncio.run(probe(policy))
    finally:
        if cluster is not None:
            cluster.stop()
