"""pggate under attack, on loopback, in one run (issue 12, scenarios 1 and 2 so far).

Sets up, in a temporary directory removed at the end (also on Ctrl-C or error), a PostgreSQL 15
cluster of its own and, per scenario, a fresh pggate in front of it (``ssl = on``, backend over
the Unix socket), with the set-up helpers of bench/run.py. While a scenario runs, a *canary* (a
real client, psycopg) logs in over TLS (``sslmode=require``) and runs ``select 1`` every 100 ms.

* ``fuzz``: N generated inputs over raw TCP (mutations of StartupMessage, SSLRequest,
  GSSENCRequest, CancelRequest, password/SASL/MD5 messages after a startup, TLS ClientHellos,
  randomly split), many connections at once. Holds when pggate keeps its PID, every fuzz
  connection gets EOF within ``authentication_timeout`` (5 s), its log has no "internal error"
  line, its RSS grows by less than 10 MiB and every canary login succeeds.
* ``flood``: K silent connections and M that trickle a StartupMessage one byte a second.
  Holds when every canary login succeeds in under 1 s, pggate keeps its PID and its open file
  descriptors stay within ``max_startup_connections`` (+ a small reserve) of where they began.

Prints a markdown table (scenario | load applied | lost | worst canary latency | pass/fail) and
exits non-zero when a row fails.

    .venv/bin/python bench/robustness.py --quick          # ~40 s on 2 cores
    .venv/bin/python bench/robustness.py                  # 10^6 fuzz inputs, 5,000 + 500 flood
    .venv/bin/python bench/robustness.py --scenarios flood --keep
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import re
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import run as bench_run  # the set-up helpers of the benchmark

from pggate import embedded

log = bench_run.log
AUTH_TIMEOUT = 5  # seconds: pggate's authentication_timeout in the fuzz scenario
EOF_SLACK = 2.0  # seconds past authentication_timeout before a fuzz socket counts as left open
CANARY_PERIOD = 0.1
CANARY_LOGIN_LIMIT = 1.0
RSS_LIMIT = 10 * 2**20
FD_RESERVE = 64
BAD_LOG = re.compile(r"internal error|unexpected error|traceback", re.I)
FUZZ_HBA = (
    "hostssl all all 127.0.0.1/32 trust\n"
    "host all fuzz_pw 127.0.0.1/32 password\n"
    "host all fuzz_md5 127.0.0.1/32 md5\n"
    "host all fuzz_scram 127.0.0.1/32 scram-sha-256\n"
)


# --------------------------------------------------------------------------- the canary


@dataclass
class Canary:
    """Logs in over TLS and runs ``select 1`` every 100 ms, in a thread, until stopped."""

    conninfo: str
    logins: int = 0
    failures: list[str] = field(default_factory=list)
    worst_login: float = 0.0
    worst_total: float = 0.0
    slow_logins: int = 0
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
            else:
                self.logins += 1
                self.worst_login = max(self.worst_login, login)
                self.worst_total = max(self.worst_total, time.monotonic() - start)
                self.slow_logins += login >= CANARY_LOGIN_LIMIT
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
        cluster = bench_run.start_postgres(base, tls, 300, embedded.run_as_user())
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


def client_hello() -> bytes:
    """A real TLS ClientHello (the first flight of an ssl.SSLObject, through a MemoryBIO)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def seeds() -> list[bytes]:
    hello = client_hello()
    scram_first = b"n,,n=,r=fyko+d2lbbFgONRv9qkxdawL"
    sasl_initial = message(
        b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(scram_first)) + scram_first
    )
    sasl_final = message(
        b"p", b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=" + b"A" * 44
    )
    pg = startup(user="postgres", database="postgres", application_name="fuzz")
    return [
        pg,
        startup(user="postgres", options="-c search_path=x", replication="database"),
        startup(196610, user="postgres", _pq_="x"),  # protocol 3.2 (NegotiateProtocolVersion)
        startup(131072, user="postgres"),  # protocol 2.0
        SSL_REQUEST,
        SSL_REQUEST + hello,
        SSL_REQUEST + pg,  # bytes after SSLRequest (CVE-2021-23214)
        GSSENC_REQUEST,
        GSSENC_REQUEST + pg,  # bytes after GSSENCRequest (CVE-2021-23222)
        GSSENC_REQUEST + hello,
        SSL_REQUEST + GSSENC_REQUEST + SSL_REQUEST,  # alternating requests
        hello,  # direct TLS
        hello + GSSENC_REQUEST,
        struct.pack("!IIII", 16, 80877102, 12345, 67890),  # CancelRequest
        startup(user="fuzz_pw", database="postgres") + message(b"p", b"secret\0"),
        startup(user="fuzz_md5") + message(b"p", b"md5" + b"0" * 32 + b"\0"),
        startup(user="fuzz_scram") + sasl_initial + sasl_final,
        startup(user="fuzz_scram") + message(b"p", b"NOPE\0" + struct.pack("!i", -1)),
        startup(user="postgres") + message(b"X", b""),
    ]


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip a bit
            i = min(pos, len(buf) - 1)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # a random byte
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 2:  # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:  # delete a range
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 4:  # duplicate a range
            buf[pos:pos] = buf[pos : pos + rng.randint(1, 64)]
        elif op == 5:  # truncate
            del buf[pos:]
        elif op == 6:  # an interesting 32-bit value (a length, a code) somewhere
            buf[pos : pos + 4] = struct.pack("!I", rng.choice(INTERESTING))
        elif op == 7:  # splice another seed in
            buf[pos:] = rng.choice(pool)
        else:  # append junk
            buf += rng.randbytes(rng.randint(1, 256))
    return bytes(buf)


def fuzz_input(rng: random.Random, pool: list[bytes]) -> list[bytes]:
    """One input, split into the pieces sent one after the other."""
    roll = rng.random()
    if roll < 0.02:
        data = rng.randbytes(rng.randint(0, 512))
    elif roll < 0.10:
        data = rng.choice(pool)
    else:
        data = mutate(rng, rng.choice(pool), pool)
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.choice((0, 0, 1, 2, 4))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a] or [b""]


# --------------------------------------------------------------------------- scenario 1: fuzz


@dataclass
class Tally:
    """What the load generators counted (each scenario uses its own fields)."""

    opened: int = 0
    refused: int = 0
    held: int = 0  # fuzz: connections left for pggate's authentication_timeout to close
    left_open: int = 0  # fuzz: no EOF within authentication_timeout + EOF_SLACK
    slowest_eof: float = 0.0  # fuzz
    closed_by_pggate: int = 0  # flood
    trickled: int = 0  # flood: bytes


async def open_or_none(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A TCP connection to pggate, or None when it cannot be opened."""
    try:
        return await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None


async def fuzz_one(
    port: int,
    pieces: list[bytes],
    hold: bool,
    pause: bool,
    stats: Tally,
    active: asyncio.Semaphore,
) -> None:
    """Connect, send the pieces, half-close (or, ``hold``, not), read until pggate closes."""
    start = time.monotonic()
    async with active:
        if (conn := await open_or_none(port)) is None:
            stats.refused += 1
            return
        reader, writer = conn
        stats.opened += 1
        try:
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                if pause:
                    await asyncio.sleep(0.002)
            if not hold:
                writer.write_eof()
        except OSError:
            pass  # pggate closed it already
        if not hold:
            await drain_to_eof(reader, start, stats)
    if hold:  # waits for authentication_timeout without holding a slot
        stats.held += 1
        await drain_to_eof(reader, start, stats)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def drain_to_eof(reader: asyncio.StreamReader, start: float, stats: Tally) -> None:
    deadline = start + AUTH_TIMEOUT + EOF_SLACK
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if not await asyncio.wait_for(reader.read(65536), remaining):
                break
    except TimeoutError:
        stats.left_open += 1
        return
    except OSError:
        pass  # reset: closed too
    stats.slowest_eof = max(stats.slowest_eof, time.monotonic() - start)


async def fuzz_run(
    port: int,
    count: int,
    concurrency: int,
    seed: int,
    stats: Tally,
    at_warmup: Callable[[], None],
) -> None:
    rng = random.Random(seed)
    pool = seeds()
    active = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    warmup = min(max(count // 10, 500), count // 2)  # RSS baseline: after the first inputs
    for i in range(count):
        if i == warmup:
            at_warmup()
        while len(tasks) >= 4 * concurrency:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        pieces = fuzz_input(rng, pool)
        task = asyncio.create_task(
            fuzz_one(port, pieces, rng.random() < 0.01, rng.random() < 0.1, stats, active)
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)


@dataclass
class Row:
    scenario: str
    load: str
    lost: str
    latency: str
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems


def scenario_fuzz(env: Env, args: argparse.Namespace) -> Row:
    count = args.fuzz_inputs
    settings = [f"authentication_timeout = {AUTH_TIMEOUT}s"]
    with env.pggate("fuzz", settings, FUZZ_HBA) as gate:
        canary = gate.canary()
        stats = Tally()
        rss = {"base": gate.rss()}  # measured again after the warm-up

        def at_warmup() -> None:
            rss["base"] = gate.rss()

        log(f"fuzz: {count:,} inputs, {args.concurrency} connections at a time")
        started = time.monotonic()
        with canary.running():
            time.sleep(0.3)
            asyncio.run(fuzz_run(gate.port, count, args.concurrency, args.seed, stats, at_warmup))
            time.sleep(0.5)
        secs = time.monotonic() - started
        time.sleep(1.0)
        growth = gate.rss() - rss["base"]
        alive = gate.alive_same()
        problems = []
        if not alive:
            problems.append(f"pggate died or restarted (exit {gate.proc.poll()})")
        bad = gate.bad_log_lines()
        if bad:
            problems.append(f"{len(bad)} internal-error log lines, e.g. {bad[0][:160]!r}")
        if stats.left_open:
            problems.append(f"{stats.left_open} fuzz connections open past {AUTH_TIMEOUT} s")
        if stats.refused:
            problems.append(f"{stats.refused} fuzz connections refused")
        if growth >= RSS_LIMIT:
            problems.append(f"RSS grew {growth / 2**20:.1f} MiB")
        if canary.failures:
            problems.append(f"canary: {canary.failures[0]}")
        if not canary.logins:
            problems.append("no canary login at all")
    return Row(
        "fuzz",
        f"{stats.opened:,} inputs in {secs:.0f} s ({args.concurrency} at a time, "
        f"{stats.held} left to authentication_timeout = {AUTH_TIMEOUT} s)",
        f"{canary.lost()}; {'same pggate PID' if alive else 'pggate CRASHED'}; "
        f"{stats.left_open} sockets open past {AUTH_TIMEOUT} s (slowest EOF "
        f"{stats.slowest_eof:.1f} s); {len(bad)} internal errors; RSS {growth / 2**20:+.1f} MiB",
        canary.latency(),
        problems,
    )


# --------------------------------------------------------------------------- scenario 2: flood


async def flood_run(
    port: int, idle: int, trickle: int, hold: float, stats: Tally, sample: Callable[[], None]
) -> None:
    """Open ``idle`` silent and ``trickle`` trickling connections (mixed), keep them ``hold``
    seconds after the last one is open, sampling pggate meanwhile."""
    # a StartupMessage that never ends within the run: ~4 KB at one byte a second
    packet = startup(user="postgres", database="postgres", application_name="x" * 4000)
    kinds = [False] * idle + [True] * trickle
    random.Random(1).shuffle(kinds)
    writers: list[asyncio.StreamWriter] = []
    tricklers: list[asyncio.Task[None]] = []
    gate = asyncio.Semaphore(128)

    async def watch(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            await reader.read(1)  # EOF (or a byte, a protocol breach)
        stats.closed_by_pggate += 1

    async def trickle_one(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            for i in range(len(packet)):
                writer.write(packet[i : i + 1])
                await writer.drain()
                stats.trickled += 1
                await asyncio.sleep(1.0)

    async def open_one(trickles: bool) -> None:
        async with gate:
            conn = await open_or_none(port)
        if conn is None:
            stats.refused += 1
            return
        reader, writer = conn
        stats.opened += 1
        writers.append(writer)
        watchers.append(asyncio.create_task(watch(reader)))
        if trickles:
            tricklers.append(asyncio.create_task(trickle_one(writer)))

    watchers: list[asyncio.Task[None]] = []
    sampler_stop = asyncio.Event()

    async def sampler() -> None:
        while not sampler_stop.is_set():
            sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sampler_stop.wait(), 0.25)

    sampling = asyncio.create_task(sampler())
    await asyncio.gather(*(open_one(k) for k in kinds))
    await asyncio.sleep(hold)
    for task in tricklers + watchers:
        task.cancel()
    await asyncio.gather(*tricklers, *watchers, return_exceptions=True)
    for writer in writers:
        writer.close()
    sampler_stop.set()
    await sampling


def scenario_flood(env: Env, args: argparse.Namespace) -> Row:
    idle, trickle, bound = args.flood_idle, args.flood_trickle, args.startup_bound
    with env.pggate("flood", [f"max_startup_connections = {bound}"]) as gate:
        base_fds = gate.fds()
        fds = {"max": base_fds}

        def sample() -> None:
            fds["max"] = max(fds["max"], gate.fds())

        canary = gate.canary()
        log(
            f"flood: {idle:,} silent + {trickle:,} trickling, max_startup_connections {bound}, "
            f"held {args.flood_seconds} s"
        )
        stats = Tally()
        with canary.running():
            time.sleep(0.3)
            asyncio.run(flood_run(gate.port, idle, trickle, args.flood_seconds, stats, sample))
        limit = base_fds + bound + FD_RESERVE
        problems = []
        if not gate.alive_same():
            problems.append(f"pggate died or restarted (exit {gate.proc.poll()})")
        if canary.failures:
            problems.append(f"canary: {canary.failures[0]}")
        if canary.slow_logins:
            problems.append(f"{canary.slow_logins} canary logins took >= {CANARY_LOGIN_LIMIT} s")
        if not canary.logins:
            problems.append("no canary login at all")
        if fds["max"] > limit:
            problems.append(f"pggate had {fds['max']} descriptors open (limit {limit})")
        if stats.refused:
            problems.append(f"{stats.refused} flood connections refused (not the load asked)")
        bad = gate.bad_log_lines()
        if bad:
            problems.append(f"{len(bad)} internal-error log lines, e.g. {bad[0][:160]!r}")
    return Row(
        "flood",
        f"{stats.opened:,} connections ({idle:,} silent + {trickle:,} trickling 1 B/s, "
        f"{stats.trickled:,} bytes trickled), max_startup_connections = {bound}, "
        f"held {args.flood_seconds:g} s; pggate closed {stats.closed_by_pggate:,} of them",
        f"{canary.lost()} ({canary.slow_logins} slower than 1 s); pggate fds "
        f"{base_fds} -> max {fds['max']} (limit {limit})",
        canary.latency(),
        problems,
    )


# --------------------------------------------------------------------------- main

SCENARIOS: dict[str, Callable[[Env, argparse.Namespace], Row]] = {
    "fuzz": scenario_fuzz,
    "flood": scenario_flood,
}


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    print(
        f"\n### pggate robustness ({'quick' if args.quick else 'full'} run, "
        f"{os.cpu_count()} cores)\n"
    )
    print("| scenario | load applied | lost | worst canary latency | pass/fail |")
    print("|---|---|---|---|---|")
    for row in rows:
        verdict = "pass" if row.passed else "FAIL"
        print(f"| {row.scenario} | {row.load} | {row.lost} | {row.latency} | {verdict} |")
    for row in rows:
        for problem in row.problems:
            print(f"- {row.scenario}: {problem}")
    print()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the short version (CI)")
    p.add_argument(
        "--scenarios",
        default="fuzz,flood",
        type=lambda s: s.split(","),
        help="comma-separated, of: " + ", ".join(SCENARIOS),
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--fuzz-inputs", type=int, help="quick 5,000, full 1,000,000")
    p.add_argument("--concurrency", type=int, default=64, help="fuzz connections at a time")
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--flood-idle", type=int, help="quick 500, full 5,000")
    p.add_argument("--flood-trickle", type=int, help="quick 50, full 500")
    p.add_argument("--flood-seconds", type=float, help="quick 5, full 20")
    p.add_argument(
        "--startup-bound",
        type=int,
        help="pggate's max_startup_connections in the flood (quick 200, full 1000)",
    )
    args = p.parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    quick = args.quick
    args.fuzz_inputs = args.fuzz_inputs or (5000 if quick else 1_000_000)
    args.flood_idle = args.flood_idle or (500 if quick else 5000)
    args.flood_trickle = args.flood_trickle or (50 if quick else 500)
    args.flood_seconds = args.flood_seconds or (5 if quick else 20)
    args.startup_bound = args.startup_bound or (200 if quick else 1000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    nofile = bench_run.raise_nofile(
        max(bench_run.NOFILE, 2 * (args.flood_idle + args.flood_trickle) + 1000)
    )
    log(f"RLIMIT_NOFILE {nofile}")
    rows: list[Row] = []
    try:
        with environment(args.keep) as env:
            for name in args.scenarios:
                rows.append(SCENARIOS[name](env, args))
                log(f"{name}: {'pass' if rows[-1].passed else 'FAIL'}")
    except KeyboardInterrupt:
        log("interrupted; everything has been stopped and removed")
        return 130
    print_table(rows, args)
    return 0 if all(row.passed for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
