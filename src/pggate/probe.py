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
from pggate.hba.methods import PASSWORD_METHODS
from pggate.hop.route import DEFAULT_ROLE
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


@dataclass(slots=True)
class ProbeReport:
    """What ``check --connect`` prints: ``lines`` to show, ``problems`` that fail the check."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _yes(value: str | None) -> bool:
    return value == "t"


def _link(found: catalog.Found, sslmode: str) -> str:
    facts = found.link
    if facts.gss:
        return f"GSSAPI-encrypted (as {facts.gss_principal})"
    if facts.encrypted:
        return f"TLS ({facts.tls_version}, {facts.cipher}; sslmode={sslmode})"
    if found.address.is_unix_socket:
        return "not encrypted (Unix socket; libpq uses no TLS there either)"
    return f"not encrypted (sslmode={sslmode})"


def _role(parameters: Mapping[str, str]) -> str:
    standby = parameters.get("in_hot_standby")
    if standby is None:
        return "role unknown (the server does not report in_hot_standby)"
    return "standby" if standby == "on" else "primary"


async def probe(policy: policy_module.Policy) -> ProbeReport:
    """Log in to each backend host as pggate's role and run the probe query there; never
    raises for a backend refusal. A host that cannot be reached is listed; the check fails
    only when no host can be used."""
    route = policy.backend
    target = route.target
    report = ProbeReport()
    role = target.user or DEFAULT_ROLE
    attrs = target.target_session_attrs
    report.lines.append(
        f'backend: {route.describe()} as role "{role}" (target_session_attrs={attrs})'
    )
    first: catalog.Found | None = None
    for address in route.addresses:
        try:
            found = await catalog.run_query_on(route, _PROBE_SQL, address)
        except ClientError as err:
            report.lines.append(f"  {address.describe()}: unreachable: {err.log_detail or err}")
            continue
        first = first or found
        report.lines += [
            f"  {address.describe()}: {_role(found.parameters)}",
            f"    server: {found.rows[0][0]}",
            f"    link: {_link(found, address.sslmode)}",
        ]
    if first is None:
        report.problems.append("could not log in to any backend host")
        return report
    _, authid, members, control, terminate = first.rows[0]
    reported = first.parameters
    report.lines.append(
        f"  scram_iterations reported: {reported.get('scram_iterations', '(not reported)')}"
    )
    needs_secrets = any(rule.method in PASSWORD_METHODS for rule in policy.hba.rules)
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
