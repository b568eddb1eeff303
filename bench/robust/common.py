"""What every robustness scenario shares: the servers, the canary, the result row.

The servers are a PostgreSQL 15 cluster of the runner's own (``Env.cluster``) and, per scenario,
a fresh pggate in front of it (``Env.pggate``: ``ssl = on``, backend over the Unix socket), both
set up with the helpers of bench/run.py in a temporary directory. The *canary* is a real client
(psycopg) that logs in over TLS and runs ``select 1`` every 100 ms while a scenario runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
from bench import run as bench_run

from pggate import embedded

log = bench_run.log
CANARY_PERIOD = 0.1
CANARY_LOGIN_LIMIT = 1.0
RSS_LIMIT = 10 * 2**20
FD_RESERVE = 64
BACKEND_MAX_CONNECTIONS = 2300  # the cluster's max_connections
BAD_LOG = re.compile(r"internal error|unexpected error|traceback", re.I)


# --------------------------------------------------------------------------- the canary


@dataclass
class Canary:
    """Logs in over TLS and runs ``select 1`` every 100 ms, in a thread, until stopped."""

    conninfo: str
    logins: int = 0
    failures: list[str] = field(default_factory=list)
    failure_times: list[float] = field(default_factory=list)  # time.monotonic() of each
    worst_login: float = 0.0
    worst_total: float = 0.0
    slow_logins: int = 0
    slow_times: list[float] = field(default_factory=list)  # time.monotonic() of each
    worst_at: float = 0.0  # when the slowest login began
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    login = time.monotonic() - start
                    row = conn.execute("select 1").fetchone()
                    if row != (1,):
                        raise RuntimeError(f"select 1 returned {row!r}")
                    if conn.pgconn.ssl_in_use is not True:
                        raise RuntimeError("canary session without TLS")
            except Exception as exc:  # every failure is a lost canary login
                self.failures.append(f"{type(exc).__name__}: {str(exc).strip()[:200]}")
                self.failure_times.append(start)
            else:
                self.logins += 1
                if login > self.worst_login:
                    self.worst_login, self.worst_at = login, start
                self.worst_total = max(self.worst_total, time.monotonic() - start)
                if login >= CANARY_LOGIN_LIMIT:
                    self.slow_logins += 1
                    self.slow_times.append(start)
            next_tick = max(next_tick + CANARY_PERIOD, time.monotonic())
            self._stop.wait(next_tick - time.monotonic())

    @contextlib.contextmanager
    def running(self) -> Iterator[Canary]:
        self._thread = threading.Thread(target=self._loop, name="canary", daemon=True)
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(30)

    def latency(self) -> str:
        return (
            f"login {self.worst_login * 1000:.0f} ms, login+select {self.worst_total * 1000:.0f} ms"
        )

    def lost(self) -> str:
        return f"{len(self.failures)} of {self.logins + len(self.failures)} canary logins"


# --------------------------------------------------------------------------- the servers


@dataclass
class Env:
    base: Path
    tls: tuple[Path, Path, Path]
    cluster: bench_run.BenchCluster
    keep: bool

    @contextlib.contextmanager
    def pggate(self, name: str, settings: list[str], hba: str | None = None) -> Iterator[Gate]:
        """A fresh pggate for one scenario (its directory: BASE/NAME/pggate)."""
        (self.base / name).mkdir(mode=0o755)
        proc, port, log_path = bench_run.start_pggate(
            self.base / name, self.tls, self.cluster, 200, settings
        )
        try:
            gate = Gate(proc, port, log_path, self.tls[0])
            if hba is not None:
                (log_path.parent / "pg_hba.conf").write_text(hba)
                proc.send_signal(signal.SIGHUP)
                time.sleep(1.0)  # the reload is done on pggate's event loop
            yield gate
        finally:
            bench_run.stop_process(proc, signal.SIGINT, 60)


@dataclass
class Gate:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    ca_file: Path

    def __post_init__(self) -> None:
        self.pids = self.tree_pids()

    def tree_pids(self) -> list[int]:
        return sorted(p.pid for p in bench_run.process_tree(self.proc.pid))

    def alive_same(self) -> bool:
        """Still running, the same process(es): no crash, no restart."""
        return self.proc.poll() is None and self.tree_pids() == self.pids

    def rss(self) -> int:
        total = 0
        for p in bench_run.process_tree(self.proc.pid):
            with contextlib.suppress(psutil.Error):
                total += int(p.memory_info().rss)
        return total

    def fds(self) -> int:
        total = 0
        for p in bench_run.process_tree(self.proc.pid):
            with contextlib.suppress(psutil.Error):
                total += int(p.num_fds())
        return total

    def bad_log_lines(self) -> list[str]:
        text = self.log_path.read_text(errors="replace")
        return [line for line in text.splitlines() if BAD_LOG.search(line)]

    def canary(self) -> Canary:
        return Canary(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres sslmode=require "
            f"sslrootcert={self.ca_file} gssencmode=disable connect_timeout=5"
        )


@contextlib.contextmanager
def environment(keep: bool) -> Iterator[Env]:
    with contextlib.ExitStack() as stack:
        base = Path(tempfile.mkdtemp(prefix="pggate-robustness-"))
        os.chmod(base, 0o755)
        if keep:
            stack.callback(log, f"kept {base}")
        else:
            stack.callback(shutil.rmtree, base, True)
        tls = bench_run.make_certs(base, "ec")
        log(f"PostgreSQL: initdb + start in {base / 'pg'}")
        # room for churn's 2,000 idle sessions + its cycles + the canary (slow_readers: 1,001)
        cluster = bench_run.start_postgres(
            base, tls, BACKEND_MAX_CONNECTIONS, embedded.run_as_user()
        )
        stack.callback(cluster.stop, "fast", 120)
        yield Env(base, tls, cluster, keep)


# --------------------------------------------------------------------------- fuzz inputs

SSL_REQUEST = struct.pack("!II", 8, 80877103)
GSSENC_REQUEST = struct.pack("!II", 8, 80877104)
INTERESTING = (0, 1, 4, 7, 8, 9, 16, 127, 128, 255, 10000, 10001, 65535, 2**31 - 1, 2**32 - 1)


def startup(version: int = 196608, **params: str) -> bytes:
    body = struct.pack("!I", version)
    body += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


def message(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("!I", len(body) + 4) + body


@dataclass
class Row:
    """One line of the runner's table; the scenario passed when it has no problems."""

    scenario: str
    load: str
    lost: str
    latency: str
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems


async def open_or_none(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A TCP connection to pggate, or None when it cannot be opened."""
    try:
        return await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
