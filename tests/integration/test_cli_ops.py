"""Operating a gateway with real ``pggate`` processes: status/reload/stop trust only a locked pid
file, reload reports the server's verdict, init is all or nothing, a busy port gets
PostgreSQL's words, and ``--version`` says what pggate runs with."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import Backend, GatewayFactory, free_port, prepare_gateway_dir, start_gateway
from test_embedded_default import pggate

from pggate import embedded
from pggate.cli import build_parser
from pggate.directory import pidfile
from pggate.server.listener import version_line
from pggate.tls import certs

pytestmark = pytest.mark.integration

BROKEN_HBA = "host all all 127.0.0.1/32 bogus\nhost all all 1.2.3/99 trust\n"
HBA_ERRORS = (
    'invalid authentication method "bogus", line 1 of configuration file',
    'invalid CIDR mask in address "1.2.3/99", line 2 of configuration file',
)
PASSPHRASE = "reload-me-not"


@pytest.fixture
def unrelated() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not pggate (what a stale pid file may name after a reboot)."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


# --- pid file ------------------------------------------------------------------------------------


def test_a_stale_pid_file_is_never_signaled_and_serve_replaces_it(
    backend: Backend, tmp_path: Path, unrelated: subprocess.Popen[bytes]
) -> None:
    directory = tmp_path / "gw"
    port = prepare_gateway_dir(directory, backend)
    (directory / "pggate.pid").write_text(f"{unrelated.pid}\n{port}\n")
    stale = (
        f'stale pid file "{directory / "pggate.pid"}" '
        f"(PID {unrelated.pid} is not a pggate server for this directory)"
    )

    status = pggate("status", str(directory))
    assert status.returncode == 3, status.stdout
    assert "no server running" in status.stdout
    assert stale in status.stderr
    for command in ("reload", "stop"):
        refused = pggate(command, str(directory))
        assert refused.returncode == 1, refused.stdout
        assert f'no server running in "{directory}": {stale}' in refused.stderr
    assert unrelated.poll() is None, "the unrelated process was signaled"

    gateway = start_gateway(directory, port=port)
    try:
        assert f"replacing {stale}" in gateway.log()
        status = pggate("status", str(directory))
        assert f"server is running (PID: {gateway.process.pid})" in status.stdout
    finally:
        gateway.stop()
    assert unrelated.poll() is None


def test_workers_share_the_supervisors_lock_and_all_report_a_reload(
    make_gateway: GatewayFactory,
) -> None:
    gateway = make_gateway(conf="workers = 2\n")
    gateway.wait_for_log("ready to accept connections", count=2)
    directory = str(gateway.directory)
    status = pggate("status", directory)
    assert f"server is running (PID: {gateway.process.pid})" in status.stdout
    reloaded = pggate("reload", directory)
    assert reloaded.returncode == 0, reloaded.stderr
    assert reloaded.stdout.splitlines() == ["server signaled", "server reloaded"]
    results = pidfile.reload_results(gateway.directory, 2)
    assert {r.server for r in results if r} == {gateway.process.pid}
    assert len({r.pid for r in results if r}) == 2
    stopped = pggate("stop", directory)
    assert stopped.returncode == 0, stopped.stderr
    assert gateway.process.wait(timeout=30) == 0
    assert sorted(p.name for p in gateway.directory.glob("pggate.*")) == [
        "pggate.conf",
        "pggate.log",
    ]


# --- reload -------------------------------------------------------------------------------------


def test_reload_refuses_a_directory_with_problems(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway()
    gateway.write_hba(BROKEN_HBA)
    refused = pggate("reload", str(gateway.directory))
    assert refused.returncode == 1
    for error in HBA_ERRORS:
        assert f"error: {error}" in refused.stderr
    assert "server not signaled" in refused.stderr
    assert "received SIGHUP" not in gateway.log()


def test_the_server_logs_every_error_of_a_broken_file(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway()
    gateway.write_hba(BROKEN_HBA)
    gateway.reload(expect="were not reloaded")
    (result,) = pidfile.reload_results(gateway.directory, 1)
    assert result is not None
    errors = result.errors
    assert len(errors) == len(HBA_ERRORS)
    for error, expected in zip(errors, HBA_ERRORS, strict=True):
        assert expected in error
        assert f"ERROR:  {expected}" in gateway.log()

    conf = gateway.directory / "pggate.conf"
    conf.write_text(conf.read_text() + "no_such_parameter = 1\nport = 'x'\n")
    gateway.write_hba("host all all 127.0.0.1/32 trust\n")
    gateway.reload(expect="were not reloaded")
    (result,) = pidfile.reload_results(gateway.directory, 1)
    assert result is not None
    errors = result.errors
    assert len(errors) == 2
    assert 'unrecognized configuration parameter "no_such_parameter"' in errors[0]
    assert 'invalid value for parameter "port": "x"' in errors[1]
    assert gateway.log().count(f'of configuration file "{conf}"') >= 2


def test_reload_prints_the_servers_verdict(backend: Backend, tmp_path: Path) -> None:
    """A passphrase-protected key reloads only with ssl_passphrase_command_supports_reload, as in
    PostgreSQL; the directory is fine (check runs the command), so only the server can say so."""

    def encrypted_key(directory: Path) -> None:
        ca_cert, ca_key = certs.make_ca("reload test CA")
        cert, key = certs.make_server_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"])
        certs.write_cert(directory / "server.crt", cert)
        certs.write_key(directory / "server.key", key, PASSPHRASE.encode())

    directory = tmp_path / "gw"
    port = prepare_gateway_dir(
        directory,
        backend,
        conf=f"ssl = on\nssl_passphrase_command = 'echo {PASSPHRASE}'\n",
        setup=encrypted_key,
    )
    gateway = start_gateway(directory, port=port)
    try:
        failed = pggate("reload", str(directory))
        assert failed.returncode == 1, failed.stdout
        assert failed.stdout.splitlines() == ["server signaled"]
        key = directory / "server.key"
        assert (
            f'error: private key file "{key}" cannot be reloaded because it requires a passphrase'
            in failed.stderr
        )
        assert "server kept its previous configuration" in failed.stderr

        with (directory / "pggate.conf").open("a") as conf:
            conf.write("ssl_passphrase_command_supports_reload = on\n")
        reloaded = pggate("reload", str(directory), "-t", "20")
        assert reloaded.returncode == 0, reloaded.stderr
        assert reloaded.stdout.splitlines() == ["server signaled", "server reloaded"]
        with psycopg.connect(gateway.dsn(sslmode="require")) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        gateway.stop()


def test_a_sighup_while_the_embedded_cluster_starts_is_applied_once_serving(
    public_tmp: Path,
) -> None:
    """The pid file exists before the cluster is up; a reload then must not kill pggate (SIGHUP's
    default action) but wait for the event loop."""
    directory = public_tmp / "gate"
    port = free_port()
    created = pggate("init", str(directory), "--port", str(port), "--listen-addresses", "127.0.0.1")
    assert created.returncode == 0, created.stderr
    pid_file = directory / "pggate.pid"

    def hangup_once_claimed() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGHUP)
                return
            time.sleep(0.001)

    sender = threading.Thread(target=hangup_once_claimed)
    sender.start()
    gateway = start_gateway(directory, port=port, timeout=120)
    sender.join()
    try:
        gateway.wait_for_log("configuration files reloaded")
        (result,) = pidfile.reload_results(directory, 1)
        assert result is not None
        assert (result.server, result.errors) == (gateway.process.pid, ())
    finally:
        assert gateway.stop() == 0, gateway.log()


# --- init ---------------------------------------------------------------------------------------


def fake_bindir(base: Path) -> Path:
    """PostgreSQL binaries whose initdb leaves a file in the data directory, then fails."""
    bindir = base / "fakepg" / "bin"
    bindir.mkdir(parents=True)
    scripts = {
        "postgres": 'echo "postgres (PostgreSQL) 17.2"',
        "pg_ctl": "exit 1",
        "initdb": 'touch "$2/half-done"; echo "initdb: error: out of luck" >&2; exit 1',
    }
    for name, body in scripts.items():
        (bindir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bindir / name).chmod(0o755)
    for path in (base / "fakepg", bindir):
        path.chmod(0o755)
    return bindir


def test_init_that_fails_in_initdb_leaves_the_empty_directory_empty(
    public_tmp: Path,
) -> None:
    directory = public_tmp / "gate"
    directory.mkdir()
    failed = pggate("init", str(directory), "--postgres-bindir", str(fake_bindir(public_tmp)))
    assert failed.returncode == 1
    assert "initdb failed" in failed.stderr
    assert list(directory.iterdir()) == []


def test_init_that_fails_leaves_no_directory_and_the_retry_works(
    public_tmp: Path,
) -> None:
    directory = public_tmp / "new" / "gate"
    failed = pggate("init", str(directory), "--postgres-bindir", str(public_tmp / "no-such-dir"))
    assert failed.returncode == 1
    assert "PostgreSQL binary directory" in failed.stderr
    assert list(public_tmp.iterdir()) == []

    bad_port = pggate("init", str(directory), "--port", "99999")
    assert bad_port.returncode == 1
    assert 'outside the valid range for parameter "port"' in bad_port.stderr
    assert list(public_tmp.iterdir()) == []

    created = pggate("init", str(directory), "--listen-addresses", "127.0.0.1")
    assert created.returncode == 0, created.stderr
    assert (directory / "pgdata" / "PG_VERSION").is_file()
    assert pggate("check", str(directory)).returncode == 0


# --- listening ----------------------------------------------------------------------------------


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("family", "address"),
    [
        (socket.AF_INET, "127.0.0.1"),
        pytest.param(
            socket.AF_INET6,
            "::1",
            marks=pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here"),
        ),
    ],
)
def test_a_port_in_use_is_fatal_in_postgresqls_words(
    backend: Backend, tmp_path: Path, family: socket.AddressFamily, address: str
) -> None:
    directory = tmp_path / "gw"
    port = prepare_gateway_dir(directory, backend)
    with socket.socket(family) as taken:
        taken.bind((address, port))
        taken.listen()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pggate",
                "serve",
                str(directory),
                "-c",
                f"listen_addresses={address}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    name = "IPv6" if family == socket.AF_INET6 else "IPv4"
    expected = textwrap.dedent(f"""\
        LOG:  could not bind {name} address "{address}": Address already in use
        HINT:  Is another pggate or PostgreSQL already running on port {port}? If not, wait a few seconds and retry.
        WARNING:  could not create listen socket for "{address}"
        FATAL:  could not create any TCP/IP sockets
        """)  # noqa: E501  (PostgreSQL's lines, whole)
    assert [line.split("] ", 1)[1] for line in result.stderr.splitlines()[-4:]] == (
        expected.splitlines()
    )
    assert not (directory / "pggate.pid").exists()


def test_one_address_in_use_of_two_still_serves(backend: Backend, tmp_path: Path) -> None:
    directory = tmp_path / "gw"
    port = prepare_gateway_dir(directory, backend)
    with socket.socket() as taken:
        taken.bind(("127.0.0.2", port))
        taken.listen()
        gateway = start_gateway(directory, "-c", "listen_addresses=127.0.0.2,127.0.0.1", port=port)
        try:
            log = gateway.log()
            assert 'could not bind IPv4 address "127.0.0.2": Address already in use' in log
            assert 'could not create listen socket for "127.0.0.2"' in log
            with psycopg.connect(gateway.dsn()) as conn:
                assert conn.execute("select 1").fetchone() == (1,)
        finally:
            gateway.stop()


# --- the command line ---------------------------------------------------------------------------


def test_version_names_pggate_python_openssl_and_the_postgresql_binaries(
    make_gateway: GatewayFactory,
) -> None:
    result = pggate("--version")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    bindir = embedded.find_postgres_bindir()
    assert line.startswith("pggate 0.")
    assert f", Python {sys.version.split()[0]}, {ssl.OPENSSL_VERSION}, " in line
    assert f"PostgreSQL binaries: {bindir} (PostgreSQL " in line
    assert version_line("/nonexistent").endswith("PostgreSQL binaries: none found")
    gateway = make_gateway()
    assert f"LOG:  starting {line}\n" in gateway.log()


def test_every_argument_of_every_command_has_help() -> None:
    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {action.dest}"
        for name, sub in commands.choices.items()
        if name != "cert"  # certcli.py's own parsers
        for action in sub._actions
        if not action.help
    ]
    assert missing == []
    assert all(a.help for a in parser._actions)
    init_help = " ".join(commands.choices["init"].format_help().split())
    assert "(default: 6432)" in init_help
    assert "(default: localhost)" in init_help
    assert "(default: 30.0)" in " ".join(commands.choices["reload"].format_help().split())
