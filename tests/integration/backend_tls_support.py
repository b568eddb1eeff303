"""Helpers for test_backend_tls.py: pggate as a TLS client of a real PostgreSQL (issue 11).

A certificate set for the backend hop (a CA, the backend's server certificate for ``localhost``
and ``127.0.0.1``, pggate's client certificate for the backend's ``cert`` method, CRLs that
revoke the server certificate), a PostgreSQL with ``ssl = on`` whose pg_hba.conf has only
``hostssl`` lines for TCP, gateway directories whose ``backend`` is a given conninfo, a fake
backend that misbehaves on purpose, and a login helper that returns the SQLSTATE.

No test functions here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psycopg
from conftest import Gateway, login_error, prepare_gateway_dir, start_gateway
from reference import TcpCluster, owned_copy, reference_server

from pggate.tls import certs

# Roles on the TLS backend. PGGATE_ROLE logs in with its client certificate (``cert``);
# PASSWORD_ROLE is pggate's role for conninfos that log in with a password over SCRAM
# (channel_binding=require cannot be met by ``cert``: no SASL exchange, so no binding);
# ALICE logs in to pggate with SCRAM and is passed through with her SCRAM keys; BOB is trusted
# by pggate and has no password anywhere (his logins show the backend's own refusals).
PGGATE_ROLE = "pggate"
PASSWORD_ROLE = "pggate_pw"
PASSWORD_ROLE_SECRET = "pw-role-Secret-5521"
# PASSWORD_ROLE's verifier is made with this count (PostgreSQL 15 has no scram_iterations
# setting; its default is 4096, pggate's lowest backend_scram_max_iterations).
PASSWORD_ROLE_ITERATIONS = 5000
ALICE, ALICE_PASSWORD = "alice", "alice-Secret-3141"
BOB = "bob"
# The passphrase of pggate's encrypted client key (sslpassword): must never be logged.
KEY_PASSPHRASE = "sslpass-Secret-2718"

BACKEND_HBA = f"""\
hostssl all {PGGATE_ROLE} 127.0.0.1/32 cert
hostssl all all 127.0.0.1/32 scram-sha-256
"""


def scram_verifier(password: str, iterations: int) -> str:
    """A pg_authid SCRAM-SHA-256 verifier (RFC 5802/7677, as PostgreSQL stores it), made here
    with hashlib so the iteration count is ours to choose."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


BACKEND_ROLES = (
    f"CREATE ROLE {PGGATE_ROLE} SUPERUSER LOGIN",
    f"CREATE ROLE {PASSWORD_ROLE} SUPERUSER LOGIN PASSWORD "
    f"'{scram_verifier(PASSWORD_ROLE_SECRET, PASSWORD_ROLE_ITERATIONS)}'",
    f"CREATE ROLE {ALICE} LOGIN PASSWORD '{ALICE_PASSWORD}'",
    f"CREATE ROLE {BOB} LOGIN",
)
# pggate's own pg_hba.conf: bob trusted (no look-up, straight to his backend login), everyone
# else SCRAM (the verifier is read from the backend as pggate's role, then passed through).
GATEWAY_HBA = f"""\
host all {BOB} 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


@dataclass(frozen=True)
class BackendPki:
    """The certificate set, in ``directory`` (readable by root, which pggate runs as)."""

    directory: Path
    ca: Path
    other_ca: Path
    server_crt: Path
    server_key: Path
    interceptor_crt: Path  # another certificate for localhost from the same CA
    interceptor_key: Path
    client_crt: Path  # CN=pggate, for the backend's cert method
    client_key: Path
    client_key_encrypted: Path  # the same key under KEY_PASSPHRASE
    revoked_crl: Path  # the CA's CRL listing the server certificate
    clean_crl: Path  # the CA's CRL listing nothing
    revoked_crl_dir: Path  # revoked_crl as OpenSSL's <issuer-hash>.r0
    clean_crl_dir: Path


def crl_hash_name(crl: Path) -> str:
    """``<hash>.r0``, the issuer-name hash OpenSSL's hash-dir lookup uses, from the openssl
    tool when there is one (an oracle independent of pggate.tls.certs), else pggate's."""
    tool = shutil.which("openssl")
    if tool is None:
        return f"{certs.name_hash(certs.load_crl(crl).issuer)}.r0"
    out = subprocess.run(
        [tool, "crl", "-hash", "-noout", "-in", str(crl)],
        capture_output=True,
        text=True,
        check=True,
    )
    return f"{out.stdout.strip()}.r0"


def make_backend_pki(directory: Path) -> BackendPki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = certs.make_ca("pggate backend-hop test CA")
    other_cert, _ = certs.make_ca("pggate backend-hop untrusted CA")
    server_cert, server_key = certs.make_server_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"])
    mitm_cert, mitm_key = certs.make_server_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"])
    client_cert, client_key = certs.make_client_cert(ca_cert, ca_key, PGGATE_ROLE)
    paths = {
        name: directory / name
        for name in ("ca.crt", "other_ca.crt", "server.crt", "server.key", "client.crt")
    }
    certs.write_cert(paths["ca.crt"], ca_cert)
    certs.write_cert(paths["other_ca.crt"], other_cert)
    certs.write_cert(paths["server.crt"], server_cert)
    certs.write_key(paths["server.key"], server_key)
    certs.write_cert(directory / "interceptor.crt", mitm_cert)
    certs.write_key(directory / "interceptor.key", mitm_key)
    certs.write_cert(paths["client.crt"], client_cert)
    certs.write_key(directory / "client.key", client_key)
    certs.write_key(directory / "client-encrypted.key", client_key, KEY_PASSPHRASE.encode())
    crl_dirs = {}
    for stem, serials in (("revoked", [server_cert.serial_number]), ("clean", [])):
        crl_file = directory / f"{stem}.crl"
        certs.write_crl(crl_file, certs.revoke(ca_cert, ca_key, None, serials))
        crl_dir = directory / f"{stem}-crldir"
        crl_dir.mkdir()
        shutil.copyfile(crl_file, crl_dir / crl_hash_name(crl_file))
        crl_dirs[stem] = crl_dir
    return BackendPki(
        directory=directory,
        ca=paths["ca.crt"],
        other_ca=paths["other_ca.crt"],
        server_crt=paths["server.crt"],
        server_key=paths["server.key"],
        interceptor_crt=directory / "interceptor.crt",
        interceptor_key=directory / "interceptor.key",
        client_crt=paths["client.crt"],
        client_key=directory / "client.key",
        client_key_encrypted=directory / "client-encrypted.key",
        revoked_crl=directory / "revoked.crl",
        clean_crl=directory / "clean.crl",
        revoked_crl_dir=crl_dirs["revoked"],
        clean_crl_dir=crl_dirs["clean"],
    )


@contextlib.contextmanager
def temporary_directory(prefix: str) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- the TLS backend --------------------------------------------------------------------------


@dataclass
class TlsBackend:
    """A PostgreSQL with ``ssl = on`` on 127.0.0.1 (TCP: hostssl lines only)."""

    cluster: TcpCluster

    @property
    def port(self) -> int:
        return self.cluster.port

    def log(self) -> str:
        return self.cluster.log_path.read_text(errors="replace")

    def query(self, sql: str) -> list[tuple[object, ...]]:
        """As the superuser over the private Unix socket (trust there)."""
        with psycopg.connect(self.cluster.conninfo, autocommit=True) as conn:
            return conn.execute(sql.encode()).fetchall()


@contextlib.contextmanager
def tls_backend(bindir: Path, pki: BackendPki) -> Iterator[TlsBackend]:
    """Start PostgreSQL from ``bindir`` with the PKI's server certificate, the CA for client
    certificates, log_connections, and BACKEND_HBA; create BACKEND_ROLES."""

    def install(cluster: TcpCluster, base: Path) -> str:
        for name, source in (
            ("server.crt", pki.server_crt),
            ("server.key", pki.server_key),
            ("ca.crt", pki.ca),
        ):
            owned_copy(source, cluster.data_dir / name, cluster.run_as)
        return (
            "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
            "ssl_ca_file = 'ca.crt'\nlog_connections = on\n"
            "password_encryption = 'scram-sha-256'\n"
        )

    with reference_server(bindir, hba=BACKEND_HBA, prepare=install) as cluster:
        backend = TlsBackend(cluster)
        with psycopg.connect(cluster.conninfo, autocommit=True) as conn:
            for statement in BACKEND_ROLES:
                conn.execute(statement.encode())
        yield backend


ConninfoValue = str | int | Path


def conninfo(**values: ConninfoValue) -> str:
    """A keyword/value conninfo (the values used here need no quoting)."""
    for value in values.values():
        assert " " not in str(value) and "'" not in str(value), value
    return " ".join(f"{key}={value}" for key, value in values.items())


def cert_conninfo(pki: BackendPki, port: int, **overrides: ConninfoValue | None) -> str:
    """pggate's role with its client certificate, verify-full to ``localhost`` (reached at
    127.0.0.1), connect_timeout 2 s; ``overrides`` change or add keywords, None drops one."""
    values: dict[str, ConninfoValue | None] = {
        "host": "localhost",
        "hostaddr": "127.0.0.1",
        "port": port,
        "user": PGGATE_ROLE,
        "dbname": "postgres",
        "sslmode": "verify-full",
        "sslrootcert": pki.ca,
        "sslcert": pki.client_crt,
        "sslkey": pki.client_key,
        "connect_timeout": 2,
    }
    values.update(overrides)
    return conninfo(**{key: value for key, value in values.items() if value is not None})


# --- gateways ---------------------------------------------------------------------------------


class GatewayStarter(Protocol):
    def __call__(self, backend_conninfo: str, conf: str = "") -> Gateway: ...


@contextlib.contextmanager
def gateway_starter(root: Path) -> Iterator[GatewayStarter]:
    """``start(conninfo, conf)`` starts pggate in front of that backend (``conf``: more
    pggate.conf lines), or returns the one already started with the same two (tests only add
    to a gateway's log and read what came after their own mark); all stopped at the end."""
    started: dict[tuple[str, str], Gateway] = {}

    def start(backend_conninfo: str, conf: str = "") -> Gateway:
        known = started.get((backend_conninfo, conf))
        if known is not None and known.process.poll() is None:
            return known
        directory = root / f"gw{len(started)}"
        while directory.exists():
            directory = directory.with_name(directory.name + "x")
        port = prepare_gateway_dir(directory, backend_conninfo, hba=GATEWAY_HBA, conf=conf)
        gateway = start_gateway(directory, port=port)
        started[backend_conninfo, conf] = gateway
        return gateway

    try:
        yield start
    finally:
        for gateway in started.values():
            gateway.stop()


# --- clients ----------------------------------------------------------------------------------


def client_dsn(gateway: Gateway, user: str = ALICE, password: str = ALICE_PASSWORD) -> str:
    return gateway.dsn(user=user, password=password, connect_timeout="15")


def query_as_client(gateway: Gateway, sql: str, user: str = ALICE) -> tuple[object, ...]:
    """One row of ``sql``, run through pggate as ``user`` (alice logs in with SCRAM)."""
    password = ALICE_PASSWORD if user == ALICE else ""
    with psycopg.connect(client_dsn(gateway, user, password)) as conn:
        row = conn.execute(sql.encode()).fetchone()
    assert row is not None
    return tuple(row)


def refusal(port: int, user: str = ALICE, password: str | None = ALICE_PASSWORD) -> tuple[str, str]:
    """(SQLSTATE, message) of a refused login through pggate, read with asyncpg (libpq does
    not expose the SQLSTATE of a failed connection)."""
    return login_error(port, user, password=password)


# --- what pggate logged, what libpq says ------------------------------------------------------

_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC \[\d+\] ")
_PGGATE_WHERE = re.compile(
    r"^(?:catalog login as '[^']*' failed: )?"
    r"(?:connection to host \"[^\"]*\"(?: \([^)]*\))? port \d+ failed: )?"
)
_LIBPQ_WHERE = re.compile(
    r"^(?:connection failed: )?connection to server at \"[^\"]*\"(?: \([^)]*\))?, "
    r"port \d+ failed: "
)


def details(log: str) -> list[str]:
    """Every DETAIL of pggate's log, continuation lines included (without the tab that, as
    elog.c's append_with_tabs, follows each newline of a message in the log)."""
    found: list[str] = []
    in_detail = False
    for line in log.splitlines():
        stamp = _STAMP.match(line)
        if stamp is None:
            if in_detail:
                found[-1] += "\n" + line.removeprefix("\t")
            continue
        rest = line[stamp.end() :]
        in_detail = rest.startswith("DETAIL:  ")
        if in_detail:
            found.append(rest.removeprefix("DETAIL:  "))
    return found


def wait_for_detail(gateway: Gateway, before: int, timeout: float = 10.0) -> str:
    """The first DETAIL pggate logged after the first ``before`` ones (a session logs its
    FATAL as it ends, maybe after the client has read the error), without the line that
    names the pg_hba.conf line the client matched (PostgreSQL's "Connection matched ...",
    which pggate adds to a failed password login's DETAIL)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = gateway.log()
        found = details(log) if log.endswith("\n") else []  # whole records only
        if len(found) > before:
            lines = found[before].splitlines()
            return "\n".join(line for line in lines if not line.startswith("Connection matched "))
        time.sleep(0.05)
    raise TimeoutError(f"no new DETAIL in the log:\n{gateway.log()}")


def pggate_reason(detail: str) -> str:
    """A DETAIL without pggate's "catalog login as ..." and "connection to host ..." words."""
    return _PGGATE_WHERE.sub("", detail, count=1)


def libpq_reason(dsn: str) -> str:
    """libpq's own text for a connection that fails, without the "connection to server at"
    words and without its tab-indented hint lines."""
    try:
        psycopg.connect(dsn).close()
    except psycopg.OperationalError as exc:
        text = _LIBPQ_WHERE.sub("", str(exc), count=1)
        return "\n".join(line for line in text.splitlines() if not line.startswith("\t"))
    raise AssertionError("libpq connected")


# --- a backend that misbehaves ----------------------------------------------------------------

SSL_REQUEST = struct.pack("!II", 8, 80877103)
HOSTILE_ITERATIONS = 10_000_000


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def _read_packet(sock: socket.socket, typed: bool) -> tuple[bytes, bytes]:
    """(type, body) of one message; a startup-style packet has no type byte (b"")."""
    kind = _recv_exactly(sock, 1) if typed else b""
    (length,) = struct.unpack("!I", _recv_exactly(sock, 4))
    return kind, _recv_exactly(sock, length - 4)


def _auth(code: int, payload: bytes = b"") -> bytes:
    body = struct.pack("!I", code) + payload
    return b"R" + struct.pack("!I", len(body) + 4) + body


@dataclass
class FakeBackend:
    """A TCP server on 127.0.0.1 that acts as ``mode`` says, per connection (read at accept):

    - ``relay``: forwards both ways to ``relay_port`` (a real server: it behaves);
    - ``refuse``: closes the connection at once, before reading anything;
    - ``close_after_s`` / ``reset_after_s``: answers SSLRequest with ``S``, then closes (FIN)
      or resets (RST) instead of the TLS handshake;
    - ``garbage_after_s``: answers ``S``, then sends bytes that are no TLS record;
    - ``stall_after_s``: answers ``S``, then never says a word (mid-handshake);
    - ``refuse_ssl``: answers SSLRequest with ``N`` (a server without TLS);
    - ``stall``: never answers the SSLRequest;
    - ``hostile_scram``: a plaintext server (``N`` to an SSLRequest) that asks for
      SCRAM-SHA-256 and then demands HOSTILE_ITERATIONS iterations; ``scram_replies`` counts
      the client-final messages it received (a capped client sends none).
    """

    relay_port: int | None = None
    mode: str = "relay"
    accepted: int = 0
    scram_replies: int = 0
    hostile_closed_after: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = [self._listener]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                mode = self.mode
            self._track(conn)
            thread = threading.Thread(target=self._serve, args=(conn, mode), daemon=True)
            with self._lock:
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, mode: str) -> None:
        conn.settimeout(30)
        try:
            if mode == "relay":
                self._relay(conn)
            elif mode == "refuse":
                conn.close()
            elif mode == "hostile_scram":
                self._hostile_scram(conn)
            else:
                self._misbehave(conn, mode)
        except OSError:
            pass
        finally:
            conn.close()

    def _misbehave(self, conn: socket.socket, mode: str) -> None:
        assert _recv_exactly(conn, 8) == SSL_REQUEST
        if mode == "stall":
            self._stop.wait(30)
            return
        if mode == "refuse_ssl":
            conn.sendall(b"N")
            conn.recv(65536)  # until the client gives up (or sends a startup packet)
            return
        conn.sendall(b"S")
        if mode == "close_after_s":
            conn.shutdown(socket.SHUT_RDWR)
        elif mode == "reset_after_s":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif mode == "garbage_after_s":
            # Not with the 'S' (that would be "unencrypted data after SSL response"): after
            # the client's ClientHello, as if it were the server's answer.
            conn.recv(65536)
            conn.sendall(b"this is no TLS record\r\n" * 8)
            time.sleep(0.2)
        elif mode == "stall_after_s":
            self._stop.wait(30)
        else:
            raise AssertionError(f"unknown mode {mode!r}")

    def _relay(self, conn: socket.socket) -> None:
        assert self.relay_port is not None
        upstream = socket.create_connection(("127.0.0.1", self.relay_port), timeout=30)
        self._track(upstream)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    dst.sendall(data)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
        back.start()
        pump(conn, upstream)
        back.join(timeout=30)
        upstream.close()

    def _hostile_scram(self, conn: socket.socket) -> None:
        _, body = _read_packet(conn, typed=False)
        if body == SSL_REQUEST[4:]:
            conn.sendall(b"N")
            _read_packet(conn, typed=False)  # the startup packet
        conn.sendall(_auth(10, b"SCRAM-SHA-256\0\0"))
        kind, body = _read_packet(conn, typed=True)
        assert kind == b"p", kind
        mechanism, _, rest = body.partition(b"\0")
        assert mechanism == b"SCRAM-SHA-256", mechanism
        first = rest[4:].decode()
        client_nonce = first.split("r=", 1)[1].split(",", 1)[0]
        salt = base64.b64encode(os.urandom(16)).decode()
        challenge = f"r={client_nonce}hostileServerNonce,s={salt},i={HOSTILE_ITERATIONS}"
        sent = time.monotonic()
        conn.sendall(_auth(11, challenge.encode()))
        try:
            kind, _ = _read_packet(conn, typed=True)
        except (ConnectionError, OSError):
            with self._lock:
                self.hostile_closed_after.append(time.monotonic() - sent)
            return
        with self._lock:
            self.scram_replies += 1

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            sockets = list(self._sockets)
            threads = list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in threads:
            thread.join(timeout=5)


# --- a man in the middle ----------------------------------------------------------------------


class TlsInterceptor:
    """A man in the middle between pggate and the backend, on 127.0.0.1: it answers pggate's
    SSLRequest and completes the handshake with its own certificate (``server_context``: one
    the same CA signed, so even verify-full accepts it), opens its own TLS link to the real
    server at ``target_port`` (``client_context``: presenting pggate's client certificate, so
    the ``cert`` login still works), and relays the plaintext both ways. Only channel binding
    can tell: pggate binds SCRAM to the interceptor's certificate, the backend to its own."""

    def __init__(
        self, target_port: int, server_context: ssl.SSLContext, client_context: ssl.SSLContext
    ) -> None:
        self.target_port = target_port
        self.server_context = server_context
        self.client_context = client_context
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise TimeoutError("the interceptor did not start")

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        try:
            assert await reader.readexactly(8) == SSL_REQUEST
            writer.write(b"S")
            await writer.drain()
            await writer.start_tls(self.server_context)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._writers.append(up_writer)
            up_writer.write(SSL_REQUEST)
            await up_writer.drain()
            assert await up_reader.readexactly(1) == b"S"
            await up_writer.start_tls(self.client_context)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        await asyncio.sleep(0)
        await self._server.wait_closed()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def interceptor_contexts(pki: BackendPki) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server side with the interceptor's certificate, client side with pggate's)."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.interceptor_crt, pki.interceptor_key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.load_cert_chain(pki.client_crt, pki.client_key)
    return server, client
