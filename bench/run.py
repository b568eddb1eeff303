"""pggate vs PgBouncer vs PostgreSQL's own TLS, on loopback, in one run.

Sets up, in temporary directories that are removed at the end (also on Ctrl-C or error):

* a PostgreSQL 15 cluster of its own (``ssl = on``, listening on 127.0.0.1 with ``hostssl ...
  trust`` and on a Unix socket),
* PgBouncer with client TLS (``client_tls_sslmode = require``, session pooling) in front of it,
  talking to PostgreSQL over the Unix socket,
* pggate in front of it (backend over the Unix socket, one backend connection per client),

all three with the same kind of server certificate (ECDSA P-256, or RSA-2048 with ``--rsa``).
Then each workload runs on each target, interleaved (A B C A B C ...), ``--rounds`` times:

* W1 select-only throughput: ``pgbench -S -c 8 -j 2 -T secs`` over TLS (TPS, mean latency,
  and the proxy's CPU time per transaction from /proc/PID/stat),
* W2 connection rate: ``pgbench -S -C -c 4 -j 2 -T secs`` (a new TLS connection per transaction),
* W3 bulk transfer: ``\\copy (select repeat('x',1000) ...) to /dev/null`` with psql, in MB/s,
* W4 idle footprint: N idle TLS sessions (SSLRequest, TLS, StartupMessage, ReadyForQuery) from an
  asyncio client; the proxy's PSS (its process tree, not PostgreSQL's backends) minus its
  baseline, per connection. For PostgreSQL direct the new backends' PSS is shown instead.

With ``--gss`` (part of ``--full``) a throwaway MIT Kerberos realm (tests/integration/kdc.py) is
set up too, PostgreSQL and pggate get its ``postgres/localhost`` key (``krb_server_keyfile``,
``hostgssenc all all 127.0.0.1/32 trust``), and W1 and W3 run once more over GSSAPI encryption
(W1-GSS, W3-GSS; libpq with ``gssencmode=require``, ``sslmode=disable``) on PostgreSQL direct and
pggate (PgBouncer has no GSSAPI: "n/a"). Before measuring, each GSS target is probed and the run
stops if the connection is not GSS-encrypted (psql ``\\conninfo``; for PostgreSQL direct also
``pg_stat_gssapi``).

Prints the machine and a markdown table of medians, min-max spread and ratios to PgBouncer and to
PostgreSQL direct. No assertions: this measures, it does not judge.

    .venv/bin/python bench/run.py --quick          # ~4 minutes on 2 cores
    .venv/bin/python bench/run.py --full           # longer runs, 500 MB COPY, W4 also at 10,000
    .venv/bin/python bench/run.py --quick --rsa --rounds 5 --json out.json
    .venv/bin/python bench/run.py --quick --py-spy /tmp/pggate-w1   # + a profile of pggate in W1
    .venv/bin/python bench/run.py --quick --gss --workloads W1,W3   # + W1-GSS and W3-GSS

Must run as root (PostgreSQL and PgBouncer are run as the ``postgres`` user) or as a user that
can run them itself.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import functools
import json
import os
import platform
import pwd
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import psutil

from pggate import embedded
from pggate.tls import certs

REPO = Path(__file__).resolve().parent.parent
PG_BINDIR = Path("/usr/lib/postgresql/15/bin")
PGBOUNCER = Path(shutil.which("pgbouncer") or "/usr/sbin/pgbouncer")
PGBENCH = PG_BINDIR / "pgbench"
PSQL = PG_BINDIR / "psql"
NOFILE = 65536
W3_ROW = 1000  # bytes per COPY row, plus a newline

TARGETS = ("postgres", "pgbouncer", "pggate")
LABELS = {"postgres": "PostgreSQL direct", "pgbouncer": "PgBouncer", "pggate": "pggate"}


# --------------------------------------------------------------------------- small helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited early with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({path}: {exc})"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime (fields 14 and 15 of /proc/PID/stat) of the given processes."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def pss_kib(pids: list[int]) -> int:
    """Sum of PSS (from smaps_rollup; RSS when unavailable) of the given processes, in KiB."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
            total += int(re.search(r"^Pss:\s+(\d+) kB", text, re.M).group(1))  # type: ignore[union-attr]
        except (OSError, AttributeError):
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_info().rss // 1024
    return total


def raise_nofile(limit: int = NOFILE) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(limit, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------- the setup


class BenchCluster(embedded.EmbeddedCluster):
    """The embedded cluster, but also listening on 127.0.0.1 (TLS) with room for W4."""

    tcp_max_connections: int = 300

    def _settings(self, quoted: bool = True) -> dict[str, str]:
        settings = super()._settings(quoted)
        settings["listen_addresses"] = "'127.0.0.1'" if quoted else "127.0.0.1"
        settings["max_connections"] = str(self.tcp_max_connections)
        return settings


@dataclass
class Target:
    name: str
    port: int
    pid: Callable[[], int | None] = field(repr=False)  # the proxy's main PID (None: postgres)

    def proxy_pids(self) -> list[int]:
        pid = self.pid()
        return [p.pid for p in process_tree(pid)] if pid else []


@dataclass
class Setup:
    base: Path
    cluster: BenchCluster
    ca_file: Path
    run_as: str | None
    targets: dict[str, Target]
    procs: dict[str, subprocess.Popen[bytes]]
    logs: dict[str, Path]
    restart: dict[str, Callable[[], None]] = field(default_factory=dict)
    krb5_conf: Path | None = None    # --gss: the realm's krb5.conf
    gss_ccache: Path | None = None   # --gss: the client's ticket cache (kinit)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.cluster.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def backend_pids(self) -> list[int]:
        pid = self.postmaster_pid()
        return [p.pid for p in process_tree(pid)[1:]] if pid else []

    def client_env(self, target: str, gss: bool = False) -> dict[str, str]:
        """libpq's environment: TLS only (GSS encryption off), or with ``gss`` GSS encryption
        only (``gssencmode=require``, ``sslmode=disable``: no fallback to TLS or plaintext)."""
        env = dict(os.environ)
        for key in list(env):
            if key.startswith(("PG", "KRB5")):
                del env[key]
        env.update(
            PGHOST="127.0.0.1",
            PGPORT=str(self.targets[target].port),
            PGUSER="postgres",
            PGDATABASE="postgres",
            PGSSLMODE="require",
            PGSSLROOTCERT=str(self.ca_file),
            PGGSSENCMODE="disable",  # libpq's default "prefer" would try GSS first
            PGCONNECT_TIMEOUT="20",
            HOME=str(self.base / "home"),  # no ~/.postgresql client certificate or root.crt
        )
        if gss:
            if self.krb5_conf is None or self.gss_ccache is None:
                raise RuntimeError("GSS workload without the Kerberos realm (--gss)")
            env.update(
                PGHOST="localhost",       # the service principal is postgres/localhost
                PGHOSTADDR="127.0.0.1",
                PGSSLMODE="disable",
                PGGSSENCMODE="require",
                KRB5_CONFIG=str(self.krb5_conf),
                KRB5CCNAME=f"FILE:{self.gss_ccache}",
            )
        return env


def _chown(path: Path, user: str | None) -> None:
    if user is not None and os.geteuid() == 0:
        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


class _RunAs(TypedDict, total=False):
    """subprocess.Popen's arguments that drop root for a child."""

    user: int
    group: int
    extra_groups: list[int]


def _as_user(user: str | None) -> _RunAs:
    if user is None or os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def make_certs(directory: Path, key_type: certs.KeyType) -> tuple[Path, Path, Path]:
    ca_cert, ca_key = certs.make_ca("pggate bench CA", key_type=key_type)
    cert, key = certs.make_server_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"],
                                       key_type=key_type)
    paths = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    certs.write_cert(paths[0], ca_cert)
    certs.write_cert(paths[1], cert)
    certs.write_key(paths[2], key)
    return paths


def start_postgres(base: Path, tls: tuple[Path, Path, Path], max_conn: int,
                   run_as: str | None, keytab: Path | None = None) -> BenchCluster:
    cluster = BenchCluster(
        data_dir=base / "pg" / "data",
        socket_dir=base / "pg" / "run",
        bindir=PG_BINDIR,
        run_as=run_as,
        port=free_port(),
    )
    cluster.tcp_max_connections = max_conn
    (base / "pg").mkdir(mode=0o755)
    cluster.init()
    data = cluster.data_dir
    for src in tls[1:]:
        dst = data / src.name
        shutil.copy(src, dst)
        os.chmod(dst, 0o600)
        _chown(dst, run_as)
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# ---- bench/run.py\n"
            "ssl = on\n"
            f"ssl_cert_file = '{data / 'server.crt'}'\n"
            f"ssl_key_file = '{data / 'server.key'}'\n"
            "log_connections = off\n"
            "log_disconnections = off\n"
            "logging_collector = off\n"
            "shared_buffers = 256MB\n"
        )
    hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
    if keytab is not None:
        # --gss: a copy of the realm's keytab the postgres user can read
        dst = data / "krb5.keytab"
        shutil.copy(keytab, dst)
        os.chmod(dst, 0o600)
        _chown(dst, run_as)
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(f"krb_server_keyfile = 'FILE:{dst}'\n")
        hba += "hostgssenc all all 127.0.0.1/32 trust\n"
    (data / "pg_hba.conf").write_text(hba)
    _chown(data / "pg_hba.conf", run_as)
    cluster.start()
    return cluster


def backend_host(cluster: BenchCluster, backend_tls: bool) -> str:
    """Where the proxies reach PostgreSQL: its Unix socket, or with --backend-tls its TCP
    port (TLS; the ``hostssl`` line trusts 127.0.0.1)."""
    return "127.0.0.1" if backend_tls else str(cluster.socket_dir)


def start_pgbouncer(base: Path, tls: tuple[Path, Path, Path], cluster: BenchCluster,
                    max_clients: int, run_as: str | None, port: int | None = None,
                    backend_tls: bool = False) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start PgBouncer (again, on the same port, when ``port`` is given)."""
    directory = base / "pgbouncer"
    directory.mkdir(mode=0o755, exist_ok=True)
    _chown(directory, run_as)
    key = directory / "server.key"
    shutil.copy(tls[2], key)
    os.chmod(key, 0o600)
    _chown(key, run_as)
    shutil.copy(tls[1], directory / "server.crt")
    port = port or free_port()
    (directory / "userlist.txt").write_text('"postgres" ""\n')
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"postgres = host={backend_host(cluster, backend_tls)} port={cluster.port} "
        "dbname=postgres\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {directory / 'userlist.txt'}\n"
        "pool_mode = session\n"
        f"max_client_conn = {max_clients}\n"
        "default_pool_size = 16\n"
        "client_tls_sslmode = require\n"
        f"client_tls_cert_file = {directory / 'server.crt'}\n"
        f"client_tls_key_file = {key}\n"
        f"server_tls_sslmode = {'require' if backend_tls else 'disable'}\n"
        f"logfile = {directory / 'pgbouncer.log'}\n"
        "log_connections = 0\n"
        "log_disconnections = 0\n"
        "ignore_startup_parameters = extra_float_digits\n"
    )
    log_path = directory / "pgbouncer.log"
    with (directory / "stderr.log").open("ab") as err:
        proc = subprocess.Popen(
            [str(PGBOUNCER), str(ini)],
            stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
            cwd=directory, start_new_session=True, **_as_user(run_as),
        )
    try:
        wait_for_port(port, 30, proc)
    except Exception:
        raise RuntimeError(
            f"PgBouncer did not start:\n{tail(directory / 'stderr.log')}\n{tail(log_path)}"
        ) from None
    return proc, port, log_path


def start_pggate(base: Path, tls: tuple[Path, Path, Path], cluster: BenchCluster,
                 max_clients: int, extra: list[str], port: int | None = None,
                 keytab: Path | None = None, backend_tls: bool = False
                 ) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start pggate (again, on the same port, when ``port`` is given)."""
    directory = base / "pggate"
    directory.mkdir(mode=0o755, exist_ok=True)
    for src in tls[1:]:
        shutil.copy(src, directory / src.name)
    os.chmod(directory / "server.key", 0o600)
    port = port or free_port()
    backend = (f"host={backend_host(cluster, backend_tls)} port={cluster.port} user=postgres "
               f"dbname=postgres sslmode={'require' if backend_tls else 'disable'}")
    (directory / "pggate.conf").write_text(
        "listen_addresses = '127.0.0.1'\n"
        f"port = {port}\n"
        f"backend = '{backend}'\n"
        "ssl = on\n"
        f"ssl_cert_file = '{directory / 'server.crt'}'\n"
        f"ssl_key_file = '{directory / 'server.key'}'\n"
        f"max_connections = {max_clients}\n"
        "log_connections = off\n"
        + (f"krb_server_keyfile = '{keytab}'\n" if keytab is not None else "")
        + "".join(f"{line}\n" for line in extra)
    )
    (directory / "pg_hba.conf").write_text(
        "hostssl all all 127.0.0.1/32 trust\n"
        + ("hostgssenc all all 127.0.0.1/32 trust\n" if keytab is not None else "")
    )
    (directory / "pg_ident.conf").write_text("")
    log_path = directory / "pggate.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pggate", "serve", str(directory)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=REPO, start_new_session=True,
        )
    try:
        wait_for_port(port, 30, proc)
    except Exception:
        raise RuntimeError(f"pggate did not start:\n{tail(log_path)}") from None
    return proc, port, log_path


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT,
                 timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


GSS_USER = "bench"  # the client principal (the hba lines trust it; PGUSER stays postgres)


@contextlib.contextmanager
def kerberos_realm() -> Iterator[tuple[Path, Path, Path]]:
    """--gss: the throwaway MIT realm of tests/integration/kdc.py, up for the whole run.

    Yields (krb5.conf, keytab with postgres/localhost, a client ccache). KRB5_CONFIG is exported
    while it runs, so the servers started meanwhile (PostgreSQL, pggate) find the realm; clients
    get it through ``Setup.client_env(..., gss=True)``.
    """
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    try:
        import kdc  # the same realm set-up the GSS tests use
    finally:
        sys.path.pop(0)
    missing = [p for p in ("krb5kdc", "kdb5_util", "kadmin.local", "kinit")
               if kdc.find_program(p) is None]
    if missing:
        raise RuntimeError(f"--gss needs the MIT Kerberos KDC programs ({', '.join(missing)} "
                           "missing; Debian: apt-get install krb5-kdc krb5-admin-server "
                           "krb5-user), or run without --gss / with --no-gss")
    log("Kerberos: realm EXAMPLE.COM (tests/integration/kdc.py)")
    with kdc.running_realm() as realm:
        # PostgreSQL runs as the postgres user: it must reach krb5.conf in the realm's directory
        os.chmod(realm.base, 0o755)
        os.chmod(realm.krb5_conf, 0o644)
        realm.create_principal(GSS_USER, "bench-secret")
        ccache = realm.kinit(GSS_USER)
        saved = {k: os.environ.get(k) for k in ("KRB5_CONFIG", "KRB5CCNAME", "KRB5_KTNAME")}
        os.environ["KRB5_CONFIG"] = str(realm.krb5_conf)
        # no one's default tickets or keytab: servers get theirs from krb_server_keyfile
        os.environ["KRB5CCNAME"] = f"FILE:{realm.base / 'ccaches' / 'none'}"
        os.environ.pop("KRB5_KTNAME", None)
        try:
            yield realm.krb5_conf, realm.keytab, ccache
        finally:
            for key, old in saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old


@contextlib.contextmanager
def environment(args: argparse.Namespace) -> Iterator[Setup]:
    """Everything up, then everything down (in reverse) whatever happens."""
    key_type: certs.KeyType = "rsa" if args.rsa else "ec"
    max_w4 = max(args.w4)
    with contextlib.ExitStack() as stack:
        base = Path(tempfile.mkdtemp(prefix="pggate-bench-"))
        os.chmod(base, 0o755)
        if not args.keep:
            stack.callback(shutil.rmtree, base, True)
        else:
            stack.callback(log, f"kept {base}")
        (base / "home").mkdir()
        tls = make_certs(base, key_type)
        run_as = embedded.run_as_user()
        keytab: Path | None = None
        krb5_conf = ccache = None
        if args.gss:
            krb5_conf, keytab, ccache = stack.enter_context(kerberos_realm())

        log(f"PostgreSQL: initdb + start in {base / 'pg'}")
        cluster = start_postgres(base, tls, max_w4 + 200, run_as, keytab)
        stack.callback(cluster.stop, "fast", 120)
        setup = Setup(base, cluster, tls[0], run_as, {}, {}, {"postgres": cluster.log_path},
                      krb5_conf=krb5_conf, gss_ccache=ccache)

        log("PgBouncer: start")
        bouncer, bport, blog = start_pgbouncer(base, tls, cluster, max_w4 + 200, run_as,
                                               backend_tls=args.backend_tls)
        setup.procs["pgbouncer"], setup.logs["pgbouncer"] = bouncer, blog
        stack.callback(lambda: stop_process(setup.procs["pgbouncer"], signal.SIGTERM))

        log("pggate: start")
        gate, gport, glog = start_pggate(base, tls, cluster, max_w4 + 200, args.pggate_setting,
                                         keytab=keytab, backend_tls=args.backend_tls)
        setup.procs["pggate"], setup.logs["pggate"] = gate, glog
        stack.callback(lambda: stop_process(setup.procs["pggate"], signal.SIGINT, 60))

        def restart_pgbouncer() -> None:
            stop_process(setup.procs["pgbouncer"], signal.SIGTERM)
            setup.procs["pgbouncer"] = start_pgbouncer(base, tls, cluster, max_w4 + 200, run_as,
                                                       bport, args.backend_tls)[0]

        def restart_pggate() -> None:
            stop_process(setup.procs["pggate"], signal.SIGINT, 60)
            setup.procs["pggate"] = start_pggate(base, tls, cluster, max_w4 + 200,
                                                 args.pggate_setting, gport, keytab,
                                                 args.backend_tls)[0]

        setup.restart = {"pgbouncer": restart_pgbouncer, "pggate": restart_pggate}
        setup.targets = {
            "postgres": Target("postgres", cluster.port, lambda: None),
            "pgbouncer": Target("pgbouncer", bport, lambda: setup.procs["pgbouncer"].pid),
            "pggate": Target("pggate", gport, lambda: setup.procs["pggate"].pid),
        }
        yield setup


# --------------------------------------------------------------------------- the workloads


def run_client(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int, str, float]:
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start


def pgbench_init(setup: Setup, scale: int) -> None:
    env = setup.client_env("postgres")
    env.update(PGHOST=str(setup.cluster.socket_dir), PGSSLMODE="disable")
    rc, out, secs = run_client([str(PGBENCH), "-i", "-q", "-s", str(scale)], env, 600)
    if rc != 0:
        raise RuntimeError(f"pgbench -i failed:\n{out}")
    log(f"pgbench -i -s {scale}: {secs:.1f}s")


def _pgbench_numbers(out: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for key, pattern in (
        ("tps", r"^tps = ([\d.]+)"),
        ("latency_ms", r"^latency average = ([\d.]+) ms"),
        ("transactions", r"^number of transactions actually processed: (\d+)"),
        ("failed", r"^number of failed transactions: (\d+)"),
    ):
        m = re.search(pattern, out, re.M)
        if m:
            found[key] = float(m.group(1))
    return found


@dataclass
class Sample:
    values: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def w_pgbench(setup: Setup, target: str, secs: int, connect: bool, gss: bool = False
              ) -> Sample:
    t = setup.targets[target]
    cmd = [str(PGBENCH), "-n", "-S", "-c", "8" if not connect else "4", "-j", "2", "-T", str(secs)]
    if connect:
        cmd.insert(3, "-C")
    pids = t.proxy_pids()
    cpu0 = cpu_seconds(pids)
    rc, out, _ = run_client(cmd, setup.client_env(target, gss), secs + 120)
    cpu1 = cpu_seconds(t.proxy_pids() or pids)
    nums = _pgbench_numbers(out)
    sample = Sample(nums)
    if rc != 0 or "tps" not in nums:
        sample.error = f"pgbench exit {rc}: " + " | ".join(out.strip().splitlines()[-6:])
    if pids and nums.get("transactions"):
        sample.values["cpu_us_per_tx"] = (cpu1 - cpu0) / nums["transactions"] * 1e6
        sample.values["cpu_util"] = (cpu1 - cpu0) / secs
    return sample


def w1(setup: Setup, target: str, args: argparse.Namespace, gss: bool = False) -> Sample:
    return w_pgbench(setup, target, args.seconds, connect=False, gss=gss)


def w2(setup: Setup, target: str, args: argparse.Namespace) -> Sample:
    return w_pgbench(setup, target, args.conn_seconds, connect=True)


def w3(setup: Setup, target: str, args: argparse.Namespace, gss: bool = False) -> Sample:
    rows = int(args.copy_mb * 1e6 / (W3_ROW + 1))
    sql = f"\\copy (select repeat('x',{W3_ROW}) from generate_series(1,{rows})) to /dev/null"
    t = setup.targets[target]
    pids = t.proxy_pids()
    cpu0 = cpu_seconds(pids)
    rc, out, secs = run_client([str(PSQL), "-X", "-q", "-c", sql],
                               setup.client_env(target, gss), 900)
    cpu1 = cpu_seconds(t.proxy_pids() or pids)
    mb = rows * (W3_ROW + 1) / 1e6
    sample = Sample({"mb_s": mb / secs, "seconds": secs})
    if pids:
        sample.values["cpu_s_per_gb"] = (cpu1 - cpu0) / (mb / 1000)
    if rc != 0:
        sample.error = f"psql exit {rc}: " + " | ".join(out.strip().splitlines()[-6:])
    return sample


# ---- W4: idle TLS sessions from an asyncio client


def _startup_message(user: str, database: str) -> bytes:
    body = struct.pack("!i", 196608) + b"".join(
        k.encode() + b"\0" + v.encode() + b"\0" for k, v in (("user", user), ("database", database))
    ) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


async def _open_idle(port: int, ctx: ssl.SSLContext, sem: asyncio.Semaphore
                     ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with sem:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(struct.pack("!ii", 8, 80877103))  # SSLRequest
            answer = await reader.read(200)
            if answer != b"S":
                raise RuntimeError(f"SSLRequest answered {answer[:80]!r}")
            await writer.start_tls(ctx)
            writer.write(_startup_message("postgres", "postgres"))
            while True:
                kind, length = struct.unpack("!ci", await reader.readexactly(5))
                payload = await reader.readexactly(length - 4)
                if kind == b"E":
                    raise RuntimeError(f"ErrorResponse: {payload!r}")
                if kind == b"Z":
                    return reader, writer
        except BaseException:
            writer.close()
            raise


async def _hold_idle(port: int, count: int, measure: Callable[[], dict[str, float]],
                     settle: float) -> tuple[dict[str, float], int, str | None]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sem = asyncio.Semaphore(64)
    start = time.monotonic()
    results = await asyncio.gather(*(_open_idle(port, ctx, sem) for _ in range(count)),
                                   return_exceptions=True)
    opened = [r for r in results if isinstance(r, tuple)]
    errors = collections.Counter(repr(r)[:160] for r in results if isinstance(r, BaseException))
    open_secs = time.monotonic() - start
    await asyncio.sleep(settle)
    # every session still alive? (a proxy that dropped them would show as EOF here)
    alive = sum(1 for reader, _ in opened if not reader.at_eof())
    values = measure()
    values.update(open_secs=open_secs, opened=len(opened), alive=alive)
    for _, writer in opened:
        with contextlib.suppress(Exception):
            writer.write(b"X\0\0\0\4")  # Terminate
            writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in opened), return_exceptions=True)
    error = "; ".join(f"{n}x {e}" for e, n in errors.most_common(3)) or None
    return values, len(opened), error


def _wait_until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def w4(setup: Setup, target: str, count: int) -> Sample:
    try:
        import uvloop
        runner: Callable[..., tuple[dict[str, float], int, str | None]] = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    t = setup.targets[target]
    baseline_backends = set(setup.backend_pids())
    if target == "postgres":
        def pids() -> list[int]:
            return [p for p in setup.backend_pids() if p not in baseline_backends]
        before = 0
    else:
        def pids() -> list[int]:
            return t.proxy_pids()
        # A fresh proxy for each sample: allocators keep freed memory, so a proxy that already
        # held N sessions would show ~0 KiB per connection the second time. One session first
        # so that the baseline includes what any first session loads (TLS context, modules).
        setup.restart[target]()
        runner(_hold_idle(t.port, 1, dict, settle=0.2))
        time.sleep(1.0)
        before = pss_kib(pids())

    def measure() -> dict[str, float]:
        now = pss_kib(pids())
        return {"pss_before_kib": before, "pss_after_kib": now}

    values, opened, error = runner(_hold_idle(t.port, count, measure, settle=2.0))
    sample = Sample(values, error)
    if opened:
        sample.values["kib_per_conn"] = (values["pss_after_kib"] - before) / opened
    if opened < count and sample.error is None:
        sample.error = f"only {opened} of {count} connections opened"
    # wait for the backends (pggate: 1:1; postgres: its own) and proxy sessions to go away
    _wait_until(lambda: len(setup.backend_pids()) <= len(baseline_backends) + 2, 120)
    return sample


# --------------------------------------------------------------------------- driving and printing


@dataclass
class Metric:
    key: str            # name in Sample.values
    workload: str       # W1 ...
    title: str
    unit: str
    higher_is_better: bool
    fmt: str = "{:,.0f}"


METRICS = {
    "W1": [Metric("tps", "W1", "select-only TPS (8 clients)", "tx/s", True),
           Metric("latency_ms", "W1", "mean latency", "ms", False, "{:.3f}"),
           Metric("cpu_us_per_tx", "W1", "proxy CPU per transaction", "µs", False, "{:.1f}"),
           Metric("cpu_util", "W1", "proxy CPU utilisation", "cores", False, "{:.2f}")],
    "W2": [Metric("tps", "W2", "new TLS connection + select, per second (4 clients)", "conn/s",
                  True),
           Metric("cpu_us_per_tx", "W2", "proxy CPU per connection", "µs", False, "{:.0f}")],
    "W3": [Metric("mb_s", "W3", "COPY out", "MB/s", True),
           Metric("cpu_s_per_gb", "W3", "proxy CPU per GB", "s", False, "{:.2f}")],
}


GSS_TARGETS = ("postgres", "pggate")  # PgBouncer has no GSSAPI encryption
for _w in ("W1", "W3"):
    METRICS[f"{_w}-GSS"] = [
        Metric(m.key, f"{_w}-GSS", m.title + (" over GSS encryption" if i == 0 else ""), m.unit,
               m.higher_is_better, m.fmt)
        for i, m in enumerate(METRICS[_w])]


def w4_metrics(count: int) -> list[Metric]:
    return [Metric("kib_per_conn", f"W4@{count}", f"memory per idle TLS connection ({count:,})",
                   "KiB", False, "{:.1f}"),
            Metric("open_secs", f"W4@{count}", f"time to open {count:,} sessions", "s", False,
                   "{:.1f}")]


def machine_info(setup: Setup | None) -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    pgb = subprocess.run([str(PGBOUNCER), "--version"], capture_output=True, text=True).stdout
    pgb_ssl = re.search(r"tls: (.*)", pgb)
    pgv = subprocess.run([str(PG_BINDIR / "postgres"), "--version"], capture_output=True,
                         text=True).stdout.strip()
    rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    mem = psutil.virtual_memory().total / 2**30
    return [
        f"- machine: {os.cpu_count()} cores, {model.group(1) if model else '?'}, "
        f"{mem:.1f} GiB RAM, kernel {platform.release()}, load average at start "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- Python {platform.python_version()} ({ssl.OPENSSL_VERSION}); "
        f"{pgv}; PgBouncer {pgb.split()[1] if pgb else '?'} "
        f"({pgb_ssl.group(1) if pgb_ssl else '?'}); pggate {rev or '?'}",
    ]


def fmt_value(metric: Metric, v: float | None) -> str:
    return "—" if v is None else metric.fmt.format(v)


def summary(samples: list[Sample], key: str) -> tuple[float, float, float, int] | None:
    vals = [s.values[key] for s in samples if s.error is None and key in s.values]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals), len(vals)


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}"


def table_rows(results: dict[str, dict[str, list[Sample]]], metrics: list[Metric]) -> list[str]:
    rows = []
    for m in metrics:
        med: dict[str, float | None] = {}
        for target in TARGETS:
            s = summary(results.get(m.workload, {}).get(target, []), m.key)
            med[target] = s[0] if s else None
        for target in TARGETS:
            samples = results.get(m.workload, {}).get(target, [])
            if not samples and m.workload.endswith("-GSS") and target not in GSS_TARGETS \
                    and m.workload in results:
                rows.append(f"| {m.workload} {m.title} | {m.unit} | {LABELS[target]} | n/a "
                            "(no GSSAPI) | — | — | — | — |")
                continue
            if not samples:
                continue
            s = summary(samples, m.key)
            failed = sum(1 for x in samples if x.error)
            n = f"{s[3]}" if s else "0"
            if failed:
                n += f" (+{failed} failed)"
            spread = f"{fmt_value(m, s[1])}–{fmt_value(m, s[2])}" if s else "—"
            rows.append(
                f"| {m.workload} {m.title} | {m.unit} | {LABELS[target]} | "
                f"{fmt_value(m, s[0] if s else None)} | {spread} | {n} | "
                f"{ratio(med[target], med['pgbouncer'])} | {ratio(med[target], med['postgres'])} |"
            )
    return rows


def print_table(header: list[str], results: dict[str, dict[str, list[Sample]]],
                metrics: list[Metric]) -> None:
    print("\n".join(header))
    print()
    print("| workload / metric | unit | target | median | min–max | n | ÷ PgBouncer "
          "| ÷ PostgreSQL |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(table_rows(results, metrics)))
    print()


def print_errors(results: dict[str, dict[str, list[Sample]]]) -> None:
    lines = [f"- {w} {LABELS[t]} round {i + 1}: {s.error}"
             for w, per in results.items() for t, samples in per.items()
             for i, s in enumerate(samples) if s.error]
    if lines:
        print("Failures:\n" + "\n".join(lines) + "\n")


def tls_cipher(setup: Setup, target: str) -> str:
    """TLS version and cipher a default Python client gets from a target (SSLRequest first)."""
    ctx = ssl.create_default_context(cafile=str(setup.ca_file))
    try:
        with socket.create_connection(("127.0.0.1", setup.targets[target].port), 10) as sock:
            sock.sendall(struct.pack("!ii", 8, 80877103))
            if sock.recv(1) != b"S":
                return "SSLRequest refused"
            with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                name, version, _ = tls.cipher() or ("?", "?", 0)
                return f"{version} {name}"
    except (OSError, ssl.SSLError) as exc:
        return f"error: {exc}"


def verify_gss(setup: Setup, target: str) -> str:
    """Fail loudly unless a GSS client of ``target`` really gets GSS encryption.

    The client environment already leaves no other way (gssencmode=require, sslmode=disable;
    the hba files have only hostssl and hostgssenc lines); psql's ``\\conninfo`` must also say
    "GSSAPI-encrypted connection" (libpq's PQgssEncInUse), and PostgreSQL direct must show the
    session in pg_stat_gssapi with encrypted = t.
    """
    cmd = [str(PSQL), "-X", "-A", "-t", "-c", "\\conninfo"]
    query = "select gss_authenticated, encrypted from pg_stat_gssapi where pid = pg_backend_pid()"
    if target == "postgres":
        cmd += ["-c", query]
    rc, out, _ = run_client(cmd, setup.client_env(target, gss=True), 60)
    if rc != 0 or "GSSAPI-encrypted connection" not in out or "SSL connection" in out:
        raise RuntimeError(f"{LABELS[target]}: no GSS-encrypted connection (psql exit {rc}):\n"
                           f"{out}\n{tail(setup.logs[target])}")
    found = "libpq: GSSAPI-encrypted"
    if target == "postgres":
        m = re.search(r"^([tf])\|([tf])$", out, re.M)
        if not m or m.group(2) != "t":
            raise RuntimeError(f"{LABELS[target]}: pg_stat_gssapi does not show an encrypted "
                               f"GSS session:\n{out}")
        found += f", pg_stat_gssapi gss_authenticated={m.group(1)} encrypted={m.group(2)}"
    return f"{LABELS[target]}: {found}"


# ---- py-spy


def profile_pggate(setup: Setup, args: argparse.Namespace, gss: bool = False) -> None:
    """py-spy on pggate under W1 (``gss``: W1-GSS, written to PREFIX-gss.*): ~10 s of collapsed
    stacks, then ~10 s for speedscope, while one pgbench runs throughout."""
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if spy is None:
        log("py-spy not found; skipping the profile")
        return
    pid = setup.procs["pggate"].pid
    dur = max(args.seconds, 10)
    secs = 2 * dur + 6
    out = Path(args.py_spy + ("-gss" if gss else ""))
    workload = "W1-GSS" if gss else "W1"
    log(f"py-spy: pggate under {workload}, 2 x {dur}s")
    cmd_bench = [str(PGBENCH), "-n", "-S", "-c", "8", "-j", "2", "-T", str(secs)]
    bench = subprocess.Popen(cmd_bench, env=setup.client_env("pggate", gss),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        for fmt, suffix in (("raw", ".txt"), ("speedscope", ".speedscope.json")):
            rec = subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(dur),
                                  "--native", "--rate", "250", "--format", fmt,
                                  "-o", f"{out}{suffix}"], capture_output=True, text=True)
            if rec.returncode != 0:
                log(f"py-spy exit {rec.returncode}: {rec.stderr.strip()[-500:]}")
    finally:
        _, err = bench.communicate()
    if bench.returncode != 0:
        log(f"pgbench during the profile: exit {bench.returncode}: {err.strip()[-500:]}")
    print_profile(Path(f"{out}.txt"), workload)


def _frame_name(frame: str) -> str:
    """``func (f.py:123)`` -> ``func (f.py)``; ``0x7f.. (libssl.so.3)`` -> ``[libssl.so.3]``."""
    m = re.fullmatch(r"0x[0-9a-f]+ \((.*)\)", frame)
    if m:
        return f"[{m.group(1)}]"
    return re.sub(r":\d+\)$", ")", frame)


def print_profile(collapsed: Path, workload: str = "W1", top: int = 20) -> None:
    if not collapsed.exists():
        log(f"no profile written to {collapsed}")
        return
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack:
            continue
        count = int(samples)
        total += count
        frames = [_frame_name(f) for f in stack.split(";")]
        own[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
    idle = sum(n for f, n in own.items() if f.startswith(("epoll_wait", "epoll_pwait")))
    print(f"py-spy profile of pggate under {workload} ({total} samples at 250 Hz, --native, "
          f"{collapsed}; {100 * idle / max(total, 1):.0f}% of them idle in epoll; "
          "percentages below are of all samples):\n")
    print("| self % | function |\n|---:|---|")
    for frame, n in own.most_common(top):
        print(f"| {100 * n / total:.1f} | `{frame}` |")
    print("\n| inclusive % | function (below the event loop's own frames) |\n|---:|---|")
    for frame, n in [(f, n) for f, n in inclusive.most_common() if n < 0.98 * total][:top]:
        print(f"| {100 * n / total:.1f} | `{frame}` |")
    print()


# ---- main


def run(args: argparse.Namespace) -> int:
    nofile = raise_nofile(max(NOFILE, 3 * max(args.w4) + 1000))
    results: dict[str, dict[str, list[Sample]]] = {}
    with environment(args) as setup:
        header = [
            f"### pggate benchmark ({'quick' if args.quick else 'full'} mode, "
            f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}), "
            f"{'RSA-2048' if args.rsa else 'ECDSA P-256'} certificates, {args.rounds} rounds "
            "interleaved",
            "",
            *machine_info(setup),
            f"- W1 `pgbench -n -S -c 8 -j 2 -T {args.seconds}` (scale {args.scale}); "
            f"W2 `pgbench -n -S -C -c 4 -j 2 -T {args.conn_seconds}`; "
            f"W3 {args.copy_mb:g} MB `\\copy ... to /dev/null` with psql; "
            f"W4 {', '.join(f'{n:,}' for n in args.w4)} idle TLS sessions (asyncio+uvloop client)"
            f"; W1–W4 over TLS on 127.0.0.1 (clients: libpq 15, PGSSLMODE=require); "
            f"RLIMIT_NOFILE {nofile}",
            "- TLS negotiated: " + "; ".join(
                f"{LABELS[t]}: {tls_cipher(setup, t)}" for t in TARGETS),
            "- proxies reach PostgreSQL "
            + ("over TCP with TLS (sslmode=require, --backend-tls)" if args.backend_tls
               else "over its Unix socket"),
            *(["- W1-GSS, W3-GSS: W1 and W3 over GSSAPI encryption (MIT Kerberos realm of "
               "tests/integration/kdc.py on 127.0.0.1, service principal postgres/localhost, "
               "`hostgssenc ... trust`; libpq host=localhost hostaddr=127.0.0.1 "
               "gssencmode=require sslmode=disable); PgBouncer has no GSSAPI",
               "- GSS encryption verified: " + "; ".join(
                   verify_gss(setup, t) for t in GSS_TARGETS if t in args.targets)]
              if args.gss else []),
            "- proxy CPU = utime+stime of the proxy's process tree; W4 memory = PSS of the proxy's"
            " process tree minus its idle baseline, per connection (PostgreSQL direct: PSS of the"
            " new backends); pggate opens one backend connection per client, PgBouncer"
            " (session pool, default_pool_size 16) none for idle clients",
        ]
        log("\n".join(header))
        pgbench_init(setup, args.scale)
        plan: list[tuple[str, Callable[[Setup, str], Sample]]] = []
        if "W1" in args.workloads:
            plan.append(("W1", lambda s, t: w1(s, t, args)))
        if "W2" in args.workloads:
            plan.append(("W2", lambda s, t: w2(s, t, args)))
        if "W3" in args.workloads:
            plan.append(("W3", lambda s, t: w3(s, t, args)))
        if args.gss:
            if {"W1", "W1-GSS"} & set(args.workloads):
                plan.append(("W1-GSS", lambda s, t: w1(s, t, args, gss=True)))
            if {"W3", "W3-GSS"} & set(args.workloads):
                plan.append(("W3-GSS", lambda s, t: w3(s, t, args, gss=True)))
        metrics = [m for w, _ in plan for m in METRICS[w]]
        if "W4" in args.workloads:
            for count in args.w4:
                plan.append((f"W4@{count}", functools.partial(w4, count=count)))
                metrics.extend(w4_metrics(count))
        skipped: list[str] = []
        for workload, fn in plan:
            per = results.setdefault(workload, {})
            for rnd in range(args.rounds):
                for target in TARGETS:
                    if target not in args.targets:
                        continue
                    if workload.endswith("-GSS") and target not in GSS_TARGETS:
                        results.setdefault(workload, {})  # shown as n/a
                        continue
                    if workload.startswith("W4") and not w4_affordable(setup, target, workload,
                                                                      results, skipped):
                        continue
                    log(f"{workload} round {rnd + 1}/{args.rounds} {LABELS[target]} ...")
                    for name, proc in setup.procs.items():
                        if proc.poll() is not None:
                            raise RuntimeError(
                                f"{name} exited with code {proc.returncode}:\n"
                                f"{tail(setup.logs[name])}")
                    sample = fn(setup, target)
                    per.setdefault(target, []).append(sample)
                    shown = {k: round(v, 3) for k, v in sample.values.items()}
                    log(f"  {shown}" + (f"  ERROR: {sample.error}" if sample.error else ""))
        print()
        print_table(header, results, metrics)
        if skipped:
            print("Skipped:\n" + "\n".join(f"- {s}" for s in sorted(set(skipped))) + "\n")
        print_errors(results)
        for name in ("pggate", "pgbouncer"):
            text = tail(setup.logs[name], 2000)
            bad = [ln for ln in text.splitlines()
                   if re.search(r"error|warning|fatal|traceback|exception", ln, re.I)]
            if bad:
                print(f"{name} log: {len(bad)} error/warning lines, last ones:")
                print("\n".join(f"    {ln}" for ln in bad[-8:]) + "\n")
        if args.py_spy and "pggate" in args.targets:
            if "W1" in args.workloads:
                profile_pggate(setup, args)
            if any(w == "W1-GSS" for w, _ in plan):
                profile_pggate(setup, args, gss=True)
        if args.json:
            Path(args.json).write_text(json.dumps(
                {w: {t: [{"values": s.values, "error": s.error} for s in ss]
                     for t, ss in per.items()} for w, per in results.items()}, indent=1))
    return 0


def w4_affordable(setup: Setup, target: str, workload: str,
                  results: dict[str, dict[str, list[Sample]]], skipped: list[str]) -> bool:
    """1:1 targets at large counts need a backend per connection: skip when RAM would not do."""
    count = int(workload.split("@")[1])
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    fds = {"postgres": count, "pgbouncer": count, "pggate": 2 * count}[target] + 64
    if fds > nofile or count + 64 > nofile:
        skipped.append(f"{workload} {LABELS[target]}: needs ~{fds:,} file descriptors in one "
                       f"process, RLIMIT_NOFILE is {nofile:,} (and could not be raised)")
        return False
    if target == "pgbouncer" or count <= 2000:
        return True
    if target == "postgres":
        skipped.append(f"{workload} {LABELS[target]}: {count:,} backends, not cheap enough to "
                       "measure (its per-connection figure is the one at 2,000)")
        return False
    # PSS of a PostgreSQL backend, measured at the smallest count, with a margin
    per_backend = None
    for w, per in results.items():
        if w.startswith("W4@") and (s := summary(per.get("postgres", []), "kib_per_conn")):
            per_backend = s[0]
            break
    need = count * (per_backend or 3000) * 1.5
    if target == "pggate":
        need += count * 60  # pggate's own
    avail = mem_available_kib()
    if need > avail:
        skipped.append(f"{workload} {LABELS[target]}: needs ~{need / 2**20:.1f} GiB "
                       f"({count:,} backends), {avail / 2**20:.1f} GiB available")
        return False
    return True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short runs (~4 min on 2 cores)")
    mode.add_argument("--full", action="store_true", help="long runs (the default)")
    p.add_argument("--rsa", action="store_true", help="RSA-2048 certificates (default ECDSA P-256)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, help="W1 duration (quick 6, full 20)")
    p.add_argument("--conn-seconds", type=int, help="W2 duration (quick 5, full 15)")
    p.add_argument("--copy-mb", type=float, help="W3 volume (quick 100, full 500)")
    p.add_argument("--w4", type=lambda s: [int(x) for x in s.split(",")],
                   help="W4 connection counts, comma-separated (quick 2000, full 2000,10000)")
    p.add_argument("--scale", type=int, default=10, help="pgbench -i scale")
    p.add_argument("--workloads", default="W1,W2,W3,W4", type=lambda s: s.upper().split(","))
    p.add_argument("--targets", default=",".join(TARGETS), type=lambda s: s.split(","))
    p.add_argument("--pggate-setting", action="append", default=[], metavar="LINE",
                   help="extra pggate.conf line, e.g. \"pool_mode = session\" (repeatable)")
    p.add_argument("--py-spy", metavar="PREFIX",
                   help="after the rounds, profile pggate under W1 with py-spy "
                        "(PREFIX.txt collapsed stacks, PREFIX.speedscope.json)")
    gss = p.add_mutually_exclusive_group()
    gss.add_argument("--gss", action="store_true", default=None,
                     help="also W1-GSS and W3-GSS: W1/W3 over GSSAPI encryption against a "
                          "throwaway Kerberos realm (PostgreSQL direct and pggate; part of "
                          "--full)")
    gss.add_argument("--no-gss", dest="gss", action="store_false",
                     help="no GSS workloads, not even with --full")
    p.add_argument("--backend-tls", action="store_true",
                   help="PgBouncer and pggate reach PostgreSQL over TCP with TLS "
                        "(sslmode=require) instead of its Unix socket")
    p.add_argument("--json", metavar="FILE", help="also write all samples as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    quick = args.quick
    args.seconds = args.seconds or (6 if quick else 20)
    args.conn_seconds = args.conn_seconds or (5 if quick else 15)
    args.copy_mb = args.copy_mb or (100 if quick else 500)
    args.w4 = args.w4 or ([2000] if quick else [2000, 10000])
    if args.gss is None:
        args.gss = not quick  # full mode (the default) includes the GSS workloads
    if any(w.endswith("-GSS") for w in args.workloads):  # --workloads W1-GSS: W1 over GSS only
        args.gss = True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    try:
        return run(args)
    except KeyboardInterrupt:
        log("interrupted; everything has been stopped and removed")
        return 130


if __name__ == "__main__":
    sys.exit(main())
