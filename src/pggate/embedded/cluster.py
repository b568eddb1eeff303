"""``EmbeddedCluster``: one private PostgreSQL cluster's initdb, start, stop and health.

The cluster listens on no TCP port, only on a Unix socket in a 0700 directory (``pgsocket``
beside its data directory ``pgdata`` in the gateway directory), with ``trust`` there: the
gateway is its only door. The lock-down is written into postgresql.conf and pg_hba.conf at
initdb, and its first three settings are passed on the command line at every start as well.

The postmaster is started directly (not through ``pg_ctl``) as a child of pggate in its own
session: pggate reaps it (no zombies), a Ctrl-C on pggate's terminal does not reach it (pggate
decides when and how it stops), and its stderr goes to ``DIR/pgdata.log``. A server left over
by an earlier pggate is found through its lock files (``processes.py``) and replaced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import psutil

from pggate.directory import layout
from pggate.embedded import processes
from pggate.embedded.binaries import find_postgres_bindir
from pggate.embedded.reach import DEFAULT_BINARY_CACHE, bindir_for_user, require_reachable
from pggate.embedded.users import Identity, child_env, chown_to_user, identity_kwargs, run_as_user
from pggate.errors import PggateError

log = logging.getLogger("pggate.embedded")

# sizeof(sockaddr_un.sun_path) is 108 on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107
_SHUTDOWN_SIGNALS = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}


@dataclass
class EmbeddedCluster:
    """A private PostgreSQL cluster: Unix socket only, trust, run as ``run_as`` when given."""

    data_dir: Path
    socket_dir: Path
    bindir: Path
    run_as: str | None
    port: int = 5432
    superuser: str = "postgres"
    _process: subprocess.Popen[bytes] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @classmethod
    def for_gateway(
        cls,
        gateway_dir: Path,
        *,
        bindir: str | None = None,
        port: int = 5432,
        cache_root: Path = DEFAULT_BINARY_CACHE,
    ) -> EmbeddedCluster:
        """The cluster of gateway directory DIR: ``DIR/pgdata``, socket in ``DIR/pgsocket``.

        Finds the binaries, picks the user, and makes sure that user can reach both.
        """
        gateway_dir = Path(gateway_dir).resolve()
        user = run_as_user()
        require_reachable(gateway_dir, user)
        found = find_postgres_bindir(bindir)
        return cls(
            data_dir=gateway_dir / layout.DATA_DIR,
            socket_dir=gateway_dir / layout.SOCKET_DIR,
            bindir=bindir_for_user(found, user, cache_root),
            run_as=user,
            port=port,
        )

    # ---- addresses

    @property
    def socket_path(self) -> Path:
        """The server's Unix socket file."""
        return self.socket_dir / f".s.PGSQL.{self.port}"

    @property
    def conninfo(self) -> str:
        """libpq conninfo for the superuser over the private socket."""
        return " ".join(
            f"{k}={_conninfo_quote(v)}"
            for k, v in (
                ("host", str(self.socket_dir)),
                ("port", str(self.port)),
                ("user", self.superuser),
                ("dbname", "postgres"),
            )
        )

    @property
    def log_path(self) -> Path:
        """Where the server's stderr goes (``DIR/pgdata.log``)."""
        return self.data_dir.with_name(self.data_dir.name + ".log")

    @property
    def is_initialized(self) -> bool:
        """Whether initdb has run here (PG_VERSION is initdb's first durable mark)."""
        return (self.data_dir / "PG_VERSION").is_file()

    # ---- lifecycle

    def init(self, superuser: str = "postgres") -> None:
        """initdb, then lock the cluster down to the private socket (see _SETTINGS_COMMENT)."""
        if self.is_initialized:
            raise PggateError(f'"{self.data_dir}" already holds a PostgreSQL cluster')
        self._check_socket_path()
        user = self._identity()
        for d in (self.data_dir.parent, self.socket_dir.parent):
            require_reachable(d, self.run_as)
        self._make_private_dir(self.data_dir)
        self._make_private_dir(self.socket_dir)
        self.superuser = superuser
        cmd = [
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            superuser,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        ]
        log.info("initializing PostgreSQL cluster in %s", self.data_dir)
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=600,
                env=child_env(user),
                cwd="/",
                umask=0o077,
                **identity_kwargs(user),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise PggateError(f"initdb failed: {exc}") from exc
        if proc.returncode != 0:
            raise PggateError(
                f"initdb failed (exit code {proc.returncode}):\n{_last_lines(proc.stdout)}"
            )
        conf = self.data_dir / "postgresql.conf"
        settings = _SETTINGS_COMMENT + "".join(
            f"{name} = {value}\n" for name, value in self._settings().items()
        )
        _write_private(conf, conf.read_text() + settings, user)
        _write_private(self.data_dir / "pg_hba.conf", _HBA, user)

    def start(self, timeout: float = 60) -> None:
        """Start the server and wait until it accepts connections on its socket.

        A server already running from this object is left alone. One left over from an earlier
        pggate (crashed, or killed) is stopped and a fresh one started: it may run with other
        settings or binaries, it is not our child (we could not reap it), and its log output
        would go elsewhere; a short restart is the price of a cluster we know.
        """
        if not self.is_initialized:
            raise PggateError(f'"{self.data_dir}" holds no PostgreSQL cluster (run init first)')
        if self._process is not None and self._process.poll() is None:
            return
        self._process = None
        leftover = self._postmaster_pid()
        if leftover is not None:
            log.warning(
                "a PostgreSQL server (PID %d) from an earlier run is using %s; stopping it",
                leftover,
                self.data_dir,
            )
            self.stop("fast", timeout)
        self._remove_stale_locks()
        self._check_socket_path()
        user = self._identity()
        self._make_private_dir(self.socket_dir)
        with _open_log(self.log_path, user) as logfile:
            log_offset = logfile.tell()
            # Command-line settings beat postgresql.conf and ALTER SYSTEM: whatever happens to
            # the configuration files, the server never opens a TCP port and its socket is
            # where this object says (the gateway directory may have moved since init).
            cmd = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
            for name in ("listen_addresses", "unix_socket_directories", "port"):
                cmd += ["-c", f"{name}={self._settings(quoted=False)[name]}"]
            log.info("starting PostgreSQL in %s (log: %s)", self.data_dir, self.log_path)
            try:
                self._process = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    env=child_env(user),
                    start_new_session=True,
                    umask=0o077,
                    **identity_kwargs(user),
                )
            except OSError as exc:
                raise PggateError(f"cannot start {cmd[0]}: {exc}") from exc
        self._wait_ready(self._process, timeout, log_offset)

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """Stop the server (smart, fast or immediate); a stopped server is fine.

        Past ``timeout`` the shutdown escalates to immediate, then SIGKILL, so that nothing of
        the cluster is left running; PggateError only if even that fails.
        """
        sig = _SHUTDOWN_SIGNALS.get(mode)
        if sig is None:
            raise PggateError(f"invalid shutdown mode {mode!r} (smart, fast or immediate)")
        pid = self._running_pid()
        if pid is None:
            return
        children = processes.children(pid)
        log.info("stopping PostgreSQL (PID %d, %s shutdown)", pid, mode)
        escalation = [sig, *(s for s in (signal.SIGQUIT, signal.SIGKILL) if s != sig)]
        for i, step in enumerate(escalation):
            if i > 0:
                log.warning("PostgreSQL (PID %d) still running; sending %s", pid, step.name)
            processes.send_signal(pid, step)
            if self._wait_gone(pid, timeout if i == 0 else 10.0):
                break
        else:
            raise PggateError(f"PostgreSQL (PID {pid}) survived SIGKILL")
        for child in children:
            # Only after a SIGKILLed postmaster can backends outlive it; do not leave them.
            with contextlib.suppress(psutil.Error):
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    log.warning("killing leftover PostgreSQL process %d", child.pid)
                    child.kill()
        self._process = None
        self._remove_stale_locks()

    def is_running(self) -> bool:
        """Whether a postmaster (ours or a leftover) is alive on this data directory."""
        return self._running_pid() is not None

    # ---- internals

    def _identity(self) -> Identity | None:
        if self.run_as is None:
            return None
        user = Identity.lookup(self.run_as)
        if user.uid != os.geteuid() and os.geteuid() != 0:
            raise PggateError(f"only root can run the cluster as another user ({self.run_as!r})")
        return user

    def _settings(self, quoted: bool = True) -> dict[str, str]:
        """The lock-down settings, as postgresql.conf values or as raw ``-c`` values."""
        sockets = _socket_dir_list(self.socket_dir)
        return {
            "listen_addresses": "''" if quoted else "",
            "port": str(self.port),
            "unix_socket_directories": _conf_quote(sockets) if quoted else sockets,
            "unix_socket_permissions": "0700",
            "max_connections": "300",
        }

    def _check_socket_path(self) -> None:
        length = len(os.fsencode(self.socket_path.resolve()))
        if length > _MAX_SOCKET_PATH:
            raise PggateError(
                f'Unix socket path "{self.socket_path}" is {length} bytes, longer than the '
                f"{_MAX_SOCKET_PATH} the OS allows; use a shorter gateway directory path"
            )

    def _make_private_dir(self, path: Path) -> None:
        """Create ``path`` 0700, owned by the cluster's user (PostgreSQL insists on both)."""
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        chown_to_user(path, self._identity())
        os.chmod(path, 0o700)

    def _running_pid(self) -> int | None:
        """Our child if alive (reaping it if it died), else a verified postmaster.pid PID."""
        if self._process is not None:
            if self._process.poll() is None:
                return self._process.pid
            self._process = None
        return self._postmaster_pid()

    def _postmaster_pid(self) -> int | None:
        """The PID in postmaster.pid if it is a live postgres working in this data dir."""
        pid = processes.lock_file_pid(self.data_dir / "postmaster.pid")
        if pid is None or not processes.is_postmaster(pid, self.data_dir):
            return None
        return pid

    def _remove_stale_locks(self) -> None:
        """Remove lock files whose PID is not a live postgres.

        PostgreSQL removes stale ones itself unless the PID was reused by another process of
        the same user, which is common after a container or machine restart.
        """
        data_lock = self.data_dir / "postmaster.pid"
        socket_lock = Path(f"{self.socket_path}.lock")
        checks = (
            (data_lock, self.data_dir, [data_lock]),
            (socket_lock, None, [socket_lock, self.socket_path]),
        )
        for lock, owner_dir, files in checks:
            pid = processes.lock_file_pid(lock)
            if pid is not None and processes.is_postmaster(pid, owner_dir):
                continue
            for f in files:
                if f.exists() or f.is_symlink():
                    log.info("removing stale %s", f)
                    f.unlink(missing_ok=True)

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float, log_offset: int) -> None:
        """Poll postmaster.pid's status line and the socket until ready, dead or deadline."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            rc = proc.poll()
            if rc is not None:
                self._process = None
                raise PggateError(
                    f"PostgreSQL failed to start (exit code {rc}); end of {self.log_path}:\n"
                    + _log_tail(self.log_path, log_offset)
                )
            if self._is_ready(proc.pid):
                log.info("PostgreSQL is ready on %s (PID %d)", self.socket_path, proc.pid)
                return
            if time.monotonic() >= deadline:
                self.stop("immediate", 10)
                raise PggateError(
                    f"PostgreSQL did not become ready within {timeout:g}s; end of "
                    f"{self.log_path}:\n" + _log_tail(self.log_path, log_offset)
                )
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.1)

    def _is_ready(self, pid: int) -> bool:
        """pg_ctl's test (postmaster.pid says ``ready``) plus a connect to the socket."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        if len(lines) < 8 or lines[0].strip() != str(pid) or lines[7].strip() != "ready":
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(self.socket_path))
            except OSError:
                return False
        return True

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        """Wait until ``pid`` has exited (reaped when it is our child; zombies count as gone)."""
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        delay = 0.005
        while processes.alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        return True


_SETTINGS_COMMENT = """
# ---- pggate: the embedded cluster's lock-down (later lines win; pggate also passes the first
# three on the command line, which beats this file and ALTER SYSTEM).
# The gateway is this cluster's only door: no TCP listener at all, one Unix socket in a 0700
# directory inside the gateway directory that only the cluster's owner (and root, which pggate
# runs as) can enter, hence trust authentication there. pggate opens many sessions (its tests
# run 200 at once), hence max_connections.
"""

_HBA = """\
# pggate embedded cluster: Unix socket only, trust. The socket lives in a 0700 directory inside
# the gateway directory, so only pggate (root, or the cluster's owner) can connect; clients are
# authenticated by pggate against the gateway's own pg_hba.conf. "all" does not cover physical
# replication connections, so they get their own line.
local all all trust
local replication all trust
"""


# --------------------------------------------------------------------------- helpers


def _conninfo_quote(value: str) -> str:
    """A libpq conninfo value: single-quoted with \\ escapes when it needs quoting."""
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _conf_quote(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _socket_dir_list(path: Path) -> str:
    """unix_socket_directories is a comma-separated list: double-quote awkward paths."""
    text = str(path)
    if re.search(r'[\s,"]', text):
        return '"' + text.replace('"', '""') + '"'
    return text


def _write_private(path: Path, text: str, user: Identity | None) -> None:
    """Replace ``path`` atomically with a 0600 file owned by ``user``.

    Written beside it with O_EXCL|O_NOFOLLOW and renamed over it, so that root never writes
    through a symlink the cluster's user may have planted in its own directory.
    """
    tmp = path.with_name(f".{path.name}.pggate-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            chown_to_user(f.fileno(), user)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _open_log(path: Path, user: Identity | None) -> BinaryIO:
    """The server log, opened for appending (0600, owned by the cluster's user)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    chown_to_user(fd, user)
    return os.fdopen(fd, "ab")


def _log_tail(path: Path, offset: int, lines: int = 20) -> str:
    """The last ``lines`` lines written to the log since ``offset``."""
    try:
        with path.open("rb") as f:
            f.seek(max(offset, f.seek(0, os.SEEK_END) - 16384))
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"(cannot read the log: {exc})"
    return _last_lines(text, lines) or "(the log is empty)"


def _last_lines(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
