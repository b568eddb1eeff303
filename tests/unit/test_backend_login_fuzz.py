"""BackendLogin (proto/backend.py) against scripted backends, honest, lying and damaged.

test_login_fuzz.py drives the backend login through the whole client login with a few fixed
replies; here the backend is a drawn script that reads what pggate sends and answers it: any
method (trust, cleartext, MD5, SCRAM with or without -PLUS, GSSAPI, SSPI, unknown), servers
that lie (a wrong ServerSignature, AuthenticationOk before the SCRAM exchange ends), bursts with
any mix of ParameterStatus, BackendKeyData, notices and errors, replies damaged and cut into
any chunks. The properties:

* ``receive`` returns or raises a ClientError (the caller's one ``except``), nothing else;
* no cleartext password over a plain TCP link unless ``require_auth`` names ``password``, and
  none at all with ``channel_binding=require`` (libpq's check_expected_areq);
* ``require_auth``: a completed login saw only allowed requests and, unless ``none`` is
  allowed, a finished authentication; ``channel_binding=require``: a completed login ran
  SCRAM-SHA-256-PLUS over TLS and the server proved its key;
* no Hi() over the iteration cap (no SCRAM answer is computed);
* a completed login's burst, key, parameters and leftover are what the backend sent; a failed
  one relays the backend's ErrorResponse byte for byte.

LoginRefresh gets the same treatment at the end.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import struct
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from itertools import pairwise

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pggate.proto import codec, codes
from pggate.proto.backend import (
    REQUIRE_AUTH_METHODS,
    AuthPolicy,
    BackendLogin,
    GssAuthFailure,
    LinkSecurity,
    LoginComplete,
    LoginFailed,
    LoginRefresh,
    RequireAuth,
)
from pggate.proto.errors import ClientError

USER = "alice"
PASSWORD = "pencil"
SALT = b"pepper-salt-1234"
CAP = 64  # backend_scram_max_iterations for these tests: Hi() stays cheap
END_POINT = hashlib.sha256(b"backend certificate").digest()
PLUS, PLAIN = codes.SCRAM_SHA_256_PLUS, codes.SCRAM_SHA_256


def hmac256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


@functools.cache
def keys_of(password: str, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), SALT, iterations)
    return hmac256(salted, b"Client Key"), hmac256(salted, b"Server Key")


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!I", 4 + len(body)) + body


def auth(code: int, payload: bytes = b"") -> bytes:
    return codec.authentication_request(code, payload)


def error(sqlstate: str, text: str) -> bytes:
    return codec.error_response(ClientError(sqlstate, text))


def messages(data: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(type, body, raw) of each whole message, as the login's framing reads them; stops at a
    length word the login refuses or a cut message."""
    pos = 0
    while True:
        try:
            parsed, used = codec.read_message(data[pos:], max_length=1 << 20)
        except ClientError:
            return
        if parsed is None:
            return
        yield parsed[0], bytes(parsed[1]), data[pos : pos + used]
        pos += used


# --- what the backend does --------------------------------------------------------------------


@dataclass
class Scenario:
    method: str  # trust, cleartext, md5, scram, gss, sspi, unknown, error
    mechanisms: list[str]
    iterations: int
    honesty: str  # honest, wrong-signature, skip-final, ok-early, refuse
    gss_tokens: list[bytes]
    negotiate: bool
    stray: bool  # a message no backend sends during authentication
    burst: list[bytes]
    trailing: bytes


@dataclass
class Facts:
    """What the scripted backend knows it did."""

    proved: bool = False  # it sent the right ServerSignature
    server_first_iterations: int | None = None
    client_mechanism: str | None = None
    cleartext_sent: bool = False
    md5_sent: bool = False
    sasl_final_sent: bool = False  # pggate computed a client-final-message


PARAMETERS = st.sampled_from(
    [
        ("server_version", "18.1"),
        ("in_hot_standby", "off"),
        ("in_hot_standby", "on"),
        ("scram_iterations", "4096"),
        ("client_encoding", "UTF8"),
        ("x", ""),
    ]
)


def rarely(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws (an integer's zero would come far more often)."""
    return st.sampled_from([False] * (n - 1) + [True])


@st.composite
def bursts(draw: st.DrawFn) -> list[bytes]:
    """What follows AuthenticationOk: statuses, keys, notices, maybe an error, then 'Z'."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["S"] * 4 + ["K"] * 2 + ["N", "bad K", "E"]))
        if kind == "S":
            parts.append(codec.parameter_status(*draw(PARAMETERS)))
        elif kind == "K":
            key = draw(st.binary(min_size=1, max_size=32))
            parts.append(codec.backend_key_data(draw(st.integers(0, 2**31 - 1)), key))
        elif kind == "bad K":
            parts.append(
                message(b"K", draw(st.binary(max_size=3)) + bytes(draw(st.sampled_from([0, 257]))))
            )
        elif kind == "N":
            parts.append(codec.notice_response(ClientError("01000", "hello", severity="NOTICE")))
        else:
            parts.append(error("53300", 'too many connections for role "alice"'))
    parts.append(codec.ready_for_query(draw(st.sampled_from([b"I", b"T", b"E"]))))
    return parts


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    method = draw(
        st.sampled_from(
            [
                *("trust", "cleartext", "cleartext", "md5", "md5", "scram", "scram", "scram"),
                *("gss", "sspi", "unknown", "error"),
            ]
        )
    )
    mechanisms = draw(
        st.lists(st.sampled_from([PLUS, PLAIN, "SCRAM-SHA-1", ""]), max_size=3, unique=True)
    )
    if draw(st.booleans()):
        mechanisms = draw(st.sampled_from([[PLUS, PLAIN], [PLAIN]]))
    return Scenario(
        method=method,
        mechanisms=mechanisms,
        iterations=draw(st.sampled_from([1, 2, CAP, CAP + 1, 4096, 2**31 - 1])),
        honesty=draw(
            st.sampled_from(["honest"] * 4 + ["wrong-signature", "skip-final", "ok-early"])
            | st.just("refuse")
        ),
        gss_tokens=draw(st.lists(st.sampled_from([b"more", b"done", b"bad"]), max_size=3)),
        negotiate=draw(rarely(10)),
        stray=draw(rarely(30)),
        burst=draw(bursts()),
        trailing=draw(
            st.sampled_from([b"", b"", codec.notice_response(ClientError("01000", "x")), b"N\0"])
        ),
    )


def backend(scenario: Scenario, facts: Facts) -> Generator[bytes, bytes, None]:
    """The backend's flights; each ``send`` is what pggate answered the previous one."""
    pre = (
        codec.negotiate_protocol_version(codes.PROTOCOL_3_0, ["_pq_.x"])
        if scenario.negotiate
        else b""
    )
    if scenario.stray:
        pre += codec.parameter_status("early", "yes")
    ok_and_burst = auth(codes.AUTH_OK) + b"".join(scenario.burst) + scenario.trailing
    method = scenario.method
    if method == "trust":
        yield pre + ok_and_burst
    elif method == "error":
        yield pre + error("3D000", 'database "db" does not exist')
    elif method in ("sspi", "unknown"):
        yield pre + auth(codes.AUTH_SSPI if method == "sspi" else 99)
    elif method == "cleartext":
        reply = yield pre + auth(codes.AUTH_CLEARTEXT_PASSWORD)
        body = next((b for k, b, _ in messages(reply) if k == b"p"), None)
        if body is None:
            return
        facts.cleartext_sent = True
        yield ok_and_burst if body == PASSWORD.encode() + b"\0" else error("28P01", "no")
    elif method == "md5":
        salt = b"\x01\x02\x03\x04"
        reply = yield pre + auth(codes.AUTH_MD5_PASSWORD, salt)
        body = next((b for k, b, _ in messages(reply) if k == b"p"), None)
        if body is None:
            return
        facts.md5_sent = True
        inner = hashlib.md5(PASSWORD.encode() + USER.encode()).hexdigest().encode()
        right = b"md5" + hashlib.md5(inner + salt).hexdigest().encode() + b"\0"
        yield ok_and_burst if body == right else error("28P01", "no")
    elif method == "gss":
        reply = yield pre + auth(codes.AUTH_GSS)
        for token in scenario.gss_tokens:
            if not reply:
                return
            reply = yield auth(codes.AUTH_GSS_CONTINUE, token)
        yield ok_and_burst
    else:
        yield from scram_backend(scenario, facts, pre, ok_and_burst)


def scram_backend(
    scenario: Scenario, facts: Facts, pre: bytes, ok_and_burst: bytes
) -> Generator[bytes, bytes, None]:
    offer = b"".join(m.encode() + b"\0" for m in scenario.mechanisms) + b"\0"
    reply = yield pre + auth(codes.AUTH_SASL, offer)
    initial = next((b for k, b, _ in messages(reply) if k == b"p"), None)
    if initial is None:
        return
    mechanism, pos = codec.sasl_mechanism(initial)
    facts.client_mechanism = mechanism.decode()
    client_first = codec.sasl_initial_data(initial, pos)
    assert client_first is not None
    _, _, bare = client_first.decode().partition(",,")
    if scenario.honesty == "ok-early":
        yield ok_and_burst
        return
    nonce = bare.removeprefix("n=,r=") + "backend"
    server_first = f"r={nonce},s={base64.b64encode(SALT).decode()},i={scenario.iterations}"
    facts.server_first_iterations = scenario.iterations
    reply = yield auth(codes.AUTH_SASL_CONTINUE, server_first.encode())
    final = next((b for k, b, _ in messages(reply) if k == b"p"), None)
    if final is None:
        return
    facts.sasl_final_sent = True
    without_proof, _, proof_b64 = final.decode().rpartition(",p=")
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    # A count above 4096 is a hostile server's ask; its own verifier uses one round.
    client_key, server_key = keys_of(
        PASSWORD, scenario.iterations if scenario.iterations <= 4096 else 1
    )
    stored = hashlib.sha256(client_key).digest()
    proof = base64.b64decode(proof_b64)
    recovered = bytes(a ^ b for a, b in zip(proof, hmac256(stored, auth_message), strict=True))
    if hashlib.sha256(recovered).digest() != stored or scenario.honesty == "refuse":
        yield error("28P01", 'password authentication failed for user "alice"')
        return
    if scenario.honesty == "skip-final":
        yield ok_and_burst
        return
    signature = hmac256(server_key, auth_message)
    if scenario.honesty == "wrong-signature":
        signature = bytes(32)
    else:
        facts.proved = True
    final_message = "v=" + base64.b64encode(signature).decode()
    yield auth(codes.AUTH_SASL_FINAL, final_message.encode()) + ok_and_burst


# --- what pggate is set up with -------------------------------------------------------------


@dataclass
class ScriptedGss:
    """A GssAuthClient: "done" completes the context, "bad" fails it."""

    steps: list[bytes | None] = field(default_factory=list)
    complete: bool = False

    @property
    def started(self) -> bool:
        return bool(self.steps)

    def step(self, token: bytes | None) -> tuple[bytes, bool]:
        self.steps.append(token)
        if token == b"bad":
            raise GssAuthFailure("GSSAPI continuation error: bad token")
        self.complete = token == b"done"
        return (b"" if self.complete else b"token"), self.complete


@st.composite
def logins(draw: st.DrawFn) -> tuple[BackendLogin, ScriptedGss | None]:
    require: RequireAuth | None = None
    if draw(rarely(3)):
        names = draw(
            st.lists(st.sampled_from(sorted(REQUIRE_AUTH_METHODS)), min_size=1, max_size=3)
            | st.just([])
        )
        allow_none = draw(st.booleans())
        require = RequireAuth.from_methods(
            ",".join(names) or "none",
            names,
            allow_none=allow_none,
            names_password="password" in names,
        )
    policy = AuthPolicy(
        channel_binding=draw(st.sampled_from(["disable", "prefer", "prefer", "require"])),
        require_auth=require,
        max_iterations=CAP,
    )
    tls = draw(st.booleans())
    link = LinkSecurity(
        tls=tls,
        end_point_hash=END_POINT if tls and draw(st.integers(0, 9)) else None,
        local=draw(rarely(5)),
        gss=draw(rarely(5)),
    )
    password = draw(st.sampled_from([PASSWORD, PASSWORD, "wrong", None]))
    scram_keys = None
    if draw(rarely(4)):
        iterations = draw(st.sampled_from([1, 2, CAP, 4096]))
        scram_keys = keys_of(draw(st.sampled_from([PASSWORD, "wrong"])), iterations)
    gss = ScriptedGss() if draw(st.booleans()) else None
    login = BackendLogin(
        USER,
        {"user": USER, "database": "db"},
        password=password,
        scram_keys=scram_keys,
        policy=policy,
        link=link,
        gss=gss,
    )
    return login, gss


@st.composite
def damage(draw: st.DrawFn, flight: bytes) -> bytes:
    """A flight as sent (mostly) or damaged one way."""
    if draw(st.integers(0, 9)) < 9 or not flight:
        return flight
    how = draw(st.sampled_from(["flip", "cut", "extend", "length", "insert"]))
    at = draw(st.integers(0, len(flight) - 1))
    if how == "flip":
        return flight[:at] + bytes([flight[at] ^ draw(st.integers(1, 255))]) + flight[at + 1 :]
    if how == "cut":
        return flight[:at]
    if how == "extend":
        return flight + draw(st.binary(min_size=1, max_size=12))
    if how == "insert":
        return flight[:at] + draw(st.binary(min_size=1, max_size=8)) + flight[at:]
    word = draw(st.sampled_from([0, 3, 4, 5, 2**20 + 1, 2**32 - 1]) | st.integers(0, 2**32 - 1))
    return flight[:1] + struct.pack("!I", word) + flight[5:]


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=5))))
    edges = [0, *(c for c in cuts if c < len(data)), len(data)]
    return [data[a:b] for a, b in pairwise(edges)]


@dataclass
class Run:
    fed: bytearray = field(default_factory=bytearray)  # backend bytes given to receive()
    sent: bytearray = field(default_factory=bytearray)  # what pggate answered
    outcome: LoginComplete | LoginFailed | None = None
    refused: ClientError | None = None
    garbled: bool = False


def drive(data: st.DataObject, login: BackendLogin, scenario: Scenario, facts: Facts) -> Run:
    run = Run()
    script = backend(scenario, facts)
    flight: bytes | None = next(script)
    while flight is not None:
        wire = data.draw(damage(flight), label="flight")
        run.garbled |= wire != flight
        replies = bytearray()
        for chunk in data.draw(chunked(wire), label="chunks"):
            run.fed += chunk
            try:
                reply, outcome = login.receive(chunk)
            except ClientError as exc:  # the one error type the caller catches
                run.refused = exc
                return run
            replies += reply
            run.sent += reply
            if outcome is not None:
                run.outcome = outcome
                return run
        try:
            flight = script.send(bytes(replies))
        except StopIteration:
            flight = None
    return run


FUZZ = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


@FUZZ
@given(st.data(), logins(), scenarios())
def test_backend_login_against_any_backend(
    data: st.DataObject, setup: tuple[BackendLogin, ScriptedGss | None], scenario: Scenario
) -> None:
    login, gss = setup
    startup = login.startup()
    parsed, used = codec.parse_startup_packet(startup)
    assert used == len(startup) and parsed is not None
    facts = Facts()
    run = drive(data, login, scenario, facts)
    event(
        "complete"
        if isinstance(run.outcome, LoginComplete)
        else "failed"
        if isinstance(run.outcome, LoginFailed)
        else f"refused: {run.refused.sqlstate}"
        if run.refused is not None
        else "waiting"
    )
    if run.refused is not None:
        event(f"why: {(run.refused.log_detail or run.refused.message)[:40]}")
    if run.refused is not None:
        assert run.refused.message and run.outcome is None
    check_what_was_sent(login, run)
    if isinstance(run.outcome, LoginComplete):
        check_complete(login, gss, scenario, facts, run, run.outcome)
    elif isinstance(run.outcome, LoginFailed):
        # The first ErrorResponse ends it, whatever follows.
        body, raw = next((b, raw) for k, b, raw in messages(bytes(run.fed)) if k == b"E")
        assert run.outcome.error_message == raw
        expected = codec.client_error_from_fields(codec.parse_error_fields(body))
        assert run.outcome.error.message == expected.message
        assert run.outcome.error.sqlstate == expected.sqlstate
    if facts.sasl_final_sent and facts.server_first_iterations is not None:
        # Hi() ran only within the cap (pass-through keys run no Hi()).
        assert login.scram_keys is not None or facts.server_first_iterations <= CAP


def check_what_was_sent(login: BackendLogin, run: Run) -> None:
    policy, link = login.policy, login.link
    required = policy.require_auth
    sent = list(messages(bytes(run.sent)))
    assert b"".join(raw for _, _, raw in sent) == run.sent, "pggate sent a cut message"
    assert all(kind == b"p" for kind, _, _ in sent)
    requests = [
        codec.parse_authentication(body)[0]
        for kind, body, _ in messages(bytes(run.fed))
        if kind == b"R" and len(body) >= 4
    ]
    cleartext = [b for _, b, _ in sent if login.password and b == login.password.encode() + b"\0"]
    if cleartext:
        assert codes.AUTH_CLEARTEXT_PASSWORD in requests
        assert link.tls or link.gss or link.local or (required and required.names_password)
        assert policy.channel_binding != "require"
        assert required is None or codes.AUTH_CLEARTEXT_PASSWORD in required.allowed
    if sent and policy.channel_binding == "require":
        # Only SCRAM-SHA-256-PLUS material, only over TLS.
        assert link.tls
        assert sent[0][1].startswith(PLUS.encode() + b"\0")
    if sent and required is not None:
        answered = {r for r in requests if r != codes.AUTH_OK}
        assert answered <= required.allowed


def check_complete(
    login: BackendLogin,
    gss: ScriptedGss | None,
    scenario: Scenario,
    facts: Facts,
    run: Run,
    outcome: LoginComplete,
) -> None:
    policy, link = login.policy, login.link
    seen = list(messages(bytes(run.fed)))
    kinds = [kind for kind, _, _ in seen]
    ok_at = next(i for i, (k, b, _) in enumerate(seen) if k == b"R" and b == struct.pack("!I", 0))
    ready_at = kinds.index(b"Z", ok_at)
    requests = [codec.parse_authentication(b)[0] for k, b, _ in seen[:ok_at] if k == b"R"]
    required = policy.require_auth
    if required is not None:
        assert set(requests) <= required.allowed, (requests, required)
        if required.auth_required:
            finished = (
                facts.proved
                or bool({codes.AUTH_CLEARTEXT_PASSWORD, codes.AUTH_MD5_PASSWORD} & set(requests))
                or (gss is not None and gss.complete)
                or (link.gss and codes.AUTH_GSS in required.allowed)
            )
            assert finished, "a login that did not finish authenticating"
    if policy.channel_binding == "require":
        assert link.tls and facts.client_mechanism == PLUS and facts.proved
    if facts.client_mechanism is not None and not run.garbled:
        # Over SCRAM, a completed login had either a server that proved its key or one that
        # skipped the final message (libpq accepts that unless told otherwise, above).
        assert facts.proved or scenario.honesty in ("skip-final", "ok-early")
    # The burst is what came between AuthenticationOk and ReadyForQuery, without 'K'.
    between = seen[ok_at + 1 : ready_at + 1]
    assert outcome.burst == b"".join(raw for k, _, raw in between if k != b"K")
    assert outcome.burst.endswith(seen[ready_at][2])
    keys = [codec.parse_backend_key_data(b) for k, b, _ in between if k == b"K"]
    assert (outcome.backend_pid, outcome.backend_key) == (keys[-1] if keys else (0, b""))
    statuses = dict(codec.parse_parameter_status(b) for k, b, _ in between if k == b"S")
    assert outcome.parameters == statuses
    consumed = sum(len(raw) for _, _, raw in seen[: ready_at + 1])
    assert outcome.leftover == bytes(run.fed[consumed:])


# --- LoginRefresh ---------------------------------------------------------------------------

REFRESHED_LOGIN = LoginComplete(
    codec.parameter_status("in_hot_standby", "off") + codec.ready_for_query(b"I"),
    4711,
    b"kkkk",
    b"",
    {"in_hot_standby": "off"},
)


@st.composite
def refresh_answers(draw: st.DrawFn) -> bytes:
    parts = [
        draw(
            st.sampled_from(
                [
                    message(b"I"),
                    codec.parameter_status("in_hot_standby", "on"),
                    codec.parameter_status("default_transaction_read_only", "on"),
                    codec.notice_response(ClientError("01000", "n")),
                    error("57P01", "terminating connection due to administrator command"),
                    message(b"S", b"no-nul"),
                ]
            )
        )
        for _ in range(draw(st.integers(0, 4)))
    ]
    parts.append(codec.ready_for_query(b"I"))
    return draw(damage(b"".join(parts)))


@given(st.data(), refresh_answers())
def test_login_refresh_takes_any_answer(data: st.DataObject, answer: bytes) -> None:
    refresh = LoginRefresh(REFRESHED_LOGIN)
    assert refresh.request() == message(b"Q", b"\0")
    fed = bytearray()
    result = None
    try:
        for chunk in data.draw(chunked(answer)):
            fed += chunk
            result = refresh.receive(chunk)
            if result is not None:
                break
    except ClientError as exc:
        assert exc.message
        return
    if result is None:
        return
    seen = list(messages(bytes(fed)))
    ready = [k for k, _, _ in seen].index(b"Z")
    statuses = [(b, raw) for k, b, raw in seen[:ready] if k == b"S"]
    cut = len(REFRESHED_LOGIN.burst) - codes.READY_FOR_QUERY_SIZE
    old = REFRESHED_LOGIN.burst
    assert result.burst == old[:cut] + b"".join(raw for _, raw in statuses) + old[cut:]
    assert result.parameters == {
        **REFRESHED_LOGIN.parameters,
        **dict(codec.parse_parameter_status(b) for b, _ in statuses),
    }
    assert (result.backend_pid, result.backend_key) == (4711, b"kkkk")
