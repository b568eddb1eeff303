"""TLS through pggate with real clients: psycopg (libpq 18), psql (libpq 15), asyncpg, pg8000
and raw sockets, against certificates made at test time (after PostgreSQL's own SSL tests,
shared/protocol.md §9.1-9.3).

One module-scoped gateway carries the cases that only differ by pg_hba.conf line (one database
per line, as PostgreSQL's 001_ssltests.pl does); server-certificate variants, protocol limits,
reload and start-up failures get their own gateway."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pg8000.native
import psycopg
import pytest
from conftest import (
    Backend,
    Gateway,
    GatewayFactory,
    prepare_gateway_dir,
    running_gateway,
    start_gateway,
)
from reference import create_objects
from tls_support import (
    ALT_HOSTS,
    CLIENT_DN,
    CN_HOST,
    DOMAIN,
    SERVER_PASSPHRASE,
    Pair,
    Pki,
    RecordingRelay,
    client_context,
    error_fields,
    install_server_cert,
    make_pki,
    read_message,
    read_until_eof,
    recv_exactly,
    ssl_attribute,
    startup,
)

from pggate.proto import codec, codes

pytestmark = pytest.mark.integration

DATABASES = ("tls_trust", "tls_plain", "tls_cert", "tls_cert_dn", "tls_verify")

MAIN_HBA = """\
hostssl   tls_trust   all        127.0.0.1/32 trust
hostnossl tls_plain   all        127.0.0.1/32 trust
hostssl   tls_cert    all        127.0.0.1/32 cert
hostssl   tls_cert_dn all        127.0.0.1/32 cert clientname=DN map=dn
hostssl   tls_verify  alice,bob  127.0.0.1/32 trust clientcert=verify-full
hostssl   tls_verify  postgres   127.0.0.1/32 trust clientcert=verify-ca
"""
MAIN_IDENT = f'dn "{CLIENT_DN}" alice\n'
SSL_ONLY_HBA = "hostssl all all 127.0.0.1/32 trust\n"
ANY_HBA = "host all all 127.0.0.1/32 trust\n"


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_databases(backend: Backend) -> None:
    create_objects(backend.conninfo, (), DATABASES)


def _server_setup(pair: Pair, key: Path | None = None) -> Callable[[Path], None]:
    def setup(directory: Path) -> None:
        install_server_cert(directory, pair, key)

    return setup


@pytest.fixture(scope="module")
def main_gw(
    backend: Backend, pki: Pki, tls_databases: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """server-cn-only, client CA and client CRL file, the hba lines of MAIN_HBA."""
    with running_gateway(
        tmp_path_factory.mktemp("main") / "gw",
        backend,
        hba=MAIN_HBA,
        ident=MAIN_IDENT,
        conf=f"ssl = on\nssl_ca_file = '{pki.client_ca}'\nssl_crl_file = '{pki.client_crl}'\n",
        setup=_server_setup(pki.server_cn_only),
    ) as gateway:
        yield gateway


def tls_gateway(
    make_gateway: GatewayFactory, pair: Pair, conf: str = "", hba: str = SSL_ONLY_HBA
) -> Gateway:
    return make_gateway(hba=hba, conf="ssl = on\n" + conf, setup=_server_setup(pair))


# --- client helpers ----------------------------------------------------------------------------


def connect(gateway: Gateway, **options: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(gateway.dsn(**options), autocommit=True)


def verified(pki: Pki, host: str = CN_HOST, mode: str = "verify-full") -> dict[str, str]:
    """libpq options for a verified connection to ``host`` on 127.0.0.1."""
    return {
        "host": host,
        "hostaddr": "127.0.0.1",
        "sslmode": mode,
        "sslrootcert": str(pki.server_ca),
    }


def with_cert(pair: Pair, **options: str) -> dict[str, str]:
    return {"sslmode": "require", "sslcert": str(pair.crt), "sslkey": str(pair.key_path), **options}


def session_facts(gateway: Gateway, **options: str) -> tuple[bool, str]:
    """(TLS in use, current_user) of a fresh psycopg session."""
    with connect(gateway, **options) as conn:
        row = conn.execute("select current_user").fetchone()
        assert row is not None
        return bool(conn.pgconn.ssl_in_use), str(row[0])


def connect_error(gateway: Gateway, **options: str) -> str:
    with pytest.raises(psycopg.OperationalError) as info:
        connect(gateway, **options).close()
    return str(info.value)


def psql(gateway: Gateway, command: str, **options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", gateway.dsn(**options), "-XAtc", command],
        capture_output=True,
        text=True,
        timeout=30,
    )


def raw_connect(gateway: Gateway) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gateway.port), timeout=10)


def ssl_request_accepted(gateway: Gateway) -> socket.socket:
    sock = raw_connect(gateway)
    sock.sendall(codec.ssl_request())
    assert recv_exactly(sock, 1) == codes.SSL_ACCEPT
    return sock


def no_hba_entry(user: str, database: str, encryption: str) -> str:
    return (
        f'no pg_hba.conf entry for host "127.0.0.1", user "{user}", database "{database}", '
        f"{encryption}"
    )


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


# --- sslmode against hostssl / hostnossl --------------------------------------------------------

OK_TLS, OK_PLAIN = "tls", "plain"


def assert_alice_login(gateway: Gateway, options: dict[str, str], expect: str) -> None:
    """alice connects with ``options``: OK_TLS and OK_PLAIN expect her session with and without
    TLS, anything else a connection error containing ``expect``."""
    options = {**options, "user": "alice"}
    if expect in (OK_TLS, OK_PLAIN):
        assert session_facts(gateway, **options) == (expect == OK_TLS, "alice")
    else:
        assert expect in connect_error(gateway, **options)


@pytest.mark.parametrize(
    ("sslmode", "expect"),
    [
        ("disable", no_hba_entry("alice", "tls_trust", "no encryption")),
        ("allow", OK_TLS),  # plain first, refused, then TLS
        ("prefer", OK_TLS),
        ("require", OK_TLS),
        ("verify-ca", OK_TLS),
        ("verify-full", OK_TLS),
    ],
)
def test_sslmode_against_hostssl(main_gw: Gateway, pki: Pki, sslmode: str, expect: str) -> None:
    assert_alice_login(main_gw, {**verified(pki, mode=sslmode), "dbname": "tls_trust"}, expect)


@pytest.mark.parametrize(
    ("sslmode", "expect"),
    [
        ("disable", OK_PLAIN),
        ("allow", OK_PLAIN),
        ("prefer", OK_PLAIN),  # TLS first, refused by hba, then libpq retries in clear
        ("require", no_hba_entry("alice", "tls_plain", "SSL encryption")),
        ("verify-full", no_hba_entry("alice", "tls_plain", "SSL encryption")),
    ],
)
def test_sslmode_against_hostnossl(main_gw: Gateway, pki: Pki, sslmode: str, expect: str) -> None:
    assert_alice_login(main_gw, {**verified(pki, mode=sslmode), "dbname": "tls_plain"}, expect)


def test_prefer_falls_back_after_the_tls_refusal_is_logged(main_gw: Gateway) -> None:
    before = main_gw.log().count(no_hba_entry("bob", "tls_plain", "SSL encryption"))
    assert session_facts(main_gw, user="bob", dbname="tls_plain", sslmode="prefer") == (
        False,
        "bob",
    )
    # libpq's first, encrypted attempt really reached pg_hba.conf and was refused there.
    main_gw.wait_for_log(no_hba_entry("bob", "tls_plain", "SSL encryption"), count=before + 1)


@pytest.mark.parametrize(
    ("sslmode", "database", "ssl_expected"),
    [
        ("prefer", "tls_trust", True),
        ("prefer", "tls_plain", False),
        ("verify-full", "tls_trust", True),
    ],
)
def test_psql_libpq15(
    main_gw: Gateway, pki: Pki, sslmode: str, database: str, ssl_expected: bool
) -> None:
    result = psql(
        main_gw, "\\conninfo", **verified(pki, mode=sslmode), user="alice", dbname=database
    )
    assert result.returncode == 0, result.stderr
    assert f'You are connected to database "{database}" as user "alice"' in result.stdout
    assert ("SSL connection (protocol: TLSv1.3" in result.stdout) is ssl_expected


def test_psql_hostssl_refuses_plaintext(main_gw: Gateway) -> None:
    result = psql(main_gw, "select 1", user="alice", dbname="tls_trust", sslmode="disable")
    assert result.returncode != 0
    assert no_hba_entry("alice", "tls_trust", "no encryption") in result.stderr


def test_ssl_off_answers_n(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(hba=ANY_HBA)  # ssl is off by default
    with raw_connect(gateway) as sock:
        sock.sendall(codec.ssl_request())
        assert recv_exactly(sock, 1) == codes.ENCRYPTION_REFUSE
        # After N the client carries on in clear on the same connection.
        sock.sendall(startup(user="alice", database="postgres"))
        kind, body = read_message(sock)
        assert (kind, struct.unpack("!I", body)[0]) == (codes.MSG_AUTHENTICATION, codes.AUTH_OK)
    error = connect_error(gateway, sslmode="require")
    assert "server does not support SSL, but SSL was required" in error
    assert session_facts(gateway, sslmode="prefer", user="alice") == (False, "alice")
    # Direct TLS with ssl off: the connection is closed, never answered (protocol.md §2).
    with raw_connect(gateway) as sock, pytest.raises((ssl.SSLError, OSError)):
        client_context(alpn=["postgresql"]).wrap_socket(sock)


# --- server certificates ----------------------------------------------------------------------


def test_cn_only_certificate(main_gw: Gateway, pki: Pki) -> None:
    trust = {"user": "alice", "dbname": "tls_trust"}
    assert session_facts(main_gw, **verified(pki), **trust)[0]
    wrong = verified(pki, host="wronghost.test")
    assert session_facts(main_gw, **{**wrong, "sslmode": "require"}, **trust)[0]
    assert session_facts(main_gw, **{**wrong, "sslmode": "verify-ca"}, **trust)[0]
    assert (
        f'server certificate for "{CN_HOST}" does not match host name "wronghost.test"'
        in connect_error(main_gw, **wrong, **trust)
    )


def test_multiple_alt_names_with_wildcard(make_gateway: GatewayFactory, pki: Pki) -> None:
    gateway = tls_gateway(make_gateway, pki.server_multiple_alt_names)
    for host in (ALT_HOSTS[0], ALT_HOSTS[1], f"foo.wildcard.{DOMAIN}"):
        assert session_facts(gateway, **verified(pki, host=host))[0]
    # With DNS SANs present the CN is ignored (RFC 6125; libpq's verify_peer_name_matches).
    for host in (f"wronghost.alt-name.{DOMAIN}", f"deep.subdomain.wildcard.{DOMAIN}", CN_HOST):
        assert (
            f'server certificate for "{ALT_HOSTS[0]}" (and 2 other names) does not match host '
            f'name "{host}"'
        ) in connect_error(gateway, **verified(pki, host=host))


def test_certificate_without_names(make_gateway: GatewayFactory, pki: Pki) -> None:
    gateway = tls_gateway(make_gateway, pki.server_no_names)
    assert session_facts(gateway, **verified(pki, mode="verify-ca"))[0]
    assert "could not get server's host name from server certificate" in connect_error(
        gateway, **verified(pki)
    )


def test_wrong_root_certificate(main_gw: Gateway, pki: Pki) -> None:
    trust = {"user": "alice", "dbname": "tls_trust"}
    # require without a root file: encrypted, unverified.
    assert session_facts(main_gw, sslmode="require", sslrootcert="", **trust)[0]
    # libpq: a root file given with require verifies the chain too (as PostgreSQL's 001 test).
    for mode in ("require", "verify-ca", "verify-full"):
        options = {**verified(pki, mode=mode), "sslrootcert": str(pki.other_ca)}
        assert "SSL error: certificate verify failed" in connect_error(main_gw, **options, **trust)


def test_expired_certificate(make_gateway: GatewayFactory, pki: Pki) -> None:
    gateway = tls_gateway(make_gateway, pki.server_expired)
    assert session_facts(gateway, sslmode="require")[0]
    assert "SSL error: certificate verify failed" in connect_error(
        gateway, **verified(pki, mode="verify-ca")
    )

    async def asyncpg_verify() -> None:
        await asyncpg.connect(
            host="127.0.0.1",
            port=gateway.port,
            user="postgres",
            ssl=client_context(cafile=pki.server_ca),
            timeout=10,
        )

    with pytest.raises(ssl.SSLCertVerificationError) as info:
        asyncio.run(asyncpg_verify())
    assert info.value.verify_message == "certificate has expired"


# --- direct TLS --------------------------------------------------------------------------------


def test_psycopg_direct_tls(main_gw: Gateway, pki: Pki) -> None:
    relay = RecordingRelay(main_gw.port)
    try:
        options = {**verified(pki), "port": str(relay.port), "sslnegotiation": "direct"}
        assert session_facts(main_gw, **options, user="alice", dbname="tls_trust") == (
            True,
            "alice",
        )
        # The first byte on the wire is a TLS handshake record, not an SSLRequest.
        assert relay.flows[0].upstream[0] == codes.TLS_HANDSHAKE_RECORD
    finally:
        relay.close()


def test_asyncpg_direct_tls_and_pg8000(main_gw: Gateway, pki: Pki) -> None:
    async def direct(alpn: list[str] | None) -> object:
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=main_gw.port,
            user="alice",
            database="tls_trust",
            ssl=client_context(cafile=pki.server_ca, alpn=alpn),
            direct_tls=True,
            server_settings={"application_name": "asyncpg-direct"},
        )
        try:
            return await conn.fetchval("select current_user")
        finally:
            await conn.close()

    assert asyncio.run(direct(["postgresql"])) == "alice"
    main_gw.wait_for_log("database=tls_trust application_name=asyncpg-direct SSL enabled")
    # asyncpg sets ALPN only on contexts it builds itself; a caller's context without it is
    # refused after the handshake, as by PostgreSQL 17+.
    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        asyncio.run(direct(None))

    conn = pg8000.native.Connection(
        "alice",
        host="127.0.0.1",
        port=main_gw.port,
        database="tls_trust",
        ssl_context=client_context(cafile=pki.server_ca),
        application_name="pg8000-tls",
    )
    try:
        assert conn.run("select current_user") == [["alice"]]
    finally:
        conn.close()
    main_gw.wait_for_log("database=tls_trust application_name=pg8000-tls SSL enabled")


def test_direct_tls_without_alpn_is_closed_after_the_handshake(main_gw: Gateway) -> None:
    message = "received direct SSL connection request without ALPN protocol negotiation extension"
    before = main_gw.log().count(message)
    # The handshake completes: no ALPN is no handshake error.
    with raw_connect(main_gw) as sock, client_context().wrap_socket(sock) as tls:
        assert tls.selected_alpn_protocol() is None
        tls.sendall(startup(user="alice", database="tls_trust"))
        assert read_until_eof(tls) == b""  # closed, no PostgreSQL message
    main_gw.wait_for_log(message, count=before + 1)


def test_direct_tls_with_a_foreign_alpn_fails_the_handshake(main_gw: Gateway) -> None:
    with raw_connect(main_gw) as sock, pytest.raises(ssl.SSLError) as info:
        client_context(alpn=["h2"]).wrap_socket(sock)
    assert "no application protocol" in str(info.value).lower()


def test_ssl_request_inside_direct_tls_is_refused(main_gw: Gateway) -> None:
    with (
        raw_connect(main_gw) as sock,
        client_context(alpn=["postgresql"]).wrap_socket(sock) as tls,
    ):
        assert tls.selected_alpn_protocol() == "postgresql"
        tls.sendall(codec.ssl_request())
        assert recv_exactly(tls, 1) == codes.ENCRYPTION_REFUSE
        tls.sendall(codec.gssenc_request())
        assert recv_exactly(tls, 1) == codes.ENCRYPTION_REFUSE
        tls.sendall(startup(user="alice", database="tls_trust"))  # a hostssl line
        kind, body = read_message(tls)
        assert (kind, struct.unpack("!I", body)[0]) == (codes.MSG_AUTHENTICATION, codes.AUTH_OK)


# --- client certificates -----------------------------------------------------------------------


def test_cert_auth(main_gw: Gateway, pki: Pki) -> None:
    assert session_facts(main_gw, **with_cert(pki.client), user="alice", dbname="tls_cert") == (
        True,
        "alice",
    )
    main_gw.wait_for_log('connection authenticated: identity="CN=alice" method=cert')
    error = connect_error(main_gw, **with_cert(pki.client), user="bob", dbname="tls_cert")
    assert 'certificate authentication failed for user "bob"' in error
    error = connect_error(main_gw, sslmode="require", user="alice", dbname="tls_cert")
    assert "connection requires a valid client certificate" in error


def test_cert_auth_with_asyncpg_and_pg8000(main_gw: Gateway, pki: Pki) -> None:
    ctx = client_context(cafile=pki.server_ca, cert=pki.client)

    async def run() -> object:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=main_gw.port, user="alice", database="tls_cert", ssl=ctx
        )
        try:
            return await conn.fetchval("select current_user")
        finally:
            await conn.close()

    assert asyncio.run(run()) == "alice"
    conn = pg8000.native.Connection(
        "alice", host="127.0.0.1", port=main_gw.port, database="tls_cert", ssl_context=ctx
    )
    try:
        assert conn.run("select current_user") == [["alice"]]
    finally:
        conn.close()


def _assert_revoked_is_refused(gateway: Gateway, pki: Pki) -> None:
    detail = "DETAIL:  Client certificate verification failed: certificate revoked."
    before = gateway.log().count(detail)
    error = connect_error(gateway, **with_cert(pki.client_revoked), user="alice", dbname="tls_cert")
    assert "SSL error" in error and "certificate revoked" in error
    gateway.wait_for_log(detail, count=before + 1)
    # The good certificate of the same CA still passes: the CRL was loaded, not the CA broken.
    assert session_facts(gateway, **with_cert(pki.client), user="alice", dbname="tls_cert")[0]


def test_revoked_client_certificate_crl_file(main_gw: Gateway, pki: Pki) -> None:
    _assert_revoked_is_refused(main_gw, pki)


def test_revoked_client_certificate_crl_dir(
    make_gateway: GatewayFactory, pki: Pki, tls_databases: None
) -> None:
    gateway = tls_gateway(
        make_gateway,
        pki.server_cn_only,
        conf=f"ssl_ca_file = '{pki.client_ca}'\nssl_crl_dir = '{pki.client_crl_dir}'\n",
        hba="hostssl all all 127.0.0.1/32 cert\n",
    )
    _assert_revoked_is_refused(gateway, pki)


def test_client_certificate_from_an_unknown_ca(main_gw: Gateway, pki: Pki) -> None:
    error = connect_error(
        main_gw, **with_cert(pki.client_wrong_ca), user="alice", dbname="tls_cert"
    )
    assert "SSL error" in error and "unknown ca" in error


def test_clientname_dn_with_an_ident_map(main_gw: Gateway, pki: Pki) -> None:
    assert session_facts(main_gw, **with_cert(pki.client_dn), user="alice", dbname="tls_cert_dn")[0]
    main_gw.wait_for_log(f'connection authenticated: identity="{CLIENT_DN}" method=cert')
    # CN=alice maps to nothing under clientname=DN.
    error = connect_error(main_gw, **with_cert(pki.client), user="alice", dbname="tls_cert_dn")
    assert 'certificate authentication failed for user "alice"' in error


def test_trust_with_clientcert(main_gw: Gateway, pki: Pki) -> None:
    cert = with_cert(pki.client, dbname="tls_verify")
    assert session_facts(main_gw, **cert, user="alice") == (True, "alice")
    # verify-full: CN=alice is not bob.
    assert '"trust" authentication failed for user "bob"' in connect_error(
        main_gw, **cert, user="bob"
    )
    main_gw.wait_for_log(
        'certificate validation (clientcert=verify-full) failed for user "bob": CN mismatch'
    )
    assert "connection requires a valid client certificate" in connect_error(
        main_gw, sslmode="require", user="alice", dbname="tls_verify"
    )
    # verify-ca: any user with a valid certificate.
    assert session_facts(main_gw, **cert, user="postgres") == (True, "postgres")


# --- protocol versions and ciphers ---------------------------------------------------------------


def assert_negotiates(gateway: Gateway, protocol: str, cipher: str) -> None:
    """An sslmode=require session through ``gateway`` runs ``protocol`` with ``cipher``."""
    with connect(gateway, sslmode="require") as conn:
        assert ssl_attribute(conn, "protocol") == protocol
        assert ssl_attribute(conn, "cipher") == cipher


def test_minimum_tls13_and_tls13_ciphersuites(make_gateway: GatewayFactory, pki: Pki) -> None:
    gateway = tls_gateway(
        make_gateway,
        pki.server_cn_only,
        conf="ssl_min_protocol_version = 'TLSv1.3'\n"
        "ssl_tls13_ciphers = 'TLS_CHACHA20_POLY1305_SHA256'\n",
    )
    # OpenSSL's own first choice would be TLS_AES_256_GCM_SHA384.
    assert_negotiates(gateway, "TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256")
    error = connect_error(gateway, sslmode="require", ssl_max_protocol_version="TLSv1.2")
    assert "SSL error" in error and "protocol version" in error
    gateway.wait_for_log("LOG:  could not accept SSL connection: unsupported protocol")
    gateway.wait_for_log(
        "HINT:  This may indicate that the client does not support any SSL protocol version "
        "between TLSv1.3 and TLSv1.3."
    )


def test_tls12_cipher_list(make_gateway: GatewayFactory, pki: Pki) -> None:
    gateway = tls_gateway(
        make_gateway,
        pki.server_cn_only,
        conf="ssl_max_protocol_version = 'TLSv1.2'\n"
        "ssl_ciphers = 'ECDHE-ECDSA-AES128-GCM-SHA256'\n",
    )
    assert_negotiates(gateway, "TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")
    disjoint = client_context(
        maximum=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES256-GCM-SHA384"
    )
    with pytest.raises(ssl.SSLError) as info:
        pg8000.native.Connection(
            "postgres", host="127.0.0.1", port=gateway.port, ssl_context=disjoint
        )
    assert "handshake failure" in str(info.value).lower()
    gateway.wait_for_log("could not accept SSL connection: no shared cipher")


# --- reload and start-up -----------------------------------------------------------------------


def test_reload_swaps_certificates_and_keeps_the_old_one_on_errors(
    make_gateway: GatewayFactory, pki: Pki
) -> None:
    gateway = tls_gateway(make_gateway, pki.server_a)
    host_a, host_b = f"a.{DOMAIN}", f"b.{DOMAIN}"
    assert session_facts(gateway, **verified(pki, host=host_a))[0]
    with connect(gateway, sslmode="require") as old_session:
        install_server_cert(gateway.directory, pki.server_b)
        gateway.reload()
        assert session_facts(gateway, **verified(pki, host=host_b))[0]
        assert f'server certificate for "{host_b}" does not match host name "{host_a}"' in (
            connect_error(gateway, **verified(pki, host=host_a))
        )
        assert old_session.execute("select 41 + 1").fetchone() == (42,)

        # A key that does not belong to the certificate: logged, B stays.
        key_file = gateway.directory / "server.key"
        key_file.write_bytes(pki.server_a.key_path.read_bytes())
        gateway.reload()
        log = gateway.log()
        # OpenSSL 3's SSL_CTX_use_PrivateKey_file already compares the key with the
        # certificate, so PostgreSQL reports this as a load failure too.
        assert f'could not load private key file "{key_file}": key values mismatch' in log
        assert log.count("SSL configuration was not reloaded") == 1
        assert session_facts(gateway, **verified(pki, host=host_b))[0]

        # The right key, readable by others: PostgreSQL's permission rule, B stays.
        key_file.write_bytes(pki.server_b.key_path.read_bytes())
        key_file.chmod(0o644)
        gateway.reload()
        log = gateway.log()
        assert f'private key file "{key_file}" has group or world access' in log
        assert log.count("SSL configuration was not reloaded") == 2
        assert session_facts(gateway, **verified(pki, host=host_b))[0]
        assert old_session.execute("select 'still here'").fetchone() == ("still here",)


def _serve_once(directory: Path, *, detached: bool = False) -> str:
    """Run ``pggate serve`` expecting it to fail at start; returns its output.
    ``detached``: a new session and no stdin, so there is no terminal at all."""
    result = subprocess.run(
        [sys.executable, "-m", "pggate", "serve", str(directory)],
        stdin=subprocess.DEVNULL if detached else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=30,
        start_new_session=detached,
    )
    assert result.returncode != 0, result.stdout
    return result.stdout


def _not_listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", 'could not access private key file "{key}": No such file or directory'),
        ("garbage", 'could not load private key file "{key}": '),
        ("mismatched", 'could not load private key file "{key}": key values mismatch'),
        ("world-readable", 'private key file "{key}" has group or world access'),
    ],
)
def test_broken_key_at_start(
    backend: Backend, pki: Pki, tmp_path: Path, case: str, expected: str
) -> None:
    def setup(directory: Path) -> None:
        install_server_cert(directory, pki.server_cn_only)
        key = directory / "server.key"
        if case == "missing":
            key.unlink()
        elif case == "garbage":
            key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
        elif case == "mismatched":
            key.write_bytes(pki.server_b.key_path.read_bytes())
        else:
            key.chmod(0o644)

    directory = tmp_path / "gw"
    port = prepare_gateway_dir(directory, backend, hba=SSL_ONLY_HBA, conf="ssl = on\n", setup=setup)
    output = _serve_once(directory)
    assert expected.format(key=directory / "server.key") in output
    assert "ready to accept connections" not in output
    assert _not_listening(port)


# --- key passphrases ---------------------------------------------------------------------------


def _passphrase_dir(backend: Backend, pki: Pki, directory: Path, command: str | None) -> int:
    conf = "ssl = on\n"
    if command is not None:
        conf += f"ssl_passphrase_command = '{command}'\n"
    return prepare_gateway_dir(
        directory,
        backend,
        hba=SSL_ONLY_HBA,
        conf=conf,
        setup=_server_setup(pki.server_cn_only, pki.server_password_key),
    )


def test_passphrase_command(backend: Backend, pki: Pki, tmp_path: Path) -> None:
    port = _passphrase_dir(backend, pki, tmp_path / "good", f"echo {SERVER_PASSPHRASE}")
    gateway = start_gateway(tmp_path / "good", port=port)
    try:
        assert session_facts(gateway, sslmode="require")[0]
    finally:
        gateway.stop()

    directory = tmp_path / "wrong"
    port = _passphrase_dir(backend, pki, directory, "echo wrongpassword")
    output = _serve_once(directory)
    key = directory / "server.key"
    assert f'could not load private key file "{key}": bad decrypt' in output
    assert _not_listening(port)


def test_passphrase_without_a_terminal(backend: Backend, pki: Pki, tmp_path: Path) -> None:
    directory = tmp_path / "gw"
    port = _passphrase_dir(backend, pki, directory, None)
    output = _serve_once(directory, detached=True)
    key = directory / "server.key"
    assert f'private key file "{key}" requires a passphrase and no terminal is available' in output
    assert _not_listening(port)


def _read_pty(master: int, until: bytes, deadline: float, seen: bytearray) -> None:
    while until not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{until!r} not seen on the terminal: {bytes(seen)!r}")
        readable, _, _ = select.select([master], [], [], remaining)
        if readable:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"terminal closed before {until!r}: {bytes(seen)!r}")
            seen += chunk


def test_passphrase_prompted_on_the_terminal(backend: Backend, pki: Pki, tmp_path: Path) -> None:
    directory = tmp_path / "gw"
    port = _passphrase_dir(backend, pki, directory, None)
    # pty.fork makes the pseudo-terminal the child's controlling terminal (/dev/tty).
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.execv(sys.executable, [sys.executable, "-m", "pggate", "serve", str(directory)])
        finally:
            os._exit(127)
    seen = bytearray()
    try:
        deadline = time.monotonic() + 30
        _read_pty(master, b"Enter PEM pass phrase:", deadline, seen)
        os.write(master, SERVER_PASSPHRASE.encode() + b"\n")
        _read_pty(master, b"ready to accept connections", deadline, seen)
        assert SERVER_PASSPHRASE.encode() not in seen  # getpass does not echo
        gateway = Gateway(directory, port, None, directory / "pggate.log")  # type: ignore[arg-type]
        assert session_facts(gateway, sslmode="require")[0]
    finally:
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            with contextlib.suppress(OSError):
                if select.select([master], [], [], 0.05)[0]:
                    os.read(master, 4096)  # keep draining so the child never blocks on output
        os.close(master)


# --- raw sockets -------------------------------------------------------------------------------


def test_plaintext_pipelined_behind_ssl_request_goes_to_tls(main_gw: Gateway) -> None:
    before = main_gw.log().count("could not accept SSL connection")
    with raw_connect(main_gw) as sock:
        sock.sendall(codec.ssl_request() + startup(user="pipelined_user", database="tls_plain"))
        reply = read_until_eof(sock)
    assert reply[:1] == codes.SSL_ACCEPT
    # After S only TLS records (an alert) or nothing: never a PostgreSQL message.
    assert reply[1:] == b"" or reply[1] == 0x15, reply
    main_gw.wait_for_log("could not accept SSL connection", count=before + 1)
    assert "pipelined_user" not in main_gw.log()


def test_ssl_request_repeated_inside_tls(main_gw: Gateway) -> None:
    with ssl_request_accepted(main_gw) as sock, client_context().wrap_socket(sock) as tls:
        tls.sendall(codec.ssl_request())
        kind, body = read_message(tls)
        assert kind == codes.MSG_ERROR_RESPONSE
        fields = error_fields(body)
        assert (fields["S"], fields["C"]) == ("FATAL", codes.SQLSTATE_FEATURE_NOT_SUPPORTED)
        assert fields["M"] == "unsupported frontend protocol 1234.5679: server supports 3.0 to 3.2"
        assert read_until_eof(tls) == b""


def test_cancel_request_inside_tls(main_gw: Gateway, backend: Backend) -> None:
    relay = RecordingRelay(main_gw.port)
    outcome: list[BaseException | None] = []
    try:
        conn = connect(
            main_gw, port=str(relay.port), sslmode="require", user="alice", dbname="tls_trust"
        )

        def sleeper() -> None:
            try:
                conn.execute("select pg_sleep(60) /* tls-cancel */")
                outcome.append(None)
            except BaseException as exc:  # recorded for the main thread
                outcome.append(exc)

        thread = threading.Thread(target=sleeper)
        thread.start()
        with psycopg.connect(backend.conninfo) as observer:

            def sleeping() -> bool:
                query = (
                    "select count(*) from pg_stat_activity where query like %s and state = 'active'"
                )
                row = observer.execute(query, ("%tls-cancel */",)).fetchone()
                return row is not None and row[0] > 0

            wait_until(sleeping)
        conn.cancel_safe(timeout=10)  # libpq 18: negotiates TLS for the cancel connection too
        thread.join(timeout=20)
        assert not thread.is_alive()
        assert isinstance(outcome[0], psycopg.errors.QueryCanceled)
        conn.close()
        flows = list(relay.flows)
        assert len(flows) == 2
        ssl_request = codec.ssl_request()
        assert all(bytes(f.upstream[:8]) == ssl_request for f in flows)
        cancel_code = struct.pack("!I", codes.CANCEL_REQUEST_CODE)
        assert not any(cancel_code in f.upstream for f in flows)  # never in clear
    finally:
        relay.close()


# --- logging and secrecy -----------------------------------------------------------------------


def test_connection_authorized_line(main_gw: Gateway) -> None:
    with connect(
        main_gw, sslmode="require", user="alice", dbname="tls_trust", application_name="tls-logline"
    ) as conn:
        cipher = ssl_attribute(conn, "cipher")
        bits = ssl_attribute(conn, "key_bits")
    pattern = (
        r"connection authorized: user=alice database=tls_trust application_name=tls-logline "
        r"SSL enabled \(protocol=TLSv1\.3, cipher=(\S+), bits=(\d+)\)"
    )
    wait_until(lambda: re.search(pattern, main_gw.log()) is not None)
    match = re.search(pattern, main_gw.log())
    assert match is not None
    assert (match.group(1), match.group(2)) == (cipher, bits)


@pytest.mark.parametrize(
    ("sslmode", "database", "visible"),
    [("require", "tls_trust", False), ("disable", "tls_plain", True)],
)
def test_wire_secrecy(main_gw: Gateway, sslmode: str, database: str, visible: bool) -> None:
    marker = "MARKER-7d1f9c"
    relay = RecordingRelay(main_gw.port)
    try:
        with connect(
            main_gw, port=str(relay.port), sslmode=sslmode, user="alice", dbname=database
        ) as conn:
            assert conn.execute(f"select '{marker}'").fetchone() == (marker,)
            assert bool(conn.pgconn.ssl_in_use) is not visible
        wire = relay.wire()
        assert (marker.encode() in wire) is visible
        assert (b"alice" in wire) is visible  # the startup packet too
    finally:
        relay.close()
