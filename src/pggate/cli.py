"""The ``pggate`` command: parse arguments, call the package, return an exit code."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pggate import logs
from pggate.certcli import add_cert_commands
from pggate.errors import ConfigError, PggateError

log = logging.getLogger("pggate.cli")

DEFAULT_PORT = 6432


def _overrides(pairs: Sequence[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f'-c {pair}: expected "name=value"')
        result[name.strip().replace("-", "_")] = value
    return result


def cmd_init(args: argparse.Namespace) -> int:
    from pggate import initdir

    initdir.create(
        Path(args.directory),
        backend=args.backend,
        hostnames=args.hostname,
        port=args.port,
        listen_addresses=args.listen_addresses,
        postgres_bindir=args.postgres_bindir,
    )
    print(f"pggate directory created in {args.directory}")
    print(f"start it with: pggate serve {args.directory}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pggate.server import listener

    return listener.run(Path(args.directory), _overrides(args.set))


def cmd_check(args: argparse.Namespace) -> int:
    from pggate import initdir

    overrides = _overrides(args.set)
    problems = initdir.check(Path(args.directory), overrides)
    for warning in initdir.cleartext_warnings(Path(args.directory), overrides):
        print(f"warning: {warning}", file=sys.stderr)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found in {args.directory}", file=sys.stderr)
        return 1
    print(f"{args.directory}: OK")
    return 0


def _server_pid(directory: str) -> int:
    from pggate import pidfile

    pid = pidfile.running_pid(Path(directory))
    if pid is None:
        raise PggateError(f'no server running in "{directory}"')
    return pid


def cmd_status(args: argparse.Namespace) -> int:
    from pggate import pidfile

    pid = pidfile.running_pid(Path(args.directory))
    if pid is None:
        print("pggate: no server running")
        return 3  # pg_ctl status's code for "not running"
    print(f"pggate: server is running (PID: {pid})")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    os.kill(_server_pid(args.directory), signal.SIGHUP)
    print("server signaled")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from pggate import pidfile

    pid = _server_pid(args.directory)
    os.kill(pid, signal.SIGTERM if args.mode == "smart" else signal.SIGINT)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not pidfile.alive(pid):
            print("server stopped")
            return 0
        time.sleep(0.1)
    raise PggateError(f"server (PID {pid}) did not stop within {args.timeout:.0f} s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pggate", description="PostgreSQL's secure front door (TLS, GSSAPI, pg_hba.conf)."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init", help="create a gateway directory")
    init.add_argument("directory")
    init.add_argument(
        "--backend",
        help="libpq conninfo of an existing PostgreSQL to front (default: an embedded cluster)",
    )
    init.add_argument(
        "--hostname",
        action="append",
        default=[],
        help="a name (or IP) clients use for the gateway; goes into server.crt (repeatable)",
    )
    init.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    init.add_argument("--listen-addresses", default="localhost", help="listen_addresses")
    init.add_argument("--postgres-bindir", help="PostgreSQL binaries for the embedded cluster")
    init.set_defaults(func=cmd_init)

    serve = commands.add_parser("serve", help="run the gateway in the foreground")
    serve.add_argument("directory")
    serve.add_argument("-c", dest="set", action="append", default=[], metavar="NAME=VALUE")
    serve.set_defaults(func=cmd_serve)

    check = commands.add_parser("check", help="validate a gateway directory")
    check.add_argument("directory")
    check.add_argument("-c", dest="set", action="append", default=[], metavar="NAME=VALUE")
    check.set_defaults(func=cmd_check)

    status = commands.add_parser("status", help="is a server running in DIR?")
    status.add_argument("directory")
    status.set_defaults(func=cmd_status)
    reload = commands.add_parser("reload", help="make the server in DIR re-read its files")
    reload.add_argument("directory")
    reload.set_defaults(func=cmd_reload)
    stop = commands.add_parser("stop", help="stop the server in DIR")
    stop.add_argument("directory")
    stop.add_argument("-m", "--mode", choices=("smart", "fast"), default="fast")
    stop.add_argument("-t", "--timeout", type=float, default=60.0)
    stop.set_defaults(func=cmd_stop)

    add_cert_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logs.setup_logging()
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except PggateError as exc:
        logs.report(log, logs.FATAL, exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return code
