"""log_destination, log_line_prefix, log_timezone and log_file with a real pggate in front of
the shared backend: what a DBA finds in the log after real logins, a log file moved away by
logrotate, several workers writing one file; and write_syslog's datagrams, received on a real
Unix datagram socket standing in for /dev/log."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from conftest import DEFAULT_HBA, Backend, Gateway, GatewayFactory, login_error, prepare_gateway_dir

from pggate.logsink import fields
from pggate.logsink.sink import Destinations, Sink
from pggate.logsink.syslog import SyslogSocket

PREFIX = "%m [%p] %q%u@%d/%a %h %r %c %l %e %L %b: "
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"


def session_lines(log: str, session_id: str) -> list[str]:
    return [line for line in log.splitlines() if f" {session_id} " in line]


def test_log_line_prefix_in_a_session(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(
        conf=f"log_line_prefix = '{PREFIX}'\nlog_connections = all\nlog_disconnections = on\n"
        "log_timezone = 'Asia/Tokyo'\n"
    )
    pid = gateway.process.pid
    dsn = gateway.dsn(user="alice", dbname="appdb", application_name="myapp")
    with psycopg.connect(dsn) as conn:
        conn.execute("select 1")
    assert login_error(gateway.port, user="alice", database="nosuch")[0] == "3D000"
    gateway.wait_for_log("disconnection:")
    gateway.wait_for_log('FATAL:  database "nosuch" does not exist')
    log = gateway.log()

    authorized = next(line for line in log.splitlines() if "connection authorized:" in line)
    found = re.fullmatch(
        rf"{STAMP} JST \[{pid}\] alice@appdb/myapp 127\.0\.0\.1 127\.0\.0\.1\((\d+)\) "
        rf"([0-9a-f]+)\.{pid:x}\.([0-9a-f]+) (\d+) 00000 127\.0\.0\.1 client backend: "
        r"LOG:  connection authorized: user=alice database=appdb application_name=myapp",
        authorized,
    )
    assert found is not None, authorized
    port, start, number, _ = found.groups()
    assert abs(int(start, 16) - time.time()) < 120
    session_id = f"{start}.{pid:x}.{number}"
    lines = session_lines(log, session_id)
    # %l counts the session's own lines; before the StartupMessage the names are [unknown].
    assert [line.split(f" {session_id} ")[1].split()[0] for line in lines] == [
        str(n) for n in range(1, len(lines) + 1)
    ]
    assert lines[0].endswith(
        f"[{pid}] [unknown]@[unknown]/[unknown] 127.0.0.1 127.0.0.1({port}) {session_id} 1 "
        f"00000 127.0.0.1 client backend: LOG:  connection received: host=127.0.0.1 port={port}"
    )
    # The disconnection is logged from the relay's callback, still as the session's line.
    assert "LOG:  disconnection: session time:" in lines[-1]
    # A FATAL line's %e is the SQLSTATE the client received.
    fatal = next(line for line in log.splitlines() if '"nosuch" does not exist' in line)
    assert re.search(r"alice@nosuch/\S+ .* 3D000 127\.0\.0\.1 client backend: FATAL:  ", fatal)
    # Outside a session %q ends the prefix.
    ready = next(line for line in log.splitlines() if "ready to accept connections" in line)
    assert re.fullmatch(
        rf"{STAMP} JST \[{pid}\] LOG:  pggate is ready to accept connections", ready
    )


def objects(text: str) -> list[dict[str, Any]]:
    """Every line of a jsonlog output, parsed (each line must be one JSON object)."""
    return [json.loads(line) for line in text.splitlines()]


def test_jsonlog_on_standard_error(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(
        hba="host all bob 127.0.0.1/32 reject\n" + DEFAULT_HBA,
        conf="log_destination = 'jsonlog'\nlog_connections = all\n",
    )
    pid = gateway.process.pid
    with psycopg.connect(gateway.dsn(user="alice", dbname="appdb", application_name="myapp")):
        pass
    assert login_error(gateway.port, user="bob") == (
        "28000",
        'pg_hba.conf rejects connection for host "127.0.0.1", user "bob", database "postgres", '
        "no encryption",
    )
    gateway.wait_for_log("pg_hba.conf rejects connection")
    found = objects(gateway.log())

    ready = next(obj for obj in found if obj["message"] == "pggate is ready to accept connections")
    assert list(ready) == [
        "timestamp", "pid", "session_id", "line_num", "session_start", "txid",
        "error_severity", "state_code", "message", "backend_type", "query_id",
    ]  # fmt: skip
    assert (ready["pid"], ready["error_severity"], ready["state_code"]) == (pid, "LOG", "00000")
    assert (ready["backend_type"], ready["txid"], ready["query_id"]) == ("postmaster", 0, 0)
    assert re.fullmatch(rf"[0-9a-f]+\.{pid:x}", ready["session_id"])
    assert ready["timestamp"].endswith(" UTC")

    authorized = next(obj for obj in found if obj["message"].startswith("connection authorized"))
    received = next(
        obj
        for obj in found
        if obj["message"].startswith("connection received")
        and obj["session_id"] == authorized["session_id"]
    )
    assert list(authorized) == [
        "timestamp", "user", "dbname", "pid", "remote_host", "remote_port", "session_id",
        "line_num", "session_start", "txid", "error_severity", "state_code", "message",
        "application_name", "backend_type", "query_id",
    ]  # fmt: skip
    assert authorized["message"] == (
        "connection authorized: user=alice database=appdb application_name=myapp"
    )
    expected = {
        "user": "alice",
        "dbname": "appdb",
        "pid": pid,
        "remote_host": "127.0.0.1",
        "remote_port": received["remote_port"],
        "txid": 0,
        "error_severity": "LOG",
        "state_code": "00000",
        "application_name": "myapp",
        "backend_type": "client backend",
        "query_id": 0,
    }
    assert {key: authorized[key] for key in expected} == expected
    assert (
        received["message"] == f"connection received: host=127.0.0.1 port={received['remote_port']}"
    )
    assert isinstance(received["remote_port"], int)
    assert "user" not in received and "dbname" not in received  # not known yet
    assert authorized["line_num"] > received["line_num"]

    refused = next(obj for obj in found if obj["error_severity"] == "FATAL")
    assert (refused["user"], refused["dbname"], refused["state_code"]) == (
        "bob",
        "postgres",
        "28000",
    )
    assert refused["message"].startswith("pg_hba.conf rejects connection for host")
    assert refused["detail"].startswith("Connection matched file")
    assert refused["session_id"] != authorized["session_id"]


@dataclasses.dataclass
class LogFileGateway(Gateway):
    """A gateway whose log is read from its log_file, which may not exist for a moment after
    logrotate moved it (until the reload creates it again)."""

    def log(self) -> str:
        try:
            return super().log()
        except FileNotFoundError:
            return ""


def moved(gateway: Gateway, path: Path) -> Gateway:
    """The gateway, with its log read from ``path`` (log_file) instead of standard error."""
    return LogFileGateway(gateway.directory, gateway.port, gateway.process, path)


def test_log_file_is_reopened_on_sighup(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(conf="log_file = 'server.log'\nlog_destination = 'stderr,jsonlog'\n")
    text_file, json_file = gateway.directory / "server.log", gateway.directory / "server.json"
    server = moved(gateway, text_file)
    with psycopg.connect(gateway.dsn(user="alice")):
        pass
    server.wait_for_log("connection authorized: user=alice")
    assert text_file.stat().st_mode & 0o777 == 0o600
    assert json_file.stat().st_mode & 0o777 == 0o600
    assert "connection authorized" not in gateway.log()  # nothing on standard error
    assert any(obj["user"] == "alice" for obj in objects(json_file.read_text()) if "user" in obj)

    # logrotate: move the files away, then SIGHUP.
    text_file.rename(gateway.directory / "server.log.1")
    json_file.rename(gateway.directory / "server.json.1")
    gateway.process.send_signal(signal.SIGHUP)
    server.wait_for_log("configuration files reloaded")
    old_text = (gateway.directory / "server.log.1").read_text()
    old_json = (gateway.directory / "server.json.1").read_text()
    assert old_text.splitlines()[-1].endswith(
        "LOG:  received SIGHUP, reloading configuration files"
    )
    with psycopg.connect(gateway.dsn(user="bob")):
        pass
    server.wait_for_log("connection authorized: user=bob")
    assert (gateway.directory / "server.log.1").read_text() == old_text  # no longer written
    assert (gateway.directory / "server.json.1").read_text() == old_json
    assert "user=bob" not in old_text
    assert "received SIGHUP" not in text_file.read_text()
    assert any(obj.get("user") == "bob" for obj in objects(json_file.read_text()))


LINE = re.compile(
    rf"{STAMP} UTC \[\d+\] (?:[0-9a-f]+\.[0-9a-f]+(?:\.[0-9a-f]+)? \d+ )?"
    r"(?:LOG|WARNING|ERROR|FATAL|DETAIL|HINT):  \S.*"
)


def test_workers_share_the_log_file(make_gateway: GatewayFactory) -> None:
    """Each record is one write: the lines of two workers and the supervisor never mix. The
    supervisor reopens the file on SIGHUP too (its worker restart lands in the new file)."""
    gateway = make_gateway(
        conf="workers = 2\nlog_file = 'server.log'\nlog_line_prefix = '%m [%p] %q%c %l '\n"
        "log_disconnections = on\n"
    )
    text_file = gateway.directory / "server.log"
    server = moved(gateway, text_file)
    server.wait_for_log("pggate is ready to accept connections", count=2)
    for _ in range(12):
        with psycopg.connect(gateway.dsn()):
            pass
    server.wait_for_log("disconnection:", count=12)
    text = text_file.read_text()
    assert [line for line in text.splitlines() if not LINE.fullmatch(line)] == []
    started = dict(re.findall(r"worker (\d) started \(PID (\d+)\)", text))
    assert sorted(started) == ["0", "1"]

    text_file.rename(gateway.directory / "server.log.1")
    gateway.process.send_signal(signal.SIGHUP)
    server.wait_for_log("configuration files reloaded", count=2)
    os.kill(int(started["1"]), signal.SIGKILL)  # a worker of the gateway this test started
    server.wait_for_log("worker 1 started (PID")  # the supervisor's line, in the new file
    assert (gateway.directory / "server.log.1").read_text().count("worker 1 started") == 1


def test_destinations_that_cannot_open_stop_the_start(backend: Backend, tmp_path: Path) -> None:
    """Fail closed: serve exits FATAL without listening, and check reports the same problem."""
    directory = tmp_path / "gw"
    prepare_gateway_dir(directory, backend, conf="log_file = 'missing/server.log'\n")
    message = (
        f'could not open log file "{directory / "missing" / "server.log"}": '
        "No such file or directory"
    )
    served = pggate("serve", directory)
    assert served.returncode == 1
    assert f"FATAL:  {message}" in served.stderr
    assert "ready to accept connections" not in served.stderr
    checked = pggate("check", directory)
    assert checked.returncode == 1
    assert f"error: {message}" in checked.stderr

    if os.path.exists("/dev/log"):
        return  # a system logger runs here: syslog is fine
    with (directory / "pggate.conf").open("a") as conf:
        conf.write("log_file = ''\nlog_destination = 'syslog'\n")
    served = pggate("serve", directory)
    assert served.returncode == 1
    assert (
        'FATAL:  could not connect to the system logger at "/dev/log": No such file or directory'
        in served.stderr
    )


def pggate(command: str, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pggate", command, str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_syslog_datagrams_on_a_real_socket(tmp_path: Path) -> None:
    """The handler's datagrams as a system logger receives them on /dev/log: glibc's header
    with the facility, ident and PID, then write_syslog's [seq-n] pieces, one per line."""
    address = str(tmp_path / "log")
    logger_socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    logger_socket.bind(address)
    logger_socket.settimeout(5)
    syslog = SyslogSocket("local3", "pggate-test", address=address)
    syslog.connect()
    out = Sink(Destinations(stderr=False, syslog=True), ZoneInfo("UTC"), syslog=syslog)
    try:
        fields.PROCESS.reset()
        record = logging.LogRecord("pggate.t", logging.CRITICAL, __file__, 1, "boom", None, None)
        record.__dict__.update(detail="why", sqlstate="28000")
        out.write(record)
        out.write(logging.LogRecord("pggate.t", logging.INFO, __file__, 1, "fine", None, None))
        received = [logger_socket.recv(4096) for _ in range(3)]
    finally:
        out.close()
        logger_socket.close()
    heads = [
        re.match(rb"<(\d+)>(\w{3} [ \d]\d \d\d:\d\d:\d\d) pggate-test\[(\d+)\]: ", d)
        for d in received
    ]
    assert all(head is not None and int(head[3]) == os.getpid() for head in heads)
    priorities = [int(head[1]) for head in heads if head is not None]
    assert priorities == [19 * 8 + 3, 19 * 8 + 3, 19 * 8 + 6]  # local3; LOG_ERR, LOG_INFO
    bodies = [data[head.end() :] for data, head in zip(received, heads, strict=True) if head]
    seq = int(bodies[0][1 : bodies[0].index(b"-")])
    assert re.fullmatch(rf"\[{seq}-1\] {STAMP} UTC \[\d+\] FATAL:  boom".encode(), bodies[0])
    assert re.fullmatch(rf"\[{seq}-2\] {STAMP} UTC \[\d+\] DETAIL:  why".encode(), bodies[1])
    assert re.fullmatch(rf"\[{seq + 1}-1\] {STAMP} UTC \[\d+\] LOG:  fine".encode(), bodies[2])


def test_syslog_after_the_logger_restarts(tmp_path: Path) -> None:
    """A send that fails (the logger went away and came back) reconnects once, as syslog(3)."""
    address = str(tmp_path / "log")
    first = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    first.bind(address)
    syslog = SyslogSocket("local0", "pggate", address=address)
    syslog.connect()
    first.close()
    os.unlink(address)
    second = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    second.bind(address)
    second.settimeout(5)
    try:
        syslog.send(logging.INFO, "LOG:  again\n", split=True, sequence_numbers=False)
        assert second.recv(4096).endswith(b"]: [1] LOG:  again")
    finally:
        syslog.close()
        second.close()
