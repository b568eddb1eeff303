"""Scenario 5, ``worker_loss``: pggate with ``workers = 2`` under load (M TLS sessions running
queries in a loop, spread over both workers by the kernel), then one worker killed with SIGKILL;
R rounds, the victim alternating between the two workers.

As when a PostgreSQL backend dies, what was in that process is lost and nothing else: holds when
every session of the killed worker ends (its client sees the connection closed) and every session
of the other worker runs on without an error, a new worker process runs within 1 s of the kill
and accepts connections within 1 s too, a query of the other worker cancelled through pggate is
cancelled (the CancelRequest may reach either worker, the new one included), the PostgreSQL
backends of the lost sessions go away, new logins succeed and reach the new worker, and the
supervisor and the surviving worker keep their PIDs.

The canary logs in once every 100 ms, one login at a time: a login caught in the killed worker
(accepted by it, not yet served) is one of that worker's sessions. So at most one canary failure
per kill, within 2 s of it, is counted apart as the killed worker's; any other fails the row.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
from bench.robust.common import Canary, Env, Gate, Row, log

from pggate.server import workers

NAME = "worker_loss"
RESTART_LIMIT = 1.0  # seconds from the kill until the new worker runs, and until it listens
KILLED_WINDOW = 2.0  # seconds after a kill in which one canary failure is the killed worker's
SESSION_END_LIMIT = 5.0  # seconds for a killed worker's session to see its connection closed
NEW_LOGINS = 20
CANCELS = 4
READY = "pggate is ready to accept connections"
_SERIALS = itertools.count()


@dataclass
class Session:
    """One client running a small query in a loop on one connection until told to stop."""

    index: int
    conninfo: str
    worker: int | None = None
    queries: int = 0
    at_kill: int = 0
    error: str | None = None
    ended: float | None = None  # time.monotonic() when it broke
    ready: threading.Event = field(default_factory=threading.Event)
    serial: int = field(default_factory=lambda: next(_SERIALS))  # unique across rounds
    thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return f"worker_loss_{self.serial}"

    def run(self, stop: threading.Event) -> None:
        try:
            with psycopg.connect(self.conninfo, autocommit=True, application_name=self.name) as c:
                self.worker = workers.worker_of_pid(c.info.backend_pid)
                self.ready.set()
                while not stop.is_set():
                    row = c.execute("select count(*) from generate_series(1, 1000)").fetchone()
                    if row != (1000,):
                        raise RuntimeError(f"query returned {row!r}")
                    self.queries += 1
                    stop.wait(0.01)
        except Exception as exc:  # what the client sees when its session ends
            self.error = f"{type(exc).__name__}: {str(exc).strip()[:160]}"
            self.ended = time.monotonic()
        finally:
            self.ready.set()


@dataclass
class Round:
    """What one kill did."""

    victim: int
    restart: float | None = None  # seconds until a new worker process ran
    listening: float | None = None  # seconds until it logged that it accepts connections
    victim_sessions: int = 0
    victim_ended: int = 0
    survivor_sessions: int = 0
    canary_killed: int = 0  # canary failures within KILLED_WINDOW of the kill
    cancels: int = 0
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the processes


def worker_pids(log_path: Path) -> dict[int, int]:
    """Worker index -> PID of its latest start, from the supervisor's log lines."""
    found = re.findall(r"worker (\d+) started \(PID (\d+)\)", log_path.read_text(errors="replace"))
    return {int(index): int(pid) for index, pid in found}


def children(pid: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children()}
    except psutil.Error:
        return set()


def logged_at(log_path: Path, pid: int, message: str) -> float | None:
    """When process ``pid`` logged ``message`` (pggate's log line prefix: ``%m [%p]``, UTC with
    milliseconds), as a time.time() value; None while it has not."""
    text = log_path.read_text(errors="replace")
    stamp = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC"
    found = re.search(rf"{stamp} \[{pid}\] \w+:  {re.escape(message)}", text, re.M)
    if found is None:
        return None
    when = dt.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S.%f")
    return when.replace(tzinfo=dt.UTC).timestamp()


def wait_logged(log_path: Path, pid: int, message: str, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (when := logged_at(log_path, pid, message)) is not None:
            return when
        time.sleep(0.01)
    return None


def wait_ready(log_path: Path, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log_path.read_text(errors="replace").count(READY) >= count:
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- one round


def start_sessions(conninfo: str, count: int, stop: threading.Event) -> list[Session]:
    """``count`` sessions, more if needed until both workers have one (the kernel's choice)."""
    sessions: list[Session] = []
    while len(sessions) < 2 * count:
        batch = [Session(len(sessions) + i, conninfo) for i in range(count - len(sessions) or 1)]
        for session in batch:
            session.thread = threading.Thread(target=session.run, args=(stop,), daemon=True)
            session.thread.start()
        for session in batch:
            session.ready.wait(30)
        sessions += batch
        if {s.worker for s in sessions} >= {0, 1}:
            break
    return sessions


def idle_session(conninfo: str, worker: int) -> psycopg.Connection:
    """A connection served by ``worker`` (others opened on the way are closed)."""
    for _ in range(100):
        conn = psycopg.connect(conninfo, autocommit=True)
        if workers.worker_of_pid(conn.info.backend_pid) == worker:
            return conn
        conn.close()
    raise RuntimeError(f"no connection reached worker {worker} in 100 logins")


def cancel_works(conn: psycopg.Connection) -> str | None:
    """``select pg_sleep(30)`` cancelled after 0.3 s via a CancelRequest to pggate (psycopg's
    conn.cancel: a new connection, which the kernel gives to either worker): None when it was
    cancelled within 5 s (PostgreSQL: ERROR 57014), else what happened."""
    timer = threading.Timer(0.3, conn.cancel_safe)
    start = time.monotonic()
    timer.start()
    try:
        conn.execute("select pg_sleep(30)")
    except psycopg.errors.QueryCanceled:
        took = time.monotonic() - start
        return None if took < 5 else f"cancelled only after {took:.1f} s"
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {str(exc).strip()[:120]}"
    finally:
        timer.join()
    return "pg_sleep(30) ran to its end"


def backends_gone(conn: psycopg.Connection, names: list[str], timeout: float) -> bool:
    """The PostgreSQL backends of ``names`` (application_name) have exited: a backend ends when
    its client connection (pggate's, closed with the killed worker) reads EOF."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "select count(*) from pg_stat_activity where application_name = any(%s)", (names,)
        ).fetchone()
        if row == (0,):
            return True
        time.sleep(0.1)
    return False


def new_logins(conninfo: str) -> tuple[int, set[int]]:
    """NEW_LOGINS logins with a query each: (failures, the workers that served them)."""
    failures, served = 0, set()
    for _ in range(NEW_LOGINS):
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute("select 1")
                served.add(workers.worker_of_pid(conn.info.backend_pid))
        except psycopg.Error:
            failures += 1
    return failures, served


def kill(gate: Gate, victim: int, result: Round) -> float:
    """SIGKILL the victim; returns the kill's time.monotonic(). The new worker's start and
    first "ready to accept connections" are timed by pggate's own log lines (millisecond
    timestamps), not by this process, whose threads compete for the CPU with the load."""
    old = worker_pids(gate.log_path)
    supervisor = gate.proc.pid
    killed, wall = time.monotonic(), time.time()
    os.kill(old[victim], signal.SIGKILL)
    deadline = killed + 5
    while worker_pids(gate.log_path).get(victim) == old[victim] and time.monotonic() < deadline:
        time.sleep(0.01)
    new = worker_pids(gate.log_path).get(victim, old[victim])
    if new == old[victim] or new not in children(supervisor):
        return killed
    started = logged_at(gate.log_path, supervisor, f"worker {victim} started (PID {new})")
    ready = wait_logged(gate.log_path, new, READY, 5)
    result.restart = None if started is None else max(0.0, started - wall)
    result.listening = None if ready is None else max(0.0, ready - wall)
    return killed


def check_sessions(sessions: list[Session], victim: int, killed: float, result: Round) -> None:
    """Only the victim's sessions ended, each soon after the kill; the others ran on."""
    mine = [s for s in sessions if s.worker == victim]
    others = [s for s in sessions if s.worker is not None and s.worker != victim]
    result.victim_sessions, result.survivor_sessions = len(mine), len(others)
    result.victim_ended = sum(
        s.ended is not None and killed <= s.ended <= killed + SESSION_END_LIMIT for s in mine
    )
    if result.victim_ended != len(mine):
        result.problems.append(
            f"{len(mine) - result.victim_ended} of {len(mine)} sessions of the killed worker "
            f"did not end within {SESSION_END_LIMIT:g} s of the kill"
        )
    broken = [s for s in others if s.error]
    if broken:
        result.problems.append(
            f"{len(broken)} sessions of the surviving worker broke, e.g. {broken[0].error}"
        )
    stalled = [s for s in others if not s.error and s.queries <= s.at_kill]
    if stalled:
        result.problems.append(f"{len(stalled)} surviving sessions ran no query after the kill")
    unplaced = [s for s in sessions if s.worker is None]
    if unplaced:
        result.problems.append(f"{len(unplaced)} sessions never logged in: {unplaced[0].error}")


def check_restart(result: Round) -> None:
    if result.restart is None or result.restart > RESTART_LIMIT:
        result.problems.append(f"no new worker process within {RESTART_LIMIT:g} s")
    elif result.listening is None or result.listening > RESTART_LIMIT:
        result.problems.append(f"the new worker did not listen within {RESTART_LIMIT:g} s")


def after_kill(
    gate: Gate, conninfo: str, idle: dict[int, psycopg.Connection], victim: int, result: Round
) -> None:
    """The other worker's cancels, the lost backends' exit, the killed worker's idle session,
    new logins."""
    survivor = idle[1 - victim]
    errors = [e for e in (cancel_works(survivor) for _ in range(CANCELS)) if e is not None]
    result.cancels = CANCELS - len(errors)
    if errors:
        result.problems.append(f"{len(errors)} of {CANCELS} cancels failed: {errors[0]}")
    try:
        idle[victim].execute("select 1")
        result.problems.append("an idle session of the killed worker still answers")
    except psycopg.OperationalError:
        pass
    failures, served = new_logins(conninfo)
    if failures:
        result.problems.append(f"{failures} of {NEW_LOGINS} new logins failed")
    if victim not in served:
        result.problems.append(f"no new login reached the new worker {victim}")


def kill_round(gate: Gate, canary: Canary, victim: int, args: argparse.Namespace) -> Round:
    result = Round(victim)
    conninfo = gate.canary().conninfo
    stop = threading.Event()
    sessions = start_sessions(conninfo, args.loss_sessions, stop)
    idle = {w: idle_session(conninfo, w) for w in (0, 1)}
    try:
        time.sleep(args.loss_warmup)
        survivor_pid = worker_pids(gate.log_path)[1 - victim]
        for session in sessions:
            session.at_kill = session.queries
        canary_before = len(canary.failures)
        killed = kill(gate, victim, result)
        time.sleep(max(0.0, killed + KILLED_WINDOW - time.monotonic()))
        result.canary_killed = len(canary.failures) - canary_before
        for failure in canary.failures[canary_before:]:
            log(f"{NAME}: canary login lost to the kill of worker {victim}: {failure}")
        time.sleep(max(0.0, killed + args.loss_hold - time.monotonic()))
        check_sessions(sessions, victim, killed, result)
        check_restart(result)
        after_kill(gate, conninfo, idle, victim, result)
        names = [s.name for s in sessions if s.worker == victim]
        if not backends_gone(idle[1 - victim], names, 5):
            result.problems.append("backends of the killed worker's sessions still run after 5 s")
        survived = worker_pids(gate.log_path)[1 - victim] == survivor_pid
        if not survived or not psutil.pid_exists(survivor_pid):
            result.problems.append(f"the surviving worker (PID {survivor_pid}) was restarted")
    finally:
        stop.set()
        for conn in idle.values():
            conn.close()
    if stuck := stopped_late(sessions, 10):
        result.problems.append(f"{stuck} sessions did not stop within 10 s")
    return result


def stopped_late(sessions: list[Session], timeout: float) -> int:
    """How many session threads are still running ``timeout`` seconds after the stop."""
    deadline = time.monotonic() + timeout
    for session in sessions:
        if session.thread is not None:
            session.thread.join(max(0.0, deadline - time.monotonic()))
    return sum(s.thread is not None and s.thread.is_alive() for s in sessions)


# --------------------------------------------------------------------------- the scenario


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--loss-rounds", type=int, help="worker kills: quick 1, full 4")
    p.add_argument("--loss-sessions", type=int, help="sessions per round: quick 10, full 40")
    p.add_argument("--loss-warmup", type=float, help="seconds before a kill: quick 1, full 3")
    p.add_argument("--loss-hold", type=float, help="seconds after a kill: quick 3, full 10")


def set_defaults(args: argparse.Namespace) -> None:
    quick = args.quick
    args.loss_rounds = args.loss_rounds or (1 if quick else 4)
    args.loss_sessions = args.loss_sessions or (10 if quick else 40)
    args.loss_warmup = args.loss_warmup or (1 if quick else 3)
    args.loss_hold = args.loss_hold or (3 if quick else 10)


def summary(rounds: list[Round], canary: Canary) -> str:
    restarts = [r.restart for r in rounds if r.restart is not None]
    listens = [r.listening for r in rounds if r.listening is not None]
    killed_canary = sum(r.canary_killed for r in rounds)
    lost = (
        f"{sum(r.victim_ended for r in rounds)} of {sum(r.victim_sessions for r in rounds)} "
        f"killed-worker sessions ended (as they must); "
        f"{sum(r.survivor_sessions for r in rounds)} other-worker sessions, "
        f"{sum(r.cancels for r in rounds)} of {CANCELS * len(rounds)} cancels ok; "
        f"{canary.lost()} ({killed_canary} within {KILLED_WINDOW:g} s of a kill); new worker "
        f"started max {max(restarts, default=float('nan')) * 1000:.0f} ms and ready max "
        f"{max(listens, default=float('nan')) * 1000:.0f} ms after the kill (pggate's log)"
    )
    return lost


def process_problems(gate: Gate, supervisor: int, kills: int) -> list[str]:
    """The supervisor runs on, and the only worker starts were the first two and one per kill:
    no worker died that was not killed."""
    problems = []
    if gate.proc.poll() is not None:
        problems.append(f"the supervisor (PID {supervisor}) died (exit {gate.proc.poll()})")
    starts = len(re.findall(r"worker \d+ started", gate.log_path.read_text(errors="replace")))
    if starts != 2 + kills:
        problems.append(f"{starts} worker starts for {kills} kills (expected {2 + kills})")
    running = children(supervisor)
    if running != set(worker_pids(gate.log_path).values()):
        problems.append(f"the supervisor's children {sorted(running)} are not its 2 workers")
    return problems


def run(env: Env, args: argparse.Namespace) -> Row:
    problems: list[str] = []
    rounds: list[Round] = []
    with env.pggate(NAME, ["workers = 2"]) as gate:
        if not wait_ready(gate.log_path, 2, 30):
            problems.append("the two workers did not both start")
        supervisor = gate.proc.pid
        canary = gate.canary()
        log(
            f"{NAME}: {args.loss_rounds} kills, {args.loss_sessions} sessions each, "
            f"{args.loss_warmup:g} s before and {args.loss_hold:g} s after"
        )
        with canary.running():
            for number in range(args.loss_rounds):
                rounds.append(kill_round(gate, canary, number % 2, args))
                problems += [f"kill {number + 1}: {p}" for p in rounds[-1].problems]
        problems += process_problems(gate, supervisor, len(rounds))
        outside = len(canary.failures) - sum(r.canary_killed for r in rounds)
        if outside > 0 or any(r.canary_killed > 1 for r in rounds):
            problems.append(f"canary: {canary.failures[0]}")
        if not canary.logins:
            problems.append("no canary login at all")
        bad = gate.bad_log_lines()
        if bad:
            problems.append(f"{len(bad)} internal-error log lines, e.g. {bad[0][:160]!r}")
    return Row(
        NAME,
        f"workers = 2, {len(rounds)} SIGKILL(s) of a worker (alternating), each under "
        f"{args.loss_sessions} TLS sessions querying in a loop + canary",
        summary(rounds, canary),
        canary.latency(),
        problems,
    )
