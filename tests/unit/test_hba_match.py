"""check_hba semantics: connection type × encryption, addresses, databases, users, first match,
and the FATAL texts for rejected connections."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Interface, IPv6Interface, ip_address

import pytest
from test_hba_fakes import FakeFiles

from pggate.hba import ConnectionFacts, HbaPolicy, load_hba, rejection_message

HBA = "/etc/pg/pg_hba.conf"

LOCAL = ConnectionFacts(
    is_local=True, ssl=False, gss=False, address=None, hostname=None, database="db", user="u"
)
TCP = ConnectionFacts(
    is_local=False,
    ssl=False,
    gss=False,
    address=ip_address("192.0.2.10"),
    hostname=None,
    database="db",
    user="u",
)


def policy(text: str) -> HbaPolicy:
    return load_hba(HBA, FakeFiles({HBA: text}), ssl_enabled=True, warn=lambda _: None)


def matches(text: str, facts: ConnectionFacts) -> bool:
    return policy(text).find(facts) is not None


# connection type -> which of (local, plain TCP, SSL, GSS) it accepts
TYPE_MATRIX = {
    "local": (True, False, False, False),
    "host": (False, True, True, True),
    "hostssl": (False, False, True, False),
    "hostnossl": (False, True, False, True),
    "hostgssenc": (False, False, False, True),
    "hostnogssenc": (False, True, True, False),
}
TRANSPORTS = {
    "local": LOCAL,
    "plain": TCP,
    "ssl": replace(TCP, ssl=True),
    "gss": replace(TCP, gss=True),
}


@pytest.mark.parametrize("conn_type", TYPE_MATRIX)
@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_connection_type_matrix(conn_type: str, transport: str) -> None:
    address = "" if conn_type == "local" else "all"
    expected = TYPE_MATRIX[conn_type][list(TRANSPORTS).index(transport)]
    assert matches(f"{conn_type} all all {address} trust", TRANSPORTS[transport]) is expected


@pytest.mark.parametrize(
    ("address", "client", "expected"),
    [
        ("10.0.0.0/8", "10.1.2.3", True),
        ("10.0.0.0/8", "11.0.0.1", False),
        ("10.0.0.0/8", "::ffff:10.1.2.3", False),  # IPv4 rules never match IPv6 clients
        ("10.9.9.9/8", "10.1.2.3", True),  # host bits in the rule are masked away
        ("0.0.0.0/0", "203.0.113.1", True),
        ("0.0.0.0/0", "::1", False),
        ("::/0", "10.0.0.1", False),
        ("::/0", "2001:db8::1", True),
        ("fe80::/10", "fe80::1", True),
        ("fe80::/10", "fec0::1", False),
        ("2001:db8::1/128", "2001:db8::1", True),
        ("2001:db8::1/128", "2001:db8::2", False),
        ("::ffff:10.0.0.0/104", "::ffff:10.2.3.4", True),
        ("10.0.0.0 255.0.255.0", "10.5.0.7", True),
        ("10.0.0.0 255.0.255.0", "10.5.1.7", False),
        ("127.1/32", "127.0.0.1", True),
        ("192.0.2.10 255.255.255.255", "192.0.2.10", True),
    ],
)
def test_ip_ranges(address: str, client: str, expected: bool) -> None:
    facts = replace(TCP, address=ip_address(client))
    assert matches(f"host all all {address} trust", facts) is expected


IFACES = (
    IPv4Interface("192.168.1.10/24"),
    IPv4Interface("10.0.0.1/8"),
    IPv6Interface("2001:db8::5/64"),
)


@pytest.mark.parametrize(
    ("keyword", "client", "expected"),
    [
        ("samehost", "192.168.1.10", True),
        ("samehost", "192.168.1.11", False),
        ("samehost", "2001:db8::5", True),
        ("samehost", "2001:db8::6", False),
        ("samenet", "192.168.1.200", True),
        ("samenet", "10.200.0.1", True),
        ("samenet", "192.168.2.1", False),
        ("samenet", "2001:db8::ffff", True),
        ("samenet", "2001:db9::1", False),
    ],
)
def test_samehost_samenet(keyword: str, client: str, expected: bool) -> None:
    facts = replace(TCP, address=ip_address(client), local_interfaces=IFACES)
    assert matches(f"host all all {keyword} trust", facts) is expected


def test_samehost_without_interfaces_matches_nothing() -> None:
    assert not matches("host all all samehost trust", TCP)


@pytest.mark.parametrize(
    ("pattern", "hostname", "expected"),
    [
        ("db.example.com", "db.example.com", True),
        ("db.example.com", "DB.Example.COM", True),
        ("db.example.com", "db2.example.com", False),
        (".example.com", "db.example.com", True),
        (".example.com", "a.b.EXAMPLE.com", True),
        (".example.com", "example.com", False),
        (".example.com", "xexample.com", False),
        ("example.com", "db.example.com", False),
        ("db.example.com", None, False),  # no verified name: no host-name line matches
    ],
)
def test_hostnames(pattern: str, hostname: str | None, expected: bool) -> None:
    facts = replace(TCP, hostname=hostname)
    assert matches(f"host all all {pattern} trust", facts) is expected


@pytest.mark.parametrize(
    ("databases", "facts", "expected"),
    [
        ("all", TCP, True),
        ("db", TCP, True),
        ("DB", TCP, False),  # names are case-sensitive
        ("other,db", TCP, True),
        ('"all"', TCP, False),  # quoted: a database literally named all
        ('"all"', replace(TCP, database="all"), True),
        ("sameuser", TCP, False),
        ("sameuser", replace(TCP, database="u"), True),
        ("samerole", replace(TCP, roles=frozenset({"u", "db"})), True),
        ("samegroup", replace(TCP, roles=frozenset({"u", "db"})), True),
        ("samerole", replace(TCP, roles=frozenset({"u"})), False),
        ("/^d", TCP, True),
        ('"/^d"', TCP, True),  # the regex marker works even when quoted
        ("/^x", TCP, False),
        ("/b", TCP, True),  # regexes are not anchored
        ("replication", TCP, False),
        ("replication", replace(TCP, replication="logical"), False),
        ("replication", replace(TCP, replication="physical"), True),
        ("all", replace(TCP, replication="physical"), False),
        ("db", replace(TCP, replication="physical"), False),
        ('"replication"', replace(TCP, replication="physical"), False),
        ('"replication"', replace(TCP, database="replication"), True),
        ("all", replace(TCP, replication="logical"), True),
    ],
)
def test_databases(databases: str, facts: ConnectionFacts, expected: bool) -> None:
    assert matches(f"host {databases} all all trust", facts) is expected


@pytest.mark.parametrize(
    ("users", "facts", "expected"),
    [
        ("all", TCP, True),
        ("u", TCP, True),
        ("U", TCP, False),
        ("x,u", TCP, True),
        ('"all"', TCP, False),
        ("+admins", replace(TCP, roles=frozenset({"u", "admins"})), True),
        ("+admins", replace(TCP, roles=frozenset({"u"})), False),
        ("+u", replace(TCP, roles=frozenset({"u"})), True),  # a role is a member of itself
        ('"+admins"', replace(TCP, user="+admins"), True),
        ("/^u$", TCP, True),
        ("/^v", TCP, False),
    ],
)
def test_users(users: str, facts: ConnectionFacts, expected: bool) -> None:
    assert matches(f"host all {users} all trust", facts) is expected


def test_roles_not_looked_up_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="not looked up"):
        policy("host all +admins all trust").find(TCP)


def test_roles_are_not_consulted_after_an_earlier_match() -> None:
    found = policy("host all u all trust\nhost all +admins all reject").find(TCP)
    assert found is not None and found.line_number == 1


def test_first_match_wins_no_fall_through() -> None:
    p = policy("host db u 192.0.2.0/24 reject\nhost all all all trust\n")
    found = p.find(TCP)
    assert found is not None and found.method == "reject"
    other = p.find(replace(TCP, database="db2"))
    assert other is not None and other.line_number == 2


@pytest.mark.parametrize(
    ("facts", "text"),
    [
        (
            TCP,
            'no pg_hba.conf entry for host "192.0.2.10", user "u", database "db", no encryption',
        ),
        (
            replace(TCP, ssl=True),
            'no pg_hba.conf entry for host "192.0.2.10", user "u", database "db", SSL encryption',
        ),
        (
            replace(TCP, ssl=True, gss=True),
            'no pg_hba.conf entry for host "192.0.2.10", user "u", database "db", GSS encryption',
        ),
        (
            LOCAL,
            'no pg_hba.conf entry for host "[local]", user "u", database "db", no encryption',
        ),
        (
            replace(TCP, address=ip_address("2001:db8::1")),
            'no pg_hba.conf entry for host "2001:db8::1", user "u", database "db", no encryption',
        ),
        (
            replace(TCP, replication="physical"),
            'no pg_hba.conf entry for replication connection from host "192.0.2.10", '
            'user "u", no encryption',
        ),
        (
            replace(TCP, replication="logical"),
            'no pg_hba.conf entry for host "192.0.2.10", user "u", database "db", no encryption',
        ),
    ],
)
def test_implicit_reject_texts(facts: ConnectionFacts, text: str) -> None:
    p = policy("local nomatch all trust")
    assert p.find(facts) is None
    assert p.describe_rejection(facts) == text
    assert p.describe_rejection(facts, None) == text


@pytest.mark.parametrize(
    ("facts", "text"),
    [
        (
            replace(TCP, ssl=True),
            'pg_hba.conf rejects connection for host "192.0.2.10", user "u", database "db", '
            "SSL encryption",
        ),
        (
            LOCAL,
            'pg_hba.conf rejects connection for host "[local]", user "u", database "db", '
            "no encryption",
        ),
        (
            replace(TCP, replication="physical", gss=True),
            'pg_hba.conf rejects replication connection for host "192.0.2.10", user "u", '
            "GSS encryption",
        ),
    ],
)
def test_explicit_reject_texts(facts: ConnectionFacts, text: str) -> None:
    p = policy("local all all reject\nhost all,replication all all reject")
    assert p.describe_rejection(facts) == text
    assert p.describe_rejection(facts, p.find(facts)) == text


def test_rejection_message_refuses_an_accepting_rule() -> None:
    rule = policy("host all all all trust").find(TCP)
    with pytest.raises(ValueError):
        rejection_message(TCP, rule)
