"""A primary and a streaming standby on loopback TCP, for the multi-host backend tests.

No test functions here. ``replication_pair`` starts a primary (``wal_level = replica``, a
``replication`` line in its pg_hba.conf) and a hot standby cloned from it with
``pg_basebackup -R``; ``promote`` and ``restart_as_standby`` carry out a failover. Everything
the clusters' OS user must do (``pg_basebackup``) runs as that user, the way
:class:`~pggate.embedded.EmbeddedCluster` runs initdb and postgres.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from conftest import free_port
from reference import TcpCluster

from pggate import embedded
from pggate.embedded.users import Identity, child_env, chown_to_user, identity_kwargs

READY_TIMEOUT = 30.0

_PRIMARY_SETTINGS = """
# replication_support: a primary that a standby can be cloned from and stream from
wal_level = replica
max_wal_senders = 10
wal_keep_size = '64MB'
hot_standby = on
fsync = off
log_connections = on
"""

_TCP_HBA = """
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
"""


class ReplicaCluster(TcpCluster):
    """A loopback TCP cluster that may be a hot standby.

    EmbeddedCluster waits for postmaster.pid's status line to say ``ready``; a hot standby
    that accepts read-only connections says ``standby`` there instead (PM_STATUS_STANDBY).
    """

    def _is_ready(self, pid: int) -> bool:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        if len(lines) < 8 or lines[0].strip() != str(pid):
            return False
        return lines[7].strip() in ("ready", "standby")

    @property
    def tcp(self) -> str:
        """libpq conninfo for the superuser over loopback TCP."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres sslmode=disable"

    def query(self, sql: str) -> tuple[object, ...]:
        """One row of ``sql``, run over TCP as the superuser."""
        with psycopg.connect(self.tcp, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(sql.encode()).fetchone()
        assert row is not None
        return tuple(row)

    def in_recovery(self) -> bool:
        return self.query("select pg_is_in_recovery()")[0] is True

    def identity(self) -> Identity | None:
        return Identity.lookup(self.run_as) if self.run_as is not None else None

    def write_owned(self, name: str, text: str, *, append: bool = False) -> None:
        """Write a file of the data directory as its owner would have (0600)."""
        path = self.data_dir / name
        with path.open("a" if append else "w") as f:
            f.write(text)
        path.chmod(0o600)
        chown_to_user(path, self.identity())


def run_as(cluster: ReplicaCluster, *command: str, timeout: float = 120) -> str:
    """Run a PostgreSQL client program as the cluster's OS user; its output, or an error."""
    user = cluster.identity()
    proc = subprocess.run(
        list(command),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(user),
        cwd="/",
        umask=0o077,
        check=False,
        **identity_kwargs(user),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


@dataclass
class ReplicationPair:
    primary: ReplicaCluster
    standby: ReplicaCluster
    base: Path


def _cluster(base: Path, name: str, bindir: Path, user: str | None) -> ReplicaCluster:
    return ReplicaCluster(
        data_dir=base / name,
        socket_dir=base / f"{name}-run",
        bindir=bindir,
        run_as=user,
        port=free_port(),
    )


def start_primary(base: Path, bindir: Path, user: str | None) -> ReplicaCluster:
    primary = _cluster(base, "primary", bindir, user)
    primary.init()
    primary.write_owned("postgresql.conf", _PRIMARY_SETTINGS, append=True)
    primary.write_owned("pg_hba.conf", _TCP_HBA, append=True)
    primary.start(timeout=READY_TIMEOUT)
    return primary


def clone_standby(primary: ReplicaCluster, base: Path, name: str = "standby") -> ReplicaCluster:
    """``pg_basebackup -R`` from ``primary``, started as a hot standby that streams from it."""
    standby = _cluster(base, name, primary.bindir, primary.run_as)
    standby.data_dir.mkdir(mode=0o700)
    chown_to_user(standby.data_dir, standby.identity())
    run_as(
        standby,
        str(primary.bindir / "pg_basebackup"),
        "--host=127.0.0.1",
        f"--port={primary.port}",
        "--username=postgres",
        f"--pgdata={standby.data_dir}",
        "--write-recovery-conf",
        "--wal-method=stream",
        "--checkpoint=fast",
        "--no-sync",
    )
    standby.start(timeout=READY_TIMEOUT)
    wait_until(lambda: standby.in_recovery(), "the standby to accept read-only sessions")
    return standby


def wait_for_streaming(primary: ReplicaCluster, standby_count: int = 1) -> None:
    """Until ``standby_count`` standbys stream from ``primary`` (pg_stat_replication)."""
    wait_until(
        lambda: (
            primary.query("select count(*) from pg_stat_replication where state = 'streaming'")
            == (standby_count,)
        ),
        f"{standby_count} standby(s) streaming from port {primary.port}",
    )


def stop_fast(cluster: ReplicaCluster) -> None:
    """``pg_ctl stop -m fast``, as an operator would stop a primary."""
    run_as(
        cluster, str(cluster.bindir / "pg_ctl"), "stop", "-D", str(cluster.data_dir), "-m", "fast"
    )
    cluster.stop()  # reaps the postmaster (our child) and checks that it is gone
    assert not cluster.is_running()


def wait_for_replay(primary: ReplicaCluster, standby: ReplicaCluster) -> None:
    """Until ``standby`` has replayed everything ``primary`` has written so far."""
    (lsn,) = primary.query("select pg_current_wal_lsn()::text")
    wait_until(
        lambda: standby.query(f"select pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn") == (True,),
        f"port {standby.port} to replay up to {lsn}",
    )


def promote(standby: ReplicaCluster) -> None:
    """``pg_promote()`` and wait until the server has left recovery."""
    assert standby.query("select pg_promote(true, 30)") == (True,)
    wait_until(lambda: not standby.in_recovery(), f"port {standby.port} to be promoted")


def restart_as_standby(old: ReplicaCluster, new_primary: ReplicaCluster) -> None:
    """Start a stopped former primary again as a hot standby of ``new_primary``
    (standby.signal and primary_conninfo, as ``pg_basebackup -R`` would have written)."""
    assert not old.is_running()
    old.write_owned("standby.signal", "")
    old.write_owned(
        "postgresql.auto.conf",
        f"primary_conninfo = 'host=127.0.0.1 port={new_primary.port} user=postgres'\n"
        "recovery_target_timeline = 'latest'\n",
        append=True,
    )
    old.start(timeout=READY_TIMEOUT)
    wait_until(lambda: old.in_recovery(), f"port {old.port} to run as a standby")


def wait_until(
    condition: Callable[[], object],
    what: str,
    timeout: float = READY_TIMEOUT,
    interval: float = 0.05,
) -> None:
    """Poll ``condition()`` until true; connection errors count as not yet."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except psycopg.OperationalError as exc:
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}" + (f": {last}" if last else ""))


@contextlib.contextmanager
def replication_pair(bindir: str | Path) -> Iterator[ReplicationPair]:
    """A primary and a streaming hot standby on loopback TCP, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="pggate-repl-"))
    os.chmod(base, 0o755)
    user = embedded.run_as_user()
    binaries = embedded.bindir_for_user(Path(bindir), user)
    started: list[ReplicaCluster] = []
    try:
        primary = start_primary(base, binaries, user)
        started.append(primary)
        standby = clone_standby(primary, base)
        started.append(standby)
        wait_for_streaming(primary)
        yield ReplicationPair(primary, standby, base)
    finally:
        for cluster in reversed(started):
            cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
