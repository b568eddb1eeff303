"""``max_startup_connections`` in the server: the oldest unauthenticated connection makes room,
its LOG line is rate-limited, and the settings must fit the open-files limit.

The gateway is real (a snapshot loaded from a throwaway directory, no backend needed: nothing
here gets past the startup packet); client connections are fake transports, so that many can
arrive in one step of the event loop, as a flood does.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from pathlib import Path
from typing import Any

import pytest

from pggate.config import load
from pggate.errors import ConfigError
from pggate.policy import load_snapshot
from pggate.server import descriptors
from pggate.server import gateway as gateway_module
from pggate.server.gateway import Gateway


def make_gateway(directory: Path, **settings: str) -> Gateway:
    conf = "backend = 'host=/nonexistent port=5432 user=pggate'\n"
    conf += "".join(f"{name} = {value}\n" for name, value in settings.items())
    (directory / "pggate.conf").write_text(conf)
    (directory / "pg_hba.conf").write_text("host all all 0.0.0.0/0 trust\n")
    (directory / "pg_ident.conf").write_text("")
    return Gateway(load_snapshot(directory, {}))


class FakeTransport:
    """A client socket that sends nothing."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.closed = False
        self.written = b""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.7", self.port) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


def arrive(gateway: Gateway, count: int, first_port: int = 40000) -> list[FakeTransport]:
    """``count`` connections accepted in one step of the loop (no task has run yet)."""
    transports = [FakeTransport(first_port + i) for i in range(count)]
    for transport in transports:
        session = gateway.new_session()
        session.connection_made(transport)  # type: ignore[arg-type]
    return transports


async def settle(transports: list[FakeTransport]) -> list[bool]:
    """Which of ``transports`` are closed once the loop has run the tasks a few steps (asked
    before asyncio.run's end cancels the rest)."""
    for _ in range(5):
        await asyncio.sleep(0)
    return [t.closed for t in transports]


def test_the_oldest_unauthenticated_connection_makes_room(tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path, max_startup_connections="3")

    async def flood() -> None:
        transports = arrive(gateway, 10)
        # The seven oldest were closed without a word, even those whose task never ran;
        # nothing of them is left behind.
        assert await settle(transports) == [True] * 7 + [False] * 3
        assert not any(t.written for t in transports)
        survivors = [s.port for s in gateway.unauthenticated]
        assert survivors == ["40007", "40008", "40009"]
        assert {s.port for s in gateway.handshaking} == set(survivors)

    asyncio.run(flood())


def test_a_lowered_bound_is_caught_up_at_the_next_accept(tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path, max_startup_connections="5")
    (tmp_path / "reloaded").mkdir()
    smaller = make_gateway(tmp_path / "reloaded", max_startup_connections="2")

    async def run() -> list[bool]:
        first = arrive(gateway, 5)
        assert await settle(first) == [False] * 5
        gateway.install(smaller.snapshot)  # a reload
        return await settle(first + arrive(gateway, 1, first_port=50000))

    assert asyncio.run(run()) == [True] * 4 + [False] * 2


def test_the_log_names_one_connection_then_counts_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_module, "EVICTION_LOG_INTERVAL", 0.05)
    gateway = make_gateway(tmp_path, max_startup_connections="2")

    async def flood() -> None:
        arrive(gateway, 12)
        await asyncio.sleep(0.2)  # the summary is due once the interval has passed

    with caplog.at_level(logging.INFO, logger="pggate.gateway"):
        asyncio.run(flood())
    lines = [r.getMessage() for r in caplog.records if r.name == "pggate.gateway"]
    assert lines == [
        "closing connection from host=192.0.2.7 port=40000 to make room: "
        "max_startup_connections (2) connections are awaiting authentication",
        "closed 9 more connections awaiting authentication to make room in the last 0 s",
    ]


def test_the_authenticated_leave_the_bound(tmp_path: Path) -> None:
    """TakeSlot (the login machine's, once authenticated) moves a session out of the bound and
    into max_connections."""
    from pggate import login as lm

    gateway = make_gateway(tmp_path, max_startup_connections="2")

    async def run() -> None:
        transports = arrive(gateway, 2)
        session = next(iter(gateway.unauthenticated))
        assert await session._execute(lm.TakeSlot()) == []
        assert gateway.connection_count == 1
        assert await settle(transports + arrive(gateway, 1, first_port=50000)) == [False] * 3
        assert len(gateway.unauthenticated) == 2
        assert session not in gateway.unauthenticated

    asyncio.run(run())


# --- file descriptors --------------------------------------------------------------------------


def config(**settings: str) -> Any:
    from test_hba_fakes import FakeFiles

    return load("/gw", settings, files=FakeFiles({"/gw/pggate.conf": ""}))


def test_the_default_budget() -> None:
    # 2 x 1000 awaiting authentication, 2 x 100 sessions, one backlog of 1024, 64 in reserve.
    assert descriptors.needed(config(), 1, 1024) == 3288
    assert descriptors.needed(config(max_startup_connections="10"), 2, 1024) == 2332


def test_settings_that_do_not_fit_refuse_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    raised: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", lambda _, limits: raised.append(limits))
    descriptors.check(config(), 1, 1024)  # 3288 fits once raised to the hard limit
    assert raised == [(4096, 4096)]
    with pytest.raises(ConfigError) as refused:
        descriptors.check(config(max_startup_connections="2000"), 1, 1024)
    assert refused.value.parameter == "max_startup_connections"
    assert refused.value.message == (
        "max_startup_connections (2000) and max_connections (100) need more file descriptors "
        "than this process may open"
    )
    assert refused.value.detail is not None
    assert refused.value.detail.startswith("System allows 4096, pggate needs at least 5288:")


def test_a_limit_that_cannot_be_raised_is_judged_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(_: int, __: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", refuse)
    with pytest.raises(ConfigError, match="need more file descriptors"):
        descriptors.check(config(), 1, 1024)
    monkeypatch.setattr(resource, "getrlimit", lambda _: (resource.RLIM_INFINITY,) * 2)
    descriptors.check(config(max_startup_connections="262143"), 1, 1024)


def test_a_reload_that_does_not_fit_keeps_the_previous_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from pggate.server import listener

    gateway = make_gateway(tmp_path, max_startup_connections="10")
    before = gateway.snapshot
    monkeypatch.setattr(resource, "getrlimit", lambda _: (4096, 4096))
    with caplog.at_level(logging.INFO, logger="pggate.listener"):
        listener.reload(gateway, {"max_startup_connections": "5000"})
    assert gateway.snapshot is before
    assert "need more file descriptors than this process may open" in caplog.text
    assert "configuration files were not reloaded" in caplog.text
    listener.reload(gateway, {"max_startup_connections": "20"})
    assert gateway.snapshot.policy.config.max_startup_connections == 20
