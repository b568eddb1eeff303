"""Scenario 7, ``churn``: connect/login/``select 1``/disconnect cycles, many of them, while
``--idle`` logged-in sessions are held open (full run: 100,000 cycles, 2,000 idle sessions).

The cycles run ``--churn-concurrency`` at a time and are a fixed mix: TLS logins (70 %),
plaintext logins (15 %, allowed by a ``host ... trust`` line for user postgres), plaintext
logins that pggate's pg_hba.conf rejects (10 %, SQLSTATE 28000) and TLS logins to a database
that does not exist (5 %, the backend's FATAL 3D000 relayed). Each cycle must end the way its
kind says; any other end (a timeout, a reset, a wrong code, a wrong answer) is a failure.

Memory and descriptors are compared between two quiet moments (no cycle in flight, one second
after the last to let the closes settle), both with the idle sessions open:

* the baseline, after the idle sessions are open and a warm-up of 2 % of the cycles (at least
  500) has run. Python's allocators (pymalloc's arenas, glibc's heaps) keep memory they have
  freed for reuse and pggate's caches fill on first use, so RSS climbs to a plateau in the first
  cycles and stays there; a baseline before the warm-up would charge that plateau to the churn,
  one before the idle sessions would charge their (intended) memory to it;
* the end, after the last cycle.

What must hold: pggate's RSS at the end is within 5 % of the baseline (``RSS_TOLERANCE``); its
open descriptors are back to the baseline (at most ``FD_SLACK`` more: a canary session in
flight; 5 % of 4,000 descriptors would hide a leak of one per 500 cycles); no cycle ends
unexpectedly; every idle session still answers ``select 1`` at the end; every canary login
succeeds; pggate is the same process, with no internal-error line in its log. The cycle rate
and the canary's worst latency are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import random
import ssl
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvloop
from bench.robust.common import (
    SSL_REQUEST,
    Canary,
    Env,
    Gate,
    Row,
    log,
    message,
    startup,
)

NAME = "churn"
CHURN_HBA = (
    "hostssl all all 127.0.0.1/32 trust\n"
    "host all postgres 127.0.0.1/32 trust\n"
    "host all all 127.0.0.1/32 reject\n"
)
REFUSED_USER = "churn_refused"  # plaintext with this user: the reject line
NO_DATABASE = "churn_no_such_database"
# kind: (TLS?, user, database, expected SQLSTATE or None for a session that answers select 1)
KINDS: dict[str, tuple[bool, str, str, str | None]] = {
    "tls": (True, "postgres", "postgres", None),
    "plain": (False, "postgres", "postgres", None),
    "hba_reject": (False, REFUSED_USER, "postgres", "28000"),
    "no_database": (True, "postgres", NO_DATABASE, "3D000"),
}
MIX = {"tls": 70, "plain": 15, "hba_reject": 10, "no_database": 5}  # percent
RSS_TOLERANCE = 0.05
FD_SLACK = 2  # a canary session (client + backend socket) may be in flight when sampled
CYCLE_TIMEOUT = 30.0  # seconds for one cycle (or one idle session's login)
SETTLE = 1.0  # seconds after the last cycle before sampling
SAMPLES = 5  # quiet samples, 0.1 s apart: the smallest is taken
PROGRESS_PERIOD = 60.0  # seconds between progress lines


class Refused(Exception):
    """An ErrorResponse during login: ``code`` is its SQLSTATE."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code


# --------------------------------------------------------------------------- the client


def tls_context(ca_file: Path) -> ssl.SSLContext:
    """libpq's sslmode=require with a root certificate: the chain is verified, not the name."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.check_hostname = False
    return ctx


def error_fields(body: bytes) -> dict[str, str]:
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readexactly(5)
    return head[:1], await reader.readexactly(struct.unpack("!I", head[1:])[0] - 4)


async def until_ready(reader: asyncio.StreamReader) -> list[tuple[bytes, bytes]]:
    """Messages up to ReadyForQuery; an ErrorResponse raises :class:`Refused`."""
    seen = []
    while True:
        tag, body = await read_message(reader)
        if tag == b"E":
            fields = error_fields(body)
            raise Refused(fields.get("C", "?"), fields.get("M", "")[:160])
        seen.append((tag, body))
        if tag == b"Z":
            return seen


@dataclass
class Session:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def select_1(self) -> None:
        self.writer.write(message(b"Q", b"select 1\0"))
        answer = await until_ready(self.reader)
        rows = [body for tag, body in answer if tag == b"D"]
        if rows != [struct.pack("!HI", 1, 1) + b"1"]:
            raise RuntimeError(f"select 1 answered {answer!r}"[:200])

    async def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.writer.write(message(b"X", b""))  # Terminate
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):  # ssl.SSLError is an OSError
            await asyncio.wait_for(self.writer.wait_closed(), CYCLE_TIMEOUT)


async def login(port: int, ctx: ssl.SSLContext | None, user: str, database: str) -> Session:
    """A logged-in session, over TLS (SSLRequest first) when ``ctx`` is given."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    session = Session(reader, writer)
    try:
        if ctx is not None:
            writer.write(SSL_REQUEST)
            if await reader.readexactly(1) != b"S":
                raise RuntimeError("pggate refused SSLRequest")
            await writer.start_tls(ctx)
        writer.write(startup(user=user, database=database, application_name="pggate_churn"))
        await until_ready(reader)
    except BaseException:
        writer.close()
        raise
    return session


# --------------------------------------------------------------------------- the load


@dataclass
class Tally:
    """What the churn counted."""

    ended: Counter[str] = field(default_factory=Counter)  # per kind, ended as expected
    failures: Counter[str] = field(default_factory=Counter)  # per kind, ended otherwise
    examples: list[str] = field(default_factory=list)
    idle_failures: list[str] = field(default_factory=list)

    def total(self) -> int:
        return sum(self.ended.values()) + sum(self.failures.values())

    def fail(self, kind: str, what: str) -> None:
        self.failures[kind] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{kind}: {what}"[:200])


async def cycle(port: int, ctx: ssl.SSLContext, kind: str, tally: Tally) -> None:
    """One connect/login/select 1/disconnect, checked against what its kind expects."""
    tls, user, database, expected = KINDS[kind]
    try:
        session = await asyncio.wait_for(
            login(port, ctx if tls else None, user, database), CYCLE_TIMEOUT
        )
    except Refused as exc:
        if exc.code == expected:
            tally.ended[kind] += 1
        else:
            tally.fail(kind, f"refused: {exc}")
        return
    except (OSError, RuntimeError, EOFError) as exc:  # timeouts, resets, TLS errors
        tally.fail(kind, f"{type(exc).__name__}: {exc}")
        return
    try:
        if expected is not None:
            raise RuntimeError(f"logged in, expected {expected}")
        await asyncio.wait_for(session.select_1(), CYCLE_TIMEOUT)
        tally.ended[kind] += 1
    except (OSError, RuntimeError, EOFError, Refused) as exc:
        tally.fail(kind, f"{type(exc).__name__}: {exc}")
    finally:
        await session.close()


def kinds(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return rng.choices(list(MIX), weights=list(MIX.values()), k=count)


async def bounded(jobs: list[Callable[[], Awaitable[None]]], concurrency: int) -> None:
    """Run the jobs, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(one(job) for job in jobs))


async def open_idle(
    port: int, ctx: ssl.SSLContext, count: int, concurrency: int
) -> tuple[list[Session], list[str]]:
    """``count`` logged-in TLS sessions, left idle; and what failed."""
    sessions: list[Session] = []
    failures: list[str] = []

    async def one() -> None:
        try:
            login_ = login(port, ctx, "postgres", "postgres")
            sessions.append(await asyncio.wait_for(login_, CYCLE_TIMEOUT))
        except (OSError, RuntimeError, EOFError, Refused) as e:
            failures.append(f"{type(e).__name__}: {e}"[:200])

    await bounded([one] * count, concurrency)
    return sessions, failures


async def check_idle(sessions: list[Session], tally: Tally) -> None:
    """Every idle session must still answer select 1."""

    async def one(session: Session) -> None:
        try:
            await asyncio.wait_for(session.select_1(), CYCLE_TIMEOUT)
        except (OSError, RuntimeError, EOFError, Refused) as exc:
            tally.idle_failures.append(f"{type(exc).__name__}: {exc}"[:200])

    await bounded([functools.partial(one, s) for s in sessions], 256)


# --------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    rss: int
    fds: int


def quiet_sample(gate: Gate) -> Sample:
    """pggate's RSS and descriptors at a quiet moment: the smallest of a few samples, so a
    canary session in flight (every 100 ms) is not counted."""
    samples = []
    for _ in range(SAMPLES):
        samples.append(Sample(gate.rss(), gate.fds()))
        time.sleep(0.1)
    return Sample(min(s.rss for s in samples), min(s.fds for s in samples))


@dataclass
class Outcome:
    tally: Tally = field(default_factory=Tally)
    idle_open: int = 0
    idle_open_failures: list[str] = field(default_factory=list)
    base: Sample = field(default_factory=lambda: Sample(0, 0))
    end: Sample = field(default_factory=lambda: Sample(0, 0))
    cycles: int = 0
    seconds: float = 0.0  # the cycles after the warm-up


async def churn_run(gate: Gate, args: argparse.Namespace, out: Outcome) -> None:
    ctx = tls_context(gate.ca_file)
    conc = args.churn_concurrency
    idle, out.idle_open_failures = await open_idle(gate.port, ctx, args.idle, conc)
    out.idle_open = len(idle)
    log(f"churn: {len(idle):,} idle sessions open")
    try:
        plan = kinds(args.cycles, args.seed)
        warmup = min(max(args.cycles // 50, 500), args.cycles // 4)

        def job(kind: str) -> Callable[[], Awaitable[None]]:
            return lambda: cycle(gate.port, ctx, kind, out.tally)

        await bounded([job(k) for k in plan[:warmup]], conc)
        await asyncio.sleep(SETTLE)
        out.base = await asyncio.to_thread(quiet_sample, gate)
        log(f"churn: warm-up of {warmup:,} cycles done; baseline {out.base}")
        start = time.monotonic()
        progress = asyncio.create_task(report_progress(out.tally, len(plan), warmup, start))
        try:
            await bounded([job(k) for k in plan[warmup:]], conc)
        finally:
            progress.cancel()
        out.seconds = time.monotonic() - start
        out.cycles = len(plan) - warmup
        await asyncio.sleep(SETTLE)
        out.end = await asyncio.to_thread(quiet_sample, gate)
        log(f"churn: {len(plan):,} cycles done; end {out.end}")
        await check_idle(idle, out.tally)
    finally:
        await asyncio.gather(*(s.close() for s in idle))


async def report_progress(tally: Tally, total: int, warmup: int, start: float) -> None:
    """A log line every PROGRESS_PERIOD seconds while the cycles run (a full run is long)."""
    while True:
        await asyncio.sleep(PROGRESS_PERIOD)
        done = tally.total()
        log(
            f"churn: {done:,} of {total:,} cycles, {sum(tally.failures.values())} unexpected, "
            f"{(done - warmup) / (time.monotonic() - start):.0f}/s after the warm-up"
        )


# --------------------------------------------------------------------------- the verdict


def problems_of(out: Outcome, canary: Canary, gate: Gate) -> list[str]:
    problems = []
    tally = out.tally
    if out.idle_open_failures:
        problems.append(
            f"{len(out.idle_open_failures)} idle sessions failed to open, e.g. "
            f"{out.idle_open_failures[0]}"
        )
    if sum(tally.failures.values()):
        problems.append(
            f"{sum(tally.failures.values())} cycles ended unexpectedly, e.g. {tally.examples[0]}"
        )
    if tally.idle_failures:
        problems.append(
            f"{len(tally.idle_failures)} idle sessions lost, e.g. {tally.idle_failures[0]}"
        )
    if out.end.rss > out.base.rss * (1 + RSS_TOLERANCE):
        problems.append(
            f"pggate RSS {out.base.rss / 2**20:.1f} -> {out.end.rss / 2**20:.1f} MiB "
            f"(more than {RSS_TOLERANCE:.0%})"
        )
    if out.end.fds > out.base.fds + FD_SLACK:
        problems.append(f"pggate descriptors {out.base.fds} -> {out.end.fds}")
    if canary.failures:
        problems.append(f"canary: {canary.failures[0]}")
    if not canary.logins:
        problems.append("no canary login at all")
    if not gate.alive_same():
        problems.append(f"pggate died or restarted (exit {gate.proc.poll()})")
    bad = gate.bad_log_lines()
    if bad:
        problems.append(f"{len(bad)} internal-error log lines, e.g. {bad[0][:160]!r}")
    return problems


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cycles", type=int, help="churn cycles (quick 2,000, full 100,000)")
    p.add_argument("--idle", type=int, help="idle sessions held open (quick 100, full 2,000)")
    p.add_argument("--churn-concurrency", type=int, default=32, help="cycles at a time")


def set_defaults(args: argparse.Namespace) -> None:
    args.cycles = args.cycles or (2000 if args.quick else 100_000)
    args.idle = args.idle or (100 if args.quick else 2000)


def run(env: Env, args: argparse.Namespace) -> Row:
    settings = [f"max_connections = {args.idle + args.churn_concurrency + 100}"]
    out = Outcome()
    with env.pggate(NAME, settings, CHURN_HBA) as gate:
        canary = gate.canary()
        log(
            f"churn: {args.cycles:,} cycles, {args.churn_concurrency} at a time, "
            f"{args.idle:,} idle sessions"
        )
        with canary.running(), asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(churn_run(gate, args, out))
        problems = problems_of(out, canary, gate)
        alive = gate.alive_same()
    tally = out.tally
    rate = out.cycles / out.seconds if out.seconds else 0.0
    mix = ", ".join(f"{kind} {tally.ended[kind] + tally.failures[kind]:,}" for kind in MIX)
    rss_change = (out.end.rss - out.base.rss) / max(out.base.rss, 1)
    return Row(
        NAME,
        f"{args.cycles:,} connect/login/select 1/disconnect cycles ({mix}), "
        f"{args.churn_concurrency} at a time, {rate:.0f}/s after the warm-up; "
        f"{out.idle_open:,} idle TLS sessions held open",
        f"{canary.lost()} ({canary.slow_logins} slower than 1 s); "
        f"{sum(tally.failures.values())} cycles ended unexpectedly; "
        f"{len(tally.idle_failures)} idle sessions lost; pggate RSS "
        f"{out.base.rss / 2**20:.1f} -> {out.end.rss / 2**20:.1f} MiB ({rss_change:+.1%}), "
        f"fds {out.base.fds} -> {out.end.fds}; "
        f"{'same pggate PID' if alive else 'pggate CRASHED'}",
        canary.latency(),
        problems,
    )
