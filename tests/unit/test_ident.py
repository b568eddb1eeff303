"""pg_ident.conf: map lines, regex with \\1, all, +role, case-insensitivity, errors."""

from __future__ import annotations

import pytest
from test_hba_fakes import FakeFiles

from pggate.errors import ConfigError
from pggate.hba import AuthFileError, IdentMaps, load_ident

IDENT = "/etc/pg/pg_ident.conf"


def maps(text: str, extra: dict[str, str] | None = None) -> IdentMaps:
    return load_ident(IDENT, FakeFiles({IDENT: text, **(extra or {})}), warn=lambda _: None)


MAPS = maps(
    r"""
# MAPNAME  SYSTEM-USERNAME          PG-USERNAME
plain      alice                    alice
plain      alice                    reports
plain      Bob                      bob
krb        /^(.*)@EXAMPLE\.COM$     \1
krb        /^admin/(.*)@EXAMPLE\.COM$  "\1_admin"
twice      /^(.*)$                  \1_\1
nogroup    /^.*@X$                  \1
optional   /^(a)?b$                 \1
literal    /^(.*)$                  \1
anyone     root                     all
members    /^svc-                   +services
quotedplus /^(.*)$                  "+\1"
regexpg    /^(.*)@X$                /^app_
other      carol                    carol
"""
)


@pytest.mark.parametrize(
    ("map_name", "pg_user", "system_user", "authorized"),
    [
        ("plain", "alice", "alice", True),
        ("plain", "reports", "alice", True),  # a later line of the same map
        ("plain", "bob", "Bob", True),
        ("plain", "bob", "bob", False),  # case-sensitive by default
        ("plain", "carol", "carol", False),  # other maps' lines do not count
        ("krb", "alice", "alice@EXAMPLE.COM", True),
        ("krb", "bob", "alice@EXAMPLE.COM", False),
        ("krb", "alice", "alice@OTHER.COM", False),
        ("krb", "alice_admin", "admin/alice@EXAMPLE.COM", True),  # \1 even inside quotes
        ("twice", "x_\\1", "x", True),  # only the first \1 is replaced
        ("literal", "all", "all", True),
        ("anyone", "whoever", "root", True),
        ("anyone", "whoever", "Root", False),
        ("quotedplus", "+svc", "svc", True),  # an expanded value is compared literally
        ("regexpg", "app_zed", "q@X", True),  # a regex PG name: \1 is not substituted
        ("regexpg", "web", "q@X", False),
    ],
)
def test_usermap(map_name: str, pg_user: str, system_user: str, authorized: bool) -> None:
    result = MAPS.check_usermap(map_name, pg_user, system_user, roles=frozenset())
    if authorized:
        assert result is None
    else:
        assert result == (
            f'no match in usermap "{map_name}" for user "{pg_user}" authenticated as '
            f'"{system_user}"'
        )


def test_case_insensitive() -> None:
    assert MAPS.check_usermap("plain", "BOB", "bob", case_insensitive=True) is None
    assert MAPS.check_usermap("anyone", "x", "ROOT", case_insensitive=True) is None
    # The regex itself is not made case-insensitive.
    assert MAPS.check_usermap("krb", "alice", "alice@example.com", case_insensitive=True) == (
        'no match in usermap "krb" for user "alice" authenticated as "alice@example.com"'
    )
    assert MAPS.check_usermap("krb", "ALICE", "alice@EXAMPLE.COM", case_insensitive=True) is None


def test_role_membership() -> None:
    services = frozenset({"web", "services"})
    assert MAPS.check_usermap("members", "web", "svc-web", roles=services) is None
    assert MAPS.check_usermap("members", "web", "svc-web", roles=frozenset({"web"})) is not None
    with pytest.raises(ValueError, match="not looked up"):
        MAPS.check_usermap("members", "web", "svc-web")
    assert MAPS.needs_roles
    assert not maps("m a b").needs_roles


@pytest.mark.parametrize(
    ("map_name", "system_user", "expected"),
    [
        (
            "nogroup",
            "x@X",
            r'regular expression "^.*@X$" has no subexpressions as requested by '
            r'backreference in "\1"',
        ),
        (
            "optional",
            "b",
            r'regular expression "^(a)?b$" has no subexpressions as requested by '
            r'backreference in "\1"',
        ),
    ],
)
def test_missing_subexpression(map_name: str, system_user: str, expected: str) -> None:
    assert MAPS.check_usermap(map_name, "x", system_user) == expected


def test_optional_group_that_participates() -> None:
    assert MAPS.check_usermap("optional", "a", "ab") is None


def test_no_map_means_equal_names() -> None:
    assert MAPS.check_usermap(None, "alice", "alice") is None
    assert MAPS.check_usermap("", "alice", "alice") is None
    assert MAPS.check_usermap(None, "alice", "Alice") == (
        "provided user name (alice) and authenticated user name (Alice) do not match"
    )
    assert MAPS.check_usermap(None, "alice", "Alice", case_insensitive=True) is None


def test_unknown_map() -> None:
    assert MAPS.check_usermap("nope", "a", "a") == (
        'no match in usermap "nope" for user "a" authenticated as "a"'
    )


def test_lines_remember_their_place() -> None:
    m = maps("\n\nm a b\ninclude more.conf", {"/etc/pg/more.conf": "n c d"})
    assert [(line.map_name, line.file, line.line_number) for line in m.lines] == [
        ("m", IDENT, 3),
        ("n", "/etc/pg/more.conf", 1),
    ]


def test_empty_file_is_fine() -> None:
    assert maps("# nothing\n").lines == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("m", "missing entry at end of line"),
        ("m a", "missing entry at end of line"),
        ("m,n a b", "multiple values in ident field"),
        ("m a,b c", "multiple values in ident field"),
        ("m a b,c", "multiple values in ident field"),
        ("m /a( b", 'invalid regular expression "a(": '),
        ("m a /b(", 'invalid regular expression "b(": '),
        ("m @nope b", 'could not open file "/etc/pg/nope": No such file or directory'),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        maps("# header\n" + text)
    assert str(info.value).startswith(message)
    assert str(info.value).endswith(f', line 2 of configuration file "{IDENT}"')


def test_extra_fields_are_ignored() -> None:
    (line,) = maps("m a b c d").lines
    assert (line.system_user.string, line.pg_user.string) == ("a", "b")


def test_all_errors_are_collected() -> None:
    with pytest.raises(AuthFileError) as info:
        maps("m\nok a b\nm a,b c")
    assert [e.line for e in info.value.errors] == [1, 3]


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_ident("/nope", FakeFiles({}), warn=lambda _: None)
    assert str(info.value) == 'could not open file "/nope": No such file or directory'
