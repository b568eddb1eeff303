"""Scenario 3, ``backend_faults``: the backend fails under load; pggate must not.

N sessions (psycopg, TLS through pggate, ``pool_mode = session``) run pgbench-like transactions
(an UPDATE and a SELECT on one of 10,000 rows) without pause, and every 20 transactions leave
and log in again, so the pool always holds idle backends to hand out. Meanwhile, one after the
other, with a settling pause between:

* ``kill -9`` of one backend process (PostgreSQL then ends every backend and reinitializes);
* ``pg_ctl restart -m fast``;
* ``pg_ctl stop -m fast``, 10 s down (quick: 3 s), ``pg_ctl start``;
* on a second pggate serving its embedded cluster (``pggate init``): ``kill -9`` of the
  postmaster, which pggate must log and restart.

A prober connects straight to the backend every 50 ms to learn when it accepts again. For each
fault, holds when:

* pggate keeps its PID and logs no internal error;
* every session that failed got an ErrorResponse (libpq has a SQLSTATE for it): the backend's
  own (57P01, 57P02...) or pggate's FATAL 08006 when the backend vanished without a word; none
  ended with a bare close and none hung (10 s);
* failed logins got an ErrorResponse too (08006, or 57P03 while a cluster starts up: for the
  embedded cluster pggate's own answer while it restarts it), none hung;
* a session logged in within 1 s of the backend accepting again, and no login that started more
  than 1 s after that failed;
* no client was handed a dead pooled backend: no session whose login started after the backend
  accepted again failed its first transaction;
* the canary (TLS, ``select 1`` every 100 ms) failed only while the backend was down (from the
  fault to 1 s after the backend accepted again);
* embedded: the log says the postmaster stopped and was restarted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from bench import run as bench_run
from bench.robust.common import Canary, Env, Gate, Row, log, message, startup

NAME = "backend_faults"
ROWS = 10_000
RECONNECT_EVERY = 20  # transactions per login, so that the pool is used
OP_TIMEOUT = 10.0  # seconds: a login or transaction taking longer has hung
PROBE_PERIOD = 0.05
RECOVERY_LIMIT = 1.0  # seconds from "backend accepts again" to a new session through pggate
STEADY_SECONDS = 2.0  # reachable this long before the next fault
CANARY_IN_FLIGHT = 2.0  # seconds: a canary attempt this old may still be running at the fault
APPLICATION = "robust-faults"
SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
TRANSACTION = (  # pgbench's TPC-B-like step, as one simple Query
    "begin; update robust_accounts set abalance = abalance + {delta} where aid = {aid}; "
    "select abalance from robust_accounts where aid = {aid}; commit"
)


# --------------------------------------------------------------------------- what happened


@dataclass
class Attempt:
    """One login and what followed it."""

    started: float
    logged_in: float | None = None
    login_error: str | None = None  # "SQLSTATE message", "bare close ..." or "hang"
    first_error: str | None = None  # the first transaction's failure, if it failed
    session_error: str | None = None  # how the session ended, when not by leaving
    ended: float = 0.0  # when it did (or when the login failed)


@dataclass
class Record:
    attempts: list[Attempt] = field(default_factory=list)
    transactions: int = 0
    backend_up: list[tuple[float, bool]] = field(default_factory=list)  # prober's transitions

    def accepting_again(self, since: float) -> float | None:
        """When the prober first reached the backend after being refused since ``since``."""
        down = False
        for at, up in self.backend_up:
            if at < since:
                continue
            if not up:
                down = True
            elif down:
                return at
        return None


class Ended(Exception):
    """The server ended the session: with an ErrorResponse (``sqlstate``) or a bare close."""

    def __init__(self, sqlstate: str | None, message: str) -> None:
        super().__init__(message)
        self.sqlstate, self.message = sqlstate, message

    def describe(self) -> str:
        if self.sqlstate is None:
            return f"bare close ({self.message})"
        return f"{self.sqlstate} {self.message}"


class WireSession:
    """A minimal protocol-3 client over TLS that sees exactly what arrives before a close.

    Client libraries report a close that follows a FATAL in their own ways (psycopg's
    non-blocking reads raise "server closed the connection unexpectedly" even when the
    ErrorResponse is already in libpq's buffer), so the load speaks the protocol itself: the
    question is what pggate sent, not what a driver made of it.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def login(cls, port: int, tls: ssl.SSLContext) -> WireSession:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        session = cls(reader, writer)
        writer.write(SSL_REQUEST)
        if await session._read_exactly(1) != b"S":
            raise Ended(None, "TLS refused")
        await writer.start_tls(tls)
        writer.write(startup(user="postgres", database="postgres", application_name=APPLICATION))
        await session._until_ready()
        return session

    async def query(self, sql: str) -> None:
        """One simple Query; returns at ReadyForQuery, raises Ended on a close."""
        self.writer.write(message(b"Q", sql.encode() + b"\0"))
        await self._until_ready()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(message(b"X", b""))
            self.writer.close()

    async def _until_ready(self) -> None:
        error: tuple[str, str] | None = None
        while True:
            header = await self._read_exactly(5, error)
            body = await self._read_exactly(int.from_bytes(header[1:], "big") - 4, error)
            if header[:1] == b"E":
                fields = dict(
                    (f[:1].decode(), f[1:].decode(errors="replace")) for f in body.split(b"\0") if f
                )
                error = (fields.get("C", "?"), fields.get("M", "?"))
                if fields.get("V", fields.get("S")) in ("FATAL", "PANIC"):
                    raise Ended(*error)
            elif header[:1] == b"Z":
                if error is not None:
                    raise RuntimeError(f"query failed: {error}")
                return

    async def _read_exactly(self, count: int, error: tuple[str, str] | None = None) -> bytes:
        try:
            return await self.reader.readexactly(count)
        except (asyncio.IncompleteReadError, OSError, ssl.SSLError) as exc:
            raise Ended(None, type(exc).__name__) from None


def describe(exc: BaseException) -> str:
    """An error as the client saw it: SQLSTATE and message when an ErrorResponse arrived."""
    if isinstance(exc, TimeoutError):
        return "hang"
    if isinstance(exc, Ended):
        return exc.describe()
    return f"bare close ({type(exc).__name__}: {str(exc).strip()[:160]})"


# --------------------------------------------------------------------------- the load


async def session_loop(port: int, record: Record, stop: asyncio.Event) -> None:
    rng = random.Random()
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    while not stop.is_set():
        attempt = Attempt(time.monotonic())
        record.attempts.append(attempt)
        try:
            async with asyncio.timeout(OP_TIMEOUT):
                session = await WireSession.login(port, tls)
        except (Ended, OSError, TimeoutError) as exc:
            attempt.login_error, attempt.ended = describe(exc), time.monotonic()
            await asyncio.sleep(0.05)
            continue
        attempt.logged_in = time.monotonic()
        try:
            for done in range(RECONNECT_EVERY):
                if stop.is_set():
                    break
                aid, delta = rng.randrange(1, ROWS + 1), rng.randrange(-5000, 5000)
                try:
                    async with asyncio.timeout(OP_TIMEOUT):
                        await session.query(TRANSACTION.format(aid=aid, delta=delta))
                except (Ended, OSError, TimeoutError) as exc:
                    if done == 0:
                        attempt.first_error = describe(exc)
                    attempt.session_error, attempt.ended = describe(exc), time.monotonic()
                    break
                record.transactions += 1
        finally:
            await session.close()


async def probe_loop(conninfo: str, record: Record, stop: asyncio.Event) -> None:
    """Straight to the backend: records each change between reachable and not."""
    last: bool | None = None
    while not stop.is_set():
        at = time.monotonic()
        try:
            async with asyncio.timeout(2):
                conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
                await conn.execute("select 1")
                await conn.close()
            up = True
        except (psycopg.Error, OSError, TimeoutError):
            up = False
        if up != last:
            record.backend_up.append((at, up))
            last = up
        await asyncio.sleep(PROBE_PERIOD)


async def backend_steady(record: Record, seconds: float, timeout: float = 120) -> None:
    """Until the prober has reached the backend without a break for ``seconds``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if record.backend_up:
            since, up = record.backend_up[-1]
            if up and time.monotonic() - since >= seconds:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the backend did not come back within {timeout:g} s")


@dataclass
class Fault:
    name: str
    act: Callable[[], None]  # runs in a thread: blocking is fine
    starting_up_only: bool = False  # logins meanwhile may only be refused with 57P03
    started: float = 0.0
    ended: float = 0.0


async def run_load(
    gate_port: int,
    backend_conninfo: str,
    sessions: int,
    faults: list[Fault],
    settle: float,
) -> Record:
    record = Record()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(probe_loop(backend_conninfo, record, stop))]
    tasks += [asyncio.create_task(session_loop(gate_port, record, stop)) for _ in range(sessions)]
    await asyncio.sleep(settle)
    for fault in faults:
        log(f"backend_faults: {fault.name}")
        fault.started = time.monotonic()
        await asyncio.to_thread(fault.act)
        fault.ended = time.monotonic()
        await asyncio.sleep(settle)
        # One fault at a time: PostgreSQL 15 told to shut down fast while still in crash
        # recovery was seen to hang (pg_ctl: server does not shut down), which is not ours.
        await backend_steady(record, STEADY_SECONDS)
    stop.set()
    await asyncio.gather(*tasks)
    return record


# --------------------------------------------------------------------------- the verdict


def judge(fault: Fault, until: float, record: Record, canary: Canary) -> tuple[str, list[str]]:
    """What one fault did (a summary) and what went wrong (problems), from the attempts that
    started (logins) or ended (sessions) between the fault and the next one."""
    problems: list[str] = []
    # A crash restart faster than the prober's period is never seen down: then "back" is
    # when the fault's action returned (pg_ctl -w returns once the server accepts).
    back = record.accepting_again(fault.started) or fault.ended
    logins = [a for a in record.attempts if fault.started <= a.started < until]
    ended = [a for a in record.attempts if a.session_error and fault.started <= a.ended < until]
    errors = Counter(_kind(a.session_error) for a in ended)
    login_errors = Counter(_kind(a.login_error) for a in logins if a.login_error)
    for kind, count in (errors + login_errors).items():
        if kind in ("hang", "bare close"):
            texts = [a.session_error for a in ended] + [a.login_error for a in logins]
            example = next(t for t in texts if t and t.startswith(kind))
            problems.append(f"{fault.name}: {count} x {kind}, e.g. {example}")
    # (a login refused after the next fault began is that fault's)
    late = [
        a for a in logins if a.started > back + RECOVERY_LIMIT and a.login_error and a.ended < until
    ]
    if late:
        problems.append(
            f"{fault.name}: {len(late)} logins failed > {RECOVERY_LIMIT:g} s after the "
            f"backend was back, e.g. {late[0].login_error}"
        )
    first_ok = min(
        (a.logged_in for a in logins if a.logged_in is not None and a.logged_in >= back),
        default=None,
    )
    recovery = None if first_ok is None else first_ok - back
    if recovery is None or recovery > RECOVERY_LIMIT:
        problems.append(f"{fault.name}: first new session {recovery} s after the backend was back")
    # (a first transaction that failed after the next fault began is that fault's)
    dead = [a for a in logins if a.started > back and a.first_error and a.ended < until]
    if dead:
        problems.append(
            f"{fault.name}: {len(dead)} sessions logged in after the backend was back and failed "
            f"their first transaction (a dead pooled backend?), e.g. {dead[0].first_error}"
        )
    if fault.starting_up_only:
        wrong = {kind: n for kind, n in login_errors.items() if kind != "57P03"}
        if wrong:
            problems.append(f"{fault.name}: logins refused with {wrong}, not only 57P03")
    lost = sum(fault.started <= t < until for t in canary.failure_times)
    summary = (
        f"{fault.name}: sessions ended {_counts(errors)}, failed logins {_counts(login_errors)}, "
        f"backend back after {back - fault.started:.1f} s, first new session "
        f"+{(recovery or 0) * 1000:.0f} ms, canary lost {lost}"
    )
    return summary, problems


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{n} x {kind}" for kind, n in counter.most_common()) or "none"


def _kind(error: str | None) -> str:
    """The class of an error for counting: its SQLSTATE, or hang / bare close."""
    if error is None:
        return ""
    if error == "hang" or error.startswith("bare close"):
        return error.split(" (")[0]
    return error.split(" ")[0]


def canary_problems(canary: Canary, faults: list[Fault], record: Record) -> list[str]:
    """Canary failures outside every fault's outage window."""
    windows = []
    for fault in faults:
        back = record.accepting_again(fault.started) or fault.ended
        # a canary login or select in flight when the fault struck fails with it
        windows.append((fault.started - CANARY_IN_FLIGHT, max(back, fault.ended) + RECOVERY_LIMIT))
    stray = [t for t in canary.failure_times if not any(a <= t <= b for a, b in windows)]
    if not stray:
        return []
    index = canary.failure_times.index(stray[0])
    return [f"canary failed {len(stray)} times outside the outages: {canary.failures[index]}"]


# --------------------------------------------------------------------------- the faults


def pg_ctl(env: Env, *args: str) -> None:
    cluster = env.cluster
    cmd = [str(cluster.bindir / "pg_ctl"), "-D", str(cluster.data_dir), "-w", "-t", "60", *args]
    if args[0] in ("start", "restart"):
        cmd += ["-l", str(cluster.log_path)]
    subprocess.run(
        cmd,
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        cwd="/",
        **bench_run._as_user(cluster.run_as),
    )


def kill_one_backend(backend_conninfo: str) -> None:
    with psycopg.connect(backend_conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "select pid from pg_stat_activity where backend_type = 'client backend' "
            "and pid <> pg_backend_pid() and application_name = %s",
            [APPLICATION],
        ).fetchall()
    if not rows:
        raise RuntimeError(f"no backend of application {APPLICATION!r} to kill")
    pid = random.choice(rows)[0]
    if isinstance(pid, int) and pid:
        os.kill(pid, signal.SIGKILL)


def external_faults(env: Env, down: float) -> list[Fault]:
    conninfo = env.cluster.conninfo

    def stop_for_a_while() -> None:
        pg_ctl(env, "stop", "-m", "fast")
        time.sleep(down)
        pg_ctl(env, "start")

    return [
        Fault("kill -9 a backend", lambda: kill_one_backend(conninfo)),
        Fault("pg_ctl restart -m fast", lambda: pg_ctl(env, "restart", "-m", "fast")),
        Fault(f"pg_ctl stop -m fast, {down:g} s down, start", stop_for_a_while),
    ]


@contextlib.contextmanager
def embedded_gate(env: Env) -> Iterator[tuple[Gate, Path]]:
    """A pggate serving its own embedded cluster (``pggate init``; TLS on, self-signed)."""
    directory = env.base / "faults-embedded"
    port = bench_run.free_port()
    init = ["init", str(directory), "--port", str(port), "--listen-addresses", "127.0.0.1"]
    subprocess.run(
        [sys.executable, "-m", "pggate", *init],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=bench_run.REPO,
    )
    with (directory / "pggate.conf").open("a") as conf:
        conf.write("log_connections = off\n")
    log_path = directory / "pggate.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pggate", "serve", str(directory)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=bench_run.REPO,
            start_new_session=True,
        )
    try:
        bench_run.wait_for_port(port, 120, proc)
        yield Gate(proc, port, log_path, Path("/nonexistent")), directory
    finally:
        bench_run.stop_process(proc, signal.SIGINT, 60)


def kill_postmaster(directory: Path) -> None:
    pid = int((directory / "pgdata" / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- the scenario


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fault-sessions", type=int, help="quick 10, full 50")
    p.add_argument("--fault-settle", type=float, help="seconds between faults: quick 3, full 8")
    p.add_argument(
        "--fault-down", type=float, help="seconds the backend is stopped: quick 3, full 10"
    )


def set_defaults(args: argparse.Namespace) -> None:
    args.fault_sessions = args.fault_sessions or (10 if args.quick else 50)
    args.fault_settle = args.fault_settle or (3 if args.quick else 8)
    args.fault_down = args.fault_down or (3 if args.quick else 10)


def prepare_table(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "drop table if exists robust_accounts; "
            "create table robust_accounts (aid int primary key, abalance int not null); "
            f"insert into robust_accounts select g, 0 from generate_series(1, {ROWS}) g"
        )


def canary_for(gate: Gate, verify: bool) -> Canary:
    """The canary; the embedded cluster's certificate is pggate init's own, not the bench CA."""
    if verify:
        return gate.canary()
    return Canary(
        f"host=127.0.0.1 port={gate.port} user=postgres dbname=postgres sslmode=require "
        "sslrootcert=/nonexistent/root.crt gssencmode=disable connect_timeout=5"
    )


def exercise(
    gate: Gate,
    canary: Canary,
    backend: str,
    faults: list[Fault],
    args: argparse.Namespace,
) -> tuple[Record, list[str], list[str]]:
    with canary.running():
        record = asyncio.run(
            run_load(gate.port, backend, args.fault_sessions, faults, args.fault_settle)
        )
    summaries, problems = [], []
    bounds = [f.started for f in faults[1:]] + [time.monotonic()]
    for fault, until in zip(faults, bounds, strict=True):
        summary, found = judge(fault, until, record, canary)
        summaries.append(summary)
        problems += found
    problems += canary_problems(canary, faults, record)
    if gate.proc.poll() is not None:
        problems.append(f"pggate died (exit {gate.proc.poll()})")
    bad = gate.bad_log_lines()
    if bad:
        problems.append(f"{len(bad)} internal-error log lines, e.g. {bad[0][:160]!r}")
    return record, summaries, problems


def run(env: Env, args: argparse.Namespace) -> Row:
    backend = env.cluster.conninfo
    prepare_table(backend)
    settings = ["pool_mode = session", "log_connections = off"]
    with env.pggate("faults", settings) as gate:
        canary = canary_for(gate, verify=True)
        faults = external_faults(env, args.fault_down)
        record, summaries, problems = exercise(gate, canary, backend, faults, args)
    with embedded_gate(env) as (gate, directory):
        embedded_backend = f"host={directory / 'pgsocket'} port=5432 user=postgres dbname=postgres"
        prepare_table(embedded_backend)
        canary_e = canary_for(gate, verify=False)
        fault = Fault("embedded: kill -9 the postmaster", lambda: kill_postmaster(directory), True)
        record_e, summaries_e, problems_e = exercise(
            gate, canary_e, embedded_backend, [fault], args
        )
        text = gate.log_path.read_text(errors="replace")
        for line in (
            "embedded PostgreSQL has stopped unexpectedly",
            "embedded PostgreSQL restarted",
        ):
            if line not in text:
                problems_e.append(f"embedded: the log lacks {line!r}")
    attempts = len(record.attempts) + len(record_e.attempts)
    return Row(
        NAME,
        f"{args.fault_sessions} sessions (pool_mode = session), "
        f"{record.transactions + record_e.transactions:,} transactions, {attempts:,} logins; "
        + "; ".join(f.name for f in faults)
        + f"; {fault.name}",
        " / ".join(summaries + summaries_e),
        f"{canary.latency()} (embedded: {canary_e.latency()})",
        problems + problems_e,
    )
