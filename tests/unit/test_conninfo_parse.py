"""The conninfo parser: its libpq details, and properties over any input (a result or a
ConfigError, never another exception; never a secret in an error)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pggate.conninfo import backend_address, backend_target, parse_conninfo
from pggate.conninfo.parse import parse_marked
from pggate.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # conninfo_parse: spaces around "=", a backslash escapes anything, quotes need no space
        ("host = a\\ b  port=\t5", {"host": "a b", "port": "5"}),
        ("user='a'host=b", {"user": "a", "host": "b"}),
        ("host=a host=b", {"host": "b"}),
        ("host=", {"host": ""}),
        ("options='-c x=\\'y\\''", {"options": "-c x='y'"}),
        # conninfo_storeval's alias and the JDBC spelling in a URI
        ("requiressl=1", {"sslmode": "require"}),
        ("requiressl=0", {"sslmode": "prefer"}),
        ("postgresql://h?ssl=true", {"host": "h", "sslmode": "require"}),
        # conninfo_uri_parse_options: several hosts, ports per host, IPv6, empty parts
        ("postgresql://a:1,[::1],c:3/d", {"host": "a,::1,c", "port": "1,,3", "dbname": "d"}),
        ("postgresql://u:p:q@h", {"user": "u", "password": "p:q", "host": "h"}),
        ("postgresql://h?user=a%2Bb+c", {"host": "h", "user": "a+b+c"}),
        ("postgresql://h/?dbname=x", {"host": "h", "dbname": "x"}),
        ("postgresql://", {}),
    ],
)
def test_libpq_details(text: str, expected: dict[str, str]) -> None:
    assert parse_conninfo(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x=1", 'invalid connection option "x"'),
        ("postgresql://h?x=1", 'invalid URI query parameter: "x"'),
        ("postgresql://h?x", 'missing key/value separator "=" in URI query parameter: "x"'),
        ("postgresql://h?a=1=2", 'extra key/value separator "=" in URI query parameter: "a"'),
        ("postgresql://[::1", 'end of string reached when looking for matching "]" in IPv6'),
        ("postgresql://h?host=%41%2", "invalid percent-encoded token in URI query parameter"),
        ("postgresql://h?host=a b", 'unexpected spaces found in URI query parameter "host"'),
        ("postgresql://h?host=%00", "forbidden value %00 in percent-encoded value in URI"),
        ("postgresql://h?host=%ff", 'percent-decoded value of "host" is not valid UTF-8'),
        ("host=a\0", "connection info string contains a NUL character"),
        ("host=\udc80", "connection info string is not valid UTF-8"),
    ],
)
def test_refusals(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_conninfo(text)
    assert info.value.message.startswith(message)
    assert info.value.parameter == "backend"


@pytest.mark.parametrize(
    "text",
    [
        "password=ab cd=ef",  # an unquoted secret runs on past a space
        "password=ab Zq7",
        "password='ab'Zq7=1",  # quoted, then more without a space
        "sslpassword=x Zq7",
        "postgresql://h?password=ab&Zq7=x",  # an unencoded "&" in the password
        "postgresql://h?password=ab&Zq7",
        "postgresql://u:a/b?Zq7=1@h",  # an unencoded "/" ends the userinfo early
        "Zq7-secret=1",  # not shaped like a keyword
    ],
)
def test_a_word_that_may_be_a_secret_is_not_quoted(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_conninfo(text)
    assert "Zq7" not in str(info.value) and "cd" not in str(info.value)
    assert info.value.detail is not None and "not shown" in info.value.detail


def test_values_that_may_hold_a_secret_are_marked() -> None:
    assert parse_marked("password='a' sslmode=x").hidden == frozenset()
    assert parse_marked("password=a sslmode=x").hidden == {"sslmode"}
    assert parse_marked("password='a'sslmode=x").hidden == {"sslmode"}
    assert parse_marked("postgresql://h:1?password=a&sslmode=x").hidden == {"port", "sslmode"}
    with pytest.raises(ConfigError) as info:
        backend_target("postgresql://h?password=ab&sslmode=Zq7")
    assert info.value.message == "invalid sslmode value"
    with pytest.raises(ConfigError) as info:
        backend_target("postgresql://u:pa/Zq7@h")
    assert info.value.message == 'invalid integer value for connection option "port"'


def outcome(text: str) -> None:
    """Every entry point either answers or raises ConfigError."""
    for entry in (parse_conninfo, backend_target, backend_address):
        try:
            entry(text)
        except ConfigError as exc:
            assert exc.parameter == "backend"


@given(st.text())
def test_any_text_is_parsed_or_refused(text: str) -> None:
    outcome(text)


WORDS = st.sampled_from(
    [
        "host=",
        "hostaddr=",
        "port=",
        "password=",
        "sslmode=",
        "require_auth=",
        "ssl_min_protocol_version=",
        "connect_timeout=",
        "postgresql://",
        "/tmp",
        "127.0.0.1",
        "::1",
        "verify-full",
        "!md5",
        ",",
        " ",
        "'",
        "\\",
        "@",
        ":",
        "?",
        "&",
        "%",
        "%2",
        "1",
        "a",
    ]
)


@given(st.lists(WORDS, max_size=12))
def test_any_conninfo_like_text_is_parsed_or_refused(words: list[str]) -> None:
    outcome("".join(words))


MARKER = "Zq7"
PASSWORDS = st.builds(
    lambda before, after: before + MARKER + after,
    st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=8),
    st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=8),
)
FORMS = st.sampled_from(
    [
        "host=/tmp password={pw} dbname=d",
        "host=/tmp password={pw}",
        "sslpassword={pw} host=/tmp",
        "postgresql://u:{pw}@h/db",
        "postgresql://h/db?password={pw}&sslmode=disable",
        "postgresql://h/db?sslpassword={pw}",
    ]
)
TAILS = st.sampled_from(["", " bogus", "bogus=1", " host", " port=x", " sslmode=x"])


def assert_secret_not_shown(text: str) -> None:
    try:
        backend_target(text)
    except ConfigError as exc:
        shown = " ".join(filter(None, [str(exc), exc.detail, exc.hint]))
        assert MARKER not in shown


@given(PASSWORDS, FORMS)
def test_a_password_never_appears_in_an_error(password: str, form: str) -> None:
    assert_secret_not_shown(form.format(pw=password))


@given(PASSWORDS, TAILS)
def test_a_quoted_password_never_appears_in_an_error(password: str, tail: str) -> None:
    quoted = password.replace("\\", "\\\\").replace("'", "\\'")
    assert_secret_not_shown(f"host=/tmp password='{quoted}'{tail}")
