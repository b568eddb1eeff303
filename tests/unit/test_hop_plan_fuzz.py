"""ConnectPlan (hop/plan.py) under hypothesis: any conninfo shape, any sequence of outcomes.

Each drawn outcome is one the I/O layer can report for the current attempt (``tls_refused``
only after an SSLRequest, ``gss_refused`` after a GSSENCRequest, ``link_failed`` after a
handshake). Whatever happens, the walk ends within a bound; every attempt is one libpq would
make (a host of the caller's order, a method gssencmode and sslmode allow, in libpq's order, on
the same connection only after an ``N``); a refusal that ends a host's tries is never carried to
another host; every failure is in the reasons, in libpq's words, oldest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from hypothesis import event, given
from hypothesis import strategies as st

from pggate.hop.plan import (
    GSS_OVER_LOCAL_SOCKET,
    NO_CREDENTIAL_CACHE,
    Attempt,
    ConnectPlan,
    Encryption,
    GiveUp,
    GssEncMode,
    SslMode,
    Step,
    TargetSessionAttrs,
    server_type_problem,
)
from pggate.proto import codes

GSS, TLS, PLAIN = Encryption.GSS, Encryption.TLS, Encryption.PLAIN


@dataclass(frozen=True)
class Host:
    name: str
    is_unix_socket: bool

    def describe(self) -> str:
        if self.is_unix_socket:
            return f'server on socket "{self.name}/.s.PGSQL.5432"'
        return f'server at "{self.name}", port 5432'


def allowed_methods(
    sslmode: SslMode, gssencmode: GssEncMode, credentials: bool, unix: bool
) -> list[Encryption]:
    """libpq's documented order, written from the docs' table, not from plan.py."""
    if unix:
        return [PLAIN]
    methods = [GSS] if gssencmode != "disable" and credentials else []
    if gssencmode == "require":
        return methods
    if sslmode == "disable":
        return [*methods, PLAIN]
    if sslmode == "allow":
        return [*methods, PLAIN, TLS]
    if sslmode == "prefer":
        return [*methods, TLS, PLAIN]
    return [*methods, TLS]  # require, verify-ca, verify-full


@dataclass
class Plan:
    hosts: list[Host]
    order: list[int]
    sslmode: SslMode
    gssencmode: GssEncMode
    credentials: bool
    direct: bool
    attrs: TargetSessionAttrs

    def make(self) -> ConnectPlan:
        return ConnectPlan(
            self.hosts,
            self.sslmode,
            self.direct,
            self.attrs,
            self.order,
            gssencmode=self.gssencmode,
            gss_credentials=self.credentials,
        )


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    count = draw(st.integers(0, 4))
    hosts = [Host(f"/run/{i}" if draw(st.booleans()) else f"db{i}", False) for i in range(count)]
    hosts = [Host(h.name, h.name.startswith("/")) for h in hosts]
    return Plan(
        hosts=hosts,
        order=draw(st.permutations(range(count))),
        sslmode=draw(st.sampled_from(get_args(SslMode))),
        gssencmode=draw(st.sampled_from(get_args(GssEncMode))),
        credentials=draw(st.booleans()),
        direct=draw(st.booleans()),
        attrs=draw(st.sampled_from(get_args(TargetSessionAttrs))),
    )


SERVERS = st.sampled_from(
    [
        {"in_hot_standby": "off", "default_transaction_read_only": "off"},
        {"in_hot_standby": "on", "default_transaction_read_only": "off"},
        {"in_hot_standby": "off", "default_transaction_read_only": "on"},
        {"in_hot_standby": "on", "default_transaction_read_only": "on"},
        {},
        {"in_hot_standby": "off"},
    ]
)
REFUSALS = st.sampled_from(
    [
        (codes.SQLSTATE_CANNOT_CONNECT_NOW, "the database system is starting up"),
        ("28P01", 'password authentication failed for user "alice"'),
        ("3D000", 'database "db" does not exist'),
        ("53300", "sorry, too many clients already"),
    ]
)


class Model:
    """The walk as the module docstring tells it: hosts in the caller's order, each host's
    methods in libpq's order, a second pass for prefer-standby."""

    def __init__(self, shape: Plan) -> None:
        self.shape = shape
        self.position = -1
        self.second_pass = False
        self.methods: list[Encryption] = []
        self.method = 0

    @property
    def wanted(self) -> TargetSessionAttrs:
        return "any" if self.second_pass else self.shape.attrs

    def attempt(self, same_connection: bool = False) -> Attempt:
        encryption = self.methods[self.method]
        direct = self.shape.direct and encryption is TLS
        return Attempt(
            self.shape.order[self.position],
            encryption,
            direct=direct,
            same_connection=same_connection and not direct,
        )

    def next_host(self) -> Attempt | str:
        """The next host's first attempt, or why there is none."""
        shape = self.shape
        self.position += 1
        if self.position >= len(shape.order):
            if shape.attrs != "prefer-standby" or self.second_pass:
                return "exhausted"
            self.second_pass, self.position = True, 0
        host = shape.hosts[shape.order[self.position]]
        if shape.gssencmode == "require" and host.is_unix_socket:
            return GSS_OVER_LOCAL_SOCKET
        if shape.gssencmode == "require" and not shape.credentials:
            return NO_CREDENTIAL_CACHE
        self.methods = allowed_methods(
            shape.sslmode, shape.gssencmode, shape.credentials, host.is_unix_socket
        )
        self.method = 0
        return self.attempt()

    def next_method(self, same_connection: bool) -> Attempt | None:
        if self.method + 1 >= len(self.methods):
            return None
        self.method += 1
        return self.attempt(same_connection)


def outcomes(attempt: Attempt) -> list[str]:
    """What the I/O layer can report for ``attempt``."""
    names = ["unreachable", "broken", "login_refused", "logged_in"]
    if attempt.encryption is TLS and not attempt.direct:
        names.append("tls_refused")  # an N to SSLRequest
    if attempt.encryption is GSS:
        names.append("gss_refused")
    if attempt.encryption is not PLAIN:
        names.append("link_failed")
    return names


def bound(shape: Plan) -> int:
    """Every outcome moves on by a method or a host: at most two passes of three methods."""
    return 2 * len(shape.hosts) * 3


@given(st.data(), plans())
def test_any_walk_ends_with_attempts_libpq_would_make(data: st.DataObject, shape: Plan) -> None:
    plan = shape.make()
    model = Model(shape)
    step: Step | None = plan.start()
    if not shape.hosts:
        assert step == GiveUp(("no backend host to connect to",))
        return
    expected = model.next_host()
    noted = 0  # failures the plan must have noted in its reasons
    refusal: bytes | None = None  # the ErrorResponse body the end must carry
    outcomes_seen = 0
    while isinstance(step, Attempt):
        assert outcomes_seen < bound(shape), "the walk does not end"
        assert step == expected, (step, expected)
        host = shape.hosts[step.host]
        assert step.encryption in allowed_methods(
            shape.sslmode, shape.gssencmode, shape.credentials, host.is_unix_socket
        )
        name = data.draw(st.sampled_from(outcomes(step)), label="outcome")
        outcomes_seen += 1
        before = step
        refusal = None
        if name == "unreachable":
            step, noted = plan.unreachable("Connection refused"), noted + 1
            expected = model.next_host()
        elif name == "broken":
            step, noted = plan.broken("SSL error: certificate verify failed"), noted + 1
            expected = "broken"
        elif name in ("tls_refused", "gss_refused"):
            step = plan.tls_refused() if name == "tls_refused" else plan.gss_refused()
            expected = model.next_method(same_connection=True) or name
        elif name == "link_failed":
            step, noted = plan.link_failed("handshake failed"), noted + 1
            expected = model.next_method(same_connection=False) or "exhausted"
        elif name == "login_refused":
            sqlstate, message = data.draw(REFUSALS, label="refusal")
            step, noted = plan.login_refused(sqlstate, message, b"E" + sqlstate.encode()), noted + 1
            if sqlstate == codes.SQLSTATE_CANNOT_CONNECT_NOW:
                # Next host; after the last one this refusal ends it (relayed: come back).
                expected = model.next_host()
                if isinstance(expected, str):
                    refusal = b"E" + sqlstate.encode()
            else:
                # A refusal is final for the connection, never carried to the next host.
                expected = model.next_method(same_connection=False) or "refused"
                refusal = b"E" + sqlstate.encode()
                assert not isinstance(step, Attempt) or step.host == before.host
        else:
            server = data.draw(SERVERS, label="server")
            problem = server_type_problem(model.wanted, server)
            assert plan.wanted == model.wanted
            step = plan.logged_in(server)
            if problem is None:
                assert step is None
                event("logged in")
                return
            noted += 1
            expected = model.next_host()
        if isinstance(step, Attempt) and step.same_connection:
            assert name in ("tls_refused", "gss_refused") and step.host == before.host
    assert isinstance(step, GiveUp)
    assert isinstance(expected, str), (step, expected)
    event(f"gave up: {expected}")
    reasons = step.reasons
    assert reasons == tuple(plan.reasons) and step.detail == "\n".join(reasons)
    assert step.refusal == refusal
    if expected in (GSS_OVER_LOCAL_SOCKET, NO_CREDENTIAL_CACHE):
        # Final before any connection to that host; no host named.
        assert reasons[-1] == expected and len(reasons) == noted + 1
        assert all(r.startswith("connection to ") for r in reasons[:-1])
        return
    assert all(r.startswith("connection to server ") for r in reasons), reasons
    if expected == "tls_refused":
        assert reasons[-1].endswith("server does not support SSL, but SSL was required")
    elif expected == "gss_refused":
        assert reasons[-1].endswith("doesn't support GSSAPI encryption, but it was required")
    assert len(reasons) == noted + (expected in ("tls_refused", "gss_refused"))
