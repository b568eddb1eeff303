"""The one-command path: ``pggate init DIR`` + ``pggate serve DIR`` with the embedded cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from conftest import free_port, start_gateway

pytestmark = pytest.mark.integration


def pggate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pggate", *args], capture_output=True, text=True, timeout=180
    )


def rejecting_dir(directory: Path, hba_file: str = "pg_hba.conf") -> int:
    """``directory`` (created) with a hand-written pggate.conf, listening on 127.0.0.1 in front
    of a backend nothing listens on, and ``hba_file`` rejecting everyone; returns the port."""
    directory.mkdir()
    port = free_port()
    conf = (
        f"listen_addresses = '127.0.0.1'\nport = {port}\n"
        f"backend = 'host=127.0.0.1 port={free_port()} sslmode=disable'\n"
    )
    if hba_file != "pg_hba.conf":
        conf += f"hba_file = '{hba_file}'\n"
    (directory / "pggate.conf").write_text(conf)
    (directory / hba_file).write_text("host all all 127.0.0.1/32 reject\n")
    return port


def postmaster_running(data_dir: Path) -> bool:
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_init_serve_query_stop(public_tmp: Path) -> None:
    directory = public_tmp / "gate"
    port = free_port()
    created = pggate("init", str(directory), "--port", str(port), "--listen-addresses", "127.0.0.1")
    assert created.returncode == 0, created.stderr
    for name in ("pggate.conf", "pg_hba.conf", "pg_ident.conf", "pgdata/PG_VERSION"):
        assert (directory / name).exists(), name
    checked = pggate("check", str(directory))
    assert checked.returncode == 0, checked.stderr

    gateway = start_gateway(directory, port=port, timeout=120)
    try:
        dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable"
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "select current_user, setting from pg_settings where name = 'listen_addresses'"
            ).fetchone()
        assert row == ("postgres", "")  # the embedded cluster has no TCP port of its own
        psql = subprocess.run(["psql", dsn, "-XAtc", "select 1"], capture_output=True, text=True)
        assert psql.stdout.strip() == "1", psql.stderr
        assert postmaster_running(directory / "pgdata")
    finally:
        code = gateway.stop(signal.SIGTERM)
    assert code == 0, gateway.log()
    assert not postmaster_running(directory / "pgdata"), gateway.log()
    if os.geteuid() == 0:
        assert "PostgreSQL refuses to run as root" in gateway.log() or "runs as" in gateway.log()


def test_check_reports_every_problem(public_tmp: Path) -> None:
    directory = public_tmp / "hand"
    directory.mkdir()
    (directory / "pggate.conf").write_text(
        "port = 99999\nno_such_parameter = 1\n"
        "backend = 'host=127.0.0.1 port=5432 sslmode=disable'\n"
    )
    result = pggate("check", str(directory))
    assert result.returncode != 0
    assert "line 1 of configuration file" in result.stderr
    assert 'unrecognized configuration parameter "no_such_parameter"' in result.stderr


def test_hand_written_directory_serves(public_tmp: Path) -> None:
    """Just pggate.conf and the files it names: no init needed (backend is unreachable here)."""
    directory = public_tmp / "hand"
    port = rejecting_dir(directory, hba_file="rules.conf")
    gateway = start_gateway(directory, port=port)
    try:
        with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects connection"):
            psycopg.connect(f"host=127.0.0.1 port={port} user=x dbname=y sslmode=disable")
    finally:
        gateway.stop()


def test_status_reload_stop_commands(public_tmp: Path) -> None:
    directory = public_tmp / "ctl"
    port = rejecting_dir(directory)
    assert pggate("status", str(directory)).returncode == 3
    gateway = start_gateway(directory, port=port)
    try:
        status = pggate("status", str(directory))
        assert status.returncode == 0
        assert f"server is running (PID: {gateway.process.pid})" in status.stdout
        second = pggate("serve", str(directory))  # the directory is taken
        assert second.returncode != 0
        assert "is another pggate" in second.stderr
        assert pggate("reload", str(directory)).returncode == 0
        gateway.wait_for_log("configuration files reloaded")
        stopped = pggate("stop", str(directory), "-m", "smart")
        assert stopped.returncode == 0, stopped.stderr
        assert gateway.process.wait(timeout=10) == 0
        assert not (directory / "pggate.pid").exists()
    finally:
        gateway.stop()


def test_check_warns_about_cleartext_password_lines(public_tmp: Path) -> None:
    directory = public_tmp / "warn"
    directory.mkdir()
    (directory / "pggate.conf").write_text(
        "backend = 'host=127.0.0.1 port=5432 sslmode=disable'\nssl = off\n"
    )
    (directory / "pg_hba.conf").write_text(
        "hostssl all alice 0.0.0.0/0 password\nhost all bob 0.0.0.0/0 password\n"
    )
    result = pggate("check", str(directory))
    assert result.returncode == 0, result.stderr  # a warning, not an error
    assert 'pg_hba.conf:2: method "password" sends the password in clear text' in result.stderr
    assert "pg_hba.conf:1:" not in result.stderr
