"""Many backend hosts: target_session_attrs, load_balance_hosts, connect_timeout per host and
failover without a restart (issue 11, "Many hosts"), against a real primary and a streaming
hot standby made with ``pg_basebackup -R`` (Debian's PostgreSQL 15, loopback TCP).

libpq is the oracle: every routing case connects once through pggate and once with libpq 18's
own PQconnectdb (``psycopg.pq``; ``psycopg.connect`` walks a host list in Python instead) with
the same multi-host conninfo, and the two must land on the same server. Where a session lands
is what the server says: ``inet_server_port()`` and ``pg_is_in_recovery()``.

Two module-scoped pairs: ``pair`` stays as it is (routing, load balancing, ``check --connect``,
dead and stalled hosts); ``story`` runs one failover (stop the primary, promote the standby,
bring the old primary back as a standby) in front of gateways started before it, records what
clients saw at each stage, and the ``test_failover_*`` tests assert on that record.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from conftest import (
    Gateway,
    check_connect,
    debian_bindir,
    free_port,
    login_error,
    prepare_gateway_dir,
    start_gateway,
)
from psycopg import pq
from replication_support import (
    ReplicaCluster,
    ReplicationPair,
    promote,
    replication_pair,
    restart_as_standby,
    stop_fast,
    wait_for_replay,
    wait_until,
)

BINDIR = debian_bindir()

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(BINDIR is None, reason="needs Debian's PostgreSQL 15 (pg_basebackup)"),
]

GATEWAY_HBA = "host all all 127.0.0.1/32 trust\n"
POOLED = "pool_mode = session\n"
BACKEND_DOWN = ("08006", "could not connect to the backend server")
# What the servers log (log_connections) when pggate logs in for a client.
STANDBY_LOGIN = "connection authorized: user=postgres database=postgres"


# --------------------------------------------------------------------------- helpers


def multi_host(*ports: int, **options: str) -> str:
    """A libpq conninfo naming 127.0.0.1 once per port, in that order."""
    hosts = ",".join("127.0.0.1" for _ in ports)
    text = f"host={hosts} port={','.join(str(p) for p in ports)} sslmode=disable user=postgres"
    return text + "".join(f" {key}={value}" for key, value in options.items())


def open_gateway(directory: Path, backend: str, conf: str = "") -> Gateway:
    """pggate in ``directory`` (created) in front of the ``backend`` conninfo."""
    port = prepare_gateway_dir(directory, backend, hba=GATEWAY_HBA, conf=conf)
    return start_gateway(directory, port=port)


@contextlib.contextmanager
def gateways(base: Path, backends: dict[str, tuple[str, str]]) -> Iterator[dict[str, Gateway]]:
    """One pggate per name (backend conninfo, extra pggate.conf lines), started in parallel."""
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = {
            name: pool.submit(open_gateway, base / re.sub(r"\W", "_", name), backend, conf)
            for name, (backend, conf) in backends.items()
        }
        started: dict[str, Gateway] = {}
        errors: list[BaseException] = []
        for name, future in futures.items():
            try:
                started[name] = future.result()
            except Exception as exc:
                errors.append(exc)
    try:
        if errors:
            raise errors[0]
        yield started
    finally:
        for gateway in started.values():
            gateway.stop()


@dataclass(frozen=True)
class Landing:
    """Where one session landed (``port`` None: it was refused, ``error`` says why)."""

    port: int | None = None
    standby: bool | None = None
    pid: int | None = None
    error: str = ""

    @property
    def where(self) -> str:
        if self.port is None:
            return "refused"
        return f"port {self.port} ({'standby' if self.standby else 'primary'})"


def land(dsn: str) -> Landing:
    """Connect with libpq (psycopg) and ask the server where we are."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "select inet_server_port(), pg_is_in_recovery(), pg_backend_pid()"
            ).fetchone()
    except psycopg.OperationalError as exc:
        return Landing(error=str(exc))
    assert row is not None
    return Landing(int(row[0]), bool(row[1]), int(row[2]))


def direct(conninfo: str, dbname: str = "postgres") -> Landing:
    """libpq itself with the multi-host conninfo: the oracle. PQconnectdb, not
    ``psycopg.connect``, which splits the host list and walks it in Python."""
    conn = pq.PGconn.connect(f"connect_timeout=10 {conninfo} dbname={dbname}".encode())
    try:
        if conn.status != pq.ConnStatus.OK:
            return Landing(error=conn.error_message.decode(errors="replace"))
        result = conn.exec_(b"select inet_server_port(), pg_is_in_recovery(), pg_backend_pid()")
        values = [result.get_value(0, column) for column in range(3)]
        assert result.status == pq.ExecStatus.TUPLES_OK and None not in values, values
        port, standby, pid = (value.decode() for value in values if value is not None)
        return Landing(int(port), standby == "t", int(pid))
    finally:
        conn.finish()


def libpq_reasons(error: str) -> list[str]:
    """The per-host reasons of a libpq error, one per failed try, without libpq's wording of
    where (``connection to server at "h", port p failed: ``) or the severity."""
    return [
        line.rsplit("failed: ", 1)[1].removeprefix("FATAL:  ").strip()
        for line in error.splitlines()
        if "failed: " in line
    ]


def where(cluster: ReplicaCluster, role: str) -> str:
    return f"port {cluster.port} ({role})"


def pooled_sessions(gateway: Gateway, count: int) -> list[Landing]:
    """``count`` sessions one after the other, and more (until a deadline) until one of them
    got a backend an earlier one had: pggate resets a backend after its client has gone, so
    the very next session may come too early to get it back."""
    landings: list[Landing] = []
    deadline = time.monotonic() + 10
    while len(landings) < count or (not reused(landings) and time.monotonic() < deadline):
        landings.append(land(gateway.dsn()))
    return landings


def reused(landings: list[Landing]) -> bool:
    """Whether some backend served more than one of these sessions."""
    pids = [landing.pid for landing in landings]
    return len(set(pids)) < len(pids)


def idle_in_pool(cluster: ReplicaCluster, pid: int) -> bool:
    """The backend sits idle after pggate's reset (``DISCARD ALL``, then the query for the
    reset's random marker, ``SELECT E'<16 hex digits>'``): it is in pggate's pool."""
    row = cluster.query(
        "select count(*) from pg_stat_activity "
        f"where pid = {int(pid)} and state = 'idle' "
        "and query ~ '^SELECT E''[0-9a-f]{16}''$'"
    )
    return row == (1,)


# --------------------------------------------------------------------------- the steady pair


@pytest.fixture(scope="module")
def pair() -> Iterator[ReplicationPair]:
    assert BINDIR is not None
    with replication_pair(BINDIR) as result:
        yield result


@pytest.fixture(scope="module")
def stalled_port() -> Iterator[int]:
    """A port whose listener never accepts: the kernel completes the TCP handshake and takes
    the startup packet, and nothing ever answers (a host that hangs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def dead_port() -> Iterator[int]:
    """A port nothing listens on (connection refused), bound so that no one else gets it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


# (hosts, target_session_attrs, where libpq lands: "S" the standby, "P" the primary, None
# refused). "SP" lists the standby first, so read-write must skip it.
ROUTES: list[tuple[str, str, str | None]] = [
    ("SP", "any", "S"),
    ("PS", "any", "P"),
    ("SP", "read-write", "P"),
    ("PS", "read-write", "P"),
    ("SP", "read-only", "S"),
    ("PS", "read-only", "S"),
    ("SP", "primary", "P"),
    ("PS", "primary", "P"),
    ("SP", "standby", "S"),
    ("PS", "standby", "S"),
    ("SP", "prefer-standby", "S"),
    ("PS", "prefer-standby", "S"),
    ("P", "standby", None),
    ("P", "prefer-standby", "P"),  # the second pass takes any server
    ("P", "read-only", None),
    ("S", "read-write", None),
    ("S", "primary", None),
]


def _ports(pair: ReplicationPair, hosts: str) -> list[int]:
    return [{"S": pair.standby.port, "P": pair.primary.port}[h] for h in hosts]


def dead_first(pair: ReplicationPair, dead_port: int) -> str:
    """A refused host, then the standby and the primary: read-write, 2 s per host."""
    return multi_host(
        dead_port,
        pair.standby.port,
        pair.primary.port,
        target_session_attrs="read-write",
        connect_timeout="2",
    )


@pytest.fixture(scope="module")
def steady(
    pair: ReplicationPair,
    stalled_port: int,
    dead_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Gateway]]:
    """Every gateway in front of the steady pair, by name."""
    s, p = pair.standby.port, pair.primary.port
    backends = {
        f"{hosts} {attrs}": (multi_host(*_ports(pair, hosts), target_session_attrs=attrs), "")
        for hosts, attrs, _ in ROUTES
    }
    backends |= {
        "random": (multi_host(s, p, load_balance_hosts="random"), ""),
        "disable": (multi_host(s, p, load_balance_hosts="disable"), ""),
        "dead first": (dead_first(pair, dead_port), ""),
        "stalled first": (
            multi_host(stalled_port, p, target_session_attrs="read-write", connect_timeout="2"),
            "",
        ),
        "read-write pooled": (multi_host(s, p, target_session_attrs="read-write"), POOLED),
    }
    with gateways(tmp_path_factory.mktemp("steady"), backends) as started:
        yield started


@pytest.mark.parametrize(
    ("hosts", "attrs", "expected"), ROUTES, ids=[f"{h}-{a}" for h, a, _ in ROUTES]
)
def test_target_session_attrs_lands_where_libpq_does(
    pair: ReplicationPair,
    steady: dict[str, Gateway],
    hosts: str,
    attrs: str,
    expected: str | None,
) -> None:
    gateway = steady[f"{hosts} {attrs}"]
    oracle = direct(multi_host(*_ports(pair, hosts), target_session_attrs=attrs))
    through = land(gateway.dsn())
    roles = {"S": where(pair.standby, "standby"), "P": where(pair.primary, "primary")}
    assert oracle.where == (roles[expected] if expected else "refused"), oracle.error
    assert through.where == oracle.where, gateway.log()
    if expected is None:
        # The client gets 08006; the log has each host's reason in libpq's words.
        assert login_error(gateway.port) == BACKEND_DOWN
        reasons = libpq_reasons(oracle.error)
        assert reasons, oracle.error
        for port, reason in zip(_ports(pair, hosts), reasons, strict=True):
            # Logged just after the client's FATAL went out.
            gateway.wait_for_log(f'connection to host "127.0.0.1" port {port} failed: {reason}')


def test_read_write_sessions_reach_the_primary_behind_a_standby_listed_first(
    pair: ReplicationPair, steady: dict[str, Gateway]
) -> None:
    """The contract's first case: every session, pooled or not, ends on the primary, where
    it can write. The standby was asked first each time (its log shows pggate's logins), as
    libpq asks it: target_session_attrs is decided per backend login."""
    for name in ("SP read-write", "read-write pooled"):
        gateway = steady[name]
        logins = pair.standby.log_path.read_text().count(STANDBY_LOGIN)
        landings = [land(gateway.dsn()) for _ in range(5)]
        assert {landing.where for landing in landings} == {where(pair.primary, "primary")}
        assert pair.standby.log_path.read_text().count(STANDBY_LOGIN) >= logins + 5, name
        with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
            conn.execute("create table if not exists written_through_pggate (x int)")
            conn.execute("insert into written_through_pggate values (1)")


def test_load_balance_random_uses_both_hosts(
    pair: ReplicationPair, steady: dict[str, Gateway]
) -> None:
    both = {where(pair.standby, "standby"), where(pair.primary, "primary")}
    oracle = {
        direct(multi_host(pair.standby.port, pair.primary.port, load_balance_hosts="random")).where
        for _ in range(40)
    }
    assert oracle == both
    through = {land(steady["random"].dsn()).where for _ in range(40)}
    assert through == both


def test_load_balance_disable_always_takes_the_first_host(
    pair: ReplicationPair, steady: dict[str, Gateway]
) -> None:
    through = {land(steady["disable"].dsn()).where for _ in range(40)}
    assert through == {where(pair.standby, "standby")}


def test_a_refused_host_is_skipped_for_the_next(
    pair: ReplicationPair, steady: dict[str, Gateway], dead_port: int
) -> None:
    """Nothing listens on the first host: libpq's try-next-host, then read-write skips the
    standby and takes the primary."""
    gateway = steady["dead first"]
    conninfo = dead_first(pair, dead_port)
    started = time.monotonic()
    through = land(gateway.dsn())
    elapsed = time.monotonic() - started
    assert through.where == direct(conninfo).where == where(pair.primary, "primary")
    assert elapsed < 2, "a refused connection is not a timeout"


def test_connect_timeout_applies_per_host(
    pair: ReplicationPair, steady: dict[str, Gateway], stalled_port: int
) -> None:
    """The first host takes the connection and never answers: connect_timeout=2 gives up on
    it, as libpq does, and the session succeeds on the next host."""
    conninfo = multi_host(
        stalled_port, pair.primary.port, target_session_attrs="read-write", connect_timeout="2"
    )
    started = time.monotonic()
    oracle = direct(conninfo)
    libpq_elapsed = time.monotonic() - started
    started = time.monotonic()
    through = land(steady["stalled first"].dsn())
    elapsed = time.monotonic() - started
    assert through.where == oracle.where == where(pair.primary, "primary")
    assert 1.5 < libpq_elapsed < 6
    assert 1.5 < elapsed < 6


def test_a_backend_refusal_is_final_as_in_libpq(
    pair: ReplicationPair, steady: dict[str, Gateway], dead_port: int
) -> None:
    """A server's own refusal (no such database) ends the walk, as libpq's error_return does:
    the next host is not tried, and the client gets the server's error itself."""
    conninfo = dead_first(pair, dead_port)
    oracle = direct(conninfo, dbname="nope")
    assert oracle.port is None
    assert 'database "nope" does not exist' in oracle.error
    assert f"port {pair.primary.port}" not in oracle.error  # libpq never tried the primary
    gateway = steady["dead first"]
    assert login_error(gateway.port, database="nope") == (
        "3D000",
        'database "nope" does not exist',
    )


def test_a_cancel_reaches_the_host_the_session_runs_on(
    pair: ReplicationPair, steady: dict[str, Gateway]
) -> None:
    """pggate forwards a CancelRequest to the host its session runs on (the second one here),
    not to the first host of the conninfo."""
    gateway = steady["SP read-write"]
    with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
        row = conn.execute("select pg_backend_pid(), inet_server_port()").fetchone()
        assert row is not None and row[1] == pair.primary.port
        pid = int(row[0])
        failures: list[BaseException] = []

        def cancel_once_running() -> None:
            try:
                wait_until(
                    lambda: (
                        pair.primary.query(
                            "select count(*) from pg_stat_activity where "
                            f"pid = {pid} and state = 'active' and query like 'select pg_sleep%'"
                        )
                        == (1,)
                    ),
                    "the query to run",
                    timeout=10,
                )
                conn.cancel_safe(timeout=10)
            except BaseException as exc:  # reported by the test thread
                failures.append(exc)

        canceller = threading.Thread(target=cancel_once_running)
        canceller.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("select pg_sleep(20)")
        canceller.join()
        assert not failures, failures
        assert time.monotonic() - started < 10


def test_check_connect_lists_each_host_with_its_role(
    pair: ReplicationPair, dead_port: int, tmp_path: Path
) -> None:
    directory = tmp_path / "gw"
    directory.mkdir()
    backend = dead_first(pair, dead_port)
    (directory / "pggate.conf").write_text(f"port = {free_port()}\nbackend = '{backend}'\n")
    (directory / "pg_hba.conf").write_text(GATEWAY_HBA)
    result = check_connect(directory)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "(target_session_attrs=read-write)" in out
    assert f'host "127.0.0.1" port {pair.standby.port}: standby\n' in out
    assert f'host "127.0.0.1" port {pair.primary.port}: primary\n' in out
    assert f'host "127.0.0.1" port {dead_port}: unreachable:' in out
    assert "Connection refused" in out
    assert out.count("link: not encrypted (sslmode=disable)") == 2


def premise(condition: bool, what: str) -> None:
    """A precondition of a test, told apart from the property it checks."""
    if not condition:
        pytest.fail(f"premise not met: {what}")


def test_a_pooled_backend_is_not_reused_once_its_host_is_read_only(
    pair: ReplicationPair, steady: dict[str, Gateway]
) -> None:
    """libpq's read-write refuses a server whose default_transaction_read_only is on. A
    backend pooled before the server was made read-only must not be handed to a read-write
    client either: such a client would get a session where every write fails."""
    gateway = steady["read-write pooled"]
    primary = pair.primary
    with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
        conn.execute("create table if not exists read_only_probe (x int)")
    landings = pooled_sessions(gateway, 3)
    premise({landing.where for landing in landings} == {where(primary, "primary")}, "primary")
    premise(reused(landings), "the pool reuses backends")
    pid = landings[-1].pid
    assert pid is not None
    wait_until(lambda: idle_in_pool(primary, pid), "the backend to be back in the pool")
    writable = f"{primary.tcp} options='-c default_transaction_read_only=off'"

    def read_only(value: str) -> None:
        with psycopg.connect(writable, autocommit=True) as conn:
            if value == "on":
                conn.execute("alter system set default_transaction_read_only = on")
            else:
                conn.execute("alter system reset default_transaction_read_only")
            conn.execute("select pg_reload_conf()")
        wait_until(
            lambda: primary.query("show default_transaction_read_only") == (value,),
            f"default_transaction_read_only = {value}",
        )

    read_only("on")
    try:
        oracle = direct(
            multi_host(pair.standby.port, primary.port, target_session_attrs="read-write")
        )
        premise(oracle.where == "refused", "libpq refuses a read-only primary")
        premise(
            libpq_reasons(oracle.error) == ["session is read-only", "session is read-only"],
            "libpq's reasons",
        )
        try:
            with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
                row = conn.execute("select pg_backend_pid()").fetchone()
                try:
                    conn.execute("insert into read_only_probe values (1)")
                    write = "succeeded"
                except psycopg.errors.ReadOnlySqlTransaction as exc:
                    write = f"failed: {exc}"
        except psycopg.OperationalError:
            return  # refused, as libpq refuses
        raise AssertionError(
            f"a read-write client got backend {row[0] if row else '?'} (pooled as {pid}) of "
            f"a read-only server; its first write {write}"
        )
    finally:
        read_only("off")


# --------------------------------------------------------------------------- the failover


@dataclass
class FailoverStory:
    """What clients saw through gateways started before the failover and never restarted.

    ``old`` is the first primary (stopped, later back as a standby), ``new`` the standby that
    was promoted; the conninfo lists ``new`` first.
    """

    old: ReplicaCluster
    new: ReplicaCluster
    gateways: dict[str, Gateway]
    pids: dict[str, int]
    before: dict[str, list[Landing]] = field(default_factory=dict)
    standby_pooled_pid: int | None = None
    down: dict[str, tuple[str, str]] = field(default_factory=dict)
    down_oracle: Landing = Landing()
    running_while_down: bool = False
    after: dict[str, list[Landing]] = field(default_factory=dict)
    written_after: int = 0
    rejoined: dict[str, list[Landing]] = field(default_factory=dict)
    rejoined_oracle: dict[str, Landing] = field(default_factory=dict)


def _sessions(story: FailoverStory, count: int) -> dict[str, list[Landing]]:
    """``count`` sessions through each read-write gateway (pooled ones wait for reuse)."""
    plain, pooled = story.gateways["plain"], story.gateways["pooled"]
    return {
        "plain": [land(plain.dsn()) for _ in range(count)],
        "pooled": pooled_sessions(pooled, count),
    }


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FailoverStory]:
    assert BINDIR is not None
    with replication_pair(BINDIR) as fresh:
        old, new = fresh.primary, fresh.standby
        read_write = multi_host(new.port, old.port, target_session_attrs="read-write")
        standby = multi_host(new.port, old.port, target_session_attrs="standby")
        backends = {
            "plain": (read_write, ""),
            "pooled": (read_write, POOLED),
            "standby pooled": (standby, POOLED),
        }
        with gateways(tmp_path_factory.mktemp("failover"), backends) as started:
            record = FailoverStory(
                old, new, started, {name: gw.process.pid for name, gw in started.items()}
            )
            _run(record)
            yield record


def _run(story: FailoverStory) -> None:
    old, new, gws = story.old, story.new, story.gateways

    # 1. Both servers up: read-write sessions on the old primary; one standby session pooled.
    story.before = _sessions(story, 4)
    with psycopg.connect(gws["plain"].dsn(), autocommit=True) as conn:
        conn.execute("create table survives_failover (x int)")
        conn.execute("insert into survives_failover values (1)")
    standby_sessions = pooled_sessions(gws["standby pooled"], 3)
    story.before["standby pooled"] = standby_sessions
    pid = standby_sessions[-1].pid
    if pid is not None and reused(standby_sessions):
        story.standby_pooled_pid = pid
        wait_until(lambda: idle_in_pool(new, pid), "the standby backend to be back in the pool")
    wait_for_replay(old, new)

    # 2. The primary stops: nothing can take a read-write session.
    stop_fast(old)
    story.down = {name: login_error(gws[name].port) for name in ("plain", "pooled")}
    story.down_oracle = direct(multi_host(new.port, old.port, target_session_attrs="read-write"))
    story.running_while_down = all(gw.process.poll() is None for gw in gws.values())

    # 3. The standby is promoted: new sessions find it, with no restart or reload of pggate.
    promote(new)
    story.after = _sessions(story, 4)
    with psycopg.connect(gws["pooled"].dsn(), autocommit=True) as conn:
        conn.execute("insert into survives_failover values (2)")
        row = conn.execute("select count(*) from survives_failover").fetchone()
        story.written_after = int(row[0]) if row else 0

    # 4. The old primary comes back as a standby of the new one.
    restart_as_standby(old, new)
    story.rejoined = _sessions(story, 10)
    story.rejoined["standby pooled"] = [land(gws["standby pooled"].dsn())]
    story.rejoined_oracle = {
        attrs: direct(multi_host(new.port, old.port, target_session_attrs=attrs))
        for attrs in ("read-write", "standby")
    }


def test_failover_read_write_sessions_start_on_the_first_primary(story: FailoverStory) -> None:
    for name in ("plain", "pooled"):
        landings = story.before[name]
        assert {landing.where for landing in landings} == {where(story.old, "primary")}, name
    assert reused(story.before["pooled"]), "pool_mode = session reused no backend"


def test_failover_while_the_primary_is_down_logins_get_08006(story: FailoverStory) -> None:
    assert story.down_oracle.where == "refused"
    assert libpq_reasons(story.down_oracle.error) == ["session is read-only", "Connection refused"]
    assert story.down == {"plain": BACKEND_DOWN, "pooled": BACKEND_DOWN}
    assert story.running_while_down
    log = story.gateways["plain"].log()
    new, old = story.new.port, story.old.port
    assert f'connection to host "127.0.0.1" port {new} failed: session is read-only' in log
    assert f'connection to host "127.0.0.1" port {old} failed: Connection refused' in log


def test_failover_new_sessions_reach_the_promoted_standby_without_restart(
    story: FailoverStory,
) -> None:
    for name, landings in story.after.items():
        assert {landing.where for landing in landings} == {where(story.new, "primary")}, name
    assert story.written_after == 2  # the row written before the failover, and one after
    for name, gateway in story.gateways.items():
        assert gateway.process.poll() is None, name
        assert gateway.process.pid == story.pids[name], name
        assert "reloaded" not in gateway.log(), name


def test_failover_no_session_lands_on_the_old_primary_back_as_a_standby(
    story: FailoverStory,
) -> None:
    assert story.rejoined_oracle["standby"].where == where(story.old, "standby")
    assert story.rejoined_oracle["read-write"].where == where(story.new, "primary")
    for name in ("plain", "pooled"):
        landings = story.after[name] + story.rejoined[name]
        assert {landing.where for landing in landings} == {where(story.new, "primary")}, name
    assert reused(story.rejoined["pooled"]), "the pool reused nothing on the new primary"


def test_failover_pooled_standby_backends_are_reused_before_the_failover(
    story: FailoverStory,
) -> None:
    """The premise of the next test: with target_session_attrs=standby the pool did hold a
    backend on the standby when it was promoted."""
    landings = story.before["standby pooled"]
    assert {landing.where for landing in landings} == {where(story.new, "standby")}
    assert story.standby_pooled_pid is not None


def test_failover_a_pooled_backend_is_not_reused_after_its_host_was_promoted(
    story: FailoverStory,
) -> None:
    """After the failover libpq's standby session goes to the old primary, now a standby.
    pggate hands out the backend it pooled on the promoted server instead."""
    (through,) = story.rejoined["standby pooled"]
    assert through.where == story.rejoined_oracle["standby"].where, (
        f"landed on {through.where} (backend {through.pid}, pooled as "
        f"{story.standby_pooled_pid} before the promotion)"
    )
