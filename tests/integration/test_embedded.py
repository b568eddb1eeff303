"""The embedded cluster against real PostgreSQL processes (no mocks).

One cluster serves the module; tests that stop or break it leave it running again.
Directories are made under /tmp with mkdtemp and opened to 0755: pytest's own tmp_path lives
under a 0700 directory that the cluster's user (when we are root) cannot enter.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from pggate.embedded import (
    MIN_SERVER_VERSION,
    EmbeddedCluster,
    bindir_for_user,
    find_postgres_bindir,
    require_reachable,
    run_as_user,
)
from pggate.errors import PggateError

pytestmark = pytest.mark.integration

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runs the cluster as a user)")


def _scratch_dir(mode: int = 0o755) -> Path:
    """A short directory under /tmp (Unix socket paths must stay short)."""
    path = Path(tempfile.mkdtemp(prefix="pggate-emb-", dir="/tmp"))
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def gateway_dir() -> Iterator[Path]:
    path = _scratch_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(gateway_dir: Path) -> Iterator[EmbeddedCluster]:
    c = EmbeddedCluster.for_gateway(gateway_dir)
    c.init()
    c.start()
    yield c
    c.stop()


def _query(c: EmbeddedCluster, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(c.conninfo) as conn:
        return conn.execute(sql).fetchall()


def _postmaster(c: EmbeddedCluster) -> psutil.Process:
    pid = int((c.data_dir / "postmaster.pid").read_text().split()[0])
    return psutil.Process(pid)


def _gone(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_find_postgres_bindir() -> None:
    bindir = find_postgres_bindir()
    for prog in ("postgres", "initdb", "pg_ctl"):
        assert os.access(bindir / prog, os.X_OK)
    out = subprocess.run([bindir / "postgres", "--version"], capture_output=True, text=True)
    assert int(out.stdout.split()[2].split(".")[0]) >= MIN_SERVER_VERSION
    assert find_postgres_bindir(str(bindir)) == bindir


def test_explicit_bindir_must_qualify(tmp_path: Path) -> None:
    with pytest.raises(PggateError, match=r"no executable postgres, initdb, pg_ctl") as exc:
        find_postgres_bindir(str(tmp_path))
    assert str(tmp_path) in str(exc.value)
    with pytest.raises(PggateError, match="not a directory"):
        find_postgres_bindir(str(tmp_path / "nope"))


def test_query_over_private_socket(cluster: EmbeddedCluster) -> None:
    assert cluster.is_running()
    assert cluster.socket_path.is_socket()
    [(user, version)] = _query(cluster, "select current_user, version()")
    assert user == "postgres"
    assert str(version).startswith("PostgreSQL ")
    [(conns,)] = _query(cluster, "show max_connections")
    assert conns == "300"
    [(perms,)] = _query(cluster, "show unix_socket_permissions")
    assert perms == "0700"
    rules = _query(cluster, "select type, database, user_name, auth_method from pg_hba_file_rules")
    assert rules == [
        ("local", ["all"], ["all"], "trust"),
        ("local", ["replication"], ["all"], "trust"),
    ]


def test_no_tcp_listener(cluster: EmbeddedCluster) -> None:
    [(addresses,)] = _query(cluster, "show listen_addresses")
    assert addresses == ""
    postmaster = _postmaster(cluster)
    for proc in [postmaster, *postmaster.children(recursive=True)]:
        try:
            assert proc.net_connections(kind="inet") == []
        except psutil.NoSuchProcess:  # a backend of an earlier session just exited
            assert proc is not postmaster


@needs_root
def test_runs_as_unprivileged_user(cluster: EmbeddedCluster) -> None:
    assert cluster.run_as == run_as_user()
    assert cluster.run_as is not None
    uid = pwd.getpwnam(cluster.run_as).pw_uid
    assert uid != 0
    postmaster = _postmaster(cluster)
    assert postmaster.uids().real == postmaster.uids().effective == uid
    assert 0 not in postmaster.gids()
    for d in (cluster.data_dir, cluster.socket_dir):
        st = d.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid, 0o700)
    assert (cluster.data_dir / "postmaster.pid").stat().st_uid == uid  # written by the server


def test_init_twice_is_refused(cluster: EmbeddedCluster) -> None:
    with pytest.raises(PggateError, match="already holds a PostgreSQL cluster"):
        cluster.init()


def test_stop_leaves_nothing_and_restart_works(cluster: EmbeddedCluster) -> None:
    postmaster = _postmaster(cluster)
    procs = [postmaster, *postmaster.children(recursive=True)]
    assert len(procs) > 3
    conn = psycopg.connect(cluster.conninfo)  # a session open across the stop
    try:
        procs = [postmaster, *postmaster.children(recursive=True)]
        cluster.stop()
    finally:
        conn.close()
    assert not cluster.is_running()
    assert all(_gone(p) for p in procs)
    assert not cluster.socket_path.exists()
    assert not (cluster.data_dir / "postmaster.pid").exists()
    assert list(cluster.socket_dir.iterdir()) == []
    cluster.stop()  # idempotent
    cluster.stop("immediate")

    cluster.start()
    assert cluster.is_running()
    assert _query(cluster, "select 1") == [(1,)]


def test_stale_lock_files_with_recycled_pid(cluster: EmbeddedCluster) -> None:
    """Lock files naming a live non-postgres process (a recycled PID) do not block start."""
    cluster.stop()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (cluster.data_dir / "postmaster.pid").write_text(f"{sleeper.pid}\n{cluster.data_dir}\n")
        Path(f"{cluster.socket_path}.lock").write_text(f"{sleeper.pid}\n")
        assert not cluster.is_running()
        cluster.start()
        assert _query(cluster, "select 1") == [(1,)]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_leftover_cluster_from_a_crashed_process_is_replaced(cluster: EmbeddedCluster) -> None:
    """A postmaster orphaned by a dead pggate is detected, stopped and replaced by our own."""
    cluster.stop()
    script = textwrap.dedent(
        """
        import os, sys
        from pathlib import Path
        from pggate.embedded import EmbeddedCluster
        data, sock, bindir, user = sys.argv[1:]
        EmbeddedCluster(Path(data), Path(sock), Path(bindir), user or None).start()
        os._exit(0)  # "crash": no stop
        """
    )
    args = [str(cluster.data_dir), str(cluster.socket_dir), str(cluster.bindir)]
    subprocess.run([sys.executable, "-c", script, *args, cluster.run_as or ""], check=True)
    orphan = _postmaster(cluster)
    assert not _gone(orphan)

    fresh = EmbeddedCluster(cluster.data_dir, cluster.socket_dir, cluster.bindir, cluster.run_as)
    assert fresh.is_running()
    fresh.start()
    try:
        assert _gone(orphan)
        assert _postmaster(fresh).pid != orphan.pid
        assert _query(fresh, "select 1") == [(1,)]
    finally:
        fresh.stop()
    cluster.start()


def test_bad_configuration_reports_the_server_log(cluster: EmbeddedCluster) -> None:
    conf = cluster.data_dir / "postgresql.conf"
    good = conf.read_text()
    cluster.stop()
    try:
        with conf.open("a") as f:
            f.write("this is not a setting\n")
        with pytest.raises(PggateError) as exc:
            cluster.start(timeout=30)
        message = str(exc.value)
        assert "failed to start" in message
        assert "syntax error" in message
        assert str(conf) in message
        assert str(cluster.log_path) in message
        assert not cluster.is_running()
        assert not cluster.socket_path.exists()
    finally:
        with conf.open("w") as f:  # keeps the file's owner
            f.write(good)
    cluster.start()
    assert _query(cluster, "select 1") == [(1,)]


def test_conninfo_quotes_awkward_paths() -> None:
    c = EmbeddedCluster(Path("/tmp/a b/pgdata"), Path("/tmp/a b/it's"), Path("/x"), None, 6543)
    parsed = psycopg.conninfo.conninfo_to_dict(c.conninfo)
    assert parsed == {
        "host": "/tmp/a b/it's",
        "port": "6543",
        "user": "postgres",
        "dbname": "postgres",
    }
    assert c.socket_path == Path("/tmp/a b/it's/.s.PGSQL.6543")


def test_socket_path_too_long_is_refused() -> None:
    base = Path("/tmp") / ("x" * 120)
    c = EmbeddedCluster(base / "pgdata", base / "s", find_postgres_bindir(), run_as_user())
    with pytest.raises(PggateError, match="longer than the 107"):
        c.init()
    assert not base.exists()


@needs_root
def test_unreachable_gateway_dir_is_refused() -> None:
    private = _scratch_dir(0o700)
    try:
        with pytest.raises(PggateError) as exc:
            EmbeddedCluster.for_gateway(private / "gw")
        assert f'"{private}"' in str(exc.value)
        assert f'chmod o+x "{private}"' in str(exc.value)

        c = EmbeddedCluster(
            private / "pgdata", private / "s", find_postgres_bindir(), run_as_user()
        )
        with pytest.raises(PggateError, match="cannot reach"):
            c.init()
        assert not (private / "pgdata").exists()
    finally:
        shutil.rmtree(private)


def test_reachable_binaries_are_used_in_place() -> None:
    bindir = find_postgres_bindir()
    assert bindir_for_user(bindir, run_as_user(), Path("/nonexistent")) == bindir


@needs_root
def test_unreachable_binaries_are_copied_for_the_user() -> None:
    """A venv under a 0700 directory (like /root): the install tree is copied to the cache."""
    user = run_as_user()
    assert user is not None
    source = find_postgres_bindir()
    private, cache_parent = _scratch_dir(0o700), _scratch_dir()
    try:
        # Mirror the wheel's layout (pginstall/{bin,lib} and the .libs its RPATH points to).
        root = source.parent
        site = private / "site"
        for part in ("bin", "lib"):
            shutil.copytree(root / part, site / root.parent.name / root.name / part, symlinks=True)
        wheel_libs = root.parent.parent / f"{root.parent.name}.libs"
        if wheel_libs.is_dir():
            shutil.copytree(wheel_libs, site / wheel_libs.name, symlinks=True)
        hidden = site / root.parent.name / root.name / "bin"
        with pytest.raises(PggateError, match="cannot reach"):
            require_reachable(hidden, user)
        cache = cache_parent / "cache"
        copied = bindir_for_user(hidden, user, cache)
        assert copied.is_relative_to(cache)
        assert copied != hidden
        pw = pwd.getpwnam(user)
        for prog in ("postgres", "initdb", "pg_ctl"):  # initdb and pg_ctl need the copied libpq
            subprocess.run(
                [copied / prog, "--version"],
                check=True,
                capture_output=True,
                user=pw.pw_uid,
                group=pw.pw_gid,
                extra_groups=[],
                cwd="/",
            )
        assert bindir_for_user(hidden, user, cache) == copied  # cached
        assert [p.name for p in cache.iterdir()] == [copied.relative_to(cache).parts[0]]
    finally:
        shutil.rmtree(private)
        shutil.rmtree(cache_parent)
