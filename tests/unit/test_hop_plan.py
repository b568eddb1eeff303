"""libpq's host and encryption iteration (fe-connect.c PQconnectPoll), as ConnectPlan."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pggate.hop.plan import (
    Attempt,
    ConnectPlan,
    Encryption,
    GiveUp,
    SslMode,
    TargetSessionAttrs,
    server_type_problem,
)

PLAIN, TLS = Encryption.PLAIN, Encryption.TLS
PRIMARY = {"in_hot_standby": "off", "default_transaction_read_only": "off"}
STANDBY = {"in_hot_standby": "on", "default_transaction_read_only": "off"}


@dataclass(frozen=True)
class Host:
    name: str
    is_unix_socket: bool = False

    def describe(self) -> str:
        return f'server at "{self.name}", port 5432'


def plan(
    *names: str,
    sslmode: SslMode = "prefer",
    attrs: TargetSessionAttrs = "any",
    direct: bool = False,
    order: list[int] | None = None,
) -> ConnectPlan:
    hosts = [Host(n, n.startswith("/")) for n in names]
    return ConnectPlan(hosts, sslmode, direct, attrs, order or list(range(len(hosts))))


@pytest.mark.parametrize(
    ("sslmode", "first", "then"),
    [
        ("disable", PLAIN, None),
        ("allow", PLAIN, TLS),
        ("prefer", TLS, PLAIN),
        ("require", TLS, None),
        ("verify-ca", TLS, None),
        ("verify-full", TLS, None),
    ],
)
def test_methods_follow_sslmode(
    sslmode: SslMode, first: Encryption, then: Encryption | None
) -> None:
    p = plan("db", sslmode=sslmode)
    assert p.start() == Attempt(0, first)
    nxt = p.link_failed("boom")
    if then is None:
        assert nxt == GiveUp(('connection to server at "db", port 5432 failed: boom',))
    else:
        assert nxt == Attempt(0, then)


def test_unix_socket_never_uses_tls_even_with_require() -> None:
    p = plan("/run/pg", sslmode="verify-full")
    assert p.start() == Attempt(0, PLAIN)


def test_ssl_refused_continues_plaintext_on_the_same_connection_for_prefer() -> None:
    p = plan("db", sslmode="prefer")
    p.start()
    assert p.tls_refused() == Attempt(0, PLAIN, same_connection=True)


def test_ssl_refused_with_require_gives_up_with_libpq_text() -> None:
    p = plan("db", "db2", sslmode="require")
    p.start()
    step = p.tls_refused()
    assert isinstance(step, GiveUp)
    assert step.reasons == (
        'connection to server at "db", port 5432 failed: '
        "server does not support SSL, but SSL was required",
    )


def test_direct_tls_is_marked_only_on_tls_attempts() -> None:
    p = plan("db", sslmode="prefer", direct=True)
    assert p.start() == Attempt(0, TLS, direct=True)
    assert p.link_failed("no") == Attempt(0, PLAIN)


def test_unreachable_moves_to_the_next_host_then_gives_up() -> None:
    p = plan("a", "b", sslmode="disable")
    assert p.start() == Attempt(0, PLAIN)
    assert p.unreachable("Connection refused") == Attempt(1, PLAIN)
    step = p.unreachable("timeout")
    assert isinstance(step, GiveUp)
    assert step.detail == (
        'connection to server at "a", port 5432 failed: Connection refused\n'
        'connection to server at "b", port 5432 failed: timeout'
    )


def test_login_refusal_retries_the_other_method_then_ends_without_next_host() -> None:
    p = plan("a", "b", sslmode="allow")
    p.start()
    assert p.login_refused("28000", "no pg_hba.conf entry", b"E1") == Attempt(0, TLS)
    step = p.login_refused("28P01", "password authentication failed", b"E2")
    assert isinstance(step, GiveUp)
    assert step.refusal == b"E2"  # the backend's own words go to the client


def test_cannot_connect_now_moves_to_the_next_host() -> None:
    p = plan("a", "b", sslmode="require")
    p.start()
    assert p.login_refused("57P03", "the database system is starting up", b"E") == Attempt(1, TLS)


@pytest.mark.parametrize(
    ("attrs", "params", "problem"),
    [
        ("any", STANDBY, None),
        ("read-write", PRIMARY, None),
        ("read-write", STANDBY, "session is read-only"),
        ("read-write", {**PRIMARY, "default_transaction_read_only": "on"}, "session is read-only"),
        ("read-only", PRIMARY, "session is not read-only"),
        ("read-only", STANDBY, None),
        ("primary", STANDBY, "server is in hot standby mode"),
        ("primary", {**PRIMARY, "default_transaction_read_only": "on"}, None),
        ("standby", PRIMARY, "server is not in hot standby mode"),
        ("standby", STANDBY, None),
        ("prefer-standby", PRIMARY, "server is not in hot standby mode"),
    ],
)
def test_server_type_problem_matches_check_target(
    attrs: TargetSessionAttrs, params: dict[str, str], problem: str | None
) -> None:
    assert server_type_problem(attrs, params) == problem


def test_old_servers_that_do_not_report_are_refused_clearly() -> None:
    text = server_type_problem("primary", {})
    assert text is not None and "PostgreSQL 14 or later" in text
    assert server_type_problem("any", {}) is None


def test_read_write_skips_a_standby_and_takes_the_primary() -> None:
    p = plan("standby", "primary", sslmode="disable", attrs="read-write")
    p.start()
    assert p.logged_in(STANDBY) == Attempt(1, PLAIN)
    assert p.logged_in(PRIMARY) is None


def test_prefer_standby_takes_a_primary_in_the_second_pass() -> None:
    p = plan("p1", "p2", sslmode="disable", attrs="prefer-standby")
    p.start()
    assert p.logged_in(PRIMARY) == Attempt(1, PLAIN)
    assert p.logged_in(PRIMARY) == Attempt(0, PLAIN)  # pass 2 starts over
    assert p.wanted == "any"
    assert p.logged_in(PRIMARY) is None


def test_no_suitable_server_gives_up_with_every_reason() -> None:
    p = plan("a", "b", sslmode="disable", attrs="standby")
    p.start()
    p.logged_in(PRIMARY)
    step = p.logged_in(PRIMARY)
    assert isinstance(step, GiveUp)
    assert len(step.reasons) == 2 and step.reasons[1].endswith("server is not in hot standby mode")


def test_order_is_the_callers_permutation() -> None:
    p = plan("a", "b", "c", sslmode="disable", order=[2, 0, 1])
    assert p.start() == Attempt(2, PLAIN)
    assert p.unreachable("x") == Attempt(0, PLAIN)


def test_no_hosts() -> None:
    assert isinstance(plan().start(), GiveUp)
