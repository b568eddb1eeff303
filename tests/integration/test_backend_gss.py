"""pggate as a GSSAPI client toward its backend (gssencmode, krbsrvname, AuthenticationGSS),
against a real MIT KDC and Debian's PostgreSQL 15 (built with GSSAPI), as libpq 18 does it.

The backend's pg_hba.conf has one database per case: ``gssdb`` only over GSSAPI encryption
(``hostgssenc ... gss``), ``authdb`` only without it but with ``gss`` authentication
(``hostnogssenc``), ``plaindb`` neither. pggate holds the client principal ``pggate`` in a keytab
(``backend_krb_client_keyfile``); the backend maps that principal to the role ``alice``, so
``pg_stat_gssapi`` on the backend says what pggate's link is. Without the setting pggate uses
GSSAPI's default credentials, as libpq does, and the session's default ccache is empty.

The last tests drive :func:`pggate.server.link.establish` in-process against a scripted
backend that accepts with pggate's own acceptor (:class:`~pggate.transport.gss.GssChannel`):
bytes behind ``G`` are refused, and the transport of plaintext works both ways.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import (
    DEBIAN_PG_BINDIR,
    Gateway,
    check_connect,
    login_error,
    prepare_gateway_dir,
    start_gateway,
)
from kdc import Realm
from reference import TcpCluster, create_objects, owned_copy, reference_server

from pggate.conninfo import backend_target
from pggate.hop.plan import Attempt, Encryption
from pggate.proto import codec, codes
from pggate.server import link
from pggate.transport.gss import GssChannel, acceptor_credentials
from pggate.transport.gss_client import ClientCredentials

pytestmark = pytest.mark.integration

HBA = """\
hostgssenc   gssdb   alice    127.0.0.1/32 gss map=gw
hostnogssenc authdb  alice    127.0.0.1/32 gss map=gw
hostnogssenc plaindb alice    127.0.0.1/32 trust
host         all     postgres 127.0.0.1/32 trust
"""
IDENT = "gw pggate@EXAMPLE.COM alice\n"
CLIENT = "pggate@EXAMPLE.COM"
EXTRA_SERVICE = "pgsvc"  # a second service principal in the backend's keytab (krbsrvname)
GssGateway = Callable[..., Gateway]
GSS_ROW = (
    "select gss_authenticated, principal, encrypted from pg_stat_gssapi "
    "where pid = pg_backend_pid()"
)


def add_principal(kdc: Realm, name: str) -> None:
    """``addprinc -randkey`` (once per session: the realm outlives this module)."""
    try:
        kdc.kadmin(f"addprinc -randkey {name}")
    except RuntimeError as exc:
        if "already exists" not in str(exc):
            raise


@pytest.fixture(scope="module")
def client_keytab(kdc: Realm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The keytab of pggate's client principal (``ktadd`` writes fresh keys each time)."""
    add_principal(kdc, "pggate")
    keytab = tmp_path_factory.mktemp("pggate-client") / "client.keytab"
    kdc.kadmin(f"ktadd -k {keytab} pggate")
    return keytab


@pytest.fixture(scope="module")
def postgres15(kdc: Realm) -> Iterator[int]:
    """PostgreSQL 15 on 127.0.0.1 with krb_server_keyfile (``postgres/localhost`` and
    ``pgsvc/localhost``); its port."""
    if not (DEBIAN_PG_BINDIR / "postgres").exists():
        pytest.skip("Debian's PostgreSQL 15 is not installed")
    add_principal(kdc, f"{EXTRA_SERVICE}/{kdc.host}")
    server_env: dict[str, str] = {}

    def prepare(cluster: TcpCluster, base: Path) -> str:
        staged = base / "server.keytab"
        shutil.copyfile(kdc.keytab, staged)
        kdc.kadmin(f"ktadd -k {staged} {EXTRA_SERVICE}/{kdc.host}")  # appended
        keytab = cluster.data_dir / "krb5.keytab"
        owned_copy(staged, keytab, cluster.run_as)
        (base / "krb5.conf").write_bytes(kdc.krb5_conf.read_bytes())
        (base / "krb5.conf").chmod(0o644)
        (base / "rcache").mkdir()
        if cluster.run_as is not None:
            shutil.chown(base / "rcache", cluster.run_as)
        server_env.update(KRB5_CONFIG=str(base / "krb5.conf"), KRB5RCACHEDIR=str(base / "rcache"))
        return f"krb_server_keyfile = 'FILE:{keytab}'\n"

    with reference_server(
        DEBIAN_PG_BINDIR, hba=HBA, ident=IDENT, prepare=prepare, env=server_env
    ) as cluster:
        create_objects(
            cluster.conninfo, ["CREATE ROLE alice LOGIN"], ["gssdb", "authdb", "plaindb"]
        )
        yield cluster.port


@pytest.fixture
def gss_gateway(postgres15: int, client_keytab: Path, tmp_path: Path) -> Iterator[GssGateway]:
    """``gss_gateway(conninfo_options, keytab=True, conf="")``: pggate in front of the
    PostgreSQL 15, with the client keytab or GSSAPI's default credentials (none)."""
    started: list[Gateway] = []

    def factory(options: str = "", *, keytab: bool = True, conf: str = "") -> Gateway:
        backend = f"host=localhost hostaddr=127.0.0.1 port={postgres15} {options}".strip()
        if keytab:
            conf += f"backend_krb_client_keyfile = '{client_keytab}'\n"
        directory = tmp_path / f"gw{len(started)}"
        port = prepare_gateway_dir(directory, backend, conf=conf)
        gateway = start_gateway(directory, port=port)
        started.append(gateway)
        return gateway

    yield factory
    for gateway in started:
        gateway.stop()


def gss_row(gateway: Gateway, database: str) -> tuple[object, ...]:
    with psycopg.connect(gateway.dsn(user="alice", dbname=database)) as conn:
        row = conn.execute(GSS_ROW).fetchone()
    assert row is not None
    return tuple(row)


def refusal(gateway: Gateway, database: str) -> str:
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(gateway.dsn(user="alice", dbname=database))
    return str(info.value)


@pytest.mark.parametrize("gssencmode", ["require", "prefer"])
def test_sessions_are_gss_encrypted_with_the_client_keytab(
    gss_gateway: GssGateway, gssencmode: str
) -> None:
    gateway = gss_gateway(f"gssencmode={gssencmode}")
    assert gss_row(gateway, "gssdb") == (True, CLIENT, True)
    # Many packets each way through the relay: a 2 MB result, a 600 kB parameter.
    with psycopg.connect(gateway.dsn(user="alice", dbname="gssdb")) as conn:
        row = conn.execute("select repeat('x', 2000000)").fetchone()
        assert row is not None and row[0] == "x" * 2_000_000
        echoed = conn.execute("select md5(%s)", ["y" * 600_000]).fetchone()
        assert echoed is not None and len(str(echoed[0])) == 32
        count = conn.execute("select count(*) from generate_series(1, 50000)").fetchone()
        assert count == (50000,)
    assert "GSSAPI" not in gateway.log()
    checked = check_connect(gateway.directory)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"link: GSSAPI-encrypted (as {CLIENT})" in checked.stdout


def test_gss_authentication_without_encryption(gss_gateway: GssGateway) -> None:
    """gssencmode=disable never asks for encryption; AuthenticationGSS is answered with the
    keytab's credentials for ``postgres@localhost``."""
    gateway = gss_gateway("gssencmode=disable")
    assert gss_row(gateway, "authdb") == (True, CLIENT, False)
    text = refusal(gateway, "gssdb")
    assert 'user "alice", database "gssdb", no encryption' in text


def test_krbsrvname_names_the_service(gss_gateway: GssGateway) -> None:
    gateway = gss_gateway(f"gssencmode=disable krbsrvname={EXTRA_SERVICE}")
    assert gss_row(gateway, "authdb") == (True, CLIENT, False)
    wrong = gss_gateway("gssencmode=disable krbsrvname=nosuch")
    sqlstate, _ = login_error(wrong.port, user="alice", database="authdb")
    assert sqlstate == codes.SQLSTATE_CONNECTION_FAILURE
    wrong.wait_for_log("GSSAPI continuation error")  # written just after the client's FATAL
    assert "nosuch/localhost@EXAMPLE.COM not found in Kerberos database" in wrong.log()


def test_require_without_credentials_is_08006_with_libpq_text(gss_gateway: GssGateway) -> None:
    gateway = gss_gateway("gssencmode=require", keytab=False)
    sqlstate, _ = login_error(gateway.port, user="alice", database="gssdb")
    assert sqlstate == codes.SQLSTATE_CONNECTION_FAILURE
    gateway.wait_for_log("GSSAPI encryption required but no credential cache")


def test_prefer_without_credentials_falls_through_silently(gss_gateway: GssGateway) -> None:
    """libpq's default: no credential cache, no GSSAPI, no message; TLS is refused by this
    server, plaintext is used."""
    gateway = gss_gateway(keytab=False)
    assert gss_row(gateway, "plaindb") == (False, None, False)
    assert 'database "gssdb", no encryption' in refusal(gateway, "gssdb")
    assert "GSSAPI" not in gateway.log()


def test_a_cancel_reaches_the_backend_over_gss(gss_gateway: GssGateway) -> None:
    gateway = gss_gateway("gssencmode=require")
    with psycopg.connect(gateway.dsn(user="alice", dbname="gssdb")) as conn:

        def cancel_soon() -> None:
            time.sleep(1)
            conn.cancel_safe()

        canceller = threading.Thread(target=cancel_soon)
        canceller.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("select pg_sleep(30)")
        canceller.join()
    assert time.monotonic() - started < 20


def test_pooled_gss_backends_are_reused(gss_gateway: GssGateway) -> None:
    """The pool holds the GSSAPI transport of plaintext like any other backend transport."""
    gateway = gss_gateway("gssencmode=require", conf="pool_mode = session\n")
    dsn = gateway.dsn(user="alice", dbname="gssdb")
    query = "select pid, encrypted from pg_stat_gssapi where pid = pg_backend_pid()"

    def session() -> tuple[object, ...]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(query).fetchone()
        assert row is not None and row[1] is True
        return tuple(row)

    first = session()
    deadline = time.monotonic() + 10
    while session() != first:  # the release (reset query) may not be done yet
        assert time.monotonic() < deadline, "the pooled GSSAPI backend was never reused"


# --- in-process: link.establish against a scripted GSSAPI acceptor ---------------------------


async def scripted_acceptor(
    kdc: Realm, behind_g: bytes, greeting: bytes, received: list[bytes]
) -> tuple[asyncio.Server, asyncio.Event]:
    """Answers GSSENCRequest with ``G`` + ``behind_g``, accepts the context with the realm's
    service keytab, sends ``greeting`` encrypted, then records decrypted bytes; the event is
    set once the connection is over."""
    credentials = acceptor_credentials(f"FILE:{kdc.keytab}")

    async def converse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readexactly(8) == codec.gssenc_request()
        writer.write(codes.GSS_ACCEPT + behind_g)
        channel = GssChannel(credentials)
        done = False
        while not done:
            data = await reader.read(65536)
            if not data:
                return
            reply, done = channel.receive_handshake(data)
            writer.write(reply)
        writer.write(channel.encrypt(greeting))
        while data := await reader.read(65536):
            received.append(channel.feed(data))

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await converse(reader, writer)
        finally:
            writer.close()
            await writer.wait_closed()
            finished.set()

    finished = asyncio.Event()
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, finished


async def establish_against(
    kdc: Realm,
    client_keytab: Path,
    behind_g: bytes,
    received: list[bytes],
    use: Callable[[link.Established], Awaitable[None]] | None = None,
) -> link.Established:
    """link.establish toward the scripted acceptor; ``use`` the link, then close it and wait
    for the acceptor to see the end."""
    server, finished = await scripted_acceptor(kdc, behind_g, b"hello from the backend", received)
    port = server.sockets[0].getsockname()[1]
    (address,) = backend_target(
        f"host={kdc.host} hostaddr=127.0.0.1 port={port} connect_timeout=10"
    ).addresses()
    credentials = ClientCredentials(keytab=f"FILE:{client_keytab}")
    try:
        established = await link.establish(
            address, Attempt(0, Encryption.GSS), None, None, credentials
        )
        if use is not None:
            await use(established)
        established.transport.close()
        return established
    finally:
        await asyncio.wait_for(finished.wait(), 10)
        server.close()
        await server.wait_closed()


def test_establish_gives_a_transport_of_plaintext(kdc: Realm, client_keytab: Path) -> None:
    received: list[bytes] = []

    async def use(established: link.Established) -> None:
        assert established.security.gss and established.facts.gss
        assert established.facts.gss_principal == CLIENT
        protocol = established.protocol
        while len(protocol.inbox) < len(b"hello from the backend"):
            assert await protocol.wait_for_data()
        assert protocol.take() == b"hello from the backend"
        established.transport.write(b"z" * 100_000)
        deadline = time.monotonic() + 10
        while sum(map(len, received)) < 100_000 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    asyncio.run(establish_against(kdc, client_keytab, b"", received, use))
    assert b"".join(received) == b"z" * 100_000


def test_unencrypted_bytes_behind_g_are_refused(kdc: Realm, client_keytab: Path) -> None:
    """Injected before the handshake: libpq finds them once the context is established."""
    with pytest.raises(
        link.LinkBroken, match=r"^received unencrypted data after GSSAPI encryption response$"
    ):
        asyncio.run(establish_against(kdc, client_keytab, b"injected", []))
