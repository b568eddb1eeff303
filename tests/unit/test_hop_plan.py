"""libpq's host and encryption iteration (fe-connect.c PQconnectPoll), as ConnectPlan."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pggate.hop.plan import (
    Attempt,
    ConnectPlan,
    Encryption,
    GiveUp,
    GssEncMode,
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


# --- GSSAPI encryption (gssencmode): tried before TLS, only with credentials ------------------

GSS = Encryption.GSS


def gss_plan(
    *names: str,
    gssencmode: GssEncMode = "prefer",
    credentials: bool = True,
    sslmode: SslMode = "prefer",
    direct: bool = False,
) -> ConnectPlan:
    hosts = [Host(n, n.startswith("/")) for n in names]
    return ConnectPlan(
        hosts,
        sslmode,
        direct,
        "any",
        list(range(len(hosts))),
        gssencmode=gssencmode,
        gss_credentials=credentials,
    )


def walk(p: ConnectPlan) -> list[Encryption]:
    """Every method of the first host, in order, each failing (CONNECTION_FAILED)."""
    step = p.start()
    methods: list[Encryption] = []
    while isinstance(step, Attempt) and step.host == 0:
        methods.append(step.encryption)
        step = p.link_failed("no")
    return methods


@pytest.mark.parametrize(
    ("gssencmode", "credentials", "sslmode", "methods"),
    [
        # init_allowed_encryption_methods + select_next_encryption_method: GSSAPI first.
        ("prefer", True, "disable", [GSS, PLAIN]),
        ("prefer", True, "allow", [GSS, PLAIN, TLS]),
        ("prefer", True, "prefer", [GSS, TLS, PLAIN]),
        ("prefer", True, "require", [GSS, TLS]),
        ("prefer", True, "verify-full", [GSS, TLS]),
        ("require", True, "prefer", [GSS]),
        ("require", True, "verify-full", [GSS]),
        ("require", True, "disable", [GSS]),
        ("disable", True, "prefer", [TLS, PLAIN]),
        # Without credentials libpq drops GSSAPI silently (prefer).
        ("prefer", False, "prefer", [TLS, PLAIN]),
        ("prefer", False, "require", [TLS]),
        ("prefer", False, "disable", [PLAIN]),
    ],
)
def test_gss_is_tried_first_and_only_with_credentials(
    gssencmode: GssEncMode, credentials: bool, sslmode: SslMode, methods: list[Encryption]
) -> None:
    assert walk(
        gss_plan("db", gssencmode=gssencmode, credentials=credentials, sslmode=sslmode)
    ) == (methods)


def test_gss_require_without_credentials_ends_before_any_connection() -> None:
    """libpq checks before connecting, and its error_return is final: no other host, and no
    host named (the host is named only once a connection is attempted)."""
    step = gss_plan("a", "b", gssencmode="require", credentials=False).start()
    assert step == GiveUp(("GSSAPI encryption required but no credential cache",))


def test_gss_require_on_a_unix_socket_ends_with_libpq_text() -> None:
    step = gss_plan("/run/pg", gssencmode="require").start()
    assert step == GiveUp(
        ("GSSAPI encryption required but it is not supported over a local socket",)
    )


def test_gss_is_never_tried_on_a_unix_socket() -> None:
    assert gss_plan("/run/pg", gssencmode="prefer").start() == Attempt(0, PLAIN)


def test_gss_refused_goes_on_with_tls_on_the_same_connection() -> None:
    """ENCRYPTION_NEGOTIATION_FAILED: the connection is in a known state after N, so the next
    method (an SSLRequest, then plaintext) uses it."""
    p = gss_plan("db", sslmode="prefer")
    assert p.start() == Attempt(0, GSS)
    assert p.gss_refused() == Attempt(0, TLS, same_connection=True)
    assert p.tls_refused() == Attempt(0, PLAIN, same_connection=True)


def test_gss_refused_with_sslmode_disable_goes_on_in_plaintext() -> None:
    p = gss_plan("db", sslmode="disable")
    p.start()
    assert p.gss_refused() == Attempt(0, PLAIN, same_connection=True)


def test_gss_refused_before_direct_tls_needs_a_new_connection() -> None:
    """An existing connection cannot be reused for direct TLS."""
    p = gss_plan("db", sslmode="require", direct=True)
    assert p.start() == Attempt(0, GSS)
    assert p.gss_refused() == Attempt(0, TLS, direct=True)


def test_gss_refused_with_require_gives_up_with_libpq_text() -> None:
    p = gss_plan("db", "db2", gssencmode="require")
    p.start()
    step = p.gss_refused()
    assert step == GiveUp(
        (
            'connection to server at "db", port 5432 failed: '
            "server doesn't support GSSAPI encryption, but it was required",
        )
    )


def test_gss_error_answer_or_failed_handshake_retries_on_a_new_connection() -> None:
    """CONNECTION_FAILED: an error answer to GSSENCRequest (a pre-12 server) or a failed
    handshake is not final with gssencmode=prefer."""
    p = gss_plan("db", sslmode="prefer")
    p.start()
    text = "server sent an error response during GSS encryption exchange"
    assert p.link_failed(text) == Attempt(0, TLS)
    assert p.link_failed("SSL error: certificate verify failed") == Attempt(0, PLAIN)
    step = p.link_failed("server closed the connection unexpectedly")
    assert isinstance(step, GiveUp)
    assert step.reasons[0] == f'connection to server at "db", port 5432 failed: {text}'


def test_gss_require_failed_handshake_ends_it() -> None:
    p = gss_plan("db", "db2", gssencmode="require")
    p.start()
    step = p.link_failed("could not initiate GSSAPI security context: x: y")
    assert isinstance(step, GiveUp) and len(step.reasons) == 1


def test_login_refused_over_gss_retries_the_next_method() -> None:
    """A refusal after GSSAPI encryption (e.g. a hostnogssenc-only server) is CONNECTION_FAILED:
    TLS, then plaintext, on new connections."""
    p = gss_plan("db", sslmode="prefer")
    p.start()
    refused = p.login_refused("28000", "no pg_hba.conf entry", b"E1")
    assert refused == Attempt(0, TLS)


def test_every_host_starts_over_with_gss() -> None:
    p = gss_plan("a", "b", sslmode="require")
    assert p.start() == Attempt(0, GSS)
    assert p.unreachable("Connection refused") == Attempt(1, GSS)
