"""The password file: libpq's passwordFromFile, and pggate's stricter reading of the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import pq

from pggate.conninfo import (
    PgpassEntry,
    default_passfile,
    lookup_password,
    parse_pgpass,
    read_pgpass,
)
from pggate.errors import ConfigError

FILE = """\
# a comment:*:*:*:never
db1:5432:app:alice:one
db1:*:*:alice:two
  db1:5432:app:bob:leading spaces are part of the host
db\\:2:5433:app:bob:escaped\\:colon\\\\:ignored field
\\*:*:app:carol:literal star host
localhost:5432:*:dave:socket\r
/run/pg:5432:*:dave:other socket
short:line
*:*:*:erin:trailing\\
*:*:*:frank:
"""


def lookup(host: str, user: str, port: str = "5432", dbname: str = "app") -> str | None:
    return lookup_password(parse_pgpass(FILE), host=host, port=port, dbname=dbname, user=user)


@pytest.mark.parametrize(
    ("host", "user", "port", "password"),
    [
        ("db1", "alice", "5432", "one"),  # first match wins
        ("db1", "alice", "6000", "two"),  # "*" matches any port
        ("db1", "bob", "5432", None),  # "  db1" is another host
        ("db:2", "bob", "5433", "escaped:colon\\"),
        ("*", "carol", "5432", "literal star host"),
        ("db1", "carol", "5432", None),  # an escaped "*" is no wildcard
        ("localhost", "dave", "5432", "socket"),
        ("", "dave", "5432", "socket"),  # no host: localhost
        ("/var/run/postgresql", "dave", "5432", "socket"),  # the default socket directory
        ("/run/pg", "dave", "", "other socket"),  # "" is port 5432
        ("/tmp", "dave", "5432", None),  # another directory matches only itself
        ("x", "erin", "5432", "trailing\\"),
        ("x", "frank", "5432", None),  # an empty password is none
        ("x", "nobody", "5432", None),
    ],
)
def test_lookup(host: str, user: str, port: str, password: str | None) -> None:
    assert lookup(host, user, port) == password


def test_no_user_or_database_no_password() -> None:
    entries = parse_pgpass("*:*:*:*:pw")
    assert lookup_password(entries, host="h", port="1", dbname="", user="u") is None
    assert lookup_password(entries, host="h", port="1", dbname="d", user="") is None


def test_parse() -> None:
    assert parse_pgpass("h:1:d:u:p:extra\n#h:1:d:u:q\n\nh:1:d:u\n*:*:*:*:x\\:y\r\n") == (
        PgpassEntry("h", "1", "d", "u", "p"),
        PgpassEntry(None, None, None, None, "x:y"),
    )
    assert "secret" not in repr(PgpassEntry("h", "1", "d", "u", "secret"))


@given(st.text())
def test_any_file_text_parses(text: str) -> None:
    for entry in parse_pgpass(text):
        assert entry.matches("h", "1", "d", "u") in (True, False)


# --- against libpq's passwordFromFile ----------------------------------------------------------

FIELD = st.sampled_from(["db", "*", "\\*", "d\\b", "d\\:b", "5432", "app", "u", "", "x:y"])


def libpq_password(passfile: Path, host: str, port: str, dbname: str, user: str) -> str | None:
    """PQpass after PQconnectStart: what libpq found in the file for this host (connecting to
    a closed port on the loopback, so that the host name is only a name)."""
    conninfo = (
        f"host='{host}' hostaddr=127.0.0.1 port='{port}' dbname='{dbname}' user='{user}' "
        f"passfile='{passfile}' connect_timeout=1"
    )
    conn = pq.PGconn.connect_start(conninfo.encode())
    try:
        password = conn.password
    finally:
        conn.finish()
    return password.decode() or None if password else None


@given(
    st.lists(st.tuples(FIELD, FIELD, FIELD, FIELD, FIELD), min_size=1, max_size=4),
    st.sampled_from(["db", "*", "d\\b", "d:b", "d\\"]),
    st.sampled_from(["u", "x"]),
)
def test_lookup_matches_libpq(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[tuple[str, str, str, str, str]],
    host: str,
    user: str,
) -> None:
    passfile = tmp_path_factory.mktemp("pgpass") / "pgpass"
    text = "".join(":".join(fields) + "\n" for fields in lines)
    passfile.write_text(text)
    passfile.chmod(0o600)
    host_quoted = host.replace("\\", "\\\\")
    expected = libpq_password(passfile, host_quoted, "5432", "app", user)
    got = lookup_password(parse_pgpass(text), host=host, port="5432", dbname="app", user=user)
    assert got == expected


# --- reading the file ------------------------------------------------------------------------


def write(path: Path, text: str, mode: int) -> str:
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_read(tmp_path: Path) -> None:
    path = write(tmp_path / "pgpass", "h:*:*:u:secret\n", 0o600)
    assert read_pgpass(path) == (PgpassEntry("h", None, None, "u", "secret"),)
    assert read_pgpass(write(tmp_path / "ro", "", 0o400)) == ()
    assert read_pgpass(str(tmp_path / "missing")) == ()  # as libpq: no file, no password


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o610, 0o660, 0o644])
def test_group_or_world_access_is_refused(tmp_path: Path, mode: int) -> None:
    """libpq warns and ignores the file; pggate refuses it, naming the file."""
    path = write(tmp_path / "pgpass", "h:*:*:u:secret\n", mode)
    with pytest.raises(ConfigError) as info:
        read_pgpass(path)
    assert info.value.message == (
        f'password file "{path}" has group or world access; '
        "permissions should be u=rw (0600) or less"
    )
    assert info.value.hint == f"chmod 0600 {path}"
    assert "secret" not in str(info.value)


def test_not_a_plain_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a plain file"):
        read_pgpass(str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ConfigError, match="is not a plain file"):
        read_pgpass(str(fifo))  # and does not wait for a writer


def test_unreadable_or_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pgpass"
    path.write_bytes(b"h:*:*:u:\xff\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="is not valid UTF-8"):
        read_pgpass(str(path))
    if os.geteuid() != 0:
        path.chmod(0o000)
        with pytest.raises(ConfigError, match="could not open password file"):
            read_pgpass(str(path))


def test_default_passfile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/gate")
    monkeypatch.setenv("PGPASSFILE", "/elsewhere")  # not read by pggate
    assert default_passfile() == "/home/gate/.pgpass"
    monkeypatch.delenv("HOME")
    assert (default_passfile() or "").endswith("/.pgpass")
