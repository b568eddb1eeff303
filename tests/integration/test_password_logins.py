"""Password authentication through pggate with real clients: psycopg (libpq 18), psql
(libpq 15), asyncpg, pg8000, JDBC, and raw sockets (shared/protocol.md §5, §10.3).

One module-scoped gateway, TLS enabled, one database per pg_hba.conf method; the roles live in
the shared backend under ``pw_`` names so no other module sees them. Whether libpq really ran
``SCRAM-SHA-256-PLUS`` is read off the wire by a TLS-terminating relay that presents the
gateway's own certificate (so the binding still holds) and records the plaintext."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pg8000.native
import psutil
import psycopg
import pytest
import scramp
from conftest import Backend, Gateway, running_gateway
from cryptography.hazmat.primitives.serialization import Encoding
from tls_support import (
    client_context,
    error_fields,
    read_message,
    read_until_eof,
    recv_exactly,
    startup,
)

from pggate.proto import codec, codes
from pggate.tls import certs

pytestmark = pytest.mark.integration

# One password per role, and wrong ones: all distinctive enough to grep the log for.
PASSWORDS = {
    "pw_scram": "Scram-pw-7f3a9c",
    "pw_md5": "Md5-pw-41bd2e",
    "pw_expired": "Expired-pw-c08e51",
    "pw_nologin": "Nologin-pw-92ad07",
}
WRONG = "Wrong-pw-5be13f"
UNKNOWN = "pw_ghost"
FAILED = 'password authentication failed for user "{}"'

HBA = """\
host    pwdb_password   all 127.0.0.1/32 password
host    pwdb_md5        all 127.0.0.1/32 md5
host    pwdb_scram      all 127.0.0.1/32 scram-sha-256
hostssl pwdb_clientcert all 127.0.0.1/32 scram-sha-256 clientcert=verify-full
"""
DATABASES = ("pwdb_password", "pwdb_md5", "pwdb_scram", "pwdb_clientcert")
METHOD_DB = {"password": "pwdb_password", "md5": "pwdb_md5", "scram-sha-256": "pwdb_scram"}


# --- fixtures ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Files:
    server_ca: Path
    client_ca: Path
    server_crt: Path
    server_key: Path
    impostor_crt: Path  # same CA, same name, another key: a man in the middle's certificate
    impostor_key: Path
    client_crt: Path  # CN=pw_scram, issued by client_ca
    client_key: Path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    directory = tmp_path_factory.mktemp("pw-pki")
    server_ca = certs.make_ca("pggate password tests server CA")
    client_ca = certs.make_ca("pggate password tests client CA")
    certs.write_cert(directory / "server_ca.crt", server_ca[0])
    certs.write_cert(directory / "client_ca.crt", client_ca[0])
    written = {}
    for stem, (cert, key) in {
        "server": certs.make_server_cert(*server_ca, ["localhost"], ["127.0.0.1"]),
        "impostor": certs.make_server_cert(*server_ca, ["localhost"], ["127.0.0.1"]),
        "client": certs.make_client_cert(*client_ca, "pw_scram"),
    }.items():
        certs.write_cert(directory / f"{stem}.crt", cert)
        certs.write_key(directory / f"{stem}.key", key)
        written[stem] = (directory / f"{stem}.crt", directory / f"{stem}.key")
    return Files(
        directory / "server_ca.crt",
        directory / "client_ca.crt",
        *written["server"],
        *written["impostor"],
        *written["client"],
    )


@pytest.fixture(scope="module")
def roles(backend: Backend) -> None:
    """The pw_ roles, each verifier made by the backend itself under the named encryption."""
    names = (*PASSWORDS, "pw_none")
    backend.execute(*(f"DROP ROLE IF EXISTS {name}" for name in names))
    backend.execute(
        "SET password_encryption = 'scram-sha-256'",
        f"CREATE ROLE pw_scram LOGIN PASSWORD '{PASSWORDS['pw_scram']}'",
        f"CREATE ROLE pw_expired LOGIN PASSWORD '{PASSWORDS['pw_expired']}'"
        " VALID UNTIL '2000-01-01'",
        f"CREATE ROLE pw_nologin LOGIN PASSWORD '{PASSWORDS['pw_nologin']}'",
        "ALTER ROLE pw_nologin NOLOGIN",
        "CREATE ROLE pw_none LOGIN",
        "SET password_encryption = 'md5'",
        f"CREATE ROLE pw_md5 LOGIN PASSWORD '{PASSWORDS['pw_md5']}'",
    )
    with psycopg.connect(backend.conninfo, autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("select datname from pg_database")}
        for name in DATABASES:
            if name not in existing:
                conn.execute(f"CREATE DATABASE {name}".encode())
        # The kind of secret: its prefix, or NULL for none.
        stored: dict[str, str | None] = dict(
            conn.execute(
                "select rolname, substring(rolpassword from '^(SCRAM-SHA-256\\$|md5)')"
                " from pg_authid where rolname like 'pw\\_%'"
            ).fetchall()
        )
    # The premise of the md5/scram cases: the backend stored what we asked for.
    assert stored["pw_scram"] == "SCRAM-SHA-256$"
    assert stored["pw_md5"] == "md5"
    assert stored["pw_none"] is None


@pytest.fixture(scope="module")
def gw(
    backend: Backend, roles: None, files: Files, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    def setup(directory: Path) -> None:
        shutil.copy(files.server_crt, directory / "server.crt")
        shutil.copy(files.server_key, directory / "server.key")
        (directory / "server.key").chmod(0o600)

    with running_gateway(
        tmp_path_factory.mktemp("pw-gw") / "gw",
        backend,
        hba=HBA,
        conf=f"ssl = on\nssl_ca_file = '{files.client_ca}'\n",
        setup=setup,
    ) as gateway:
        yield gateway


# --- client helpers ----------------------------------------------------------------------------


def libpq(gw: Gateway, db: str, user: str, password: str, **options: str) -> str:
    """current_user of a psycopg (libpq 18) session; raises OperationalError on refusal."""
    dsn = gw.dsn(dbname=db, user=user, password=password, gssencmode="disable", **options)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("select current_user").fetchone()
    assert row is not None
    return str(row[0])


def libpq_error(gw: Gateway, db: str, user: str, password: str, **options: str) -> str:
    with pytest.raises(psycopg.OperationalError) as info:
        libpq(gw, db, user, password, **options)
    return str(info.value)


def asyncpg_login(
    gw: Gateway, db: str, user: str, password: str, ssl_context: ssl.SSLContext | None = None
) -> tuple[str, str]:
    """('ok', current_user) or (SQLSTATE, message) of an asyncpg login."""

    async def attempt() -> tuple[str, str]:
        try:
            conn = await asyncpg.connect(
                host="127.0.0.1",
                port=gw.port,
                user=user,
                password=password,
                database=db,
                ssl=ssl_context or False,
                timeout=30,
            )
        except asyncpg.PostgresError as exc:
            await closed_by_asyncpg(gw.port)
            return str(exc.sqlstate), str(exc)
        try:
            return "ok", str(await conn.fetchval("select current_user"))
        finally:
            await conn.close()

    return asyncio.run(attempt())


async def closed_by_asyncpg(port: int, timeout: float = 10) -> None:
    """Return once this process holds no socket connected to ``port``.

    A refused asyncpg login closes its connection without waiting for the close to finish; over
    TLS that close waits for the server's close_notify, so ``asyncio.run`` would close the loop
    first and leave the socket open (an "unclosed transport" ResourceWarning)."""
    deadline = time.monotonic() + timeout
    me = psutil.Process()
    while any(c.raddr and c.raddr.port == port for c in me.net_connections("tcp")):
        assert time.monotonic() < deadline, f"asyncpg left a connection to port {port} open"
        await asyncio.sleep(0.01)


def pg8000_login(gw: Gateway, db: str, user: str, password: str) -> tuple[str, str]:
    try:
        conn = pg8000.native.Connection(
            user, host="127.0.0.1", port=gw.port, database=db, password=password, timeout=30
        )
    except pg8000.native.DatabaseError as exc:
        fields: dict[str, str] = exc.args[0]
        return fields["C"], fields["M"]
    try:
        return "ok", str(conn.run("select current_user")[0][0])
    finally:
        conn.close()


def psql(gw: Gateway, db: str, user: str, password: str, **options: str) -> Any:
    return subprocess.run(
        [
            "psql",
            gw.dsn(dbname=db, user=user, gssencmode="disable", **options),
            "-XAtc",
            "select current_user",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PGPASSWORD": password},
    )


def tls_end_point_hash(crt: Path) -> bytes:
    """RFC 5929 tls-server-end-point of an ECDSA-SHA256 certificate: SHA-256 of its DER."""
    return hashlib.sha256(certs.load_cert(crt).public_bytes(Encoding.DER)).digest()


# --- a TLS-terminating recording relay ---------------------------------------------------------


class TlsInterceptor:
    """A man in the middle that speaks PostgreSQL's SSLRequest on both sides: it answers the
    client's TLS with (``crt``, ``key``), opens its own TLS to the gateway, relays the plaintext
    and records what each client sent. Presenting the gateway's own certificate keeps SCRAM's
    channel binding valid (the relay only watches); any other certificate is an impostor."""

    def __init__(self, target_port: int, crt: Path, key: Path) -> None:
        self.target_port = target_port
        self.upstream: list[bytearray] = []
        # The TCP transports under both sides of every relay, for close().
        self._transports: list[asyncio.WriteTransport] = []
        self._server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server_ctx.load_cert_chain(str(crt), str(key))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_writer: asyncio.StreamWriter | None = None
        self._transports.append(writer.transport)
        try:
            if await reader.readexactly(8) != codec.ssl_request():
                return
            writer.write(codes.SSL_ACCEPT)
            await writer.start_tls(self._server_ctx)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._transports.append(up_writer.transport)
            up_writer.write(codec.ssl_request())
            if await up_reader.readexactly(1) != codes.SSL_ACCEPT:
                return
            await up_writer.start_tls(client_context(), server_hostname="localhost")
            record = bytearray()
            self.upstream.append(record)
            await asyncio.gather(
                self._pump(reader, up_writer, record), self._pump(up_reader, writer, None)
            )
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            return  # the client or the gateway hung up: the test reads what was recorded
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()

    @staticmethod
    async def _pump(
        src: asyncio.StreamReader, dst: asyncio.StreamWriter, record: bytearray | None
    ) -> None:
        while data := await src.read(65536):
            if record is not None:
                record += data
            dst.write(data)
            await dst.drain()
        dst.close()

    def client_bytes(self) -> bytes:
        return b"".join(bytes(r) for r in self.upstream)

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()
            # A relay whose peers have not both hung up yet would otherwise die with the loop,
            # leaving its sockets open: end it. A TLS close waits for the peer's close_notify (up
            # to 30 s), so abort the TCP transports under the TLS ones instead of waiting (an
            # asyncio TLS transport closed twice, by _pump and by _handle, ignores abort()).
            relays = asyncio.all_tasks() - {asyncio.current_task()}
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)
            for transport in self._transports:
                transport.abort()
            await asyncio.sleep(0)  # abort() closes the socket in a callback: let it run

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def interceptor(gw: Gateway, files: Files) -> Iterator[TlsInterceptor]:
    relay = TlsInterceptor(gw.port, files.server_crt, files.server_key)
    yield relay
    relay.close()


def via(relay: TlsInterceptor, gw: Gateway) -> Gateway:
    """The same gateway, reached through ``relay``."""
    return Gateway(gw.directory, relay.port, gw.process, gw.log_path)


# --- raw protocol ------------------------------------------------------------------------------


def raw_auth_request(sock: socket.socket | ssl.SSLSocket, user: str, db: str) -> tuple[int, bytes]:
    sock.sendall(startup(user=user, database=db))
    kind, body = read_message(sock)
    assert kind == codes.MSG_AUTHENTICATION, (kind, body)
    return codec.parse_authentication(body)


def sasl_initial(mechanism: str, data: bytes | None) -> bytes:
    """SASLInitialResponse: mechanism name, Int32 length (-1: no data), data."""
    length = -1 if data is None else len(data)
    return codec.password_message(
        mechanism.encode() + b"\0" + length.to_bytes(4, "big", signed=True) + (data or b"")
    )


def final_error(sock: socket.socket | ssl.SSLSocket) -> dict[str, str]:
    """The ErrorResponse the gateway ends with (after which it closes)."""
    data = read_until_eof(sock)
    assert data[:1] == codes.MSG_ERROR_RESPONSE, data
    length = int.from_bytes(data[1:5], "big")
    assert len(data) == 1 + length, "bytes after the ErrorResponse"
    return error_fields(data[5:])


def plain_socket(gw: Gateway) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gw.port), timeout=10)


@contextlib.contextmanager
def tls_socket(gw: Gateway) -> Iterator[ssl.SSLSocket]:
    with plain_socket(gw) as raw:
        raw.sendall(codec.ssl_request())
        assert recv_exactly(raw, 1) == codes.SSL_ACCEPT
        with client_context().wrap_socket(raw) as tls:
            yield tls


def scram_over(
    sock: socket.socket | ssl.SSLSocket,
    user: str,
    db: str,
    password: str,
    mechanism: str,
    binding: tuple[str, bytes] | None = None,
) -> dict[str, str] | None:
    """A SCRAM exchange run by scramp's client; None on AuthenticationOk, else the error."""
    code, payload = raw_auth_request(sock, user, db)
    assert code == codes.AUTH_SASL
    offered = [m.decode() for m in payload.split(b"\0") if m]
    assert mechanism in offered, offered
    # The n= name is ignored by the server (libpq sends it empty; scramp refuses that).
    client = scramp.ScramClient([mechanism], user or "x", password, channel_binding=binding)
    sock.sendall(sasl_initial(mechanism, client.get_client_first().encode()))
    kind, body = read_message(sock)
    if kind == codes.MSG_ERROR_RESPONSE:
        return error_fields(body)
    code, server_first = codec.parse_authentication(body)
    assert code == codes.AUTH_SASL_CONTINUE
    client.set_server_first(server_first.decode())
    sock.sendall(codec.password_message(client.get_client_final().encode()))
    kind, body = read_message(sock)
    if kind == codes.MSG_ERROR_RESPONSE:
        return error_fields(body)
    code, server_final = codec.parse_authentication(body)
    assert code == codes.AUTH_SASL_FINAL
    client.set_server_final(server_final.decode())  # checks the server's signature
    kind, body = read_message(sock)
    assert (kind, codec.parse_authentication(body)[0]) == (codes.MSG_AUTHENTICATION, codes.AUTH_OK)
    return None


# --- each method: right password, wrong password, unknown role -----------------------------------

# (method, role) -> what the right password gives: the role, or a failure.
MATRIX = [
    ("password", "pw_scram", True),  # cleartext checked against a SCRAM verifier
    ("password", "pw_md5", True),  # ... and against an MD5 one
    ("md5", "pw_scram", True),  # md5 line, SCRAM verifier: SCRAM runs
    ("md5", "pw_md5", True),
    ("scram-sha-256", "pw_scram", True),
    ("scram-sha-256", "pw_md5", False),  # an MD5 verifier cannot do SCRAM
]


@pytest.mark.parametrize(("method", "role", "works"), MATRIX)
def test_method_matrix_with_libpq(gw: Gateway, method: str, role: str, works: bool) -> None:
    db = METHOD_DB[method]
    if works:
        assert libpq(gw, db, role, PASSWORDS[role]) == role
    else:
        assert FAILED.format(role) in libpq_error(gw, db, role, PASSWORDS[role])
    assert FAILED.format(role) in libpq_error(gw, db, role, WRONG)
    assert FAILED.format(UNKNOWN) in libpq_error(gw, db, UNKNOWN, WRONG)


@pytest.mark.parametrize("method", sorted(METHOD_DB))
def test_failures_look_the_same_with_asyncpg(gw: Gateway, method: str) -> None:
    """Wrong password, unknown role, no password, expired password: one SQLSTATE, one text."""
    db = METHOD_DB[method]
    assert asyncpg_login(gw, db, "pw_scram", PASSWORDS["pw_scram"]) == ("ok", "pw_scram")
    for user, password in [
        ("pw_scram", WRONG),
        (UNKNOWN, WRONG),
        ("pw_none", WRONG),
        ("pw_expired", PASSWORDS["pw_expired"]),  # the right password, expired
    ]:
        assert asyncpg_login(gw, db, user, password) == ("28P01", FAILED.format(user))


def test_md5_verifier_on_a_scram_line_is_logged(gw: Gateway) -> None:
    assert asyncpg_login(gw, "pwdb_scram", "pw_md5", PASSWORDS["pw_md5"])[0] == "28P01"
    gw.wait_for_log('User "pw_md5" does not have a valid SCRAM secret.')


def test_precise_reasons_go_to_the_log_only(gw: Gateway) -> None:
    cases = {
        "pw_expired": 'User "pw_expired" has an expired password.',
        "pw_none": 'User "pw_none" has no password assigned.',
        UNKNOWN: f'Role "{UNKNOWN}" does not exist.',
    }
    for user, reason in cases.items():
        password = PASSWORDS.get(user, WRONG)
        state, message = asyncpg_login(gw, "pwdb_scram", user, password)
        assert (state, message) == ("28P01", FAILED.format(user))
        assert reason not in message
        gw.wait_for_log(reason)
    # The md5 line's plain MD5 exchange states a mismatch in the log, like auth.c.
    assert asyncpg_login(gw, "pwdb_md5", "pw_md5", WRONG)[0] == "28P01"
    gw.wait_for_log('Password does not match for user "pw_md5".')


def test_nologin_role_fails_after_authentication(gw: Gateway) -> None:
    """InitPostgres refuses a NOLOGIN role, but only after the password was checked."""
    right = asyncpg_login(gw, "pwdb_scram", "pw_nologin", PASSWORDS["pw_nologin"])
    assert right == ("28000", 'role "pw_nologin" is not permitted to log in')
    wrong = asyncpg_login(gw, "pwdb_scram", "pw_nologin", WRONG)
    assert wrong == ("28P01", FAILED.format("pw_nologin"))


def test_pg8000(gw: Gateway) -> None:
    for method in ("password", "md5", "scram-sha-256"):
        db = METHOD_DB[method]
        assert pg8000_login(gw, db, "pw_scram", PASSWORDS["pw_scram"]) == ("ok", "pw_scram")
        assert pg8000_login(gw, db, "pw_scram", WRONG) == ("28P01", FAILED.format("pw_scram"))
        assert pg8000_login(gw, db, UNKNOWN, WRONG) == ("28P01", FAILED.format(UNKNOWN))
    assert pg8000_login(gw, "pwdb_md5", "pw_md5", PASSWORDS["pw_md5"]) == ("ok", "pw_md5")


def test_psql_libpq15(gw: Gateway) -> None:
    ok = psql(gw, "pwdb_scram", "pw_scram", PASSWORDS["pw_scram"])
    assert (ok.returncode, ok.stdout.strip()) == (0, "pw_scram"), ok.stderr
    ok = psql(gw, "pwdb_md5", "pw_md5", PASSWORDS["pw_md5"])
    assert (ok.returncode, ok.stdout.strip()) == (0, "pw_md5"), ok.stderr
    bound = psql(
        gw,
        "pwdb_scram",
        "pw_scram",
        PASSWORDS["pw_scram"],
        sslmode="require",
        channel_binding="require",
    )
    assert (bound.returncode, bound.stdout.strip()) == (0, "pw_scram"), bound.stderr
    for db in METHOD_DB.values():
        bad = psql(gw, db, "pw_scram", WRONG)
        assert bad.returncode != 0
        assert FAILED.format("pw_scram") in bad.stderr


def test_asyncpg_scram_over_tls(gw: Gateway, files: Files) -> None:
    """asyncpg runs plain SCRAM-SHA-256 over TLS (gs2 flag ``n``): PLUS is offered, not forced."""
    ctx = client_context(cafile=files.server_ca)
    assert asyncpg_login(gw, "pwdb_scram", "pw_scram", PASSWORDS["pw_scram"], ctx) == (
        "ok",
        "pw_scram",
    )
    assert asyncpg_login(gw, "pwdb_scram", "pw_scram", WRONG, ctx) == (
        "28P01",
        FAILED.format("pw_scram"),
    )


# --- require_auth (libpq 18) ------------------------------------------------------------------


def test_md5_line_with_scram_verifier_sends_a_sasl_request(gw: Gateway) -> None:
    pw = PASSWORDS["pw_scram"]
    err = libpq_error(gw, "pwdb_md5", "pw_scram", pw, require_auth="md5")
    assert 'authentication method requirement "md5" failed' in err
    assert "server requested SASL authentication" in err
    assert libpq(gw, "pwdb_md5", "pw_scram", pw, require_auth="scram-sha-256") == "pw_scram"


def test_md5_line_with_md5_verifier_sends_an_md5_request(gw: Gateway) -> None:
    pw = PASSWORDS["pw_md5"]
    assert libpq(gw, "pwdb_md5", "pw_md5", pw, require_auth="md5") == "pw_md5"
    err = libpq_error(gw, "pwdb_md5", "pw_md5", pw, require_auth="scram-sha-256")
    assert 'authentication method requirement "scram-sha-256" failed' in err
    assert "server requested a hashed password" in err  # libpq's words for MD5


def test_md5_line_unknown_role_gets_sasl_like_a_scram_role(gw: Gateway) -> None:
    """password_encryption = scram-sha-256 (the default): a doomed SCRAM, not an MD5 salt."""
    err = libpq_error(gw, "pwdb_md5", UNKNOWN, WRONG, require_auth="scram-sha-256")
    assert FAILED.format(UNKNOWN) in err
    err = libpq_error(gw, "pwdb_md5", UNKNOWN, WRONG, require_auth="md5")
    assert 'authentication method requirement "md5" failed' in err


def test_require_auth_password(gw: Gateway) -> None:
    pw = PASSWORDS["pw_scram"]
    assert libpq(gw, "pwdb_password", "pw_scram", pw, require_auth="password") == "pw_scram"
    assert (
        libpq(gw, "pwdb_password", "pw_scram", pw, require_auth="password", sslmode="require")
        == "pw_scram"
    )
    err = libpq_error(gw, "pwdb_scram", "pw_scram", pw, require_auth="password")
    assert 'authentication method requirement "password" failed' in err
    err = libpq_error(gw, "pwdb_password", "pw_scram", pw, require_auth="!password")
    assert 'authentication method requirement "!password" failed' in err


# --- channel binding ---------------------------------------------------------------------------


@pytest.mark.parametrize("binding", ["disable", "prefer", "require"])
def test_channel_binding_over_tls(gw: Gateway, binding: str) -> None:
    pw = PASSWORDS["pw_scram"]
    opts = {"sslmode": "require", "channel_binding": binding}
    assert libpq(gw, "pwdb_scram", "pw_scram", pw, **opts) == "pw_scram"
    assert libpq(gw, "pwdb_md5", "pw_scram", pw, **opts) == "pw_scram"  # SCRAM on an md5 line
    assert FAILED.format("pw_scram") in libpq_error(gw, "pwdb_scram", "pw_scram", WRONG, **opts)


@pytest.mark.parametrize(
    ("binding", "mechanism", "gs2_header"),
    [
        ("disable", b"SCRAM-SHA-256\0", b"n,,n="),
        ("prefer", b"SCRAM-SHA-256-PLUS\0", b"p=tls-server-end-point,,n="),
        ("require", b"SCRAM-SHA-256-PLUS\0", b"p=tls-server-end-point,,n="),
    ],
)
def test_libpq_really_binds_the_channel(
    gw: Gateway, interceptor: TlsInterceptor, binding: str, mechanism: bytes, gs2_header: bytes
) -> None:
    """Read off the decrypted wire: the mechanism libpq picked and its gs2 header."""
    pw = PASSWORDS["pw_scram"]
    through = via(interceptor, gw)
    assert (
        libpq(through, "pwdb_scram", "pw_scram", pw, sslmode="require", channel_binding=binding)
        == "pw_scram"
    )
    sent = interceptor.client_bytes()
    assert mechanism in sent
    assert gs2_header in sent
    if binding == "disable":
        assert b"SCRAM-SHA-256-PLUS" not in sent
    assert pw.encode() not in sent


def test_channel_binding_defeats_a_man_in_the_middle(gw: Gateway, files: Files) -> None:
    """An impostor certificate from the same CA: libpq's verify-ca passes, the binding does not."""
    relay = TlsInterceptor(gw.port, files.impostor_crt, files.impostor_key)
    try:
        through = via(relay, gw)
        pw = PASSWORDS["pw_scram"]
        opts = {"sslmode": "verify-ca", "sslrootcert": str(files.server_ca)}
        before = gw.log().count("SCRAM channel binding check failed")
        err = libpq_error(through, "pwdb_scram", "pw_scram", pw, channel_binding="require", **opts)
        assert "SCRAM channel binding check failed" in err
        gw.wait_for_log("SCRAM channel binding check failed", count=before + 1)
        # Without binding the relay goes unnoticed: that is what channel binding is for.
        assert (
            libpq(through, "pwdb_scram", "pw_scram", pw, channel_binding="disable", **opts)
            == "pw_scram"
        )
    finally:
        relay.close()


@pytest.mark.parametrize("binding", ["disable", "prefer"])
def test_channel_binding_optional_over_plain(gw: Gateway, binding: str) -> None:
    pw = PASSWORDS["pw_scram"]
    assert libpq(gw, "pwdb_scram", "pw_scram", pw, channel_binding=binding) == "pw_scram"


def test_channel_binding_required_over_plain_fails(gw: Gateway) -> None:
    err = libpq_error(
        gw, "pwdb_scram", "pw_scram", PASSWORDS["pw_scram"], channel_binding="require"
    )
    assert "channel binding required" in err
    assert "SSL not in use" in err


def test_channel_binding_required_against_non_sasl_methods(gw: Gateway) -> None:
    opts = {"sslmode": "require", "channel_binding": "require"}
    for db, role in [("pwdb_password", "pw_scram"), ("pwdb_md5", "pw_md5")]:
        err = libpq_error(gw, db, role, PASSWORDS[role], **opts)
        assert "channel binding required but not supported by server's authentication" in err


# --- SCRAM on the wire: PLUS, bounds, malformed messages ---------------------------------------


def test_mechanisms_offered(gw: Gateway) -> None:
    with plain_socket(gw) as sock:
        code, payload = raw_auth_request(sock, "pw_scram", "pwdb_scram")
        assert (code, payload) == (codes.AUTH_SASL, b"SCRAM-SHA-256\0\0")
    with tls_socket(gw) as tls:
        code, payload = raw_auth_request(tls, "pw_scram", "pwdb_scram")
        assert (code, payload) == (codes.AUTH_SASL, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0")
    with tls_socket(gw) as tls:  # an unknown role is offered exactly the same
        assert raw_auth_request(tls, UNKNOWN, "pwdb_scram")[1] == payload


def test_scram_plus_raw(gw: Gateway, files: Files) -> None:
    good = ("tls-server-end-point", tls_end_point_hash(files.server_crt))
    pw = PASSWORDS["pw_scram"]
    with tls_socket(gw) as tls:
        assert scram_over(tls, "pw_scram", "pwdb_scram", pw, "SCRAM-SHA-256-PLUS", good) is None
    bad = ("tls-server-end-point", tls_end_point_hash(files.impostor_crt))
    with tls_socket(gw) as tls:
        err = scram_over(tls, "pw_scram", "pwdb_scram", pw, "SCRAM-SHA-256-PLUS", bad)
    assert err is not None
    assert (err["C"], err["M"]) == ("28000", "SCRAM channel binding check failed")
    with tls_socket(gw) as tls:
        err = scram_over(tls, "pw_scram", "pwdb_scram", WRONG, "SCRAM-SHA-256-PLUS", good)
    assert err is not None
    assert (err["S"], err["C"], err["M"]) == ("FATAL", "28P01", FAILED.format("pw_scram"))


def test_unknown_role_salt_is_stable_and_plausible(gw: Gateway) -> None:
    """The mock salt of an unknown role does not change between attempts (auth-scram.c)."""

    def server_first(user: str) -> bytes:
        with plain_socket(gw) as sock:
            raw_auth_request(sock, user, "pwdb_scram")
            sock.sendall(sasl_initial("SCRAM-SHA-256", b"n,,n=,r=abcdefghijklmnop"))
            kind, body = read_message(sock)
            assert kind == codes.MSG_AUTHENTICATION
            code, data = codec.parse_authentication(body)
            assert code == codes.AUTH_SASL_CONTINUE
            return data

    def salt_and_iterations(message: bytes) -> list[bytes]:
        return [a for a in message.split(b",") if a[:2] in (b"s=", b"i=")]

    ghost = salt_and_iterations(server_first(UNKNOWN))
    assert ghost == salt_and_iterations(server_first(UNKNOWN))
    real = salt_and_iterations(server_first("pw_scram"))
    assert ghost != real
    assert [len(a) for a in ghost] == [len(a) for a in real]  # 16-byte salt, 4096 iterations


def test_sasl_message_bound_counts_the_length_word(gw: Gateway) -> None:
    """PG_MAX_SASL_MESSAGE_LENGTH (1024) bounds the Int32 length word, which counts itself
    (pqcomm.c pq_getmessage): a 1020-byte body is read, a 1021-byte body fails the login."""
    head = len(sasl_initial("SCRAM-SHA-256", b"")) - 1  # the type byte is not counted
    for length_word, answer in [(1024, codes.MSG_AUTHENTICATION), (1025, codes.MSG_ERROR_RESPONSE)]:
        nonce = b"a" * (length_word - head - len(b"n,,n=,r="))
        message = sasl_initial("SCRAM-SHA-256", b"n,,n=,r=" + nonce)
        assert int.from_bytes(message[1:5], "big") == length_word
        with plain_socket(gw) as sock:
            raw_auth_request(sock, "pw_scram", "pwdb_scram")
            sock.sendall(message)
            kind, body = read_message(sock)
        assert kind == answer, (length_word, body)
        if kind == codes.MSG_ERROR_RESPONSE:
            assert error_fields(body)["C"] == "28P01"


def test_password_packet_errors(gw: Gateway) -> None:
    """auth.c recv_password_packet's checks, on the cleartext line."""
    cases = [
        (codec.password_message(b"\0"), "28P01", "empty password returned by client"),
        (codec.password_message(b"abc"), "08P01", "invalid password packet size"),
        (
            b"Q" + (13).to_bytes(4, "big") + b"select 1\0",
            "08P01",
            "expected password response, got message type 81",
        ),
    ]
    for message, state, text in cases:
        with plain_socket(gw) as sock:
            assert raw_auth_request(sock, "pw_scram", "pwdb_password")[0] == (
                codes.AUTH_CLEARTEXT_PASSWORD
            )
            sock.sendall(message)
            err = final_error(sock)
        assert (err["S"], err["C"], err["M"]) == ("FATAL", state, text)


@pytest.mark.parametrize("length_word", [3, 70_000])
def test_bad_length_word_in_sasl_is_a_password_failure(gw: Gateway, length_word: int) -> None:
    """CheckSASLAuth: pq_getmessage's failure is STATUS_ERROR, i.e. the usual 28P01 (the
    08P01 "invalid message length" goes to the log only)."""
    with plain_socket(gw) as sock:
        raw_auth_request(sock, "pw_scram", "pwdb_scram")
        sock.sendall(codes.MSG_PASSWORD + length_word.to_bytes(4, "big") + b"SCRAM-SHA-256\0")
        err = final_error(sock)
    assert (err["S"], err["C"], err["M"]) == ("FATAL", "28P01", FAILED.format("pw_scram"))


@pytest.mark.parametrize("db", ["pwdb_password", "pwdb_md5"])
def test_bad_length_word_in_password_packet_closes_silently(gw: Gateway, db: str) -> None:
    """recv_password_packet: pq_getmessage's failure is STATUS_EOF, an exit without a word.
    65535 (PG_MAX_AUTH_TOKEN_LENGTH) bounds the length word, so 65536 is one too many."""
    for message in [
        codes.MSG_PASSWORD + (70_000).to_bytes(4, "big") + b"x\0",
        codec.password_message(b"x" * (65536 - 5) + b"\0"),
    ]:
        assert int.from_bytes(message[1:5], "big") > 65535
        with plain_socket(gw) as sock:
            raw_auth_request(sock, "pw_md5", db)
            sock.sendall(message)
            assert read_until_eof(sock) == b""
    gw.wait_for_log("invalid message length")


def test_oversized_sasl_message_is_a_password_failure(gw: Gateway) -> None:
    with plain_socket(gw) as sock:
        raw_auth_request(sock, "pw_scram", "pwdb_scram")
        sock.sendall(sasl_initial("SCRAM-SHA-256", b"n,,n=,r=" + b"x" * 2000))
        err = final_error(sock)
    assert (err["S"], err["C"], err["M"]) == ("FATAL", "28P01", FAILED.format("pw_scram"))
    with plain_socket(gw) as sock:  # the same bound on the client-final-message
        raw_auth_request(sock, "pw_scram", "pwdb_scram")
        sock.sendall(sasl_initial("SCRAM-SHA-256", b"n,,n=,r=abcdefgh"))
        assert read_message(sock)[0] == codes.MSG_AUTHENTICATION
        sock.sendall(codec.password_message(b"c=biws,r=" + b"y" * 2000))
        err = final_error(sock)
    assert (err["C"], err["M"]) == ("28P01", FAILED.format("pw_scram"))


def test_malformed_client_first(gw: Gateway) -> None:
    with plain_socket(gw) as sock:
        raw_auth_request(sock, "pw_scram", "pwdb_scram")
        sock.sendall(sasl_initial("SCRAM-SHA-256", b"garbage"))
        err = final_error(sock)
    assert (err["S"], err["C"], err["M"]) == ("FATAL", "08P01", "malformed SCRAM message")
    assert err["D"] == "Unexpected channel-binding flag \"'g'\"."


def test_malformed_message_after_empty_initial_response(gw: Gateway) -> None:
    """Length -1: an empty SASLContinue, then the client-first arrives on its own."""
    with plain_socket(gw) as sock:
        raw_auth_request(sock, UNKNOWN, "pwdb_scram")
        sock.sendall(sasl_initial("SCRAM-SHA-256", None))
        kind, body = read_message(sock)
        assert (kind, codec.parse_authentication(body)) == (
            codes.MSG_AUTHENTICATION,
            (codes.AUTH_SASL_CONTINUE, b""),
        )
        sock.sendall(codec.password_message(b"n,,n=,r=abc,\x01"))
        err = final_error(sock)
    assert (err["C"], err["M"]) == ("08P01", "malformed SCRAM message")


def test_plus_over_plain_is_an_invalid_mechanism(gw: Gateway) -> None:
    for user in ("pw_scram", UNKNOWN):
        with plain_socket(gw) as sock:
            raw_auth_request(sock, user, "pwdb_scram")
            sock.sendall(sasl_initial("SCRAM-SHA-256-PLUS", b"p=tls-server-end-point,,n=,r=ab"))
            err = final_error(sock)
        assert (err["S"], err["C"], err["M"]) == (
            "FATAL",
            "08P01",
            "client selected an invalid SASL authentication mechanism",
        )


def test_downgrade_flag_y_over_tls_is_refused(gw: Gateway) -> None:
    with tls_socket(gw) as tls:
        raw_auth_request(tls, "pw_scram", "pwdb_scram")
        tls.sendall(sasl_initial("SCRAM-SHA-256", b"y,,n=,r=abcdefgh"))
        err = final_error(tls)
    assert (err["C"], err["M"]) == ("28000", "SCRAM channel binding negotiation error")


# --- client certificate and password together ---------------------------------------------------


def test_scram_with_clientcert_verify_full(gw: Gateway, files: Files) -> None:
    pw = PASSWORDS["pw_scram"]
    cert = {"sslmode": "require", "sslcert": str(files.client_crt), "sslkey": str(files.client_key)}
    assert (
        libpq(gw, "pwdb_clientcert", "pw_scram", pw, channel_binding="require", **cert)
        == "pw_scram"
    )
    assert FAILED.format("pw_scram") in libpq_error(
        gw, "pwdb_clientcert", "pw_scram", WRONG, **cert
    )
    err = libpq_error(
        gw, "pwdb_clientcert", "pw_scram", pw, sslmode="require", sslcertmode="disable"
    )
    assert "connection requires a valid client certificate" in err
    # CN=pw_scram does not name pw_md5: verify-full fails even with pw_md5's right password.
    err = libpq_error(gw, "pwdb_clientcert", "pw_md5", PASSWORDS["pw_md5"], **cert)
    assert 'authentication failed for user "pw_md5"' in err


# --- JDBC --------------------------------------------------------------------------------------

JDBC_JAR = Path.home() / ".m2/repository/org/postgresql/postgresql/42.7.13/postgresql-42.7.13.jar"
JDBC_PROBE = """\
import java.sql.*;
public class Probe {
    public static void main(String[] a) {
        for (int i = 1; i < a.length; i += 2) {
            try (Connection c = DriverManager.getConnection(a[0] + a[i], "pw_scram", a[i + 1]);
                 ResultSet r = c.createStatement().executeQuery("select current_user")) {
                r.next();
                System.out.println("ok " + r.getString(1));
            } catch (SQLException e) {
                System.out.println(e.getSQLState() + " " + e.getMessage());
            }
        }
    }
}
"""


def test_jdbc(gw: Gateway, tmp_path: Path) -> None:
    java = shutil.which("java")
    if java is None or not JDBC_JAR.exists():
        pytest.skip("no java or no PostgreSQL JDBC driver in ~/.m2")
    source = tmp_path / "Probe.java"
    source.write_text(JDBC_PROBE)
    pw = PASSWORDS["pw_scram"]
    tls = "&sslmode=require&channelBinding=require"
    queries = ["pwdb_scram?", pw, "pwdb_scram?", WRONG, "pwdb_md5?", pw, f"pwdb_scram?{tls}", pw]
    out = subprocess.run(
        [
            java,
            "-cp",
            str(JDBC_JAR),
            str(source),
            f"jdbc:postgresql://127.0.0.1:{gw.port}/",
            *queries,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 4, out
    assert lines[0] == "ok pw_scram"
    assert lines[1].startswith("28P01 ") and FAILED.format("pw_scram") in lines[1]
    assert lines[2] == "ok pw_scram"
    assert lines[3] == "ok pw_scram"


# --- no enumeration by timing, no passwords in the log -------------------------------------------


def test_unknown_role_fails_as_fast_as_a_wrong_password(gw: Gateway) -> None:
    """A coarse statistical check, not a timing test: the doomed exchange does the same work."""

    async def failure_time(user: str) -> float:
        start = time.perf_counter()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(
                host="127.0.0.1",
                port=gw.port,
                user=user,
                password=WRONG,
                database="pwdb_scram",
                ssl=False,
                timeout=30,
            )
        return time.perf_counter() - start

    async def medians() -> tuple[float, float]:
        known, unknown = [], []
        for _ in range(15):
            known.append(await failure_time("pw_scram"))
            unknown.append(await failure_time(UNKNOWN))
        return statistics.median(known), statistics.median(unknown)

    known, unknown = asyncio.run(medians())
    assert known / 10 < unknown < known * 10, (known, unknown)


def test_no_password_in_the_log(gw: Gateway) -> None:
    # Every method, right and wrong, so the test stands on its own whatever ran before.
    for db in METHOD_DB.values():
        for role, password in [*PASSWORDS.items(), ("pw_scram", WRONG), (UNKNOWN, WRONG)]:
            asyncpg_login(gw, db, role, password)
    gw.wait_for_log(f'Role "{UNKNOWN}" does not exist.', count=3)
    log = gw.log()
    assert "connection authenticated" in log  # the log is the one being written
    for password in [*PASSWORDS.values(), WRONG]:
        assert password not in log
