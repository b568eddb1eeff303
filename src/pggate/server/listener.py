"""Listening sockets, signals, reload and shutdown for ``pggate serve``."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Mapping
from pathlib import Path

from pggate import config as config_module
from pggate import logs, pidfile
from pggate import policy as policy_module
from pggate.errors import ConfigError, PggateError
from pggate.preflight import load_tls
from pggate.server import workers
from pggate.server.gateway import Gateway, end_point_hash

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


async def open_listeners(gateway: Gateway) -> list[asyncio.Server]:
    cfg = gateway.policy.config
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    for host in listen_hosts(cfg.listen_addresses):
        try:
            server = await loop.create_server(
                gateway.new_session,
                host=host,
                port=cfg.port,
                backlog=LISTEN_BACKLOG,
                reuse_address=True,
                reuse_port=cfg.workers > 1,
            )
        except OSError as exc:
            log.warning('could not bind to address "%s" port %d: %s', host or "*", cfg.port, exc)
            continue
        for sock in server.sockets:
            address = sock.getsockname()
            family = "IPv6" if sock.family == socket.AF_INET6 else "IPv4"
            log.info('listening on %s address "%s", port %d', family, address[0], address[1])
        servers.append(server)
    if not servers and cfg.listen_addresses.strip():
        raise PggateError("could not create any TCP/IP sockets")
    return servers


async def open_cancel_socket(gateway: Gateway) -> asyncio.Server:
    """This worker's private door for cancel requests forwarded by the other workers."""
    assert gateway.supervisor_pid is not None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(workers.cancel_socket_name(gateway.supervisor_pid, gateway.worker))
    return await asyncio.get_running_loop().create_unix_server(gateway.new_session, sock=sock)


def reload(gateway: Gateway, overrides: Mapping[str, str]) -> None:
    """SIGHUP: re-read everything. As in PostgreSQL, pggate.conf, pg_hba.conf and the TLS
    files are each all-or-nothing: a broken one is logged and its previous state stays."""
    log.info("received SIGHUP, reloading configuration files")
    old = gateway.policy
    try:
        fresh = config_module.load(old.config.directory, overrides)
        merged, messages = config_module.reload_diff(old.config, fresh)
        new_policy = policy_module.build(merged, previous=old)
    except ConfigError as exc:
        logs.report(log, logging.ERROR, exc)
        log.info("configuration files were not reloaded; the previous configuration stays")
        return
    for message in messages:
        log.info("%s", message)
    try:
        gateway.tls_context = load_tls(new_policy.config, reloading=True)
        gateway.tls_end_point_hash = end_point_hash(gateway.tls_context)
    except ConfigError as exc:
        logs.report(log, logging.ERROR, exc)
        log.info("SSL configuration was not reloaded")
    gateway.configure(new_policy)
    log.info("configuration files reloaded")


async def serve_forever(gateway: Gateway, overrides: Mapping[str, str]) -> int:
    """Accept until SIGTERM / SIGINT; returns the exit code."""
    loop = asyncio.get_running_loop()
    servers = await open_listeners(gateway)
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
        loaded = preflight.load(directory, overrides)
    except preflight.StartupFailure as failure:
        # As PostgreSQL: each problem is logged, then one FATAL line says what could not load.
        for problem in failure.errors:
            logs.report(log, logging.INFO, problem)
        raise
    policy, tls_context = loaded.policy, loaded.tls_context
    pidfile.claim(directory, policy.config.port)
    cluster = None
    if policy.embedded:
        cluster = embedded.EmbeddedCluster.for_gateway(
            directory, bindir=policy.config.postgres_bindir or None
        )
        cluster.start()
        log.info("embedded PostgreSQL started (%s)", policy.backend.describe())
    try:
        count = policy.config.workers
        if count == 1:
            return _run_loop(Gateway(policy, tls_context), overrides)
        supervisor = os.getpid()

        def run_worker(index: int) -> int:
            gateway = Gateway(policy, tls_context, worker=index, supervisor_pid=supervisor)
            return _run_loop(gateway, overrides)

        return workers.supervise(count, run_worker)
    finally:
        if cluster is not None:
            cluster.stop()
            log.info("embedded PostgreSQL stopped")
        pidfile.release(directory)


def _run_loop(gateway: Gateway, overrides: Mapping[str, str]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every platform we run
        return asyncio.run(serve_forever(gateway, overrides))
    return uvloop.run(serve_forever(gateway, overrides))
