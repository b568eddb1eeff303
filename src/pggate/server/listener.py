"""Listening sockets, signals, reload and shutdown for ``pggate serve``."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import platform
import signal
import socket
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from pggate import logs, preflight
from pggate import policy as policy_module
from pggate.config import Config
from pggate.directory import pidfile
from pggate.errors import ConfigError, PggateError
from pggate.server import descriptors, workers
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


async def open_listeners(
    gateway: Gateway, sockets: list[socket.socket] | None = None
) -> list[asyncio.Server]:
    """Listen on ``sockets`` from bind_sockets (bound here when None: each worker binds its own,
    sharing the port through SO_REUSEPORT)."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    for sock in bind_sockets(gateway.snapshot.policy.config) if sockets is None else sockets:
        servers.append(
            await loop.create_server(gateway.new_session, sock=sock, backlog=LISTEN_BACKLOG)
        )
        address = sock.getsockname()
        family = "IPv6" if sock.family == socket.AF_INET6 else "IPv4"
        log.info('listening on %s address "%s", port %d', family, address[0], address[1])
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


def reload(gateway: Gateway, overrides: Mapping[str, str]) -> None:
    """SIGHUP: re-read everything into a new snapshot (policy.load_snapshot applies
    PostgreSQL's rule for each file) and swap it in. The errors logged are published for
    ``pggate reload`` (Gateway.reloaded) before the verdict line, so whoever waits for that
    line finds the result already written."""
    log.info("received SIGHUP, reloading configuration files")
    with _collect_errors() as errors:
        applied = _reload(gateway, overrides)
    gateway.reloaded(errors)
    if applied:
        log.info("configuration files reloaded")
    else:
        log.info("configuration files were not reloaded; the previous configuration stays")


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
    gateway: Gateway, overrides: Mapping[str, str], sockets: list[socket.socket] | None = None
) -> int:
    """Accept until SIGTERM / SIGINT; returns the exit code."""
    loop = asyncio.get_running_loop()
    servers = await open_listeners(gateway, sockets)
    stop_kind: asyncio.Future[str] = loop.create_future()

    def request_stop(kind: str) -> None:
        if not stop_kind.done():
            stop_kind.set_result(kind)
        elif kind == "fast":
            gateway.close_all()

    if gateway.supervisor_pid is not None:
        servers.append(await open_cancel_socket(gateway))
    loop.add_signal_handler(signal.SIGHUP, reload, gateway, overrides)
    loop.add_signal_handler(signal.SIGTERM, request_stop, "smart")
    loop.add_signal_handler(signal.SIGINT, request_stop, "fast")
    if _early_sighups:
        _early_sighups.clear()
        reload(gateway, overrides)
    log.info("pggate is ready to accept connections")
    kind = await stop_kind
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

    try:
        snapshot = preflight.load(directory, overrides)
    except policy_module.LoadFailure as failure:
        # As PostgreSQL: each problem is logged, then one FATAL line says what could not load.
        for problem in failure.errors:
            logs.report(log, logging.INFO, problem)
        raise
    policy = snapshot.policy
    log.info("starting %s", version_line(policy.config.postgres_bindir or None))
    _defer_sighup()
    lock = pidfile.claim(directory, policy.config.port, policy.config.workers)
    cluster = watchdog = None
    try:
        # Before the embedded cluster starts: a port in use is fatal at once, as in PostgreSQL.
        sockets = bind_sockets(policy.config)
        # Before anything starts: the settings must fit the open-files limit (fail closed).
        descriptors.check(policy.config, len(sockets), LISTEN_BACKLOG)
        if policy.embedded:
            cluster = embedded.EmbeddedCluster.for_gateway(
                directory, bindir=policy.config.postgres_bindir or None
            )
            cluster.start()
            log.info("embedded PostgreSQL started (%s)", policy.backend.describe())
            watchdog = embedded.ClusterWatchdog(cluster)
            watchdog.start()
        count = policy.config.workers
        if count == 1:
            return _run_loop(Gateway(snapshot), overrides, sockets)
        for sock in sockets:
            sock.close()  # the check is done; each worker binds its own (SO_REUSEPORT)
        supervisor = os.getpid()

        def run_worker(index: int) -> int:
            lock.forget()
            gateway = Gateway(snapshot, worker=index, supervisor_pid=supervisor)
            return _run_loop(gateway, overrides, None)

        return workers.supervise(count, run_worker)
    finally:
        if watchdog is not None:
            watchdog.stop()
        if cluster is not None:
            cluster.stop()
            log.info("embedded PostgreSQL stopped")
        lock.release()


def _run_loop(
    gateway: Gateway, overrides: Mapping[str, str], sockets: list[socket.socket] | None
) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every platform we run
        return asyncio.run(serve_forever(gateway, overrides, sockets))
    return uvloop.run(serve_forever(gateway, overrides, sockets))
