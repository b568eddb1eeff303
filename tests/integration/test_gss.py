"""GSSAPI through pggate end to end: psql (libpq 15), psycopg (bundled libpq 18, built with
GSSAPI), and raw sockets driven by python-gssapi, against the throwaway MIT realm of kdc.py.

The cases follow PostgreSQL's src/test/kerberos/t/001_auth.pl (shared/protocol.md §9.6):
gssencmode × hostgssenc/hostnogssenc/host × gss/trust, include_realm, krb_realm, ident maps,
missing tickets, a wrong service key, GSSENC→SSL fallback, the ``connection authorized`` line,
bulk data across many wrapped packets, pipelined plaintext (§1.4), wire secrecy and credential
delegation.

One module-scoped gateway carries every case that only differs by pg_hba.conf line (one database
per line, as test_tls.py does); settings that differ (delegation, keytab, TLS) get their own.

The gateways inherit KRB5_CONFIG & co. from the ``kdc`` fixture, which exports them for the
session; clients get ``Realm.env(ccache)`` (subprocesses) or KRB5CCNAME set around the call
(psycopg in this process: MIT krb5 reads it whenever libpq asks for credentials).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import random
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import gssapi
import psycopg
import pytest
from conftest import Backend, Gateway, GatewayFactory, running_gateway
from kdc import Realm
from test_gss_sansio import client_context, frame
from tls_support import RecordingRelay, install_server_cert, make_pki, recv_exactly, startup

from pggate.proto import codec, codes

pytestmark = pytest.mark.integration

DATABASES = (
    "gss_enc",
    "gss_noenc",
    "gss_any",
    "trust_enc",
    "trust_noenc",
    "trust_any",
    "scram_enc",
    "realm0",
    "realm1",
    "krb_ok",
    "krb_bad",
    "emptymap",
)
GSS_HBA = """\
host         postgres    all 127.0.0.1/32 gss map=mymap
hostgssenc   gss_enc     all 127.0.0.1/32 gss map=mymap
hostnogssenc gss_noenc   all 127.0.0.1/32 gss map=mymap
host         gss_any     all 127.0.0.1/32 gss map=mymap
hostgssenc   trust_enc   all 127.0.0.1/32 trust
hostnogssenc trust_noenc all 127.0.0.1/32 trust
host         trust_any   all 127.0.0.1/32 trust
hostgssenc   scram_enc   all 127.0.0.1/32 scram-sha-256
host         realm0      all 127.0.0.1/32 gss include_realm=0
host         realm1      all 127.0.0.1/32 gss include_realm=1
host         krb_ok      all 127.0.0.1/32 gss include_realm=0 krb_realm=EXAMPLE.COM
host         krb_bad     all 127.0.0.1/32 gss include_realm=0 krb_realm=EXAMPLE.ORG
host         emptymap    all 127.0.0.1/32 gss map=emptymap
"""
GSS_IDENT = "mymap /^(.*)@EXAMPLE.COM$ \\1\n"
SCRAM_USER, SCRAM_PASSWORD = "gss_scram", "pass"
PRINCIPAL = "test1@EXAMPLE.COM"
MITM = (
    "This could be either a client-software bug or evidence of an attempted "
    "man-in-the-middle attack."
)

_app_ids = itertools.count()
Messages = list[tuple[str, bytes]]  # (type, body) of backend messages


def tail(*, auth: bool, enc: bool, delegated: bool = False) -> str:
    """The GSS part of PostgreSQL 16+'s ``connection authorized`` line (postinit.c)."""
    yes = {True: "yes", False: "no"}
    text = (
        f" GSS (authenticated={yes[auth]}, encrypted={yes[enc]}, "
        f"delegated_credentials={yes[delegated]}"
    )
    return text + (f", principal={PRINCIPAL})" if auth else ")")


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gss_objects(backend: Backend) -> None:
    """Roles (the realm's users, a realm-qualified one, a SCRAM one), one database per hba
    line, and the COPY target tables owned by test1."""
    with psycopg.connect(backend.conninfo, autocommit=True) as conn:
        roles = {row[0] for row in conn.execute("select rolname from pg_roles")}
        for role in ("test1", "test2", PRINCIPAL):
            if role not in roles:
                conn.execute(f'CREATE ROLE "{role}" LOGIN'.encode())
        if SCRAM_USER not in roles:
            conn.execute(
                f"SET password_encryption = 'scram-sha-256'; "
                f"CREATE ROLE {SCRAM_USER} LOGIN PASSWORD '{SCRAM_PASSWORD}'".encode()
            )
        existing = {row[0] for row in conn.execute("select datname from pg_database")}
        for name in DATABASES:
            if name not in existing:
                conn.execute(f"CREATE DATABASE {name}".encode())
        for table in ("gss_copy_psql", "gss_copy_psycopg"):
            conn.execute(
                f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (n int, line text); "
                f"ALTER TABLE {table} OWNER TO test1".encode()
            )


@pytest.fixture(scope="module")
def gss_gw(
    backend: Backend, kdc: Realm, gss_objects: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with running_gateway(
        tmp_path_factory.mktemp("gss") / "gw",
        backend,
        hba=GSS_HBA,
        ident=GSS_IDENT,
        conf=f"krb_server_keyfile = '{kdc.keytab}'\n",
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def ticket(kdc: Realm) -> Path:
    """test1's TGT, not forwardable (the realm's default, as in 001_auth.pl)."""
    return kdc.kinit("test1", "secret1")


@pytest.fixture(scope="module")
def forwardable_ticket(kdc: Realm) -> Path:
    return kdc.kinit("test1", "secret1", forwardable=True)


@pytest.fixture(scope="module")
def no_ticket(kdc: Realm) -> Path:
    """A ccache path nobody ever fills."""
    return kdc.base / "ccaches" / "never-filled"


# --- clients -----------------------------------------------------------------------------------


def options(gateway: Gateway, **extra: str) -> dict[str, str]:
    """libpq options as 001_auth.pl uses them: a host name for the service principal
    (``postgres/localhost``), the address given separately, so no resolver is involved."""
    values = {
        "host": "localhost",
        "hostaddr": "127.0.0.1",
        "port": str(gateway.port),
        "user": "test1",
        "dbname": "postgres",
        "sslmode": "disable",
        "connect_timeout": "10",
        "application_name": f"gss-{next(_app_ids)}",
    }
    values.update(extra)
    return values


def conninfo(values: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())


def run_psql(
    realm: Realm,
    ccache: Path,
    values: dict[str, str],
    *commands: str,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    args = ["psql", conninfo(values), "-XAt"]
    for command in commands:
        args += ["-c", command]
    return subprocess.run(
        args,
        input=stdin,
        capture_output=True,
        env={**os.environ, **realm.env(ccache)},
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def credentials_cache(ccache: Path) -> Iterator[None]:
    """KRB5CCNAME for in-process libpq (psycopg), restored afterwards."""
    saved = os.environ.get("KRB5CCNAME")
    os.environ["KRB5CCNAME"] = f"FILE:{ccache}"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("KRB5CCNAME", None)
        else:
            os.environ["KRB5CCNAME"] = saved


def query(client: str, realm: Realm, ccache: Path, values: dict[str, str], sql: str) -> str:
    """The first column of the first row, or raise AssertionError with the client's error."""
    if client == "psql":
        result = run_psql(realm, ccache, values, sql)
        if result.returncode != 0:
            raise ConnectFailed(result.stderr.decode(errors="replace"))
        return result.stdout.decode().strip()
    with credentials_cache(ccache):
        try:
            conn = psycopg.connect(conninfo(values), autocommit=True)
        except psycopg.OperationalError as exc:
            raise ConnectFailed(str(exc)) from None
        with conn:
            row = conn.execute(sql.encode()).fetchone()
            assert row is not None
            return str(row[0])


class ConnectFailed(Exception):
    """The client could not log in; the message is its error text."""


def login_fails(client: str, realm: Realm, ccache: Path, values: dict[str, str]) -> str:
    with pytest.raises(ConnectFailed) as info:
        query(client, realm, ccache, values, "select 1")
    return str(info.value)


def authorized(gateway: Gateway, values: dict[str, str]) -> tuple[str, str, str]:
    """(user, database, tail) of the ``connection authorized`` line of this connection."""
    app = values["application_name"]
    gateway.wait_for_log(f"application_name={app}")
    pattern = (
        rf"connection authorized: user=(\S+) database=(\S+) application_name={re.escape(app)}"
        r"((?: .*)?)$"
    )
    found = re.findall(pattern, gateway.log(), re.MULTILINE)
    assert len(found) == 1, gateway.log()
    user, database, rest = found[0]
    return user, database, rest


def no_hba_entry(database: str, encryption: str, user: str = "test1") -> str:
    return (
        f'no pg_hba.conf entry for host "127.0.0.1", user "{user}", database "{database}", '
        f"{encryption}"
    )


# --- raw GSS client (python-gssapi on a socket) ------------------------------------------------


def recv_frame(sock: socket.socket) -> bytes:
    header = recv_exactly(sock, 4)
    assert len(header) == 4, f"connection closed, got {header!r}"
    body = recv_exactly(sock, int.from_bytes(header, "big"))
    assert len(body) == int.from_bytes(header, "big")
    return body


def gss_handshake(sock: socket.socket, realm: Realm, ccache: Path) -> gssapi.SecurityContext:
    """pqsecure_open_gss after ``G``: tokens framed by a length word until the client's
    context is complete."""
    ctx = client_context(realm, ccache)
    token = ctx.step()
    while True:
        if token:
            sock.sendall(frame(token))
        if ctx.complete:
            return ctx
        token = ctx.step(recv_frame(sock))


def gss_connect(port: int, realm: Realm, ccache: Path, pipelined: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(codec.gssenc_request() + pipelined)
    assert recv_exactly(sock, 1) == codes.GSS_ACCEPT
    return sock


def read_encrypted_messages(sock: socket.socket, ctx: gssapi.SecurityContext) -> Messages:
    """Unwrap packets until an ErrorResponse or ReadyForQuery has arrived in full."""
    plain = b""
    messages: list[tuple[str, bytes]] = []
    while not messages or messages[-1][0] not in ("E", "Z"):
        unwrapped = ctx.unwrap(recv_frame(sock))
        assert unwrapped.encrypted
        plain += unwrapped.message
        while len(plain) >= 5 and len(plain) >= 1 + int.from_bytes(plain[1:5], "big"):
            end = 1 + int.from_bytes(plain[1:5], "big")
            messages.append((plain[:1].decode(), plain[5:end]))
            plain = plain[end:]
    return messages


def raw_gss_login(port: int, realm: Realm, ccache: Path, user: str, database: str) -> Messages:
    with gss_connect(port, realm, ccache) as sock:
        ctx = gss_handshake(sock, realm, ccache)
        sock.sendall(frame(ctx.wrap(startup(user=user, database=database), True).message))
        return read_encrypted_messages(sock, ctx)


def fatal(messages: Messages) -> dict[str, str]:
    kind, body = messages[-1]
    assert kind == "E", messages
    return codec.parse_error_fields(body)


# --- the gssencmode × hba line × method matrix (001_auth.pl) -----------------------------------

CLIENTS = ("psql", "psycopg")
ENC, PLAIN = "encrypted", "plain"


def _line_expectations() -> list[tuple[str, str, str]]:
    cases = []
    for method in ("gss", "trust"):
        for mode in ("require", "prefer", "disable"):
            cases.append((f"{method}_enc", mode, ENC if mode != "disable" else "no encryption"))
            cases.append(
                (f"{method}_noenc", mode, PLAIN if mode != "require" else "GSS encryption")
            )
            cases.append((f"{method}_any", mode, ENC if mode != "disable" else PLAIN))
    return cases


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(("database", "gssencmode", "expect"), _line_expectations())
def test_gssencmode_against_hba_lines(
    gss_gw: Gateway,
    kdc: Realm,
    ticket: Path,
    client: str,
    database: str,
    gssencmode: str,
    expect: str,
) -> None:
    values = options(gss_gw, dbname=database, gssencmode=gssencmode)
    if expect not in (ENC, PLAIN):
        # hostgssenc refuses the plain connection; hostnogssenc refuses the encrypted one
        # (and libpq's gssencmode=prefer would have retried in plain, so only require fails).
        assert no_hba_entry(database, expect) in login_fails(client, kdc, ticket, values)
        gss_gw.wait_for_log(no_hba_entry(database, expect))
        return
    assert query(client, kdc, ticket, values, "select current_user") == "test1"
    user, db, rest = authorized(gss_gw, values)
    assert (user, db) == ("test1", database)
    method_gss = database.startswith("gss_")
    if expect == ENC or method_gss:
        assert rest == tail(auth=method_gss, enc=expect == ENC)
    else:  # trust without encryption: nothing GSS to report
        assert rest == ""


def test_connection_authorized_line(gss_gw: Gateway, kdc: Realm, ticket: Path) -> None:
    """001_auth.pl's exact line (PG16+ wording, with delegated_credentials)."""
    values = options(gss_gw, gssencmode="require", application_name="001_auth.pl")
    assert query("psql", kdc, ticket, values, "select current_user") == "test1"
    gss_gw.wait_for_log("application_name=001_auth.pl")
    assert (
        "connection authorized: user=test1 database=postgres application_name=001_auth.pl "
        "GSS (authenticated=yes, encrypted=yes, delegated_credentials=no, "
        "principal=test1@EXAMPLE.COM)"
    ) in gss_gw.log()
    assert f'connection authenticated: identity="{PRINCIPAL}" method=gss' in gss_gw.log()


def test_scram_over_gss_encryption(gss_gw: Gateway, kdc: Realm, ticket: Path) -> None:
    """hostgssenc with a password method: SCRAM runs inside the GSS-encrypted stream."""
    values = options(
        gss_gw,
        dbname="scram_enc",
        user=SCRAM_USER,
        password=SCRAM_PASSWORD,
        gssencmode="require",
    )
    assert query("psycopg", kdc, ticket, values, "select current_user") == SCRAM_USER
    assert authorized(gss_gw, values) == (SCRAM_USER, "scram_enc", tail(auth=False, enc=True))
    wrong = options(
        gss_gw, dbname="scram_enc", user=SCRAM_USER, password="wrong", gssencmode="require"
    )
    assert f'password authentication failed for user "{SCRAM_USER}"' in login_fails(
        "psycopg", kdc, ticket, wrong
    )


# --- principal checks: include_realm, krb_realm, maps ------------------------------------------


@pytest.mark.parametrize("gssencmode", ["require", "disable"])
def test_include_realm(gss_gw: Gateway, kdc: Realm, ticket: Path, gssencmode: str) -> None:
    # include_realm=0: test1@EXAMPLE.COM → test1.
    realm0 = options(gss_gw, dbname="realm0", gssencmode=gssencmode)
    assert query("psql", kdc, ticket, realm0, "select current_user") == "test1"
    # include_realm=1 (the default) and no map: only the role named like the principal.
    realm1 = options(gss_gw, dbname="realm1", user=PRINCIPAL, gssencmode=gssencmode)
    assert query("psql", kdc, ticket, realm1, "select current_user") == PRINCIPAL
    mismatch = f"provided user name (test1) and authenticated user name ({PRINCIPAL}) do not match"
    before = gss_gw.log().count(mismatch)
    refused = options(gss_gw, dbname="realm1", gssencmode=gssencmode)
    error = login_fails("psql", kdc, ticket, refused)
    assert 'GSSAPI authentication failed for user "test1"' in error
    gss_gw.wait_for_log(mismatch, count=before + 1)


def test_krb_realm_match_and_mismatch(gss_gw: Gateway, kdc: Realm, ticket: Path) -> None:
    values = options(gss_gw, dbname="krb_ok", gssencmode="require")
    assert query("psql", kdc, ticket, values, "select current_user") == "test1"
    before = gss_gw.log().count(f'connection authenticated: identity="{PRINCIPAL}" method=gss')
    # Over GSS encryption, read with a raw client for the SQLSTATE (libpq does not show it).
    error = fatal(raw_gss_login(gss_gw.port, kdc, ticket, "test1", "krb_bad"))
    assert (error["S"], error["C"], error["M"]) == (
        "FATAL",
        "28000",
        'GSSAPI authentication failed for user "test1"',
    )
    # The identity is set (and logged) before the realm check fails, as in PostgreSQL.
    gss_gw.wait_for_log(
        f'connection authenticated: identity="{PRINCIPAL}" method=gss', count=before + 1
    )
    plain = options(gss_gw, dbname="krb_bad", gssencmode="disable")
    assert 'GSSAPI authentication failed for user "test1"' in login_fails(
        "psql", kdc, ticket, plain
    )


@pytest.mark.parametrize("gssencmode", ["require", "disable"])
def test_empty_map_fails_after_logging_the_identity(
    gss_gw: Gateway, kdc: Realm, ticket: Path, gssencmode: str
) -> None:
    values = options(gss_gw, dbname="emptymap", gssencmode=gssencmode)
    before = gss_gw.log().count('no match in usermap "emptymap" for user "test1"')
    assert 'GSSAPI authentication failed for user "test1"' in login_fails(
        "psql", kdc, ticket, values
    )
    gss_gw.wait_for_log('no match in usermap "emptymap" for user "test1"', count=before + 1)
    lines = gss_gw.log().splitlines()
    at = [i for i, line in enumerate(lines) if 'usermap "emptymap"' in line][-1]
    assert f'connection authenticated: identity="{PRINCIPAL}" method=gss' in "\n".join(
        lines[max(0, at - 5) : at]
    )


def test_map_failure_sqlstate_over_encryption(gss_gw: Gateway, kdc: Realm, ticket: Path) -> None:
    error = fatal(raw_gss_login(gss_gw.port, kdc, ticket, "test2", "postgres"))
    assert (error["C"], error["M"]) == ("28000", 'GSSAPI authentication failed for user "test2"')
    # The mapped name was test1, the requested role test2.
    gss_gw.wait_for_log('no match in usermap "mymap" for user "test2"')


# --- missing tickets and wrong keys ------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_without_a_ticket(gss_gw: Gateway, kdc: Realm, no_ticket: Path, client: str) -> None:
    # require: libpq gives up before connecting (it has no credentials to offer).
    values = options(gss_gw, dbname="trust_any", gssencmode="require")
    assert "GSSAPI encryption required" in login_fails(client, kdc, no_ticket, values)
    # prefer: falls back to a plain connection, fine for trust...
    values = options(gss_gw, dbname="trust_any", gssencmode="prefer")
    assert query(client, kdc, no_ticket, values, "select current_user") == "test1"
    assert authorized(gss_gw, values)[2] == ""
    # ...but not for gss (the map row of 001_auth.pl: "no ticket → fail").
    values = options(gss_gw, dbname="gss_any", gssencmode="prefer")
    assert "GSSAPI" in login_fails(client, kdc, no_ticket, values)


def test_keytab_without_the_service_principal(
    make_gateway: GatewayFactory, kdc: Realm, ticket: Path, tmp_path: Path, gss_objects: None
) -> None:
    keytab = tmp_path / "other.keytab"
    with contextlib.suppress(RuntimeError):  # already made by an earlier run of this session
        kdc.kadmin("addprinc -randkey postgres/otherhost")
    kdc.kadmin(f"ktadd -k {keytab} postgres/otherhost")
    gw = make_gateway(
        hba="host all all 127.0.0.1/32 gss include_realm=0\n",
        conf=f"krb_server_keyfile = '{keytab}'\n",
    )
    # Encrypted: the accept call fails, pggate closes without a word (be-secure-gssapi.c);
    # libpq 15 then reports the failure with an empty reason, as against PostgreSQL.
    error = login_fails("psql", kdc, ticket, options(gw, gssencmode="require"))
    assert f"port {gw.port} failed" in error
    gw.wait_for_log("could not accept GSSAPI security context")
    # Unencrypted: the AuthenticationGSS exchange fails. As pg_GSS_recvauth does, pggate
    # first sends the acceptor's error token (a KRB-ERROR) as AuthenticationGSSContinue, so
    # libpq fails on that token before it reads the FATAL that follows.
    error = login_fails("psql", kdc, ticket, options(gw, gssencmode="disable"))
    assert "GSSAPI continuation error" in error
    assert "The ticket isn't for us" in error
    gw.wait_for_log('FATAL:  GSSAPI authentication failed for user "test1"')
    gw.wait_for_log("accepting GSS security context failed")


# --- GSS not configured: N, then TLS -----------------------------------------------------------


def test_gssenc_refused_then_ssl(
    make_gateway: GatewayFactory, kdc: Realm, ticket: Path, tmp_path: Path, gss_objects: None
) -> None:
    pki = make_pki(tmp_path / "pki")
    gw = make_gateway(
        hba="host all all 127.0.0.1/32 trust\n",
        conf="ssl = on\n",
        setup=lambda directory: install_server_cert(directory, pki.server_cn_only),
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(codec.gssenc_request())
        assert recv_exactly(sock, 1) == codes.ENCRYPTION_REFUSE
    relay = RecordingRelay(gw.port)
    try:
        values = options(gw, port=str(relay.port), gssencmode="prefer", sslmode="require")
        assert query("psql", kdc, ticket, values, "select current_user") == "test1"
        flow = relay.flows[0]
        # libpq (it holds a ticket) asked for GSS first, got N, then asked for TLS and got S.
        request = bytes(flow.upstream)
        assert request.startswith(codec.gssenc_request() + codec.ssl_request())
        assert bytes(flow.downstream).startswith(codes.ENCRYPTION_REFUSE + codes.SSL_ACCEPT)
    finally:
        relay.close()
    assert authorized(gw, values)[2].startswith(" SSL enabled (protocol=TLSv1.3")
    values = options(gw, gssencmode="require")
    assert "GSSAPI encryption" in login_fails("psql", kdc, ticket, values)


# --- data through the wrapped stream -----------------------------------------------------------


def test_large_result_set(gss_gw: Gateway, kdc: Realm, ticket: Path) -> None:
    values = options(gss_gw, gssencmode="require")
    result = run_psql(
        kdc, ticket, values, "select repeat('x', 1000) from generate_series(1, 100000)"
    )
    assert result.returncode == 0, result.stderr
    expected = (b"x" * 1000 + b"\n") * 100000
    assert len(result.stdout) == len(expected)
    assert hashlib.md5(result.stdout).hexdigest() == hashlib.md5(expected).hexdigest()
    assert authorized(gss_gw, values)[2] == tail(auth=True, enc=True)


def _copy_lines(seed: int, total: int) -> list[str]:
    """Lines of random length (1..400 hex digits) so packet and message boundaries land
    everywhere; ``total`` bytes in all, roughly."""
    rng = random.Random(seed)
    lines, size = [], 0
    while size < total:
        line = rng.randbytes(rng.randint(1, 200)).hex()
        lines.append(line)
        size += len(line) + 8
    return lines


def _table_digest(kdc: Realm, ticket: Path, values: dict[str, str], table: str) -> str:
    return query(
        "psql",
        kdc,
        ticket,
        values,
        f"select count(*) || ' ' || md5(string_agg(line, E'\\n' order by n)) from {table}",
    )


def test_copy_from_stdin_psql(gss_gw: Gateway, kdc: Realm, ticket: Path) -> None:
    lines = _copy_lines(1, 4 * 1024 * 1024)
    data = "".join(f"{n}\t{line}\n" for n, line in enumerate(lines)).encode()
    values = options(gss_gw, gssencmode="require")
    result = run_psql(
        kdc, ticket, values, "truncate gss_copy_psql", "copy gss_copy_psql from stdin", stdin=data
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == [f"COPY {len(lines)}"] or b"COPY" in result.stdout
    expected = hashlib.md5("\n".join(lines).encode()).hexdigest()
    digest_values = options(gss_gw, gssencmode="require")
    assert _table_digest(kdc, ticket, digest_values, "gss_copy_psql") == f"{len(lines)} {expected}"
    assert authorized(gss_gw, values)[2] == tail(auth=True, enc=True)


def test_copy_from_stdin_psycopg(gss_gw: Gateway, kdc: Realm, ticket: Path) -> None:
    lines = _copy_lines(2, 3 * 1024 * 1024)
    values = options(gss_gw, gssencmode="require")
    with credentials_cache(ticket), psycopg.connect(conninfo(values), autocommit=True) as conn:
        conn.execute("truncate gss_copy_psycopg")
        with conn.cursor() as cur, cur.copy("copy gss_copy_psycopg from stdin") as copy:
            # Uneven writes: 1 byte, then growing pieces, across the wrapped packets.
            data = "".join(f"{n}\t{line}\n" for n, line in enumerate(lines)).encode()
            pos, step = 0, 1
            while pos < len(data):
                copy.write(data[pos : pos + step])
                pos += step
                step = step * 3 + 7
    expected = hashlib.md5("\n".join(lines).encode()).hexdigest()
    digest_values = options(gss_gw, gssencmode="require")
    assert (
        _table_digest(kdc, ticket, digest_values, "gss_copy_psycopg") == f"{len(lines)} {expected}"
    )


# --- pipelined plaintext after GSSENCRequest (CVE-2021-23214 class, protocol.md §1.4) ---------


def test_pipelined_plaintext_after_gssenc_request(
    gss_gw: Gateway, kdc: Realm, ticket: Path
) -> None:
    """PostgreSQL sends G, runs the handshake (it reads the socket, not the bytes it has
    buffered), then finds the buffered bytes and sends FATAL 08P01 over the now encrypted
    connection. pggate does the same: the injected StartupMessage is never obeyed."""
    injected = startup(user="test1", database="trust_any")
    with gss_connect(gss_gw.port, kdc, ticket, pipelined=injected) as sock:
        ctx = gss_handshake(sock, kdc, ticket)
        error = fatal(read_encrypted_messages(sock, ctx))
        assert (error["S"], error["C"], error["M"], error["D"]) == (
            "FATAL",
            "08P01",
            "received unencrypted data after GSSAPI encryption request",
            MITM,
        )
        sock.settimeout(10)
        assert sock.recv(1) == b""  # and the connection is closed
    gss_gw.wait_for_log("received unencrypted data after GSSAPI encryption request")


# --- what an eavesdropper sees ----------------------------------------------------------------


def test_wire_secrecy(gss_gw: Gateway, kdc: Realm, ticket: Path) -> None:
    marker = "MARKER-gss-5a1"
    relay = RecordingRelay(gss_gw.port)
    try:
        values = options(gss_gw, port=str(relay.port), gssencmode="require")
        assert query("psql", kdc, ticket, values, f"select '{marker}'") == marker
        assert len(relay.flows) == 1
        flow = relay.flows[0]
        assert bytes(flow.upstream).startswith(codec.gssenc_request())
        assert bytes(flow.downstream).startswith(codes.GSS_ACCEPT)
        assert marker.encode() not in relay.wire()
        assert b"application_name" not in relay.wire()  # the startup packet is encrypted too
        # Control: the same query without encryption is readable by the relay.
        plain = options(gss_gw, port=str(relay.port), dbname="trust_any", gssencmode="disable")
        assert query("psql", kdc, ticket, plain, f"select '{marker}'") == marker
        assert marker.encode() in relay.wire()
    finally:
        relay.close()


# --- credential delegation ---------------------------------------------------------------------


@pytest.fixture
def delegating_gw(make_gateway: GatewayFactory, kdc: Realm, gss_objects: None) -> Gateway:
    return make_gateway(
        hba=GSS_HBA,
        ident=GSS_IDENT,
        conf=f"krb_server_keyfile = '{kdc.keytab}'\ngss_accept_delegation = on\n",
    )


def test_delegation_refused_by_default(
    gss_gw: Gateway, kdc: Realm, forwardable_ticket: Path
) -> None:
    values = options(gss_gw, dbname="gss_enc", gssencmode="require", gssdelegation="1")
    assert query("psycopg", kdc, forwardable_ticket, values, "select 1") == "1"
    assert authorized(gss_gw, values)[2] == tail(auth=True, enc=True, delegated=False)


@pytest.mark.parametrize(
    ("database", "gssencmode", "gssdelegation", "forwardable", "enc", "delegated"),
    [
        ("gss_enc", "require", "1", True, True, True),
        ("gss_enc", "prefer", "1", True, True, True),
        ("gss_enc", "require", "0", True, True, False),
        ("gss_enc", "require", "1", False, True, False),  # nothing to forward
        ("gss_noenc", "prefer", "1", True, False, True),  # retried plain: GSS auth exchange
        ("gss_any", "disable", "1", True, False, True),
        ("realm0", "require", "1", True, True, True),
    ],
)
def test_delegation_accepted(
    delegating_gw: Gateway,
    kdc: Realm,
    ticket: Path,
    forwardable_ticket: Path,
    database: str,
    gssencmode: str,
    gssdelegation: str,
    forwardable: bool,
    enc: bool,
    delegated: bool,
) -> None:
    values = options(
        delegating_gw, dbname=database, gssencmode=gssencmode, gssdelegation=gssdelegation
    )
    ccache = forwardable_ticket if forwardable else ticket
    assert query("psycopg", kdc, ccache, values, "select current_user") == "test1"
    assert authorized(delegating_gw, values)[2] == tail(auth=True, enc=enc, delegated=delegated)


def test_psql_delegation(delegating_gw: Gateway, kdc: Realm, forwardable_ticket: Path) -> None:
    values = options(delegating_gw, gssencmode="require", gssdelegation="1")
    result = run_psql(kdc, forwardable_ticket, values, "select 1")
    if b'invalid connection option "gssdelegation"' in result.stderr:
        pytest.skip("psql's libpq predates gssdelegation (added in libpq 16)")
    assert result.returncode == 0, result.stderr
    assert authorized(delegating_gw, values)[2] == tail(auth=True, enc=True, delegated=True)


def test_check_reports_a_keytab_without_usable_keys(kdc: Realm, tmp_path: Path) -> None:
    """``pggate check`` says when krb_server_keyfile cannot accept GSSAPI contexts."""
    from pggate.initdir import keytab_problem

    assert keytab_problem(kdc.keytab) is None
    empty = tmp_path / "empty.keytab"
    empty.write_bytes(b"\x05\x02")  # a keytab header and no keys
    problem = keytab_problem(empty)
    assert problem is not None and "holds no usable key" in problem
    assert keytab_problem(tmp_path / "missing.keytab") == (
        f'krb_server_keyfile "{tmp_path / "missing.keytab"}" does not exist'
    )
