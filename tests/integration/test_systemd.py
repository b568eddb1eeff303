"""systemd integration (issue 13): the sd_notify(3) datagrams pggate sends to a real
NOTIFY_SOCKET (a path and an abstract name), socket activation with real passed descriptors
(sd_listen_fds(3)), and process titles, with one serving process and with workers = 2."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import psycopg
import pytest
from conftest import Backend, Gateway, debian_bindir, free_port, prepare_gateway_dir

from pggate.server import systemd

pytestmark = pytest.mark.integration

WAIT = 30.0  # seconds for one notification (start includes the interpreter's)
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

# What systemd does between fork and exec for a socket-activated service: the passed
# descriptors become 3, 4, ... and LISTEN_PID names the process, which then execs pggate
# (same PID). Arguments: the descriptors, "--", then python's own arguments.
ACTIVATE = """\
import fcntl, os, sys
cut = sys.argv.index("--")
fds = [int(arg) for arg in sys.argv[1:cut]]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for number, fd in enumerate(high, start=3):
    os.dup2(fd, number)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(len(fds))
os.execv(sys.executable, [sys.executable, *sys.argv[cut + 1:]])
"""


class NotifySocket:
    """systemd's side of sd_notify(3): a datagram socket that records each datagram with its
    sender's PID (SCM_CREDENTIALS, which systemd checks against NotifyAccess=)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(systemd.notify_address(address))

    def next(self, timeout: float = WAIT) -> tuple[bytes, int]:
        """The next datagram and the PID that sent it."""
        self.sock.settimeout(timeout)
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
        pids = [
            _UCRED.unpack(payload[: _UCRED.size])[0]
            for level, kind, payload in ancillary
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
        ]
        assert len(pids) == 1, ancillary
        return data, pids[0]

    def nothing_more(self, wait: float = 0.5) -> None:
        self.sock.settimeout(wait)
        with pytest.raises(TimeoutError):
            data = self.sock.recv(4096)
            raise AssertionError(f"unexpected notification {data!r}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_path(tmp_path: Path) -> Iterator[NotifySocket]:
    receiver = NotifySocket(str(tmp_path / "notify"))
    yield receiver
    receiver.close()


@pytest.fixture
def notify_abstract() -> Iterator[NotifySocket]:
    receiver = NotifySocket(f"@pggate-test-notify-{os.getpid()}-{time.monotonic_ns()}")
    yield receiver
    receiver.close()


def spawn(directory: Path, port: int, env: Mapping[str, str], fds: Sequence[int] = ()) -> Gateway:
    """``pggate serve DIR`` with ``env`` added, as systemd starts it: with ``fds``, those
    descriptors are passed as sockets 3, 4, ... (LISTEN_FDS, LISTEN_PID). Not waited for: the
    tests wait for READY=1."""
    python = ["-m", "pggate", "serve", str(directory)]
    if fds:
        argv = [sys.executable, "-c", ACTIVATE, *map(str, fds), "--", *python]
    else:
        argv = [sys.executable, *python]
    log_path = directory / "pggate.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            pass_fds=tuple(fds),
        )
    return Gateway(directory, port, process, log_path)


def fields(data: bytes) -> dict[str, str]:
    """A notification's NAME=value lines, in order."""
    return dict(line.split("=", 1) for line in data.decode().split("\n"))


def title(pid: int) -> str:
    """What ps shows for ``pid`` (/proc/PID/cmdline, as setproctitle leaves it)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode()


def worker_pids(gateway: Gateway) -> dict[int, int]:
    """Worker index -> PID of its latest start."""
    found = re.findall(r"worker (\d+) started \(PID (\d+)\)", gateway.log())
    return {int(index): int(pid) for index, pid in found}


def login(gateway: Gateway, port: int | None = None) -> None:
    """One login through ``port`` (default the gateway's), at the first attempt."""
    dsn = gateway.dsn(port=str(port or gateway.port))
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def expect_reload(notify: NotifySocket, gateway: Gateway, status: str) -> None:
    """SIGHUP: RELOADING=1 stamped with CLOCK_MONOTONIC after the signal was sent, then
    READY=1 with ``status``; all from the main PID."""
    before = systemd.monotonic_usec()
    gateway.process.send_signal(signal.SIGHUP)
    data, sender = notify.next()
    after = systemd.monotonic_usec()
    got = fields(data)
    assert list(got) == ["RELOADING", "MONOTONIC_USEC", "STATUS"]
    assert got["RELOADING"] == "1"
    assert before <= int(got["MONOTONIC_USEC"]) <= after
    assert got["STATUS"] == "reloading configuration files"
    assert sender == gateway.process.pid
    data, sender = notify.next()
    assert data == f"READY=1\nSTATUS={status}".encode()
    assert sender == gateway.process.pid


def test_notify_one_process(backend: Backend, tmp_path: Path, notify_path: NotifySocket) -> None:
    directory = tmp_path / "gw"
    port = prepare_gateway_dir(directory, backend)
    gateway = spawn(directory, port, {"NOTIFY_SOCKET": notify_path.address})
    try:
        pid = gateway.process.pid
        data, sender = notify_path.next()
        assert data == f"READY=1\nSTATUS=accepting connections\nMAINPID={pid}".encode()
        assert sender == pid
        login(gateway)  # READY=1 means accepting: the first attempt succeeds
        assert title(pid) == f"pggate: {directory}"

        expect_reload(notify_path, gateway, "accepting connections")
        assert gateway.log().count("configuration files reloaded") == 1  # before READY=1

        gateway.write_hba("host all all 127.0.0.1/32 no_such_method\n")
        expect_reload(
            notify_path,
            gateway,
            "accepting connections; configuration files not reloaded, see the log",
        )
        assert "configuration files were not reloaded" in gateway.log()
        login(gateway)  # the previous pg_hba.conf stays

        gateway.process.send_signal(signal.SIGTERM)
        data, sender = notify_path.next()
        assert data == b"STOPPING=1\nSTATUS=shutting down (smart)"
        assert sender == pid
        assert gateway.process.wait(timeout=WAIT) == 0
        notify_path.nothing_more()
    finally:
        gateway.stop()


def test_notify_workers_abstract(
    backend: Backend, tmp_path: Path, notify_abstract: NotifySocket
) -> None:
    """workers = 2, NOTIFY_SOCKET in the abstract namespace: only the supervisor (the main
    PID) notifies, READY=1 once both workers serve, and again once both have reloaded."""
    directory = tmp_path / "gw"
    port = prepare_gateway_dir(directory, backend, conf="workers = 2\n")
    gateway = spawn(directory, port, {"NOTIFY_SOCKET": notify_abstract.address})
    try:
        supervisor = gateway.process.pid
        data, sender = notify_abstract.next()
        assert data == (
            f"READY=1\nSTATUS=accepting connections (2 workers)\nMAINPID={supervisor}".encode()
        )
        assert sender == supervisor
        # Both workers were serving when the supervisor said so.
        assert gateway.log().count("pggate is ready to accept connections") == 2
        login(gateway)
        assert title(supervisor) == f"pggate: supervisor {directory}"
        pids = worker_pids(gateway)
        assert sorted(pids) == [0, 1]
        for index, pid in pids.items():
            assert title(pid) == f"pggate: worker {index} {directory}"

        expect_reload(notify_abstract, gateway, "accepting connections (2 workers)")
        assert gateway.log().count("configuration files reloaded") == 2  # both, before READY=1

        gateway.process.send_signal(signal.SIGINT)
        data, sender = notify_abstract.next()
        assert data == b"STOPPING=1\nSTATUS=shutting down (fast)"
        assert sender == supervisor
        assert gateway.process.wait(timeout=WAIT) == 0
        notify_abstract.nothing_more()
    finally:
        gateway.stop()


def test_notify_embedded_cluster_workers(public_tmp: Path) -> None:
    """The embedded cluster is Debian's PostgreSQL, built with systemd support: it sends its
    own READY=1 / STOPPING=1 when it finds NOTIFY_SOCKET, so pggate must not pass the variable
    on. The socket is writable by everyone (the cluster runs as postgres under root), and every
    datagram must come from the supervisor."""
    bindir = debian_bindir()
    if bindir is None:
        pytest.skip("Debian's PostgreSQL (built with systemd support) is not installed")
    directory = public_tmp / "gw"
    port = free_port()
    command = ["init", str(directory), "--port", str(port), "--listen-addresses", "127.0.0.1"]
    init = subprocess.run(
        [sys.executable, "-m", "pggate", *command, "--postgres-bindir", bindir],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert init.returncode == 0, init.stderr
    with (directory / "pggate.conf").open("a") as conf:
        conf.write("workers = 2\nssl = off\n")
    notify = NotifySocket(str(public_tmp / "notify"))
    os.chmod(public_tmp / "notify", 0o777)
    gateway = spawn(directory, port, {"NOTIFY_SOCKET": notify.address})
    try:
        supervisor = gateway.process.pid
        expected = [
            b"STATUS=starting the embedded PostgreSQL",
            f"READY=1\nSTATUS=accepting connections (2 workers)\nMAINPID={supervisor}".encode(),
        ]
        assert [notify.next() for _ in expected] == [(data, supervisor) for data in expected]
        login(gateway)
        gateway.process.send_signal(signal.SIGINT)
        expected = [
            b"STOPPING=1\nSTATUS=shutting down (fast)",
            b"STATUS=stopping the embedded PostgreSQL",
        ]
        assert [notify.next() for _ in expected] == [(data, supervisor) for data in expected]
        assert gateway.process.wait(timeout=WAIT) == 0
        notify.nothing_more()
    finally:
        gateway.stop()
        notify.close()


@pytest.fixture
def passed_socket() -> Iterator[socket.socket]:
    """The listening socket a socket unit would hold (ListenStream=127.0.0.1:PORT)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock
    sock.close()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_socket_activation(
    backend: Backend, tmp_path: Path, notify_path: NotifySocket, passed_socket: socket.socket
) -> None:
    """pggate serves the socket it was passed; pggate.conf's own port stays unused."""
    directory = tmp_path / "gw"
    own_port = prepare_gateway_dir(directory, backend)
    port = int(passed_socket.getsockname()[1])
    gateway = spawn(
        directory, port, {"NOTIFY_SOCKET": notify_path.address}, fds=[passed_socket.fileno()]
    )
    try:
        data, _ = notify_path.next()
        assert data.startswith(b"READY=1\n")
        log = gateway.log()
        assert (
            f'LOG:  listening on IPv4 address "127.0.0.1", port {port} '
            "(passed by systemd: file descriptor 3)\n"
        ) in log
        assert "listen_addresses and port are not used: systemd passed 1 listening socket(s)" in log
        assert log.count("listening on") == 1
        for _ in range(3):
            login(gateway)
        assert _refused(own_port)

        # port is a postmaster-context setting: a reload keeps it, and says a restart is
        # needed (under socket activation the socket unit's ListenStream= decides anyway).
        with (directory / "pggate.conf").open("a") as conf:
            conf.write(f"port = {free_port()}\n")
        expect_reload(notify_path, gateway, "accepting connections")
        assert 'parameter "port" cannot be changed without restarting the server' in gateway.log()
        login(gateway)
        assert gateway.stop(signal.SIGINT) == 0
    finally:
        gateway.stop()


def test_systemd_socket_activate(
    backend: Backend, tmp_path: Path, notify_path: NotifySocket
) -> None:
    """systemd's own tool: it binds, waits for the first connection, then starts pggate with
    the socket and its name (LISTEN_FDNAMES); that first connection is served."""
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.skip("systemd-socket-activate is not installed")
    directory = tmp_path / "gw"
    prepare_gateway_dir(directory, backend)
    port = free_port()
    argv = [tool, "--listen", f"127.0.0.1:{port}", "--fdname", "pggate.socket"]
    argv += ["--setenv", f"NOTIFY_SOCKET={notify_path.address}"]
    argv += [sys.executable, "-m", "pggate", "serve", str(directory)]
    log_path = directory / "pggate.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
    gateway = Gateway(directory, port, process, log_path)
    try:
        deadline = time.monotonic() + WAIT
        while "Listening on" not in gateway.log():
            assert time.monotonic() < deadline, gateway.log()
            time.sleep(0.05)
        login(gateway)  # starts pggate, which serves this very connection
        data, sender = notify_path.next()
        assert data.startswith(b"READY=1\n")
        assert sender == process.pid  # the tool execs pggate: the same PID
        assert (
            f'listening on IPv4 address "127.0.0.1", port {port} '
            '(passed by systemd: file descriptor 3, "pggate.socket")'
        ) in gateway.log()
        assert gateway.stop(signal.SIGINT) == 0
    finally:
        gateway.stop()


def test_socket_activation_workers(
    backend: Backend, tmp_path: Path, notify_path: NotifySocket, passed_socket: socket.socket
) -> None:
    """workers = 2 share the passed socket (no SO_REUSEPORT binding), and a restarted worker
    serves it too: the supervisor keeps it."""
    directory = tmp_path / "gw"
    own_port = prepare_gateway_dir(directory, backend, conf="workers = 2\n")
    port = int(passed_socket.getsockname()[1])
    gateway = spawn(
        directory, port, {"NOTIFY_SOCKET": notify_path.address}, fds=[passed_socket.fileno()]
    )
    line = (
        f'listening on IPv4 address "127.0.0.1", port {port} (passed by systemd: file descriptor 3)'
    )
    try:
        data, _ = notify_path.next()
        assert data.startswith(b"READY=1\n")
        assert gateway.log().count(line) == 2
        assert gateway.log().count("listening on") == 2
        for _ in range(6):
            login(gateway)
        assert _refused(own_port)

        os.kill(worker_pids(gateway)[0], signal.SIGKILL)
        gateway.wait_for_log(line, count=3)
        gateway.wait_for_log("pggate is ready to accept connections", count=3)
        for _ in range(6):
            login(gateway)
        assert gateway.stop(signal.SIGTERM) == 0
    finally:
        gateway.stop()


def _datagram() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def _not_listening() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def _unix_listening(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(4)
    return sock


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("datagram", "is not a stream socket (a datagram socket: ListenDatagram=?)"),
        (
            "not listening",
            "is not listening (Accept=yes passes connections, not listening sockets)",
        ),
        ("unix", "is a Unix-domain socket; pggate serves TCP/IP only"),
        ("pipe", "is not a socket"),
    ],
)
def test_socket_activation_refuses(
    backend: Backend, tmp_path: Path, kind: str, problem: str
) -> None:
    """A passed descriptor pggate cannot serve on is fatal at start (fail closed), named."""
    directory = tmp_path / "gw"
    port = prepare_gateway_dir(directory, backend)
    pipe: tuple[int, int] | None = None
    sock: socket.socket | None = None
    if kind == "pipe":
        pipe = os.pipe()
        fd = pipe[0]
    else:
        if kind == "datagram":
            sock = _datagram()
        elif kind == "not listening":
            sock = _not_listening()
        else:
            sock = _unix_listening(tmp_path / "s")
        fd = sock.fileno()
    try:
        gateway = spawn(directory, port, {}, fds=[fd])
        assert gateway.process.wait(timeout=WAIT) == 1
    finally:
        if sock is not None:
            sock.close()
        for end in pipe or ():
            os.close(end)
    log = gateway.log()
    assert f"FATAL:  file descriptor 3 passed by systemd {problem}\n" in log
    assert (
        "HINT:  pggate.socket must use ListenStream= with an address and port, and Accept=no."
        in log
    )
    assert "ready to accept connections" not in log
    assert _refused(port)


def test_listen_pid_of_another_process(backend: Backend, tmp_path: Path) -> None:
    """LISTEN_* meant for another process (sd_listen_fds: not ours) are ignored, with a
    WARNING, and pggate binds its own port."""
    directory = tmp_path / "gw"
    port = prepare_gateway_dir(directory, backend)
    gateway = spawn(directory, port, {"LISTEN_PID": "1", "LISTEN_FDS": "1"})
    try:
        gateway.wait_for_log("ready to accept connections", timeout=WAIT)
        pid = gateway.process.pid
        assert (
            f"WARNING:  ignoring the LISTEN_FDS sockets: LISTEN_PID is 1, not this process ({pid})"
        ) in gateway.log()
        login(gateway)
    finally:
        gateway.stop()
