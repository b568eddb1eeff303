"""What reaches each log destination for a record: the stderr format (prefix before every
line, tabs after newlines), jsonlog's keys and values, write_syslog's pieces, a FATAL line's
SQLSTATE, and the settings that choose them (exact texts of their errors)."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pggate import logs
from pggate.config import load
from pggate.config.settings import SettingError
from pggate.errors import ConfigError
from pggate.logsink import fields, sqlstate_sent
from pggate.logsink.sink import Destinations, Sink, json_file_name
from pggate.logsink.syslog import header, messages, syslog_level
from pggate.proto import codec
from pggate.proto.errors import ClientError

CREATED = 1800000000.325  # 2027-01-15 08:00:00.325 UTC
PID = 4242


def record(msg: str, level: int = logging.INFO, /, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("pggate.test", level, __file__, 1, msg, None, None)
    rec.created, rec.msecs, rec.process = CREATED, 325.0, PID
    rec.__dict__.update(extra)
    return rec


def alice() -> fields.SessionFields:
    return fields.SessionFields(
        remote_host="192.0.2.7",
        remote_port="54321",
        local_host="127.0.0.1",
        start=1799999990.5,
        number=42,
        user="alice",
        database="appdb",
        application_name="psql",
    )


@pytest.fixture
def process() -> fields.ProcessFields:
    """The process's own counters and start time, fresh and fixed."""
    fields.PROCESS.reset()
    fields.PROCESS.start = 1790000000.0
    return fields.PROCESS


def sink(tmp_path: Path, zone: str = "UTC", **dest: object) -> Sink:
    return Sink(
        Destinations(**dest),  # type: ignore[arg-type]
        ZoneInfo(zone),
        text_file=tmp_path / "pggate.log",
        json_file=tmp_path / "pggate.json",
    )


def test_default_format_is_unchanged(tmp_path: Path, process: fields.ProcessFields) -> None:
    out = sink(tmp_path)
    out.write(record("listening on %s", args=None))
    out.write(record("bad thing", logging.ERROR, detail="why", hint="what to do"))
    out.close()
    assert (tmp_path / "pggate.log").read_text() == (
        "2027-01-15 08:00:00.325 UTC [4242] LOG:  listening on %s\n"
        "2027-01-15 08:00:00.325 UTC [4242] ERROR:  bad thing\n"
        "2027-01-15 08:00:00.325 UTC [4242] DETAIL:  why\n"
        "2027-01-15 08:00:00.325 UTC [4242] HINT:  what to do\n"
    )
    assert not (tmp_path / "pggate.json").exists()  # jsonlog is not a destination
    assert (tmp_path / "pggate.log").stat().st_mode & 0o777 == 0o600


def test_prefix_per_line_and_line_numbers(tmp_path: Path, process: fields.ProcessFields) -> None:
    """log_line_prefix precedes each DETAIL and HINT line and counts it (%l); continuation
    lines get a tab (append_with_tabs)."""
    out = sink(tmp_path, line_prefix="%l|%e|%q%u| ")
    out.write(record("one\ntwo", logging.CRITICAL, detail="d\ne", hint="h", sqlstate="28P01"))
    out.write(record("three", logging.WARNING))
    out.close()
    assert (tmp_path / "pggate.log").read_text() == (
        "1|28P01|FATAL:  one\n\ttwo\n"
        "2|28P01|DETAIL:  d\n\te\n"
        "3|28P01|HINT:  h\n"
        "4|01000|WARNING:  three\n"
    )


def test_a_sessions_lines(tmp_path: Path, process: fields.ProcessFields) -> None:
    """Lines logged by a session's task carry its fields and its own line numbers; the
    process's lines go on with theirs."""
    out = sink(tmp_path, line_prefix="%l %c %q%u@%d %r ")
    session = alice()

    def in_session() -> None:
        fields.SESSION.set(session)
        out.write(record("connection authorized: user=alice"))
        out.write(record("second"))

    out.write(record("before"))
    contextvars.copy_context().run(in_session)
    out.write(record("after"))
    out.write(record("disconnection", **fields.about(session)))
    out.close()
    assert (tmp_path / "pggate.log").read_text().splitlines() == [
        "1 6ab13b80.1092 LOG:  before",
        "1 6b49d1f6.1092.2a alice@appdb 192.0.2.7(54321) LOG:  connection authorized: user=alice",
        "2 6b49d1f6.1092.2a alice@appdb 192.0.2.7(54321) LOG:  second",
        "2 6ab13b80.1092 LOG:  after",
        "3 6b49d1f6.1092.2a alice@appdb 192.0.2.7(54321) LOG:  disconnection",
    ]


def test_exceptions_keep_their_traceback(tmp_path: Path, process: fields.ProcessFields) -> None:
    out = sink(tmp_path, jsonlog=True)
    try:
        raise ValueError("broken")
    except ValueError:
        out.write(record("internal error", logging.ERROR, exc_info=sys.exc_info()))
    out.close()
    text = (tmp_path / "pggate.log").read_text()
    assert text.startswith("2027-01-15 08:00:00.325 UTC [4242] ERROR:  internal error\nTraceback")
    assert text.endswith("ValueError: broken\n")
    obj = json.loads((tmp_path / "pggate.json").read_text())
    assert obj["backtrace"].endswith("ValueError: broken")
    assert obj["state_code"] == "XX000"


def test_jsonlog_of_a_session(tmp_path: Path, process: fields.ProcessFields) -> None:
    out = sink(tmp_path, stderr=False, jsonlog=True)
    session = alice()
    rec = record('password authentication failed for user "alice"', logging.CRITICAL)
    rec.__dict__.update(fields.about(session), sqlstate="28P01", detail='Role "alice" x.')
    out.write(rec)
    out.write(record("second", **fields.about(session)))
    out.close()
    assert not (tmp_path / "pggate.log").exists()
    first, second = (tmp_path / "pggate.json").read_text().splitlines()
    assert first == (
        '{"timestamp":"2027-01-15 08:00:00.325 UTC","user":"alice","dbname":"appdb",'
        '"pid":4242,"remote_host":"192.0.2.7","remote_port":54321,'
        '"session_id":"6b49d1f6.1092.2a","line_num":1,'
        '"session_start":"2027-01-15 07:59:50 UTC","txid":0,"error_severity":"FATAL",'
        '"state_code":"28P01","message":"password authentication failed for user \\"alice\\"",'
        '"detail":"Role \\"alice\\" x.","application_name":"psql",'
        '"backend_type":"client backend","query_id":0}'
    )
    assert json.loads(second)["line_num"] == 2


def test_jsonlog_outside_a_session(tmp_path: Path, process: fields.ProcessFields) -> None:
    """Absent values are left out, as appendJSONKeyValue leaves out a NULL."""
    out = sink(tmp_path, zone="Europe/Paris", stderr=False, jsonlog=True)
    out.write(record("pggate is ready to accept connections"))
    out.write(record("tab\there", logging.WARNING, hint="h"))
    out.close()
    first, second = (
        json.loads(text) for text in (tmp_path / "pggate.json").read_text().splitlines()
    )
    assert list(first.items()) == [
        ("timestamp", "2027-01-15 09:00:00.325 CET"),
        ("pid", 4242),
        ("session_id", "6ab13b80.1092"),
        ("line_num", 1),
        ("session_start", "2026-09-21 16:13:20 CEST"),
        ("txid", 0),
        ("error_severity", "LOG"),
        ("state_code", "00000"),
        ("message", "pggate is ready to accept connections"),
        ("backend_type", "postmaster"),
        ("query_id", 0),
    ]
    assert (second["message"], second["hint"], second["line_num"]) == ("tab\there", "h", 2)
    assert second["state_code"] == "01000"


def test_jsonlog_before_the_startup_packet(tmp_path: Path, process: fields.ProcessFields) -> None:
    """A session whose names are unknown yet: no user, dbname or application_name keys."""
    out = sink(tmp_path, stderr=False, jsonlog=True)
    session = fields.SessionFields.accepted("192.0.2.7", "5000", ("127.0.0.1", 6432))
    out.write(record("connection received: host=192.0.2.7 port=5000", **fields.about(session)))
    out.close()
    obj = json.loads((tmp_path / "pggate.json").read_text())
    assert "user" not in obj and "dbname" not in obj and "application_name" not in obj
    assert (obj["remote_host"], obj["remote_port"]) == ("192.0.2.7", 5000)


def test_raw_bytes_are_written_as_they_came(tmp_path: Path, process: fields.ProcessFields) -> None:
    """A client's name that is not UTF-8 reaches the log byte for byte, as PostgreSQL writes it."""
    out = sink(tmp_path, jsonlog=True, line_prefix="")
    out.write(record("user=\udcff"))
    out.close()
    assert (tmp_path / "pggate.log").read_bytes() == b"LOG:  user=\xff\n"
    assert b'"message":"user=\xff"' in (tmp_path / "pggate.json").read_bytes()


def test_json_file_name() -> None:
    assert json_file_name(Path("/var/log/pggate.log")) == Path("/var/log/pggate.json")
    assert json_file_name(Path("/var/log/pggate")) == Path("/var/log/pggate.json")
    assert json_file_name(Path("/var/log/.log")) == Path("/var/log/.log.json")


# --- syslog ----------------------------------------------------------------------------------


def test_syslog_messages_as_write_syslog_sends_them() -> None:
    text = "LOG:  hello\nDETAIL:  more\n"
    assert messages(text, 7, split=True, sequence_numbers=True) == [
        b"[7-1] LOG:  hello",
        b"[7-2] DETAIL:  more",
    ]
    assert messages(text, 7, split=True, sequence_numbers=False) == [
        b"[1] LOG:  hello",
        b"[2] DETAIL:  more",
    ]
    assert messages(text, 7, split=False, sequence_numbers=True) == [b"[7] " + text.encode()]
    assert messages(text, 7, split=False, sequence_numbers=False) == [text.encode()]


def test_syslog_long_lines_split_at_words_within_900_bytes() -> None:
    words = " ".join(f"word{n:04d}" for n in range(300))  # 2699 bytes, 9 per word
    pieces = messages(words + "\n", 3, split=True, sequence_numbers=True)
    bodies = [piece.split(b"] ", 1)[1] for piece in pieces]
    assert [piece.split(b"] ", 1)[0] for piece in pieces] == [b"[3-1", b"[3-2", b"[3-3"]
    assert [len(body) for body in bodies] == [899, 900, 900]
    assert b"".join(bodies) == words.encode()
    assert all(body.endswith(b"word" + body[-4:]) for body in bodies)  # never inside a word
    assert bodies[1].startswith(b" word")  # the cut is before the space


def test_syslog_never_cuts_a_utf8_character() -> None:
    text = "a" * 899 + "é" * 3
    pieces = messages(text, 1, split=True, sequence_numbers=False)
    assert pieces == [b"[1] " + b"a" * 899, "[2] ééé".encode()]


def test_syslog_priority_and_header() -> None:
    assert [syslog_level(n) for n in (10, 20, 30, 40, 50)] == [7, 6, 5, 4, 3]
    stamp = header(16 << 3 | 6, "pggate", 4242, 0.0)
    assert stamp.startswith(b"<134>") and stamp.endswith(b" pggate[4242]: ")
    assert len(stamp) == len(b"<134>Jan  1 00:00:00 pggate[4242]: ")


# --- the SQLSTATE of a FATAL line -----------------------------------------------------------


def test_sqlstate_sent_is_the_clients() -> None:
    refusal = codec.error_response(ClientError("28P01", "password authentication failed"))
    assert sqlstate_sent(refusal) == "28P01"
    behind = codec.authentication_ok() + codec.error_response(ClientError("3D000", "no db"))
    assert sqlstate_sent(behind) == "3D000"
    v2 = codec.render_error(codec.unsupported_protocol(0x00020000))
    assert sqlstate_sent(v2) == "0A000"
    assert sqlstate_sent(None) is None
    assert sqlstate_sent(b"") is None
    assert sqlstate_sent(codec.authentication_ok()) is None
    assert sqlstate_sent(b"E\x00\x00\x00\x02") is None


# --- the settings ---------------------------------------------------------------------------


def write_conf(tmp_path: Path, text: str) -> Path:
    (tmp_path / "pggate.conf").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("text", "message", "detail"),
    [
        ("log_destination = 'csvlog'", 'invalid value for parameter "log_destination": "csvlog"',
         'Log destination "csvlog" is not supported by pggate.'),
        ("log_destination = 'stderr,eventlog'",
         'invalid value for parameter "log_destination": "stderr,eventlog"',
         'Unrecognized key word: "eventlog".'),
        ("log_destination = 'stderr,,syslog'",
         'invalid value for parameter "log_destination": "stderr,,syslog"',
         "List syntax is invalid."),
        ("log_timezone = 'Mars/Base'", 'invalid value for parameter "log_timezone": "Mars/Base"',
         None),
        ("log_timezone = ''", 'invalid value for parameter "log_timezone": ""', None),
        ("log_timezone = 'right/UTC'", 'time zone "right/UTC" appears to use leap seconds',
         "PostgreSQL does not support leap seconds."),
        ("log_timezone = '<+03>-3'", 'invalid value for parameter "log_timezone": "<+03>-3"',
         "pggate accepts time zone names of the IANA time zone database only, not POSIX-style "
         'specifications; "Etc/GMT-3", for example, is UTC+3.'),
        ("log_timezone = '../../etc/passwd'",
         'invalid value for parameter "log_timezone": "../../etc/passwd"', None),
    ],
)  # fmt: skip
def test_refused_values(tmp_path: Path, text: str, message: str, detail: str | None) -> None:
    with pytest.raises(SettingError) as info:
        load(write_conf(tmp_path, "\n" + text))
    conf = tmp_path / "pggate.conf"
    assert str(info.value) == f'{message}, line 2 of configuration file "{conf}"'
    assert info.value.detail == detail
    assert info.value.parameter == text.split()[0]


def test_syslog_facility_error(tmp_path: Path) -> None:
    with pytest.raises(SettingError) as info:
        load(write_conf(tmp_path, "syslog_facility = LOCAL8"))
    assert info.value.message == 'invalid value for parameter "syslog_facility": "LOCAL8"'
    assert info.value.hint == (
        "Available values: local0, local1, local2, local3, local4, local5, local6, local7."
    )


def test_defaults_and_accepted_spellings(tmp_path: Path) -> None:
    cfg = load(write_conf(tmp_path, ""))
    assert cfg.log_destination == frozenset({"stderr"})
    assert (cfg.log_line_prefix, cfg.log_timezone, cfg.log_file) == ("%m [%p] ", "UTC", "")
    assert (cfg.syslog_facility, cfg.syslog_ident) == ("local0", "pggate")
    assert cfg.syslog_sequence_numbers and cfg.syslog_split_messages
    cfg = load(
        write_conf(
            tmp_path,
            "log_destination = 'JSONLOG, Syslog, stderr'\nlog_timezone = 'europe/paris'\n"
            "syslog_facility = 'LOCAL5'\n",
        )
    )
    assert cfg.log_destination == frozenset({"stderr", "jsonlog", "syslog"})
    assert cfg.syslog_facility == "local5"
    assert logs.plan(cfg).zone == ZoneInfo("Europe/Paris")
    assert load(write_conf(tmp_path, "log_destination = ''")).log_destination == frozenset()


def test_plan_puts_jsonlog_beside_the_log_file(tmp_path: Path) -> None:
    cfg = load(write_conf(tmp_path, "log_destination = 'stderr,jsonlog'\nlog_file = 'x.log'\n"))
    chosen = logs.plan(cfg)
    assert (chosen.text_file, chosen.json_file) == (tmp_path / "x.log", tmp_path / "x.json")
    cfg = load(write_conf(tmp_path, "log_destination = 'jsonlog'\n"))
    assert (logs.plan(cfg).text_file, logs.plan(cfg).json_file) == (None, None)


def test_a_log_file_that_cannot_be_opened(tmp_path: Path) -> None:
    """serve refuses to start (ConfigError), check says so without creating anything."""
    cfg = load(write_conf(tmp_path, "log_file = 'missing/pggate.log'\n"))
    message = (
        f'could not open log file "{tmp_path / "missing" / "pggate.log"}": '
        "No such file or directory"
    )
    with pytest.raises(ConfigError) as info:
        logs.open_sink(logs.plan(cfg))
    assert (info.value.message, info.value.parameter) == (message, "log_file")
    assert [problem.message for problem in logs.problems(cfg)] == [message]
    assert not (tmp_path / "missing").exists()
    assert logs.problems(load(write_conf(tmp_path, "log_file = 'ok.log'\n"))) == []
    assert not (tmp_path / "ok.log").exists()


def test_syslog_without_a_logger(tmp_path: Path) -> None:
    cfg = load(write_conf(tmp_path, "log_destination = 'syslog'\n"))
    address = str(tmp_path / "no-logger")
    message = f'could not connect to the system logger at "{address}": No such file or directory'
    with pytest.raises(ConfigError) as info:
        logs.open_sink(logs.plan(cfg), syslog_address=address)
    assert (info.value.message, info.value.parameter) == (message, "log_destination")
    assert [p.message for p in logs.problems(cfg, syslog_address=address)] == [message]


@pytest.fixture
def pggate_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The ``pggate`` logger as logs.py sets it up, restored afterwards (other tests capture
    its records through the root logger)."""
    logger = logging.getLogger(logs.LOGGER)
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", logger.propagate)
    monkeypatch.setattr(logger, "level", logger.level)
    monkeypatch.setattr(logs, "_handler", None)
    monkeypatch.setattr(logs, "_plan", logs.DEFAULT_PLAN)
    logs.setup_logging()
    yield
    for handler in logger.handlers:
        handler.close()


@pytest.mark.usefixtures("pggate_logger")
def test_reload_keeps_the_destinations_it_cannot_open(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """On reload a file that cannot be opened is an ERROR, written where lines went before."""
    logs.configure(load(write_conf(tmp_path, "log_file = 'a.log'\n")))
    logs.reload(load(write_conf(tmp_path, "log_file = 'missing/b.log'\n")))
    logging.getLogger("pggate.test").info("still here")
    logs.reopen()  # the supervisor's SIGHUP: the same file, opened again
    logging.getLogger("pggate.test").info("reopened")
    lines = (tmp_path / "a.log").read_text().splitlines()
    assert lines[0].endswith(
        f'ERROR:  could not open log file "{tmp_path / "missing" / "b.log"}": '
        "No such file or directory"
    )
    assert lines[1].endswith(
        "HINT:  Set log_file to a file pggate can write, or to '' for standard error."
    )
    assert lines[2].endswith("LOG:  still here")
    assert lines[3].endswith("LOG:  reopened")
    assert sorted(os.listdir(tmp_path)) == ["a.log", "pggate.conf"]
    assert capfd.readouterr().err == ""
