"""The conninfo keywords the backend hop acts on have their effect: socket options, the
startup packet's ``options``, the passfile (hop/route.py, server/link.py)."""

from __future__ import annotations

import socket
from pathlib import Path

from pggate.conninfo import backend_target
from pggate.hop.route import Route, build_route
from pggate.proto.backend import PLAIN_TCP
from pggate.server.link import tcp_tuner


def test_keepalive_and_user_timeout_keywords_reach_the_socket() -> None:
    target = backend_target(
        "host=127.0.0.1 sslmode=disable keepalives_idle=31 keepalives_interval=7 "
        "keepalives_count=4 tcp_user_timeout=9000"
    )
    with socket.socket() as sock:
        tcp_tuner(target.settings.tcp)(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 31
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 7
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 9000
    off = backend_target("host=127.0.0.1 sslmode=disable keepalives=0")
    with socket.socket() as sock:
        tcp_tuner(off.settings.tcp)(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


def test_conninfo_options_go_in_the_startup_packet_before_the_clients() -> None:
    route = Route(backend_target("host=/run/pg options='-c work_mem=64MB'"))
    (address,) = route.addresses
    alone = route.login(address, "alice", {"user": "alice"}, PLAIN_TCP)
    assert alone.parameters["options"] == "-c work_mem=64MB"
    both = route.login(address, "alice", {"user": "alice", "options": "-c x=1"}, PLAIN_TCP)
    assert both.parameters["options"] == "-c work_mem=64MB -c x=1"


def test_the_passfile_gives_pggates_role_its_password(tmp_path: Path) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text("db.example.com:5432:*:gate:from-the-file\n")
    passfile.chmod(0o600)
    route = build_route(
        f"host=db.example.com user=gate sslmode=disable passfile={passfile}",
        max_iterations=100_000,
    )
    (address,) = route.addresses
    login = route.login(address, "gate", {"user": "gate"}, PLAIN_TCP)
    assert login.password == "from-the-file"
    other = route.login(address, "alice", {"user": "alice"}, PLAIN_TCP)
    assert other.password is None  # only pggate's own role uses it
