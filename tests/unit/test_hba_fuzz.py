"""Property tests: any file text yields a policy (or maps) or a ConfigError, nothing else."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address

from hypothesis import given, settings
from hypothesis import strategies as st
from test_hba_fakes import FakeFiles

from pggate.errors import ConfigError
from pggate.hba import ConnectionFacts, load_hba, load_ident

HBA = "/etc/pg/pg_hba.conf"

WORDS = st.sampled_from(
    [
        "local",
        "host",
        "hostssl",
        "hostnossl",
        "hostgssenc",
        "hostnogssenc",
        "all",
        "sameuser",
        "samerole",
        "replication",
        "samehost",
        "samenet",
        "trust",
        "reject",
        "md5",
        "scram-sha-256",
        "peer",
        "ident",
        "cert",
        "gss",
        "ldap",
        "radius",
        "pam",
        "oauth",
        "10.0.0.0/8",
        "::1/128",
        "1.2.3.4",
        "255.0.0.0",
        ".example.com",
        "/^a",
        "+admins",
        "map=m",
        "clientcert=verify-full",
        "clientname=DN",
        "ldapbasedn=dc=x",
        "radiusservers=a",
        "radiussecrets=s",
        "include",
        "include_dir",
        "include_if_exists",
        "@inc",
        "inc",
        "d",
        '"',
        ",",
        "#",
        "\\",
        "\n",
        " ",
        "\t",
        "=",
        "/",
        "(",
        "\0",
        "\r",
    ]
)
TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(WORDS, max_size=40).map(" ".join),
    st.lists(WORDS, max_size=40).map("".join),
)
FACTS = ConnectionFacts(
    is_local=False,
    ssl=True,
    gss=False,
    address=ip_address("10.1.2.3"),
    hostname="a.example.com",
    database="d",
    user="u",
    roles=frozenset({"u", "admins"}),
)


@settings(max_examples=400, deadline=None)
@given(main=TEXT, included=TEXT)
def test_hba_never_raises_anything_else(main: str, included: str) -> None:
    files = FakeFiles({HBA: main, "/etc/pg/inc": included, "/etc/pg/d/x.conf": included})
    try:
        policy = load_hba(HBA, files, ssl_enabled=False, warn=lambda _: None)
    except ConfigError as exc:
        assert str(exc)
        return
    assert policy.rules
    for facts in (FACTS, replace(FACTS, is_local=True, address=None), replace(FACTS, gss=True)):
        rule = policy.find(facts)
        if rule is None or rule.method == "reject":
            assert policy.describe_rejection(facts)


@settings(max_examples=300, deadline=None)
@given(main=TEXT, system_user=st.text(max_size=20))
def test_ident_never_raises_anything_else(main: str, system_user: str) -> None:
    try:
        maps = load_ident(
            "/etc/pg/pg_ident.conf", FakeFiles({"/etc/pg/pg_ident.conf": main}), warn=lambda _: None
        )
    except ConfigError:
        return
    for line in maps.lines:
        result = maps.check_usermap(line.map_name, "u", system_user, roles=frozenset({"u"}))
        assert result is None or isinstance(result, str)
