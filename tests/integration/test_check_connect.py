"""``pggate check --connect``: log in to the backend as serve would and report what it found."""

from __future__ import annotations

from pathlib import Path

from conftest import Backend, check_connect, free_port, prepare_gateway_dir


def test_reports_the_backend(backend: Backend, tmp_path: Path) -> None:
    directory = tmp_path / "gw"
    prepare_gateway_dir(directory, backend, hba="host all all 127.0.0.1/32 scram-sha-256\n")
    result = check_connect(directory)
    assert result.returncode == 0, result.stderr
    assert "server: PostgreSQL " in result.stdout
    assert "link: not encrypted (Unix socket" in result.stdout
    assert "pg_authid readable: yes" in result.stdout
    assert "role memberships readable: yes" in result.stdout


def test_a_role_that_cannot_read_verifiers_fails_the_check(
    backend: Backend, tmp_path: Path
) -> None:
    backend.execute(
        "DROP ROLE IF EXISTS probe_weak",
        "CREATE ROLE probe_weak LOGIN",
    )
    directory = tmp_path / "gw"
    weak = backend.conninfo.replace("user=postgres", "user=probe_weak")
    assert weak != backend.conninfo
    prepare_gateway_dir(directory, backend, hba="host all all 127.0.0.1/32 scram-sha-256\n")
    conf = directory / "pggate.conf"
    conf.write_text(conf.read_text().replace(backend.conninfo, weak))
    result = check_connect(directory)
    assert result.returncode == 1, result.stdout
    assert 'as role "probe_weak"' in result.stdout
    assert "pg_authid readable: no (needed for password, md5 and scram-sha-256 logins)" in (
        result.stderr
    )


def test_an_unreachable_backend_fails_the_check(tmp_path: Path) -> None:
    directory = tmp_path / "gw"
    directory.mkdir()
    (directory / "pggate.conf").write_text(
        f"port = {free_port()}\nbackend = 'host=127.0.0.1 port={free_port()} sslmode=disable "
        "password=never-printed'\n"
    )
    (directory / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    result = check_connect(directory)
    assert result.returncode == 1
    assert "could not log in to any backend host" in result.stderr
    assert "unreachable:" in result.stdout and "Connection refused" in result.stdout
    assert "never-printed" not in result.stdout + result.stderr
