"""log_line_prefix as elog.c's log_status_format expands it: every escape, padding, %q."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from pggate.logsink.fields import SessionFields, clean_ascii
from pggate.logsink.prefix import Line, expand

CREATED = 1800000000.325  # 2027-01-15 08:00:00.325 UTC
PID = 4242  # 0x1092
PROCESS_START = 1790000000.0  # 0x6ab13b80, 2026-09-21 14:13:20 UTC


def session(**changes: object) -> SessionFields:
    values: dict[str, object] = {
        "remote_host": "192.0.2.7",
        "remote_port": "54321",
        "local_host": "127.0.0.1",
        "start": 1799999990.5,  # 0x6b49d1f6
        "number": 42,
        "user": "alice",
        "database": "appdb",
        "application_name": "psql",
    }
    values.update(changes)
    return SessionFields(**values)  # type: ignore[arg-type]


def line(fields: SessionFields | None, zone: str = "UTC", sqlstate: str = "28P01") -> Line:
    return Line(
        created=CREATED,
        millis=325,
        zone=ZoneInfo(zone),
        pid=PID,
        process_start=PROCESS_START,
        sqlstate=sqlstate,
        session=fields,
    )


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("%a", "psql"),
        ("%u", "alice"),
        ("%d", "appdb"),
        ("%h", "192.0.2.7"),
        ("%r", "192.0.2.7(54321)"),
        ("%L", "127.0.0.1"),
        ("%b", "client backend"),
        ("%c", "6b49d1f6.1092.2a"),
        ("%p", "4242"),
        ("%l", "7"),
        ("%m", "2027-01-15 08:00:00.325 UTC"),
        ("%t", "2027-01-15 08:00:00 UTC"),
        ("%n", "1800000000.325"),
        ("%s", "2027-01-15 07:59:50 UTC"),
        ("%x", "0"),
        ("%e", "28P01"),
        ("%Q", "0"),
        ("%v", ""),
        ("%i", ""),
        ("%P", ""),
        ("%q", ""),
        ("%%", "%"),
        ("%m [%p] ", "2027-01-15 08:00:00.325 UTC [4242] "),
        ("%m [%p] %q%u@%d/%a ", "2027-01-15 08:00:00.325 UTC [4242] alice@appdb/psql "),
    ],
)
def test_each_escape_in_a_session(fmt: str, expected: str) -> None:
    assert expand(fmt, line(session()), 7) == expected


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("%a|%u|%d|%h|%r|%i", "|||||"),
        ("%L", "[none]"),
        ("%b", "postmaster"),
        ("%c", "6ab13b80.1092"),
        ("%s", "2026-09-21 14:13:20 UTC"),
        ("%p %l %e", "4242 3 28P01"),
        ("%m [%p] %q%u@%d ", "2027-01-15 08:00:00.325 UTC [4242] "),
        ("[%-6u][%6d][%3a]", "[      ][      ][   ]"),
    ],
)
def test_outside_a_session(fmt: str, expected: str) -> None:
    """Session-only escapes print nothing (spaces when padded); %q ends the prefix."""
    assert expand(fmt, line(None), 3) == expected


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("[%10u]", "[     alice]"),
        ("[%-10u]", "[alice     ]"),
        ("[%3u]", "[alice]"),
        ("[%-3u]", "[alice]"),
        ("[%6p]", "[  4242]"),
        ("[%-6p]", "[4242  ]"),
        ("[%4l]", "[   7]"),
        ("[%-20r]", "[192.0.2.7(54321)    ]"),
        ("[%3x][%-3Q]", "[  0][0  ]"),
        ("[%7e]", "[  28P01]"),
        ("[%-4v][%2i][%3P]", "[    ][  ][   ]"),
        ("[%0u]", "[alice]"),
    ],
)
def test_padding(fmt: str, expected: str) -> None:
    assert expand(fmt, line(session()), 7) == expected


def test_padding_counts_bytes_as_printf_does() -> None:
    assert expand("[%5u]", line(session(user="é")), 1) == "[   é]"  # 2 bytes + 3 spaces


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("a%Zb", "ab"),  # an unknown escape prints nothing
        ("a% ub", "aub"),  # "% " is an escape of its own (ignored), "u" a literal
        ("ab%", "ab"),  # a trailing % ends the prefix
        ("ab%-", "ab"),
        ("ab%12", "ab"),  # a padding with no escape after it ends the prefix
        ("%u%%%d", "alice%appdb"),
    ],
)
def test_format_errors_are_ignored_as_postgresql_ignores_them(fmt: str, expected: str) -> None:
    assert expand(fmt, line(session()), 1) == expected


def test_unknown_names_before_the_startup_packet() -> None:
    """A session whose StartupMessage has not been read: [unknown], as for an empty name."""
    fields = session(user=None, database=None, application_name="")
    assert expand("%u@%d/%a", line(fields), 1) == "[unknown]@[unknown]/[unknown]"


def test_no_port_no_parentheses() -> None:
    assert expand("%r", line(session(remote_port="")), 1) == "192.0.2.7"


def test_log_timezone() -> None:
    paris = line(session(), zone="Europe/Paris")
    assert expand("%m|%t|%s", paris, 1) == (
        "2027-01-15 09:00:00.325 CET|2027-01-15 09:00:00 CET|2027-01-15 08:59:50 CET"
    )
    assert expand("%n", paris, 1) == "1800000000.325"  # the epoch has no zone


def test_application_name_is_cleaned_as_check_application_name_does() -> None:
    assert clean_ascii("psql") == "psql"
    assert clean_ascii("caf\u00e9\t1") == "caf\\xc3\\xa9\\x091"
    assert clean_ascii("raw\udcff") == "raw\\xff"  # a byte that was not UTF-8


def test_fields_follow_the_login() -> None:
    """Names appear once the StartupMessage is read; a log_hostname name replaces the IP."""

    class Startup:
        user = "bob"
        database = "staff"
        application_name: str | None = "app\u00e9"

    fields = SessionFields.accepted("192.0.2.7", "5000", ("127.0.0.1", 6432))
    assert (fields.user, fields.database, fields.local_host) == (None, None, "127.0.0.1")
    fields.follow("192.0.2.7", None)
    assert (fields.user, fields.database) == (None, None)
    fields.follow("client.example.com", Startup())
    assert (fields.remote_host, fields.user, fields.database) == (
        "client.example.com",
        "bob",
        "staff",
    )
    assert fields.application_name == "app\\xc3\\xa9"
    later = SessionFields.accepted("192.0.2.7", "5001", ("127.0.0.1", 6432))
    assert later.number == fields.number + 1  # per process, one per connection
    assert SessionFields.accepted("x", "", "\0pggate-1-cancel-0").local_host == "[local]"
