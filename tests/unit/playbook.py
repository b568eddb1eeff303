"""The login playbook and a gateway to run it against, shared by the login tests (no tests here).

A :class:`Playbook` is mitmproxy's (``test/mitmproxy/proxy/tutils.py``) in small: ``>> event``
feeds the machine, each ``<< command`` after it is expected, in order, and ``assert playbook``
runs what was added since the last assert. A :class:`Placeholder` stands for a value the
machine makes up (an MD5 salt, a SCRAM nonce) and remembers it, so that the client's next
message can be computed from it.
"""

from __future__ import annotations

from typing import Any

from test_hba_fakes import FakeFiles
from test_password_auth import CERT_HASH

from pggate.config import Config, load
from pggate.conninfo import backend_target
from pggate.hba import HbaPolicy, IdentMaps, load_hba
from pggate.hop.plan import Attempt, Encryption
from pggate.hop.route import Route
from pggate.login import Command, ConnectBackend, Event, LoginMachine
from pggate.proto import codec, codes
from pggate.proto.messages import StartupMessage
from pggate.transport import ChannelInfo
from pggate.transport.channel import ChannelKind

HBA = "/etc/pg/pg_hba.conf"
HOST, PORT = "192.0.2.10", "50000"


def route(conninfo: str) -> Route:
    """A backend route without TLS (a Unix socket needs none; a test's shell does the rest)."""
    return Route(backend_target(conninfo))


# One backend on a Unix socket: one attempt, in plaintext.
ROUTE = route("host=/run/pg port=5432 user=pggate")
(BACKEND,) = ROUTE.addresses
PLAIN = Attempt(0, Encryption.PLAIN)


# A client's TLS channel as the shell reports it: TLS 1.3, ALPN, the server certificate's hash
# for channel binding, no client certificate.
TLS = ChannelInfo(
    kind=ChannelKind.SSL,
    tls_version="TLSv1.3",
    cipher="TLS_AES_256_GCM_SHA384",
    bits=256,
    alpn=codes.ALPN_POSTGRESQL,
    end_point_hash=CERT_HASH,
)


def gss_continue(token: bytes) -> bytes:
    """AuthenticationGSSContinue carrying ``token``."""
    return codec.authentication_request(codes.AUTH_GSS_CONTINUE, token)


def connect_backend(
    startup: StartupMessage, keys: Any = None, *, attempt: Attempt = PLAIN
) -> ConnectBackend:
    """The machine's ConnectBackend for the one backend."""
    return ConnectBackend(startup, ROUTE.addresses[attempt.host], attempt, keys)


class Placeholder:
    """Equal to the first value it is compared with, and to that value only afterwards."""

    def __init__(self) -> None:
        self.value: Any = None

    def __eq__(self, other: object) -> bool:
        if self.value is None:
            self.value = other
        return bool(self.value == other)

    __hash__ = None  # type: ignore[assignment]


def placeholder() -> Any:
    """A Placeholder where a command field wants bytes (read it back through ``.value``)."""
    return Placeholder()


class Playbook:
    """``assert Playbook(m) >> event << command << command >> event ...``"""

    def __init__(self, machine: LoginMachine) -> None:
        self.machine = machine
        self.steps: list[tuple[Event, list[Command]]] = []
        self.played = 0

    def __rshift__(self, event: Event) -> Playbook:
        self.steps.append((event, []))
        return self

    def __lshift__(self, command: Command) -> Playbook:
        self.steps[-1][1].append(command)
        return self

    def __bool__(self) -> bool:
        for event, expected in self.steps[self.played :]:
            actual = self.machine.feed(event)
            if expected != actual:
                lines = [f"after {event!r} (state {self.machine.state.value!r}):"]
                lines += [f"  expected {c!r}" for c in expected]
                lines += [f"  actual   {c!r}" for c in actual]
                raise AssertionError("\n".join(lines))
            self.played += 1
        return True


# --- a gateway ---------------------------------------------------------------------------------


def config(**settings: str) -> Config:
    return load(
        "/gw", {"log_connections": "all", **settings}, files=FakeFiles({"/gw/pggate.conf": ""})
    )


def hba(text: str) -> HbaPolicy:
    return load_hba(HBA, FakeFiles({HBA: text}), ssl_enabled=True, warn=lambda _: None)


def machine(
    hba_text: str = "host all all 0.0.0.0/0 trust\n",
    *,
    ssl: bool = False,
    gss: bool = False,
    host: str = HOST,
    backend: Route = ROUTE,
    **settings: str,
) -> LoginMachine:
    return LoginMachine(
        config(**settings),
        hba(hba_text),
        IdentMaps(),
        backend,
        host=host,
        port=PORT,
        ssl_enabled=ssl,
        gss_enabled=gss,
    )


__all__ = [
    "BACKEND",
    "HBA",
    "HOST",
    "PLAIN",
    "PORT",
    "ROUTE",
    "TLS",
    "Placeholder",
    "Playbook",
    "config",
    "connect_backend",
    "gss_continue",
    "hba",
    "machine",
    "placeholder",
    "route",
]
