"""policy.load_snapshot: one builder for start and reload, with PostgreSQL's rule per file.

pggate.conf and pg_hba.conf load all or nothing; a broken pg_ident.conf keeps the previous maps;
broken TLS files, or an encrypted key whose passphrase cannot be asked again, keep the previous
TLS context together with its end-point hash; GSSAPI is on for a readable keytab, named to GSSAPI
per connection without touching the process environment. Real files in a temporary directory,
no server.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest
from conftest_tls import CertFactory, Issued

from pggate.errors import ConfigError
from pggate.hba import IdentMaps
from pggate.policy import GssState, LoadFailure, Snapshot, TlsState, load_snapshot
from pggate.server.gateway import Gateway

HBA = "host all all 127.0.0.1/32 trust\n"
IDENT = "certs alice alice\n"


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pggate")


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> CertFactory:
    return CertFactory(tmp_path_factory.mktemp("snapshot-pki"))


@pytest.fixture(scope="module")
def first(factory: CertFactory) -> Issued:
    return factory.server("first")


def tls_conf(issued: Issued, extra: str = "") -> str:
    return (
        "ssl = on\n"
        f"ssl_cert_file = '{issued.cert_path}'\n"
        f"ssl_key_file = '{issued.key_path}'\n" + extra
    )


def write(directory: Path, *, conf: str, hba: str = HBA, ident: str | None = IDENT) -> Path:
    (directory / "pggate.conf").write_text(conf)
    (directory / "pg_hba.conf").write_text(hba)
    if ident is None:
        (directory / "pg_ident.conf").unlink(missing_ok=True)
    else:
        (directory / "pg_ident.conf").write_text(ident)
    return directory


def start(directory: Path) -> Snapshot:
    return load_snapshot(directory, {})


def reload(directory: Path, previous: Snapshot) -> Snapshot:
    return load_snapshot(directory, {}, previous=previous)


# --- start ---------------------------------------------------------------------------------------


def test_start_loads_every_part(tmp_path: Path, first: Issued) -> None:
    snapshot = start(write(tmp_path, conf=tls_conf(first)))
    assert snapshot.policy.config.ssl
    assert [rule.method for rule in snapshot.policy.hba.rules] == ["trust"]
    assert snapshot.tls.context is not None
    # The hash of exactly the certificate the context presents (ECDSA with SHA-256).
    assert snapshot.tls.end_point_hash == hashlib.sha256(first.der).digest()
    assert snapshot.gss == GssState() and not snapshot.gss.enabled


def test_start_without_ssl_has_no_tls(tmp_path: Path) -> None:
    assert start(write(tmp_path, conf="")).tls == TlsState()


def test_start_broken_conf_is_a_load_failure(tmp_path: Path, first: Issued) -> None:
    write(tmp_path, conf=tls_conf(first, "no_such_setting = 1\nport = 'x'\n"))
    with pytest.raises(LoadFailure) as caught:
        start(tmp_path)
    assert caught.value.message == (
        f'configuration file "{tmp_path.absolute() / "pggate.conf"}" contains errors'
    )
    assert len(caught.value.errors) == 2  # every bad line, as PostgreSQL logs each


def test_start_broken_hba_is_a_load_failure(tmp_path: Path) -> None:
    write(tmp_path, conf="", hba="host all all 127.0.0.1/32 trust\nhost all\n")
    with pytest.raises(LoadFailure) as caught:
        start(tmp_path)
    assert caught.value.message == f"could not load {tmp_path / 'pg_hba.conf'}"
    assert [error.line for error in caught.value.errors] == [2]


def test_start_broken_ident_starts_without_maps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    snapshot = start(write(tmp_path, conf="", ident="certs alice\n"))
    assert snapshot.policy.ident == IdentMaps()
    assert any(record.levelno == logging.ERROR for record in caplog.records)


def test_start_broken_tls_is_its_config_error(tmp_path: Path, first: Issued) -> None:
    conf = tls_conf(first).replace(str(first.cert_path), str(tmp_path / "missing.crt"))
    with pytest.raises(ConfigError) as caught:
        start(write(tmp_path, conf=conf))
    assert not isinstance(caught.value, LoadFailure)
    assert "missing.crt" in str(caught.value)


# --- reload --------------------------------------------------------------------------------------


def test_reload_broken_conf_or_hba_raises_and_changes_nothing(
    tmp_path: Path, first: Issued
) -> None:
    previous = start(write(tmp_path, conf=tls_conf(first)))
    write(tmp_path, conf=tls_conf(first, "bogus = on\n"))
    with pytest.raises(LoadFailure):
        reload(tmp_path, previous)
    write(tmp_path, conf=tls_conf(first), hba="hostssl all\n")
    with pytest.raises(LoadFailure) as caught:
        reload(tmp_path, previous)
    assert caught.value.errors[0].line == 1


def test_reload_keeps_the_previous_ident_maps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    previous = start(write(tmp_path, conf=""))
    snapshot = reload(write(tmp_path, conf="", hba=HBA + HBA, ident="certs alice\n"), previous)
    assert snapshot.policy.ident is previous.policy.ident
    assert len(snapshot.policy.hba.rules) == 2  # the other files did reload
    assert f"{tmp_path / 'pg_ident.conf'} was not reloaded" in caplog.messages


def test_reload_keeps_the_previous_tls_state_when_its_files_fail(
    tmp_path: Path, first: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    previous = start(write(tmp_path, conf=tls_conf(first)))
    broken = tls_conf(first).replace(str(first.key_path), str(tmp_path / "missing.key"))
    snapshot = reload(write(tmp_path, conf=broken, hba=HBA + HBA), previous)
    assert snapshot.tls is previous.tls  # context and hash together, never one of them
    assert len(snapshot.policy.hba.rules) == 2
    assert snapshot.policy.config.ssl_key_file.endswith("missing.key")
    assert "SSL configuration was not reloaded" in caplog.messages
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("missing.key" in message for message in errors)


def test_reload_keeps_the_previous_tls_state_for_a_passphrase_it_cannot_ask(
    tmp_path: Path, factory: CertFactory, caplog: pytest.LogCaptureFixture
) -> None:
    locked = factory.server("locked", passphrase=b"secret")
    conf = tls_conf(locked, "ssl_passphrase_command = 'echo secret'\n")
    previous = start(write(tmp_path, conf=conf))
    assert previous.tls.end_point_hash == hashlib.sha256(locked.der).digest()
    snapshot = reload(tmp_path, previous)
    assert snapshot.tls is previous.tls
    assert "SSL configuration was not reloaded" in caplog.messages
    assert any("cannot be reloaded because it requires a passphrase" in m for m in caplog.messages)
    # With supports_reload the command runs again and the context is rebuilt.
    write(tmp_path, conf=conf + "ssl_passphrase_command_supports_reload = on\n")
    rebuilt = reload(tmp_path, previous)
    assert rebuilt.tls is not previous.tls
    assert rebuilt.tls.end_point_hash == previous.tls.end_point_hash


def test_reload_new_certificate_brings_its_own_hash(
    tmp_path: Path, factory: CertFactory, first: Issued
) -> None:
    second = factory.server("second")
    previous = start(write(tmp_path, conf=tls_conf(first)))
    snapshot = reload(write(tmp_path, conf=tls_conf(second)), previous)
    assert snapshot.tls.context is not previous.tls.context
    assert snapshot.tls.end_point_hash == hashlib.sha256(second.der).digest()
    assert previous.tls.end_point_hash == hashlib.sha256(first.der).digest()


def test_reload_keeps_restart_only_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    previous = start(write(tmp_path, conf="port = 7000\nlog_connections = 'receipt'\n"))
    snapshot = reload(write(tmp_path, conf="port = 7001\nlog_connections = ''\n"), previous)
    assert snapshot.policy.config.port == 7000
    assert snapshot.policy.config.log_connections != previous.policy.config.log_connections
    assert 'parameter "port" cannot be changed without restarting the server' in caplog.messages


def test_reload_turning_ssl_off_drops_the_context(tmp_path: Path, first: Issued) -> None:
    previous = start(write(tmp_path, conf=tls_conf(first)))
    assert reload(write(tmp_path, conf=""), previous).tls == TlsState()


# --- GSSAPI --------------------------------------------------------------------------------------


def test_gss_is_on_for_a_readable_keytab_and_the_environment_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("gssapi")
    monkeypatch.delenv("KRB5_KTNAME", raising=False)
    (tmp_path / "server.keytab").write_bytes(b"")
    snapshot = start(write(tmp_path, conf="krb_server_keyfile = 'FILE:server.keytab'\n"))
    assert snapshot.gss.enabled
    assert snapshot.gss.keytab == f"FILE:{tmp_path / 'server.keytab'}"
    again = reload(write(tmp_path, conf="krb_server_keyfile = 'server.keytab'\n"), snapshot)
    assert again.gss == snapshot.gss
    assert "KRB5_KTNAME" not in os.environ  # named per connection, never set process-wide


def test_gss_is_off_for_an_unreadable_keytab(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("gssapi")
    snapshot = start(write(tmp_path, conf="krb_server_keyfile = 'missing.keytab'\n"))
    assert snapshot.gss == GssState()
    assert (
        f'could not read Kerberos keytab "{tmp_path / "missing.keytab"}"; GSSAPI is disabled'
        in caplog.messages
    )


# --- one snapshot per connection -----------------------------------------------------------------


def test_a_connection_keeps_the_snapshot_of_its_accept(tmp_path: Path, first: Issued) -> None:
    old = start(write(tmp_path, conf=tls_conf(first)))
    gateway = Gateway(old)
    session = gateway.new_session()
    new = reload(write(tmp_path, conf=""), old)
    gateway.install(new)  # one assignment: what new connections get
    assert gateway.snapshot is new
    assert session.snapshot is old
    assert gateway.new_session().snapshot is new
