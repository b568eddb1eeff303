"""Listening sockets, signals, reload and shutdown for ``pggate serve``.

Under systemd (server/systemd.py) ``serve`` also tells the service manager what it does
(sd_notify(3), ``Type=notify-reload`` semantics of systemd.service(5)): ``READY=1`` once it
accepts connections, ``RELOADING=1`` and ``READY=1`` around each reload, ``STOPPING=1`` when
shutdown starts. With ``workers = N`` the supervisor says it for all workers (server/workers.py),
so the main PID is always the one that speaks (``NotifyAccess=main``). Under socket activation
(``LISTEN_FDS``) it serves the sockets systemd passed instead of binding ``listen_addresses`` /
``port``, which then have no effect: they are postmaster-context settings, so a reload that
changes them logs that a restart is needed, and what a restart listens on is the socket
unit's ``ListenStream=``.

Process titles (setproctitle): ``pggate: DIR`` for a single serving process, ``pggate:
supervisor DIR`` and ``pggate: worker N DIR`` with workers, DIR made absolute.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import platform
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import setproctitle

from pggate import logs, preflight
from pggate import policy as policy_module
from pggate.config import Config
from pggate.directory import pidfile
from pggate.errors import ConfigError, PggateError
from pggate.server import descriptors, systemd, workers
from pggate.server.gateway import Gateway

log = logging.getLogger("pggate.listener")

# How long SIGTERM waits for sessions to end before closing them.
SMART_SHUTDOWN_SECONDS = 60.0
LISTEN_BACKLOG = 1024
# How long SIGINT waits for backends to send their own "terminating connection" FATAL.
FAST_SHUTDOWN_SECONDS = 5.0


def listen_hosts(listen_addresses: str) -> list[str | None]:
    """PostgreSQL's listen_addresses: comma list, '*' = every address, '' = no TCP at all."""
    hosts: list[str | None] = []
    for item in listen_addresses.split(","):
        name = item.strip()
        if not name:
            continue
        if name in ("*", "0.0.0.0", "::"):
            hosts.append(None if name == "*" else name)
        else:
            hosts.append(name)
    return hosts


def version_line(postgres_bindir: str | None = None) -> str:
    """What ``pggate --version`` prints and ``serve`` logs at start: pggate, Python, OpenSSL, and
    the PostgreSQL binaries the embedded cluster would use."""
    from pggate.embedded.binaries import find_postgres_bindir, server_version

    try:
        pggate_version = importlib.metadata.version("pggate")
    except importlib.metadata.PackageNotFoundError:
        pggate_version = "(not installed)"
    try:
        bindir = find_postgres_bindir(postgres_bindir)
        _, pg_version = server_version(bindir)
        binaries = f"{bindir} (PostgreSQL {pg_version})"
    except PggateError:
        binaries = "none found"
    return (
        f"pggate {pggate_version}, Python {platform.python_version()}, {ssl.OPENSSL_VERSION}, "
        f"PostgreSQL binaries: {binaries}"
    )


def bind_sockets(cfg: Config) -> list[socket.socket]:
    """Bind (not yet listen on) every address of listen_addresses as PostgreSQL's
    StreamServerPort (pqcomm.c) and PostmasterMain do: each failure is logged in PostgreSQL's
    words, an entry with no address left is a WARNING, and no socket at all is fatal."""
    bound: list[socket.socket] = []
    for host in listen_hosts(cfg.listen_addresses):
        sockets = _bind_host(host, cfg.port, reuse_port=cfg.workers > 1)
        if not sockets:
            log.warning('could not create listen socket for "%s"', host or "*")
        bound += sockets
    if not bound and cfg.listen_addresses.strip():
        raise PggateError("could not create any TCP/IP sockets")
    return bound


def _bind_host(host: str | None, port: int, *, reuse_port: bool) -> list[socket.socket]:
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        log.info(
            'could not translate host name "%s", service "%d" to address: %s',
            host,
            port,
            exc.strerror,
        )
        return []
    hint = (
        f"Is another pggate or PostgreSQL already running on port {port}? "
        "If not, wait a few seconds and retry."
    )
    bound: list[socket.socket] = []
    for family, kind, proto, _, address in addresses:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        sock = socket.socket(family, kind, proto)
        try:
            # SO_REUSEADDR: a restarted server binds at once, as pqcomm.c does it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            log.info(
                'could not bind %s address "%s": %s',
                "IPv6" if family == socket.AF_INET6 else "IPv4",
                address[0],
                exc.strerror,
                extra={"hint": hint},
            )
            continue
        bound.append(sock)
    return bound


Listening = socket.socket | systemd.PassedSocket


async def open_listeners(
    gateway: Gateway, sockets: Sequence[Listening] | None = None
) -> list[asyncio.Server]:
    """Listen on ``sockets``: bound by bind_sockets, or passed by systemd (shared by every
    worker); bound here when None (each worker binds its own, sharing the port through
    SO_REUSEPORT)."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    for item in bind_sockets(gateway.snapshot.policy.config) if sockets is None else sockets:
        if isinstance(item, systemd.PassedSocket):
            sock = item.sock
            named = "" if item.name == "unknown" else f', "{item.name}"'
            origin = f" (passed by systemd: file descriptor {item.fd}{named})"
        else:
            sock, origin = item, ""
        servers.append(
            await loop.create_server(gateway.new_session, sock=sock, backlog=LISTEN_BACKLOG)
        )
        address = sock.getsockname()
        family = "IPv6" if sock.family == socket.AF_INET6 else "IPv4"
        log.info('listening on %s address "%s", port %d%s', family, address[0], address[1], origin)
    gateway.listen_sockets = len(servers)
    return servers


async def open_cancel_socket(gateway: Gateway) -> asyncio.Server:
    """This worker's private door for cancel requests forwarded by the other workers."""
    assert gateway.supervisor_pid is not None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(workers.cancel_socket_name(gateway.supervisor_pid, gateway.worker))
    return await asyncio.get_running_loop().create_unix_server(gateway.new_session, sock=sock)


class _LoggedErrors(logging.Handler):
    """The errors logged while a reload runs, rendered as ``pggate check`` shows problems."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        error = ConfigError(
            record.getMessage(),
            detail=getattr(record, "detail", None),
            hint=getattr(record, "hint", None),
        )
        self.lines.append(preflight.render(error))


def _monotonic_ns() -> int:
    """CLOCK_MONOTONIC, the clock systemd and the supervisor compare reload times on."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class Announcer:
    """What one serving process tells about itself (sd_notify(3) fields, server/systemd.py).

    With ``workers = 1`` it is systemd's main PID and notifies directly. A worker instead
    reports to its supervisor (``report``: workers.ReportChannel.report) which configuration it
    serves, named by the CLOCK_MONOTONIC time it started reading it; the supervisor notifies
    for all workers once each has reported (workers.Readiness)."""

    def __init__(self, loaded_ns: int, report: Callable[[int, bool], None] | None = None) -> None:
        self.loaded_ns = loaded_ns  # when the configuration being served started to be read
        self.applied = True  # False when the last reload kept the previous configuration
        self.report = report
        self.started = False
        self.stopping_mode: str | None = None

    def _status(self) -> str:
        status = "accepting connections"
        if not self.applied:
            status += "; configuration files not reloaded, see the log"
        return status

    def ready(self) -> None:
        """Listening, with the signal handlers in place: connections are accepted."""
        self.started = True
        if self.report is not None:
            self.report(self.loaded_ns, self.applied)
        else:
            systemd.notify("READY=1", f"STATUS={self._status()}", f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        """A SIGHUP is being handled (before the files are read: systemd 253+ ignores a
        RELOADING=1 whose MONOTONIC_USEC is older than its reload signal)."""
        self.loaded_ns = _monotonic_ns()
        if self.report is None and self.started:
            systemd.notify(
                "RELOADING=1",
                f"MONOTONIC_USEC={self.loaded_ns // 1000}",
                "STATUS=reloading configuration files",
            )

    def reloaded(self, applied: bool) -> None:
        """The reload is over (``applied`` False: the previous configuration stays). Before
        :meth:`ready` (a SIGHUP during start) the start's READY=1 will say it."""
        self.applied = applied
        if not self.started:
            return
        if self.report is not None:
            self.report(self.loaded_ns, applied)
        else:
            systemd.notify("READY=1", f"STATUS={self._status()}")

    def stopping(self, mode: str) -> None:
        """Shutdown (``mode``: smart, fast) begins, or a smart one turns fast."""
        if self.stopping_mode in (mode, "fast"):
            return
        self.stopping_mode = mode
        if self.report is None:
            systemd.notify("STOPPING=1", f"STATUS=shutting down ({mode})")


@contextmanager
def _collect_errors() -> Iterator[list[str]]:
    """Every ERROR line pggate logs inside the block, whichever module logs it (the snapshot
    builder logs pg_ident.conf's and the TLS files' problems itself)."""
    handler = _LoggedErrors()
    root = logging.getLogger("pggate")
    root.addHandler(handler)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)


def reload(
    gateway: Gateway, overrides: Mapping[str, str], announcer: Announcer | None = None
) -> None:
    """SIGHUP: re-read everything into a new snapshot (policy.load_snapshot applies
    PostgreSQL's rule for each file) and swap it in. The errors logged are published for
    ``pggate reload`` (Gateway.reloaded) before the verdict line, so whoever waits for that
    line finds the result already written; systemd hears of the end after that line."""
    if announcer is not None:
        announcer.reloading()
    log.info("received SIGHUP, reloading configuration files")
    with _collect_errors() as errors:
        applied = _reload(gateway, overrides)
        logs.reload(gateway.snapshot.policy.config)  # log destinations; files reopened
    gateway.reloaded(errors)
    if applied:
        log.info("configuration files reloaded")
    else:
        log.info("configuration files were not reloaded; the previous configuration stays")
    if announcer is not None:
        announcer.reloaded(applied)


def _reload(gateway: Gateway, overrides: Mapping[str, str]) -> bool:
    """Install the new snapshot; False when pggate.conf or pg_hba.conf is broken (each of its
    problems logged, as PostgreSQL logs each) and the previous snapshot stays."""
    previous = gateway.snapshot
    try:
        snapshot = policy_module.load_snapshot(
            previous.policy.config.directory, overrides, previous=previous
        )
    except ConfigError as exc:
        for problem in preflight.each_error(exc):
            logs.report(log, logging.ERROR, problem)
        return False
    try:
        descriptors.check(snapshot.policy.config, gateway.listen_sockets, LISTEN_BACKLOG)
    except ConfigError as exc:
        logs.report(log, logging.ERROR, exc)
        return False
    gateway.install(snapshot)
    return True


# SIGHUPs that arrive before the event loop takes the signal over (its default action would
# kill pggate, e.g. a "pggate reload" while the embedded cluster starts): the loop then reloads.
_early_sighups: list[int] = []


def _defer_sighup() -> None:
    _early_sighups.clear()
    signal.signal(signal.SIGHUP, lambda signum, _frame: _early_sighups.append(signum))


async def serve_forever(
    gateway: Gateway,
    overrides: Mapping[str, str],
    sockets: Sequence[Listening] | None = None,
    announcer: Announcer | None = None,
) -> int:
    """Accept until SIGTERM / SIGINT; returns the exit code."""
    announce = announcer or Announcer(_monotonic_ns())
    loop = asyncio.get_running_loop()
    servers = await open_listeners(gateway, sockets)
    stop_kind: asyncio.Future[str] = loop.create_future()

    def request_stop(kind: str) -> None:
        if not stop_kind.done():
            stop_kind.set_result(kind)
        elif kind == "fast":
            announce.stopping("fast")
            gateway.close_all()

    if gateway.supervisor_pid is not None:
        servers.append(await open_cancel_socket(gateway))
    loop.add_signal_handler(signal.SIGHUP, reload, gateway, overrides, announce)
    loop.add_signal_handler(signal.SIGTERM, request_stop, "smart")
    loop.add_signal_handler(signal.SIGINT, request_stop, "fast")
    if _early_sighups:
        _early_sighups.clear()
        reload(gateway, overrides, announce)
    log.info("pggate is ready to accept connections")
    announce.ready()
    kind = await stop_kind
    announce.stopping(kind)
    gateway.stopping = True
    for server in servers:
        server.close()
    if kind == "smart":
        log.info("received smart shutdown request")
        try:
            async with asyncio.timeout(SMART_SHUTDOWN_SECONDS):
                await gateway.idle.wait()
        except TimeoutError:
            log.info("sessions still open after %.0f s; closing them", SMART_SHUTDOWN_SECONDS)
    else:
        log.info("received fast shutdown request")
        await gateway.terminate_backends(FAST_SHUTDOWN_SECONDS)
    gateway.close_all()
    for server in servers:
        await server.wait_closed()
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    log.info("pggate shut down")
    return 0


def run(directory: Path, overrides: Mapping[str, str]) -> int:
    """Load the directory, start the embedded cluster if it is the backend, serve."""
    from pggate import embedded, preflight

    # First of all, before any child could inherit them: systemd's variables (NOTIFY_SOCKET,
    # LISTEN_*) leave the environment; passed sockets that pggate cannot serve are fatal.
    systemd.claim_notify_socket()
    passed = systemd.listen_fds()
    title = os.path.abspath(directory)
    setproctitle.setproctitle(f"pggate: {title}")
    loaded_ns = _monotonic_ns()
    try:
        snapshot = preflight.load(directory, overrides)
    except policy_module.LoadFailure as failure:
        # As PostgreSQL: each problem is logged, then one FATAL line says what could not load.
        for problem in failure.errors:
            logs.report(log, logging.INFO, problem)
        raise
    policy = snapshot.policy
    logs.configure(policy.config)  # log_destination, log_file...: fatal if they cannot open
    count = policy.config.workers
    log.info("starting %s", version_line(policy.config.postgres_bindir or None))
    if count > 1:
        setproctitle.setproctitle(f"pggate: supervisor {title}")
    _defer_sighup()
    port = passed[0].sock.getsockname()[1] if passed else policy.config.port
    lock = pidfile.claim(directory, port, count)
    cluster = watchdog = None
    try:
        listeners: list[Listening]
        if passed:
            log.info(
                "listen_addresses and port are not used: systemd passed %d listening socket(s)",
                len(passed),
            )
            listeners = list(passed)
        else:
            # Before the embedded cluster starts: a port in use is fatal at once, as in
            # PostgreSQL.
            listeners = list(bind_sockets(policy.config))
        # Before anything starts: the settings must fit the open-files limit (fail closed).
        descriptors.check(policy.config, len(listeners), LISTEN_BACKLOG)
        if policy.embedded:
            systemd.notify("STATUS=starting the embedded PostgreSQL")
            cluster = embedded.EmbeddedCluster.for_gateway(
                directory, bindir=policy.config.postgres_bindir or None
            )
            cluster.start()
            log.info("embedded PostgreSQL started (%s)", policy.backend.describe())
        # Before the watchdog thread starts: it must inherit the block of SIGIO.
        channel = workers.ReportChannel() if count > 1 else None
        if cluster is not None:
            watchdog = embedded.ClusterWatchdog(cluster)
            watchdog.start()
        if channel is None:
            return _run_loop(Gateway(snapshot), overrides, listeners, Announcer(loaded_ns))
        shared: list[Listening] | None = listeners
        if not passed:
            for sock in listeners:
                assert isinstance(sock, socket.socket)
                sock.close()  # the check is done; each worker binds its own (SO_REUSEPORT)
            shared = None
        # Else every worker accepts on systemd's sockets; the supervisor keeps them open for
        # the workers it restarts.
        supervisor = os.getpid()
        reports = channel

        def run_worker(index: int) -> int:
            lock.forget()
            setproctitle.setproctitle(f"pggate: worker {index} {title}")
            gateway = Gateway(snapshot, worker=index, supervisor_pid=supervisor)
            return _run_loop(gateway, overrides, shared, Announcer(loaded_ns, reports.report))

        return workers.supervise(count, run_worker, channel)
    finally:
        if watchdog is not None:
            watchdog.stop()
        if cluster is not None:
            systemd.notify("STATUS=stopping the embedded PostgreSQL")
            cluster.stop()
            log.info("embedded PostgreSQL stopped")
        lock.release()


def _run_loop(
    gateway: Gateway,
    overrides: Mapping[str, str],
    sockets: Sequence[Listening] | None,
    announcer: Announcer,
) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every platform we run
        return asyncio.run(serve_forever(gateway, overrides, sockets, announcer))
    return uvloop.run(serve_forever(gateway, overrides, sockets, announcer))
