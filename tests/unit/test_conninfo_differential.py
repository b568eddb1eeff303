"""pggate's conninfo parser against libpq's own (the libpq 18 psycopg brings).

The parser: ``psycopg.conninfo.conninfo_to_dict`` is PQconninfoParse. For a string libpq accepts,
pggate's keyword → value mapping must be the same (for a keyword pggate refuses, the parse
before the refusal); for one libpq refuses, pggate must refuse too, with libpq's text where
libpq's text is stable (it quotes the whole URI, or a raw value that may be a secret, which
pggate leaves out).

The validation: PQconnectStart runs pqConnectOptions2 and the first connection step before any
I/O that matters here (every host is a Unix socket in a directory that does not exist), so its
error text is compared with backend_target's.
"""

from __future__ import annotations

import re

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import pq

from pggate.conninfo import (
    LIBPQ_KEYWORDS,
    NOT_SUPPORTED,
    SECRET_KEYWORDS,
    backend_target,
    parse_conninfo,
)
from pggate.errors import ConfigError

VALID = [
    "",
    "host=/tmp port=5433",
    "host = db  user='a b' password='it\\'s'",
    "host=db\\ x",
    "host='a\\\\b' dbname=''",
    "  host=a\tport=1\n",
    "host=a host=b",
    "user='x'host=y",
    "options='-c search_path=public -c work_mem=64MB'",
    "host=a\\",
    "application_name=é",
    "requiressl=1",
    "requiressl=0 sslmode=verify-full",
    "sslmode=prefer requiressl=1",
    "host= ",
    "port =5432",
    "host=a,b,c port=1,2,3",
    "hostaddr=127.0.0.1 host=db",
    "keepalives=0 keepalives_idle=30 keepalives_interval=5 keepalives_count=3 tcp_user_timeout=9",
    "sslmode=verify-full sslrootcert=system sslsni=0",
    "sslcert=/c sslkey=/k sslpassword=pw sslcrl=/r sslcrldir=/d",
    "ssl_min_protocol_version=TLSv1.3 ssl_max_protocol_version=TLSv1.3",
    "channel_binding=require require_auth=scram-sha-256",
    "require_auth=!password,!md5",
    "gssencmode=disable krbsrvname=pg",
    "target_session_attrs=read-write load_balance_hosts=random",
    "connect_timeout=5 passfile=/etc/pgpass fallback_application_name=x",
    "service=foo",
    "replication=database",
    "oauth_issuer=https://id.example oauth_client_id=c oauth_scope='a b'",
    "sslkeylogfile=/tmp/k scram_client_key=abc min_protocol_version=3.2",
    "postgresql://",
    "postgres://",
    "postgresql:///",
    "postgresql://h",
    "postgresql://u:p%40ss@db.example:6000/app?sslmode=require",
    "postgres://[::1]:5432/x",
    "postgresql://[fe80::1%25eth0]:5/db",
    "postgresql://a:1,b:2/db",
    "postgresql://a:1,b",
    "postgresql://,/",
    "postgresql:///db?host=/tmp&password=a+b%2Bc",
    "postgresql://h/db?ssl=true",
    "postgresql://h/?requiressl=1",
    "postgresql://@h",
    "postgresql://:pw@h",
    "postgresql://u:@h",
    "postgresql://%75ser@h/%64b",
    "postgresql://host?x=a@b",
    "postgresql://h/db?application_name=%20a",
    "postgresql://h/db?application_name= a ",
    "postgresql://h/db?sslmode=require&",
    "postgresql://h:/",
    "postgresql://h/db?dbname=other&user=me",
    "postgresql://user@/db?host=/var/run/postgresql",
    "postgresql://h/db?options=-c%20geqo%3Doff",
    "postgresql://h/?%61pplication_name=x",
    "postgresql://u:p:q@h",
    "postgresql://h/a/b",
]

INVALID = [
    "host",
    "a b",
    "host=a b",
    "user='unterminated",
    "bogus=1",
    "=x",
    " = x",
    "host='a'bogus=1",
    "password=ab cd=ef",
    "password=hunter2 host",
    "password='ab'cd=ef",
    "postgresql:/h",
    "  postgresql://h",
    "postgresql://[::1",
    "postgresql://[]/x",
    "postgresql://[::1]x/y",
    "postgresql://h/db?bogus=1",
    "postgresql://h/db?a",
    "postgresql://h/db?a=1=2",
    "postgresql://h/db?sslmode=a&&b=2",
    "postgresql://h/db?ssl=false",
    "postgresql://h/db?application_name=a b",
    "postgresql://h/db?application_name=a%2",
    "postgresql://h/db?application_name=a%00",
    "postgresql://h/d b",
    "postgresql://h:5 4/d",
    "postgresql://u:p%zz@h",
    "postgresql://h/db?%zz=x",
    "postgresql://h/db?&",
    "postgresql://h/db?=x",
    "postgresql://h/db?password=x&bogus=1",
]


def libpq_parse(text: str) -> dict[str, str] | str | None:
    """PQconninfoParse: the mapping, libpq's error text, or None for a value that is not
    UTF-8 (libpq accepts bytes; pggate refuses it)."""
    try:
        return psycopg.conninfo.conninfo_to_dict(text)  # type: ignore[return-value]
    except psycopg.ProgrammingError as exc:
        return str(exc).strip()
    except UnicodeDecodeError:
        return None


def ours(text: str) -> dict[str, str] | ConfigError:
    try:
        return parse_conninfo(text)
    except ConfigError as exc:
        return exc


QUOTATION = re.compile(r'( after)?:? "[^"]*"')


def assert_same_refusal(err: ConfigError, libpq: str, text: str) -> None:
    """libpq's text, without what pggate never quotes: the whole URI, a word or value that may
    be part of a secret (said in DETAIL), a raw value in a percent-decoding error."""
    libpq = libpq.removesuffix(f': "{text}"')
    if err.message == libpq:
        return
    if "percent-encoded" in libpq or "unexpected spaces" in libpq:
        assert err.message.startswith(libpq.split(' "')[0].rstrip(":")), (err.message, libpq)
        return
    assert err.detail is not None and "not shown" in err.detail, (err.message, libpq)
    shorter = {libpq[: m.start()] + libpq[m.end() :] for m in QUOTATION.finditer(libpq)}
    assert err.message in shorter, (err.message, libpq)


def check_same_as_libpq(text: str) -> None:
    expected, got = libpq_parse(text), ours(text)
    if expected is None:
        assert isinstance(got, ConfigError)
        assert "not valid UTF-8" in got.message
    elif isinstance(expected, dict):
        assert got == expected
    else:
        assert isinstance(got, ConfigError), (text, expected, got)
        assert_same_refusal(got, expected, text)


def test_enough_inputs() -> None:
    assert len(VALID) + len(INVALID) >= 60
    assert len(set(VALID) | set(INVALID)) == len(VALID) + len(INVALID)


@pytest.mark.parametrize("text", VALID)
def test_valid_inputs_parse_as_libpq_parses_them(text: str) -> None:
    expected = libpq_parse(text)
    assert isinstance(expected, dict), expected
    assert parse_conninfo(text) == expected
    refused = expected.keys() & NOT_SUPPORTED.keys()
    if refused:
        with pytest.raises(ConfigError, match="is not supported by pggate"):
            backend_target(text)


@pytest.mark.parametrize("text", INVALID)
def test_invalid_inputs_are_refused_as_libpq_refuses_them(text: str) -> None:
    expected = libpq_parse(text)
    assert isinstance(expected, str), expected
    check_same_as_libpq(text)


FRAGMENTS = [
    "host",
    "port",
    "user",
    "password",
    "dbname",
    "sslmode",
    "requiressl",
    "ssl",
    "true",
    "bogus",
    "hostaddr",
    "=",
    "'",
    "\\",
    " ",
    "\t",
    "\n",
    "a",
    "1",
    ",",
    "postgresql://",
    "postgres://",
    "@",
    ":",
    "/",
    "?",
    "&",
    "%",
    "%2",
    "%20",
    "%41",
    "%00",
    "%e9",
    "%C3%A9",
    "[",
    "]",
    "::1",
    "é",
    "+",
]


@given(
    st.sampled_from(["", "postgresql://", "postgres://u:p@", "host=", "password="]),
    st.lists(st.sampled_from(FRAGMENTS), max_size=10),
)
def test_any_fragment_soup_parses_as_libpq_parses_it(prefix: str, fragments: list[str]) -> None:
    check_same_as_libpq(prefix + "".join(fragments))


def test_every_libpq_keyword_is_known() -> None:
    """The keyword table is libpq's PQconninfoOptions, in order; its "*" fields are secrets."""
    options = pq.Conninfo.get_defaults()
    assert tuple(option.keyword.decode() for option in options) == LIBPQ_KEYWORDS
    hidden = {option.keyword.decode() for option in options if option.dispchar == b"*"}
    assert hidden <= SECRET_KEYWORDS


# --- pqConnectOptions2 ------------------------------------------------------------------------

NOWHERE = "host=/nonexistent-pggate-test passfile=/nonexistent-pggate-test "
SOCKET_FAILURE = "connection to server on socket"

VALIDATION = [
    "sslmode=bogus",
    "sslmode=Require",
    "sslmode=",
    "sslnegotiation=direct",
    "sslnegotiation=direct sslmode=allow",
    "sslnegotiation=direct sslmode=require",
    "sslnegotiation=bogus",
    "sslrootcert=system",
    "sslrootcert=system sslmode=require",
    "sslrootcert=system sslmode=verify-full",
    "ssl_min_protocol_version=TLSv1.3 ssl_max_protocol_version=TLSv1.2",
    "ssl_min_protocol_version=TLSv1.4",
    "ssl_max_protocol_version=tls1",
    "ssl_min_protocol_version=tlsv1.1 ssl_max_protocol_version=TLSV1.1",
    "ssl_max_protocol_version=TLSv1",
    "ssl_min_protocol_version=TLSv1 ssl_max_protocol_version=TLSv1",
    "ssl_min_protocol_version=''",
    "channel_binding=bogus",
    "channel_binding=''",
    "channel_binding=disable",
    "require_auth=scram-sha-256,!md5",
    "require_auth=!md5,scram-sha-256",
    "require_auth=md5,md5",
    "require_auth=!none,!none",
    "require_auth=none,none",
    "require_auth=none,!none",
    "require_auth=bogus",
    "require_auth=md5,",
    "require_auth=!",
    "require_auth=SCRAM-SHA-256",
    "require_auth=scram-sha-256,oauth",
    "require_auth=!password,!md5,!none",
    "require_auth=''",
    "require_auth=oauth,oauth",
    "require_auth=!oauth,!oauth",
    "require_auth=gss,sspi",
    "gssencmode=bogus",
    "gssencmode=require",
    "target_session_attrs=bogus",
    "target_session_attrs=prefer-standby",
    "load_balance_hosts=bogus",
    "load_balance_hosts=random",
    "host=/a,/b port=1,2,3",
    "host=/a,/b port=1,2",
    "host=/a port=,",
    "hostaddr=127.0.0.1,127.0.0.2 host=/a",
    "port=5x",
    "port=0",
    "port=70000",
    "port=' 5 '",
    "port=+5",
    "host=/" + "x" * 100,
]


def libpq_options_error(text: str) -> str | None:
    """PQconnectStart's error, or None when it got as far as connecting to the socket."""
    conn = pq.PGconn.connect_start(text.encode())
    try:
        message = conn.error_message.decode().strip()
    finally:
        conn.finish()
    assert message
    return None if message.startswith(SOCKET_FAILURE) else message


@pytest.mark.parametrize("text", VALIDATION)
def test_validation_refuses_as_libpq_does(text: str) -> None:
    expected = libpq_options_error(NOWHERE + text)
    if expected is None:
        backend_target(NOWHERE + text)
    else:
        with pytest.raises(ConfigError) as info:
            backend_target(NOWHERE + text)
        assert info.value.message == expected
