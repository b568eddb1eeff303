"""pggate as a GSSAPI client toward its backend, without a KDC: AuthenticationGSS answered by
the backend login (a scripted initiator), the GSSAPI transport of plaintext (a scripted codec),
the answers to GSSENCRequest (a scripted server on loopback), and how the route wires
credentials into the plan and the login. The Kerberos exchanges themselves run against a real
MIT KDC and PostgreSQL in tests/integration/test_backend_gss.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from pggate import gss_support
from pggate.conninfo import backend_target
from pggate.errors import ConfigError
from pggate.hop import route as route_module
from pggate.hop.plan import Attempt, Encryption
from pggate.hop.route import Route, checked_target, client_credentials
from pggate.proto import codec, codes
from pggate.proto.backend import (
    AuthPolicy,
    BackendLogin,
    LinkSecurity,
    LoginComplete,
    RequireAuth,
)
from pggate.proto.errors import ClientError
from pggate.server import link
from pggate.server.gss_link import GssTransport
from pggate.server.inbox import InboxProtocol
from pggate.transport.gss_client import (
    ClientCredentials,
    GssAuthInitiator,
    GssClientError,
    service_name,
)

OK = codec.authentication_request(codes.AUTH_OK)
READY = codec.ready_for_query(b"I")
GSS_REQUEST = codec.authentication_request(codes.AUTH_GSS)
PLAIN_LINK = LinkSecurity()


def gss_continue(token: bytes) -> bytes:
    return codec.authentication_request(codes.AUTH_GSS_CONTINUE, token)


def gss_response(token: bytes) -> bytes:
    return codec.password_message(token)


# --- AuthenticationGSS (fe-auth.c pg_GSS_startup / pg_GSS_continue) -------------------------


@dataclass
class ScriptedInitiator:
    """A GssAuthClient whose outputs are scripted: (token to send, complete) per step."""

    outputs: list[tuple[bytes, bool]]
    inputs: list[bytes | None] = field(default_factory=list)
    fail: str | None = None

    @property
    def started(self) -> bool:
        return bool(self.inputs)

    def step(self, token: bytes | None) -> tuple[bytes, bool]:
        self.inputs.append(token)
        if self.fail is not None:
            raise GssClientError(self.fail)
        return self.outputs.pop(0)


def gss_login(
    initiator: ScriptedInitiator | None,
    *,
    link: LinkSecurity = PLAIN_LINK,
    require_auth: str | None = None,
    password: str | None = None,
) -> BackendLogin:
    required = (
        None
        if require_auth is None
        else RequireAuth.from_methods(
            require_auth, require_auth.split(","), allow_none=False, names_password=False
        )
    )
    return BackendLogin(
        user="alice",
        parameters={"user": "alice"},
        password=password,
        policy=AuthPolicy(require_auth=required),
        link=link,
        gss=initiator,
    )


def failure(login: BackendLogin, data: bytes) -> str:
    with pytest.raises(ClientError) as info:
        login.receive(data)
    assert info.value.sqlstate == codes.SQLSTATE_CONNECTION_FAILURE
    return str(info.value.log_detail)


def test_gss_auth_sends_each_token_and_finishes_with_the_context() -> None:
    initiator = ScriptedInitiator([(b"ap-req", False), (b"", True)])
    login = gss_login(initiator, require_auth="gss")
    assert login.receive(GSS_REQUEST) == (gss_response(b"ap-req"), None)
    assert login.receive(gss_continue(b"ap-rep")) == (b"", None)
    reply, outcome = login.receive(OK + READY)
    assert reply == b"" and isinstance(outcome, LoginComplete)
    # The first step has no input token; the continuation's payload is the next one.
    assert initiator.inputs == [None, b"ap-rep"]


def test_gss_auth_without_gssapi_is_libpq_text() -> None:
    assert failure(gss_login(None), GSS_REQUEST) == "GSSAPI authentication not supported"


def test_gss_auth_failure_is_final_with_libpq_text() -> None:
    text = "GSSAPI continuation error: Unspecified GSS failure: Server not found"
    login = gss_login(ScriptedInitiator([], fail=text))
    assert failure(login, GSS_REQUEST) == text


def test_duplicate_gss_request() -> None:
    login = gss_login(ScriptedInitiator([(b"t1", False), (b"t2", False)]))
    login.receive(GSS_REQUEST)
    assert failure(login, GSS_REQUEST) == "duplicate GSS authentication request"


def test_a_continuation_without_a_context_starts_one() -> None:
    """pg_GSS_continue with no context yet is a first call; its payload is not read."""
    initiator = ScriptedInitiator([(b"first", False)])
    login = gss_login(initiator)
    assert login.receive(gss_continue(b"junk"))[0] == gss_response(b"first")
    assert initiator.inputs == [None]


def test_require_auth_gss_needs_the_exchange_on_a_plain_link() -> None:
    text = failure(gss_login(ScriptedInitiator([]), require_auth="gss"), OK)
    assert text == (
        'authentication method requirement "gss" failed: server did not complete authentication'
    )


def test_require_auth_gss_is_met_by_gss_encryption() -> None:
    """check_expected_areq: gssapi_used satisfies require_auth=gss without an exchange."""
    login = gss_login(None, link=LinkSecurity(gss=True), require_auth="gss")
    assert isinstance(login.receive(OK + READY)[1], LoginComplete)
    other = gss_login(None, link=LinkSecurity(gss=True), require_auth="scram-sha-256")
    assert "server did not complete authentication" in failure(other, OK)


def test_cleartext_password_goes_over_a_gss_encrypted_link() -> None:
    request = codec.authentication_request(codes.AUTH_CLEARTEXT_PASSWORD)
    login = gss_login(None, link=LinkSecurity(gss=True), password="secret")
    assert login.receive(request)[0] == codec.password_message(b"secret\0")
    plain = gss_login(None, password="secret")
    assert "unencrypted connection" in failure(plain, request)


def test_auth_initiator_needs_a_host_name_before_any_gssapi_call() -> None:
    """pg_GSS_startup: a hostaddr-only entry has no host name to ask a ticket for."""
    initiator = GssAuthInitiator(ClientCredentials(), "postgres", None)
    with pytest.raises(GssClientError, match=r"^host name must be specified$"):
        initiator.step(None)
    assert not initiator.started


def test_service_name_is_host_based() -> None:
    assert service_name("postgres", "db.example.com") == "postgres@db.example.com"


def test_each_keytab_has_its_own_memory_cache() -> None:
    one, other = ClientCredentials("FILE:/a.keytab"), ClientCredentials("FILE:/b.keytab")
    assert one.ccache is not None and one.ccache.startswith("MEMORY:pggate-backend-")
    assert one.ccache == ClientCredentials("FILE:/a.keytab").ccache != other.ccache
    assert ClientCredentials().ccache is None  # GSSAPI's default credentials, as libpq


# --- the route: credentials are an input of the plan, asked only when they matter ------------


class CountingCredentials(ClientCredentials):
    """Credentials that are there (or not), counting how often they were asked for."""

    asked: list[int] = []  # noqa: RUF012 (one list per test, see fixture)
    present = True

    def acquire(self) -> Any:
        self.asked.append(1)
        return object() if self.present else None


@pytest.fixture
def counting() -> CountingCredentials:
    CountingCredentials.asked = []
    CountingCredentials.present = True
    return CountingCredentials()


@pytest.mark.parametrize(
    ("conninfo", "asked", "first"),
    [
        ("host=db", True, Encryption.GSS),
        ("host=db gssencmode=require sslmode=disable", True, Encryption.GSS),
        ("host=db gssencmode=disable", False, Encryption.TLS),
        ("host=/run/pg", False, Encryption.PLAIN),
    ],
)
def test_route_asks_for_credentials_only_when_gss_could_be_tried(
    counting: CountingCredentials, conninfo: str, asked: bool, first: Encryption
) -> None:
    route = Route(backend_target(conninfo), gss=counting)
    step = route.plan().start()
    assert isinstance(step, Attempt) and step.encryption is first
    assert bool(CountingCredentials.asked) is asked


def test_route_without_credentials_plans_like_libpq_without_a_cache(
    counting: CountingCredentials,
) -> None:
    CountingCredentials.present = False
    route = Route(backend_target("host=db"), gss=counting)
    assert route.plan().start() == Attempt(0, Encryption.TLS)
    doomed = Route(backend_target("host=db gssencmode=require"), gss=counting).plan().start()
    assert not isinstance(doomed, Attempt)
    assert doomed.reasons == ("GSSAPI encryption required but no credential cache",)


def test_no_credentials_is_believed_briefly(
    counting: CountingCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq asks at every connection; pggate remembers a "no" for NO_CREDENTIALS_TTL (0.1 ms
    saved per backend connection of a gateway without Kerberos), a "yes" never."""
    clock = [100.0]
    monkeypatch.setattr("pggate.hop.route.time.monotonic", lambda: clock[0])
    route = Route(backend_target("host=db"), gss=counting)
    route.plan()
    route.plan()
    assert len(CountingCredentials.asked) == 2  # present: asked every time
    CountingCredentials.present = False
    route.plan()
    route.plan()
    assert len(CountingCredentials.asked) == 3
    clock[0] += route_module.NO_CREDENTIALS_TTL
    CountingCredentials.present = True
    assert route.plan().start() == Attempt(0, Encryption.GSS)
    assert len(CountingCredentials.asked) == 4


def test_route_without_a_gssapi_client_never_asks() -> None:
    assert Route(backend_target("host=db")).plan().start() == Attempt(0, Encryption.TLS)


def test_login_gets_an_initiator_for_the_host_entry(counting: CountingCredentials) -> None:
    route = Route(
        backend_target("host=db.example.com hostaddr=192.0.2.1 krbsrvname=pg"), gss=counting
    )
    (address,) = route.addresses
    login = route.login(address, "alice", {}, LinkSecurity())
    assert isinstance(login.gss, GssAuthInitiator) and not login.gss.started
    assert Route(backend_target("host=db")).login(address, "a", {}, LinkSecurity()).gss is None


def test_client_keytab_setting(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    assert client_credentials(None) == ClientCredentials()
    keytab = tmp_path / "client.keytab"
    keytab.write_bytes(b"")
    assert client_credentials(keytab) == ClientCredentials(f"FILE:{keytab}")
    with caplog.at_level(logging.WARNING):
        missing = client_credentials(tmp_path / "missing.keytab")
    assert missing.keytab == f"FILE:{tmp_path / 'missing.keytab'}"
    assert "could not read Kerberos client keytab" in caplog.text


def test_gssencmode_require_needs_python_gssapi(monkeypatch: pytest.MonkeyPatch) -> None:
    """As pqConnectOptions2 in a libpq built without GSSAPI."""
    checked_target("host=db gssencmode=require")  # installed here: accepted
    monkeypatch.setattr(gss_support, "available", lambda: False)
    checked_target("host=db gssencmode=prefer")
    with pytest.raises(ConfigError) as info:
        checked_target("host=db gssencmode=require")
    assert info.value.message == (
        'gssencmode value "require" invalid when GSSAPI support is not compiled in'
    )
    assert info.value.hint == gss_support.HINT


def test_gssencmode_require_builds_no_tls_context() -> None:
    """libpq never tries TLS then, so a root certificate it would need is not loaded."""
    target, tls = checked_target("host=db gssencmode=require sslmode=verify-full sslrootcert=/x")
    assert tls is None and target.settings.gssencmode == "require"
    with pytest.raises(ConfigError, match="root certificate file"):
        checked_target("host=db sslmode=verify-full sslrootcert=/x")


# --- the GSSAPI transport of plaintext -------------------------------------------------------


class XorCodec:
    """A stand-in for GssClientCodec: 'wraps' by framing with a marker byte and XOR."""

    def __init__(self, fail_on: bytes | None = None) -> None:
        self.fail_on = fail_on

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        if self.fail_on is not None and self.fail_on in bytes(data):
            raise GssClientError("GSSAPI wrap error: x: y")
        return b"#" + bytes(b ^ 0x5A for b in bytes(data))

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        raw = bytes(data)
        if not raw.startswith(b"#"):
            raise GssClientError("incoming GSSAPI message did not use confidentiality")
        return bytes(b ^ 0x5A for b in raw[1:])


class RawTransport:
    """The raw socket transport's surface GssTransport uses, recording what happens."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.protocol: Any = None
        self.closed = self.aborted = False
        self.reading = True
        self.limits: tuple[int | None, int | None] | None = None

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True
        self.protocol.connection_lost(None)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = (high, low)

    def get_write_buffer_size(self) -> int:
        return len(self.written)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.1", 5432)}.get(name, default)


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.events: list[str] = []
        self.lost: Exception | None = None

    def data_received(self, data: bytes) -> None:
        self.received.append(data)

    def eof_received(self) -> bool:
        self.events.append("eof")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost = exc

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")


def wrapped(codec_: XorCodec | None = None) -> tuple[GssTransport, RawTransport, Recorder]:
    raw, app = RawTransport(), Recorder()
    transport = GssTransport(cast(asyncio.Transport, raw), codec_ or XorCodec(), app)
    return transport, raw, app


def test_writes_are_wrapped_and_reads_unwrapped() -> None:
    transport, raw, app = wrapped()
    transport.write(b"select 1")
    transport.writelines([b"a", b"b"])
    transport.write(b"")  # nothing to wrap: nothing sent
    assert raw.written == XorCodec().encrypt(b"select 1") + XorCodec().encrypt(b"ab")
    raw.protocol.data_received(XorCodec().encrypt(b"Z...."))
    assert app.received == [b"Z...."]


def test_flow_control_and_buffer_limits_are_the_raw_transports() -> None:
    transport, raw, app = wrapped()
    transport.pause_reading()
    assert not raw.reading and not transport.is_reading()
    transport.resume_reading()
    assert raw.reading
    transport.set_write_buffer_limits(high=256, low=64)
    assert raw.limits == (256, 64)
    raw.protocol.pause_writing()
    raw.protocol.resume_writing()
    assert app.events == ["pause", "resume"]
    assert transport.get_extra_info("peername") == ("192.0.2.1", 5432)


def test_set_protocol_redirects_the_plaintext() -> None:
    """The relay and the pool switch protocols on the transport they were given."""
    transport, raw, first = wrapped()
    second = Recorder()
    transport.set_protocol(second)
    assert transport.get_protocol() is second
    raw.protocol.data_received(XorCodec().encrypt(b"later"))
    assert first.received == [] and second.received == [b"later"]


def test_eof_and_close_pass_through() -> None:
    transport, raw, app = wrapped()
    assert raw.protocol.eof_received() is False
    transport.close()
    assert raw.closed and transport.is_closing()
    raw.protocol.connection_lost(None)
    assert app.events == ["eof", "lost"] and app.lost is None


def test_an_unwrap_failure_aborts_with_libpq_text(caplog: pytest.LogCaptureFixture) -> None:
    transport, raw, app = wrapped()
    with caplog.at_level(logging.WARNING):
        raw.protocol.data_received(b"not a packet")
    assert raw.aborted and app.received == []
    assert isinstance(app.lost, GssClientError)
    assert "incoming GSSAPI message did not use confidentiality" in caplog.text
    transport.write(b"more")  # nothing is written after a failure
    assert raw.written == b""


def test_a_wrap_failure_aborts() -> None:
    transport, raw, app = wrapped(XorCodec(fail_on=b"boom"))
    transport.write(b"boom")
    assert raw.aborted and raw.written == b"" and isinstance(app.lost, GssClientError)


# --- GSSENCRequest's answers (fe-connect.c CONNECTION_GSS_STARTUP) ----------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def scripted_server(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def answering(answer: bytes, *, then: bytes = b"") -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readexactly(8)
        assert request == codec.gssenc_request()
        writer.write(answer)
        await writer.drain()
        if then:
            assert await reader.readexactly(len(then)) == then
        writer.close()

    return handler


async def try_gss(handler: Handler) -> link.Established:
    async with scripted_server(handler) as port:
        (address,) = backend_target(f"host=127.0.0.1 port={port} connect_timeout=5").addresses()
        attempt = Attempt(0, Encryption.GSS)
        return await link.establish(address, attempt, None, None, ClientCredentials())


def test_n_keeps_the_connection_for_the_next_method() -> None:
    async def run() -> None:
        startup = codec.ssl_request()
        async with scripted_server(answering(codes.ENCRYPTION_REFUSE, then=startup)) as port:
            (address,) = backend_target(f"host=127.0.0.1 port={port}").addresses()
            with pytest.raises(link.GssRefused) as info:
                await link.establish(
                    address, Attempt(0, Encryption.GSS), None, None, ClientCredentials()
                )
            # The same connection carries what comes next (an SSLRequest here).
            info.value.transport.write(startup)
            assert not await info.value.protocol.wait_for_data()
            info.value.transport.close()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        (
            codes.MSG_ERROR_RESPONSE,
            link.LinkFailed,
            "server sent an error response during GSS encryption exchange",
        ),
        (codes.SSL_ACCEPT, link.LinkBroken, "received invalid response to GSSAPI negotiation: S"),
        (b"", link.LinkBroken, "server closed the connection unexpectedly"),
    ],
)
def test_other_answers_in_libpq_words(answer: bytes, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=f"^{text}$"):
        asyncio.run(try_gss(answering(answer)))


def test_the_inbox_protocol_is_what_the_login_reads() -> None:
    """Established links hand the login an InboxProtocol (a GssTransport feeds it too)."""
    protocol = InboxProtocol()
    transport, raw, _ = wrapped()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    raw.protocol.data_received(XorCodec().encrypt(b"R"))
    assert protocol.take() == b"R" and protocol.transport is transport
