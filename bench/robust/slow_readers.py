"""Scenario 6, ``slow_readers``: clients that ask for a ~1 GB result and stop reading it.

First one such client, then ``--stalled`` more at once (1,000 in the full run). Each logs in
over TLS (SSLRequest, then a TLS handshake against the runner's CA, as the canary does), sends
``select repeat('x', 1000), generate_series(1, 1000000)`` (a ProjectSet: the backend streams
the rows as it makes them, nothing is materialized or spilled to disk) and reads nothing more
than the first bytes, keeping its socket open: its kernel buffers fill, then pggate's write
buffer towards it, and pggate must stop reading from the backend.

What must hold:

* back-pressure reaches PostgreSQL: every stalled client's backend waits on ``ClientWrite``
  (pg_stat_activity), and together they use (almost) no CPU while stalled;
* pggate's memory is bounded per connection: its RSS grows by at most ``PER_CONN_BOUND``
  (800 KiB, see below) per stalled session plus the allocator's fixed ``ALLOCATOR_SLACK``
  (2 MiB), for the single one and for the crowd, and does not keep growing while they stay
  stalled (two samples ``--stall-seconds`` apart, ``STALL_DRIFT``);
* other sessions are unaffected: every canary login succeeds in under 1 s, and a normal
  client's queries (including a 20 MB result) return the right rows, in under 5 s;
* when the stalled clients go, so do their backends, and pggate is the same process with no
  internal-error line in its log.

The bound, 800 KiB per stalled TLS session. pggate relays a session's backend-to-client bytes
without parsing them (src/pggate/server/relay.py). On uvloop one read hands over at most
256,000 bytes (uvloop's receive buffer); the client's end encrypts it in one go
(``TlsChannel.encrypt``: one ``SSLObject.write`` into a ``MemoryBIO``, read out whole) and
writes the records to the client's transport, which asks to pause (``pause_writing``, then the
backend's ``pause_reading``) once its buffer exceeds ``HIGH_WATER`` = 256 KiB. So a stalled
session holds: up to HIGH_WATER plus one read's worth of ciphertext in the transport (~256 +
250 KiB), the outgoing MemoryBIO's memory, which OpenSSL never shrinks (BUF_MEM keeps its
largest size: up to one read, ~250 KiB, for the session's lifetime), and the session's own
state (~16 KiB measured for an idle TLS session: SSL object, transports, protocols). That is
~775 KiB at worst; 800 KiB with the allocator's rounding.

The kernel's socket buffers are not pggate's RSS and are not counted against the bound, but
they are reported: on loopback (MSS 64 KiB) each of pggate's sockets to a stalled client
autotunes its send buffer up to tcp_wmem's max (4 MiB by default) and fills it, as
PostgreSQL's own backend sockets do for stalled direct clients. A thousand stalled clients
then ask for ~4 GiB of TCP buffers, more than tcp_mem's default maximum (3/32 of RAM: 2.2 GiB
with 24 GiB), and the kernel's TCP memory pressure slows every TCP connection on the machine
(the canary's, the normal client's); PostgreSQL alone, with 1,000 stalled direct clients, was
measured slowing a normal client's 20 MB fetch from 0.5 s to 18-39 s. So the run sets pggate's
``tcp_socket_buffer`` (``--socket-buffer``, 256 kB: the kernel doubles it, 512 KiB of send
buffer per client instead of up to 4 MiB), as an operator expecting such clients would; with
``--socket-buffer 0`` the kernel's autotuning is back, and the problems say when its memory
pressure set in.

Since the TLS channel feeds and encrypts through its memory BIOs in 64 KiB slices
(src/pggate/transport/tls.py), the BIO part of the bound is ~64 KiB rather than a whole read.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from bench import run as bench_run
from bench.robust.common import (
    CANARY_LOGIN_LIMIT,
    SSL_REQUEST,
    Canary,
    Env,
    Gate,
    Row,
    log,
    message,
    startup,
)

NAME = "slow_readers"
APP = "pggate_slow_reader"  # application_name of the stalled sessions (to find their backends)
ROWS = 1_000_000  # x ~1,030 bytes a DataRow: a ~1 GB result
QUERY = f"select repeat('x', 1000), generate_series(1, {ROWS})"
FIRST_BYTES = 16384  # what a client that reads "a little" reads: one recv
PER_CONN_BOUND = 800 * 1024  # bytes of pggate RSS per stalled session (see the docstring)
# glibc's malloc keeps freed memory at its heap top (up to M_TRIM_THRESHOLD, which it raises to
# twice the largest mmapped chunk freed: 2 x 256 KB reads here) and in its arenas: a wave's
# RSS growth may include a fixed amount however few sessions it has (1 stalled: 268 to 1,088
# KiB measured).
ALLOCATOR_SLACK = 2 * 2**20
STALL_DRIFT = 4 * 2**20  # RSS growth allowed between the two samples of the stall
STALL_CPU = 0.05  # CPU seconds per wall second all stalled backends may use together
NORMAL_LIMIT = 5.0  # seconds for the normal client's queries
OPEN_THREADS = 32  # stalled clients logging in at a time
OPEN_RATE = 50.0  # stalled clients logging in per second, at most
CLOSE_RATE = 200.0  # stalled clients closing per second, at most
SETUP_TIMEOUT = 30.0  # seconds a stalled client may take to log in and send its query
WAIT_TIMEOUT = 120.0  # seconds for the backends to block on ClientWrite (or to go after)
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- a stalled client


def tls_context(ca_file: Path) -> ssl.SSLContext:
    """libpq's sslmode=require with a root certificate: the chain is verified, not the name."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.check_hostname = False
    return ctx


def recv_exact(sock: ssl.SSLSocket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("pggate closed the connection")
        buf += chunk
    return buf


def read_until_ready(sock: ssl.SSLSocket) -> None:
    """Read the login's answer up to ReadyForQuery; an ErrorResponse is a failure."""
    while True:
        head = recv_exact(sock, 5)
        body = recv_exact(sock, struct.unpack("!I", head[1:])[0] - 4)
        if head[:1] == b"E":
            raise ConnectionError(body.replace(b"\0", b" ").decode(errors="replace")[:200])
        if head[:1] == b"Z":
            return


def stall_one(port: int, ctx: ssl.SSLContext, reads: bool) -> ssl.SSLSocket:
    """Log in over TLS, send QUERY, read the first bytes (``reads``) or none, and stop: the
    socket is returned open and is never read again."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=SETUP_TIMEOUT)
    try:
        raw.sendall(SSL_REQUEST)
        if raw.recv(1) != b"S":
            raise ConnectionError("pggate refused SSLRequest")
        sock = ctx.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise
    try:
        sock.sendall(startup(user="postgres", database="postgres", application_name=APP))
        read_until_ready(sock)
        sock.sendall(message(b"Q", QUERY.encode() + b"\0"))
        if reads and not sock.recv(FIRST_BYTES):
            raise ConnectionError("pggate closed the connection")
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class Stalled:
    """The stalled clients' sockets (kept open, never read) and the failures to set one up."""

    socks: list[ssl.SSLSocket] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def open(self, port: int, ctx: ssl.SSLContext, count: int) -> None:
        """``count`` stalled clients, OPEN_THREADS at a time and at most OPEN_RATE a second;
        every other one reads nothing. The rate keeps this a test of stalled readers, not of a
        burst of TLS handshakes (the flood scenario's subject): at ~140 handshakes a second,
        pggate, 1,000 forking backends and the clients' threads share 2 cores, and a canary
        login waits behind them for over a second."""
        start = time.monotonic()

        def one(i: int) -> None:
            time.sleep(max(0.0, start + i / OPEN_RATE - time.monotonic()))
            try:
                self.socks.append(stall_one(port, ctx, reads=i % 2 == 1))
            except OSError as exc:  # ConnectionError, ssl.SSLError, TimeoutError
                self.failures.append(f"{type(exc).__name__}: {exc}")

        with ThreadPoolExecutor(OPEN_THREADS) as pool:
            list(pool.map(one, range(count)))

    def close(self) -> None:
        """Close them all, at most CLOSE_RATE a second: 1,000 at once (1,000 backends exiting
        together) made one canary login take 1.0-1.3 s in three full runs out of four, a burst
        of disconnections that is churn's subject, not this scenario's."""
        start = time.monotonic()
        for i, sock in enumerate(self.socks):
            time.sleep(max(0.0, start + i / CLOSE_RATE - time.monotonic()))
            with contextlib.suppress(OSError):
                sock.close()  # unread bytes: the kernel answers with a reset
        self.socks.clear()


# --------------------------------------------------------------------------- the backends


def backend_pids(conninfo: str) -> list[int]:
    """The stalled clients' backends that wait on writing to pggate (ClientWrite)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "select pid from pg_stat_activity where application_name = %s "
            "and wait_event = 'ClientWrite'",
            (APP,),
        ).fetchall()
    return [pid for (pid,) in rows]


def backends_left(conninfo: str) -> int:
    """The stalled clients' backends still there, whatever they wait on."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity where application_name = %s", (APP,)
        ).fetchone()
    return int(row[0]) if row else -1


def wait_until(value: Callable[[], int], done: Callable[[int], bool], timeout: float) -> int:
    """Poll ``value`` until ``done`` says so or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    current = value()
    while not done(current) and time.monotonic() < deadline:
        time.sleep(0.5)
        current = value()
    return current


# --------------------------------------------------------------------------- the kernel


def kernel_tcp_bytes() -> int:
    """Memory in the kernel's TCP socket buffers, all sockets (/proc/net/sockstat)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("mem") + 1]) * PAGE
    return 0


def tcp_mem_limit() -> int:
    """The kernel's limit for all TCP socket buffers (net.ipv4.tcp_mem, its third value)."""
    return int(Path("/proc/sys/net/ipv4/tcp_mem").read_text().split()[2]) * PAGE


def tcp_pressures() -> int:
    """How often the kernel has entered TCP memory pressure (TcpExt TCPMemoryPressures)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            table = dict(zip(head.split()[1:], values.split()[1:], strict=False))
            return int(table.get("TCPMemoryPressures", "0"))
    return 0


# --------------------------------------------------------------------------- the others


def normal_client(conninfo: str) -> tuple[float, str | None]:
    """A normal session's few queries: (seconds taken, what went wrong or None)."""
    start = time.monotonic()
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            one = conn.execute("select 1").fetchone()
            count = conn.execute("select count(*) from generate_series(1, 1000000)").fetchone()
            rows = conn.execute("select repeat('y', 1000), generate_series(1, 20000)").fetchall()
    except psycopg.Error as exc:
        return time.monotonic() - start, f"{type(exc).__name__}: {str(exc).strip()[:200]}"
    secs = time.monotonic() - start
    if one != (1,) or count != (1000000,):
        return secs, f"wrong answers {one!r}, {count!r}"
    if len(rows) != 20000 or rows[-1] != ("y" * 1000, 20000):
        return secs, f"wrong 20 MB result ({len(rows)} rows)"
    return secs, None


@dataclass
class Phase:
    """One wave of stalled clients: what was measured."""

    count: int
    opened: int = 0
    waiting: int = 0  # backends on ClientWrite (all waves so far)
    rss_before: int = 0
    rss_stalled: int = 0  # once every backend waits
    rss_later: int = 0  # --stall-seconds later
    backend_cpu: float = 0.0  # CPU seconds of the waiting backends between the two samples
    gate_cpu: float = 0.0  # pggate's CPU seconds a second meanwhile (canary, normal client)
    tcp_before: int = 0  # bytes in the kernel's TCP buffers (all sockets)
    tcp_stalled: int = 0
    pressures: int = 0  # times the kernel entered TCP memory pressure during the wave
    normal_secs: float = 0.0
    normal_error: str | None = None
    open_secs: float = 0.0  # to log in and send the query, all of them
    block_secs: float = 0.0  # then until every backend waits on ClientWrite

    def growth(self) -> int:
        return self.rss_stalled - self.rss_before

    def per_conn(self) -> float:
        """pggate's RSS growth per stalled session, sampled before the normal client runs
        (its 20 MB result grows the allocator's heap; STALL_DRIFT covers that)."""
        return self.growth() / max(self.count, 1)


def stall_wave(
    gate: Gate, env: Env, stalled: Stalled, count: int, seconds: float, conninfo: str
) -> Phase:
    """Add ``count`` stalled clients, wait until all backends block, sample pggate's RSS, let
    them stall ``seconds``, sample again, and run the normal client meanwhile."""
    phase = Phase(count, rss_before=gate.rss(), tcp_before=kernel_tcp_bytes())
    pressures = tcp_pressures()
    before, start = len(stalled.socks), time.monotonic()
    stalled.open(gate.port, tls_context(gate.ca_file), count)
    phase.opened, phase.open_secs = len(stalled.socks) - before, time.monotonic() - start
    expected = len(stalled.socks)
    phase.waiting = wait_until(
        lambda: len(backend_pids(env.cluster.conninfo)),
        lambda n: n >= expected,
        WAIT_TIMEOUT,
    )
    phase.block_secs = time.monotonic() - start - phase.open_secs
    time.sleep(1.0)  # the last buffers fill after the backend blocks
    phase.rss_stalled, phase.tcp_stalled = gate.rss(), kernel_tcp_bytes()
    waiting = backend_pids(env.cluster.conninfo)
    cpu, gate_cpu = bench_run.cpu_seconds(waiting), bench_run.cpu_seconds(gate.pids)
    start = time.monotonic()
    phase.normal_secs, phase.normal_error = normal_client(conninfo)
    time.sleep(max(0.0, seconds - phase.normal_secs))
    elapsed = time.monotonic() - start
    phase.backend_cpu = (bench_run.cpu_seconds(waiting) - cpu) / elapsed
    phase.gate_cpu = (bench_run.cpu_seconds(gate.pids) - gate_cpu) / elapsed
    phase.rss_later = gate.rss()
    phase.pressures = tcp_pressures() - pressures
    log(
        f"slow_readers: {expected} stalled (opened in {phase.open_secs:.1f} s, blocked "
        f"{phase.block_secs:.1f} s later), {phase.waiting} backends on ClientWrite, pggate RSS "
        f"{phase.rss_before / 2**20:.1f} -> {phase.rss_stalled / 2**20:.1f} -> "
        f"{phase.rss_later / 2**20:.1f} MiB ({phase.per_conn() / 1024:.0f} KiB per session), "
        f"pggate CPU {phase.gate_cpu:.2f} s/s, kernel TCP buffers "
        f"{phase.tcp_stalled / 2**30:.2f} GiB, {phase.pressures} TCP memory pressure(s)"
    )
    return phase


# --------------------------------------------------------------------------- the verdict


def kernel_note(phases: list[Phase]) -> str:
    """Why other sessions may have suffered outside pggate: the kernel's TCP memory pressure
    (each stalled client's socket in pggate autotunes its send buffer up to tcp_wmem's max)."""
    if not any(phase.pressures for phase in phases):
        return ""
    worst = max(phase.tcp_stalled for phase in phases)
    return (
        f" (the kernel was in TCP memory pressure: {worst / 2**30:.2f} GiB in TCP socket "
        f"buffers, tcp_mem max {tcp_mem_limit() / 2**30:.2f} GiB)"
    )


def phase_problems(phase: Phase, label: str, total: int) -> list[str]:
    problems = []
    if phase.opened != phase.count:
        problems.append(f"{label}: only {phase.opened} of {phase.count} clients stalled")
    if phase.waiting < total:
        problems.append(f"{label}: {phase.waiting} of {total} backends wait on ClientWrite")
    if phase.growth() > phase.count * PER_CONN_BOUND + ALLOCATOR_SLACK:
        problems.append(
            f"{label}: pggate RSS grew {phase.growth() / 2**20:.1f} MiB, "
            f"{phase.per_conn() / 1024:.0f} KiB per stalled session (bound "
            f"{PER_CONN_BOUND // 1024} KiB each + {ALLOCATOR_SLACK // 2**20} MiB)"
        )
    if phase.rss_later - phase.rss_stalled > STALL_DRIFT:
        problems.append(
            f"{label}: pggate RSS kept growing while stalled "
            f"({(phase.rss_later - phase.rss_stalled) / 2**20:+.1f} MiB)"
        )
    if phase.backend_cpu > STALL_CPU:
        problems.append(
            f"{label}: stalled backends used {phase.backend_cpu:.2f} CPU s/s (not paused?)"
        )
    note = kernel_note([phase])
    if phase.normal_error is not None:
        problems.append(f"{label}: normal client: {phase.normal_error}{note}")
    elif phase.normal_secs > NORMAL_LIMIT:
        problems.append(f"{label}: normal client took {phase.normal_secs:.1f} s{note}")
    return problems


def canary_problems(canary: Canary, note: str) -> list[str]:
    problems = []
    if canary.failures:
        problems.append(f"canary: {canary.failures[0]}{note}")
    if canary.slow_logins:
        problems.append(f"{canary.slow_logins} canary logins took >= {CANARY_LOGIN_LIMIT} s{note}")
    if not canary.logins:
        problems.append("no canary login at all")
    return problems


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stalled", type=int, help="stalled clients at once (quick 50, full 1,000)")
    p.add_argument(
        "--stall-seconds", type=float, help="how long they stay stalled (quick 5, full 20)"
    )

    p.add_argument(
        "--socket-buffer",
        default="256kB",
        help="pggate's tcp_socket_buffer for the run (default 256kB; 0: the kernel's autotuning)",
    )


def set_defaults(args: argparse.Namespace) -> None:
    args.stalled = args.stalled or (50 if args.quick else 1000)
    args.stall_seconds = args.stall_seconds or (5 if args.quick else 20)


def run(env: Env, args: argparse.Namespace) -> Row:
    crowd, seconds = args.stalled, args.stall_seconds
    settings = [f"max_connections = {crowd + 100}", f"tcp_socket_buffer = {args.socket_buffer}"]
    problems: list[str] = []
    stalled = Stalled()
    with env.pggate(NAME, settings) as gate:
        canary = gate.canary()
        log(f"slow_readers: 1 then {crowd:,} clients stall on a 1 GB result, {seconds:g} s")
        with canary.running():
            unloaded, _ = normal_client(canary.conninfo)  # also pggate's warm-up
            time.sleep(0.5)
            marks = [("start", time.monotonic())]
            try:
                one = stall_wave(gate, env, stalled, 1, seconds, canary.conninfo)
                marks.append(("crowd opening", time.monotonic()))
                many = stall_wave(gate, env, stalled, crowd, seconds, canary.conninfo)
            finally:
                marks.append(("closing", time.monotonic()))
                stalled.close()
            left = wait_until(lambda: backends_left(env.cluster.conninfo), lambda n: n == 0, 60)
            marks.append(("after", time.monotonic()))
        for what, at in [("slow", t) for t in canary.slow_times] + [("worst", canary.worst_at)]:
            phase = [name for name, mark in marks if mark <= at][-1]
            log(f"slow_readers: {what} canary login began {at - marks[0][1]:.1f} s in ({phase})")
        problems += phase_problems(one, "1 stalled", 1)
        problems += phase_problems(many, f"{crowd} stalled", 1 + crowd)
        problems += canary_problems(canary, kernel_note([one, many]))
        if stalled.failures:
            problems.append(f"stalled client: {stalled.failures[0]}")
        if left:
            problems.append(f"{left} backends still there after their clients went")
        alive = gate.alive_same()
        if not alive:
            problems.append(f"pggate died or restarted (exit {gate.proc.poll()})")
        bad = gate.bad_log_lines()
        if bad:
            problems.append(f"{len(bad)} internal-error log lines, e.g. {bad[0][:160]!r}")
    kernel = (many.tcp_stalled - many.tcp_before) / max(crowd, 1)
    return Row(
        NAME,
        f"1 then {crowd:,} TLS clients stalled on a {ROWS * 1030 / 1e9:.0f} GB result each, "
        f"{seconds:g} s; {many.waiting:,} backends on ClientWrite using "
        f"{many.backend_cpu:.3f} CPU s/s; pggate RSS +{one.per_conn() / 1024:.0f} KiB (1), "
        f"+{many.per_conn() / 1024:.0f} KiB per session ({crowd:,}), bound "
        f"{PER_CONN_BOUND // 1024} KiB; drift while stalled "
        f"{(many.rss_later - many.rss_stalled) / 2**20:+.1f} MiB; pggate CPU while stalled "
        f"{many.gate_cpu:.2f} s/s; kernel TCP buffers +{kernel / 2**20:.1f} MiB per session "
        f"({many.pressures} TCP memory pressure episodes)",
        f"{canary.lost()} ({canary.slow_logins} slower than 1 s); normal client "
        f"{'ok' if many.normal_error is None else 'FAILED'} in {many.normal_secs:.1f} s "
        f"({unloaded:.1f} s before any stall); "
        f"{'same pggate PID' if alive else 'pggate CRASHED'}; {len(bad)} internal errors",
        canary.latency(),
        problems,
    )
