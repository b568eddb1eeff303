"""First-match evaluation of pg_hba.conf rules: ``hba.c:check_hba``, pure.

Everything the server must look up (role membership, the verified host name, local interface
addresses) arrives precomputed in ``ConnectionFacts``; ``HbaPolicy.needs_*`` says which lookups
a given policy can use, so the I/O shell does only those.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface

from pggate.hba.address import AddressKind, AddressSpec, IPAddress, in_range
from pggate.hba.methods import AuthMethod, ConnType
from pggate.hba.names import Replication, database_matches, role_matches
from pggate.hba.rule import HbaRule
from pggate.pgtext import ascii_lower


@dataclass(frozen=True, slots=True)
class ConnectionFacts:
    """What ``check_hba`` looks at for one connection.

    ``hostname``: the client's host name only if the reverse lookup succeeded *and* its
    forward lookup returned the client address (``check_hostname``); else None.
    ``roles``: every role the user is a member of, directly or indirectly, *including the
    user's own name* when that role exists (PostgreSQL counts a role as a member of itself),
    never implied by superuser status; empty for a user that does not exist; None when not
    looked up (then a rule that needs it raises ValueError).
    ``local_interfaces``: this host's interface addresses with their netmasks.
    """

    is_local: bool
    ssl: bool
    gss: bool
    address: IPAddress | None
    hostname: str | None
    database: str
    user: str
    replication: Replication = "none"
    roles: frozenset[str] | None = None
    local_interfaces: tuple[IPv4Interface | IPv6Interface, ...] = ()

    @property
    def host_text(self) -> str:
        """The client as PostgreSQL names it in messages (``NI_NUMERICHOST``)."""
        if self.is_local or self.address is None:
            return "[local]"
        return str(self.address)

    @property
    def encryption_text(self) -> str:
        """The last ``%s`` of the hba FATALs; GSS is checked before SSL (``auth.c``)."""
        if self.gss:
            return "GSS encryption"
        if self.ssl:
            return "SSL encryption"
        return "no encryption"


def _type_matches(conn_type: ConnType, facts: ConnectionFacts) -> bool:
    if conn_type is ConnType.LOCAL:
        return facts.is_local
    if facts.is_local:
        return False
    if conn_type is ConnType.HOSTSSL and not facts.ssl:
        return False
    if conn_type is ConnType.HOSTNOSSL and facts.ssl:
        return False
    if conn_type is ConnType.HOSTGSSENC and not facts.gss:
        return False
    return not (conn_type is ConnType.HOSTNOGSSENC and facts.gss)


def hostname_matches(pattern: str, actual: str) -> bool:
    """``hostname_match``: ASCII case-insensitive; a leading ``.`` matches a suffix."""
    if pattern.startswith("."):
        return len(actual) >= len(pattern) and ascii_lower(
            actual[len(actual) - len(pattern) :]
        ) == ascii_lower(pattern)
    return ascii_lower(pattern) == ascii_lower(actual)


def _address_matches(spec: AddressSpec, facts: ConnectionFacts) -> bool:
    if spec.kind is AddressKind.ALL:
        return True
    client = facts.address
    if client is None:
        return False
    if spec.kind is AddressKind.HOSTNAME:
        assert spec.hostname is not None
        return facts.hostname is not None and hostname_matches(spec.hostname, facts.hostname)
    if spec.kind is AddressKind.IP:
        assert spec.address is not None and spec.mask is not None
        return in_range(client, spec.address, spec.mask)
    if spec.kind is AddressKind.SAMEHOST:
        return any(iface.ip == client for iface in facts.local_interfaces)
    return any(in_range(client, i.ip, i.netmask) for i in facts.local_interfaces)


def rule_matches(rule: HbaRule, facts: ConnectionFacts) -> bool:
    """Does this one line apply? (type and encryption, address, database, user)"""
    if not _type_matches(rule.conn_type, facts):
        return False
    if rule.address is not None and not _address_matches(rule.address, facts):
        return False
    if not database_matches(
        rule.databases, facts.database, facts.user, facts.roles, facts.replication
    ):
        return False
    return role_matches(rule.users, facts.user, facts.roles)


def rejection_message(facts: ConnectionFacts, rule: HbaRule | None) -> str:
    """PostgreSQL's FATAL text (SQLSTATE 28000) for no matching line or a ``reject`` line."""
    host, user, db, enc = facts.host_text, facts.user, facts.database, facts.encryption_text
    physical = facts.replication == "physical"
    if rule is None:
        if physical:
            return (
                f'no pg_hba.conf entry for replication connection from host "{host}", '
                f'user "{user}", {enc}'
            )
        return f'no pg_hba.conf entry for host "{host}", user "{user}", database "{db}", {enc}'
    if rule.method is not AuthMethod.REJECT:
        raise ValueError(f"line {rule.line_number} does not reject the connection")
    if physical:
        return f'pg_hba.conf rejects replication connection for host "{host}", user "{user}", {enc}'
    return (
        f'pg_hba.conf rejects connection for host "{host}", user "{user}", database "{db}", {enc}'
    )
